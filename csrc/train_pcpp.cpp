// PC++'s weight quantizer, row by row (see train_pcpp.h). The row kernels are in train_pcpp_kernels.h,
// compiled for AVX-512 and for the baseline ISA, the first the CPU supports picked at run time.
#include "train_pcpp.h"

#include <algorithm>
#include <cmath>

#include "thread_pool.h"

namespace onebit {
namespace {

constexpr int64_t kRowsPerUnit = 4;  // rows handed to a thread at a time

namespace isa_default {
#include "train_pcpp_kernels.h"
}  // namespace isa_default

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ONEBIT_PCPP_X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2")
namespace isa_avx512 {
#include "train_pcpp_kernels.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

struct Kernels {
  decltype(&isa_default::abs_sum_row) abs_sum_row;
  decltype(&isa_default::value_row) value_row;
  decltype(&isa_default::grad_row) grad_row;
};

const Kernels& kernels() {
  static const Kernels k = [] {
#ifdef ONEBIT_PCPP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
      return Kernels{isa_avx512::abs_sum_row, isa_avx512::value_row, isa_avx512::grad_row};
#endif
    return Kernels{isa_default::abs_sum_row, isa_default::value_row, isa_default::grad_row};
  }();
  return k;
}

}  // namespace

void pcpp_weight(int kind, const float* w, int64_t rows, int64_t n, float* alpha, bool alpha_given, float mu,
                 float* out, int num_threads) {
  const Kernels& k = kernels();
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = w + r * n;
      float a = 1.0f;
      if (alpha) {
        if (!alpha_given) alpha[r] = static_cast<float>(k.abs_sum_row(row, n) / static_cast<double>(n));
        a = alpha[r];
      }
      if (out) k.value_row(kind, row, n, a, alpha != nullptr, mu, out + r * n);
    }
  });
}

void pcpp_weight_backward(int kind, const float* g, const float* w, int64_t rows, int64_t n, const float* alpha,
                          float* out, int num_threads) {
  const Kernels& k = kernels();
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      k.grad_row(kind, g + r * n, w + r * n, n, alpha ? alpha[r] : 1.0f, alpha != nullptr, out + r * n);
  });
}

}  // namespace onebit
