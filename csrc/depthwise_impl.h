// Binary depthwise convolution (groups == in_channels == out_channels): output channel c reads
// only input channel c, so the 64 channels of one activation word are 64 independent dot
// products of kh*kw taps.  Per output pixel and channel word the kernel XORs each tap's input
// word with that tap's weight word (AND the plane mask), and adds the 64 one-bit mismatches to a
// bit-sliced binary counter (plane b holds bit b of every channel's count); the counts are then
// read out eight channels at a time (byte lanes): D_c = active_c - 2 * mismatches_c.  Zero-padded
// taps are skipped (and not counted as active), +-1 padded taps read a constant pad word.  The
// fused epilogue is epilogue.h's, so outputs are bit-identical to the regular convolution's.
//
// One plane (the common case) runs faster forms, prepared once per (weights, transform) and
// cached in the transform (DepthwisePlan, depthwise.cpp): the output of channel c is a function
// of its dot product D alone, so it is tabulated over every attainable D by the epilogue (outputs
// stay bit-identical), and a pixel reads its outputs from the table.  For bits output, where each
// channel's set of mismatch counts S giving bit 1 is a prefix {S <= K} or a suffix {S >= K} of
// [0, active taps] (always so for a monotone transform: BatchNorm + sign, PReLU with slope >= 0,
// clamps), the 64 output bits of a channel word come from a bit-sliced comparison of the counter
// planes with the planes of the per-channel bounds K (one set of bounds per count of valid taps):
// a few dozen word operations, no per-channel read-out.  3x3 kernels count with a carry-save
// adder tree, eight interior pixels at a time (64-bit lanes).
//
// Like conv_impl.h, the row kernel is an always-inline template that each kernel path instantiates
// inside its own target("...") function (DepthwiseRowFn of its Isa): Traits says whether the path
// has a vector float epilogue (AVX2 / AVX-512: Traits::float_word evaluates epilogue.h in
// vectors) or reads the tables (portable, popcnt).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine.h"
#include "epilogue.h"

namespace onebit {

// ---- bit-sliced counters ----------------------------------------------------------------------

// Adds the 64 one-bit values of v to the bit-sliced counter cnt[0..B).
ONEBIT_INLINE void counter_add(uint64_t* cnt, int B, uint64_t v) {
  for (int b = 0; b < B && v; ++b) {
    const uint64_t carry = cnt[b] & v;
    cnt[b] ^= v;
    v = carry;
  }
}

// kSpread.v[x]: byte i = bit i of x (eight channels' bits spread into eight byte lanes)
struct SpreadTable {
  uint64_t v[256];
  SpreadTable() {
    for (int x = 0; x < 256; ++x) {
      v[x] = 0;
      for (int i = 0; i < 8; ++i) v[x] |= static_cast<uint64_t>((x >> i) & 1) << (8 * i);
    }
  }
};
inline const SpreadTable kSpread;

// count[c] for the first nc channels of the counter (count has room for 64).  Up to 8 planes
// (counts <= 255) eight channels at a time in byte lanes; more planes one channel at a time.
ONEBIT_INLINE void counter_read(const uint64_t* cnt, int B, int nc, int32_t* count) {
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

// count[c] of all 64 channels of a counter of B <= 8 planes as bytes (eight channels per byte-lane word).
ONEBIT_INLINE void counter_read_bytes(const uint64_t* cnt, int B, uint8_t* count) {
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

// The 9 one-bit inputs v[0..9) summed into 4 counter planes with carry-save full adders.
ONEBIT_INLINE void csa9(const uint64_t* v, uint64_t* cnt) {
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

// The 64 output bits of a channel word from its counter planes cnt[0..B) and the
// planes of the bounds: bit = (S <= K where le, S >= K elsewhere) and valid.  Comparison from the
// top plane down: gt / lt collect the channels whose first differing bit says S > K / S < K.
ONEBIT_INLINE uint64_t sliced_bits(const uint64_t* cnt, int B, const uint64_t* kp, uint64_t le, uint64_t valid) {
  uint64_t gt = 0, lt = 0, eq = ~0ull;
  for (int b = B - 1; b >= 0; --b) {
    const uint64_t d = cnt[b] ^ kp[b];
    gt |= eq & d & cnt[b];
    lt |= eq & d & kp[b];
    eq &= ~d;
  }
  return (eq | (lt & le) | (gt & ~le)) & valid;
}

// ---- one call's layer, geometry and prepared forms ----------------------------------------------

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

// Per-channel operands of the vector float epilogue of one plane and one channel word (64 channels).
struct FloatWordArgs {
  const float* mu;
  const float* scale;
  const float* bias;
  const float* prelu;  // or nullptr
  const int32_t* A;    // active taps (every tap valid)
  float cmin, cmax;
};

// Everything one depthwise call's rows read (depthwise.cpp fills it once per call).
struct DepthwiseCtx {
  int64_t C = 0, KW = 0, N = 0, H = 0, W = 0, OH = 0, OW = 0;
  int kh = 1, kw = 1, taps = 1, sh = 1, sw = 1, ph = 0, pw = 0, pad_value = 0;
  int J = 1, B = 1;                    // weight planes; counter planes (counts reach `taps`)
  const uint64_t* x = nullptr;         // (N, H, W, KW)
  const uint64_t* pad_word = nullptr;  // (KW) what a +-1 padded tap reads
  const int64_t* tap_off = nullptr;    // (taps) word offsets of the taps from a pixel's first input word
  const uint64_t* w = nullptr;         // (J, taps, KW)
  const uint64_t* m = nullptr;         // same, or nullptr
  const float* mu = nullptr;           // (J, C)
  const float* scale = nullptr;        // (C), and the rest of the transform as in a Transform
  const float* bias = nullptr;
  const float* prelu = nullptr;        // or nullptr
  const float* thr = nullptr;          // or nullptr
  float cmin = 0, cmax = 0;
  const DepthwisePlan* plan = nullptr;  // one plane: the tables and bounds, or nullptr
  bool sliced_full = false;            // bits output by the bounds where every tap is valid
  bool fast3x3 = false;                // one plane, 3x3: carry-save counters
  float* out_f = nullptr;              // (N, OH, OW, C), or
  uint64_t* out_bits = nullptr;        // (N, OH, OW, KW)
  int64_t ow_inside_end = 0;           // end of the output columns whose taps are all inside the input columns
  int64_t xs = 0;                      // words between adjacent output pixels' inputs (sw * KW)
  FloatWordArgs fargs{};               // prelu (padded, or nullptr), cmin, cmax of the vector epilogue
};

// The vector epilogue's operands for channel word k, active taps `active` (64 channels) or, when
// null, the plan's (every tap valid).
ONEBIT_INLINE FloatWordArgs word_args(const DepthwiseCtx& c, int64_t k, const int32_t* active) {
  FloatWordArgs a = c.fargs;
  a.mu = c.plan->pmu.data() + k * 64;
  a.scale = c.plan->pscale.data() + k * 64;
  a.bias = c.plan->pbias.data() + k * 64;
  a.A = active ? active : c.plan->pfull.data() + k * 64;
  if (a.prelu) a.prelu += k * 64;
  return a;
}

// Float outputs of channel word k (nc channels) at np <= 8 pixels (output pixel stride C) from the
// counter planes cnt[p * B + b], by the path's vector epilogue (tail words through a buffer).
template <class Traits>
ONEBIT_INLINE void vector_float_words(const DepthwiseCtx& c, const uint64_t* cnt, int np, int B, int64_t k, float* o,
                                      int nc, const int32_t* active) {
  const FloatWordArgs a = word_args(c, k, active);
  if (nc == 64) {
    Traits::float_word(cnt, np, B, a, o, c.C);
    return;
  }
  alignas(64) float y[4 * 64];
  Traits::float_word(cnt, np, B, a, y, 64);
  for (int p = 0; p < np; ++p) std::memcpy(o + p * c.C, y + p * 64, sizeof(float) * nc);
}

// ---- the row kernel's parts -------------------------------------------------------------------

// Outputs of one channel word from the one-plane tables, by mismatch count S (every tap valid).
ONEBIT_INLINE void table_word_by_count(const DepthwiseCtx& c, int64_t pix, int64_t k, int nc, const int32_t* S) {
  const int64_t T1 = c.taps + 1, c0 = k * 64;
  if (c.out_f) {
    const float* fs = c.plan->fs.data() + c0 * T1;
    float* o = c.out_f + pix * c.C + c0;
    for (int q = 0; q < nc; ++q) o[q] = fs[q * T1 + S[q]];
    return;
  }
  const uint8_t* bs = c.plan->bs.data() + c0 * T1;
  uint64_t bits = 0;
  for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bs[q * T1 + S[q]]) << q;
  c.out_bits[pix * c.KW + k] = bits;
}

// The same by dot product D = A - 2 S (some taps padded).
ONEBIT_INLINE void table_word_by_dot(const DepthwiseCtx& c, int64_t pix, int64_t k, int nc, const int32_t* S,
                                     const int32_t* A) {
  const int64_t E = c.plan->E, c0 = k * 64;
  if (c.out_f) {
    const float* ft = c.plan->ftab.data() + c0 * E + c.taps;
    float* o = c.out_f + pix * c.C + c0;
    for (int q = 0; q < nc; ++q) o[q] = ft[q * E + A[q] - 2 * S[q]];
    return;
  }
  const uint8_t* bt = c.plan->btab.data() + c0 * E + c.taps;
  uint64_t bits = 0;
  for (int q = 0; q < nc; ++q) bits |= static_cast<uint64_t>(bt[q * E + A[q] - 2 * S[q]]) << q;
  c.out_bits[pix * c.KW + k] = bits;
}

// Eight horizontally adjacent interior pixels of a 3x3 one-plane layer (every tap inside the
// input), all channel words: the carry-save counters and the bit-sliced comparison run
// elementwise over the eight pixels (64-bit lanes: the compiler vectorizes them for the target of
// the function this is inlined into, with one vector load per tap where the pixels' words are
// adjacent, kXS == 1), then bits or float outputs.  (Hand-unrolled inner loops.)
template <class Traits, int kXS>
ONEBIT_INLINE void interior8(const DepthwiseCtx& c, const uint64_t* x0, int64_t pix) {
  const int64_t KW = c.KW, xs = kXS > 0 ? kXS : c.xs;
  const DepthwisePlan* pl = c.plan;
  for (int64_t k = 0; k < KW; ++k) {
    uint64_t v[9][8];
    for (int s = 0; s < 9; ++s) {
      const uint64_t ws = c.w[s * KW + k], ms = c.m ? c.m[s * KW + k] : ~0ull;
      const uint64_t* xp = x0 + c.tap_off[s] + k;
      for (int p = 0; p < 8; ++p) v[s][p] = (xp[p * xs] ^ ws) & ms;
    }
    uint64_t cnt[4][8];
    for (int p = 0; p < 8; ++p) {
      const uint64_t in[9] = {v[0][p], v[1][p], v[2][p], v[3][p], v[4][p], v[5][p], v[6][p], v[7][p], v[8][p]};
      uint64_t o[4];
      csa9(in, o);
      cnt[0][p] = o[0], cnt[1][p] = o[1], cnt[2][p] = o[2], cnt[3][p] = o[3];
    }
    const int nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
    if (c.out_bits && c.sliced_full) {  // the bit-sliced comparison, elementwise over the pixels
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
    if (c.out_f && Traits::kVectorEpilogue) {
      float* o = c.out_f + pix * c.C + k * 64;
      vector_float_words<Traits>(c, cp, 4, 4, k, o, nc, nullptr);
      vector_float_words<Traits>(c, cp + 16, 4, 4, k, o + 4 * c.C, nc, nullptr);
    } else if (c.out_f) {  // the tables by mismatch count
      const float* fs = pl->fs.data() + k * 64 * 10;
      for (int p = 0; p < 8; ++p) {
        alignas(8) uint8_t S8[64];
        counter_read_bytes(cp + 4 * p, 4, S8);
        float* op = c.out_f + (pix + p) * c.C + k * 64;
        for (int q = 0; q < nc; ++q) op[q] = fs[q * 10 + S8[q]];
      }
    } else {
      for (int p = 0; p < 8; ++p) {
        int32_t S[64];
        counter_read(cp + 4 * p, 4, nc, S);
        table_word_by_count(c, pix + p, k, nc, S);
      }
    }
  }
}

// Interior 3x3 pixels from p0, one plane, float output on a vector path: up to 4 pixels at a
// time; returns how many it did.
template <class Traits>
ONEBIT_INLINE int interior4_floats(const DepthwiseCtx& c, const uint64_t* p0, int64_t pix, int64_t ow) {
  const int np = static_cast<int>(std::min<int64_t>(4, c.ow_inside_end - ow));
  uint64_t cnt4[4 * 4], v9[9];
  for (int64_t k = 0; k < c.KW; ++k) {
    for (int p = 0; p < np; ++p) {
      for (int s = 0; s < 9; ++s) {
        uint64_t v = p0[p * c.xs + c.tap_off[s] + k] ^ c.w[s * c.KW + k];
        if (c.m) v &= c.m[s * c.KW + k];
        v9[s] = v;
      }
      csa9(v9, cnt4 + 4 * p);
    }
    const int nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
    vector_float_words<Traits>(c, cnt4, np, 4, k, c.out_f + pix * c.C + k * 64, nc, nullptr);
  }
  return np;
}

// One interior 3x3 pixel, one plane: carry-save counters, then bounds or tables.
ONEBIT_INLINE void interior1(const DepthwiseCtx& c, const uint64_t* p0, int64_t pix) {
  uint64_t cnt[4], v9[9];
  for (int64_t k = 0; k < c.KW; ++k) {
    for (int s = 0; s < 9; ++s) {
      uint64_t v = p0[c.tap_off[s] + k] ^ c.w[s * c.KW + k];
      if (c.m) v &= c.m[s * c.KW + k];
      v9[s] = v;
    }
    csa9(v9, cnt);
    if (c.sliced_full) {
      const int64_t o = c.taps * c.KW + k;
      c.out_bits[pix * c.KW + k] = sliced_bits(cnt, 4, c.plan->kplanes.data() + o * 4, c.plan->le[o], c.plan->valid[o]);
      continue;
    }
    const int nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
    if (c.out_f) {
      alignas(8) uint8_t S8[64];
      counter_read_bytes(cnt, 4, S8);
      const float* fs = c.plan->fs.data() + k * 64 * 10;
      float* o = c.out_f + pix * c.C + k * 64;
      for (int q = 0; q < nc; ++q) o[q] = fs[q * 10 + S8[q]];
    } else {
      int32_t S[64];
      counter_read(cnt, 4, nc, S);
      table_word_by_count(c, pix, k, nc, S);
    }
  }
}

// The taps one output pixel uses: input word pointers tap_x[s] and tap indices tap_id[s], s < nt
// (0 padding: padded taps are dropped; +-1 padding: they read the pad word).  Returns nt.
ONEBIT_INLINE int gather_taps(const DepthwiseCtx& c, int64_t n, int64_t ih0, int64_t iw0, bool inside,
                              const uint64_t** tap_x, int* tap_id) {
  if (inside) {
    const uint64_t* p0 = c.x + ((n * c.H + ih0) * c.W + iw0) * c.KW;
    for (int s = 0; s < c.taps; ++s) tap_x[s] = p0 + c.tap_off[s], tap_id[s] = s;
    return c.taps;
  }
  int nt = 0;
  for (int i = 0; i < c.kh; ++i) {
    const int64_t ih = ih0 + i;
    for (int j = 0; j < c.kw; ++j) {
      const int64_t iw = iw0 + j;
      const bool in = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
      if (!in && c.pad_value == 0) continue;
      tap_x[nt] = in ? c.x + ((n * c.H + ih) * c.W + iw) * c.KW : c.pad_word;
      tap_id[nt] = i * c.kw + j;
      ++nt;
    }
  }
  return nt;
}

// The taps of one pixel (see gather_taps) and what the one-plane forms need to know about them.
struct PixelTaps {
  const uint64_t** x;
  const int* id;
  int nt;
  bool all;        // every tap valid: id[s] == s
  int bound_row;   // the row of bit-sliced bounds for this count of valid taps, or -1
  bool sliced;     // bits output by those bounds
  const int32_t* active;  // (64) nt per channel for the vector epilogue, where not every tap is valid
};

// One channel word k of a one-plane pixel: counters, then bit-sliced bounds, the vector epilogue
// or the tables.
template <class Traits>
ONEBIT_INLINE void plan_word(const DepthwiseCtx& c, const PixelTaps& px, int64_t pix, int64_t k) {
  const int B = c.B, nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
  uint64_t cnt[32], act[32];
  for (int b = 0; b < B; ++b) cnt[b] = act[b] = 0;
  for (int s = 0; s < px.nt; ++s) {
    const int64_t o = static_cast<int64_t>(px.id[s]) * c.KW + k;
    uint64_t v = px.x[s][k] ^ c.w[o];
    if (c.m) {
      v &= c.m[o];
      if (!px.all) counter_add(act, B, c.m[o]);
    }
    counter_add(cnt, B, v);
  }
  if (px.sliced) {
    const int64_t o = px.bound_row * c.KW + k;
    c.out_bits[pix * c.KW + k] = sliced_bits(cnt, B, c.plan->kplanes.data() + o * B, c.plan->le[o], c.plan->valid[o]);
    return;
  }
  if (Traits::kVectorEpilogue && c.out_f && (px.all || !c.m)) {
    vector_float_words<Traits>(c, cnt, 1, B, k, c.out_f + pix * c.C + k * 64, nc, px.all ? nullptr : px.active);
    return;
  }
  int32_t S[64], A[64];
  counter_read(cnt, B, nc, S);
  if (px.all) {
    table_word_by_count(c, pix, k, nc, S);
    return;
  }
  if (c.m) counter_read(act, B, nc, A);
  else
    for (int q = 0; q < nc; ++q) A[q] = px.nt;
  table_word_by_dot(c, pix, k, nc, S, A);
}

// One channel word k of a pixel without a plan (several planes, or a table too large): the
// planes' dot products by counters, then the epilogue (epilogue.h) per channel.
ONEBIT_INLINE void planes_word(const DepthwiseCtx& c, const PixelTaps& px, int64_t pix, int64_t k) {
  const int B = c.B, nc = static_cast<int>(std::min<int64_t>(64, c.C - k * 64));
  const int64_t c0 = k * 64;
  uint64_t cnt[32], act[32];
  int32_t S[64], A[64];
  float acc[64];
  for (int q = 0; q < nc; ++q) acc[q] = 0.0f;
  for (int j = 0; j < c.J; ++j) {
    const uint64_t* wj = c.w + static_cast<int64_t>(j) * c.taps * c.KW;
    const uint64_t* mj = c.m ? c.m + static_cast<int64_t>(j) * c.taps * c.KW : nullptr;
    for (int b = 0; b < B; ++b) cnt[b] = act[b] = 0;
    for (int s = 0; s < px.nt; ++s) {
      const int64_t o = static_cast<int64_t>(px.id[s]) * c.KW + k;
      uint64_t v = px.x[s][k] ^ wj[o];
      if (mj) {
        v &= mj[o];
        counter_add(act, B, mj[o]);
      }
      counter_add(cnt, B, v);
    }
    counter_read(cnt, B, nc, S);
    if (mj) counter_read(act, B, nc, A);
    else
      for (int q = 0; q < nc; ++q) A[q] = px.nt;
    const float* mu = c.mu + j * c.C + c0;
    for (int q = 0; q < nc; ++q) acc[q] = epilogue::plane_term(acc[q], mu[q], static_cast<float>(A[q] - 2 * S[q]));
  }
  uint64_t bits = 0;
  for (int q = 0; q < nc; ++q) {
    const int64_t ch = c0 + q;
    const float y = c.prelu ? epilogue::output<false, true>(acc[q], c.scale[ch], c.bias[ch], 0.0f, c.prelu[ch], c.cmin, c.cmax)
                            : epilogue::output<false, false>(acc[q], c.scale[ch], c.bias[ch], 0.0f, 0.0f, c.cmin, c.cmax);
    if (c.out_f) c.out_f[pix * c.C + ch] = y;
    else bits |= static_cast<uint64_t>(epilogue::sign_operand(y, c.thr ? c.thr[ch] : 0.0f) < 0.0f) << q;
  }
  if (c.out_bits) c.out_bits[pix * c.KW + k] = bits;
}

// One output pixel outside the fast 3x3 interior forms: its taps, then every channel word.
template <class Traits>
ONEBIT_INLINE void general_pixel(const DepthwiseCtx& c, int64_t n, int64_t ih0, int64_t iw0, bool inside, int64_t pix,
                                 const uint64_t** tap_x, int* tap_id) {
  PixelTaps px{tap_x, tap_id, 0, false, -1, false, nullptr};
  px.nt = gather_taps(c, n, ih0, iw0, inside, tap_x, tap_id);
  px.all = px.nt == c.taps;
  alignas(64) int32_t nt_active[64];
  if (Traits::kVectorEpilogue && c.plan && c.out_f && !px.all) {
    for (int q = 0; q < 64; ++q) nt_active[q] = px.nt;
    px.active = nt_active;
  }
  px.bound_row = px.all ? c.taps : (c.m ? -1 : px.nt);
  px.sliced = c.out_bits && c.plan && px.bound_row >= 0 && c.plan->sliced[px.bound_row];
  for (int64_t k = 0; k < c.KW; ++k) {
    if (c.plan) plan_word<Traits>(c, px, pix, k);
    else planes_word(c, px, pix, k);
  }
}

// One output row (n, oh): all its pixels and channels.
template <class Traits>
ONEBIT_INLINE void depthwise_row(const DepthwiseCtx& c, int64_t row) {
  const int64_t n = row / c.OH, oh = row % c.OH;
  std::vector<const uint64_t*> tap_x(static_cast<size_t>(c.taps));
  std::vector<int> tap_id(static_cast<size_t>(c.taps));
  const int64_t ih0 = oh * c.sh - c.ph;
  const bool rows_inside = ih0 >= 0 && ih0 + c.kh <= c.H;
  for (int64_t ow = 0; ow < c.OW; ++ow) {
    const int64_t iw0 = ow * c.sw - c.pw;
    const int64_t pix = (n * c.OH + oh) * c.OW + ow;
    const bool inside = rows_inside && iw0 >= 0 && iw0 + c.kw <= c.W;
    if (c.fast3x3 && inside) {
      const uint64_t* p0 = c.x + ((n * c.H + ih0) * c.W + iw0) * c.KW;
      if (ow + 8 <= c.ow_inside_end) {  // eight interior pixels at a time
        if (c.xs == 1) interior8<Traits, 1>(c, p0, pix);
        else interior8<Traits, 0>(c, p0, pix);
        ow += 7;
      } else if (Traits::kVectorEpilogue && c.out_f) {
        ow += interior4_floats<Traits>(c, p0, pix, ow) - 1;
      } else {
        interior1(c, p0, pix);
      }
      continue;
    }
    general_pixel<Traits>(c, n, ih0, iw0, inside, pix, tap_x.data(), tap_id.data());
  }
}

// A kernel path without a vector float epilogue: float outputs come from the tables.
struct TableEpilogue {
  static constexpr bool kVectorEpilogue = false;
  static void float_word(const uint64_t*, int, int, const FloatWordArgs&, float*, int64_t) {}
};

}  // namespace onebit
