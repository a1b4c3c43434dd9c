// Portable block kernel: plain C++ (no intrinsics, no popcnt instruction required).
//
// Population counts use the SWAR method on 64-bit words: per-byte counts (<= 8) are
// accumulated for up to 31 steps before being widened, so the per-word cost is ~10 simple
// integer ops.  The channel loop is written so the compiler can auto-vectorize it for the
// baseline SIMD of the target (SSE2 on x86-64, NEON on AArch64).
#include <algorithm>
#include <chrono>
#include <cstring>

#include "conv_impl.h"
#include "engine.h"

namespace onebit {
namespace {

constexpr uint64_t kM1 = 0x5555555555555555ull;
constexpr uint64_t kM2 = 0x3333333333333333ull;
constexpr uint64_t kM4 = 0x0F0F0F0F0F0F0F0Full;
constexpr uint64_t kM8 = 0x00FF00FF00FF00FFull;
constexpr int kMaxSteps = 31;  // 31 * 8 = 248 <= 255: byte counters cannot overflow

inline uint64_t byte_counts(uint64_t v) {
  v -= (v >> 1) & kM1;
  v = (v & kM2) + ((v >> 2) & kM2);
  return (v + (v >> 4)) & kM4;
}

inline uint64_t sum_bytes(uint64_t v) {
  v = (v & kM8) + ((v >> 8) & kM8);           // four 16-bit lanes, each <= 510
  return (v * 0x0001000100010001ull) >> 48;   // total <= 2040 fits 16 bits
}

template <int P, bool Masked>
void block_p(const BlockArgs& a, int p0) {
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
  int pending = 0;
  for (int i = 0; i < a.kh; ++i) {
    const uint64_t* xr = a.rows[i] + p0 * a.xstride;
    const uint64_t* wr = a.w + static_cast<int64_t>(i) * a.L * kBlock;
    const uint64_t* mr = Masked ? a.m + static_cast<int64_t>(i) * a.L * kBlock : nullptr;
    for (int t0 = 0; t0 < a.L; t0 += kMaxSteps) {
      const int n = std::min(kMaxSteps, a.L - t0);
      if (pending + n > kMaxSteps) {
        flush();
        pending = 0;
      }
      for (int t = t0; t < t0 + n; ++t) {
        uint64_t xv[P];
        for (int p = 0; p < P; ++p) xv[p] = xr[p * a.xstride + t];
        const uint64_t* wt = wr + static_cast<int64_t>(t) * kBlock;
        const uint64_t* mt = Masked ? mr + static_cast<int64_t>(t) * kBlock : nullptr;
        for (int c = 0; c < kBlock; ++c) {
          const uint64_t w = wt[c];
          const uint64_t m = Masked ? mt[c] : ~0ull;
          for (int p = 0; p < P; ++p) bacc[p][c] += byte_counts((xv[p] ^ w) & m);
        }
      }
      pending += n;
    }
  }
  flush();
}

template <bool Masked>
void block(const BlockArgs& a) {
  int p = 0;
  for (; p + 4 <= a.npix; p += 4) block_p<4, Masked>(a, p);
  switch (a.npix - p) {
    case 3: block_p<3, Masked>(a, p); break;
    case 2: block_p<2, Masked>(a, p); break;
    case 1: block_p<1, Masked>(a, p); break;
    default: break;
  }
}

struct PortableBlock {
  static void run(const BlockArgs& a) {
    if (a.m) block<true>(a);
    else block<false>(a);
  }
};

void run_item(const ConvCtx& c, int64_t item) { conv_item<PortableBlock>(c, item); }

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
  v -= (v >> 1) & splat(kM1);
  v = (v & splat(kM2)) + ((v >> 2) & splat(kM2));
  return (v + (v >> 4)) & splat(kM4);
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
  static const Isa isa{"portable", &run_item, &peak, &pack_rows};
  return isa;
}

}  // namespace onebit
