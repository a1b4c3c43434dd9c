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
#include "epilogue.h"
#include "zero_padding.h"

namespace onebit {

struct ConvCtx {
  const uint64_t* x = nullptr;         // input (N, H, W, KW), not padded
  const uint64_t* pad_word = nullptr;  // (KW) the words a padded position reads
  uint64_t call_serial = 0;            // unique per conv2d call (keys the per-thread windows)
  int64_t N = 0, H = 0, W = 0, KW = 0, OH = 0, OW = 0;
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool zero_pad = false;         // pad_value == 0 with some padding: correct border pixels
  int J = 1;
  int64_t cin = 0, cout = 0, ncb = 0, cpad = 0, KWo = 0;
  const uint64_t* w = nullptr;   // (J, ncb, kh, kw, KW, 32)
  const uint64_t* m = nullptr;   // same or nullptr
  int64_t blk_words = 0, plane_words = 0;
  const int32_t* base = nullptr;  // (J, cpad)
  const int32_t* wsum_prefix = nullptr;  // (J, kh+1, kw+1, cpad), see Weights
  const float* mu = nullptr;      // (J, cpad)
  const float* scale = nullptr;   // (cpad)
  const float* bias = nullptr;    // (cpad)
  const float* prelu = nullptr;   // (cpad) or nullptr
  const float* thr = nullptr;     // (cpad) or nullptr: bits = (y + thr) < 0
  float cmin = 0, cmax = 0;
  const int32_t* sign_lo = nullptr;  // (cpad) integer form of the transform, or nullptr
  const int32_t* sign_hi = nullptr;  //   (bits output, one plane): bit = lo <= D <= hi
  float* out_f = nullptr;         // (N, OH, OW, cout)
  const float* residual = nullptr;  // (N, OH, OW, cout) added to y before PReLU / clamp, or nullptr;
                                    // may be out_f itself (each value read before it is written)
  uint64_t* out_bits = nullptr;   // (N, OH, OW, KWo); with out_f too: both outputs
};

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

// Points rows[0..kh) at a per-thread copy of the input window rows ih_first.., columns
// iw_first.. (ncols of them), positions outside the image holding the pad word.  The window of
// a left-border group and that of a right-border (or border-row) group are kept per thread for
// the call, so the channel blocks of one output row, which one thread takes in turn, copy each
// window once.
ONEBIT_INLINE void padded_window(const ConvCtx& c, int64_t n, int64_t ih_first, int64_t iw_first,
                                 int64_t ncols, const uint64_t** rows) {
  struct Window {
    uint64_t call = 0;  // ConvCtx::call_serial of the call that made it (0: none)
    int64_t n = 0, ih_first = 0, iw_first = 0, ncols = 0;
    std::vector<uint64_t> words;
  };
  thread_local Window windows[2];
  Window& win = windows[iw_first < 0 ? 0 : 1];
  const int64_t KW = c.KW;
  const int64_t row_words = ncols * KW;
  if (!(win.call == c.call_serial && win.n == n && win.ih_first == ih_first && win.iw_first == iw_first &&
        win.ncols == ncols)) {
    win.call = c.call_serial, win.n = n, win.ih_first = ih_first, win.iw_first = iw_first, win.ncols = ncols;
    if (win.words.size() < static_cast<size_t>(c.kh * row_words)) win.words.resize(static_cast<size_t>(c.kh * row_words));
    const int64_t valid_lo = iw_first < 0 ? -iw_first : 0;                     // first in-image column
    const int64_t valid_hi = c.W - iw_first < ncols ? c.W - iw_first : ncols;  // one past the last
    for (int i = 0; i < c.kh; ++i) {
      uint64_t* dst = win.words.data() + i * row_words;
      const int64_t ih = ih_first + i;
      const bool row_in = ih >= 0 && ih < c.H && valid_lo < valid_hi;
      const int64_t copy_lo = row_in ? valid_lo : ncols, copy_hi = row_in ? valid_hi : ncols;
      for (int64_t j = 0; j < copy_lo; ++j)
        for (int64_t k = 0; k < KW; ++k) dst[j * KW + k] = c.pad_word[k];
      if (copy_hi > copy_lo)
        std::memcpy(dst + copy_lo * KW, c.x + ((n * c.H + ih) * c.W + iw_first + copy_lo) * KW,
                    static_cast<size_t>((copy_hi - copy_lo) * KW) * sizeof(uint64_t));
      for (int64_t j = copy_hi > copy_lo ? copy_hi : copy_lo; j < ncols; ++j)
        for (int64_t k = 0; k < KW; ++k) dst[j * KW + k] = c.pad_word[k];
    }
  }
  for (int i = 0; i < c.kh; ++i) rows[i] = win.words.data() + i * row_words;
}

// Identity operands that let the one-pass epilogue run without branches: a zero correction, a
// PReLU slope of 1 (y < 0 ? y * 1 : y is y for every float) and a zero bits threshold ((y + 0) < 0
// is y < 0 for every float, -0 and NaN included).
struct EpilogueIdentities {
  alignas(64) int32_t zero_i[kBlock];
  alignas(64) float one_f[kBlock];
  alignas(64) float zero_f[kBlock];
};
inline const EpilogueIdentities& epilogue_identities() {
  static const EpilogueIdentities k = [] {
    EpilogueIdentities e{};
    for (int q = 0; q < kBlock; ++q) e.one_f[q] = 1.0f;
    return e;
  }();
  return k;
}

// Where one work item sits: its channel block, output row and image, and the kernel rows that lie
// inside the image.  Items run (image, output row) outer and channel block inner: consecutive
// items, which one thread takes together (conv.cpp), share their input rows and fill both 32-bit
// halves of the same output words, so two threads never write into one cache line of the bit
// output.
struct ItemPos {
  int64_t cb = 0, oh = 0, n = 0, o0 = 0;
  int nc = 0;                      // channels of this block (kBlock but in the last block)
  int64_t ih_first = 0;            // unpadded input row of kernel row 0 (may be outside)
  bool row_border = false;         // zero padding reaches this output row
  int64_t i_in0 = 0, i_in1 = 0;    // in-image kernel rows [i_in0, i_in1)
};

ONEBIT_INLINE ItemPos item_position(const ConvCtx& c, int64_t item) {
  ItemPos at;
  at.cb = item % c.ncb;
  at.oh = (item / c.ncb) % c.OH;
  at.n = item / (c.ncb * c.OH);
  at.o0 = at.cb * kBlock;
  at.nc = static_cast<int>(c.cout - at.o0 < kBlock ? c.cout - at.o0 : kBlock);
  const int64_t ih0 = at.oh * c.sh;  // first (padded) input row
  at.ih_first = ih0 - c.ph;
  at.row_border = c.zero_pad && (ih0 < c.ph || ih0 + c.kh > c.ph + c.H);
  taps_inside(at.ih_first, c.kh, c.H, &at.i_in0, &at.i_in1);
  return at;
}

// Whether output pixel ow of the item has zero-padded taps (its sum needs the correction).
ONEBIT_INLINE bool zero_pad_border(const ConvCtx& c, const ItemPos& at, int64_t ow) {
  const int64_t iw0 = ow * c.sw;
  return at.row_border || (c.zero_pad && (iw0 < c.pw || iw0 + c.kw > c.pw + c.W));
}

// The zero-padding correction (zero_padding.h) of weight plane j at output pixel ow.
ONEBIT_INLINE void border_correction(const ConvCtx& c, const ItemPos& at, int j, int64_t ow, int32_t* corr) {
  int64_t j0 = 0, j1 = 0;
  taps_inside(ow * c.sw - c.pw, c.kw, c.W, &j0, &j1);
  const int32_t* P = c.wsum_prefix + static_cast<int64_t>(j) * (c.kh + 1) * (c.kw + 1) * c.cpad + at.o0;
  zero_padding_correction<kBlock>(P, c.kh, c.kw, c.cpad, at.i_in0, at.i_in1, j0, j1, corr);
}

// The block's output bits at pixel pix (tail channels masked off; the last block of an even count
// also clears the word's upper half).
ONEBIT_INLINE void store_block_bits(const ConvCtx& c, const ItemPos& at, int64_t pix, uint32_t bits) {
  if (at.nc < kBlock) bits &= (1u << at.nc) - 1;
  uint64_t* word = c.out_bits + pix * c.KWo + at.cb / 2;
  store_half(word, static_cast<int>(at.cb & 1), bits);
  if (at.cb == c.ncb - 1 && (at.cb & 1) == 0) store_half(word, 1, 0u);
}

// Points rows[0..kh) at the input of the item's output pixels [ow0, ow0 + npix): inside the image
// the kernel reads the input in place, and only groups that reach into the padding get a padded
// copy of their window (made by the thread that needs it: no serial padding pass).
ONEBIT_INLINE void group_rows(const ConvCtx& c, const ItemPos& at, int64_t ow0, int npix, const uint64_t** rows) {
  const int64_t iw_first = ow0 * c.sw - c.pw;
  const int64_t ncols = (npix - 1) * static_cast<int64_t>(c.sw) + c.kw;
  const bool rows_inside = at.ih_first >= 0 && at.ih_first + c.kh <= c.H;
  if (rows_inside && iw_first >= 0 && iw_first + ncols <= c.W) {
    for (int i = 0; i < c.kh; ++i) rows[i] = c.x + ((at.n * c.H + at.ih_first + i) * c.W + iw_first) * c.KW;
  } else {
    padded_window(c, at.n, at.ih_first, iw_first, ncols, rows);
  }
}

// The popcount sums S of weight plane j for the pixel group args describes.
template <class Block>
ONEBIT_INLINE void run_plane(const ConvCtx& c, const ItemPos& at, int j, BlockArgs& args) {
  const int64_t offset = j * c.plane_words + at.cb * c.blk_words;
  args.w = c.w + offset;
  args.m = c.m ? c.m + offset : nullptr;
  Block::run(args);
}

// Integer epilogue (one plane, bits output): the dot product D compared with the transform's
// precomputed interval instead of evaluating it in float (sign_intervals in conv.cpp).
template <class Block>
ONEBIT_INLINE void interval_epilogue(const ConvCtx& c, const ItemPos& at, int64_t ow0, int npix, int32_t* S) {
  alignas(64) int32_t corr[kBlock];
  const int32_t* base = c.base + at.o0;
  const int32_t* lo = c.sign_lo + at.o0;
  const int32_t* hi = c.sign_hi + at.o0;
  for (int p = 0; p < npix; ++p) {
    int32_t* D = S + p * kBlock;
    if (zero_pad_border(c, at, ow0 + p)) {
      border_correction(c, at, 0, ow0 + p, corr);
      for (int q = 0; q < kBlock; ++q) D[q] = base[q] - (2 * D[q] + corr[q]);
    } else {
      for (int q = 0; q < kBlock; ++q) D[q] = base[q] - 2 * D[q];
    }
    store_block_bits(c, at, (at.n * c.OH + at.oh) * c.OW + ow0 + p, Block::in_interval_bits(D, lo, hi));
  }
}

// One pixel of the one-plane float epilogue over a full block: the epilogue (epilogue.h) of
// D = base - (2 S + corr) to y_out, and its sign operand to y_thr.  InPlace: the residual is read
// from y_out itself (each value read before it is overwritten); otherwise the outputs overlap no
// input (restrict: one vector loop, no run-time alias checks).
template <bool HasResidual, bool InPlace>
ONEBIT_INLINE void epilogue_pixel(const int32_t* __restrict S, const int32_t* __restrict corr,
                                  const int32_t* __restrict base, const float* __restrict mu,
                                  const float* __restrict scale, const float* __restrict bias,
                                  const float* __restrict residual, const float* __restrict slope, float cmin,
                                  float cmax, const float* __restrict thr, float* __restrict y_out,
                                  float* __restrict y_thr) {
  for (int q = 0; q < kBlock; ++q) {
    const float acc = epilogue::plane_term(0.0f, mu[q], static_cast<float>(base[q] - (2 * S[q] + corr[q])));
    const float r = HasResidual ? (InPlace ? y_out[q] : residual[q]) : 0.0f;
    const float y = epilogue::output<HasResidual, true>(acc, scale[q], bias[q], r, slope[q], cmin, cmax);
    y_out[q] = y;
    y_thr[q] = epilogue::sign_operand(y, thr[q]);
  }
}

// One plane, a full block (the common case): the whole float epilogue in one pass per pixel, each
// value kept in registers from the popcount to the stored float and bit (an absent PReLU or
// threshold runs as its identity operand, see epilogue.h).
template <class Block, bool HasResidual, bool InPlace>
ONEBIT_INLINE void one_plane_epilogue(const ConvCtx& c, const ItemPos& at, int64_t ow0, int npix, const int32_t* S) {
  const EpilogueIdentities& id = epilogue_identities();
  const int64_t o0 = at.o0;
  const float* slope = c.prelu ? c.prelu + o0 : id.one_f;
  const float* thr = c.thr ? c.thr + o0 : id.zero_f;
  alignas(64) int32_t corr[kBlock];
  alignas(64) float y_local[kBlock];
  alignas(64) float y_thr[kBlock];
  for (int p = 0; p < npix; ++p) {
    const int32_t* cp = id.zero_i;
    if (zero_pad_border(c, at, ow0 + p)) {
      border_correction(c, at, 0, ow0 + p, corr);
      cp = corr;
    }
    const int64_t pix = (at.n * c.OH + at.oh) * c.OW + ow0 + p;
    epilogue_pixel<HasResidual, InPlace>(
        S + p * kBlock, cp, c.base + o0, c.mu + o0, c.scale + o0, c.bias + o0,
        HasResidual && !InPlace ? c.residual + pix * c.cout + o0 : nullptr, slope, c.cmin, c.cmax, thr,
        c.out_f ? c.out_f + pix * c.cout + o0 : y_local, y_thr);
    if (c.out_bits) store_block_bits(c, at, pix, Block::negative_bits(y_thr));
  }
}

// Several planes or a partial block: acc (npix, kBlock) = the planes' terms, in plane order.
template <class Block>
ONEBIT_INLINE void accumulate_planes(const ConvCtx& c, const ItemPos& at, int64_t ow0, BlockArgs& args, float* acc) {
  alignas(64) int32_t corr[kBlock];
  const int npix = args.npix;
  for (int e = 0; e < npix * kBlock; ++e) acc[e] = 0.0f;
  for (int j = 0; j < c.J; ++j) {
    run_plane<Block>(c, at, j, args);
    const int32_t* base = c.base + j * c.cpad + at.o0;
    const float* mu = c.mu + j * c.cpad + at.o0;
    for (int p = 0; p < npix; ++p) {
      int32_t* Sp = args.S + p * kBlock;
      float* ap = acc + p * kBlock;
      if (zero_pad_border(c, at, ow0 + p)) {
        border_correction(c, at, j, ow0 + p, corr);
        for (int q = 0; q < kBlock; ++q) Sp[q] = 2 * Sp[q] + corr[q];
      } else {
        for (int q = 0; q < kBlock; ++q) Sp[q] = 2 * Sp[q];
      }
      for (int q = 0; q < kBlock; ++q) ap[q] = epilogue::plane_term(ap[q], mu[q], static_cast<float>(base[q] - Sp[q]));
    }
  }
}

// The epilogue (epilogue.h) of accumulated planes acc (npix, kBlock), in place, to the float and /
// or bit outputs.  (sign_intervals in conv.cpp evaluates the same operations for one plane.)
template <class Block, bool HasResidual, bool HasPrelu>
ONEBIT_INLINE void accumulated_epilogue(const ConvCtx& c, const ItemPos& at, int64_t ow0, int npix, float* acc) {
  const int64_t o0 = at.o0;
  const float* scale = c.scale + o0;
  const float* bias = c.bias + o0;
  const float* slope = c.prelu ? c.prelu + o0 : nullptr;  // (read only with HasPrelu)
  alignas(64) float r_local[kBlock] = {};
  for (int p = 0; p < npix; ++p) {
    float* y = acc + p * kBlock;
    const int64_t pix = (at.n * c.OH + at.oh) * c.OW + ow0 + p;
    const float* r = HasResidual ? c.residual + pix * c.cout + o0 : nullptr;
    if (HasResidual && at.nc < kBlock) {  // (the residual has nc channels here: a padded copy)
      for (int q = 0; q < at.nc; ++q) r_local[q] = r[q];
      r = r_local;
    }
    for (int q = 0; q < kBlock; ++q)
      y[q] = epilogue::output<HasResidual, HasPrelu>(y[q], scale[q], bias[q], HasResidual ? r[q] : 0.0f,
                                                      HasPrelu ? slope[q] : 0.0f, c.cmin, c.cmax);
    if (c.out_f) {
      // A fixed-size copy of a full block compiles to vector moves; a variable one is a call.
      if (at.nc == kBlock) std::memcpy(c.out_f + pix * c.cout + o0, y, sizeof(float) * kBlock);
      else std::memcpy(c.out_f + pix * c.cout + o0, y, sizeof(float) * at.nc);
    }
    if (c.out_bits) {
      if (c.thr)
        for (int q = 0; q < kBlock; ++q) y[q] = epilogue::sign_operand(y[q], c.thr[o0 + q]);
      store_block_bits(c, at, pix, Block::negative_bits(y));
    }
  }
}

// The float epilogue of a pixel group whose popcount sums (one plane, full block) or accumulated
// planes are ready, with the layer's options as template arguments.
template <class Block>
ONEBIT_INLINE void float_epilogue(const ConvCtx& c, const ItemPos& at, int64_t ow0, BlockArgs& args) {
  const int npix = args.npix;
  if (c.J == 1 && at.nc == kBlock) {
    run_plane<Block>(c, at, 0, args);
    if (!c.residual) one_plane_epilogue<Block, false, false>(c, at, ow0, npix, args.S);
    else if (c.residual == c.out_f) one_plane_epilogue<Block, true, true>(c, at, ow0, npix, args.S);
    else one_plane_epilogue<Block, true, false>(c, at, ow0, npix, args.S);
    return;
  }
  alignas(64) float acc[kMaxPix * kBlock];
  accumulate_planes<Block>(c, at, ow0, args, acc);
  if (c.residual && c.prelu) accumulated_epilogue<Block, true, true>(c, at, ow0, npix, acc);
  else if (c.residual) accumulated_epilogue<Block, true, false>(c, at, ow0, npix, acc);
  else if (c.prelu) accumulated_epilogue<Block, false, true>(c, at, ow0, npix, acc);
  else accumulated_epilogue<Block, false, false>(c, at, ow0, npix, acc);
}

// One work item: a block of kBlock output channels x one output row of one image, in groups of up
// to kMaxPix pixels.  Block must provide static void run(const BlockArgs&) (the popcount sums S
// of npix pixels) and the two bit extractions of ScalarBits.
template <class Block>
ONEBIT_INLINE void conv_item(const ConvCtx& c, int64_t item) {
  const ItemPos at = item_position(c, item);
  const uint64_t* rows_buf[16];
  const uint64_t** rows = rows_buf;
  const uint64_t** rows_heap = nullptr;
  if (c.kh > 16) rows = rows_heap = new const uint64_t*[c.kh];
  alignas(64) int32_t S[kMaxPix * kBlock];
  BlockArgs args;
  args.rows = rows;
  args.kh = c.kh;
  args.L = static_cast<int>(c.kw * c.KW);
  args.xstride = static_cast<int64_t>(c.sw) * c.KW;
  args.S = S;
  for (int64_t ow0 = 0; ow0 < c.OW; ow0 += kMaxPix) {
    args.npix = static_cast<int>(c.OW - ow0 < kMaxPix ? c.OW - ow0 : kMaxPix);
    group_rows(c, at, ow0, args.npix, rows);
    if (c.sign_lo) {
      run_plane<Block>(c, at, 0, args);
      interval_epilogue<Block>(c, at, ow0, args.npix, S);
    } else {
      float_epilogue<Block>(c, at, ow0, args);
    }
  }
  delete[] rows_heap;
}

}  // namespace onebit
