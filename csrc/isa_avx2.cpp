// AVX2 block kernel: popcount with the nibble lookup-table method (vpshufb), byte counters
// widened with vpsadbw every <= 31 steps.  Compiled with per-function target attributes so the
// rest of the library stays baseline x86-64.
#include <chrono>
#include <stdexcept>

#include "conv_impl.h"
#include "depthwise_impl.h"
#include "engine.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define ONEBIT_AVX2 __attribute__((target("avx2,popcnt")))

namespace onebit {
namespace {

constexpr int kMaxSteps = 31;  // byte counters: 31 * 8 = 248 <= 255

ONEBIT_AVX2 inline __m256i lut_popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

ONEBIT_AVX2 inline __m256i make_lut() {
  return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

// P output pixels x 8 output channels (2 ymm) per pass, 4 passes per 32-channel block.
// Byte counters are widened with vpsadbw into 64-bit lanes (values < 2^31, so the low 32 bits
// of each lane are added as int32 lanes and compressed at the end).
template <int P, bool Masked>
ONEBIT_AVX2 void block_p(const BlockArgs& a, int p0) {
  const __m256i lut = make_lut();
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  int32_t* S = a.S + static_cast<int64_t>(p0) * kBlock;
  for (int sb = 0; sb < kBlock / 8; ++sb) {
    __m256i acc[P][2], tot[P][2];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      acc[p][0] = acc[p][1] = zero;
      tot[p][0] = tot[p][1] = zero;
    }
    int pending = 0;
    for (int i = 0; i < a.kh; ++i) {
      const uint64_t* xr = a.rows[i] + p0 * a.xstride;
      const uint64_t* wr = a.w + static_cast<int64_t>(i) * a.L * kBlock + sb * 8;
      const uint64_t* mr = Masked ? a.m + static_cast<int64_t>(i) * a.L * kBlock + sb * 8 : nullptr;
      for (int t0 = 0; t0 < a.L; t0 += kMaxSteps) {
        const int n = a.L - t0 < kMaxSteps ? a.L - t0 : kMaxSteps;
        if (pending + n > kMaxSteps) {
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p)
            for (int b = 0; b < 2; ++b) {
              tot[p][b] = _mm256_add_epi32(tot[p][b], _mm256_sad_epu8(acc[p][b], zero));
              acc[p][b] = zero;
            }
          pending = 0;
        }
        for (int t = t0; t < t0 + n; ++t) {
          const uint64_t* wt = wr + static_cast<int64_t>(t) * kBlock;
          const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt));
          const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + 4));
          __m256i m0 = zero, m1 = zero;
          if (Masked) {
            const uint64_t* mt = mr + static_cast<int64_t>(t) * kBlock;
            m0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mt));
            m1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mt + 4));
          }
#pragma GCC unroll 8
          for (int p = 0; p < P; ++p) {
            const __m256i xb = _mm256_set1_epi64x(static_cast<long long>(xr[p * a.xstride + t]));
            __m256i v0 = _mm256_xor_si256(xb, w0);
            __m256i v1 = _mm256_xor_si256(xb, w1);
            if (Masked) {
              v0 = _mm256_and_si256(v0, m0);
              v1 = _mm256_and_si256(v1, m1);
            }
            acc[p][0] = _mm256_add_epi8(acc[p][0], lut_popcnt_bytes(v0, lut, low));
            acc[p][1] = _mm256_add_epi8(acc[p][1], lut_popcnt_bytes(v1, lut, low));
          }
        }
        pending += n;
      }
    }
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p)
      for (int b = 0; b < 2; ++b) {
        const __m256i v = _mm256_add_epi32(tot[p][b], _mm256_sad_epu8(acc[p][b], zero));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(S + p * kBlock + sb * 8 + 4 * b),
                         _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, even)));
      }
  }
}

template <bool Masked>
ONEBIT_AVX2 void block(const BlockArgs& a) {
  for_pixel_groups(a.npix, [&](auto P, int p0) { block_p<decltype(P)::value, Masked>(a, p0); });
}

struct Avx2Block {
  ONEBIT_AVX2 static inline uint32_t negative_bits(const float* y) {
    static_assert(kBlock == 32, "four 8-lane compares per block");
    const __m256 zero = _mm256_setzero_ps();
    uint32_t bits = 0;
    for (int k = 0; k < 4; ++k)
      bits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + 8 * k), zero, _CMP_LT_OQ)))
              << (8 * k);
    return bits;
  }
  ONEBIT_AVX2 static inline uint32_t in_interval_bits(const int32_t* d, const int32_t* lo, const int32_t* hi) {
    uint32_t bits = 0;
    for (int k = 0; k < 4; ++k) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + 8 * k));
      const __m256i below = _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + 8 * k)), v);
      const __m256i above = _mm256_cmpgt_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + 8 * k)));
      const __m256i out = _mm256_or_si256(below, above);
      bits |= static_cast<uint32_t>(~_mm256_movemask_ps(_mm256_castsi256_ps(out)) & 0xff) << (8 * k);
    }
    return bits;
  }
  ONEBIT_AVX2 static inline void run(const BlockArgs& a) {
    if (a.m) block<true>(a);
    else block<false>(a);
  }
};

ONEBIT_AVX2 void run_item(const ConvCtx& c, int64_t item) { conv_item<Avx2Block>(c, item); }

// Depthwise float output: the 64 float outputs of one channel word at np pixels, every tap valid
// (or A = the valid taps), from the counter planes cnt[p * B + b] into y[p * ystride + q]: a
// 32-bit half of a counter plane, broadcast from memory, becomes a lane mask for 8 channels by AND
// with the lanes' bits and compare; D = A - sum_b 2^(b+1) over the set planes, then the epilogue
// (epilogue.h) in vectors.  kB planes and kNP pixels when > 0 (unrolled: the pixels' dependency
// chains interleave), else B and np.  (x86 is little-endian: the half h of a plane word is at
// byte 4h.)  Hand-vectorised inner loop.
template <int kB, int kNP>
ONEBIT_AVX2 ONEBIT_INLINE void float_word_impl(const uint64_t* cnt, int np_, int B_, const FloatWordArgs& a, float* y,
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
      const __m256 acc = epilogue::plane_term(zero, mu, _mm256_cvtepi32_ps(d));
      const __m256 v = a.prelu ? epilogue::output<false, true>(acc, scale, bias, zero, slope, cmin, cmax)
                               : epilogue::output<false, false>(acc, scale, bias, zero, slope, cmin, cmax);
      _mm256_storeu_ps(y + p * ystride + 8 * g, v);
    }
  }
}

struct Avx2Depthwise {
  static constexpr bool kVectorEpilogue = true;
  ONEBIT_AVX2 static void float_word(const uint64_t* cnt, int np, int B, const FloatWordArgs& a, float* y,
                                     int64_t ystride) {
    if (B == 4 && np == 4) float_word_impl<4, 4>(cnt, np, B, a, y, ystride);
    else if (B == 4) float_word_impl<4, 0>(cnt, np, B, a, y, ystride);
    else float_word_impl<0, 0>(cnt, np, B, a, y, ystride);
  }
};

ONEBIT_AVX2 void depthwise_row_avx2(const DepthwiseCtx& c, int64_t row) { depthwise_row<Avx2Depthwise>(c, row); }

// Sign packing: 8 floats -> 8 bits per compare + movemask.  _CMP_LT_OQ is false for NaN, like
// the scalar `<` of the other paths.
template <bool Thr>
ONEBIT_AVX2 inline uint64_t pack_full_word(const float* x, const float* t) {
  const __m256 zero = _mm256_setzero_ps();
  uint64_t w = 0;
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    __m256 v = _mm256_loadu_ps(x + 8 * j);
    if (Thr) v = _mm256_add_ps(v, _mm256_loadu_ps(t + 8 * j));
    const unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
    w |= static_cast<uint64_t>(m) << (8 * j);
  }
  return w;
}

ONEBIT_AVX2 void pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out) {
  const int64_t KW = (C + 63) / 64, full = C / 64;
  for (int64_t p = 0; p < P; ++p) {
    const float* xs = x + p * C;
    uint64_t* o = out + p * KW;
    for (int64_t k = 0; k < full; ++k)
      o[k] = thr ? pack_full_word<true>(xs + 64 * k, thr + 64 * k) : pack_full_word<false>(xs + 64 * k, nullptr);
    if (full < KW) {
      uint64_t w = 0;
      for (int64_t c = 64 * full; c < C; ++c)
        w |= static_cast<uint64_t>(thr ? (xs[c] + thr[c]) < 0.0f : xs[c] < 0.0f) << (c - 64 * full);
      o[full] = w;
    }
  }
}

ONEBIT_AVX2 double peak(int64_t iterations) {
  const __m256i lut = make_lut();
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i x0 = _mm256_set1_epi64x(0x0123456789abcdefll), x1 = _mm256_set1_epi64x(0x0f1e2d3c4b5a6978ll);
  __m256i x2 = _mm256_set1_epi64x(0x13579bdf02468acell), x3 = _mm256_set1_epi64x(0x7766554433221100ll);
  const __m256i w0 = _mm256_set1_epi64x(0x5a5a5a5a12345678ll), w1 = _mm256_set1_epi64x(0x2a5a5a5a87654321ll);
  __m256i tot = zero;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t it = 0; it < iterations; it += kMaxSteps) {
    __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero, a7 = zero;
    for (int s = 0; s < kMaxSteps; ++s) {
      asm volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3));
      a0 = _mm256_add_epi8(a0, lut_popcnt_bytes(_mm256_xor_si256(x0, w0), lut, low));
      a1 = _mm256_add_epi8(a1, lut_popcnt_bytes(_mm256_xor_si256(x1, w0), lut, low));
      a2 = _mm256_add_epi8(a2, lut_popcnt_bytes(_mm256_xor_si256(x2, w0), lut, low));
      a3 = _mm256_add_epi8(a3, lut_popcnt_bytes(_mm256_xor_si256(x3, w0), lut, low));
      a4 = _mm256_add_epi8(a4, lut_popcnt_bytes(_mm256_xor_si256(x0, w1), lut, low));
      a5 = _mm256_add_epi8(a5, lut_popcnt_bytes(_mm256_xor_si256(x1, w1), lut, low));
      a6 = _mm256_add_epi8(a6, lut_popcnt_bytes(_mm256_xor_si256(x2, w1), lut, low));
      a7 = _mm256_add_epi8(a7, lut_popcnt_bytes(_mm256_xor_si256(x3, w1), lut, low));
    }
    __m256i s = _mm256_add_epi64(_mm256_sad_epu8(a0, zero), _mm256_sad_epu8(a1, zero));
    s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_sad_epu8(a2, zero), _mm256_sad_epu8(a3, zero)));
    s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_sad_epu8(a4, zero), _mm256_sad_epu8(a5, zero)));
    s = _mm256_add_epi64(s, _mm256_add_epi64(_mm256_sad_epu8(a6, zero), _mm256_sad_epu8(a7, zero)));
    tot = _mm256_add_epi64(tot, s);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  asm volatile("" : "+x"(tot));
  const int64_t steps = (iterations + kMaxSteps - 1) / kMaxSteps * kMaxSteps;
  return static_cast<double>(steps) * 8.0 * 256.0 / sec;
}

}  // namespace

const Isa& isa_avx2() {
  static const Isa isa{kKernelNames[kAvx2], &run_item, &depthwise_row_avx2, &peak, &pack_rows};
  return isa;
}

}  // namespace onebit

#else  // not x86-64 with a GNU-compatible compiler

namespace onebit {
const Isa& isa_avx2() { throw std::invalid_argument("the avx2 kernel is only built for x86-64"); }
}  // namespace onebit

#endif
