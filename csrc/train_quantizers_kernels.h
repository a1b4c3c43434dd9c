// The kernels of train_quantizers.cpp, included there once per instruction set (inside a namespace
// and a `#pragma GCC target` region each): plain loops that the compiler vectorizes. Not a public
// header: it has no include guard on purpose and expects <algorithm>, <cmath>, <cstring> and
// train_quantizers.h to be included before.

inline float sign_of(float v) {
  // +1 for v >= 0 (-0.0 included) and for NaN, -1 below: onebit's sign(x) = sign(sign(x) + 0.5), as
  // torch.sign(NaN) is 0.
  return v < 0.0f ? -1.0f : 1.0f;
}

// 2^n for an integer n in [-126, 127], built from the exponent bits.
inline float pow2i(int n) {
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}

// exp(x) for x in [-87, 20] (the ranges tanh_approx and sigmoid_approx need): Cephes expf's
// reduction x = n ln2 + r, |r| <= ln2/2, with ln2 split in two so n ln2 is exact, and its degree-7
// polynomial (relative error < 1.2e-7 = 1 ulp on the reduced range).
inline float exp_reduced(float x) {
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  return p * pow2i(static_cast<int>(n));
}

// tanh(x), Cephes tanhf's method: the odd polynomial x + x^3 P(x^2) for |x| < 0.625, else
// 1 - 2/(exp(2|x|) + 1) with x's sign. |x| is clamped to 10 first (tanh(10) rounds to 1 in float,
// and exp stays finite; inf -> +-1). NaN and +-0 are returned as they are (tanh(-0) = -0).
inline float tanh_approx(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = x + x * z * p;
  const float e = exp_reduced(2.0f * std::min(std::max(ax, 0.625f), 10.0f));  // in [1.25, 20]
  const float large = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  const float r = ax < 0.625f ? small : large;
  return (x != x || x == 0.0f) ? x : r;
}

// sin and cos, SLEEF's sinf_u35/cosf_u35 method: q = the nearest multiple of pi (sin) or the nearest
// odd multiple of pi/2 (cos), the reduced argument r = x - q*pi/2^k with pi split in four (each
// product exact for |x| <= 8192), and one odd polynomial of degree 9 on [-pi/2, pi/2]; the sign flips
// with q's parity. Measured against float64 over every 997th float32: at most 3.5 ulp of the correctly
// rounded value where |result| > 1e-3, absolute error below 1.2e-7 everywhere (|x| <= 8192).
constexpr float kTrigLimit = 8192.0f;

inline float trig_approx(float x, bool cosine) {
  const float ax = std::fabs(x);
  const float in_range = ax <= kTrigLimit ? x : 0.0f;  // keeps the int conversion defined (fixed later)
  int q;
  float r;
  if (!cosine) {
    const float t = in_range * 0.318309886183790671538f;
    q = static_cast<int>(t + (t < 0.0f ? -0.5f : 0.5f));  // round half away from zero
    const float qf = static_cast<float>(q);
    r = in_range - qf * 3.140625f;
    r = r - qf * 0.0009670257568359375f;
    r = r - qf * 6.2771141529083251953e-07f;
    r = r - qf * 1.2154201256553420762e-10f;
  } else {
    const float t = in_range * 0.318309886183790671538f - 0.5f;
    q = 1 + 2 * static_cast<int>(t + (t < 0.0f ? -0.5f : 0.5f));  // odd multiples of pi/2
    const float qf = static_cast<float>(q);
    r = in_range - qf * (3.140625f * 0.5f);
    r = r - qf * (0.0009670257568359375f * 0.5f);
    r = r - qf * (6.2771141529083251953e-07f * 0.5f);
    r = r - qf * (1.2154201256553420762e-10f * 0.5f);
  }
  const float s = r * r;
  float u = 2.6083159809786593541503e-06f;
  u = u * s - 0.0001981069071916863322258f;
  u = u * s + 0.00833307858556509017944336f;
  u = u * s - 0.166666597127914428710938f;
  const float v = s * (u * r) + r;
  // sin: (-1)^q sin(r); cos: cos x = sin(r) with the sign of (-1)^((q+1)/2)... as an integer XOR of
  // the sign bit (GCC keeps float selects here as branches, which stops the loop's vectorization).
  const uint32_t flip = cosine ? ((static_cast<uint32_t>(q) & 2u) == 0u ? 1u : 0u) : (static_cast<uint32_t>(q) & 1u);
  uint32_t vb;
  std::memcpy(&vb, &v, sizeof vb);
  vb ^= flip << 31;
  float out;
  std::memcpy(&out, &vb, sizeof out);
  return out;
}

// The elements a vector loop computed with trig_approx outside its range, recomputed with libm
// (|x| > 8192, inf, NaN: rare in weights times a frequency).
// (A count, not a bool: GCC vectorizes an integer sum, not a bool `|` reduction.)
inline bool trig_out_of_range(const float* x, int64_t n, float scale) {
  int32_t count = 0;
#pragma omp simd reduction(+ : count)
  for (int64_t i = 0; i < n; ++i) count += std::fabs(x[i] * scale) <= kTrigLimit ? 0 : 1;
  return count != 0;
}

// exp(-a) for a >= 0, clamped at a = 87 (exp(-87) = 1.6e-38, the smallest normal's order).
inline float exp_neg(float a) { return exp_reduced(-std::min(a, 87.0f)); }

// sigmoid(b) = 1/(1 + e) for b >= 0, e/(1 + e) below, e = exp(-|b|); NaN propagates.
inline float sigmoid_approx(float b) {
  const float e = exp_neg(std::fabs(b));
  const float s = (b < 0.0f ? e : 1.0f) / (1.0f + e);
  return b != b ? b : s;
}

struct RowSums {
  double a = 0, b = 0;
};

// sum of (v[i] - shift) (a) and of its squares (b).
RowSums lane_sums(const float* v, int64_t n, float shift) {
  double s = 0, q = 0;
#pragma omp simd reduction(+ : s, q)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(v[i] - shift);
    s += d;
    q += d * d;
  }
  return {s, q};
}

// z = (w - m)/div; returns (sum z, sum |z|).
RowSums divide_row(const float* w, int64_t n, float m, float div, float* z) {
  double s = 0, a = 0;
#pragma omp simd reduction(+ : s, a)
  for (int64_t i = 0; i < n; ++i) {
    const float v = (w[i] - m) / div;
    z[i] = v;
    s += static_cast<double>(v);
    a += static_cast<double>(std::fabs(v));
  }
  return {s, a};
}

void sign_row(const float* z, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = sign_of(z[i]) * scale;
}

void standardize_row(int kind, const float* w, int64_t n, float k, float t, float eps, float* z, float* out,
                     float* z_mean, float* factor, float* through, float* abs_sum) {
  const float m = static_cast<float>(lane_sums(w, n, 0.0f).a / static_cast<double>(n));
  const float sq = static_cast<float>(lane_sums(w, n, m).b);
  float div = 1.0f;
  float varies = 1.0f;
  if (kind == kLibra) {
    const float var = n > 1 ? sq / static_cast<float>(n - 1) : 0.0f;
    varies = var > 0.0f ? 1.0f : 0.0f;
    div = var > 0.0f ? std::sqrt(var) : 1.0f;
  } else {
    const float dof = static_cast<float>(n > 1 ? n - 1 : 1);
    div = std::sqrt(sq / dof + eps) / static_cast<float>(2.0 * std::sqrt(2.0));
  }
  const RowSums sums = divide_row(w, n, m, div, z);
  *z_mean = static_cast<float>(sums.a / static_cast<double>(n));
  *through = varies;
  if (abs_sum) *abs_sum = static_cast<float>(sums.b);
  if (kind == kLibra) {
    const float mean_abs = static_cast<float>(sums.b / static_cast<double>(n));
    const float scale = std::exp2(std::nearbyint(std::log2(mean_abs)));  // round half to even
    sign_row(z, n, scale, out);
    *factor = scale * k * t / div;
  } else {
    sign_row(z, n, 1.0f, out);
    *factor = 1.0f / div;
  }
}

// Pass 1: gs into out, returns (sum gs, sum gs*z).
RowSums ede_grad_row(const float* g, const float* z, int64_t n, float factor, float t, float* out) {
  double s = 0, d = 0;
#pragma omp simd reduction(+ : s, d)
  for (int64_t i = 0; i < n; ++i) {
    const float y = tanh_approx(t * z[i]);
    const float v = (g[i] * factor) * (1.0f - y * y);
    out[i] = v;
    s += static_cast<double>(v);
    d += static_cast<double>(v) * static_cast<double>(z[i]);
  }
  return {s, d};
}

RowSums window_grad_row(const float* g, const float* z, int64_t n, float factor, float q, float* out) {
  double s = 0, d = 0;
#pragma omp simd reduction(+ : s, d)
  for (int64_t i = 0; i < n; ++i) {
    const float v = g[i] * (std::fabs(z[i]) <= q ? factor : 0.0f);
    out[i] = v;
    s += static_cast<double>(v);
    d += static_cast<double>(v) * static_cast<double>(z[i]);
  }
  return {s, d};
}

void finish_row(const float* z, int64_t n, float coef, float centring, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (out[i] - z[i] * coef) - centring;
}

void tanh_span(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = tanh_approx(x[i]);
}

// One span of surrogate_grad (see train_quantizers.h), vectorized; trig out of range fixed after.
void sine_grad_span(const float* g, const float* x, int64_t n, float p0, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (g[i] * trig_approx(p0 * x[i], true)) * p0;
}

void swish_grad_span(const float* g, const float* x, int64_t n, float p0, float* out) {
  const float two_beta = 2.0f * p0;
  for (int64_t i = 0; i < n; ++i) {
    const float b = p0 * x[i];
    const float s = sigmoid_approx(b);
    const float oms = 1.0f - s;
    out[i] = (((s * oms) * (2.0f + b * (oms - s))) * two_beta) * g[i];
  }
}

// sin(t) for |t| < 1.5: trig_approx's polynomial alone, which is what trig_approx computes there (its
// nearest multiple of pi is q = 0, so the reduced argument is t itself): the same value, no reduction.
// kEdeSurrogateGrad: IR-Net's EDE derivative on activations (k = p0, t = p1).
void ede_surrogate_span(const float* g, const float* x, int64_t n, float p0, float p1, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float y = tanh_approx(p1 * x[i]);
    out[i] = ((g[i] * p0) * (1.0f - y * y)) * p1;
  }
}

inline float sin_small(float t) {
  const float s = t * t;
  float u = 2.6083159809786593541503e-06f;
  u = u * s - 0.0001981069071916863322258f;
  u = u * s + 0.00833307858556509017944336f;
  u = u * s - 0.166666597127914428710938f;
  return s * (u * t) + t;
}

// The Fourier sum's closed form at x (kFourierGrad's r); kSmall where p0 < 1.5 (then |t| < 1.5).
template <bool kSmall>
inline float fourier_ratio(float xi, float p0, float p1) {
  const float t = std::min(std::max(xi, -1.0f), 1.0f) * p0;
  const float r = trig_approx(t * p1, false) / ((kSmall ? sin_small(t) : trig_approx(t, false)) * 2.0f);
  return r != r ? p1 * 0.5f : r;  // 0/0 at t = 0: the limit n + 1 (torch: nan_to_num)
}

template <bool kSmall>
void fourier_grad_loop(const float* g, const float* x, int64_t n, float p0, float p1, float p2, float* out) {
  constexpr float kAbove = 1.0f + 1.1920928955078125e-7f;  // hardtanh_backward's open bound
  for (int64_t i = 0; i < n; ++i) {
    const float pass = (x[i] <= -kAbove || x[i] >= kAbove) ? 0.0f : g[i];
    out[i] = (pass * fourier_ratio<kSmall>(x[i], p0, p1)) * p2;
  }
}

void fourier_grad_span(const float* g, const float* x, int64_t n, float p0, float p1, float p2, float* out) {
  if (p0 < 1.5f)
    fourier_grad_loop<true>(g, x, n, p0, p1, p2, out);
  else
    fourier_grad_loop<false>(g, x, n, p0, p1, p2, out);
}

// The elements of a kSineGrad span whose argument is beyond kTrigLimit (or not finite), by libm.
void fix_sine_grad_span(const float* g, const float* x, int64_t n, float p0, float* out) {
  for (int64_t i = 0; i < n; ++i)
    if (!(std::fabs(p0 * x[i]) <= kTrigLimit)) out[i] = (g[i] * std::cos(p0 * x[i])) * p0;
}

void surrogate_span(int kind, const float* g, const float* x, int64_t n, float p0, float p1, float p2, float* out) {
  switch (kind) {
    case kSineGrad:
      sine_grad_span(g, x, n, p0, out);
      if (trig_out_of_range(x, n, p0)) fix_sine_grad_span(g, x, n, p0, out);
      break;
    case kSwishGrad:
      swish_grad_span(g, x, n, p0, out);
      break;
    case kEdeSurrogateGrad:
      ede_surrogate_span(g, x, n, p0, p1, out);
      break;
    default:  // kFourierGrad: |t| <= omega < pi and |t*p1| small: always in range
      fourier_grad_span(g, x, n, p0, p1, p2, out);
  }
}

void math_span(int kind, const float* x, int64_t n, float* out) {
  if (kind == 2) {
    for (int64_t i = 0; i < n; ++i) out[i] = sigmoid_approx(x[i]);
    return;
  }
  const bool cosine = kind == 1;
  if (cosine)
    for (int64_t i = 0; i < n; ++i) out[i] = trig_approx(x[i], true);
  else
    for (int64_t i = 0; i < n; ++i) out[i] = trig_approx(x[i], false);
  if (trig_out_of_range(x, n, 1.0f))
    for (int64_t i = 0; i < n; ++i)
      if (!(std::fabs(x[i]) <= kTrigLimit)) out[i] = cosine ? std::cos(x[i]) : std::sin(x[i]);
}

void backward_row(int kind, const float* g, const float* z, float z_mean, float factor, float through, float param,
                  double dof, int64_t n, float* out) {
  const RowSums sums = kind == kEdeGrad ? ede_grad_row(g, z, n, factor, param, out)
                                        : window_grad_row(g, z, n, factor, param, out);
  const float coef = static_cast<float>(sums.b / dof) * through;
  const float centring = static_cast<float>(sums.a / static_cast<double>(n)) - z_mean * coef;
  finish_row(z, n, coef, centring, out);
}

// PC++'s SignSwish weight on one row: u = w/alpha (alpha = 1: u = w), value v(u)*alpha with v the
// SignSwish SS(u) = 2s(1 + b(1 - s)) - 1 (b = beta*u, s = sigmoid(b)), sign(SS(u)) or sign(u).
// (Templates: a run-time choice inside the loop would keep it from vectorizing.)
template <int kKind, bool kScaled>
void swish_weight_loop(const float* w, int64_t n, float alpha, float beta, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float u = kScaled ? w[i] / alpha : w[i];
    float v;
    if (kKind == kSwishSign) {
      v = sign_of(u);
    } else {
      const float b = beta * u;
      const float s = sigmoid_approx(b);
      const float ss = 2.0f * s * (1.0f + b * (1.0f - s)) - 1.0f;
      v = kKind == kSwishValue ? ss : sign_of(ss);
    }
    out[i] = kScaled ? v * alpha : v;
  }
}

template <bool kScaled>
void swish_weight_kind(int kind, const float* w, int64_t n, float alpha, float beta, float* out) {
  if (kind == kSwishValue)
    swish_weight_loop<kSwishValue, kScaled>(w, n, alpha, beta, out);
  else if (kind == kSwishSignOfSwish)
    swish_weight_loop<kSwishSignOfSwish, kScaled>(w, n, alpha, beta, out);
  else
    swish_weight_loop<kSwishSign, kScaled>(w, n, alpha, beta, out);
}

void swish_weight_row(int kind, const float* w, int64_t n, float alpha, bool scaled, float beta, float* out) {
  if (scaled)
    swish_weight_kind<true>(kind, w, n, alpha, beta, out);
  else
    swish_weight_kind<false>(kind, w, n, alpha, beta, out);
}

// Its gradient, autograd's chain: ((g*alpha)*SS'(u))/alpha, SS'(u) = (s(1 - s))(2 + b((1 - s) - s))(2 beta).
template <bool kScaled>
void swish_weight_backward_loop(const float* g, const float* w, int64_t n, float alpha, float beta, float* out) {
  const float two_beta = 2.0f * beta;
  for (int64_t i = 0; i < n; ++i) {
    const float u = kScaled ? w[i] / alpha : w[i];
    const float b = beta * u;
    const float s = sigmoid_approx(b);
    const float oms = 1.0f - s;
    const float d = ((s * oms) * (2.0f + b * (oms - s))) * two_beta;
    out[i] = kScaled ? (d * (g[i] * alpha)) / alpha : d * g[i];
  }
}

void swish_weight_backward_row(const float* g, const float* w, int64_t n, float alpha, bool scaled, float beta,
                               float* out) {
  if (scaled)
    swish_weight_backward_loop<true>(g, w, n, alpha, beta, out);
  else
    swish_weight_backward_loop<false>(g, w, n, alpha, beta, out);
}

// FDA's value (train_quantizers.h fda_value) over one span of one row, s the row's scale, from the
// sines of a chunk of x (math_span's, FMA-contracted as all of this file): combined without FMA
// contraction (this function only), each operation rounding as torch's separate ops do.
__attribute__((optimize("fp-contract=off"))) void fda_combine(const float* x, const float* h, const float* sine,
                                                               int64_t n, float s, float alpha, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (sign_of(x[i]) + alpha * (h[i] + 0.1f * sine[i])) * s;
}

void fda_value_span(const float* x, const float* h, int64_t n, float s, float alpha, float* out) {
  constexpr int64_t kChunk = 1024;
  float sine[kChunk];
  for (int64_t lo = 0; lo < n; lo += kChunk) {
    const int64_t len = std::min(kChunk, n - lo);
    math_span(0, x + lo, len, sine);
    fda_combine(x + lo, h + lo, sine, len, s, alpha, out + lo);
  }
}

// sum |x| (double).
double abs_sum(const float* x, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(std::fabs(x[i]));
  return s;
}

// Its gradients (fda_backward); grad_h written where kWithH.
template <bool kWithH, bool kSmall>
void fda_backward_loop(const float* g, const float* x, int64_t n, float s, float alpha, float p0, float p1, float p2,
                       float* grad_x, float* grad_h) {
  constexpr float kAbove = 1.0f + 1.1920928955078125e-7f;  // hardtanh_backward's open bound
  for (int64_t i = 0; i < n; ++i) {
    const float gs = g[i] * s;
    const float ga = gs * alpha;
    const float pass = (x[i] <= -kAbove || x[i] >= kAbove) ? 0.0f : gs;
    grad_x[i] = (pass * fourier_ratio<kSmall>(x[i], p0, p1)) * p2 + (ga * 0.1f) * trig_approx(x[i], true);
    if (kWithH) grad_h[i] = ga;
  }
}

void fda_backward_span(const float* g, const float* x, int64_t n, float s, float alpha, float p0, float p1, float p2,
                       float* grad_x, float* grad_h) {
  const bool small = p0 < 1.5f;
  if (grad_h && small)
    fda_backward_loop<true, true>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  else if (grad_h)
    fda_backward_loop<true, false>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  else if (small)
    fda_backward_loop<false, true>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  else
    fda_backward_loop<false, false>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  if (trig_out_of_range(x, n, 1.0f))
    for (int64_t i = 0; i < n; ++i)
      if (!(std::fabs(x[i]) <= kTrigLimit)) {
        const float gs = g[i] * s;
        const float pass = (x[i] <= -1.0f - 1.1920928955078125e-7f || x[i] >= 1.0f + 1.1920928955078125e-7f) ? 0.0f : gs;
        grad_x[i] = (pass * fourier_ratio<false>(x[i], p0, p1)) * p2 + ((gs * alpha) * 0.1f) * std::cos(x[i]);
      }
}

// BiPer's wave over one span (biper_wave): returns the span's sum of sin(a)^2.
template <bool kBinary>
double biper_wave_loop(const float* w, int64_t n, float omega, float* out) {
  double sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) {
    const float v = trig_approx(omega * w[i], false);
    out[i] = kBinary ? sign_of(v) : v;
    sq += static_cast<double>(v) * static_cast<double>(v);
  }
  return sq;
}

double biper_wave_span(const float* w, int64_t n, float omega, bool binary, float* out) {
  if (trig_out_of_range(w, n, omega)) {  // rare: the whole span by libm
    double sq = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float a = omega * w[i];
      const float v = std::fabs(a) <= kTrigLimit ? trig_approx(a, false) : std::sin(a);
      out[i] = binary ? sign_of(v) : v;
      sq += static_cast<double>(v) * static_cast<double>(v);
    }
    return sq;
  }
  return binary ? biper_wave_loop<true>(w, n, omega, out) : biper_wave_loop<false>(w, n, omega, out);
}

// Its backward (biper_wave_backward); g null: the loss term's gradient alone.
template <bool kWithG>
void biper_backward_loop(const float* g, const float* w, int64_t n, float omega, float loss_factor, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = omega * w[i];
    const float c = trig_approx(a, true);
    const float s = trig_approx(a, false);
    const float wave = kWithG ? (g[i] * c) * omega : 0.0f;
    out[i] = wave + loss_factor * (2.0f * s * c);
  }
}

void biper_backward_span(const float* g, const float* w, int64_t n, float omega, float loss_factor, float* out) {
  if (g)
    biper_backward_loop<true>(g, w, n, omega, loss_factor, out);
  else
    biper_backward_loop<false>(g, w, n, omega, loss_factor, out);
  if (trig_out_of_range(w, n, omega))
    for (int64_t i = 0; i < n; ++i) {
      const float a = omega * w[i];
      if (std::fabs(a) <= kTrigLimit) continue;
      const float c = std::cos(a);
      out[i] = (g ? (g[i] * c) * omega : 0.0f) + loss_factor * (2.0f * std::sin(a) * c);
    }
}
