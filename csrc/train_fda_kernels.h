// The row kernels of train_fda.cpp, included there once per instruction set after
// train_quantizers_kernels.h (whose sin/cos, Fourier ratio, fda_value_span and fda_backward_span they
// reuse), inside a namespace and a `#pragma GCC target` region each. Not a public header: no include
// guard on purpose. Plain loops that the compiler vectorizes; float sums through `omp simd reduction`
// (one partial per vector lane, FMA-contracted as all of train_fda.cpp).
//
// ReLU zeroes about half of the hidden units of a row, and a term 0*v adds nothing to a sum: h
// skips the units with u_j = 0, W1ᵀ·gpre those with gpre_j = 0 (both only where W1/W2 are finite: 0*inf
// is NaN in torch) and W2ᵀ·gh the dot of a switched-off unit (its gradient is 0 whatever the dot): no
// bit changes. dW1 and dW2 take every term (they are summed in registers over a block of rows, one
// hidden unit per vector accumulator, where a skipped term saves nothing), so NaN and inf there come
// out as in torch's GEMMs.

// A dot product's partial sums: one per lane of 16 (lane l sums the terms k with k mod 16 = l), whatever
// the ISA, so that its bits do not depend on the vector width.
constexpr int64_t kLanes = 16;

// The accumulators of a block of sums must stay in vector registers: GCC keeps a generic vector wider than
// the ISA's in memory, and 16 of 16 floats (the former 4x4 block) spilled on AVX2, where a 512 x 512
// weight's NA forward and backward then took twice as long. kVectorFloats (train_fda.cpp, per ISA) is
// the width of the ISA's vectors: 16 with AVX-512's 32 registers, 8 with AVX2's 16, 4 with SSE's 16.
typedef float VecN __attribute__((vector_size(kVectorFloats * sizeof(float)), aligned(4), __may_alias__));
// dots_block's rows x units: 16 accumulators of one zmm, 2 x 2 of two ymm, 1 x 2 of four xmm.
constexpr int kDotRows = kVectorFloats == 16 ? 4 : kVectorFloats == 8 ? 2 : 1;
constexpr int kDotUnits = kVectorFloats == 16 ? 4 : 2;

typedef float Vec4 __attribute__((vector_size(16)));
typedef float Vec2 __attribute__((vector_size(8)));

// The sum of 16 lanes held as kLanes / N native vectors (parts[p]: lanes p·N .. p·N + N - 1) in a fixed
// order, halves added pairwise (h[i] += h[i + 8] for i < 8, then + 4, + 2, + 1), in registers: halves of
// whole parts first, then within one part.
template <int N = kVectorFloats>  // (a template: the other widths' branches are not compiled)
float parts_sum(const VecN* parts) {
  constexpr int kParts = kLanes / N;
  VecN p[kParts];
  for (int i = 0; i < kParts; ++i) p[i] = parts[i];
  for (int width = kParts / 2; width >= 1; width /= 2)
    for (int i = 0; i < width; ++i) p[i] += p[i + width];
  Vec4 v4;
  if constexpr (N == 16) {
    typedef float Vec8 __attribute__((vector_size(32)));
    const Vec8 v8 = __builtin_shufflevector(p[0], p[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(p[0], p[0], 8, 9, 10, 11, 12, 13, 14, 15);
    v4 = __builtin_shufflevector(v8, v8, 0, 1, 2, 3) + __builtin_shufflevector(v8, v8, 4, 5, 6, 7);
  } else if constexpr (N == 8) {
    v4 = __builtin_shufflevector(p[0], p[0], 0, 1, 2, 3) + __builtin_shufflevector(p[0], p[0], 4, 5, 6, 7);
  } else {
    std::memcpy(&v4, &p[0], sizeof v4);
  }
  const Vec2 v2 = __builtin_shufflevector(v4, v4, 0, 1) + __builtin_shufflevector(v4, v4, 2, 3);
  return v2[0] + v2[1];
}

// out[r*J + j] = a[j] · x[r] for R rows x[r] and J rows a[j] (d floats each): R·J dot products in one
// pass, each with one 16-lane accumulator, its lanes summed at the end, then the tail of d (the same
// bits whatever R and J).
template <int R, int J>
void dots_block(const float* const* x, const float* const* a, int64_t d, float* out) {
  constexpr int kParts = kLanes / kVectorFloats;  // a 16-lane accumulator as native vectors
  VecN acc[R][J][kParts] = {};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes) {
    for (int p = 0; p < kParts; ++p) {
      const int64_t at = k + p * kVectorFloats;
      VecN xv[R];
      for (int r = 0; r < R; ++r) xv[r] = *reinterpret_cast<const VecN*>(x[r] + at);
      for (int j = 0; j < J; ++j) {
        const VecN aj = *reinterpret_cast<const VecN*>(a[j] + at);
        for (int r = 0; r < R; ++r) acc[r][j][p] += xv[r] * aj;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) {
      float s = parts_sum(acc[r][j]);
      for (int64_t i = k; i < d; ++i) s += x[r][i] * a[j][i];
      out[r * J + j] = s;
    }
}

// pre (rows x hidden) = W1·x_r for up to four rows x_r (x: rows x d), by blocks of kDotRows rows and
// kDotUnits hidden units; the missing rows and units of a last block repeat the last one (computed,
// not written).
void project_rows4(const float* x, int64_t rows, const float* w1, int64_t hidden, int64_t d, float* pre) {
  for (int64_t r0 = 0; r0 < rows; r0 += kDotRows) {
    const float* xr[kDotRows];
    for (int64_t r = 0; r < kDotRows; ++r) xr[r] = x + std::min(r0 + r, rows - 1) * d;
    for (int64_t j0 = 0; j0 < hidden; j0 += kDotUnits) {
      const float* a[kDotUnits];
      for (int64_t t = 0; t < kDotUnits; ++t) a[t] = w1 + std::min(j0 + t, hidden - 1) * d;
      float out[kDotRows * kDotUnits];
      dots_block<kDotRows, kDotUnits>(xr, a, d, out);
      for (int64_t r = 0; r < std::min<int64_t>(kDotRows, rows - r0); ++r)
        for (int64_t t = 0; t < std::min<int64_t>(kDotUnits, hidden - j0); ++t)
          pre[(r0 + r) * hidden + j0 + t] = out[r * kDotUnits + t];
    }
  }
}

// out[t] = a[t] · x for the `count` rows a[t] (n floats each), four rows per pass over x.
void project(const float* const* a, const float* x, int64_t n, int64_t count, float* out) {
  int64_t t = 0;
  for (; t + 4 <= count; t += 4) {
    const float *a0 = a[t], *a1 = a[t + 1], *a2 = a[t + 2], *a3 = a[t + 3];
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t i = 0; i < n; ++i) {
      s0 += a0[i] * x[i];
      s1 += a1[i] * x[i];
      s2 += a2[i] * x[i];
      s3 += a3[i] * x[i];
    }
    out[t] = s0;
    out[t + 1] = s1;
    out[t + 2] = s2;
    out[t + 3] = s3;
  }
  for (; t < count; ++t) {
    const float* at = a[t];
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += at[i] * x[i];
    out[t] = s;
  }
}

// y[i] = (kFromZero ? 0 : y[i]) + c[0]·a[0][i] + ... + c[kTerms-1]·a[kTerms-1][i], added in that order.
template <int kTerms, bool kFromZero>
void combine_group(const float* const* a, const float* c, int64_t n, float* __restrict y) {
  const float *a0 = a[0], *a1 = a[kTerms > 1 ? 1 : 0], *a2 = a[kTerms > 2 ? 2 : 0], *a3 = a[kTerms > 3 ? 3 : 0];
  const float c0 = c[0], c1 = c[kTerms > 1 ? 1 : 0], c2 = c[kTerms > 2 ? 2 : 0], c3 = c[kTerms > 3 ? 3 : 0];
  for (int64_t i = 0; i < n; ++i) {
    float s = kFromZero ? c0 * a0[i] : y[i] + c0 * a0[i];
    if (kTerms > 1) s += c1 * a1[i];
    if (kTerms > 2) s += c2 * a2[i];
    if (kTerms > 3) s += c3 * a3[i];
    y[i] = s;
  }
}

template <bool kFromZero>
void combine_some(const float* const* a, const float* c, int64_t terms, int64_t n, float* y) {
  switch (terms) {
    case 1: return combine_group<1, kFromZero>(a, c, n, y);
    case 2: return combine_group<2, kFromZero>(a, c, n, y);
    case 3: return combine_group<3, kFromZero>(a, c, n, y);
    default: return combine_group<4, kFromZero>(a, c, n, y);
  }
}

// y[i] = (from_zero ? 0 : y[i]) + Σ_t c[t]·a[t][i] over the `count` terms, added in order (from y: a
// running sum over rows, the same bits as adding one row at a time), four terms per pass over y.
void combine(const float* const* a, const float* c, int64_t count, int64_t n, float* y, bool from_zero) {
  if (count == 0 && from_zero) std::fill(y, y + n, 0.0f);
  for (int64_t t = 0; t < count; t += 4) {
    if (from_zero && t == 0)
      combine_some<true>(a, c, std::min<int64_t>(4, count), n, y);
    else
      combine_some<false>(a + t, c + t, std::min<int64_t>(4, count - t), n, y);
  }
}

// Whether every v[i] is finite (v*0 is NaN for inf and NaN).
bool all_finite(const float* v, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += v[i] * 0.0f;
  return s == 0.0f;
}

// relu as torch's: NaN stays NaN, negative -> 0.
inline float relu_of(float v) { return v < 0.0f ? 0.0f : v; }

// Small arguments: the same sines and cosines for less work. Where |a| < 1.5, trig_approx's nearest
// multiple of pi is q = 0 for the sine (its reduced argument is a itself: sin_small(a) is what it
// computes) and q = -1 or +1 for the cosine (decided by the same float operations), so the range
// reduction drops out of the sine and its rounding step out of the cosine (checked against
// trig_approx for every float with |a| < 1.5: the same bits); NaN or larger |a| take trig_approx as
// before. A weight's entries (|w| << 1) and a clipped activation (|x| <= 1) are small; so is the
// Fourier ratio's sin(2(n+1)·t) for a weight (|2(n+1)·ω·w| < 1.5). Measured on a 512 x 512 weight
// (one thread, AVX-512): the value's span 172 -> 117 us, the gradient's 412 -> 231 us, and -> 210 us
// with the ratio without a division (ratio_no_division; minima of 400 interleaved runs, loaded machine).
constexpr float kSmallArg = 1.5f;

// Whether |v[i]| < kSmallArg for every i (NaN: no). A count: GCC vectorizes an integer sum.
bool all_small(const float* v, int64_t n) {
  int32_t count = 0;
#pragma omp simd reduction(+ : count)
  for (int64_t i = 0; i < n; ++i) count += std::fabs(v[i]) < kSmallArg ? 0 : 1;
  return count == 0;
}

// Whether the Fourier ratio's numerator argument (clamp(x, -1, 1)·p0)·p1 is small for every x[i]
// (x without NaN: its magnitude is |(min(|x|, 1)·p0)·p1|, rounding being symmetric).
bool ratio_small(const float* x, int64_t n, float p0, float p1) {
  int32_t count = 0;
#pragma omp simd reduction(+ : count)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    count += std::fabs(((a < 1.0f ? a : 1.0f) * p0) * p1) < kSmallArg ? 0 : 1;
  }
  return count == 0;
}

// trig_approx(x, true) for |x| < kSmallArg, bit for bit: its q from the same t = x/pi - 0.5 (t < 0
// here, so q = 1 + 2·trunc(t - 0.5), -1 or +1), the same four-part reduction and polynomial; q = +1
// flips the sign (a product by -1: exact). (No float select: GCC keeps it as a branch, unvectorized.)
inline float cos_small(float x) {
  const float t = x * 0.318309886183790671538f - 0.5f;
  const float qf = static_cast<float>(1 + 2 * static_cast<int>(t - 0.5f));
  float r = x - qf * (3.140625f * 0.5f);
  r = r - qf * (0.0009670257568359375f * 0.5f);
  r = r - qf * (6.2771141529083251953e-07f * 0.5f);
  r = r - qf * (1.2154201256553420762e-10f * 0.5f);
  return sin_small(r) * -qf;  // trig_approx's polynomial, written the same way
}

// fda_value_span (the same bits) over a row whose every |x| < kSmallArg: the sines by sin_small.
void na_value_span(const float* x, const float* h, int64_t n, float s, float alpha, float* out) {
  if (!all_small(x, n)) return fda_value_span(x, h, n, s, alpha, out);
  constexpr int64_t kChunk = 1024;
  float sine[kChunk];
  for (int64_t lo = 0; lo < n; lo += kChunk) {
    const int64_t len = std::min(kChunk, n - lo);
    for (int64_t i = 0; i < len; ++i) sine[i] = sin_small(x[lo + i]);
    fda_combine(x + lo, h + lo, sine, len, s, alpha, out + lo);
  }
}

// The Fourier ratio sin(p1·t)/(2 sin t) without a division where |p1·t| < kSmallArg and p1 >= 8
// (so |t| < 0.19): sin(a)/a = 1 + a²·u(a²) is sin_small's own polynomial without its last product,
// and t/sin t = 1 + t²/6 + 7t⁴/360 + 31t⁶/15120 (the next term, 127t⁸/604800, is below 4e-10 there):
// ratio = (p1/2)·(sin(p1·t)/(p1·t))·(t/sin t), exactly p1/2 at t = 0 (the limit, no 0/0). Within
// 2 ulp of the quotient; it replaces two polynomials' last steps, a division and the 0/0 test.
inline float ratio_no_division(float t, float p1) {
  const float a = t * p1;
  const float s = a * a;
  float u = 2.6083159809786593541503e-06f;
  u = u * s - 0.0001981069071916863322258f;
  u = u * s + 0.00833307858556509017944336f;
  u = u * s - 0.166666597127914428710938f;
  const float sinc = s * u + 1.0f;
  const float t2 = t * t;
  const float inverse_sinc = t2 * (1.0f / 6.0f + t2 * (7.0f / 360.0f + t2 * (31.0f / 15120.0f))) + 1.0f;
  return ((p1 * 0.5f) * sinc) * inverse_sinc;
}

// fda_backward_loop<true, true> where every |x| < kSmallArg and p0 < 1.5: cos by cos_small (the same
// bits), and with kSmallRatio (every ratio argument small, p1 >= 8) the ratio by ratio_no_division,
// else as fourier_ratio<true>. grad_x agrees with fda_backward_loop's to a few ulp (the ratio's
// rounding; the compiler may also fuse grad_x's last addition with the other product, FMA).
template <bool kSmallRatio>
void na_backward_small_loop(const float* g, const float* x, int64_t n, float s, float alpha, float p0, float p1,
                            float p2, float* grad_x, float* grad_h) {
  constexpr float kAbove = 1.0f + 1.1920928955078125e-7f;  // hardtanh_backward's open bound
  for (int64_t i = 0; i < n; ++i) {
    const float gs = g[i] * s;
    const float ga = gs * alpha;
    const float pass = (x[i] <= -kAbove || x[i] >= kAbove) ? 0.0f : gs;
    const float t = std::min(std::max(x[i], -1.0f), 1.0f) * p0;
    float ratio;
    if (kSmallRatio) {
      ratio = ratio_no_division(t, p1);
    } else {
      const float quotient = trig_approx(t * p1, false) / (sin_small(t) * 2.0f);
      ratio = quotient != quotient ? p1 * 0.5f : quotient;  // 0/0 at t = 0: the limit n + 1
    }
    grad_x[i] = (pass * ratio) * p2 + (ga * 0.1f) * cos_small(x[i]);
    grad_h[i] = ga;
  }
}

// fda_backward_span with grad_h, by the small-argument loops where they apply.
void na_backward_span(const float* g, const float* x, int64_t n, float s, float alpha, float p0, float p1, float p2,
                      float* grad_x, float* grad_h) {
  if (!(p0 < 1.5f) || !all_small(x, n)) return fda_backward_span(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  if (p1 >= 8.0f && ratio_small(x, n, p0, p1))
    na_backward_small_loop<true>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
  else
    na_backward_small_loop<false>(g, x, n, s, alpha, p0, p1, p2, grad_x, grad_h);
}

// Up to four rows of fda_na_forward: pre = W1·x, then per row h = Σ_j relu(pre_j)·W2ᵀ_j into hbuf
// and the value.
void na_forward_rows(int64_t rows, const float* x, int64_t d, const float* w1, const float* w2t, int64_t hidden,
                     bool weight, bool skip, float alpha, float* out, float* pre, float* scale_out, float* hbuf,
                     Terms terms) {
  project_rows4(x, rows, w1, hidden, d, pre);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    const float s = weight ? static_cast<float>(abs_sum(xr, d) / static_cast<double>(d)) : 1.0f;
    if (weight) scale_out[r] = s;
    int64_t m = 0;
    for (int64_t j = 0; j < hidden; ++j) {
      const float u = relu_of(pre[r * hidden + j]);
      if (u != 0.0f || !skip) {
        terms.coef[m] = u;
        terms.rows[m++] = w2t + j * d;
      }
    }
    combine(terms.rows, terms.coef, m, d, hbuf, true);
    na_value_span(xr, hbuf, d, s, alpha, out + r * d);
  }
}

// gpre (hidden) of one row: W2ᵀ_j·gh, or 0 where pre_j <= 0 (torch's threshold_backward(g, relu(pre), 0)
// is 0 where relu(pre) <= 0 and passes g elsewhere, NaN included), the dot then skipped.
void hidden_grad(const float* gh, int64_t d, const float* w2t, int64_t hidden, const float* pre, float* gpre,
                 Terms terms) {
  int64_t m = 0;
  for (int64_t j = 0; j < hidden; ++j) {
    gpre[j] = 0.0f;
    if (!(pre[j] <= 0.0f)) {
      terms.index[m] = j;
      terms.rows[m++] = w2t + j * d;
    }
  }
  project(terms.rows, gh, d, m, terms.dots);
  for (int64_t t = 0; t < m; ++t) gpre[terms.index[t]] = terms.dots[t];
}

// out_g[k] (+)= Σ_r c[r*cstride + g]·v[r*d + k] for g < G (out_g = out + g*d), r in order; from_zero:
// out starts from 0, else it continues the sums in out. G accumulators per 16 columns stay in registers.
template <int G>
void outer_sweep(const float* c, int64_t cstride, const float* v, int64_t rows, int64_t d, bool from_zero,
                 float* out) {
  int64_t k = 0;
  for (; k + kVectorFloats <= d; k += kVectorFloats) {  // each column's sum alone: any width, the same bits
    VecN acc[G];
    for (int g = 0; g < G; ++g) acc[g] = from_zero ? VecN{} : *reinterpret_cast<const VecN*>(out + g * d + k);
    for (int64_t r = 0; r < rows; ++r) {
      const VecN x = *reinterpret_cast<const VecN*>(v + r * d + k);
      const float* cr = c + r * cstride;
      for (int g = 0; g < G; ++g) acc[g] += cr[g] * x;
    }
    for (int g = 0; g < G; ++g) *reinterpret_cast<VecN*>(out + g * d + k) = acc[g];
  }
  for (; k < d; ++k)
    for (int g = 0; g < G; ++g) {
      float s = from_zero ? 0.0f : out[g * d + k];
      for (int64_t r = 0; r < rows; ++r) s += c[r * cstride + g] * v[r * d + k];
      out[g * d + k] = s;
    }
}

// acc_j (+)= Σ_r c[r*hidden + j]·v_r for every hidden unit j (acc: hidden x d), eight units per sweep.
void accumulate_rows(const float* c, const float* v, int64_t rows, int64_t d, int64_t hidden, bool from_zero,
                     float* acc) {
  for (int64_t j = 0; j < hidden; j += 8) {
    const float* cj = c + j;
    float* out = acc + j * d;
    switch (std::min<int64_t>(8, hidden - j)) {
      case 1: outer_sweep<1>(cj, hidden, v, rows, d, from_zero, out); break;
      case 2: outer_sweep<2>(cj, hidden, v, rows, d, from_zero, out); break;
      case 3: outer_sweep<3>(cj, hidden, v, rows, d, from_zero, out); break;
      case 4: outer_sweep<4>(cj, hidden, v, rows, d, from_zero, out); break;
      case 5: outer_sweep<5>(cj, hidden, v, rows, d, from_zero, out); break;
      case 6: outer_sweep<6>(cj, hidden, v, rows, d, from_zero, out); break;
      case 7: outer_sweep<7>(cj, hidden, v, rows, d, from_zero, out); break;
      default: outer_sweep<8>(cj, hidden, v, rows, d, from_zero, out);
    }
  }
}

// One row of fda_na_backward's first phase: gx (the row's grad_x; scratch when not wanted) = the
// element-wise terms + W1ᵀ·gpre, gh = (g*s)*alpha, gpre and u (hidden floats each) for the second phase.
void na_backward_row(const float* g, const float* x, int64_t d, const float* w1, const float* w2t, int64_t hidden,
                     const float* pre, float s, float alpha, float p0, float p1, float p2, bool skip, float* gx,
                     float* gh, float* gpre, float* u, Terms terms) {
  na_backward_span(g, x, d, s, alpha, p0, p1, p2, gx, gh);
  hidden_grad(gh, d, w2t, hidden, pre, gpre, terms);
  int64_t m = 0;
  for (int64_t j = 0; j < hidden; ++j) {
    u[j] = relu_of(pre[j]);
    if (gpre[j] != 0.0f || !skip) {
      terms.coef[m] = gpre[j];
      terms.rows[m++] = w1 + j * d;
    }
  }
  combine(terms.rows, terms.coef, m, d, gx, false);  // fc1's input gradient W1ᵀ·gpre, added term by term
}

// Up to kSweepRows consecutive rows of a unit: their first phase, then their dW1, dW2ᵀ terms added to
// the unit's partials (part1, part2; null: not wanted; from_zero for the unit's first rows).
void na_backward_rows(int64_t rows, const float* g, const float* x, int64_t d, const float* w1, const float* w2t,
                      int64_t hidden, const float* pre, const float* scale, float alpha, float p0, float p1, float p2,
                      bool skip, bool from_zero, float* part1, float* part2, BackwardRows b, Terms terms) {
  for (int64_t r = 0; r < rows; ++r)
    na_backward_row(g + r * d, x + r * d, d, w1, w2t, hidden, pre + r * hidden, scale ? scale[r] : 1.0f, alpha, p0,
                    p1, p2, skip, b.gx ? b.gx + r * d : b.gx_scratch, b.gh + r * d, b.gpre + r * hidden,
                    b.u + r * hidden, terms);
  if (part1) accumulate_rows(b.gpre, x, rows, d, hidden, from_zero, part1);
  if (part2) accumulate_rows(b.u, b.gh, rows, d, hidden, from_zero, part2);
}
