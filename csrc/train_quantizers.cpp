// Training-time weight quantizers, row-wise (see train_quantizers.h).
//
// Plain loops that the compiler vectorizes. Sums are taken in double precision; `omp simd
// reduction` (-fopenmp-simd: no OpenMP runtime) lets the compiler keep one partial sum per vector
// lane, which it may not do on its own without -ffast-math. The lane count is the ISA clone's, so a
// sum may differ in its last bits between CPUs, never between thread counts (a row is one thread's).
#include "train_quantizers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "thread_pool.h"

// Each hot function is compiled for AVX-512, AVX2 and the baseline, and the loader picks the
// best the CPU has (GCC/Clang function multi-versioning on x86-64 ELF); elsewhere, one version.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(__clang__)
#define ONEBIT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ONEBIT_CLONES
#endif

namespace onebit {
namespace {

constexpr int64_t kRowsPerUnit = 4;  // rows handed to a thread at a time

inline float sign_of(float v) {
  // +1 for v >= 0 (and -0.0), -1 below, NaN kept: what onebit's sign(x) = sign(sign(x) + 0.5) gives.
  const float s = v < 0.0f ? -1.0f : 1.0f;
  return v != v ? v : s;
}

// 2^n for an integer n in [-126, 127], built from the exponent bits.
inline float pow2i(int n) {
  const uint32_t bits = static_cast<uint32_t>(n + 127) << 23;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}

// exp(x) for x in [1, 20] (the only range tanh_approx needs): Cephes expf's reduction
// x = n ln2 + r, |r| <= ln2/2, with ln2 split in two so n ln2 is exact, and its degree-7 polynomial
// (relative error < 1.2e-7 = 1 ulp on the reduced range).
inline float exp_1_20(float x) {
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
  const float e = exp_1_20(2.0f * std::min(std::max(ax, 0.625f), 10.0f));
  const float large = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  const float r = ax < 0.625f ? small : large;
  return (x != x || x == 0.0f) ? x : r;
}

struct RowSums {
  double a = 0, b = 0;
};

// sum of (v[i] - shift) (a) and of its squares (b).
ONEBIT_CLONES RowSums lane_sums(const float* v, int64_t n, float shift) {
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
ONEBIT_CLONES RowSums divide_row(const float* w, int64_t n, float m, float div, float* z) {
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

ONEBIT_CLONES void sign_row(const float* z, int64_t n, float scale, float* out) {
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
ONEBIT_CLONES RowSums ede_grad_row(const float* g, const float* z, int64_t n, float factor, float t, float* out) {
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

ONEBIT_CLONES RowSums window_grad_row(const float* g, const float* z, int64_t n, float factor, float q, float* out) {
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

ONEBIT_CLONES void finish_row(const float* z, int64_t n, float coef, float centring, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (out[i] - z[i] * coef) - centring;
}

ONEBIT_CLONES void tanh_span(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = tanh_approx(x[i]);
}

}  // namespace

void standardize_rows(int kind, const float* w, int64_t rows, int64_t n, float k, float t, float eps, float* z,
                      float* out, float* z_mean, float* factor, float* through, float* abs_sum, int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      standardize_row(kind, w + r * n, n, k, t, eps, z + r * n, out + r * n, z_mean + r, factor + r, through + r,
                      abs_sum ? abs_sum + r : nullptr);
  });
}

void standardize_backward_rows(int kind, const float* g, const float* z, const float* z_mean, const float* factor,
                               const float* through, float param, double dof, int64_t rows, int64_t n, float* out,
                               int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gr = g + r * n;
      const float* zr = z + r * n;
      float* o = out + r * n;
      const RowSums sums = kind == kEdeGrad ? ede_grad_row(gr, zr, n, factor[r], param, o)
                                            : window_grad_row(gr, zr, n, factor[r], param, o);
      const float coef = static_cast<float>(sums.b / dof) * through[r];
      const float centring = static_cast<float>(sums.a / static_cast<double>(n)) - z_mean[r] * coef;
      finish_row(zr, n, coef, centring, o);
    }
  });
}

void tanh_rows(const float* x, int64_t n, float* out, int num_threads) {
  constexpr int64_t kSpan = 4096;
  parallel_ranges(num_threads, (n + kSpan - 1) / kSpan, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      const int64_t lo = s * kSpan;
      tanh_span(x + lo, std::min(kSpan, n - lo), out + lo);
    }
  });
}

}  // namespace onebit
