// Training-time activation quantizers (see train_activations.h).
//
// Plain loops that the compiler vectorizes. The hot loops are compiled for AVX-512, AVX2 and the
// baseline ISA (GCC's target_clones: the loader picks the first the CPU supports); none of them uses
// FMA contraction (-ffp-contract=off for the whole engine): each element's arithmetic rounds as
// torch's does, with std::fma exactly where torch's vectorized kernels fuse (addcmul). Row sums are taken in double precision; `omp simd reduction` (-fopenmp-simd: no OpenMP
// runtime) lets the compiler keep one partial sum per vector lane. A row or a span is always one
// thread's, so no result depends on the thread count.
#include "train_activations.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "thread_pool.h"
#include "train_quantizers.h"

namespace nb = nanobind;
using namespace nb::literals;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define ONEBIT_TA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ONEBIT_TA_CLONES
#endif

namespace onebit {
namespace train_activations_detail {

// hardtanh_backward's bound for clamp(-1, 1): the gradient passes on the open (-b, b) = [-1, 1].
constexpr float kAboveOne = 1.0f + FLT_EPSILON;

inline float sign_of(float v) { return v < 0.0f ? -1.0f : 1.0f; }

// torch's ApproxSTE.grad at v: hardtanh_backward, then addcmul(inside*2, inside, |v|, value=-2),
// which torch's vectorized CPU kernel (AVX2/AVX-512 builds) computes as fma(-2*inside, |v|, inside*2).
inline float approx_grad(float g, float v) {
  const float inside = (v <= -kAboveOne || v >= kAboveOne) ? 0.0f : g;
  return std::fma(-2.0f * inside, std::fabs(v), inside * 2.0f);
}

ONEBIT_TA_CLONES void sign_span(const float* x, float shift, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = sign_of(x[i] + shift);
}

ONEBIT_TA_CLONES void sign_vec_span(const float* x, const float* shift, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = sign_of(x[i] + shift[i]);
}

ONEBIT_TA_CLONES void approx_span(const float* g, const float* x, float shift, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = approx_grad(g[i], x[i] + shift);
}

ONEBIT_TA_CLONES void approx_vec_span(const float* g, const float* x, const float* shift, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = approx_grad(g[i], x[i] + shift[i]);
}

// approx_span that also returns the sum of what it writes (double).
ONEBIT_TA_CLONES double approx_span_sum(const float* g, const float* x, float shift, int64_t n, float* out) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float v = approx_grad(g[i], x[i] + shift);
    out[i] = v;
    s += static_cast<double>(v);
  }
  return s;
}

// One (sample, channel) plane of spatial_scale: ((y*c)*h[i])*w[j].
ONEBIT_TA_CLONES void scale_plane(const float* y, float c, const float* h, const float* w, int64_t height,
                                  int64_t width, float* out) {
  for (int64_t i = 0; i < height; ++i) {
    const float hi = h[i];
    const float* yr = y + i * width;
    float* o = out + i * width;
    if (w == nullptr) {
      for (int64_t j = 0; j < width; ++j) o[j] = (yr[j] * c) * hi;
    } else {
      for (int64_t j = 0; j < width; ++j) o[j] = ((yr[j] * c) * hi) * w[j];
    }
  }
}

// scale_plane with the output written over y (one pointer: no aliasing for the vectorizer to guard).
ONEBIT_TA_CLONES void scale_plane_in_place(float* y, float c, const float* h, const float* w, int64_t height,
                                           int64_t width) {
  for (int64_t i = 0; i < height; ++i) {
    const float hi = h[i];
    float* yr = y + i * width;
    if (w == nullptr) {
      for (int64_t j = 0; j < width; ++j) yr[j] = (yr[j] * c) * hi;
    } else {
      for (int64_t j = 0; j < width; ++j) yr[j] = ((yr[j] * c) * hi) * w[j];
    }
  }
}

ONEBIT_TA_CLONES void code_plane(const float* y, int64_t len, int16_t* code) {
  for (int64_t k = 0; k < len; ++k) code[k] = static_cast<int16_t>(y[k]);
}

// One plane of spatial_scale_backward: out = g*s, acc += g*y (y float or int16).
template <typename Y>
ONEBIT_TA_CLONES void scale_grad_plane(const float* g, const Y* y, const float* s, int64_t len, float* out,
                                       double* acc) {
  for (int64_t k = 0; k < len; ++k) {
    out[k] = g[k] * s[k];
    acc[k] += static_cast<double>(g[k] * static_cast<float>(y[k]));
  }
}

ONEBIT_TA_CLONES double row_sum(const float* x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

ONEBIT_TA_CLONES double centred_squares(const float* x, float mean, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float c = x[i] - mean;  // torch's float `rows - mean`
    s += static_cast<double>(c) * static_cast<double>(c);
  }
  return s;
}

ONEBIT_TA_CLONES void scaled_sign_span(const float* x, float std, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = sign_of(x[i] / std);
}

// Pass 1 of the standardised backward: g_a = approx_grad(g, x/std) into out, returns sum g_a*a.
ONEBIT_TA_CLONES double standardized_grad_pass1(const float* g, const float* x, float std, int64_t n, float* out) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float a = x[i] / std;
    const float ga = approx_grad(g[i], a);
    out[i] = ga;
    s += static_cast<double>(ga) * static_cast<double>(a);
  }
  return s;
}

// Pass 2: out = fma(-(a - m/std), coef, g_a)/std, torch's addcmul_(shifted, coef, value=-1).div_(std).
ONEBIT_TA_CLONES void standardized_grad_pass2(const float* x, float std, float mean_over_std, float coef, int64_t n,
                                              float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float shifted = x[i] / std - mean_over_std;
    out[i] = std::fma(-1.0f * shifted, coef, out[i]) / std;
  }
}

// BNN's clip-STE code (functional.ClipSTE.pack): sign(x)*(|x| > 1 ? 2 : 1) as int8, the sign
// +1 where x >= 0 (NaN: -1, as the numpy path it replaces; a NaN activation is garbage either way).
ONEBIT_TA_CLONES void clip_pack_span(const float* x, int64_t n, int8_t* code) {
  for (int64_t i = 0; i < n; ++i) {
    const int8_t s = x[i] >= 0.0f ? 1 : -1;
    code[i] = std::fabs(x[i]) > 1.0f ? static_cast<int8_t>(2 * s) : s;
  }
}

// The binary input from a clip-STE code (+-1: the code clamped to [-1, 1]); returns whether any
// |code| > 1 (an |x| > 1: backward then needs the code's mask).
ONEBIT_TA_CLONES bool clip_unpack_span(const int8_t* code, int64_t n, float* out) {
  int outside = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int c = code[i];
    out[i] = c >= 0 ? 1.0f : -1.0f;
    outside |= (c > 1) | (c < -1);
  }
  return outside != 0;
}

constexpr int64_t kSpan = 16384;  // elements handed to a thread at a time (64 KB: L2-resident)
constexpr int64_t kAccumulators = 32768;  // spatial_scale_backward's doubles per channel block (256 KB: L2)

// fn(offset, length, shift) over the planes of (outer, channels, inner) that share one shift value,
// or over whole rows (offset, channels, shift vector) when inner == 1.
template <typename Scalar, typename Vector>
void over_channels(const float* shift, int64_t outer, int64_t channels, int64_t inner, int num_threads,
                   Scalar scalar, Vector vector) {
  if (shift == nullptr) {
    over_spans(outer * channels * inner, kSpan, num_threads,
               [&](int64_t lo, int64_t len) { scalar(lo, len, 0.0f); });
    return;
  }
  parallel_ranges(num_threads, outer, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t row = o * channels * inner;
      if (inner == 1) {
        vector(row, channels, shift);
        continue;
      }
      for (int64_t c = 0; c < channels; ++c) scalar(row + c * inner, inner, shift[c]);
    }
  });
}

}  // namespace train_activations_detail

namespace ta = train_activations_detail;

void activation_sign(const float* x, const float* shift, int64_t outer, int64_t channels, int64_t inner, float* out,
                     int num_threads) {
  ta::over_channels(
      shift, outer, channels, inner, num_threads,
      [&](int64_t lo, int64_t len, float b) { ta::sign_span(x + lo, b, len, out + lo); },
      [&](int64_t lo, int64_t len, const float* b) { ta::sign_vec_span(x + lo, b, len, out + lo); });
}

void approx_sign_grad(const float* g, const float* x, const float* shift, int64_t outer, int64_t channels,
                      int64_t inner, float* out, int num_threads) {
  ta::over_channels(
      shift, outer, channels, inner, num_threads,
      [&](int64_t lo, int64_t len, float b) { ta::approx_span(g + lo, x + lo, b, len, out + lo); },
      [&](int64_t lo, int64_t len, const float* b) { ta::approx_vec_span(g + lo, x + lo, b, len, out + lo); });
}

void approx_sign_grad_sum(const float* g, const float* x, const float* shift, int64_t outer, int64_t channels,
                          int64_t inner, float* out, float* sums, int num_threads) {
  // One partial sum per (outer, channel), each one thread's; then per channel over outer in order.
  std::vector<double> partial(static_cast<size_t>(outer * channels));
  parallel_ranges(num_threads, outer, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t row = o * channels * inner;
      if (inner == 1) {
        ta::approx_vec_span(g + row, x + row, shift, channels, out + row);
        for (int64_t c = 0; c < channels; ++c) partial[static_cast<size_t>(o * channels + c)] = out[row + c];
        continue;
      }
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t lo = row + c * inner;
        partial[static_cast<size_t>(o * channels + c)] = ta::approx_span_sum(g + lo, x + lo, shift[c], inner, out + lo);
      }
    }
  });
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0.0;
    for (int64_t o = 0; o < outer; ++o) total += partial[static_cast<size_t>(o * channels + c)];
    sums[c] = static_cast<float>(total);
  }
}

void spatial_scale(const float* y, const float* c, const float* h, const float* w, int64_t n, int64_t channels,
                   int64_t height, int64_t width, float* out, int16_t* code, int num_threads) {
  const int64_t plane = height * width;
  parallel_ranges(num_threads, n * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      if (code) ta::code_plane(y + p * plane, plane, code + p * plane);  // first: out may be y itself
      if (out == y)
        ta::scale_plane_in_place(out + p * plane, c[p % channels], h, w, height, width);
      else
        ta::scale_plane(y + p * plane, c[p % channels], h, w, height, width, out + p * plane);
    }
  });
}

void spatial_scale_backward(const float* g, const float* y, const int16_t* code, const float* h, const float* w,
                            int64_t n, int64_t channels, int64_t height, int64_t width, float* out,
                            float* per_sample, int num_threads) {
  const int64_t plane = height * width;
  std::vector<float> s(static_cast<size_t>(plane));
  for (int64_t i = 0; i < height; ++i)
    for (int64_t j = 0; j < width; ++j) s[static_cast<size_t>(i * width + j)] = w ? h[i] * w[j] : h[i];
  // Each channel is one thread's, one double accumulator per (channel, position) summed over n in
  // order. A block of consecutive channels is walked sample by sample, so g, y and out stream through
  // memory (block x plane contiguous floats per sample) rather than one plane per sample and channel
  // (a page apart: a 128 x 16 x 32 x 32 layer took 1.65 ms cold that way, 1.25 ms so, 1 thread).
  const int64_t block = std::max<int64_t>(1, ta::kAccumulators / std::max<int64_t>(plane, 1));
  parallel_ranges(num_threads, channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(static_cast<size_t>(std::min(block, end - begin) * plane));
    for (int64_t first = begin; first < end; first += block) {
      const int64_t last = std::min(end, first + block);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t ch = first; ch < last; ++ch) {
          const int64_t at = (b * channels + ch) * plane;
          double* sums = acc.data() + (ch - first) * plane;
          if (code)
            ta::scale_grad_plane(g + at, code + at, s.data(), plane, out + at, sums);
          else
            ta::scale_grad_plane(g + at, y + at, s.data(), plane, out + at, sums);
        }
      }
      for (int64_t k = 0; k < (last - first) * plane; ++k)
        per_sample[first * plane + k] = static_cast<float>(acc[static_cast<size_t>(k)]);
    }
  });
}

void standardize_sign_rows(const float* x, int64_t rows, int64_t n, float dof, float eps, float* out, float* mean,
                           float* std, int num_threads) {
  parallel_ranges(num_threads, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * n;
      const float m = static_cast<float>(ta::row_sum(xr, n) / static_cast<double>(n));
      const float sq = static_cast<float>(ta::centred_squares(xr, m, n));
      const float s = std::sqrt(sq / dof + eps);  // torch: sqrt(vecdot / dof + EPS) in float
      ta::scaled_sign_span(xr, s, n, out + r * n);
      mean[r] = m;
      std[r] = s;
    }
  });
}

void scaled_sign_rows(const float* x, const float* std, int64_t rows, int64_t n, float* out, int num_threads) {
  parallel_ranges(num_threads, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) ta::scaled_sign_span(x + r * n, std[r], n, out + r * n);
  });
}

void standardized_approx_grad_rows(const float* g, const float* x, const float* mean, const float* std, int64_t rows,
                                   int64_t n, float dof, float* out, int num_threads) {
  parallel_ranges(num_threads, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t at = r * n;
      const float s = std[r];
      const float coef = static_cast<float>(ta::standardized_grad_pass1(g + at, x + at, s, n, out + at)) / dof;
      ta::standardized_grad_pass2(x + at, s, mean[r] / s, coef, n, out + at);
    }
  });
}

void clip_pack(const float* x, int64_t n, int8_t* code, int num_threads) {
  over_spans(n, ta::kSpan, num_threads, [&](int64_t lo, int64_t len) { ta::clip_pack_span(x + lo, len, code + lo); });
}

bool clip_unpack(const int8_t* code, int64_t n, float* out, int num_threads) {
  std::atomic<bool> outside{false};
  over_spans(n, ta::kSpan, num_threads, [&](int64_t lo, int64_t len) {
    if (ta::clip_unpack_span(code + lo, len, out + lo)) outside.store(true, std::memory_order_relaxed);
  });
  return outside.load();
}

namespace {

const float* in(uintptr_t a) { return reinterpret_cast<const float*>(a); }
float* out_ptr(uintptr_t a) { return reinterpret_cast<float*>(a); }

void check(bool ok, int threads, const char* what) {
  if (!ok || threads < 1)
    throw std::invalid_argument(std::string(what) + ": bad arguments (null address, negative size or no thread)");
}

}  // namespace

// The fused FDA and BiPer quantizers of train_quantizers.h (bound here: that file is built without
// nanobind, and module.cpp stays as it is).
void bind_fused_weight_quantizers(nb::module_& mod) {
  mod.def(
      "fda_value",
      [](uintptr_t x, uintptr_t h, int64_t rows, int64_t n, uintptr_t scale, float alpha, uintptr_t out, int threads) {
        check(x && h && out && rows >= 0 && n >= 0, threads, "fda_value");
        nb::gil_scoped_release nogil;
        fda_value(in(x), in(h), rows, n, scale ? in(scale) : nullptr, alpha, out_ptr(out), threads);
      },
      "x_addr"_a, "h_addr"_a, "rows"_a, "n"_a, "scale_addr"_a, "alpha"_a, "out_addr"_a, "num_threads"_a,
      "FDA's (sign(x) + alpha*(h + 0.1*sin(x)))*scale[row] (scale_addr 0: 1).");
  mod.def(
      "fda_value_mean_abs",
      [](uintptr_t x, uintptr_t h, int64_t rows, int64_t n, float alpha, uintptr_t out, uintptr_t scale_out,
         int threads) {
        check(x && h && out && scale_out && rows >= 0 && n > 0, threads, "fda_value_mean_abs");
        nb::gil_scoped_release nogil;
        fda_value_mean_abs(in(x), in(h), rows, n, alpha, out_ptr(out), out_ptr(scale_out), threads);
      },
      "x_addr"_a, "h_addr"_a, "rows"_a, "n"_a, "alpha"_a, "out_addr"_a, "scale_out_addr"_a, "num_threads"_a,
      "fda_value with scale = each row's mean |x| (written to scale_out), in the same pass.");
  mod.def(
      "fda_backward",
      [](uintptr_t g, uintptr_t x, int64_t rows, int64_t n, uintptr_t scale, float alpha, float p0, float p1, float p2,
         uintptr_t grad_x, uintptr_t grad_h, int threads) {
        check(g && x && grad_x && rows >= 0 && n >= 0, threads, "fda_backward");
        nb::gil_scoped_release nogil;
        fda_backward(in(g), in(x), rows, n, scale ? in(scale) : nullptr, alpha, p0, p1, p2, out_ptr(grad_x),
                     grad_h ? out_ptr(grad_h) : nullptr, threads);
      },
      "g_addr"_a, "x_addr"_a, "rows"_a, "n"_a, "scale_addr"_a, "alpha"_a, "p0"_a, "p1"_a, "p2"_a, "grad_x_addr"_a,
      "grad_h_addr"_a, "num_threads"_a, "FDA's gradients to x (Fourier surrogate + the NA sine) and to h (0: skipped).");
  mod.def(
      "ede_grad",
      [](uintptr_t g, uintptr_t x, int64_t n, float k, float t, uintptr_t out, int threads) {
        check(g && x && out && n >= 0, threads, "ede_grad");
        nb::gil_scoped_release nogil;
        surrogate_grad(kEdeSurrogateGrad, in(g), in(x), n, k, t, 0.0f, out_ptr(out), threads);
      },
      "g_addr"_a, "x_addr"_a, "n"_a, "k"_a, "t"_a, "out_addr"_a, "num_threads"_a,
      "IR-Net's EDE gradient ((g*k)*(1 - tanh(t*x)^2))*t over n floats.");
  mod.def(
      "biper_wave",
      [](uintptr_t w, int64_t n, float omega, bool binary, uintptr_t out, int threads) {
        check(w && out && n >= 0, threads, "biper_wave");
        nb::gil_scoped_release nogil;
        return biper_wave(in(w), n, omega, binary, out_ptr(out), threads);
      },
      "w_addr"_a, "n"_a, "omega"_a, "binary"_a, "out_addr"_a, "num_threads"_a,
      "BiPer's sin(omega*w) (binary: its sign); returns the sum of sin(omega*w)^2.");
  mod.def(
      "biper_wave_backward",
      [](uintptr_t g, uintptr_t w, int64_t n, float omega, float loss_factor, uintptr_t out, int threads) {
        check(w && out && n >= 0, threads, "biper_wave_backward");
        nb::gil_scoped_release nogil;
        biper_wave_backward(g ? in(g) : nullptr, in(w), n, omega, loss_factor, out_ptr(out), threads);
      },
      "g_addr"_a, "w_addr"_a, "n"_a, "omega"_a, "loss_factor"_a, "out_addr"_a, "num_threads"_a,
      "(g*cos(omega*w))*omega + loss_factor*sin(2*omega*w) (g_addr 0: the second term alone).");
}

void bind_train_activations(nb::module_& mod) {
  mod.def(
      "activation_sign",
      [](uintptr_t x, uintptr_t shift, int64_t outer, int64_t channels, int64_t inner, uintptr_t out, int threads) {
        check(x && out && outer >= 0 && channels >= 0 && inner >= 0, threads, "activation_sign");
        nb::gil_scoped_release nogil;
        activation_sign(in(x), shift ? in(shift) : nullptr, outer, channels, inner, out_ptr(out), threads);
      },
      "x_addr"_a, "shift_addr"_a, "outer"_a, "channels"_a, "inner"_a, "out_addr"_a, "num_threads"_a,
      "onebit's sign of x (+ shift per channel; shift_addr 0: none) over (outer, channels, inner) floats.");
  mod.def(
      "approx_sign_grad",
      [](uintptr_t g, uintptr_t x, uintptr_t shift, int64_t outer, int64_t channels, int64_t inner, uintptr_t out,
         int threads) {
        check(g && x && out && outer >= 0 && channels >= 0 && inner >= 0, threads, "approx_sign_grad");
        nb::gil_scoped_release nogil;
        approx_sign_grad(in(g), in(x), shift ? in(shift) : nullptr, outer, channels, inner, out_ptr(out), threads);
      },
      "g_addr"_a, "x_addr"_a, "shift_addr"_a, "outer"_a, "channels"_a, "inner"_a, "out_addr"_a, "num_threads"_a,
      "ApproxSign's gradient g*max(0, 2 - 2|x + shift|) in torch's order of operations.");
  mod.def(
      "approx_sign_grad_sum",
      [](uintptr_t g, uintptr_t x, uintptr_t shift, int64_t outer, int64_t channels, int64_t inner, uintptr_t out,
         uintptr_t sums, int threads) {
        check(g && x && shift && out && sums && outer >= 0 && channels >= 0 && inner >= 0, threads,
              "approx_sign_grad_sum");
        nb::gil_scoped_release nogil;
        approx_sign_grad_sum(in(g), in(x), in(shift), outer, channels, inner, out_ptr(out), out_ptr(sums), threads);
      },
      "g_addr"_a, "x_addr"_a, "shift_addr"_a, "outer"_a, "channels"_a, "inner"_a, "out_addr"_a, "sums_addr"_a,
      "num_threads"_a, "approx_sign_grad with the per-channel sums of the gradient (the shift's gradient).");
  mod.def(
      "spatial_scale",
      [](uintptr_t y, uintptr_t c, uintptr_t h, uintptr_t w, int64_t n, int64_t channels, int64_t height,
         int64_t width, uintptr_t out, uintptr_t code, int threads) {
        check(y && c && h && out && n >= 0 && channels >= 0 && height >= 0 && width >= 0, threads, "spatial_scale");
        nb::gil_scoped_release nogil;
        spatial_scale(in(y), in(c), in(h), w ? in(w) : nullptr, n, channels, height, width, out_ptr(out),
                      reinterpret_cast<int16_t*>(code), threads);
      },
      "y_addr"_a, "c_addr"_a, "h_addr"_a, "w_addr"_a, "n"_a, "channels"_a, "height"_a, "width"_a, "out_addr"_a,
      "code_addr"_a, "num_threads"_a,
      "XNOR-Net++'s ((y*c)*h)*w over (N, C, H, W) (w_addr 0: conv1d), and y as int16; out_addr may be y_addr.");
  // Tells Python that spatial_scale takes out == y (an engine built before it wrote out first, then read y).
  mod.attr("spatial_scale_in_place") = true;
  mod.def(
      "spatial_scale_backward",
      [](uintptr_t g, uintptr_t y, uintptr_t code, uintptr_t h, uintptr_t w, int64_t n, int64_t channels,
         int64_t height, int64_t width, uintptr_t out, uintptr_t per_sample, int threads) {
        check(g && (y || code) && h && out && per_sample && n >= 0 && channels >= 0 && height >= 0 && width >= 0,
              threads, "spatial_scale_backward");
        nb::gil_scoped_release nogil;
        spatial_scale_backward(in(g), y ? in(y) : nullptr, reinterpret_cast<const int16_t*>(code), in(h),
                               w ? in(w) : nullptr, n, channels, height, width, out_ptr(out), out_ptr(per_sample),
                               threads);
      },
      "g_addr"_a, "y_addr"_a, "code_addr"_a, "h_addr"_a, "w_addr"_a, "n"_a, "channels"_a, "height"_a, "width"_a,
      "out_addr"_a, "per_sample_addr"_a, "num_threads"_a,
      "g*(h (x) w) and the per-sample sum over n of g*y, for XNOR-Net++'s spatial scale.");
  mod.def(
      "standardize_sign_rows",
      [](uintptr_t x, int64_t rows, int64_t n, float dof, float eps, uintptr_t out, uintptr_t mean, uintptr_t std,
         int threads) {
        check(x && out && mean && std && rows >= 0 && n > 0, threads, "standardize_sign_rows");
        nb::gil_scoped_release nogil;
        standardize_sign_rows(in(x), rows, n, dof, eps, out_ptr(out), out_ptr(mean), out_ptr(std), threads);
      },
      "x_addr"_a, "rows"_a, "n"_a, "dof"_a, "eps"_a, "out_addr"_a, "mean_addr"_a, "std_addr"_a, "num_threads"_a,
      "ReCU's per-sample standardisation: mean, std = sqrt(sq/dof + eps) and sign(x/std) per row.");
  mod.def(
      "scaled_sign_rows",
      [](uintptr_t x, uintptr_t std, int64_t rows, int64_t n, uintptr_t out, int threads) {
        check(x && std && out && rows >= 0 && n >= 0, threads, "scaled_sign_rows");
        nb::gil_scoped_release nogil;
        scaled_sign_rows(in(x), in(std), rows, n, out_ptr(out), threads);
      },
      "x_addr"_a, "std_addr"_a, "rows"_a, "n"_a, "out_addr"_a, "num_threads"_a, "sign(x/std) per row.");
  mod.def(
      "standardized_approx_grad_rows",
      [](uintptr_t g, uintptr_t x, uintptr_t mean, uintptr_t std, int64_t rows, int64_t n, float dof, uintptr_t out,
         int threads) {
        check(g && x && mean && std && out && rows >= 0 && n >= 0, threads, "standardized_approx_grad_rows");
        nb::gil_scoped_release nogil;
        standardized_approx_grad_rows(in(g), in(x), in(mean), in(std), rows, n, dof, out_ptr(out), threads);
      },
      "g_addr"_a, "x_addr"_a, "mean_addr"_a, "std_addr"_a, "rows"_a, "n"_a, "dof"_a, "out_addr"_a, "num_threads"_a,
      "The gradient of sign(x/std) with ApproxSign at x/std through the per-row standardisation.");
  mod.def(
      "clip_pack",
      [](uintptr_t x, int64_t n, uintptr_t code, int threads) {
        check(x && code && n >= 0, threads, "clip_pack");
        nb::gil_scoped_release nogil;
        clip_pack(in(x), n, reinterpret_cast<int8_t*>(code), threads);
      },
      "x_addr"_a, "n"_a, "code_addr"_a, "num_threads"_a,
      "BNN's clip-STE int8 code sign(x)*(|x| > 1 ? 2 : 1) of n floats.");
  mod.def(
      "clip_unpack",
      [](uintptr_t code, int64_t n, uintptr_t out, int threads) {
        check(code && out && n >= 0, threads, "clip_unpack");
        nb::gil_scoped_release nogil;
        return clip_unpack(reinterpret_cast<const int8_t*>(code), n, out_ptr(out), threads);
      },
      "code_addr"_a, "n"_a, "out_addr"_a, "num_threads"_a,
      "The +-1 floats of a clip-STE code; returns whether any |code| > 1.");
  bind_fused_weight_quantizers(mod);
}

}  // namespace onebit
