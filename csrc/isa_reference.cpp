// The reference kernel path (ONEBIT_KERNEL=reference): the binary convolution, depthwise
// convolution and sign packing written as their definitions, one output value at a time, in plain
// C++ with no prepared form (no zero-padding prefix sums, no sign intervals, no tables or
// bit-sliced bounds, no blocking).  Each output channel's dot product over the active weights is
// counted tap by tap (padded taps: the pad value, or skipped for 0), then the planes and the
// epilogue follow epilogue.h.  Every other path must give the same bits and floats:
// tests/cpp/engine_check.cpp and the Python test grid (tests/deploy/test_kernel_reference.py)
// compare them with it.  Slow by design; selectable like the other paths, never chosen
// automatically.
#include <cstdint>

#include "conv_impl.h"
#include "depthwise_impl.h"
#include "engine.h"
#include "epilogue.h"

namespace onebit {
namespace {

int popcount64(uint64_t v) {
  int n = 0;
  for (; v; v &= v - 1) ++n;
  return n;
}

// The bits of the valid channels of activation word k of a cin-channel layer.
uint64_t valid_bits(int64_t cin, int64_t k) {
  const int64_t rest = cin - 64 * k;
  return rest >= 64 ? ~0ull : (1ull << rest) - 1;
}

// Output channel o's epilogue (epilogue.h) from its accumulated planes, with the transform's
// optional parts as pointers (nullptr: absent).
float reference_output(float acc, float scale, float bias, const float* residual, const float* slope, float cmin,
                       float cmax) {
  const float r = residual ? *residual : 0.0f, s = slope ? *slope : 0.0f;
  if (residual && slope) return epilogue::output<true, true>(acc, scale, bias, r, s, cmin, cmax);
  if (residual) return epilogue::output<true, false>(acc, scale, bias, r, s, cmin, cmax);
  if (slope) return epilogue::output<false, true>(acc, scale, bias, r, s, cmin, cmax);
  return epilogue::output<false, false>(acc, scale, bias, r, s, cmin, cmax);
}

// Weight plane j's dot product for output channel o at output pixel (n, oh, ow) of a convolution.
int64_t conv_dot(const ConvCtx& c, int j, int64_t o, int64_t n, int64_t oh, int64_t ow) {
  const int64_t cb = o / kBlock, q = o % kBlock;
  const uint64_t* wj = c.w + j * c.plane_words + cb * c.blk_words;
  const uint64_t* mj = c.m ? c.m + j * c.plane_words + cb * c.blk_words : nullptr;
  int64_t D = 0;
  for (int i = 0; i < c.kh; ++i)
    for (int jj = 0; jj < c.kw; ++jj) {
      const int64_t ih = oh * c.sh - c.ph + i, iw = ow * c.sw - c.pw + jj;
      const bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
      if (!inside && c.zero_pad) continue;  // 0 padding: the tap contributes nothing
      // outside the image a +-1 padded tap reads the pad word (+1: zeros; -1: the valid bits)
      const uint64_t* xw = inside ? c.x + ((n * c.H + ih) * c.W + iw) * c.KW : c.pad_word;
      for (int64_t k = 0; k < c.KW; ++k) {
        const int64_t at = ((static_cast<int64_t>(i) * c.kw + jj) * c.KW + k) * kBlock + q;
        const uint64_t active = (mj ? mj[at] : ~0ull) & valid_bits(c.cin, k);
        D += popcount64(active) - 2 * popcount64((xw[k] ^ wj[at]) & active);
      }
    }
  return D;
}

// One work item (conv_impl.h's ItemPos): kBlock output channels x one output row, value by value.
void reference_item(const ConvCtx& c, int64_t item) {
  const ItemPos at = item_position(c, item);
  for (int64_t ow = 0; ow < c.OW; ++ow) {
    const int64_t pix = (at.n * c.OH + at.oh) * c.OW + ow;
    uint32_t bits = 0;
    for (int q = 0; q < at.nc; ++q) {
      const int64_t o = at.o0 + q;
      float acc = 0.0f;
      for (int j = 0; j < c.J; ++j)
        acc = epilogue::plane_term(acc, c.mu[j * c.cpad + o], static_cast<float>(conv_dot(c, j, o, at.n, at.oh, ow)));
      const float y = reference_output(acc, c.scale[o], c.bias[o], c.residual ? c.residual + pix * c.cout + o : nullptr,
                                       c.prelu ? c.prelu + o : nullptr, c.cmin, c.cmax);
      if (c.out_f) c.out_f[pix * c.cout + o] = y;
      bits |= static_cast<uint32_t>(epilogue::sign_operand(y, c.thr ? c.thr[o] : 0.0f) < 0.0f) << q;
    }
    if (c.out_bits) store_block_bits(c, at, pix, bits);
  }
}

// Weight plane j's dot product for channel ch at output pixel (n, oh, ow) of a depthwise layer.
int64_t depthwise_dot(const DepthwiseCtx& c, int j, int64_t ch, int64_t n, int64_t oh, int64_t ow) {
  const int64_t k = ch / 64, bit = ch % 64;
  int64_t D = 0;
  for (int i = 0; i < c.kh; ++i)
    for (int jj = 0; jj < c.kw; ++jj) {
      const int64_t ih = oh * c.sh - c.ph + i, iw = ow * c.sw - c.pw + jj;
      const bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
      if (!inside && c.pad_value == 0) continue;
      const int64_t at = (static_cast<int64_t>(j) * c.taps + i * c.kw + jj) * c.KW + k;
      if (c.m && !((c.m[at] >> bit) & 1)) continue;  // inactive weight
      const int x = inside ? ((c.x[((n * c.H + ih) * c.W + iw) * c.KW + k] >> bit) & 1 ? -1 : 1) : c.pad_value;
      D += x * ((c.w[at] >> bit) & 1 ? -1 : 1);
    }
  return D;
}

// One output row of a depthwise layer, value by value.
void reference_depthwise_row(const DepthwiseCtx& c, int64_t row) {
  const int64_t n = row / c.OH, oh = row % c.OH;
  for (int64_t ow = 0; ow < c.OW; ++ow) {
    const int64_t pix = (n * c.OH + oh) * c.OW + ow;
    for (int64_t k = 0; k < c.KW; ++k) {
      uint64_t bits = 0;
      for (int64_t ch = 64 * k; ch < c.C && ch < 64 * (k + 1); ++ch) {
        float acc = 0.0f;
        for (int j = 0; j < c.J; ++j)
          acc = epilogue::plane_term(acc, c.mu[j * c.C + ch], static_cast<float>(depthwise_dot(c, j, ch, n, oh, ow)));
        const float y = reference_output(acc, c.scale[ch], c.bias[ch], nullptr, c.prelu ? c.prelu + ch : nullptr,
                                         c.cmin, c.cmax);
        if (c.out_f) c.out_f[pix * c.C + ch] = y;
        bits |= static_cast<uint64_t>(epilogue::sign_operand(y, c.thr ? c.thr[ch] : 0.0f) < 0.0f) << (ch % 64);
      }
      if (c.out_bits) c.out_bits[pix * c.KW + k] = bits;
    }
  }
}

// Sign packing by definition: bit = (x + thr) < 0, one value at a time.
void reference_pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out) {
  const int64_t KW = (C + 63) / 64;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t k = 0; k < KW; ++k) {
      uint64_t word = 0;
      for (int64_t ch = 64 * k; ch < C && ch < 64 * (k + 1); ++ch)
        word |= static_cast<uint64_t>((thr ? x[p * C + ch] + thr[ch] : x[p * C + ch]) < 0.0f) << (ch % 64);
      out[p * KW + k] = word;
    }
}

}  // namespace

const Isa& isa_reference() {
  // (No popcount loop of its own: the peak probe is the portable path's.)
  static const Isa isa{kKernelNames[kReference], &reference_item, &reference_depthwise_row, isa_portable().peak,
                       &reference_pack_rows};
  return isa;
}

}  // namespace onebit
