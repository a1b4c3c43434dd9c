// Binary depthwise convolution (groups == in_channels == out_channels): output channel c reads
// only input channel c, so the 64 channels of one activation word are 64 independent dot
// products of kh*kw taps.  Per output pixel and channel word the kernel XORs each tap's input
// word with that tap's weight word (AND the plane mask), and adds the 64 one-bit mismatches to a
// bit-sliced binary counter (plane b holds bit b of every channel's count); the counts are then
// read out eight channels at a time (byte lanes): D_c = active_c - 2 * mismatches_c.  Zero-padded
// taps are skipped (and not counted as active), +-1 padded taps read a constant pad word.  The
// fused epilogue runs the float operations of conv_item (conv_impl.h) in the same order, so
// outputs are bit-identical to the regular convolution's.
//
// One plane (the common case) runs faster forms, prepared once per (weights, transform) and
// cached in the transform (DepthwisePlan): the output of channel c is a function of its dot
// product D alone, so it is tabulated over every attainable D by the float operations above
// (outputs stay bit-identical), and a pixel reads its outputs from the table.  For bits output,
// where each channel's set of mismatch counts S giving bit 1 is a prefix {S <= K} or a suffix
// {S >= K} of [0, active taps] (always so for a monotone transform: BatchNorm + sign, PReLU with
// slope >= 0, clamps), the 64 output bits of a channel word come from a bit-sliced comparison of
// the counter planes with the planes of the per-channel bounds K (one set of bounds per count of
// valid taps): a few dozen word operations, no per-channel read-out.  3x3 kernels count with a
// carry-save adder tree, eight interior pixels at a time (64-bit lanes).  Float output on the
// AVX2 / AVX-512 kernel paths evaluates the epilogue in vectors (per-ISA target functions); the
// portable and popcnt paths read the tables.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "engine.h"
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif
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


// The 9 one-bit inputs v[0..9) summed into 4 counter planes with carry-save full adders.
inline void csa9(const uint64_t* v, uint64_t* cnt) {
  auto fa = [](uint64_t a, uint64_t b, uint64_t c, uint64_t& sum, uint64_t& carry) {
    const uint64_t t = a ^ b;
    sum = t ^ c;
    carry = (a & b) | (t & c);
  };
  uint64_t s1, c1, s2, c2, s3, c3, c4, t2, f1;
  fa(v[0], v[1], v[2], s1, c1);
  fa(v[3], v[4], v[5], s2, c2);
  fa(v[6], v[7], v[8], s3, c3);
  fa(s1, s2, s3, cnt[0], c4);  // ones
  fa(c1, c2, c3, t2, f1);      // twos, fours
  cnt[1] = c4 ^ t2;
  const uint64_t f2 = c4 & t2;
  cnt[2] = f1 ^ f2;
  cnt[3] = f1 & f2;
}

// Output of channel c (one plane of scale mu) for the dot product D: the float operations of the
// epilogue below (and of conv_item), in their order.
inline float epilogue_value(const Transform& t, float mu, int64_t c, int32_t D) {
  float y = 0.0f + mu * static_cast<float>(D);
  y = y * t.scale[c] + t.bias[c];
  if (!t.prelu.empty()) y = y < 0.0f ? y * t.prelu[c] : y;
  const float v = y < t.cmin ? t.cmin : y;
  return v > t.cmax ? t.cmax : v;
}

// The 64 output bits of a channel word from its counter planes cnt[0..B) and the planes of the
// bounds: bit = (S <= K where le, S >= K elsewhere) and valid.  Comparison from the top plane
// down: gt / lt collect the channels whose first differing bit says S > K / S < K.
inline uint64_t sliced_bits(const uint64_t* cnt, int B, const uint64_t* kp, uint64_t le, uint64_t valid) {
  uint64_t gt = 0, lt = 0, eq = ~0ull;
  for (int b = B - 1; b >= 0; --b) {
    const uint64_t d = cnt[b] ^ kp[b];
    gt |= eq & d & cnt[b];
    lt |= eq & d & kp[b];
    eq &= ~d;
  }
  return (eq | (lt & le) | (gt & ~le)) & valid;
}

// Per-channel operands of the float epilogue of one plane, padded to 64 channels per word.
struct FloatWordArgs {
  const float* mu;
  const float* scale;
  const float* bias;
  const float* prelu;  // or nullptr
  const int32_t* A;    // active taps (every tap valid)
  float cmin, cmax;
};

#if defined(__GNUC__)
#define ONEBIT_DW_INLINE inline __attribute__((always_inline))
#else
#define ONEBIT_DW_INLINE inline
#endif

// The 64 float outputs of one channel word at np pixels, every tap valid (or A = the valid taps),
// from the counter planes cnt[p * B + b] of pixel p into y[p * ystride + q]: D = A - 2 S, then
// the epilogue's float operations in their order, in vectors (vector and scalar IEEE arithmetic
// round alike; the build disables FMA contraction).
using FloatWordFn = void (*)(const uint64_t* cnt, int np, int B, const FloatWordArgs& a, float* y, int64_t ystride);
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define ONEBIT_DW_X86 1
// AVX2: a 32-bit half of a counter plane, broadcast from memory, becomes a lane mask for 8
// channels by AND with the lanes' bits and compare; D = A - sum_b 2^(b+1) over the set planes,
// then the epilogue with compares (_CMP_LT_OQ / _CMP_GT_OQ: false for NaN, as C's < and >) and
// blends.  kB planes and kNP pixels when > 0 (unrolled: the pixels' dependency chains
// interleave), else B and np.  (x86 is little-endian: the half h of a plane word is at byte 4h.)
template <int kB, int kNP>
__attribute__((target("avx2"))) ONEBIT_DW_INLINE void float_word_avx2_impl(const uint64_t* cnt, int np_, int B_,
                                                                          const FloatWordArgs& a, float* y,
                                                                          int64_t ystride) {
  const __m256 zero = _mm256_setzero_ps(), cmin = _mm256_set1_ps(a.cmin), cmax = _mm256_set1_ps(a.cmax);
  const int B = kB > 0 ? kB : B_, np = kNP > 0 ? kNP : np_;
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(cnt);
  for (int g = 0; g < 8; ++g) {
    const int sh = 8 * (g % 4);
    const __m256i lane_bit = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_setr_epi32(sh, sh + 1, sh + 2, sh + 3,
                                                                                        sh + 4, sh + 5, sh + 6, sh + 7));
    const __m256i A = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.A + 8 * g));
    const __m256 mu = _mm256_loadu_ps(a.mu + 8 * g), scale = _mm256_loadu_ps(a.scale + 8 * g),
                 bias = _mm256_loadu_ps(a.bias + 8 * g);
    const __m256 slope = a.prelu ? _mm256_loadu_ps(a.prelu + 8 * g) : zero;
#pragma GCC unroll 4
    for (int p = 0; p < np; ++p) {
      __m256i d = A;
#pragma GCC unroll 8
      for (int b = 0; b < B; ++b) {
        int32_t half;
        std::memcpy(&half, bytes + 8 * (p * B + b) + 4 * (g / 4), 4);
        const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(half), lane_bit), lane_bit);
        d = _mm256_sub_epi32(d, _mm256_and_si256(set, _mm256_set1_epi32(2 << b)));
      }
      __m256 v = _mm256_add_ps(zero, _mm256_mul_ps(mu, _mm256_cvtepi32_ps(d)));
      v = _mm256_add_ps(_mm256_mul_ps(v, scale), bias);
      if (a.prelu) v = _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
      v = _mm256_blendv_ps(v, cmin, _mm256_cmp_ps(v, cmin, _CMP_LT_OQ));
      v = _mm256_blendv_ps(v, cmax, _mm256_cmp_ps(v, cmax, _CMP_GT_OQ));
      _mm256_storeu_ps(y + p * ystride + 8 * g, v);
    }
  }
}
__attribute__((target("avx2"))) void float_word_avx2(const uint64_t* cnt, int np, int B, const FloatWordArgs& a,
                                                     float* y, int64_t ystride) {
  if (B == 4 && np == 4) float_word_avx2_impl<4, 4>(cnt, np, B, a, y, ystride);
  else if (B == 4) float_word_avx2_impl<4, 0>(cnt, np, B, a, y, ystride);
  else float_word_avx2_impl<0, 0>(cnt, np, B, a, y, ystride);
}

// AVX-512: each counter plane is a lane mask (16 channels per register): D = A - sum_b 2^(b+1)
// over the planes whose bit is set, then the epilogue with compares as masks (_CMP_LT_OQ /
// _CMP_GT_OQ: false for NaN, as C's < and >).  kB planes and kNP pixels when > 0 (unrolled: the
// pixels' dependency chains interleave), else B and np.
template <int kB, int kNP>
__attribute__((target("avx512f"))) ONEBIT_DW_INLINE void float_word_avx512_impl(
    const uint64_t* cnt, int np_, int B_, const FloatWordArgs& a, float* y, int64_t ystride) {
  const __m512 zero = _mm512_setzero_ps(), cmin = _mm512_set1_ps(a.cmin), cmax = _mm512_set1_ps(a.cmax);
  const int B = kB > 0 ? kB : B_, np = kNP > 0 ? kNP : np_;
  for (int g = 0; g < 4; ++g) {
    const __m512i A = _mm512_loadu_si512(a.A + 16 * g);
    const __m512 mu = _mm512_loadu_ps(a.mu + 16 * g), scale = _mm512_loadu_ps(a.scale + 16 * g),
                 bias = _mm512_loadu_ps(a.bias + 16 * g);
    const __m512 slope = a.prelu ? _mm512_loadu_ps(a.prelu + 16 * g) : zero;
#pragma GCC unroll 4
    for (int p = 0; p < np; ++p) {
      __m512i d = A;
#pragma GCC unroll 8
      for (int b = 0; b < B; ++b) {
        const __mmask16 k = static_cast<__mmask16>(cnt[p * B + b] >> (16 * g));
        d = _mm512_mask_sub_epi32(d, k, d, _mm512_set1_epi32(2 << b));
      }
      // (maskz: the plain conversion trips GCC 12's uninitialized warning in its header)
      __m512 v = _mm512_add_ps(zero, _mm512_mul_ps(mu, _mm512_maskz_cvtepi32_ps(0xFFFF, d)));
      v = _mm512_add_ps(_mm512_mul_ps(v, scale), bias);
      if (a.prelu) v = _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, slope);
      v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, cmin, _CMP_LT_OQ), cmin);
      v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, cmax, _CMP_GT_OQ), cmax);
      _mm512_storeu_ps(y + p * ystride + 16 * g, v);
    }
  }
}
__attribute__((target("avx512f"))) void float_word_avx512(const uint64_t* cnt, int np, int B, const FloatWordArgs& a,
                                                          float* y, int64_t ystride) {
  if (B == 4 && np == 4) float_word_avx512_impl<4, 4>(cnt, np, B, a, y, ystride);
  else if (B == 4) float_word_avx512_impl<4, 0>(cnt, np, B, a, y, ystride);
  else float_word_avx512_impl<0, 0>(cnt, np, B, a, y, ystride);
}
#endif

// count[c] of all 64 channels of a counter of B <= 8 planes as bytes (eight channels per byte-lane word).
inline void counter_read_bytes(const uint64_t* cnt, int B, uint8_t* count) {
  for (int g = 0; g < 8; ++g) {
    uint64_t lanes = 0;
    for (int b = 0; b < B; ++b) lanes |= kSpread.v[(cnt[b] >> (8 * g)) & 0xFF] << b;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (int i = 0; i < 8; ++i) count[8 * g + i] = static_cast<uint8_t>(lanes >> (8 * i));
#else
    std::memcpy(count + 8 * g, &lanes, 8);
#endif
  }
}

}  // namespace

// One-plane depthwise weights under one transform, tabulated (see the top of this file).
struct DepthwisePlan {
  uint64_t weights_uid = 0;
  int taps = 0, E = 0;                // E = 2 * taps + 1 values of D in [-taps, taps]
  std::vector<int32_t> full;          // (C) active taps of each channel when every tap is valid
  std::vector<float> ftab;            // float output: (C, E) y at D (index D + taps)
  std::vector<uint8_t> btab;          // bits output: (C, E) output bit at D
  std::vector<float> fs;              // float output: (C, taps + 1) y at S mismatches, all taps valid
  std::vector<uint8_t> bs;            // bits output: the same for the output bit
  // float output: mu, scale, bias, prelu (or empty) and full, padded to KW * 64 channels
  std::vector<float> pmu, pscale, pbias, pprelu;
  std::vector<int32_t> pfull;
  // bits output, per count nt of valid taps (index taps: every tap valid, masks or not):
  std::vector<uint8_t> sliced;        // (taps + 1) the bit-sliced bounds below apply
  int B = 0;                          // counter planes
  std::vector<uint64_t> kplanes;      // (taps + 1, KW, B) bit b of each channel's bound K
  std::vector<uint64_t> le;           // (taps + 1, KW) channel bit 1: bit = S <= K; 0: bit = S >= K
  std::vector<uint64_t> valid;        // (taps + 1, KW) channel bit 0: output bit always 0 (and tail bits)
};

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
      const float y = epilogue_value(t, w.mu[c], c, D);
      if (t.bits) p->btab[c * E + D + taps] = (t.thr.empty() ? y : y + t.thr[c]) < 0.0f;
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


// Eight horizontally adjacent interior pixels of a 3x3 one-plane layer (every tap inside the
// input), all channel words: the carry-save counters and the bit-sliced comparison run
// elementwise over the eight pixels (64-bit lanes: the compiler vectorizes them for the target of
// the function this is inlined into, with one vector load per tap where the pixels' words are
// adjacent, kXS == 1), then bits or float outputs.
struct Interior8 {
  const uint64_t* w = nullptr;  // (9, KW) weight words
  const uint64_t* m = nullptr;  // (9, KW) mask words or nullptr
  int64_t off[9] = {};          // tap word offsets from a pixel's first input word
  int64_t KW = 0, C = 0, xs = 0;  // xs: words between adjacent output pixels' inputs
  const DepthwisePlan* pl = nullptr;
  bool sliced = false;          // bits output by the bounds, else the tables
  uint64_t* out_bits = nullptr;  // at the first pixel
  float* out_f = nullptr;
  FloatWordArgs fargs{};        // prelu, cmin, cmax (float output)
};
using Interior8Fn = void (*)(const Interior8& c, const uint64_t* x0, int64_t pix);

template <int kXS, class FloatWords>
ONEBIT_DW_INLINE void interior8_impl(const Interior8& c, const uint64_t* x0, int64_t pix, FloatWords&& float_words) {
  const int64_t KW = c.KW, xs = kXS > 0 ? kXS : c.xs;
  for (int64_t k = 0; k < KW; ++k) {
    uint64_t v[9][8];
    for (int s = 0; s < 9; ++s) {
      const uint64_t ws = c.w[s * KW + k], ms = c.m ? c.m[s * KW + k] : ~0ull;
      const uint64_t* xp = x0 + c.off[s] + k;
      for (int p = 0; p < 8; ++p) v[s][p] = (xp[p * xs] ^ ws) & ms;
    }
    uint64_t cnt[4][8];
    for (int p = 0; p < 8; ++p) {
      const uint64_t in[9] = {v[0][p], v[1][p], v[2][p], v[3][p], v[4][p], v[5][p], v[6][p], v[7][p], v[8][p]};
      uint64_t o[4];
      csa9(in, o);
      cnt[0][p] = o[0], cnt[1][p] = o[1], cnt[2][p] = o[2], cnt[3][p] = o[3];
    }
    const DepthwisePlan* pl = c.pl;
    const int nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
    if (c.out_bits && c.sliced) {
      const int64_t o = 9 * KW + k;
      const uint64_t* kp = pl->kplanes.data() + o * 4;
      const uint64_t le = pl->le[o], valid = pl->valid[o];
      for (int p = 0; p < 8; ++p) {
        uint64_t gt = 0, lt = 0, eq = ~0ull;
        for (int b = 3; b >= 0; --b) {
          const uint64_t d = cnt[b][p] ^ kp[b];
          gt |= eq & d & cnt[b][p];
          lt |= eq & d & kp[b];
          eq &= ~d;
        }
        c.out_bits[(pix + p) * KW + k] = (eq | (lt & le) | (gt & ~le)) & valid;
      }
      continue;
    }
    uint64_t cp[8 * 4];  // [p][b]
    for (int p = 0; p < 8; ++p)
      for (int b = 0; b < 4; ++b) cp[p * 4 + b] = cnt[b][p];
    if (c.out_f) {
      float_words(cp, k, c.out_f + pix * c.C + k * 64, nc);
      continue;
    }
    const uint8_t* bs = pl->bs.data() + k * 64 * 10;
    for (int p = 0; p < 8; ++p) {
      int32_t S[64];
      counter_read(cp + 4 * p, 4, nc, S);
      uint64_t bits = 0;
      for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bs[q * 10 + S[q]]) << q;
      c.out_bits[(pix + p) * KW + k] = bits;
    }
  }
}

// operands of the float epilogue for channel word k
ONEBIT_DW_INLINE FloatWordArgs word_args(const Interior8& c, int64_t k) {
  FloatWordArgs a = c.fargs;
  a.mu = c.pl->pmu.data() + k * 64;
  a.scale = c.pl->pscale.data() + k * 64;
  a.bias = c.pl->pbias.data() + k * 64;
  a.A = c.pl->pfull.data() + k * 64;
  if (a.prelu) a.prelu += k * 64;
  return a;
}

void interior8_portable(const Interior8& c, const uint64_t* x0, int64_t pix) {
  // float output from the tables by mismatch count
  auto float_words = [&](const uint64_t* cp, int64_t k, float* o, int nc) {
    const float* fs = c.pl->fs.data() + k * 64 * 10;
    for (int p = 0; p < 8; ++p) {
      alignas(8) uint8_t S8[64];
      counter_read_bytes(cp + 4 * p, 4, S8);
      float* op = o + p * c.C;
      for (int q = 0; q < nc; ++q) op[q] = fs[q * 10 + S8[q]];
    }
  };
  if (c.xs == 1) interior8_impl<1>(c, x0, pix, float_words);
  else interior8_impl<0>(c, x0, pix, float_words);
}

#ifdef ONEBIT_DW_X86
// Float output through the vector epilogue of the ISA (tail words through a buffer).
#define ONEBIT_DW_FLOAT_WORDS(fn)                                                           \
  [&](const uint64_t* cp, int64_t k, float* o, int nc) {                                   \
    const FloatWordArgs a = word_args(c, k);                                                \
    if (nc == 64) {                                                                         \
      fn(cp, 4, 4, a, o, c.C);                                                              \
      fn(cp + 16, 4, 4, a, o + 4 * c.C, c.C);                                               \
    } else {                                                                                \
      alignas(64) float y[8 * 64];                                                          \
      fn(cp, 4, 4, a, y, 64);                                                               \
      fn(cp + 16, 4, 4, a, y + 4 * 64, 64);                                                 \
      for (int p = 0; p < 8; ++p) std::memcpy(o + p * c.C, y + p * 64, sizeof(float) * nc); \
    }                                                                                       \
  }

__attribute__((target("avx2"))) void interior8_avx2(const Interior8& c, const uint64_t* x0, int64_t pix) {
  auto float_words = ONEBIT_DW_FLOAT_WORDS(float_word_avx2);
  if (c.xs == 1) interior8_impl<1>(c, x0, pix, float_words);
  else interior8_impl<0>(c, x0, pix, float_words);
}
__attribute__((target("avx512f"))) void interior8_avx512(const Interior8& c, const uint64_t* x0, int64_t pix) {
  auto float_words = ONEBIT_DW_FLOAT_WORDS(float_word_avx512);
  if (c.xs == 1) interior8_impl<1>(c, x0, pix, float_words);
  else interior8_impl<0>(c, x0, pix, float_words);
}
#endif

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
  // word offsets of the taps from a pixel's first input word (every tap inside the input)
  std::vector<int64_t> tap_off(static_cast<size_t>(taps));
  for (int i = 0; i < kh; ++i)
    for (int j = 0; j < kw; ++j) tap_off[i * kw + j] = (static_cast<int64_t>(i) * W + j) * KW;

  const std::shared_ptr<const DepthwisePlan> plan = depthwise_plan(w, t, B);
  const DepthwisePlan* pl = plan.get();
  const bool sliced_full = t.bits && pl && pl->sliced[taps];
  const bool fast3x3 = pl && taps == 9;
  const int E = pl ? pl->E : 0;

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

  // float output, every tap valid: the vectorized epilogue on the AVX2 / AVX-512 paths (the
  // tables on the others)
  FloatWordFn fword = nullptr;
#ifdef ONEBIT_DW_X86
  if (pl && out_f) fword = call.isa == kAvx512 ? float_word_avx512 : call.isa == kAvx2 ? float_word_avx2 : nullptr;
#endif
  FloatWordArgs fargs{};
  if (fword) {
    fargs.prelu = pl->pprelu.empty() ? nullptr : pl->pprelu.data();
    fargs.cmin = cmin;
    fargs.cmax = cmax;
  }
  // float outputs of channel word k (nc channels) at np pixels (out pixel stride C) from the
  // counter planes cnt[p * B + b], every tap valid
  // (active taps A: every tap valid, or `active` for all 64 channels)
  auto float_words = [&](const uint64_t* cnt, int np, int B, int64_t k, float* o, int nc, const int32_t* active) {
    FloatWordArgs a = fargs;
    a.mu = pl->pmu.data() + k * 64;
    a.scale = pl->pscale.data() + k * 64;
    a.bias = pl->pbias.data() + k * 64;
    a.A = active ? active : pl->pfull.data() + k * 64;
    if (a.prelu) a.prelu += k * 64;
    if (nc == 64) {
      fword(cnt, np, B, a, o, C);
    } else {
      alignas(64) float y[4 * 64];
      fword(cnt, np, B, a, y, 64);
      for (int p = 0; p < np; ++p) std::memcpy(o + p * C, y + p * 64, sizeof(float) * nc);
    }
  };
  // end (exclusive) of the output columns whose taps are all inside the input columns
  const int64_t ow_inside_end = std::min<int64_t>(OW, W + pw >= kw ? (W + pw - kw) / sw + 1 : 0);

  Interior8 i8;
  Interior8Fn interior8 = interior8_portable;
  if (fast3x3) {
    i8.w = wb;
    i8.m = wm;
    for (int s = 0; s < 9; ++s) i8.off[s] = tap_off[s];
    i8.KW = KW;
    i8.C = C;
    i8.xs = static_cast<int64_t>(sw) * KW;
    i8.pl = pl;
    i8.sliced = sliced_full;
    i8.out_bits = out_bits;
    i8.out_f = out_f;
    i8.fargs = fargs;
#ifdef ONEBIT_DW_X86
    if (call.isa == kAvx512) interior8 = interior8_avx512;
    if (call.isa == kAvx2) interior8 = interior8_avx2;
#endif
  }

  auto run_row = [&](int64_t row) {  // one output row (n, oh): all its pixels and channels
    const int64_t n = row / OH, oh = row % OH;
    std::vector<const uint64_t*> tap_x(static_cast<size_t>(taps));
    std::vector<int> tap_id(static_cast<size_t>(taps));
    uint64_t cnt[32], act[32], v9[9];
    int32_t S[64], A[64];
    alignas(8) uint8_t S8[64];
    alignas(64) int32_t nt_active[64];
    float acc[64];
    const int64_t ih0 = oh * sh - ph;
    const bool rows_inside = ih0 >= 0 && ih0 + kh <= H;
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t iw0 = ow * sw - pw;
      const bool inside = rows_inside && iw0 >= 0 && iw0 + kw <= W;
      // input word pointers of the taps this pixel uses (0 padding: padded taps are dropped)
      int nt = 0;
      if (inside) {
        const uint64_t* p0 = x + ((n * H + ih0) * W + iw0) * KW;
        tap_x[0] = p0;
        if (!fast3x3)
          for (int s = 0; s < taps; ++s) tap_x[s] = p0 + tap_off[s], tap_id[s] = s;
        nt = taps;
      } else {
        for (int i = 0; i < kh; ++i) {
          const int64_t ih = ih0 + i;
          for (int j = 0; j < kw; ++j) {
            const int64_t iw = iw0 + j;
            const bool in = ih >= 0 && ih < H && iw >= 0 && iw < W;
            if (!in && pad_value == 0) continue;
            tap_x[nt] = in ? x + ((n * H + ih) * W + iw) * KW : padw.data();
            tap_id[nt] = i * kw + j;
            ++nt;
          }
        }
      }
      const bool all_taps = nt == taps;  // every tap valid: tap_id[s] == s
      if (fword && !all_taps)
        for (int q = 0; q < 64; ++q) nt_active[q] = nt;
      const int64_t pix = (n * OH + oh) * OW + ow;
      if (fast3x3 && inside && ow + 8 <= ow_inside_end) {
        // eight interior pixels at a time
        interior8(i8, tap_x[0], pix);
        ow += 7;
        continue;
      }
      if (fast3x3 && inside && fword) {
        // interior 3x3 pixels, one plane, float output: up to 4 pixels at a time
        const int np = static_cast<int>(std::min<int64_t>(4, ow_inside_end - ow));
        const uint64_t* p0 = tap_x[0];
        const int64_t xs = static_cast<int64_t>(sw) * KW;
        uint64_t cnt4[4 * 4];
        for (int64_t k = 0; k < KW; ++k) {
          for (int p = 0; p < np; ++p) {
            for (int s = 0; s < 9; ++s) {
              uint64_t v = p0[p * xs + tap_off[s] + k] ^ wb[s * KW + k];
              if (wm) v &= wm[s * KW + k];
              v9[s] = v;
            }
            csa9(v9, cnt4 + 4 * p);
          }
          const int nc = static_cast<int>(std::min<int64_t>(64, C - k * 64));
          float_words(cnt4, np, 4, k, out_f + pix * C + k * 64, nc, nullptr);
        }
        ow += np - 1;
        continue;
      }
      if (fast3x3 && inside) {
        // interior 3x3 pixel, one plane: carry-save counters, bounds or tables
        const uint64_t* p0 = tap_x[0];
        const int64_t T1 = 10;
        for (int64_t k = 0; k < KW; ++k) {
          for (int s = 0; s < 9; ++s) {
            uint64_t v = p0[tap_off[s] + k] ^ wb[s * KW + k];
            if (wm) v &= wm[s * KW + k];
            v9[s] = v;
          }
          csa9(v9, cnt);
          if (sliced_full) {
            const int64_t o = taps * KW + k;
            out_bits[pix * KW + k] = sliced_bits(cnt, 4, pl->kplanes.data() + o * 4, pl->le[o], pl->valid[o]);
            continue;
          }
          const int nc = static_cast<int>(std::min<int64_t>(64, C - k * 64));
          const int64_t c0 = k * 64;
          if (out_f) {
            counter_read_bytes(cnt, 4, S8);
            const float* fs = pl->fs.data() + c0 * T1;
            float* o = out_f + pix * C + c0;
            for (int q = 0; q < nc; ++q) o[q] = fs[q * T1 + S8[q]];
          } else {
            counter_read(cnt, 4, nc, S);
            const uint8_t* bs = pl->bs.data() + c0 * T1;
            uint64_t bits = 0;
            for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bs[q * T1 + S[q]]) << q;
            out_bits[pix * KW + k] = bits;
          }
        }
        continue;
      }
      // bit-sliced bounds for this pixel's count of valid taps
      const int bound_row = all_taps ? taps : (wm ? -1 : nt);
      const bool sliced = out_bits && pl && bound_row >= 0 && pl->sliced[bound_row];
      for (int64_t k = 0; k < KW; ++k) {
        const int nc = static_cast<int>(std::min<int64_t>(64, C - k * 64));
        const int64_t c0 = k * 64;
        if (pl) {
          // one plane: counters, then bit-sliced bounds or the tables
          for (int b = 0; b < B; ++b) cnt[b] = act[b] = 0;
          for (int s = 0; s < nt; ++s) {
            const int64_t o = static_cast<int64_t>(tap_id[s]) * KW + k;
            uint64_t v = tap_x[s][k] ^ wb[o];
            if (wm) {
              v &= wm[o];
              if (!all_taps) counter_add(act, B, wm[o]);
            }
            counter_add(cnt, B, v);
          }
          if (sliced) {
            const int64_t o = bound_row * KW + k;
            out_bits[pix * KW + k] = sliced_bits(cnt, B, pl->kplanes.data() + o * B, pl->le[o], pl->valid[o]);
            continue;
          }
          if (fword && (all_taps || !wm)) {
            float_words(cnt, 1, B, k, out_f + pix * C + c0, nc, all_taps ? nullptr : nt_active);
            continue;
          }
          counter_read(cnt, B, nc, S);
          if (all_taps) {  // tables by mismatch count
            const int64_t T1 = taps + 1;
            if (out_f) {
              const float* fs = pl->fs.data() + c0 * T1;
              float* o = out_f + pix * C + c0;
              for (int q = 0; q < nc; ++q) o[q] = fs[q * T1 + S[q]];
            } else {
              const uint8_t* bs = pl->bs.data() + c0 * T1;
              uint64_t bits = 0;
              for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bs[q * T1 + S[q]]) << q;
              out_bits[pix * KW + k] = bits;
            }
            continue;
          }
          if (wm) {
            counter_read(act, B, nc, A);
          } else {
            for (int q = 0; q < nc; ++q) A[q] = nt;
          }
          if (out_f) {  // tables by dot product
            const float* ft = pl->ftab.data() + c0 * E + taps;
            float* o = out_f + pix * C + c0;
            for (int q = 0; q < nc; ++q) o[q] = ft[q * E + A[q] - 2 * S[q]];
          } else {
            const uint8_t* bt = pl->btab.data() + c0 * E + taps;
            uint64_t bits = 0;
            for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bt[q * E + A[q] - 2 * S[q]]) << q;
            out_bits[pix * KW + k] = bits;
          }
          continue;
        }
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
