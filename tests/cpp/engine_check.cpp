// Standalone check of the engine without Python or torch: binary conv2d and depthwise_conv2d on
// every kernel path this CPU runs, against the reference path (ONEBIT_KERNEL=reference,
// csrc/isa_reference.cpp), which is itself checked against the naive computation here.  Random
// shapes (odd channel counts, strides 1-2, padding values -1/0/+1, 1x1 to 5x5 kernels), one plane
// or masked planes (heterogeneous bitwidth), float output with every epilogue feature (scale,
// bias, PReLU, clamp, a residual, also in place, the extra bits output) and bits output, on 1-3
// threads.  Float outputs must be identical (the naive computation applies epilogue.h, the
// engine's float32 operations in their order, to the exact integer dot products), bits too.
//
// It builds with any C++17 compiler for any architecture (tests/cpp/check.sh): test_engine_cpp.py
// runs it natively in the test suite, and tests/cpp/check.sh --target aarch64 cross-compiles it and
// runs it under qemu, which is how the NEON-lowered portable path is checked on this x86 project's CI host.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "engine.h"
#include "epilogue.h"
#include "ops.h"

using namespace onebit;

namespace {

std::mt19937_64 rng(12345);

int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
float normal(float scale = 1.0f) { return std::normal_distribution<float>(0.0f, scale)(rng); }
int random_sign() { return (rng() & 1) ? -1 : 1; }

struct Case {
  int N, H, W, cin, cout, kh, kw, sh, sw, ph, pw, pad_value;
  int planes;   // 1, or 2 masked bit planes (heterogeneous bitwidth)
  bool bits_out, prelu, clamp, residual, in_place, also_bits;
  float mu_scale;
  // Worst case for the popcount accumulators: one sign pattern per input channel at every pixel,
  // output channel 0's weights its negation and channel 1's the pattern itself (all active), so
  // their counters take the largest value at every step (random signs never get near it).
  bool worst = false;
};

std::string describe(const Case& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "N=%d H=%d W=%d cin=%d cout=%d k=%dx%d s=%dx%d p=%dx%d pad_value=%d planes=%d bits=%d prelu=%d "
                "clamp=%d residual=%d in_place=%d also_bits=%d",
                c.N, c.H, c.W, c.cin, c.cout, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.pad_value, c.planes, c.bits_out,
                c.prelu, c.clamp, c.residual, c.in_place, c.also_bits);
  return buf;
}

// Packs signs (bit 1 = -1) of channels [0, C) of each of P rows into ceil(C/64) words.
std::vector<uint64_t> pack_signs(const std::vector<int>& s, int64_t P, int64_t C) {
  const int64_t KW = (C + 63) / 64;
  std::vector<uint64_t> out(static_cast<size_t>(P * KW), 0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t c = 0; c < C; ++c)
      if (s[p * C + c] < 0) out[p * KW + c / 64] |= 1ull << (c % 64);
  return out;
}

// Channel o's epilogue (epilogue.h) of its accumulated planes a, with the transform's optional parts.
float epilogue_value(float a, const Transform& t, int64_t o, const float* residual) {
  const float r = residual ? *residual : 0.0f, s = t.prelu.empty() ? 0.0f : t.prelu[o];
  if (residual && !t.prelu.empty()) return epilogue::output<true, true>(a, t.scale[o], t.bias[o], r, s, t.cmin, t.cmax);
  if (residual) return epilogue::output<true, false>(a, t.scale[o], t.bias[o], r, s, t.cmin, t.cmax);
  if (!t.prelu.empty()) return epilogue::output<false, true>(a, t.scale[o], t.bias[o], r, s, t.cmin, t.cmax);
  return epilogue::output<false, false>(a, t.scale[o], t.bias[o], r, s, t.cmin, t.cmax);
}

// Counts the values of got that differ from want (bit patterns for floats), reporting the first 3.
template <class T>
int mismatches(const std::vector<T>& got, const std::vector<T>& want, const char* what, const std::string& where) {
  int errors = 0;
  for (size_t e = 0; e < got.size(); ++e)
    if (std::memcmp(&got[e], &want[e], sizeof(T)) != 0) {
      if (errors < 3) {
        if constexpr (std::is_same_v<T, float>)
          std::fprintf(stderr, "%s mismatch at %zu: %.9g vs %.9g (%s)\n", what, e, got[e], want[e], where.c_str());
        else
          std::fprintf(stderr, "%s mismatch at %zu: %016llx vs %016llx (%s)\n", what, e,
                       static_cast<unsigned long long>(got[e]), static_cast<unsigned long long>(want[e]), where.c_str());
      }
      ++errors;
    }
  return errors;
}

// Index of weight (plane j, output o, input ci, tap (i, jj)) in the checker's (J, cout, cin, kh, kw) signs.
size_t weight_index(const Case& c, int j, int o, int ci, int i, int jj) {
  const size_t wn = static_cast<size_t>(c.cout) * c.cin * c.kh * c.kw;
  return j * wn + ((static_cast<size_t>(o) * c.cin + ci) * c.kh + i) * c.kw + jj;
}

// The engine's packed weights (kernel layout, Weights in ops.h) of weight signs ws and masks ms.
Weights make_weights(const Case& c, const std::vector<int>& ws, const std::vector<int>& ms) {
  const int J = c.planes;
  auto widx = [&](int j, int o, int ci, int i, int jj) { return weight_index(c, j, o, ci, i, jj); };
  Weights w;
  w.J = J, w.cin = c.cin, w.cout = c.cout, w.kh = c.kh, w.kw = c.kw, w.KW = (c.cin + 63) / 64;
  w.ncb = (c.cout + kBlock - 1) / kBlock, w.cpad = w.ncb * kBlock;
  const int64_t plane_words = w.ncb * c.kh * c.kw * w.KW * kBlock;
  w.w.assign(static_cast<size_t>(J * plane_words), 0);
  if (J > 1) w.m.assign(static_cast<size_t>(J * plane_words), 0);
  w.base.assign(static_cast<size_t>(J * w.cpad), 0);
  w.mu.assign(static_cast<size_t>(J * w.cpad), 0.0f);
  // per plane, output channel and tap, the sum of the active weight signs (what the Python
  // packer hands the engine, which builds its prefix table from it)
  std::vector<int32_t> wsum(static_cast<size_t>(J) * c.cout * c.kh * c.kw, 0);
  for (int j = 0; j < J; ++j) {
    for (int o = 0; o < c.cout; ++o)
      for (int ci = 0; ci < c.cin; ++ci)
        for (int i = 0; i < c.kh; ++i)
          for (int jj = 0; jj < c.kw; ++jj) {
            const int64_t cb = o / kBlock, q = o % kBlock;
            const int64_t word = j * plane_words + (((cb * c.kh + i) * c.kw + jj) * w.KW + ci / 64) * kBlock + q;
            const size_t e = widx(j, o, ci, i, jj);
            if (ws[e] < 0) w.w[word] |= 1ull << (ci % 64);
            if (J > 1 && ms[e]) w.m[word] |= 1ull << (ci % 64);
            w.base[j * w.cpad + o] += ms[e];
            wsum[(static_cast<size_t>(j) * c.cout + o) * c.kh * c.kw + i * c.kw + jj] += ws[e] * ms[e];
          }
    for (int o = 0; o < c.cout; ++o)
      w.mu[j * w.cpad + o] = c.mu_scale * (0.5f + static_cast<float>(uniform(0, 100)) / 100.0f);
  }
  set_tap_sign_sums(w, wsum.data());
  return w;
}

int run_case(const Case& c, int threads) {
  const int64_t OH = conv_out_size(c.H, c.kh, c.sh, c.ph), OW = conv_out_size(c.W, c.kw, c.sw, c.pw);
  if (OH < 1 || OW < 1) return 0;
  // input signs (N, H, W, cin); per plane j, weight signs and masks (cout, cin, kh, kw)
  const int J = c.planes;
  const size_t wn = static_cast<size_t>(c.cout) * c.cin * c.kh * c.kw;
  std::vector<int> xs(static_cast<size_t>(c.N) * c.H * c.W * c.cin), ws(J * wn), ms(J * wn, 1);
  for (auto& v : xs) v = random_sign();
  for (auto& v : ws) v = random_sign();
  if (J > 1)
    for (auto& v : ms) v = uniform(0, 3) != 0;  // masked planes: ~3/4 of the weights active
  if (c.worst) {
    std::vector<int> pattern(static_cast<size_t>(c.cin));
    for (auto& v : pattern) v = random_sign();
    for (size_t e = 0; e < xs.size(); ++e) xs[e] = pattern[e % c.cin];
    const size_t taps = static_cast<size_t>(c.kh) * c.kw;
    for (int j = 0; j < J; ++j)
      for (int o = 0; o < 2 && o < c.cout; ++o)
        for (size_t e = 0; e < static_cast<size_t>(c.cin) * taps; ++e) {
          const size_t at = j * wn + static_cast<size_t>(o) * c.cin * taps + e;
          ws[at] = (o == 0 ? -1 : 1) * pattern[e / taps];
          ms[at] = 1;
        }
  }
  const std::vector<uint64_t> x = pack_signs(xs, static_cast<int64_t>(c.N) * c.H * c.W, c.cin);
  auto widx = [&](int j, int o, int ci, int i, int jj) { return weight_index(c, j, o, ci, i, jj); };

  const Weights w = make_weights(c, ws, ms);

  Transform t;
  t.cout = c.cout, t.cpad = w.cpad, t.bits = c.bits_out;
  t.scale.assign(static_cast<size_t>(t.cpad), 0.0f);
  t.bias.assign(static_cast<size_t>(t.cpad), 0.0f);
  for (int o = 0; o < c.cout; ++o) t.scale[o] = normal(), t.bias[o] = normal(4.0f);
  if (c.prelu) {
    t.prelu.assign(static_cast<size_t>(t.cpad), 0.0f);
    for (int o = 0; o < c.cout; ++o) t.prelu[o] = static_cast<float>(uniform(0, 100)) / 100.0f;
  }
  std::vector<float> thr(static_cast<size_t>(t.cpad), 0.0f);
  for (int o = 0; o < c.cout; ++o) thr[o] = normal();
  if (c.bits_out) t.thr = thr;
  t.cmin = c.clamp ? -3.0f : -INFINITY;
  t.cmax = c.clamp ? 5.0f : INFINITY;

  // reference: per plane the exact integer dot product over the active weights, then the engine's
  // float32 operations in the engine's order
  const int64_t pixels = static_cast<int64_t>(c.N) * OH * OW;
  std::vector<float> residual(static_cast<size_t>(pixels * c.cout));
  for (auto& v : residual) v = normal(3.0f);
  std::vector<float> ref_y(static_cast<size_t>(pixels * c.cout));
  for (int n = 0; n < c.N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int o = 0; o < c.cout; ++o) {
          float a = 0.0f;
          for (int j = 0; j < J; ++j) {
            int64_t D = 0;
            for (int i = 0; i < c.kh; ++i)
              for (int jj = 0; jj < c.kw; ++jj) {
                const int64_t ih = oh * c.sh - c.ph + i, iw = ow * c.sw - c.pw + jj;
                const bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
                for (int ci = 0; ci < c.cin; ++ci) {
                  const int xv = inside ? xs[((static_cast<size_t>(n) * c.H + ih) * c.W + iw) * c.cin + ci] : c.pad_value;
                  D += xv * ws[widx(j, o, ci, i, jj)] * ms[widx(j, o, ci, i, jj)];
                }
              }
            a = epilogue::plane_term(a, w.mu[j * w.cpad + o], static_cast<float>(D));
          }
          const int64_t pix = (static_cast<int64_t>(n) * OH + oh) * OW + ow;
          ref_y[pix * c.cout + o] = epilogue_value(a, t, o, c.residual ? &residual[pix * c.cout + o] : nullptr);
        }
  const int64_t KWo = (c.cout + 63) / 64;
  std::vector<uint64_t> ref_bits(static_cast<size_t>(pixels * KWo), 0);
  for (int64_t pix = 0; pix < pixels; ++pix)
    for (int o = 0; o < c.cout; ++o)
      if (epilogue::sign_operand(ref_y[pix * c.cout + o], thr[o]) < 0.0f) ref_bits[pix * KWo + o / 64] |= 1ull << (o % 64);

  // the engine on every path: the reference path against the naive computation above, every other
  // path against the reference path
  auto run_engine = [&](int isa, std::vector<float>& y, std::vector<uint64_t>& bits) {
    y.assign(static_cast<size_t>(pixels * c.cout), NAN);
    bits.assign(static_cast<size_t>(pixels * KWo), ~0ull);
    std::vector<float> shortcut = residual;  // the in-place call writes over it
    ConvCall call;
    call.x = x.data();
    call.N = c.N, call.H = c.H, call.W = c.W, call.sh = c.sh, call.sw = c.sw, call.ph = c.ph, call.pw = c.pw;
    call.pad_value = c.pad_value;
    call.isa = isa, call.num_threads = threads;
    if (c.bits_out) {
      call.out = bits.data();
    } else {
      call.out = c.residual && c.in_place ? shortcut.data() : y.data();
      call.residual = c.residual ? shortcut.data() : nullptr;
      if (c.also_bits) call.out_bits = bits.data(), call.bits_threshold = thr.data();
    }
    conv2d(w, t, call);
    if (!c.bits_out && c.residual && c.in_place) y = shortcut;
  };
  const bool check_floats = !c.bits_out, check_bits = c.bits_out || c.also_bits;
  std::vector<float> want_y, y;
  std::vector<uint64_t> want_bits, bits;
  run_engine(kReference, want_y, want_bits);
  int failures = 0;
  const std::string where = "conv2d, reference path vs the checker, " + std::to_string(threads) + " threads, " + describe(c);
  const int e = (check_floats ? mismatches(want_y, ref_y, "float", where) : 0) +
                (check_bits ? mismatches(want_bits, ref_bits, "bits", where) : 0);
  failures += e != 0;
  for (int isa = 0; isa < kReference; ++isa) {
    if (!cpu_supports(isa)) continue;
    run_engine(isa, y, bits);
    const std::string at = std::string("conv2d, ") + get_isa(isa).name + " vs reference, " + std::to_string(threads) +
                           " threads, " + describe(c);
    failures += ((check_floats ? mismatches(y, want_y, "float", at) : 0) +
                 (check_bits ? mismatches(bits, want_bits, "bits", at) : 0)) != 0;
  }
  return failures;
}

// ---- depthwise ----------------------------------------------------------------------------

struct DwCase {
  int N, H, W, C, kh, kw, sh, sw, ph, pw, pad_value, planes;
  bool bits_out, prelu, clamp;
};

std::string describe(const DwCase& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "depthwise N=%d H=%d W=%d C=%d k=%dx%d s=%dx%d p=%dx%d pad_value=%d planes=%d bits=%d prelu=%d clamp=%d",
                c.N, c.H, c.W, c.C, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.pad_value, c.planes, c.bits_out, c.prelu,
                c.clamp);
  return buf;
}

DwCase random_dw_case(int k) {
  const int channels[] = {1, 3, 33, 64, 65, 127, 130};
  DwCase c;
  c.N = uniform(1, 2);
  c.kh = k % 2 ? 3 : uniform(1, 3) * 2 - 1;  // 3x3 (its carry-save forms) half the time
  c.kw = k % 6 == 4 ? uniform(1, 3) * 2 - 1 : c.kh;
  c.H = uniform(c.kh, 10), c.W = uniform(c.kw, 24);  // rows wide enough for the eight-pixel interior runs
  c.C = channels[uniform(0, 6)];
  c.sh = uniform(1, 2), c.sw = k % 5 == 0 ? uniform(1, 2) : c.sh;
  c.ph = uniform(0, c.kh / 2), c.pw = uniform(0, c.kw / 2);
  c.pad_value = uniform(-1, 1);
  c.planes = k % 4 == 3 ? uniform(2, 3) : 1;
  c.bits_out = uniform(0, 1);
  c.prelu = uniform(0, 1), c.clamp = uniform(0, 1);
  if (k % 8 == 5) c.planes = 1;  // one plane with masks
  return c;
}

// A depthwise layer against the naive computation (reference path) and the reference path (the
// others); returns the number of failing comparisons.
int run_dw_case(const DwCase& c, int threads) {
  const int64_t OH = conv_out_size(c.H, c.kh, c.sh, c.ph), OW = conv_out_size(c.W, c.kw, c.sw, c.pw);
  if (OH < 1 || OW < 1) return 0;
  const int J = c.planes, taps = c.kh * c.kw;
  const bool masked = J > 1 || c.C % 2 == 1;
  DepthwiseWeights w;
  w.J = J, w.C = c.C, w.kh = c.kh, w.kw = c.kw, w.KW = (c.C + 63) / 64;
  std::vector<int> xs(static_cast<size_t>(c.N) * c.H * c.W * c.C), ws(static_cast<size_t>(J) * taps * c.C),
      ms(ws.size(), 1);  // ws / ms: (J, taps, C)
  for (auto& v : xs) v = random_sign();
  for (auto& v : ws) v = random_sign();
  if (masked)
    for (auto& v : ms) v = uniform(0, 4) != 0;
  const std::vector<uint64_t> x = pack_signs(xs, static_cast<int64_t>(c.N) * c.H * c.W, c.C);
  w.w = pack_signs(ws, static_cast<int64_t>(J) * taps, c.C);
  if (masked) {
    std::vector<int> mneg(ms.size());
    for (size_t e = 0; e < ms.size(); ++e) mneg[e] = ms[e] ? -1 : 1;  // (pack_signs sets the bit of -1)
    w.m = pack_signs(mneg, static_cast<int64_t>(J) * taps, c.C);
  }
  w.mu.resize(static_cast<size_t>(J) * c.C);
  for (auto& v : w.mu) v = 0.5f + static_cast<float>(uniform(0, 100)) / 100.0f;
  Transform t;
  t.cout = c.C, t.cpad = (c.C + kBlock - 1) / kBlock * kBlock, t.bits = c.bits_out;
  t.scale.assign(static_cast<size_t>(t.cpad), 0.0f), t.bias.assign(static_cast<size_t>(t.cpad), 0.0f);
  for (int o = 0; o < c.C; ++o) t.scale[o] = normal(), t.bias[o] = normal(3.0f);
  if (c.prelu) {
    t.prelu.assign(static_cast<size_t>(t.cpad), 0.0f);
    for (int o = 0; o < c.C; ++o) t.prelu[o] = normal(0.5f);
  }
  if (c.bits_out) {
    t.thr.assign(static_cast<size_t>(t.cpad), 0.0f);
    for (int o = 0; o < c.C; ++o) t.thr[o] = normal();
  }
  t.cmin = c.clamp ? -2.0f : -INFINITY;
  t.cmax = c.clamp ? 3.0f : INFINITY;
  // the naive computation
  const int64_t pixels = static_cast<int64_t>(c.N) * OH * OW, KW = w.KW;
  std::vector<float> ref_y(static_cast<size_t>(pixels * c.C));
  std::vector<uint64_t> ref_bits(static_cast<size_t>(pixels * KW), 0);
  for (int64_t pix = 0; pix < pixels; ++pix) {
    const int64_t n = pix / (OH * OW), oh = pix / OW % OH, ow = pix % OW;
    for (int ch = 0; ch < c.C; ++ch) {
      float a = 0.0f;
      for (int j = 0; j < J; ++j) {
        int64_t D = 0;
        for (int s = 0; s < taps; ++s) {
          const int64_t ih = oh * c.sh - c.ph + s / c.kw, iw = ow * c.sw - c.pw + s % c.kw;
          const bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
          const int xv = inside ? xs[((n * c.H + ih) * c.W + iw) * c.C + ch] : c.pad_value;
          const size_t at = (static_cast<size_t>(j) * taps + s) * c.C + ch;
          D += xv * ws[at] * ms[at];
        }
        a = epilogue::plane_term(a, w.mu[static_cast<size_t>(j) * c.C + ch], static_cast<float>(D));
      }
      const float y = epilogue_value(a, t, ch, nullptr);
      ref_y[pix * c.C + ch] = y;
      if (c.bits_out && epilogue::sign_operand(y, t.thr[ch]) < 0.0f) ref_bits[pix * KW + ch / 64] |= 1ull << (ch % 64);
    }
  }
  auto run_engine = [&](int isa, std::vector<float>& y, std::vector<uint64_t>& bits) {
    y.assign(static_cast<size_t>(pixels * c.C), NAN);
    bits.assign(static_cast<size_t>(pixels * KW), ~0ull);
    ConvCall call;
    call.x = x.data();
    call.N = c.N, call.H = c.H, call.W = c.W, call.sh = c.sh, call.sw = c.sw, call.ph = c.ph, call.pw = c.pw;
    call.pad_value = c.pad_value, call.isa = isa, call.num_threads = threads;
    call.out = c.bits_out ? static_cast<void*>(bits.data()) : static_cast<void*>(y.data());
    depthwise_conv2d(w, t, call);
  };
  std::vector<float> want_y, y;
  std::vector<uint64_t> want_bits, bits;
  run_engine(kReference, want_y, want_bits);
  const std::string where = "reference path vs the checker, " + describe(c);
  int failures = (c.bits_out ? mismatches(want_bits, ref_bits, "bits", where) : mismatches(want_y, ref_y, "float", where)) != 0;
  for (int isa = 0; isa < kReference; ++isa) {
    if (!cpu_supports(isa)) continue;
    run_engine(isa, y, bits);
    const std::string at = std::string(get_isa(isa).name) + " vs reference, " + std::to_string(threads) +
                           " threads, " + describe(c);
    failures += (c.bits_out ? mismatches(bits, want_bits, "bits", at) : mismatches(y, want_y, "float", at)) != 0;
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 150;
  int failures = 0, runs = 0;
  std::string paths;
  for (int isa = 0; isa < kNumIsa; ++isa)
    if (cpu_supports(isa)) paths += std::string(paths.empty() ? "" : ", ") + get_isa(isa).name;
  int npaths = 0;  // runs per case: the reference path, and every other path against it
  for (int isa = 0; isa < kNumIsa; ++isa) npaths += cpu_supports(isa);
  const int channels[] = {1, 3, 33, 64, 65, 127, 130};
  for (int k = 0; k < cases; ++k) {
    Case c;
    c.N = uniform(1, 2);
    c.kh = uniform(1, 3) * 2 - 1;  // 1, 3, 5
    c.kw = k % 5 == 0 ? uniform(1, 3) * 2 - 1 : c.kh;
    c.H = uniform(c.kh, 12), c.W = uniform(c.kw, 14);
    c.cin = channels[uniform(0, 6)], c.cout = channels[uniform(0, 6)];
    c.sh = uniform(1, 2), c.sw = k % 7 == 0 ? uniform(1, 2) : c.sh;
    c.ph = uniform(0, c.kh / 2), c.pw = uniform(0, c.kw / 2);
    c.pad_value = uniform(-1, 1);
    c.planes = k % 4 == 1 ? 2 : 1;
    c.bits_out = k % 3 == 0;
    c.prelu = uniform(0, 1), c.clamp = uniform(0, 1);
    c.residual = !c.bits_out && uniform(0, 1);
    c.in_place = c.residual && uniform(0, 1);
    c.also_bits = !c.bits_out && uniform(0, 1);
    c.mu_scale = uniform(0, 1) ? 1.0f : 0.25f;
    const uint64_t seed = rng();
    for (int threads = 1; threads <= 3; ++threads) {
      rng.seed(seed);  // the same data on every thread count
      failures += run_case(c, threads);
      runs += npaths;
    }
  }
  // Worst-case long reductions (see Case::worst): 4x4 x 2 words = 32 steps (one past the portable SWAR
  // counters' 31), 36 and 45 steps (SWAR), 72 (ResNet-18's 512-channel 3x3, carry-save), 32 and 48
  // one-word steps of 1x1 convolutions; one plane and two masked planes.
  const int worst[][2] = {{128, 4}, {256, 3}, {320, 3}, {512, 3}, {2048, 1}, {3072, 1}};
  int worst_runs = 0;
  for (const auto& shape : worst)
    for (int planes = 1; planes <= 2; ++planes) {
      Case c{};
      c.N = 1, c.cin = shape[0], c.cout = 5, c.kh = c.kw = shape[1], c.H = c.W = shape[1] + 1;
      c.sh = c.sw = 1, c.planes = planes, c.mu_scale = 1.0f, c.worst = true;
      failures += run_case(c, 1 + worst_runs % 3);
      runs += npaths, worst_runs += npaths;
    }
  // Depthwise layers: as many random cases again.
  int dw_runs = 0;
  for (int k = 0; k < cases; ++k) {
    const DwCase c = random_dw_case(k);
    const int threads = 1 + k % 3;
    failures += run_dw_case(c, threads);
    runs += npaths, dw_runs += npaths;
  }
  std::printf("engine_check: %d of %d runs failed (%d random conv2d cases x kernel paths [%s] x 1-3 threads, %d "
              "worst-case long reductions, %d depthwise runs; every path against the reference path)\n",
              failures, runs, cases, paths.c_str(), worst_runs, dw_runs);
  return failures ? 1 : 0;
}
