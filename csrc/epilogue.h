// The fused output transform of a binary layer (its "epilogue"): the float32 operations and
// their order, written once.  Every kernel path evaluates it through these functions, for one
// channel at a time (V = float) or for a vector of channels (V = a GCC vector of floats such as
// __m256 / __m512, whose operators act lane-wise and whose ?: selects lanes), as does the
// reference path (isa_reference.cpp), the integer forms derived from it (conv.cpp's sign
// intervals, depthwise.cpp's tables) and tests/cpp/engine_check.cpp.  The Python oracle is
// onebit.deploy.kernels._reference_transform.
//
// Per output channel, for a layer with weight planes j of scale mu_j and integer dot products D_j:
//   acc = 0 + mu_0 * D_0 (+ mu_1 * D_1 ...)         plane_term, the planes in order
//   y   = acc * scale + bias                          affine (folded BatchNorm)
//   y   = y + residual                                a block's shortcut (float output only)
//   y   = y < 0 ? y * slope : y                       PReLU
//   y   = min(max(y, cmin), cmax)                     clamp, as (y < cmin ? cmin : y) then (> cmax)
// float output y, or the bit (y + threshold) < 0 (sign_operand, then a compare with 0).
//
// The build disables FMA contraction (-ffp-contract=off), so scalar and vector code round alike;
// comparisons are false for NaN in both (C's < and >, and GCC's vector compares).
#pragma once

#include <cstdint>

#if defined(__GNUC__)
#define ONEBIT_INLINE inline __attribute__((always_inline))
// Vectors are returned by value from always-inline functions only: no ABI crosses a call.
#pragma GCC diagnostic ignored "-Wpsabi"
#else
#define ONEBIT_INLINE inline
#endif

namespace onebit {
namespace epilogue {

// One weight plane's term: acc + mu * D, with D (exact in float32) converted by the caller.  The
// first plane starts from acc = 0 (0 + x turns -0 into +0, as the reference does).
template <class V>
ONEBIT_INLINE V plane_term(const V& acc, const V& mu, const V& d) {
  return acc + mu * d;
}

template <class V>
ONEBIT_INLINE V affine(const V& acc, const V& scale, const V& bias) {
  return acc * scale + bias;
}

template <class V>
ONEBIT_INLINE V prelu(const V& y, const V& slope) {
  const V scaled = y * slope;
  return y < V{} ? scaled : y;
}

template <class V>
ONEBIT_INLINE V clamp(const V& y, const V& cmin, const V& cmax) {
  const V v = y < cmin ? cmin : y;
  return v > cmax ? cmax : v;
}

// The whole transform after the planes' accumulation, to the float output.  Residual / Prelu:
// whether the layer has them (the operand is not read otherwise).  A slope of 1 gives y for every
// y, so callers may also pass Prelu with ones rather than branch.
template <bool Residual, bool Prelu, class V>
ONEBIT_INLINE V output(const V& acc, const V& scale, const V& bias, const V& residual, const V& slope, const V& cmin,
                       const V& cmax) {
  V y = affine(acc, scale, bias);
  if (Residual) y = y + residual;
  if (Prelu) y = prelu(y, slope);
  return clamp(y, cmin, cmax);
}

// The bits output: bit = sign_operand(y, threshold) < 0.  A threshold of 0 gives the bit y < 0 for
// every y (-0 and NaN included), so callers may pass zeros rather than branch.
template <class V>
ONEBIT_INLINE V sign_operand(const V& y, const V& threshold) {
  return y + threshold;
}

// One channel from its one-plane dot product D, with every operand optional as in a Transform
// (nullptr: absent): the scalar form that the integer forms tabulate or bisect.
ONEBIT_INLINE float one_plane_value(int64_t D, float mu, float scale, float bias, const float* slope, float cmin,
                                    float cmax) {
  const float acc = plane_term(0.0f, mu, static_cast<float>(D));
  if (slope) return output<false, true>(acc, scale, bias, 0.0f, *slope, cmin, cmax);
  return output<false, false>(acc, scale, bias, 0.0f, 0.0f, cmin, cmax);
}

}  // namespace epilogue
}  // namespace onebit
