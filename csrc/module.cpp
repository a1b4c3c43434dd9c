// nanobind bindings of the engine: onebit._engine.
// All buffers are passed zero-copy (DLPack); Python (onebit.deploy.kernels) validates user
// input and allocates outputs, and this layer re-checks every shape so that no call can
// read or write out of bounds.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine.h"
#include "ops.h"
#include "thread_pool.h"
#include "train_quantizers.h"
#include "train_activations.h"
#include "train_hbnn.h"
#include "train_pcpp.h"
#include "train_fda.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {


template <typename T>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <typename T>
using Out = nb::ndarray<T, nb::c_contig, nb::device::cpu>;

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

template <typename A>
void expect_size(const A& a, int64_t n, const char* what) {
  if (static_cast<int64_t>(a.size()) != n)
    fail(std::string(what) + ": expected " + std::to_string(n) + " elements, got " +
         std::to_string(a.size()));
}

template <typename A>
void expect_shape(const A& a, std::initializer_list<int64_t> shape, const char* what) {
  if (a.ndim() != shape.size()) fail(std::string(what) + ": wrong number of dimensions");
  size_t i = 0;
  for (int64_t s : shape) {
    if (static_cast<int64_t>(a.shape(i)) != s)
      fail(std::string(what) + ": dimension " + std::to_string(i) + " is " + std::to_string(a.shape(i)) +
           ", expected " + std::to_string(s));
    ++i;
  }
}

// --- packing (raw addresses: the Python layer passes contiguous CPU tensors it has checked) ---

void pack_nchw(uintptr_t x, int64_t N, int64_t C, int64_t HW, uintptr_t thr, uintptr_t out, int num_threads) {
  if (!x || !out || N < 0 || C < 1 || HW < 0) fail("pack_nchw: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::pack_nchw(reinterpret_cast<const float*>(x), N, C, HW, reinterpret_cast<const float*>(thr),
                    reinterpret_cast<uint64_t*>(out), num_threads);
}

void pack_rows(uintptr_t x, int64_t P, int64_t C, uintptr_t thr, uintptr_t out, int isa, int num_threads) {
  if (!x || !out || P < 0 || C < 1) fail("pack_rows: bad arguments");
  onebit::get_isa(isa);  // validates the kernel choice before releasing the GIL
  nb::gil_scoped_release nogil;
  onebit::pack_rows(reinterpret_cast<const float*>(x), P, C, reinterpret_cast<const float*>(thr),
                    reinterpret_cast<uint64_t*>(out), isa, num_threads);
}

// --- training-time weight quantizers (onebit.methods.functional: contiguous float32 CPU tensors) ---

void standardize_rows(int kind, uintptr_t w, int64_t rows, int64_t n, float k, float t, float eps, uintptr_t z,
                      uintptr_t out, uintptr_t z_mean, uintptr_t factor, uintptr_t through, uintptr_t abs_sum,
                      int num_threads) {
  if ((kind != onebit::kLibra && kind != onebit::kRecu) || !w || !z || !out || !z_mean || !factor || !through ||
      rows < 0 || n < 1 || num_threads < 1)
    fail("standardize_rows: bad arguments");
  nb::gil_scoped_release nogil;
  auto f = [](uintptr_t a) { return reinterpret_cast<float*>(a); };
  onebit::standardize_rows(kind, reinterpret_cast<const float*>(w), rows, n, k, t, eps, f(z), f(out), f(z_mean),
                           f(factor), f(through), f(abs_sum), num_threads);
}

// HBNN's weight quantizer (train_hbnn.h): raw addresses of contiguous CPU tensors checked by
// onebit.methods.hbnn; returns the top bit level, 0 for the torch path.
int hbnn_binarize(int mode, uintptr_t x, int64_t rows, int64_t n, const std::vector<int64_t>& counts, uintptr_t bitmap,
                  uintptr_t approx, uintptr_t scales, int num_threads, uintptr_t max_abs) {
  if (mode < onebit::kHbnnPaper || mode > onebit::kHbnnGivenMap || !x || !bitmap || !approx || !scales || rows < 0 ||
      n < 1 || n > INT32_MAX || num_threads < 1)
    fail("hbnn_binarize: bad arguments");
  int64_t total = 0;
  for (int64_t c : counts) total += c < 0 ? n + 1 : c;
  if (mode != onebit::kHbnnGivenMap &&
      (counts.empty() || counts.size() > static_cast<size_t>(onebit::kHbnnMaxLevels) || total != n))
    fail("hbnn_binarize: the stop counts must be 1 to 8 non-negative numbers summing to n");
  nb::gil_scoped_release nogil;
  return onebit::hbnn_binarize(mode, reinterpret_cast<const float*>(x), rows, n, counts.data(),
                               static_cast<int>(counts.size()), reinterpret_cast<int8_t*>(bitmap),
                               reinterpret_cast<float*>(approx), reinterpret_cast<float*>(scales),
                               reinterpret_cast<float*>(max_abs), num_threads);
}

void standardize_backward_rows(int kind, uintptr_t g, uintptr_t z, uintptr_t z_mean, uintptr_t factor,
                               uintptr_t through, float param, double dof, int64_t rows, int64_t n, uintptr_t out,
                               int num_threads) {
  if ((kind != onebit::kEdeGrad && kind != onebit::kWindowGrad) || !g || !z || !z_mean || !factor || !through ||
      !out || rows < 0 || n < 1 || !(dof > 0) || num_threads < 1)
    fail("standardize_backward_rows: bad arguments");
  nb::gil_scoped_release nogil;
  auto c = [](uintptr_t a) { return reinterpret_cast<const float*>(a); };
  onebit::standardize_backward_rows(kind, c(g), c(z), c(z_mean), c(factor), c(through), param, dof, rows, n,
                                    reinterpret_cast<float*>(out), num_threads);
}

void surrogate_grad(int kind, uintptr_t g, uintptr_t x, int64_t n, float p0, float p1, float p2, uintptr_t out,
                    int num_threads) {
  if (kind < onebit::kSineGrad || kind > onebit::kFourierGrad || !g || !x ||
      !out || n < 0 || num_threads < 1)
    fail("surrogate_grad: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::surrogate_grad(kind, reinterpret_cast<const float*>(g), reinterpret_cast<const float*>(x), n, p0, p1, p2,
                         reinterpret_cast<float*>(out), num_threads);
}

void swish_weight(int kind, uintptr_t w, int64_t rows, int64_t n, uintptr_t alpha, float beta, uintptr_t out,
                  int num_threads) {
  if (kind < onebit::kSwishValue || kind > onebit::kSwishSign || !w || !out || rows < 0 || n < 1 || num_threads < 1)
    fail("swish_weight: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::swish_weight(kind, reinterpret_cast<const float*>(w), rows, n, reinterpret_cast<const float*>(alpha), beta,
                       reinterpret_cast<float*>(out), num_threads);
}

void swish_weight_backward(uintptr_t g, uintptr_t w, int64_t rows, int64_t n, uintptr_t alpha, float beta,
                           uintptr_t out, int num_threads) {
  if (!g || !w || !out || rows < 0 || n < 1 || num_threads < 1) fail("swish_weight_backward: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::swish_weight_backward(reinterpret_cast<const float*>(g), reinterpret_cast<const float*>(w), rows, n,
                                reinterpret_cast<const float*>(alpha), beta, reinterpret_cast<float*>(out),
                                num_threads);
}

// PC++'s weight quantizer (train_pcpp.h): raw addresses of contiguous CPU tensors checked by
// onebit.methods.proxconnect (alpha 0: no scale; out 0: the scales only).
void pcpp_weight(int kind, uintptr_t w, int64_t rows, int64_t n, uintptr_t alpha, bool alpha_given, float mu,
                 uintptr_t out, int num_threads) {
  if (kind < onebit::kPcppSign || kind > onebit::kPcppProx || !w || (!out && !alpha) || (alpha_given && !alpha) ||
      rows < 0 || n < 1 || num_threads < 1)
    fail("pcpp_weight: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::pcpp_weight(kind, reinterpret_cast<const float*>(w), rows, n, reinterpret_cast<float*>(alpha), alpha_given,
                      mu, reinterpret_cast<float*>(out), num_threads);
}

void pcpp_weight_backward(int kind, uintptr_t g, uintptr_t w, int64_t rows, int64_t n, uintptr_t alpha, uintptr_t out,
                          int num_threads) {
  if (kind < onebit::kPcppIdentityGrad || kind > onebit::kPcppClipGrad || !g || !w || !out || rows < 0 || n < 1 ||
      num_threads < 1)
    fail("pcpp_weight_backward: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::pcpp_weight_backward(kind, reinterpret_cast<const float*>(g), reinterpret_cast<const float*>(w), rows, n,
                               reinterpret_cast<const float*>(alpha), reinterpret_cast<float*>(out), num_threads);
}

void math_rows(int kind, uintptr_t x, int64_t n, uintptr_t out, int num_threads) {
  if (kind < 0 || kind > 2 || !x || !out || n < 0 || num_threads < 1) fail("math_rows: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::math_rows(kind, reinterpret_cast<const float*>(x), n, reinterpret_cast<float*>(out), num_threads);
}

void tanh_rows(uintptr_t x, int64_t n, uintptr_t out, int num_threads) {
  if (!x || !out || n < 0 || num_threads < 1) fail("tanh_rows: bad arguments");
  nb::gil_scoped_release nogil;
  onebit::tanh_rows(reinterpret_cast<const float*>(x), n, reinterpret_cast<float*>(out), num_threads);
}

// --- per-layer constants, copied into engine-owned buffers once ---

onebit::Weights* make_weights(In<int64_t> w, std::optional<In<int64_t>> m, In<int32_t> base, In<int32_t> wsum,
                              In<float> mu, int64_t cin, int64_t cout) {
  if (w.ndim() != 6) fail("Weights: bits must be (planes, blocks, kh, kw, words, 32)");
  auto* r = new onebit::Weights();
  std::unique_ptr<onebit::Weights> guard(r);
  r->J = w.shape(0);
  r->cin = cin;
  r->cout = cout;
  r->kh = w.shape(2);
  r->kw = w.shape(3);
  r->KW = (cin + 63) / 64;
  r->ncb = (cout + onebit::kBlock - 1) / onebit::kBlock;
  r->cpad = r->ncb * onebit::kBlock;
  if (r->J < 1 || cin < 1 || cout < 1 || r->kh < 1 || r->kw < 1) fail("Weights: empty dimension");
  expect_shape(w, {r->J, r->ncb, r->kh, r->kw, r->KW, onebit::kBlock}, "Weights: bits");
  if (m) expect_shape(*m, {r->J, r->ncb, r->kh, r->kw, r->KW, onebit::kBlock}, "Weights: masks");
  const int64_t taps = r->kh * r->kw;
  expect_shape(base, {r->J, cout}, "Weights: base");
  expect_shape(wsum, {r->J, cout, taps}, "Weights: wsum");
  expect_shape(mu, {r->J, cout}, "Weights: scales");
  const auto* wp = reinterpret_cast<const uint64_t*>(w.data());
  r->w.assign(wp, wp + w.size());
  if (m) {
    const auto* mp = reinterpret_cast<const uint64_t*>(m->data());
    r->m.assign(mp, mp + m->size());
  }
  r->base.assign(static_cast<size_t>(r->J * r->cpad), 0);
  r->mu.assign(static_cast<size_t>(r->J * r->cpad), 0.0f);
  for (int64_t j = 0; j < r->J; ++j)
    for (int64_t o = 0; o < cout; ++o) {
      r->base[j * r->cpad + o] = base.data()[j * cout + o];
      r->mu[j * r->cpad + o] = mu.data()[j * cout + o];
    }
  onebit::set_tap_sign_sums(*r, wsum.data());
  return guard.release();
}

std::vector<float> padded_vec(const In<float>& v, int64_t cout, int64_t cpad, const char* what) {
  expect_size(v, cout, what);
  std::vector<float> r(static_cast<size_t>(cpad), 0.0f);
  for (int64_t i = 0; i < cout; ++i) r[i] = v.data()[i];
  return r;
}

onebit::Transform* make_transform(int64_t cout, In<float> scale, In<float> bias, std::optional<In<float>> prelu,
                                  float cmin, float cmax, bool bits, std::optional<In<float>> thr) {
  if (cout < 1) fail("Transform: cout must be >= 1");
  if (std::isnan(cmin) || std::isnan(cmax)) fail("Transform: clamp bounds must not be NaN");
  if (thr && !bits) fail("Transform: a threshold needs bits output");
  auto* t = new onebit::Transform();
  std::unique_ptr<onebit::Transform> guard(t);
  t->cout = cout;
  t->cpad = (cout + onebit::kBlock - 1) / onebit::kBlock * onebit::kBlock;
  t->scale = padded_vec(scale, cout, t->cpad, "Transform: scale");
  t->bias = padded_vec(bias, cout, t->cpad, "Transform: bias");
  if (prelu) t->prelu = padded_vec(*prelu, cout, t->cpad, "Transform: prelu");
  if (thr) t->thr = padded_vec(*thr, cout, t->cpad, "Transform: threshold");
  t->cmin = cmin;
  t->cmax = cmax;
  t->bits = bits;
  return guard.release();
}

// Depthwise weights: bits/masks int64 (J, kh*kw, ceil(C/64)) with zero tail bits, scales (J, C).
onebit::DepthwiseWeights* make_depthwise_weights(In<int64_t> w, std::optional<In<int64_t>> m, In<float> mu,
                                                 int64_t channels, int64_t kh, int64_t kw) {
  if (channels < 1 || kh < 1 || kw < 1) fail("DepthwiseWeights: empty dimension");
  if (kh > 4096 || kw > 4096) fail("DepthwiseWeights: kernel too large");
  if (w.ndim() != 3) fail("DepthwiseWeights: bits must be (planes, kh*kw, words)");
  auto* r = new onebit::DepthwiseWeights();
  std::unique_ptr<onebit::DepthwiseWeights> guard(r);
  r->J = w.shape(0);
  r->C = channels;
  r->kh = kh;
  r->kw = kw;
  r->KW = (channels + 63) / 64;
  if (r->J < 1) fail("DepthwiseWeights: empty dimension");
  expect_shape(w, {r->J, kh * kw, r->KW}, "DepthwiseWeights: bits");
  if (m) expect_shape(*m, {r->J, kh * kw, r->KW}, "DepthwiseWeights: masks");
  expect_shape(mu, {r->J, channels}, "DepthwiseWeights: scales");
  const uint64_t tail = channels % 64 ? (1ull << (channels % 64)) - 1 : ~0ull;
  auto copy_words = [&](const In<int64_t>& a, std::vector<uint64_t>& dst) {
    const auto* p = reinterpret_cast<const uint64_t*>(a.data());
    dst.assign(p, p + a.size());
    for (size_t i = static_cast<size_t>(r->KW - 1); i < dst.size(); i += static_cast<size_t>(r->KW)) dst[i] &= tail;
  };
  copy_words(w, r->w);
  if (m) copy_words(*m, r->m);
  r->mu.assign(mu.data(), mu.data() + mu.size());
  return guard.release();
}

// One prepared binary layer, bound once: its engine weights (regular or depthwise) and
// transform, its stride, padding and pad value, and the threshold of a second (bits) output,
// checked here at construction.  A call passes only what changes per call: the input and output
// buffers, their sizes, the kernel path and the thread count (raw addresses: internal API, the
// caller, onebit.deploy.kernels, guarantees the buffers; the sizes are re-checked here).
class BoundLayer {
 public:
  BoundLayer(nb::object weights, nb::object transform, int sh, int sw, int ph, int pw, int pad_value,
             std::optional<In<float>> bits_threshold)
      : weights_(std::move(weights)), transform_(std::move(transform)), sh_(sh), sw_(sw), ph_(ph), pw_(pw),
        pad_value_(pad_value) {
    t_ = &nb::cast<const onebit::Transform&>(transform_);
    int64_t channels = 0;
    if (nb::isinstance<onebit::DepthwiseWeights>(weights_)) {
      dw_ = &nb::cast<const onebit::DepthwiseWeights&>(weights_);
      op_ = "depthwise_conv2d", kh_ = dw_->kh, kw_ = dw_->kw, channels = dw_->C;
    } else {
      w_ = &nb::cast<const onebit::Weights&>(weights_);
      op_ = "conv2d", kh_ = w_->kh, kw_ = w_->kw, channels = w_->cout;
    }
    if (t_->cout != channels)
      fail(op_ + ": the transform is for " + std::to_string(t_->cout) + " channels, weights have " +
           std::to_string(channels));
    if (sh < 1 || sw < 1) fail(op_ + ": stride must be >= 1");
    if (ph < 0 || pw < 0) fail(op_ + ": padding must be >= 0");
    if (pad_value < -1 || pad_value > 1) fail(op_ + ": pad_value must be -1, 0 or +1");
    if (bits_threshold) {
      if (dw_ || t_->bits) fail(op_ + ": a threshold of a second (bits) output needs conv2d with float output");
      threshold_ = padded_vec(*bits_threshold, t_->cout, t_->cpad, "bits_threshold");
    }
  }

  // x: contiguous int64 (N, H, W, ceil(cin/64)); out: contiguous float32 (N, OH, OW, cout) or int64
  // (N, OH, OW, ceil(cout/64)) as the transform says; residual (float output, conv2d): float32 of
  // the output's shape, or 0; out_bits (float output, conv2d): int64 (N, OH, OW, ceil(cout/64)), or 0.
  void run(uintptr_t x, int64_t N, int64_t H, int64_t W, uintptr_t out, int isa, int num_threads, uintptr_t residual,
           uintptr_t out_bits) const {
    if (!x || !out) fail(op_ + ": null buffer");
    if (N < 1 || H < 1 || W < 1) fail(op_ + ": empty input");
    if (onebit::conv_out_size(H, static_cast<int>(kh_), sh_, ph_) < 1 ||
        onebit::conv_out_size(W, static_cast<int>(kw_), sw_, pw_) < 1)
      fail(op_ + ": the kernel does not fit the (padded) input");
    if ((residual || out_bits) && (t_->bits || dw_))
      fail(op_ + ": a residual or a second (bits) output needs conv2d with float output");
    onebit::get_isa(isa);  // validates the kernel choice (the CPU has it) before releasing the GIL
    onebit::ConvCall call;
    call.x = reinterpret_cast<const uint64_t*>(x);
    call.N = N, call.H = H, call.W = W;
    call.sh = sh_, call.sw = sw_, call.ph = ph_, call.pw = pw_, call.pad_value = pad_value_;
    call.out = reinterpret_cast<void*>(out);
    call.residual = reinterpret_cast<const float*>(residual);
    call.out_bits = reinterpret_cast<uint64_t*>(out_bits);
    call.bits_threshold = out_bits && !threshold_.empty() ? threshold_.data() : nullptr;
    call.isa = isa;
    call.num_threads = num_threads;
    nb::gil_scoped_release nogil;
    if (dw_) onebit::depthwise_conv2d(*dw_, *t_, call);
    else onebit::conv2d(*w_, *t_, call);
  }

 private:
  nb::object weights_, transform_;  // (keep the engine objects alive)
  const onebit::Weights* w_ = nullptr;
  const onebit::DepthwiseWeights* dw_ = nullptr;
  const onebit::Transform* t_ = nullptr;
  std::string op_;
  int64_t kh_ = 1, kw_ = 1;
  int sh_, sw_, ph_, pw_, pad_value_;
  std::vector<float> threshold_;  // padded to the transform's cpad channels, or empty
};

double popcount_peak(int isa, int64_t iterations, int num_threads) {
  if (iterations < 1) fail("popcount_peak: iterations must be >= 1");
  if (num_threads < 1) fail("popcount_peak: num_threads must be >= 1");
  const onebit::Isa& k = onebit::get_isa(isa);
  nb::gil_scoped_release nogil;
  if (num_threads == 1) return k.peak(iterations);
  // The same loop on every thread of the engine's team at once: the aggregate rate the hardware
  // gives that many threads (the ceiling of the kernels' multi-thread scaling).
  using clock = std::chrono::steady_clock;
  std::vector<double> ops(static_cast<size_t>(num_threads), 0.0);
  const auto t0 = clock::now();
  onebit::parallel_for(num_threads, num_threads, [&](int64_t i) {
    const auto s = clock::now();
    const double rate = k.peak(iterations);
    ops[static_cast<size_t>(i)] = rate * std::chrono::duration<double>(clock::now() - s).count();
  });
  const double wall = std::chrono::duration<double>(clock::now() - t0).count();
  double total = 0;
  for (double o : ops) total += o;
  return total / wall;
}

}  // namespace

NB_MODULE(_engine, mod) {
  mod.doc() = "onebit packed 1-bit inference engine (C++). Use onebit.deploy.kernels instead.";
  // The production kernel paths, slowest first, in the engine's numbering; the reference path after them.
  nb::list names;
  for (int i = 0; i < onebit::kReference; ++i) names.append(onebit::kKernelNames[i]);
  mod.attr("KERNEL_NAMES") = nb::tuple(names);
  mod.attr("REFERENCE_KERNEL") = onebit::kKernelNames[onebit::kReference];
  mod.attr("REFERENCE_KERNEL_ID") = static_cast<int>(onebit::kReference);
  mod.attr("BLOCK") = onebit::kBlock;
  mod.def("cpu_supports", &onebit::cpu_supports, "kernel_id"_a,
          "True if the CPU can run kernel `kernel_id` (an index of KERNEL_NAMES, or REFERENCE_KERNEL's).");
  mod.def("hardware_threads", &onebit::hardware_threads);
  mod.def("thread_backend", &onebit::thread_backend);
  mod.def(
      "set_thread_backend",
      [](const std::string& name) {
        const std::string err = onebit::set_thread_backend(name);
        if (!err.empty()) fail("set_thread_backend: " + err);
      },
      "name"_a);
  mod.def("standardize_rows", &standardize_rows, "kind"_a, "w_addr"_a, "rows"_a, "n"_a, "k"_a, "t"_a, "eps"_a,
          "z_addr"_a, "out_addr"_a, "z_mean_addr"_a, "factor_addr"_a, "through_addr"_a, "abs_sum_addr"_a,
          "num_threads"_a);
  mod.def("standardize_backward_rows", &standardize_backward_rows, "kind"_a, "g_addr"_a, "z_addr"_a,
          "z_mean_addr"_a, "factor_addr"_a, "through_addr"_a, "param"_a, "dof"_a, "rows"_a, "n"_a, "out_addr"_a,
          "num_threads"_a);
  mod.def("hbnn_binarize", &hbnn_binarize, "mode"_a, "x_addr"_a, "rows"_a, "n"_a, "counts"_a, "bitmap_addr"_a,
          "approx_addr"_a, "scales_addr"_a, "num_threads"_a, "max_abs_addr"_a = 0);
  mod.def("hbnn_scalar_only", &onebit::hbnn_scalar_only, "on"_a);
  mod.def("hbnn_vector_isa", &onebit::hbnn_vector_isa, "widest"_a);
  mod.def("tanh_rows", &tanh_rows, "x_addr"_a, "n"_a, "out_addr"_a, "num_threads"_a);
  mod.def("surrogate_grad", &surrogate_grad, "kind"_a, "g_addr"_a, "x_addr"_a, "n"_a, "p0"_a, "p1"_a, "p2"_a,
          "out_addr"_a, "num_threads"_a);
  mod.def("math_rows", &math_rows, "kind"_a, "x_addr"_a, "n"_a, "out_addr"_a, "num_threads"_a);
  mod.def("swish_weight", &swish_weight, "kind"_a, "w_addr"_a, "rows"_a, "n"_a, "alpha_addr"_a, "beta"_a,
          "out_addr"_a, "num_threads"_a);
  mod.def("swish_weight_backward", &swish_weight_backward, "g_addr"_a, "w_addr"_a, "rows"_a, "n"_a, "alpha_addr"_a,
          "beta"_a, "out_addr"_a, "num_threads"_a);
  mod.def("pcpp_weight", &pcpp_weight, "kind"_a, "w_addr"_a, "rows"_a, "n"_a, "alpha_addr"_a, "alpha_given"_a, "mu"_a,
          "out_addr"_a, "num_threads"_a);
  mod.def("pcpp_weight_backward", &pcpp_weight_backward, "kind"_a, "g_addr"_a, "w_addr"_a, "rows"_a, "n"_a,
          "alpha_addr"_a, "out_addr"_a, "num_threads"_a);
  onebit::bind_train_activations(mod);
  onebit::bind_train_fda(mod);
  mod.def("pack_nchw", &pack_nchw, "x_addr"_a, "N"_a, "C"_a, "HW"_a, "threshold_addr"_a, "out_addr"_a,
          "num_threads"_a);
  mod.def("pack_rows", &pack_rows, "x_addr"_a, "P"_a, "C"_a, "threshold_addr"_a, "out_addr"_a, "kernel_id"_a,
          "num_threads"_a);
  nb::class_<onebit::Weights>(mod, "Weights")
      .def(nb::new_(&make_weights), "bits"_a, "masks"_a.none(), "base"_a, "wsum"_a, "scales"_a, "in_channels"_a,
           "out_channels"_a)
      .def_ro("in_channels", &onebit::Weights::cin)
      .def_ro("out_channels", &onebit::Weights::cout)
      .def_ro("planes", &onebit::Weights::J)
      .def_ro("kh", &onebit::Weights::kh)
      .def_ro("kw", &onebit::Weights::kw);
  nb::class_<onebit::Transform>(mod, "Transform")
      .def(nb::new_(&make_transform), "out_channels"_a, "scale"_a, "bias"_a, "prelu"_a.none(), "clamp_min"_a,
           "clamp_max"_a, "bits"_a, "threshold"_a.none())
      .def_ro("out_channels", &onebit::Transform::cout)
      .def_ro("bits", &onebit::Transform::bits);
  nb::class_<onebit::DepthwiseWeights>(mod, "DepthwiseWeights")
      .def(nb::new_(&make_depthwise_weights), "bits"_a, "masks"_a.none(), "scales"_a, "channels"_a, "kh"_a, "kw"_a)
      .def_ro("channels", &onebit::DepthwiseWeights::C)
      .def_ro("planes", &onebit::DepthwiseWeights::J)
      .def_ro("kh", &onebit::DepthwiseWeights::kh)
      .def_ro("kw", &onebit::DepthwiseWeights::kw);
  nb::class_<BoundLayer>(mod, "BoundLayer")
      .def(nb::init<nb::object, nb::object, int, int, int, int, int, std::optional<In<float>>>(), "weights"_a,
           "transform"_a, "sh"_a, "sw"_a, "ph"_a, "pw"_a, "pad_value"_a, "bits_threshold"_a.none() = nb::none())
      .def("run", &BoundLayer::run, "x_addr"_a, "N"_a, "H"_a, "W"_a, "out_addr"_a, "kernel_id"_a, "num_threads"_a,
           "residual_addr"_a = 0, "out_bits_addr"_a = 0);
  mod.def("set_region_profiling", &onebit::set_region_profiling, "on"_a,
          "Record the time of each parallel region of the kernels (diagnostics; off by default).");
  mod.def(
      "last_region_profile",
      [] {
        const onebit::RegionProfile p = onebit::last_region_profile();
        return nb::make_tuple(p.wall, p.busy, p.start, p.end);
      },
      "(wall, [busy], [start], [end]) of the last parallel region recorded while profiling was on, "
      "in seconds: the region's wall time, each thread's time inside work items, and when each "
      "thread started and finished its share (from the region's start).");
  mod.def("popcount_peak", &popcount_peak, "kernel_id"_a, "iterations"_a, "num_threads"_a = 1,
          "Register-only xor+popcount+accumulate loop of one kernel path, on the calling thread or "
          "concurrently on num_threads threads of the engine's team; returns binary ops (bits) per "
          "second, all threads together.");
}
