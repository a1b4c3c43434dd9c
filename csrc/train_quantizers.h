// Training-time weight quantizers, forward and backward, one output channel's row at a time: a row
// (a few hundred floats) stays in L1 while all of its passes run, so a whole forward or backward
// costs about one pass over memory instead of one per torch op. Float32, contiguous, CPU only; the
// Python layer (onebit.methods.functional) checks the tensors, allocates the outputs and keeps the
// torch formulas as the fallback and the test oracle. Rows are split over `num_threads` threads;
// every row is computed the same way whatever the thread count, so the results do not depend on it.
#pragma once

#include <cstdint>

namespace onebit {

// Standardisation of each row of w (rows x n): mean m, centred c = w - m, sq = sum c^2 (double
// accumulators, rounded to float), then one of two divisors, and z = c / divisor:
//  * kLibra (IR-Net's Libra-PB): var = sq/(n-1); divisor = sqrt(var) where var > 0, else 1 (also for
//    n = 1); scale = 2^round(log2(mean|z|)); out = sign(z)*scale; factor = scale*k*t/divisor;
//    through = 1 where var > 0, else 0.
//  * kRecu (ReCU): divisor = sqrt(sq/dof + eps)/(2*sqrt(2)) (dof = n-1, or 1 for n = 1);
//    out = sign(z); factor = 1/divisor; through = 1; abs_sum = sum |z| (for the global Q_tau).
// sign(v) is +1 for v >= 0 (-0.0 included), -1 below, NaN for NaN. Always written: z (rows x n),
// z_mean, factor, through (rows); abs_sum (rows) when not null.
enum StandardizeKind : int { kLibra = 0, kRecu = 1 };
void standardize_rows(int kind, const float* w, int64_t rows, int64_t n, float k, float t, float eps,
                      float* z, float* out, float* z_mean, float* factor, float* through, float* abs_sum,
                      int num_threads);

// The gradient through an element-wise derivative and the standardisation, per row:
//  gs = d(z)*g with
//    kEdeGrad:    (g*factor)*(1 - tanh(t*z)^2)          (IR-Net's EDE, the order of torch's tanh_backward)
//    kWindowGrad: g*(|z| <= q ? factor : 0)               (ReCU's clamp window, q = Q_tau)
//  coef = (sum gs*z)/dof * through; centring = mean(gs) - z_mean*coef;
//  out = (gs - z*coef) - centring.
enum DerivativeKind : int { kEdeGrad = 0, kWindowGrad = 1 };
void standardize_backward_rows(int kind, const float* g, const float* z, const float* z_mean, const float* factor,
                               const float* through, float param, double dof, int64_t rows, int64_t n, float* out,
                               int num_threads);

// tanh over n floats with the kernels' approximation (at most 2 ulp from the correctly rounded
// value; exact +-1 for |x| >= 9.02, where tanh rounds to +-1 in float; tanh(-0) = -0; NaN -> NaN):
// exposed so that the tests can check it against torch over the whole float range.
void tanh_rows(const float* x, int64_t n, float* out, int num_threads);

}  // namespace onebit
