// FDA's fused training quantizer with its noise adaptation (see train_fda.h).
//
// The row kernels (train_fda_kernels.h) are compiled, like train_quantizers.cpp's, for AVX-512 with
// FMA, AVX2 with FMA and the baseline ISA, the first the CPU supports picked at run time
// (isa_variants.h); they reuse train_quantizers_kernels.h's sin/cos and FDA value/gradient spans,
// included here once per ISA too.
#include "train_fda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "thread_pool.h"
#include "train_quantizers.h"

namespace nb = nanobind;
using namespace nb::literals;

// train_quantizers_kernels.h's other kernels are not used here; and the kernels pass 64-byte vectors
// between internal functions, whose ABI note (-Wpsabi: passed differently without AVX-512) concerns
// no caller outside this file.
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wpsabi"

namespace onebit {
namespace {

constexpr int64_t kRowsPerUnit = 4;  // forward: rows handed to a thread at a time

// Scratch of one thread: the kept terms of a combine (coefficients, rows) and a projection's rows.
struct Terms {
  float* coef;
  const float** rows;
  int64_t* index;
  float* dots;
};

// The scratch of na_backward_rows (up to kSweepRows rows): gx the rows' grad_x (null: not wanted,
// gx_scratch then takes each row's), gh (rows x d), gpre and u (rows x hidden).
struct BackwardRows {
  float* gx;
  float* gx_scratch;
  float* gh;
  float* gpre;
  float* u;
};

// The floats in one vector register of each ISA variant (train_fda_kernels.h's register blocking).
namespace isa_default {
constexpr int kVectorFloats = 4;
}
namespace isa_avx2 {
constexpr int kVectorFloats = 8;
}
namespace isa_avx512 {
constexpr int kVectorFloats = 16;
}

#define ONEBIT_ISA_HEADER "train_quantizers_kernels.h"
#define ONEBIT_ISA_HEADER_2 "train_fda_kernels.h"
#include "isa_variants.h"

struct Kernels {
  decltype(&isa_default::na_forward_rows) forward_rows;
  decltype(&isa_default::na_backward_rows) backward_rows;
};

#define ONEBIT_FDA_KERNELS(ns) \
  Kernels { ns::na_forward_rows, ns::na_backward_rows }

const Kernels& kernels() {
  static const Kernels k = ONEBIT_ISA_PICK(ONEBIT_FDA_KERNELS);
  return k;
}

constexpr int64_t kSweepRows = 64;  // backward rows whose dW1/dW2 terms are added in one sweep over the partials

// One thread's scratch for isa_*::Terms (up to `count` terms).
struct TermScratch {
  explicit TermScratch(int64_t count)
      : coef(static_cast<size_t>(count)), dots(static_cast<size_t>(count)), rows(static_cast<size_t>(count)),
        index(static_cast<size_t>(count)) {}
  Terms terms() { return {coef.data(), rows.data(), index.data(), dots.data()}; }
  std::vector<float> coef, dots;
  std::vector<const float*> rows;
  std::vector<int64_t> index;
};

// W2 (d x hidden) as W2ᵀ (hidden x d): each hidden unit's weights contiguous, like W1's.
std::vector<float> transposed(const float* w2, int64_t d, int64_t hidden) {
  std::vector<float> t(static_cast<size_t>(d * hidden));
  for (int64_t k = 0; k < d; ++k)
    for (int64_t j = 0; j < hidden; ++j) t[static_cast<size_t>(j * d + k)] = w2[k * hidden + j];
  return t;
}

}  // namespace

void fda_na_forward(const float* x, int64_t rows, int64_t d, const float* w1, const float* w2, int64_t hidden,
                    float alpha, float* out, float* pre, float* scale_out, int num_threads) {
  const std::vector<float> w2t = transposed(w2, d, hidden);
  const bool skip = isa_default::all_finite(w2, d * hidden);
  parallel_ranges(num_threads, rows, kRowsPerUnit, [&](int64_t begin, int64_t end) {
    std::vector<float> hbuf(static_cast<size_t>(d));
    TermScratch scratch(hidden);
    for (int64_t r = begin; r < end; r += 4)
      kernels().forward_rows(std::min<int64_t>(4, end - r), x + r * d, d, w1, w2t.data(), hidden,
                             scale_out != nullptr, skip, alpha, out + r * d, pre + r * hidden,
                             scale_out ? scale_out + r : nullptr, hbuf.data(), scratch.terms());
  });
}

namespace {

// The partials (units x {dW1, dW2ᵀ}, hidden x d each) added in unit order: the same bits whatever the
// thread count; dW2 written back as d x hidden.
void sum_partials(const std::vector<float>& partial, int64_t units, int64_t d, int64_t hidden, float* grad_w1,
                  float* grad_w2, int num_threads) {
  const int64_t block = hidden * d;
  parallel_ranges(num_threads, hidden, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(static_cast<size_t>(d));
    for (int64_t j = begin; j < end; ++j)
      for (int part = 0; part < 2; ++part) {
        if (!(part == 0 ? grad_w1 : grad_w2)) continue;
        std::fill(sum.begin(), sum.end(), 0.0f);
        for (int64_t unit = 0; unit < units; ++unit) {
          const float* p = partial.data() + unit * 2 * block + part * block + j * d;
          for (int64_t k = 0; k < d; ++k) sum[static_cast<size_t>(k)] += p[k];
        }
        for (int64_t k = 0; k < d; ++k) {
          if (part == 0)
            grad_w1[j * d + k] = sum[static_cast<size_t>(k)];
          else
            grad_w2[k * hidden + j] = sum[static_cast<size_t>(k)];
        }
      }
  });
}

}  // namespace

void fda_na_backward(const float* g, const float* x, int64_t rows, int64_t d, const float* w1, const float* w2,
                     int64_t hidden, const float* pre, const float* scale, float alpha, float p0, float p1, float p2,
                     float* grad_x, float* grad_w1, float* grad_w2, int num_threads) {
  const std::vector<float> w2t = transposed(w2, d, hidden);
  const bool weights_finite = isa_default::all_finite(w1, d * hidden) && isa_default::all_finite(w2, d * hidden);
  // Fixed units of rows (not per thread): each sums its rows' dW1, dW2ᵀ in row order into its partial.
  const int64_t per_unit = std::max<int64_t>(1, (rows + kFdaUnits - 1) / kFdaUnits);
  const int64_t units = (rows + per_unit - 1) / per_unit;
  const int64_t block = hidden * d;
  const bool wants_w = grad_w1 || grad_w2;
  std::vector<float> partial(wants_w ? static_cast<size_t>(units * 2 * block) : 0);
  parallel_ranges(num_threads, units, 1, [&](int64_t begin, int64_t end) {
    const int64_t most = std::min(kSweepRows, per_unit);
    std::vector<float> scratch(static_cast<size_t>(d + most * (d + 2 * hidden)));
    BackwardRows b{nullptr, scratch.data(), scratch.data() + d, scratch.data() + d + most * d,
                   scratch.data() + d + most * (d + hidden)};
    TermScratch terms(hidden);
    for (int64_t unit = begin; unit < end; ++unit) {
      float* part1 = grad_w1 ? partial.data() + unit * 2 * block : nullptr;
      float* part2 = grad_w2 ? partial.data() + unit * 2 * block + block : nullptr;
      const int64_t first = unit * per_unit, last = std::min(rows, first + per_unit);
      for (int64_t r = first; r < last; r += kSweepRows) {
        b.gx = grad_x ? grad_x + r * d : nullptr;
        kernels().backward_rows(std::min(kSweepRows, last - r), g + r * d, x + r * d, d, w1, w2t.data(), hidden,
                                pre + r * hidden, scale ? scale + r : nullptr, alpha, p0, p1, p2, weights_finite,
                                r == first, part1, part2, b, terms.terms());
      }
    }
  });
  if (wants_w) sum_partials(partial, units, d, hidden, grad_w1, grad_w2, num_threads);
}

namespace {

const float* in(uintptr_t a) { return reinterpret_cast<const float*>(a); }
float* out_ptr(uintptr_t a) { return a ? reinterpret_cast<float*>(a) : nullptr; }

void check(bool ok, int threads, const char* what) {
  if (!ok || threads < 1)
    throw std::invalid_argument(std::string(what) + ": bad arguments (null address, non-positive size or no thread)");
}

}  // namespace

void bind_train_fda(nb::module_& mod) {
  mod.def(
      "fda_na_forward",
      [](uintptr_t x, int64_t rows, int64_t d, uintptr_t w1, uintptr_t w2, int64_t hidden, float alpha, uintptr_t out,
         uintptr_t pre, uintptr_t scale_out, int threads) {
        check(x && w1 && w2 && out && pre && rows >= 0 && d > 0 && hidden > 0, threads, "fda_na_forward");
        nb::gil_scoped_release nogil;
        fda_na_forward(in(x), rows, d, in(w1), in(w2), hidden, alpha, out_ptr(out), out_ptr(pre), out_ptr(scale_out),
                       threads);
      },
      "x_addr"_a, "rows"_a, "d"_a, "w1_addr"_a, "w2_addr"_a, "hidden"_a, "alpha"_a, "out_addr"_a, "pre_addr"_a,
      "scale_out_addr"_a, "num_threads"_a,
      "FDA's (sign(x) + alpha*(fc2(relu(fc1(x))) + 0.1*sin(x)))*s per row (scale_out_addr 0: s = 1, else "
      "s = the row's mean |x|, written there); fc1's pre-activations to pre (rows x hidden).");
  mod.def(
      "fda_na_backward",
      [](uintptr_t g, uintptr_t x, int64_t rows, int64_t d, uintptr_t w1, uintptr_t w2, int64_t hidden, uintptr_t pre,
         uintptr_t scale, float alpha, float p0, float p1, float p2, uintptr_t grad_x, uintptr_t grad_w1,
         uintptr_t grad_w2, int threads) {
        check(g && x && w1 && w2 && pre && rows >= 0 && d > 0 && hidden > 0, threads, "fda_na_backward");
        nb::gil_scoped_release nogil;
        fda_na_backward(in(g), in(x), rows, d, in(w1), in(w2), hidden, in(pre), scale ? in(scale) : nullptr, alpha,
                        p0, p1, p2, out_ptr(grad_x), out_ptr(grad_w1), out_ptr(grad_w2), threads);
      },
      "g_addr"_a, "x_addr"_a, "rows"_a, "d"_a, "w1_addr"_a, "w2_addr"_a, "hidden"_a, "pre_addr"_a, "scale_addr"_a,
      "alpha"_a, "p0"_a, "p1"_a, "p2"_a, "grad_x_addr"_a, "grad_w1_addr"_a, "grad_w2_addr"_a, "num_threads"_a,
      "Its gradients to x, fc1.weight and fc2.weight (each address 0: not wanted).");
}

}  // namespace onebit
