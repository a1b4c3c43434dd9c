// Direct (im2col-free) binary convolution driver: work items (32-output-channel block, image,
// output row) spread over the engine's threads; each item runs the selected ISA's instantiation
// of conv_item (conv_impl.h).
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "conv_impl.h"
#include "engine.h"
#include "epilogue.h"
#include "zero_padding.h"
#include "ops.h"
#include "thread_pool.h"

namespace onebit {

uint64_t new_weights_uid() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void set_tap_sign_sums(Weights& w, const int32_t* wsum) {
  const int64_t per_plane = (w.kh + 1) * (w.kw + 1) * w.cpad;
  w.wsum_prefix.assign(static_cast<size_t>(w.J * per_plane), 0);
  for (int64_t j = 0; j < w.J; ++j)
    build_tap_sign_prefix(wsum + j * w.cout * w.kh * w.kw, w.kh, w.kw, w.cout, w.cpad,
                          w.wsum_prefix.data() + j * per_plane);
}

namespace {

// Output bit of one channel for the integer dot product D: the epilogue (epilogue.h) of one plane,
// then the sign of its threshold operand.  *finite: every intermediate is finite.
bool transform_bit(const Transform& t, float mu, int64_t o, int64_t D, bool* finite) {
  const float acc = epilogue::plane_term(0.0f, mu, static_cast<float>(D));
  const bool ok = std::isfinite(acc) && std::isfinite(epilogue::affine(acc, t.scale[o], t.bias[o]));
  const float* slope = t.prelu.empty() ? nullptr : &t.prelu[o];
  float y = epilogue::one_plane_value(D, mu, t.scale[o], t.bias[o], slope, t.cmin, t.cmax);
  if (!t.thr.empty()) y = epilogue::sign_operand(y, t.thr[o]);
  *finite = ok && std::isfinite(y);
  return y < 0.0f;
}

// The integer form of a bits-output transform for single-plane weights, or nullptr where the
// float epilogue must run.  The transform is a composition of monotone float maps of D (times
// mu, times scale, plus bias, PReLU with a slope >= 0, clamp, plus threshold; IEEE rounding is
// monotone), so while no intermediate is infinite or NaN -- checked at the two ends of D's range
// [-R, R], which bound every intermediate in between -- the set of D giving bit 1 is a prefix
// or a suffix of the range, found by bisection on the same float operations: the bits are
// identical to the float epilogue's, and the per-pixel work becomes two integer compares
// (the integer-threshold form of BatchNorm + sign used by FINN and LCE).
std::shared_ptr<const SignIntervals> make_sign_intervals(const Weights& w, const Transform& t) {
  const int64_t R = w.kh * w.kw * w.cin;  // |D| <= R: D is a sum of kh*kw*cin terms in {-1, 0, 1}
  if (R >= (int64_t{1} << 24)) return nullptr;  // float(D) must be exact
  auto r = std::make_shared<SignIntervals>();
  r->weights_uid = w.uid;
  r->lo.assign(static_cast<size_t>(w.cpad), INT32_MAX);  // padded channels: empty interval
  r->hi.assign(static_cast<size_t>(w.cpad), INT32_MIN);
  for (int64_t o = 0; o < w.cout; ++o) {
    if (!t.prelu.empty() && !(t.prelu[o] >= 0.0f)) return nullptr;  // a negative slope folds y
    const float mu = w.mu[o];
    bool fin_lo = false, fin_hi = false;
    const bool b_lo = transform_bit(t, mu, o, -R, &fin_lo), b_hi = transform_bit(t, mu, o, R, &fin_hi);
    if (!fin_lo || !fin_hi) return nullptr;
    if (b_lo == b_hi) {
      if (b_lo) r->lo[o] = INT32_MIN, r->hi[o] = INT32_MAX;
      continue;
    }
    // bisection keeps bit(a) == b_lo and bit(b) == b_hi
    int64_t a = -R, b = R;
    bool finite = true;
    while (b - a > 1) {
      const int64_t mid = a + (b - a) / 2;
      (transform_bit(t, mu, o, mid, &finite) == b_lo ? a : b) = mid;
    }
    if (b_lo) r->lo[o] = INT32_MIN, r->hi[o] = static_cast<int32_t>(a);  // bit 1 for D <= a
    else r->lo[o] = static_cast<int32_t>(b), r->hi[o] = INT32_MAX;        // bit 1 for D >= b
  }
  return r;
}

std::shared_ptr<const SignIntervals> sign_intervals(const Weights& w, const Transform& t) {
  if (!t.bits || w.J != 1) return nullptr;
  return cached_for_weights(t, t.intervals, w.uid, [&] { return make_sign_intervals(w, t); });
}

}  // namespace

int64_t conv_out_size(int64_t in, int k, int stride, int pad) {
  const int64_t span = in + 2 * static_cast<int64_t>(pad) - k;
  return span < 0 ? 0 : span / stride + 1;
}

void conv2d(const Weights& w, const Transform& t, const ConvCall& call) {
  const Isa& isa = get_isa(call.isa);
  ConvCtx c;
  c.N = call.N;
  c.H = call.H;
  c.W = call.W;
  c.KW = w.KW;
  c.kh = static_cast<int>(w.kh);
  c.kw = static_cast<int>(w.kw);
  c.sh = call.sh;
  c.sw = call.sw;
  c.ph = call.ph;
  c.pw = call.pw;
  c.OH = conv_out_size(c.H, c.kh, c.sh, c.ph);
  c.OW = conv_out_size(c.W, c.kw, c.sw, c.pw);
  if (c.OH <= 0 || c.OW <= 0) throw std::invalid_argument("conv2d: empty output");
  c.J = static_cast<int>(w.J);
  c.cin = w.cin;
  c.cout = w.cout;
  c.ncb = w.ncb;
  c.cpad = w.cpad;
  c.KWo = (w.cout + 63) / 64;
  c.w = w.w.data();
  c.m = w.m.empty() ? nullptr : w.m.data();
  c.blk_words = w.kh * w.kw * w.KW * kBlock;
  c.plane_words = w.ncb * c.blk_words;
  c.base = w.base.data();
  c.wsum_prefix = w.wsum_prefix.data();
  c.mu = w.mu.data();
  c.scale = t.scale.data();
  c.bias = t.bias.data();
  c.prelu = t.prelu.empty() ? nullptr : t.prelu.data();
  // Both outputs: the bits' threshold of a float output comes with the call.
  c.thr = t.bits ? (t.thr.empty() ? nullptr : t.thr.data()) : call.bits_threshold;
  c.cmin = t.cmin;
  c.cmax = t.cmax;
  // (The reference path reads no prepared form: it defines what they must reproduce.)
  const std::shared_ptr<const SignIntervals> intervals = call.isa == kReference ? nullptr : sign_intervals(w, t);
  if (intervals) {
    c.sign_lo = intervals->lo.data();
    c.sign_hi = intervals->hi.data();
  }
  c.out_f = t.bits ? nullptr : static_cast<float*>(call.out);
  c.residual = t.bits ? nullptr : call.residual;
  c.out_bits = t.bits ? static_cast<uint64_t*>(call.out) : call.out_bits;

  // What a padded input position reads: +1 and 0 padding read +1 (all-zero words); -1 padding
  // reads -1 in the valid channel bits.  0 padding is corrected per border pixel in conv_item.
  std::vector<uint64_t> pad_word(static_cast<size_t>(c.KW), 0);
  if (call.pad_value == -1) {
    for (auto& word : pad_word) word = ~0ull;
    if (w.cin % 64) pad_word.back() = (1ull << (w.cin % 64)) - 1;
  }
  c.x = call.x;
  c.pad_word = pad_word.data();
  static std::atomic<uint64_t> calls{0};
  c.call_serial = calls.fetch_add(1, std::memory_order_relaxed) + 1;
  c.zero_pad = call.pad_value == 0 && (c.ph > 0 || c.pw > 0);

  const ItemFn run_item = isa.run_item;
  const int64_t items = c.ncb * c.N * c.OH;
  // Threads only where there is work to share: waking a pool worker costs about as much as
  // ~64K word xor+popcounts (a small linear layer), so tiny layers stay on the calling thread.
  const int64_t words = items * c.OW * c.J * c.kh * c.kw * c.KW * kBlock;
  const int64_t useful = words / (1 << 16) + 1;
  const int threads = static_cast<int>(std::min<int64_t>(call.num_threads, useful));
  // Ranges of whole output rows (all channel blocks of a row: one thread writes each output
  // word) when there are enough rows to balance, else of channel-block pairs (one 64-bit output
  // word per pixel each).
  const int64_t rows = c.N * c.OH;
  const int64_t grain = rows >= 4 * static_cast<int64_t>(threads) ? c.ncb : std::min<int64_t>(2, c.ncb);
  parallel_ranges(threads, items, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) run_item(c, item);
  });
}

}  // namespace onebit
