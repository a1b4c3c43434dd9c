// Portable block kernel: plain C++ (no intrinsics, no popcnt instruction required; GCC's
// __builtin_popcountll without -mpopcnt is a libgcc call per word on baseline x86-64).
//
// Population counts use the SWAR method on 64-bit words: three steps are first combined by a
// carry-save adder and counted together (bytes3), and byte counts are accumulated for up to 31
// steps before being widened, so the per-word cost is ~9 simple integer ops.  The channel loop is written so the compiler can auto-vectorize it for the
// baseline SIMD of the target (SSE2 on x86-64, NEON on AArch64).  Long reductions use a
// carry-save (Harley-Seal) variant on GCC/Clang generic vectors that needs ~40% fewer ops/word.
//
// On AArch64, whose baseline includes NEON and its byte population count (CNT), the generic-vector
// kernel counts each step with CNT instead (no carry-save trees needed) for every reduction length,
// and the probe measures the same sequence.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "conv_impl.h"
#include "depthwise_impl.h"
#include "engine.h"

#if defined(__GNUC__) && defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define ONEBIT_NEON_CNT 1
#else
#define ONEBIT_NEON_CNT 0
#endif

namespace onebit {
namespace {

constexpr uint64_t kM1 = 0x5555555555555555ull;
constexpr uint64_t kM2 = 0x3333333333333333ull;
constexpr uint64_t kM4 = 0x0F0F0F0F0F0F0F0Full;
constexpr uint64_t kM8 = 0x00FF00FF00FF00FFull;
constexpr int kMaxSteps = 31;  // 31 * 8 = 248 <= 255: byte counters cannot overflow

// Popcounts of the 16 nibbles of v (each <= 4).
inline uint64_t nibble_counts(uint64_t v) {
  v -= (v >> 1) & kM1;
  return (v & kM2) + ((v >> 2) & kM2);
}

// Nibble counts (each <= 15) to byte counts (each <= 30).
inline uint64_t nibbles_to_bytes(uint64_t v) { return (v & kM4) + ((v >> 4) & kM4); }

// Byte popcounts of v (each <= 8: the two nibble counts of a byte add without a carry out of
// the low nibble, so one mask after the addition suffices).
inline uint64_t byte_counts(uint64_t v) {
  v = nibble_counts(v);
  return (v + (v >> 4)) & kM4;
}

inline uint64_t sum_bytes(uint64_t v) {
  v = (v & kM8) + ((v >> 8) & kM8);           // four 16-bit lanes, each <= 510
  return (v * 0x0001000100010001ull) >> 48;   // total <= 2040 fits 16 bits
}

// Carry-save adder (full adder on the bits of three words): a + b + c = 2 * hi + lo, bit by bit.
template <class V>
inline void csa(V& hi, V& lo, V a, V b, V c) {
  const V u = a ^ b;
  hi = (a & b) | (u & c);
  lo = u ^ c;
}

// Byte counts of the popcounts of 3 words, summed (each <= 24): a carry-save adder turns them
// into ones and twos words, and ones + 2 * twos (<= 12) still fits the nibbles, so one widening
// to bytes serves all three (~9 instead of 12 operations per word).
inline uint64_t bytes3(const uint64_t* v) {
  uint64_t twos, ones;
  csa(twos, ones, v[0], v[1], v[2]);
  return nibbles_to_bytes(nibble_counts(ones) + (nibble_counts(twos) << 1));
}

// SWAR kernel for short reductions: byte counters for P pixels x 32 channels in memory, the
// reduction steps (kh * L, flattened: weights of step s at w + s * kBlock) outermost in groups of
// 3 (bytes3) or single steps, the channel loop innermost (auto-vectorized).
template <int P, bool Masked>
void block_p_swar(const BlockArgs& a, int p0) {
  uint64_t bacc[P][kBlock];
  int32_t* S = a.S + static_cast<int64_t>(p0) * kBlock;
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < kBlock; ++c) {
      bacc[p][c] = 0;
      S[p * kBlock + c] = 0;
    }
  auto flush = [&]() {
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < kBlock; ++c) {
        S[p * kBlock + c] += static_cast<int32_t>(sum_bytes(bacc[p][c]));
        bacc[p][c] = 0;
      }
  };
  // Steps [s, s + G) through reduce (bytes3, or byte_counts of one word).
  auto steps = [&](int s, auto group, auto reduce) {
    constexpr int G = decltype(group)::value;
    uint64_t xv[G][P];
    for (int k = 0; k < G; ++k) {
      const uint64_t* xr = a.rows[(s + k) / a.L] + static_cast<int64_t>(p0) * a.xstride + (s + k) % a.L;
      for (int p = 0; p < P; ++p) xv[k][p] = xr[p * a.xstride];
    }
    const uint64_t* ws = a.w + static_cast<int64_t>(s) * kBlock;
    const uint64_t* ms = Masked ? a.m + static_cast<int64_t>(s) * kBlock : nullptr;
    for (int c = 0; c < kBlock; ++c) {
      uint64_t w[G], m[G];
      for (int k = 0; k < G; ++k) {
        w[k] = ws[k * kBlock + c];
        m[k] = Masked ? ms[k * kBlock + c] : ~0ull;
      }
      for (int p = 0; p < P; ++p) {
        uint64_t v[G];
        for (int k = 0; k < G; ++k) v[k] = (xv[k][p] ^ w[k]) & m[k];
        bacc[p][c] += reduce(v);
      }
    }
  };
  const int T = a.kh * a.L;
  int pending = 0;  // steps in the byte counters (each adds <= 8 per byte; 31 fit)
  for (int s = 0; s < T;) {
    // (Groups of 7 through a deeper carry-save tree measured slower here: register pressure.)
    const int g = T - s >= 3 ? 3 : 1;
    if (pending + g > kMaxSteps) {
      flush();
      pending = 0;
    }
    if (g == 3) steps(s, std::integral_constant<int, 3>{}, [](const uint64_t* v) { return bytes3(v); });
    else steps(s, std::integral_constant<int, 1>{}, [](const uint64_t* v) { return byte_counts(v[0]); });
    s += g;
    pending += g;
  }
  flush();
}

template <bool Masked>
void block_swar(const BlockArgs& a) {
  for_pixel_groups(a.npix, [&](auto P, int p0) { block_p_swar<decltype(P)::value, Masked>(a, p0); });
}


#if defined(__GNUC__)
// GCC/Clang generic vectors (not ISA intrinsics): two 64-bit lanes, lowered to the baseline SIMD of
// the target (SSE2 on x86-64, NEON on AArch64) or to scalar code.  The block kernel keeps its
// per-pixel byte counters in registers and reduces over all kh * kw * words steps of one pair of
// output channels at a time (the weights of a block are contiguous over those steps), with the
// activation words pre-broadcast into vectors once per call.
typedef uint64_t V2 __attribute__((vector_size(16)));
constexpr int kVL = 2;

inline V2 vsplat(uint64_t v) { return V2{v, v}; }

// Byte popcounts of both lanes (each <= 8).
inline V2 vbytes(V2 v) {
#if ONEBIT_NEON_CNT
  return (V2)vcntq_u8((uint8x16_t)v);
#else
  v -= (v >> 1) & vsplat(kM1);
  v = (v & vsplat(kM2)) + ((v >> 2) & vsplat(kM2));
  return (v + (v >> 4)) & vsplat(kM4);
#endif
}

#if ONEBIT_NEON_CNT
// With a one-instruction byte count, summing the counts beats any carry-save tree.
inline V2 vbytes7(V2 v0, V2 v1, V2 v2, V2 v3, V2 v4, V2 v5, V2 v6) {
  return vbytes(v0) + vbytes(v1) + vbytes(v2) + vbytes(v3) + vbytes(v4) + vbytes(v5) + vbytes(v6);
}
inline V2 vbytes15(const V2* v) {
  V2 r = vbytes(v[0]);
  for (int k = 1; k < 15; ++k) r += vbytes(v[k]);
  return r;
}
inline V2 vbytes3(V2 v0, V2 v1, V2 v2) { return vbytes(v0) + vbytes(v1) + vbytes(v2); }
#else

// Popcounts of 7 words per lane as byte counts (<= 56 per byte), a carry-save tree (Harley-Seal;
// W. Muła, N. Kurz, D. Lemire, "Faster population counts using AVX2 instructions", Comput. J. 2018)
// that turns 7 words into ones/twos/fours words, so 3 byte-count sequences replace 7.
inline V2 vbytes7(V2 v0, V2 v1, V2 v2, V2 v3, V2 v4, V2 v5, V2 v6) {
  V2 t1, t2, t3, o1, o2, ones, twos, fours;
  csa(t1, o1, v0, v1, v2);
  csa(t2, o2, o1, v3, v4);
  csa(t3, ones, o2, v5, v6);
  csa(fours, twos, t1, t2, t3);
  return vbytes(ones) + (vbytes(twos) << 1) + (vbytes(fours) << 2);
}

// The same for 15 words (<= 120 per byte): 11 carry-save adders and 4 byte-count sequences.
inline V2 vbytes15(const V2* v) {
  V2 t[7], o, twos, w1, w2, f1, f2, f3, fours, eights, ones;
  csa(t[0], o, v[0], v[1], v[2]);
  for (int k = 1; k < 6; ++k) csa(t[k], o, o, v[2 * k + 1], v[2 * k + 2]);
  csa(t[6], ones, o, v[13], v[14]);
  csa(f1, w1, t[0], t[1], t[2]);
  csa(f2, w2, w1, t[3], t[4]);
  csa(f3, twos, w2, t[5], t[6]);
  csa(eights, fours, f1, f2, f3);
  return vbytes(ones) + (vbytes(twos) << 1) + (vbytes(fours) << 2) + (vbytes(eights) << 3);
}

// 3 words (<= 24 per byte): one carry-save adder, 2 byte-count sequences.
inline V2 vbytes3(V2 v0, V2 v1, V2 v2) {
  V2 twos, ones;
  csa(twos, ones, v0, v1, v2);
  return vbytes(ones) + (vbytes(twos) << 1);
}
#endif  // ONEBIT_NEON_CNT

template <int P, bool Masked>
void block_p(const BlockArgs& a, int p0, V2* xb) {
  const int T = a.kh * a.L;  // reduction steps; weights (and masks) of step s at w + s * kBlock
  for (int i = 0; i < a.kh; ++i) {
    const uint64_t* xr = a.rows[i] + p0 * a.xstride;
    for (int t = 0; t < a.L; ++t)
      for (int p = 0; p < P; ++p) xb[(i * a.L + t) * P + p] = vsplat(xr[p * a.xstride + t]);
  }
  int32_t* S = a.S + static_cast<int64_t>(p0) * kBlock;
  for (int cv = 0; cv < kBlock; cv += kVL) {
    const uint64_t* wc = a.w + cv;
    const uint64_t* mc = Masked ? a.m + cv : nullptr;
    auto step = [&](int s, int p) {
      V2 w, v;
      std::memcpy(&w, wc + static_cast<int64_t>(s) * kBlock, sizeof(V2));
      v = xb[s * P + p] ^ w;
      if (Masked) {
        V2 m;
        std::memcpy(&m, mc + static_cast<int64_t>(s) * kBlock, sizeof(V2));
        v &= m;
      }
      return v;
    };
    // Byte counters (acc) are widened into 16-bit fields (tot, 4 per lane) with vector ops, and
    // the 4 fields of a lane are summed once per segment of <= kSeg steps (a field then holds at
    // most kSeg * 16 < 65536).
    constexpr int kSeg = 4095;
    for (int p = 0; p < P; ++p) S[p * kBlock + cv] = S[p * kBlock + cv + 1] = 0;
    for (int s0 = 0; s0 < T; s0 += kSeg) {
    const int T1 = T - s0 < kSeg ? T : s0 + kSeg;
    V2 acc[P], tot[P];
    for (int p = 0; p < P; ++p) acc[p] = tot[p] = vsplat(0);
    auto flush = [&]() {
      for (int p = 0; p < P; ++p) {
        tot[p] += (acc[p] & vsplat(kM8)) + ((acc[p] >> 8) & vsplat(kM8));
        acc[p] = vsplat(0);
      }
    };
    int pending = 0;  // bound on any byte counter
    int s = s0;
    for (; s + 15 <= T1; s += 15) {
      if (pending + 120 > 255) {
        flush();
        pending = 0;
      }
      for (int p = 0; p < P; ++p) {
        V2 v[15];
        for (int k = 0; k < 15; ++k) v[k] = step(s + k, p);
        acc[p] += vbytes15(v);
      }
      pending += 120;
    }
    for (; s + 7 <= T1; s += 7) {
      if (pending + 56 > 255) {
        flush();
        pending = 0;
      }
      for (int p = 0; p < P; ++p)
        acc[p] += vbytes7(step(s, p), step(s + 1, p), step(s + 2, p), step(s + 3, p), step(s + 4, p),
                          step(s + 5, p), step(s + 6, p));
      pending += 56;
    }
    for (; s + 3 <= T1; s += 3) {
      if (pending + 24 > 255) {
        flush();
        pending = 0;
      }
      for (int p = 0; p < P; ++p) acc[p] += vbytes3(step(s, p), step(s + 1, p), step(s + 2, p));
      pending += 24;
    }
    for (; s < T1; ++s) {
      if (pending + 8 > 255) {
        flush();
        pending = 0;
      }
      for (int p = 0; p < P; ++p) acc[p] += vbytes(step(s, p));
      pending += 8;
    }
    flush();
    for (int p = 0; p < P; ++p)
      for (int l = 0; l < kVL; ++l) {
        const uint64_t f = tot[p][l];
        S[p * kBlock + cv + l] += static_cast<int32_t>((f & 0xffff) + ((f >> 16) & 0xffff) + ((f >> 32) & 0xffff) + (f >> 48));
      }
    }  // segments
  }
}

template <bool Masked>
void block(const BlockArgs& a) {
  // Broadcast activation words: kMaxPix... at most 4 pixels x kh * L steps, per thread.
  V2* xb = thread_scratch<V2>(static_cast<size_t>(a.kh) * a.L * 4);
  for_pixel_groups(a.npix, [&](auto P, int p0) { block_p<decltype(P)::value, Masked>(a, p0, xb); });
}
#endif  // __GNUC__

struct PortableBlock : ScalarBits {
  static void run(const BlockArgs& a) {
#if defined(__GNUC__)
    // The carry-save kernel pays a per-channel-pair set-up that only long reductions amortize.
    // Against the three-step nibble SWAR kernel, measured on Zen 4 (3x3 convs): SWAR is faster
    // at 9 and 18 steps (64, 128 channels) and level at 36, carry-save wins at 72 (512 channels).
    if (ONEBIT_NEON_CNT || a.kh * a.L >= 48) {
      if (a.m) block<true>(a);
      else block<false>(a);
      return;
    }
#endif
    if (a.m) block_swar<true>(a);
    else block_swar<false>(a);
  }
};

void run_item(const ConvCtx& c, int64_t item) { conv_item<PortableBlock>(c, item); }

void depthwise_row_portable(const DepthwiseCtx& c, int64_t row) { depthwise_row<TableEpilogue>(c, row); }

// Sign packing without intrinsics: the compare loop writes 0/1 bytes (auto-vectorized to
// cmpltps + packs on SSE2), then each group of 8 bytes becomes 8 bits with one multiply:
// for bytes b_i in {0, 1} of a little-endian word u, u * 0x0102040810204080 puts b_i at bit
// 56 + i and every other partial product at a distinct lower or overflowing position, so
// there are no carries into the top byte ("SIMD within a register" bit gathering).
template <bool Thr>
inline uint64_t pack_word(const float* x, const float* t, int nb) {
  alignas(16) unsigned char b[64];
  if (nb == 64) {
    for (int i = 0; i < 64; ++i) b[i] = Thr ? (x[i] + t[i]) < 0.0f : x[i] < 0.0f;
  } else {
    for (int i = 0; i < 64; ++i) b[i] = 0;
    for (int i = 0; i < nb; ++i) b[i] = Thr ? (x[i] + t[i]) < 0.0f : x[i] < 0.0f;
  }
  uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  for (int j = 0; j < 8; ++j) {
    uint64_t u;
    std::memcpy(&u, b + 8 * j, 8);
    w |= ((u * 0x0102040810204080ull) >> 56) << (8 * j);
  }
#else
  for (int i = 0; i < 64; ++i) w |= static_cast<uint64_t>(b[i]) << i;
#endif
  return w;
}

void pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out) {
  const int64_t KW = (C + 63) / 64;
  for (int64_t p = 0; p < P; ++p) {
    const float* xs = x + p * C;
    for (int64_t k = 0; k < KW; ++k) {
      const int nb = static_cast<int>(std::min<int64_t>(64, C - 64 * k));
      out[p * KW + k] = thr ? pack_word<true>(xs + 64 * k, thr + 64 * k, nb) : pack_word<false>(xs + 64 * k, nullptr, nb);
    }
  }
}

// The probe runs the same SWAR sequence as the kernel, on the 128-bit vectors the compiler
// auto-vectorizes the kernel's channel loop to (GCC/Clang vector extensions; scalar elsewhere).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
typedef uint64_t Vec __attribute__((vector_size(16)));
constexpr int kLanes = 2;
#if defined(__x86_64__)
#define ONEBIT_OPAQUE(v) asm volatile("" : "+x"(v))
#else
#define ONEBIT_OPAQUE(v) asm volatile("" : "+w"(v))
#endif
inline Vec splat(uint64_t v) { return Vec{v, v}; }
inline uint64_t lane_sum(Vec v) { return sum_bytes(v[0]) + sum_bytes(v[1]); }
#else
typedef uint64_t Vec;
constexpr int kLanes = 1;
#define ONEBIT_OPAQUE(v) do { volatile Vec tmp_ = (v); (v) = tmp_; } while (0)
inline Vec splat(uint64_t v) { return v; }
inline uint64_t lane_sum(Vec v) { return sum_bytes(v); }
#endif

inline Vec vbyte_counts(Vec v) {
#if ONEBIT_NEON_CNT
  return (Vec)vcntq_u8((uint8x16_t)v);
#else
  v -= (v >> 1) & splat(kM1);
  v = (v & splat(kM2)) + ((v >> 2) & splat(kM2));
  return (v + (v >> 4)) & splat(kM4);
#endif
}

double peak(int64_t iterations) {
  Vec x0 = splat(0x0123456789abcdefull), x1 = splat(0xfedcba9876543210ull);
  Vec x2 = splat(0x0f1e2d3c4b5a6978ull), x3 = splat(0x8796a5b4c3d2e1f0ull);
  const Vec w0 = splat(0x5a5a5a5a12345678ull), w1 = splat(0xa5a5a5a587654321ull);
  uint64_t total = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iterations; it += kMaxSteps) {
    Vec a0 = splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int s = 0; s < kMaxSteps; ++s) {
      ONEBIT_OPAQUE(x0); ONEBIT_OPAQUE(x1); ONEBIT_OPAQUE(x2); ONEBIT_OPAQUE(x3);
      a0 += vbyte_counts(x0 ^ w0); a1 += vbyte_counts(x1 ^ w0);
      a2 += vbyte_counts(x2 ^ w0); a3 += vbyte_counts(x3 ^ w0);
      a4 += vbyte_counts(x0 ^ w1); a5 += vbyte_counts(x1 ^ w1);
      a6 += vbyte_counts(x2 ^ w1); a7 += vbyte_counts(x3 ^ w1);
    }
    total += lane_sum(a0) + lane_sum(a1) + lane_sum(a2) + lane_sum(a3) + lane_sum(a4) + lane_sum(a5) +
             lane_sum(a6) + lane_sum(a7);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile uint64_t sink = total;
  (void)sink;
  const int64_t steps = (iterations + kMaxSteps - 1) / kMaxSteps * kMaxSteps;
  return static_cast<double>(steps) * 8.0 * 64.0 * kLanes / sec;
}

}  // namespace

const Isa& isa_portable() {
  static const Isa isa{kKernelNames[kPortable], &run_item, &depthwise_row_portable, &peak, &pack_rows};
  return isa;
}

}  // namespace onebit
