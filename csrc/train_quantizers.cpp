// Training-time weight quantizers, row-wise (see train_quantizers.h).
//
// The kernels themselves are in train_quantizers_kernels.h: plain loops that the compiler
// vectorizes. Sums are taken in double precision; `omp simd reduction` (-fopenmp-simd: no OpenMP
// runtime) lets the compiler keep one partial sum per vector lane, which it may not do on its own
// without -ffast-math. A row is always one thread's, so no result depends on the thread count.
#include "train_quantizers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "thread_pool.h"

// The kernels are compiled three times: for AVX-512 with FMA, AVX2 with FMA, and the baseline ISA,
// and the first the CPU supports is picked at run time (the same binary runs on any x86-64 CPU). FMA
// contraction is on for this file (CMakeLists.txt), so results may differ in the last bits between
// those three, never between runs or thread counts on one CPU.
namespace onebit {
namespace {

constexpr int64_t kRowsPerUnit = 4;  // rows handed to a thread at a time

#define ONEBIT_ISA_HEADER "train_quantizers_kernels.h"
#include "isa_variants.h"

struct Kernels {
  decltype(&isa_default::standardize_row) standardize_row;
  decltype(&isa_default::backward_row) backward_row;
  decltype(&isa_default::surrogate_span) surrogate_span;
  decltype(&isa_default::tanh_span) tanh_span;
  decltype(&isa_default::math_span) math_span;
  decltype(&isa_default::swish_weight_row) swish_weight_row;
  decltype(&isa_default::swish_weight_backward_row) swish_weight_backward_row;
  decltype(&isa_default::fda_value_span) fda_value_span;
  decltype(&isa_default::fda_backward_span) fda_backward_span;
  decltype(&isa_default::biper_wave_span) biper_wave_span;
  decltype(&isa_default::biper_backward_span) biper_backward_span;
  decltype(&isa_default::abs_sum) abs_sum;
};

#define ONEBIT_TQ_KERNELS(ns) \
  Kernels { ns::standardize_row, ns::backward_row, ns::surrogate_span, ns::tanh_span, ns::math_span, ns::swish_weight_row, \
            ns::swish_weight_backward_row, ns::fda_value_span, ns::fda_backward_span, ns::biper_wave_span,        \
            ns::biper_backward_span, ns::abs_sum }

const Kernels& kernels() {
  static const Kernels k = ONEBIT_ISA_PICK(ONEBIT_TQ_KERNELS);
  return k;
}

constexpr int64_t kSpan = 4096;  // elements handed to a thread at a time by the element-wise kernels

// fn(row, lo, len) over spans of at most kSpan elements of each row of a rows x n tensor.
template <typename Fn>
void over_row_spans(int64_t rows, int64_t n, int num_threads, Fn fn) {
  const int64_t per_row = (n + kSpan - 1) / kSpan;
  parallel_ranges(num_threads, rows * per_row, 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t r = u / per_row, lo = (u % per_row) * kSpan;
      fn(r, lo, std::min(kSpan, n - lo));
    }
  });
}


}  // namespace

void standardize_rows(int kind, const float* w, int64_t rows, int64_t n, float k, float t, float eps, float* z,
                      float* out, float* z_mean, float* factor, float* through, float* abs_sum, int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      kernels().standardize_row(kind, w + r * n, n, k, t, eps, z + r * n, out + r * n, z_mean + r, factor + r, through + r,
                      abs_sum ? abs_sum + r : nullptr);
  });
}

void standardize_backward_rows(int kind, const float* g, const float* z, const float* z_mean, const float* factor,
                               const float* through, float param, double dof, int64_t rows, int64_t n, float* out,
                               int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      kernels().backward_row(kind, g + r * n, z + r * n, z_mean[r], factor[r], through[r], param, dof, n, out + r * n);
  });
}

void tanh_rows(const float* x, int64_t n, float* out, int num_threads) {
  over_spans(n, kSpan, num_threads, [&](int64_t lo, int64_t len) { kernels().tanh_span(x + lo, len, out + lo); });
}

void surrogate_grad(int kind, const float* g, const float* x, int64_t n, float p0, float p1, float p2, float* out,
                    int num_threads) {
  over_spans(n, kSpan, num_threads, [&](int64_t lo, int64_t len) {
    kernels().surrogate_span(kind, g ? g + lo : nullptr, x + lo, len, p0, p1, p2, out + lo);
  });
}

void swish_weight(int kind, const float* w, int64_t rows, int64_t n, const float* alpha, float beta, float* out,
                  int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      kernels().swish_weight_row(kind, w + r * n, n, alpha ? alpha[r] : 1.0f, alpha != nullptr, beta, out + r * n);
  });
}

void swish_weight_backward(const float* g, const float* w, int64_t rows, int64_t n, const float* alpha, float beta,
                           float* out, int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      kernels().swish_weight_backward_row(g + r * n, w + r * n, n, alpha ? alpha[r] : 1.0f, alpha != nullptr, beta,
                                          out + r * n);
  });
}

void fda_value(const float* x, const float* h, int64_t rows, int64_t n, const float* scale, float alpha, float* out,
               int num_threads) {
  over_row_spans(rows, n, num_threads, [&](int64_t r, int64_t lo, int64_t len) {
    const int64_t at = r * n + lo;
    kernels().fda_value_span(x + at, h + at, len, scale ? scale[r] : 1.0f, alpha, out + at);
  });
}

void fda_value_mean_abs(const float* x, const float* h, int64_t rows, int64_t n, float alpha, float* out,
                        float* scale_out, int num_threads) {
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t at = r * n;
      const float s = static_cast<float>(kernels().abs_sum(x + at, n) / static_cast<double>(n));
      scale_out[r] = s;
      kernels().fda_value_span(x + at, h + at, n, s, alpha, out + at);
    }
  });
}

void fda_backward(const float* g, const float* x, int64_t rows, int64_t n, const float* scale, float alpha, float p0,
                  float p1, float p2, float* grad_x, float* grad_h, int num_threads) {
  over_row_spans(rows, n, num_threads, [&](int64_t r, int64_t lo, int64_t len) {
    const int64_t at = r * n + lo;
    kernels().fda_backward_span(g + at, x + at, len, scale ? scale[r] : 1.0f, alpha, p0, p1, p2, grad_x + at,
                                grad_h ? grad_h + at : nullptr);
  });
}

double biper_wave(const float* w, int64_t n, float omega, bool binary, float* out, int num_threads) {
  // One partial sum per span, added in span order: the same total whatever the thread count.
  std::vector<double> partial(static_cast<size_t>((n + kSpan - 1) / kSpan));
  over_spans(n, kSpan, num_threads, [&](int64_t lo, int64_t len) {
    partial[static_cast<size_t>(lo / kSpan)] = kernels().biper_wave_span(w + lo, len, omega, binary, out + lo);
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void biper_wave_backward(const float* g, const float* w, int64_t n, float omega, float loss_factor, float* out,
                         int num_threads) {
  over_spans(n, kSpan, num_threads, [&](int64_t lo, int64_t len) {
    kernels().biper_backward_span(g ? g + lo : nullptr, w + lo, len, omega, loss_factor, out + lo);
  });
}

void math_rows(int kind, const float* x, int64_t n, float* out, int num_threads) {
  over_spans(n, kSpan, num_threads, [&](int64_t lo, int64_t len) { kernels().math_span(kind, x + lo, len, out + lo); });
}

}  // namespace onebit
