// Scalar POPCNT block kernel: plain C++ (no vector intrinsics) compiled with the hardware
// population count, one instruction per 64-bit word.  POPCNT is part of x86-64-v2 and every
// x86-64 CPU since 2008 (Intel Nehalem, AMD K10) has it, including the many that lack AVX2
// (Intel before Haswell, most Atom/Celeron/Pentium parts, AMD before Excavator): this path is
// what they run.  The portable kernel (isa_portable.cpp) stays the baseline for CPUs without it.
//
// Per word: xor, popcnt, add (three scalar ALU operations, no carry-save bookkeeping); the four
// integer ALUs of a current core then retire ~1.3 words per cycle, 2-4x the SWAR kernel.
#include <chrono>
#include <stdexcept>

#include "conv_impl.h"
#include "depthwise_impl.h"
#include "engine.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <emmintrin.h>  // SSE2: part of the x86-64 baseline, for the epilogue's bit extraction

#define ONEBIT_POPCNT __attribute__((target("popcnt")))

namespace onebit {
namespace {

ONEBIT_POPCNT inline uint64_t popcnt64(uint64_t v) {
  return static_cast<uint64_t>(__builtin_popcountll(v));
}

// P output pixels x 32 output channels: the activation words of the P pixels are gathered once
// into xb (step-major, pixel-minor), then each channel reduces over all kh * L steps with its P
// sums in registers.
template <int P, bool Masked>
ONEBIT_POPCNT void block_p(const BlockArgs& a, int p0, uint64_t* xb) {
  const int T = a.kh * a.L;
  for (int i = 0; i < a.kh; ++i) {
    const uint64_t* xr = a.rows[i] + p0 * a.xstride;
    uint64_t* dst = xb + static_cast<int64_t>(i) * a.L * P;
    for (int t = 0; t < a.L; ++t)
      for (int p = 0; p < P; ++p) dst[t * P + p] = xr[p * a.xstride + t];
  }
  int32_t* S = a.S + static_cast<int64_t>(p0) * kBlock;
  for (int c = 0; c < kBlock; ++c) {
    const uint64_t* wc = a.w + c;
    const uint64_t* mc = Masked ? a.m + c : nullptr;
    uint64_t acc[P];
    for (int p = 0; p < P; ++p) acc[p] = 0;
    const uint64_t* xs = xb;
    for (int s = 0; s < T; ++s, xs += P) {
      const uint64_t w = wc[static_cast<int64_t>(s) * kBlock];
      const uint64_t m = Masked ? mc[static_cast<int64_t>(s) * kBlock] : ~0ull;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p] += popcnt64((xs[p] ^ w) & m);
    }
    for (int p = 0; p < P; ++p) S[p * kBlock + c] = static_cast<int32_t>(acc[p]);
  }
}

template <bool Masked>
ONEBIT_POPCNT void block(const BlockArgs& a) {
  uint64_t* xb = thread_scratch<uint64_t>(static_cast<size_t>(a.kh) * a.L * 4);
  for_pixel_groups(a.npix, [&](auto P, int p0) { block_p<decltype(P)::value, Masked>(a, p0, xb); });
}

struct PopcntBlock {
  // The 32 bits of a channel block by 4-lane SSE2 compares + movemask (the scalar loops of
  // ScalarBits cost ~15% of a short reduction such as 3x3 on 64 channels).
  static ONEBIT_POPCNT inline uint32_t negative_bits(const float* y) {
    static_assert(kBlock == 32, "eight 4-lane compares per block");
    const __m128 zero = _mm_setzero_ps();
    uint32_t bits = 0;
    for (int k = 0; k < 8; ++k)  // cmplt is false for NaN, like the scalar `<`
      bits |= static_cast<uint32_t>(_mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(y + 4 * k), zero))) << (4 * k);
    return bits;
  }
  static ONEBIT_POPCNT inline uint32_t in_interval_bits(const int32_t* d, const int32_t* lo, const int32_t* hi) {
    uint32_t bits = 0;
    for (int k = 0; k < 8; ++k) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + 4 * k));
      const __m128i below = _mm_cmpgt_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + 4 * k)), v);
      const __m128i above = _mm_cmpgt_epi32(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + 4 * k)));
      const __m128i out = _mm_or_si128(below, above);
      bits |= static_cast<uint32_t>(~_mm_movemask_ps(_mm_castsi128_ps(out)) & 0xf) << (4 * k);
    }
    return bits;
  }
  static ONEBIT_POPCNT void run(const BlockArgs& a) {
    if (a.m) block<true>(a);
    else block<false>(a);
  }
};

ONEBIT_POPCNT void run_item(const ConvCtx& c, int64_t item) { conv_item<PopcntBlock>(c, item); }

// Depthwise: the counters need no population count; float outputs come from the tables.
ONEBIT_POPCNT void depthwise_row_popcnt(const DepthwiseCtx& c, int64_t row) { depthwise_row<TableEpilogue>(c, row); }

// Register-only xor + popcnt + add: 8 independent accumulators so that latency never limits.
ONEBIT_POPCNT double peak(int64_t iterations) {
  uint64_t x0 = 0x0123456789abcdefull, x1 = 0xfedcba9876543210ull, x2 = 0x0f1e2d3c4b5a6978ull,
           x3 = 0x8796a5b4c3d2e1f0ull;
  const uint64_t w0 = 0x5a5a5a5a12345678ull, w1 = 0xa5a5a5a587654321ull;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile("" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3));
    a0 += popcnt64(x0 ^ w0); a1 += popcnt64(x1 ^ w0); a2 += popcnt64(x2 ^ w0); a3 += popcnt64(x3 ^ w0);
    a4 += popcnt64(x0 ^ w1); a5 += popcnt64(x1 ^ w1); a6 += popcnt64(x2 ^ w1); a7 += popcnt64(x3 ^ w1);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile uint64_t sink = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  (void)sink;
  return static_cast<double>(iterations) * 8.0 * 64.0 / sec;
}

}  // namespace

const Isa& isa_popcnt() {
  // Sign packing needs no population count: the portable packer serves this path too.
  static const Isa isa{kKernelNames[kPopcnt], &run_item, &depthwise_row_popcnt, &peak, isa_portable().pack_rows};
  return isa;
}

}  // namespace onebit

#else  // not x86-64 with a GNU-compatible compiler

namespace onebit {
const Isa& isa_popcnt() { throw std::invalid_argument("the popcnt kernel is only built for x86-64"); }
}  // namespace onebit

#endif
