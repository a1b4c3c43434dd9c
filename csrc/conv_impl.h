// One work item of the direct binary convolution (a block of 32 output channels x one output
// row of one image), written as an always-inline template so that each ISA file instantiates it
// inside its own target("...") function: the block kernel and the epilogue (0-padding
// correction, multi-bit planes, fused transform, bit packing) are then compiled for that ISA.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine.h"

namespace onebit {

struct ConvCtx {
  const uint64_t* xp = nullptr;  // padded input (N, Hp, Wp, KW)
  int64_t N = 0, H = 0, W = 0, Hp = 0, Wp = 0, KW = 0, OH = 0, OW = 0;
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool zero_pad = false;         // pad_value == 0 with some padding: correct border pixels
  int J = 1;
  int64_t cout = 0, ncb = 0, cpad = 0, KWo = 0;
  const uint64_t* w = nullptr;   // (J, ncb, kh, kw, KW, 32)
  const uint64_t* m = nullptr;   // same or nullptr
  int64_t blk_words = 0, plane_words = 0;
  const int32_t* base = nullptr;  // (J, cpad)
  const int32_t* wsum = nullptr;  // (J, kh*kw, cpad)
  const float* mu = nullptr;      // (J, cpad)
  const float* scale = nullptr;   // (cpad)
  const float* bias = nullptr;    // (cpad)
  const float* prelu = nullptr;   // (cpad) or nullptr
  const float* thr = nullptr;     // (cpad) or nullptr
  float cmin = 0, cmax = 0;
  const int32_t* sign_lo = nullptr;  // (cpad) integer form of the transform, or nullptr
  const int32_t* sign_hi = nullptr;  //   (bits output, one plane): bit = lo <= D <= hi
  float* out_f = nullptr;         // (N, OH, OW, cout)
  uint64_t* out_bits = nullptr;   // (N, OH, OW, KWo)
};

#if defined(__GNUC__)
#define ONEBIT_INLINE inline __attribute__((always_inline))
#else
#define ONEBIT_INLINE inline
#endif

// Runs kernel(P, p0) over the npix pixels of a block-kernel call in groups of 4 and a remainder of
// 1-3, P a std::integral_constant: every group size gets its own fully unrolled kernel.
template <class Kernel>
ONEBIT_INLINE void for_pixel_groups(int npix, Kernel&& kernel) {
  int p = 0;
  for (; p + 4 <= npix; p += 4) kernel(std::integral_constant<int, 4>{}, p);
  switch (npix - p) {
    case 3: kernel(std::integral_constant<int, 3>{}, p); break;
    case 2: kernel(std::integral_constant<int, 2>{}, p); break;
    case 1: kernel(std::integral_constant<int, 1>{}, p); break;
    default: break;
  }
}

// Per-thread scratch of at least n elements, kept between calls: a block kernel's gathered
// activations.  One buffer per element type: only the innermost kernel of a path may use it.
template <class T>
inline T* thread_scratch(size_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// Writes the 32 bits of an output-channel block into its half of a 64-bit word.  Different
// blocks write different bytes, so concurrent items never race.
ONEBIT_INLINE void store_half(uint64_t* word, int half, uint32_t bits) {
  unsigned char* p = reinterpret_cast<unsigned char*>(word);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  std::memcpy(p + 4 * (1 - half), &bits, 4);
#else
  std::memcpy(p + 4 * half, &bits, 4);
#endif
}

// Per-pixel bit extraction for kBlock channels, the portable definitions; ISA blocks override
// them with vector compares.
struct ScalarBits {
  // bit q = (y[q] < 0)  (false for NaN)
  static ONEBIT_INLINE uint32_t negative_bits(const float* y) {
    uint32_t bits = 0;
    for (int q = 0; q < kBlock; ++q) bits |= static_cast<uint32_t>(y[q] < 0.0f) << q;
    return bits;
  }
  // bit q = (lo[q] <= d[q] <= hi[q])
  static ONEBIT_INLINE uint32_t in_interval_bits(const int32_t* d, const int32_t* lo, const int32_t* hi) {
    uint32_t bits = 0;
    for (int q = 0; q < kBlock; ++q) bits |= static_cast<uint32_t>(d[q] >= lo[q] && d[q] <= hi[q]) << q;
    return bits;
  }
};

// Block must provide: static void run(const BlockArgs&)  (computes S for npix pixels), and the
// two bit extractions of ScalarBits.
template <class Block>
ONEBIT_INLINE void conv_item(const ConvCtx& c, int64_t item) {
  // Items run (image, output row) outer and channel block inner: consecutive items, which one
  // thread takes together (conv.cpp), share their input rows and fill both 32-bit halves of the
  // same output words, so two threads never write into one cache line of the bit output.
  const int64_t cb = item % c.ncb;
  const int64_t oh = (item / c.ncb) % c.OH;
  const int64_t n = item / (c.ncb * c.OH);
  const int nc = static_cast<int>(c.cout - cb * kBlock < kBlock ? c.cout - cb * kBlock : kBlock);
  const int taps = c.kh * c.kw;
  const int64_t o0 = cb * kBlock;

  const uint64_t* rows_buf[16];
  const uint64_t** rows = rows_buf;
  const uint64_t** rows_heap = nullptr;
  if (c.kh > 16) rows = rows_heap = new const uint64_t*[c.kh];

  alignas(64) int32_t S[kMaxPix * kBlock];
  alignas(64) float acc[kMaxPix * kBlock];
  alignas(64) int32_t corr[kBlock];

  const int64_t ih0 = oh * c.sh;  // first (padded) input row of this output row
  const bool row_border = c.zero_pad && (ih0 < c.ph || ih0 + c.kh > c.ph + c.H);

  BlockArgs args;
  args.rows = rows;
  args.kh = c.kh;
  args.L = static_cast<int>(c.kw * c.KW);
  args.xstride = static_cast<int64_t>(c.sw) * c.KW;
  args.S = S;

  // Padded taps of a border pixel were computed as +1 inputs: corr removes their contribution
  // (sum of the weight signs at those taps) for zero padding.
  auto border_correction = [&](int j, int64_t iw0, int32_t* corr) {
    for (int q = 0; q < kBlock; ++q) corr[q] = 0;
    for (int i = 0; i < c.kh; ++i) {
      const int64_t ih = ih0 + i - c.ph;
      for (int jj = 0; jj < c.kw; ++jj) {
        const int64_t iw = iw0 + jj - c.pw;
        if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) {
          const int32_t* ws = c.wsum + (static_cast<int64_t>(j) * taps + i * c.kw + jj) * c.cpad + o0;
          for (int q = 0; q < kBlock; ++q) corr[q] += ws[q];
        }
      }
    }
  };
  auto store_bits = [&](int64_t pix, uint32_t bits) {
    if (nc < kBlock) bits &= (1u << nc) - 1;
    uint64_t* word = c.out_bits + pix * c.KWo + cb / 2;
    store_half(word, static_cast<int>(cb & 1), bits);
    if (cb == c.ncb - 1 && (cb & 1) == 0) store_half(word, 1, 0u);
  };

  for (int64_t ow0 = 0; ow0 < c.OW; ow0 += kMaxPix) {
    const int npix = static_cast<int>(c.OW - ow0 < kMaxPix ? c.OW - ow0 : kMaxPix);
    for (int i = 0; i < c.kh; ++i) rows[i] = c.xp + ((n * c.Hp + ih0 + i) * c.Wp + ow0 * c.sw) * c.KW;
    args.npix = npix;

    if (c.sign_lo) {
      // Integer epilogue (one plane, bits output): compare the dot product with the
      // transform's precomputed interval instead of evaluating it in float.
      args.w = c.w + cb * c.blk_words;
      args.m = c.m ? c.m + cb * c.blk_words : nullptr;
      Block::run(args);
      const int32_t* base = c.base + o0;
      const int32_t* lo = c.sign_lo + o0;
      const int32_t* hi = c.sign_hi + o0;
      for (int p = 0; p < npix; ++p) {
        const int64_t iw0 = (ow0 + p) * c.sw;
        const bool border = row_border || (c.zero_pad && (iw0 < c.pw || iw0 + c.kw > c.pw + c.W));
        int32_t* D = S + p * kBlock;
        if (border) {
          border_correction(0, iw0, corr);
          for (int q = 0; q < kBlock; ++q) D[q] = base[q] - (2 * D[q] + corr[q]);
        } else {
          for (int q = 0; q < kBlock; ++q) D[q] = base[q] - 2 * D[q];
        }
        store_bits((n * c.OH + oh) * c.OW + ow0 + p, Block::in_interval_bits(D, lo, hi));
      }
      continue;
    }

    for (int e = 0; e < npix * kBlock; ++e) acc[e] = 0.0f;
    for (int j = 0; j < c.J; ++j) {
      args.w = c.w + j * c.plane_words + cb * c.blk_words;
      args.m = c.m ? c.m + j * c.plane_words + cb * c.blk_words : nullptr;
      Block::run(args);
      const int32_t* base = c.base + j * c.cpad + o0;
      const float* mu = c.mu + j * c.cpad + o0;
      for (int p = 0; p < npix; ++p) {
        const int64_t iw0 = (ow0 + p) * c.sw;
        const bool border = row_border || (c.zero_pad && (iw0 < c.pw || iw0 + c.kw > c.pw + c.W));
        int32_t* Sp = S + p * kBlock;
        float* ap = acc + p * kBlock;
        if (border) {
          border_correction(j, iw0, corr);
          for (int q = 0; q < kBlock; ++q) Sp[q] = 2 * Sp[q] + corr[q];
        } else {
          for (int q = 0; q < kBlock; ++q) Sp[q] = 2 * Sp[q];
        }
        for (int q = 0; q < kBlock; ++q) ap[q] = ap[q] + mu[q] * static_cast<float>(base[q] - Sp[q]);
      }
    }

    // Fused output transform: y = scale*acc + bias -> PReLU -> clamp -> float or sign bits.
    // (sign_intervals in conv.cpp evaluates exactly these operations, in this order.)
    const float* scale = c.scale + o0;
    const float* bias = c.bias + o0;
    for (int p = 0; p < npix; ++p) {
      float* y = acc + p * kBlock;
      for (int q = 0; q < kBlock; ++q) y[q] = y[q] * scale[q] + bias[q];
      if (c.prelu) {
        const float* s = c.prelu + o0;
        for (int q = 0; q < kBlock; ++q) y[q] = y[q] < 0.0f ? y[q] * s[q] : y[q];
      }
      for (int q = 0; q < kBlock; ++q) {
        float v = y[q] < c.cmin ? c.cmin : y[q];
        y[q] = v > c.cmax ? c.cmax : v;
      }
      const int64_t pix = (n * c.OH + oh) * c.OW + ow0 + p;
      if (c.out_f) {
        std::memcpy(c.out_f + pix * c.cout + o0, y, sizeof(float) * nc);
      } else {
        if (c.thr) {
          const float* t = c.thr + o0;
          for (int q = 0; q < kBlock; ++q) y[q] = y[q] + t[q];
        }
        store_bits(pix, Block::negative_bits(y));
      }
    }
  }
  delete[] rows_heap;
}

}  // namespace onebit
