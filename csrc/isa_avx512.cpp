// AVX-512 block kernel: vpopcntq (AVX512-VPOPCNTDQ) on 512-bit vectors; the optional plane
// mask is applied in the same instruction as the XOR with vpternlogq.  P output pixels x
// 32 output channels (4 zmm) are accumulated in registers, 64-bit lanes, no reductions.
#include <chrono>
#include <stdexcept>

#include "conv_impl.h"
#include "depthwise_impl.h"
#include "engine.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// GCC 12's _mm512_cvtepi64_epi32 passes _mm256_undefined_si256() as its pass-through operand and
// then warns that this value is used uninitialized (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define ONEBIT_AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))

namespace onebit {
namespace {

template <int P, bool Masked>
ONEBIT_AVX512 void block_p(const BlockArgs& a, int p0) {
  __m512i acc[P][4];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b) acc[p][b] = _mm512_setzero_si512();
  for (int i = 0; i < a.kh; ++i) {
    const uint64_t* xr = a.rows[i] + p0 * a.xstride;
    const uint64_t* wr = a.w + static_cast<int64_t>(i) * a.L * kBlock;
    const uint64_t* mr = Masked ? a.m + static_cast<int64_t>(i) * a.L * kBlock : nullptr;
    for (int t = 0; t < a.L; ++t) {
      const uint64_t* wt = wr + static_cast<int64_t>(t) * kBlock;
      __m512i w[4], m[4];
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b) {
        w[b] = _mm512_loadu_si512(wt + 8 * b);
        if (Masked) m[b] = _mm512_loadu_si512(mr + static_cast<int64_t>(t) * kBlock + 8 * b);
      }
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const __m512i xb = _mm512_set1_epi64(static_cast<long long>(xr[p * a.xstride + t]));
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
          // 0x28 = (A ^ B) & C for (A, B, C) = (x, w, m)
          const __m512i v = Masked ? _mm512_ternarylogic_epi64(xb, w[b], m[b], 0x28)
                                   : _mm512_xor_si512(xb, w[b]);
          acc[p][b] = _mm512_add_epi64(acc[p][b], _mm512_popcnt_epi64(v));
        }
      }
    }
  }
  int32_t* S = a.S + static_cast<int64_t>(p0) * kBlock;
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int b = 0; b < 4; ++b)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(S + p * kBlock + 8 * b), _mm512_cvtepi64_epi32(acc[p][b]));
}

template <bool Masked>
ONEBIT_AVX512 void block(const BlockArgs& a) {
  for_pixel_groups(a.npix, [&](auto P, int p0) { block_p<decltype(P)::value, Masked>(a, p0); });
}

struct Avx512Block {
  ONEBIT_AVX512 static inline void run(const BlockArgs& a) {
    if (a.m) block<true>(a);
    else block<false>(a);
  }
  ONEBIT_AVX512 static inline uint32_t negative_bits(const float* y) {
    static_assert(kBlock == 32, "two 16-lane compares per block");
    const __m512 zero = _mm512_setzero_ps();
    const uint32_t lo = _mm512_cmp_ps_mask(_mm512_loadu_ps(y), zero, _CMP_LT_OQ);
    const uint32_t hi = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + 16), zero, _CMP_LT_OQ);
    return lo | (hi << 16);
  }
  ONEBIT_AVX512 static inline uint32_t in_interval_bits(const int32_t* d, const int32_t* lo, const int32_t* hi) {
    uint32_t bits = 0;
    for (int k = 0; k < 2; ++k) {
      const __m512i v = _mm512_loadu_si512(d + 16 * k);
      const __mmask16 ge = _mm512_cmp_epi32_mask(v, _mm512_loadu_si512(lo + 16 * k), _MM_CMPINT_NLT);
      bits |= static_cast<uint32_t>(_mm512_mask_cmp_epi32_mask(ge, v, _mm512_loadu_si512(hi + 16 * k), _MM_CMPINT_LE))
              << (16 * k);
    }
    return bits;
  }
};

ONEBIT_AVX512 void run_item(const ConvCtx& c, int64_t item) { conv_item<Avx512Block>(c, item); }

// Depthwise float output (see isa_avx2.cpp): each counter plane is a lane mask (16 channels per
// register): D = A - sum_b 2^(b+1) over the planes whose bit is set, then the epilogue
// (epilogue.h) in vectors.  kB planes and kNP pixels when > 0 (unrolled: the pixels' dependency
// chains interleave), else B and np.  Hand-vectorised inner loop.
template <int kB, int kNP>
ONEBIT_AVX512 ONEBIT_INLINE void float_word_impl(const uint64_t* cnt, int np_, int B_, const FloatWordArgs& a,
                                                 float* y, int64_t ystride) {
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
      const __m512 acc = epilogue::plane_term(zero, mu, _mm512_maskz_cvtepi32_ps(0xFFFF, d));
      const __m512 v = a.prelu ? epilogue::output<false, true>(acc, scale, bias, zero, slope, cmin, cmax)
                               : epilogue::output<false, false>(acc, scale, bias, zero, slope, cmin, cmax);
      _mm512_storeu_ps(y + p * ystride + 16 * g, v);
    }
  }
}

struct Avx512Depthwise {
  static constexpr bool kVectorEpilogue = true;
  ONEBIT_AVX512 static void float_word(const uint64_t* cnt, int np, int B, const FloatWordArgs& a, float* y,
                                       int64_t ystride) {
    if (B == 4 && np == 4) float_word_impl<4, 4>(cnt, np, B, a, y, ystride);
    else if (B == 4) float_word_impl<4, 0>(cnt, np, B, a, y, ystride);
    else float_word_impl<0, 0>(cnt, np, B, a, y, ystride);
  }
};

ONEBIT_AVX512 void depthwise_row_avx512(const DepthwiseCtx& c, int64_t row) {
  depthwise_row<Avx512Depthwise>(c, row);
}

// Sign packing: 16 floats -> 16 bits per compare-into-mask (_CMP_LT_OQ: false for NaN, as `<`).
ONEBIT_AVX512 void pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out) {
  const int64_t KW = (C + 63) / 64, full = C / 64;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t p = 0; p < P; ++p) {
    const float* xs = x + p * C;
    uint64_t* o = out + p * KW;
    for (int64_t k = 0; k < full; ++k) {
      uint64_t w = 0;
      for (int j = 0; j < 4; ++j) {
        __m512 v = _mm512_loadu_ps(xs + 64 * k + 16 * j);
        if (thr) v = _mm512_add_ps(v, _mm512_loadu_ps(thr + 64 * k + 16 * j));
        w |= static_cast<uint64_t>(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ)) << (16 * j);
      }
      o[k] = w;
    }
    if (full < KW) {
      uint64_t w = 0;
      for (int64_t c = 64 * full; c < C; ++c)
        w |= static_cast<uint64_t>(thr ? (xs[c] + thr[c]) < 0.0f : xs[c] < 0.0f) << (c - 64 * full);
      o[full] = w;
    }
  }
}

ONEBIT_AVX512 double peak(int64_t iterations) {
  __m512i x0 = _mm512_set1_epi64(0x0123456789abcdefll), x1 = _mm512_set1_epi64(0x0f1e2d3c4b5a6978ll);
  __m512i x2 = _mm512_set1_epi64(0x13579bdf02468acell), x3 = _mm512_set1_epi64(0x7766554433221100ll);
  const __m512i w0 = _mm512_set1_epi64(0x5a5a5a5a12345678ll), w1 = _mm512_set1_epi64(0x2a5a5a5a87654321ll);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3));
    a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w0)));
    a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w0)));
    a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(_mm512_xor_si512(x2, w0)));
    a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(_mm512_xor_si512(x3, w0)));
    a4 = _mm512_add_epi64(a4, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w1)));
    a5 = _mm512_add_epi64(a5, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w1)));
    a6 = _mm512_add_epi64(a6, _mm512_popcnt_epi64(_mm512_xor_si512(x2, w1)));
    a7 = _mm512_add_epi64(a7, _mm512_popcnt_epi64(_mm512_xor_si512(x3, w1)));
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  __m512i s = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
  s = _mm512_add_epi64(s, _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
  asm volatile("" : "+v"(s));
  return static_cast<double>(iterations) * 8.0 * 512.0 / sec;
}

}  // namespace

const Isa& isa_avx512() {
  static const Isa isa{kKernelNames[kAvx512], &run_item, &depthwise_row_avx512, &peak, &pack_rows};
  return isa;
}

}  // namespace onebit

#else  // not x86-64 with a GNU-compatible compiler

namespace onebit {
const Isa& isa_avx512() { throw std::invalid_argument("the avx512 kernel is only built for x86-64"); }
}  // namespace onebit

#endif
