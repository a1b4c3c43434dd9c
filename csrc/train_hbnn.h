// HBNN's weight quantizer (Fromm, Patel, Philipose, NeurIPS 2018): the per-element bit map and the
// residual binarization under it, one row at a time, in a few passes over the row instead of torch's
// ~20 (onebit.methods.hbnn keeps the torch formulas as the fallback and the test oracle). Float32,
// contiguous, CPU only; the Python layer checks the tensors and allocates the outputs.
//
// Arithmetic: every value is computed with the torch path's float32 operations in its order
// (|x|, | |t| - mean |, mu = sum / count, approx = mu*s then += mu_j*s_j, R_{j+1} = R_j - mu_j*s_j;
// sign(v) = -1 for v < 0, else +1), except the sums behind the means: here in double precision, in
// index order, rounded once to float (torch sums in float32 in an order that depends on the ISA and
// on the thread count). A mean can so differ from torch's by an ulp or so, which moves every value
// by that much and can move an element whose distance ties the threshold within a few ulp to the
// other side. Several rows are split over the threads, one thread per row; a single row of 2^17
// elements or more has its passes over 2^17 or more elements split into contiguous parts (the sums by
// fixed blocks, the compacted outputs moved together in order): no result depends on the thread count.
#pragma once

#include <cstdint>

namespace onebit {

constexpr int kHbnnMaxLevels = 8;

// kHbnnPaper: Algorithm 1's map: for level L = 1, 2, ... the counts[L-1] of the elements still
//   unassigned whose distance | |x| - mean_R |x| | (mean over the unassigned ones) is smallest stop at
//   L bits; ties at the threshold go to the lower index. Then the residual binarization under it.
// kHbnnResidual: at level L the active elements' mu_L = mean |R_L|; the counts[L-1] whose | |R_L| - mu_L |
//   is smallest stop at L (same tie rule).
// kHbnnGivenMap: the residual binarization under `bitmap` (input): level 1 over every element, level
//   j >= 2 over the elements with bitmap >= j.
enum HbnnMode : int { kHbnnPaper = 0, kHbnnResidual = 1, kHbnnGivenMap = 2 };

// x: rows x n; counts: `levels` stop counts per row (sum n; not read for kHbnnGivenMap); bitmap:
// rows x n int8 (written, or read for kHbnnGivenMap); approx: rows x n; scales: kHbnnMaxLevels x rows,
// mu_j of row r at scales[(j-1)*rows + r], 0 for the levels a row does not use.
// max_abs (rows floats, may be null): max |x| of each row (the clip STE's gradient is the identity on a row
// with max |x| <= 1), taken in the pass that writes approx.
// Returns the largest bit level of any row (>= 1), or 0 when x holds a non-finite value or a given map
// a level above kHbnnMaxLevels (the outputs are then unspecified: take the torch path).
int hbnn_binarize(int mode, const float* x, int64_t rows, int64_t n, const int64_t* counts, int levels,
                  int8_t* bitmap, float* approx, float* scales, float* max_abs, int num_threads);

// The passes run AVX-512 or AVX2 code, the widest the CPU has, and scalar loops elsewhere, with the same
// results. For the tests: hbnn_vector_isa caps them at `widest` (0 the scalar loops, 1 AVX2, 2 AVX-512) and
// returns the one that now runs (the CPU's widest up to the cap); hbnn_scalar_only(on) caps them at the
// scalar loops (on) or lifts the cap, and returns whether the scalar loops now run.
int hbnn_vector_isa(int widest);
bool hbnn_scalar_only(bool on);

}  // namespace onebit
