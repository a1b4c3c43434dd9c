// Binary depthwise convolution (groups == in_channels == out_channels): output channel c reads
// only input channel c, so the 64 channels of one activation word are 64 independent dot
// products of kh*kw taps.  Per output pixel and channel word the kernel XORs each tap's input
// word with that tap's weight word (AND the plane mask), and adds the 64 one-bit mismatches to a
// bit-sliced binary counter (plane b holds bit b of every channel's count); the counts are then
// read out eight channels at a time (byte lanes): D_c = active_c - 2 * mismatches_c.  Zero-padded
// taps are skipped (and not counted as active), +-1 padded taps read a constant pad word.  The fused epilogue runs the
// float operations of conv_item (conv_impl.h) in the same order, so outputs are bit-identical to
// the regular convolution's.  Plain portable C++: the same code serves every kernel path.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "ops.h"
#include "thread_pool.h"

namespace onebit {

namespace {

// Adds the 64 one-bit values of v to the bit-sliced counter cnt[0..B).
inline void counter_add(uint64_t* cnt, int B, uint64_t v) {
  for (int b = 0; b < B && v; ++b) {
    const uint64_t carry = cnt[b] & v;
    cnt[b] ^= v;
    v = carry;
  }
}

// kSpread[v]: byte i = bit i of v (eight channels' bits spread into eight byte lanes)
struct SpreadTable {
  uint64_t v[256];
  SpreadTable() {
    for (int x = 0; x < 256; ++x) {
      v[x] = 0;
      for (int i = 0; i < 8; ++i) v[x] |= static_cast<uint64_t>((x >> i) & 1) << (8 * i);
    }
  }
};
const SpreadTable kSpread;

// count[c] for the first nc channels of the counter (count has room for 64).  Up to 8 planes
// (counts <= 255) eight channels at a time in byte lanes; more planes one channel at a time.
inline void counter_read(const uint64_t* cnt, int B, int nc, int32_t* count) {
  if (B <= 8) {
    for (int g = 0; g * 8 < nc; ++g) {
      uint64_t lanes = 0;
      for (int b = 0; b < B; ++b) lanes |= kSpread.v[(cnt[b] >> (8 * g)) & 0xFF] << b;
      for (int i = 0; i < 8; ++i) count[8 * g + i] = static_cast<int32_t>((lanes >> (8 * i)) & 0xFF);
    }
    return;
  }
  for (int c = 0; c < nc; ++c) {
    int32_t s = 0;
    for (int b = 0; b < B; ++b) s |= static_cast<int32_t>((cnt[b] >> c) & 1u) << b;
    count[c] = s;
  }
}

}  // namespace

void depthwise_conv2d(const DepthwiseWeights& w, const Transform& t, const ConvCall& call) {
  const int64_t C = w.C, KW = w.KW, N = call.N, H = call.H, W = call.W;
  const int kh = static_cast<int>(w.kh), kw = static_cast<int>(w.kw), taps = kh * kw;
  const int sh = call.sh, sw = call.sw, ph = call.ph, pw = call.pw, pad_value = call.pad_value;
  const int64_t OH = conv_out_size(H, kh, sh, ph), OW = conv_out_size(W, kw, sw, pw);
  if (OH <= 0 || OW <= 0) throw std::invalid_argument("depthwise_conv2d: empty output");
  const int J = static_cast<int>(w.J);
  int B = 1;  // counter planes: counts reach `taps`
  while ((int64_t{1} << B) <= taps) ++B;

  // +-1 padding reads a constant word: -1 in the valid channel bits (tail bits stay zero).
  std::vector<uint64_t> padw(static_cast<size_t>(KW), 0);
  if (pad_value == -1) {
    for (int64_t k = 0; k < KW; ++k) padw[k] = ~0ull;
    if (C % 64) padw[KW - 1] = (1ull << (C % 64)) - 1;
  }
  const uint64_t* x = call.x;
  const uint64_t* wb = w.w.data();
  const uint64_t* wm = w.m.empty() ? nullptr : w.m.data();
  const float* mu = w.mu.data();
  const float* scale = t.scale.data();
  const float* bias = t.bias.data();
  const float* prelu = t.prelu.empty() ? nullptr : t.prelu.data();
  const float* thr = t.thr.empty() ? nullptr : t.thr.data();
  const float cmin = t.cmin, cmax = t.cmax;
  float* out_f = t.bits ? nullptr : static_cast<float*>(call.out);
  uint64_t* out_bits = t.bits ? static_cast<uint64_t*>(call.out) : nullptr;

  auto run_row = [&](int64_t row) {  // one output row (n, oh): all its pixels and channels
    const int64_t n = row / OH, oh = row % OH;
    std::vector<const uint64_t*> tap_x(static_cast<size_t>(taps));
    std::vector<int> tap_id(static_cast<size_t>(taps));
    uint64_t cnt[32], act[32];
    int32_t S[64], A[64];
    float acc[64];
    for (int64_t ow = 0; ow < OW; ++ow) {
      // input word pointers of the taps this pixel uses (0 padding: padded taps are dropped)
      int nt = 0;
      for (int i = 0; i < kh; ++i) {
        const int64_t ih = oh * sh + i - ph;
        for (int j = 0; j < kw; ++j) {
          const int64_t iw = ow * sw + j - pw;
          const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
          if (!inside && pad_value == 0) continue;
          tap_x[nt] = inside ? x + ((n * H + ih) * W + iw) * KW : padw.data();
          tap_id[nt] = i * kw + j;
          ++nt;
        }
      }
      const int64_t pix = (n * OH + oh) * OW + ow;
      for (int64_t k = 0; k < KW; ++k) {
        const int nc = static_cast<int>(std::min<int64_t>(64, C - k * 64));
        const int64_t c0 = k * 64;
        for (int q = 0; q < nc; ++q) acc[q] = 0.0f;
        for (int jp = 0; jp < J; ++jp) {
          const uint64_t* wj = wb + static_cast<int64_t>(jp) * taps * KW;
          const uint64_t* mj = wm ? wm + static_cast<int64_t>(jp) * taps * KW : nullptr;
          for (int b = 0; b < B; ++b) cnt[b] = act[b] = 0;
          for (int s = 0; s < nt; ++s) {
            const int64_t o = static_cast<int64_t>(tap_id[s]) * KW + k;
            uint64_t v = tap_x[s][k] ^ wj[o];
            if (mj) {
              v &= mj[o];
              counter_add(act, B, mj[o]);
            }
            counter_add(cnt, B, v);
          }
          counter_read(cnt, B, nc, S);
          if (mj) {
            counter_read(act, B, nc, A);
          } else {
            for (int q = 0; q < nc; ++q) A[q] = nt;
          }
          const float* m = mu + jp * C + c0;
          for (int q = 0; q < nc; ++q) acc[q] = acc[q] + m[q] * static_cast<float>(A[q] - 2 * S[q]);
        }
        // Fused output transform, the operations of conv_item in its order.
        for (int q = 0; q < nc; ++q) acc[q] = acc[q] * scale[c0 + q] + bias[c0 + q];
        if (prelu)
          for (int q = 0; q < nc; ++q) acc[q] = acc[q] < 0.0f ? acc[q] * prelu[c0 + q] : acc[q];
        for (int q = 0; q < nc; ++q) {
          const float v = acc[q] < cmin ? cmin : acc[q];
          acc[q] = v > cmax ? cmax : v;
        }
        if (out_f) {
          std::memcpy(out_f + pix * C + c0, acc, sizeof(float) * nc);
        } else {
          if (thr)
            for (int q = 0; q < nc; ++q) acc[q] = acc[q] + thr[c0 + q];
          uint64_t bits = 0;
          for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(acc[q] < 0.0f) << q;
          out_bits[pix * KW + k] = bits;
        }
      }
    }
  };

  const int64_t rows = N * OH;
  // Threads only where there is work to share (see conv2d): about one pool wake-up's worth of
  // work per thread at least.
  const int64_t work = rows * OW * KW * J * (taps + 64 * B);
  const int threads = static_cast<int>(std::min<int64_t>(call.num_threads, work / (1 << 16) + 1));
  parallel_ranges(threads, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) run_row(r);
  });
}

}  // namespace onebit
