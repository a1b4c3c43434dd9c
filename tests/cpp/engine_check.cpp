// Standalone check of the engine's binary conv2d against a naive reference, without Python or
// torch: every kernel path this CPU runs, random shapes (odd channel counts, strides 1-2, padding
// values -1/0/+1, 1x1 to 5x5 kernels), one plane or two masked planes (heterogeneous bitwidth),
// float output with every epilogue feature (scale, bias, PReLU, clamp, a residual, also in place,
// the extra bits output) and bits output, on 1-3 threads.
// Float outputs must be identical (the reference applies the engine's float32 operations in the
// engine's order to the exact integer dot product), bits too.
//
// It builds with any C++17 compiler for any architecture (tests/cpp/check.sh): test_cpp.py runs it
// natively in the test suite, and tests/cpp/check.sh --target aarch64 cross-compiles it and runs it
// under qemu, which is how the NEON-lowered portable path is checked on this x86 project's CI host.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine.h"
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

int run_case(const Case& c, int isa, int threads) {
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
  auto widx = [&](int j, int o, int ci, int i, int jj) {
    return j * wn + ((static_cast<size_t>(o) * c.cin + ci) * c.kh + i) * c.kw + jj;
  };

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
            a = a + w.mu[j * w.cpad + o] * static_cast<float>(D);
          }
          const int64_t pix = (static_cast<int64_t>(n) * OH + oh) * OW + ow;
          float y = a * t.scale[o] + t.bias[o];
          if (c.residual) y = y + residual[pix * c.cout + o];
          if (c.prelu) y = y < 0.0f ? y * t.prelu[o] : y;
          const float v = y < t.cmin ? t.cmin : y;
          ref_y[pix * c.cout + o] = v > t.cmax ? t.cmax : v;
        }
  const int64_t KWo = (c.cout + 63) / 64;
  std::vector<uint64_t> ref_bits(static_cast<size_t>(pixels * KWo), 0);
  for (int64_t pix = 0; pix < pixels; ++pix)
    for (int o = 0; o < c.cout; ++o)
      if (ref_y[pix * c.cout + o] + thr[o] < 0.0f) ref_bits[pix * KWo + o / 64] |= 1ull << (o % 64);

  // the engine
  std::vector<float> y(static_cast<size_t>(pixels * c.cout), NAN);
  std::vector<uint64_t> bits(static_cast<size_t>(pixels * KWo), ~0ull);
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

  int errors = 0;
  if (!c.bits_out) {
    for (size_t e = 0; e < y.size() && errors < 3; ++e)
      if (std::memcmp(&y[e], &ref_y[e], sizeof(float)) != 0 && !(y[e] == ref_y[e])) {
        std::fprintf(stderr, "float mismatch at %zu: %.9g vs reference %.9g\n", e, y[e], ref_y[e]);
        ++errors;
      }
  }
  if (c.bits_out || c.also_bits) {
    for (size_t e = 0; e < bits.size() && errors < 3; ++e)
      if (bits[e] != ref_bits[e]) {
        std::fprintf(stderr, "bits mismatch at word %zu: %016llx vs reference %016llx\n", e,
                     static_cast<unsigned long long>(bits[e]), static_cast<unsigned long long>(ref_bits[e]));
        ++errors;
      }
  }
  if (errors) std::fprintf(stderr, "  kernel %s, %d threads, %s\n", get_isa(isa).name, threads, describe(c).c_str());
  return errors;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 150;
  int failures = 0, runs = 0;
  std::string paths;
  for (int isa = 0; isa < kNumIsa; ++isa)
    if (cpu_supports(isa)) paths += std::string(paths.empty() ? "" : ", ") + get_isa(isa).name;
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
    for (int isa = 0; isa < kNumIsa; ++isa) {
      if (!cpu_supports(isa)) continue;
      const uint64_t seed = rng();
      for (int threads = 1; threads <= 3; ++threads) {
        rng.seed(seed);  // the same data on every thread count
        failures += run_case(c, isa, threads) != 0;
        ++runs;
      }
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
      for (int isa = 0; isa < kNumIsa; ++isa)
        if (cpu_supports(isa)) failures += run_case(c, isa, 1 + worst_runs % 3) != 0, ++runs, ++worst_runs;
    }
  std::printf("engine_check: %d of %d runs failed (%d random cases x kernel paths [%s] x 1-3 threads, and %d "
              "worst-case long reductions)\n", failures, runs, cases, paths.c_str(), worst_runs);
  return failures ? 1 : 0;
}
