// Binary depthwise convolution: the per-call driver and the one-plane tables (DepthwisePlan).
// The kernel itself, and what the tables and bounds are, is described in depthwise_impl.h; each
// kernel path runs its own instantiation of the row kernel (Isa::depthwise_row).
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "depthwise_impl.h"
#include "engine.h"
#include "epilogue.h"
#include "ops.h"
#include "thread_pool.h"

namespace onebit {

namespace {

std::shared_ptr<const DepthwisePlan> make_plan(const DepthwiseWeights& w, const Transform& t, int B) {
  const int64_t C = w.C, KW = w.KW;
  const int taps = static_cast<int>(w.kh * w.kw), E = 2 * taps + 1;
  if (C * E > (int64_t{1} << 22)) return nullptr;  // the float epilogue instead of a huge table
  auto p = std::make_shared<DepthwisePlan>();
  p->weights_uid = w.uid;
  p->taps = taps;
  p->E = E;
  p->B = B;
  p->full.assign(static_cast<size_t>(C), taps);
  if (!w.m.empty())
    for (int64_t c = 0; c < C; ++c) {
      int32_t a = 0;
      for (int s = 0; s < taps; ++s) a += static_cast<int32_t>((w.m[s * KW + c / 64] >> (c % 64)) & 1u);
      p->full[c] = a;
    }
  if (t.bits) p->btab.resize(static_cast<size_t>(C * E)), p->bs.resize(static_cast<size_t>(C * (taps + 1)));
  else p->ftab.resize(static_cast<size_t>(C * E)), p->fs.resize(static_cast<size_t>(C * (taps + 1)));
  for (int64_t c = 0; c < C; ++c)
    for (int32_t D = -taps; D <= taps; ++D) {
      const float y = epilogue::one_plane_value(D, w.mu[c], t.scale[c], t.bias[c],
                                                t.prelu.empty() ? nullptr : &t.prelu[c], t.cmin, t.cmax);
      if (t.bits) p->btab[c * E + D + taps] = epilogue::sign_operand(y, t.thr.empty() ? 0.0f : t.thr[c]) < 0.0f;
      else p->ftab[c * E + D + taps] = y;
    }
  for (int64_t c = 0; c < C; ++c)
    for (int32_t S = 0; S <= taps; ++S) {
      const int32_t D = std::max(-taps, p->full[c] - 2 * S);  // S > full[c] does not occur
      if (t.bits) p->bs[c * (taps + 1) + S] = p->btab[c * E + D + taps];
      else p->fs[c * (taps + 1) + S] = p->ftab[c * E + D + taps];
    }
  if (!t.bits) {
    const size_t P = static_cast<size_t>(KW * 64);
    p->pmu.assign(P, 0.0f), p->pscale.assign(P, 0.0f), p->pbias.assign(P, 0.0f), p->pfull.assign(P, 0);
    if (!t.prelu.empty()) p->pprelu.assign(P, 0.0f);
    for (int64_t c = 0; c < C; ++c) {
      p->pmu[c] = w.mu[c], p->pscale[c] = t.scale[c], p->pbias[c] = t.bias[c], p->pfull[c] = p->full[c];
      if (!t.prelu.empty()) p->pprelu[c] = t.prelu[c];
    }
    return p;
  }
  // Bit-sliced bounds, for pixels whose every tap is valid (A = full[c]) and, without masks, for
  // each smaller count nt of valid taps (0-padded borders: A = nt): each channel's set of S in
  // [0, A] giving bit 1 must be empty, a prefix or a suffix, else that count reads out.
  p->sliced.assign(static_cast<size_t>(taps + 1), 0);
  p->kplanes.assign(static_cast<size_t>((taps + 1) * KW * B), 0);
  p->le.assign(static_cast<size_t>((taps + 1) * KW), 0);
  p->valid.assign(static_cast<size_t>((taps + 1) * KW), 0);
  for (int nt = w.m.empty() ? 0 : taps; nt <= taps; ++nt) {
    bool ok = true;
    for (int64_t c = 0; c < C && ok; ++c) {
      const int32_t A = w.m.empty() ? nt : p->full[c];
      const uint8_t* bit = p->btab.data() + c * E + taps;  // bit[D]
      int32_t first = -1, last = -1, ones = 0;
      for (int32_t S = 0; S <= A; ++S)
        if (bit[A - 2 * S]) {
          if (first < 0) first = S;
          last = S;
          ++ones;
        }
      if (ones == 0) continue;  // valid bit 0
      if (ones != last - first + 1 || (first > 0 && last < A)) {
        ok = false;  // not one bound
        break;
      }
      const bool le = first == 0;  // [0, last]: S <= last; else [first, A]: S >= first
      const int32_t K = le ? last : first;
      const uint64_t bitc = 1ull << (c % 64);
      const int64_t k = nt * KW + c / 64;
      p->valid[k] |= bitc;
      if (le) p->le[k] |= bitc;
      for (int b = 0; b < B; ++b)
        if ((K >> b) & 1) p->kplanes[k * B + b] |= bitc;
    }
    p->sliced[nt] = ok;
  }
  return p;
}

std::shared_ptr<const DepthwisePlan> depthwise_plan(const DepthwiseWeights& w, const Transform& t, int B) {
  if (w.J != 1) return nullptr;
  return cached_for_weights(t, t.depthwise_plans, w.uid, [&] { return make_plan(w, t, B); });
}


// The per-call context: geometry, the pad word and tap offsets (owned by the caller), the plan.
DepthwiseCtx make_context(const DepthwiseWeights& w, const Transform& t, const ConvCall& call,
                          std::vector<uint64_t>& pad_word, std::vector<int64_t>& tap_off) {
  DepthwiseCtx c;
  c.C = w.C, c.KW = w.KW, c.N = call.N, c.H = call.H, c.W = call.W;
  c.kh = static_cast<int>(w.kh), c.kw = static_cast<int>(w.kw), c.taps = c.kh * c.kw;
  c.sh = call.sh, c.sw = call.sw, c.ph = call.ph, c.pw = call.pw, c.pad_value = call.pad_value;
  c.OH = conv_out_size(c.H, c.kh, c.sh, c.ph), c.OW = conv_out_size(c.W, c.kw, c.sw, c.pw);
  if (c.OH <= 0 || c.OW <= 0) throw std::invalid_argument("depthwise_conv2d: empty output");
  c.J = static_cast<int>(w.J);
  while ((int64_t{1} << c.B) <= c.taps) ++c.B;  // counter planes: counts reach `taps`
  // +-1 padding reads a constant word: -1 in the valid channel bits (tail bits stay zero).
  pad_word.assign(static_cast<size_t>(c.KW), 0);
  if (c.pad_value == -1) {
    for (auto& word : pad_word) word = ~0ull;
    if (c.C % 64) pad_word.back() = (1ull << (c.C % 64)) - 1;
  }
  tap_off.resize(static_cast<size_t>(c.taps));
  for (int i = 0; i < c.kh; ++i)
    for (int j = 0; j < c.kw; ++j) tap_off[i * c.kw + j] = (static_cast<int64_t>(i) * c.W + j) * c.KW;
  c.x = call.x, c.pad_word = pad_word.data(), c.tap_off = tap_off.data();
  c.w = w.w.data(), c.m = w.m.empty() ? nullptr : w.m.data(), c.mu = w.mu.data();
  c.scale = t.scale.data(), c.bias = t.bias.data();
  c.prelu = t.prelu.empty() ? nullptr : t.prelu.data(), c.thr = t.thr.empty() ? nullptr : t.thr.data();
  c.cmin = t.cmin, c.cmax = t.cmax;
  c.out_f = t.bits ? nullptr : static_cast<float*>(call.out);
  c.out_bits = t.bits ? static_cast<uint64_t*>(call.out) : nullptr;
  c.ow_inside_end = std::min<int64_t>(c.OW, c.W + c.pw >= c.kw ? (c.W + c.pw - c.kw) / c.sw + 1 : 0);
  c.xs = static_cast<int64_t>(c.sw) * c.KW;
  return c;
}

}  // namespace

void depthwise_conv2d(const DepthwiseWeights& w, const Transform& t, const ConvCall& call) {
  const Isa& isa = get_isa(call.isa);
  std::vector<uint64_t> pad_word;
  std::vector<int64_t> tap_off;
  DepthwiseCtx c = make_context(w, t, call, pad_word, tap_off);
  // The reference path reads no prepared form: it defines what they must reproduce.
  const std::shared_ptr<const DepthwisePlan> plan =
      call.isa == kReference ? nullptr : depthwise_plan(w, t, c.B);
  c.plan = plan.get();
  c.sliced_full = t.bits && c.plan && c.plan->sliced[c.taps];
  c.fast3x3 = c.plan && c.taps == 9;
  if (c.plan && c.out_f) {
    c.fargs.prelu = c.plan->pprelu.empty() ? nullptr : c.plan->pprelu.data();
    c.fargs.cmin = c.cmin;
    c.fargs.cmax = c.cmax;
  }
  const DepthwiseRowFn row = isa.depthwise_row;
  const int64_t rows = c.N * c.OH;
  // Threads only where there is work to share (see conv2d): about one pool wake-up's worth of
  // work per thread at least.
  const int64_t work = rows * c.OW * c.KW * c.J * (c.taps + 64 * c.B);
  const int threads = static_cast<int>(std::min<int64_t>(call.num_threads, work / (1 << 16) + 1));
  parallel_ranges(threads, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row(c, r);
  });
}

}  // namespace onebit
