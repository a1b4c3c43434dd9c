// Zero padding of a regular (groups 1) binary convolution.  The kernels read a padded input
// position as +1 (an all-zero word) whatever the padding value, so at a border pixel of a
// zero-padded layer the popcount sum S has counted the padded taps as +1 inputs; the correction
// corr is the sum of the active weight signs at those taps, and the pixel's dot product is
// D = base - (2 S + corr) (base: the active weight bits over all taps).  The sum over the padded
// taps is all taps minus the rectangle of in-image taps, four lookups in the per-plane 2-D prefix
// sums over the taps that Weights::wsum_prefix holds (built once per layer by
// build_tap_sign_prefix).  (Depthwise layers skip padded taps instead: depthwise_impl.h.)
#pragma once

#include <cstdint>

#include "epilogue.h"  // ONEBIT_INLINE

namespace onebit {

// P (kh+1, kw+1, cpad), zeroed by the caller: [a][b][o] = sum over taps (i, j) with i < a, j < b of
// wsum[o][i * kw + j] (wsum (cout, kh*kw): the sum of output channel o's active weight signs at tap
// (i, j)); padded channels stay 0.
inline void build_tap_sign_prefix(const int32_t* wsum, int64_t kh, int64_t kw, int64_t cout, int64_t cpad,
                                  int32_t* P) {
  const int64_t taps = kh * kw;
  for (int64_t a = 1; a <= kh; ++a)
    for (int64_t b = 1; b <= kw; ++b)
      for (int64_t o = 0; o < cout; ++o)
        P[(a * (kw + 1) + b) * cpad + o] = wsum[o * taps + (a - 1) * kw + (b - 1)] +
                                           P[((a - 1) * (kw + 1) + b) * cpad + o] +
                                           P[(a * (kw + 1) + b - 1) * cpad + o] -
                                           P[((a - 1) * (kw + 1) + b - 1) * cpad + o];
}

// corr[q] for kBlock channels from P (one plane's prefix sums, at the block's first channel): the
// taps (i, j) in [i0, i1) x [j0, j1) lie inside the image, every other tap reads padding.
template <int kChannels>
ONEBIT_INLINE void zero_padding_correction(const int32_t* P, int64_t kh, int64_t kw, int64_t cpad, int64_t i0,
                                           int64_t i1, int64_t j0, int64_t j1, int32_t* corr) {
  const int64_t prow = (kw + 1) * cpad;
  const int32_t* all = P + kh * prow + kw * cpad;
  if (i0 >= i1 || j0 >= j1) {  // no tap inside
    for (int q = 0; q < kChannels; ++q) corr[q] = all[q];
    return;
  }
  const int32_t* a11 = P + i1 * prow + j1 * cpad;
  const int32_t* a01 = P + i0 * prow + j1 * cpad;
  const int32_t* a10 = P + i1 * prow + j0 * cpad;
  const int32_t* a00 = P + i0 * prow + j0 * cpad;
  for (int q = 0; q < kChannels; ++q) corr[q] = all[q] - (a11[q] - a01[q] - a10[q] + a00[q]);
}

// The first tap index of a kernel of k taps placed at input position first (possibly outside
// [0, n)) that is inside, and one past the last: [lo, hi).
ONEBIT_INLINE void taps_inside(int64_t first, int64_t k, int64_t n, int64_t* lo, int64_t* hi) {
  *lo = first < 0 ? -first : 0;
  *hi = n - first < k ? n - first : k;
}

}  // namespace onebit
