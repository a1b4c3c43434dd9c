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
// sign(v) is +1 for v >= 0 (-0.0 included) and NaN, -1 below (onebit's sign). Always written: z (rows x n),
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

// Element-wise surrogate gradients of the smooth weight quantizers (the forward values stay torch's):
//  kSineGrad    out = (g*cos(p0*x))*p0                 (d/dx sin(p0*x): BiPer's wave sin(omega*W))
//  kSwishGrad   out = ((s*(1-s))*(2 + b*((1-s) - s))*(2*p0))*g, b = p0*x, s = sigmoid(b)   (SignSwish)
//  kFourierGrad out = ((|x| <= 1 ? g : 0)*r)*p2, r = sin(t*p1)/(sin(t)*2) with t = clamp(x,-1,1)*p0,
//               r = p1/2 where that is 0/0 (FDA: p0 = omega < pi, p1 = 2(n+1), p2 = 4*omega/pi)
//  kEdeSurrogateGrad out = ((g*p0)*(1 - y*y))*p1, y = tanh(p1*x)   (IR-Net's EDE on activations, k = p0,
//               t = p1: torch's tanh_backward(g*k, tanh(t*x))*t; tanh as tanh_rows)
// sin/cos: SLEEF's u35 method (reduction by pi in four parts, one polynomial: at most 3 ulp, measured 2.2, for |argument| <= 8192; beyond, libm's sin/cos);
// sigmoid from exp(-|b|) (at most 3 ulp above b = -87; below, exp(-87) = 1.6e-38 at most where torch
// gives subnormals).
enum SurrogateKind : int { kSineGrad = 0, kSwishGrad = 1, kFourierGrad = 2, kEdeSurrogateGrad = 3 };
void surrogate_grad(int kind, const float* g, const float* x, int64_t n, float p0, float p1, float p2, float* out,
                    int num_threads);

// FDA's training quantizer with its noise-adaptation term (Xu et al., NeurIPS 2021; onebit.methods.fda),
// element-wise over x (rows x n: one row per output channel of a weight, scale[r] its detached mean|W|;
// an activation is one row with scale null, s = 1):
//   out = (sign(x) + alpha*(h + 0.1*sin(x)))*s  without FMA contraction, torch's order of operations:
//         the torch formula's value wherever sin(x) rounds alike (sin: the kernels' approximation);
//   backward, gs = g*s:  grad_h = gs*alpha (skipped where grad_h is null);
//         grad_x = ((|x| <= 1 ? gs : 0)*r)*p2 + ((gs*alpha)*0.1)*cos(x), r the Fourier ratio of kFourierGrad
//         (p0 = omega < pi, p1 = 2(n+1), p2 = 4*omega/pi).
// sin/cos of |x| > 8192 (or not finite) by libm.
void fda_value(const float* x, const float* h, int64_t rows, int64_t n, const float* scale, float alpha, float* out,
               int num_threads);
// fda_value of a weight with its scale taken in the same pass: scale_out[r] = mean |x| of row r (summed in
// double, rounded to float; torch's per_channel_mean_abs sums in float), then the row's value with it.
void fda_value_mean_abs(const float* x, const float* h, int64_t rows, int64_t n, float alpha, float* out,
                        float* scale_out, int num_threads);
void fda_backward(const float* g, const float* x, int64_t rows, int64_t n, const float* scale, float alpha, float p0,
                  float p1, float p2, float* grad_x, float* grad_h, int num_threads);

// BiPer's weight and loss term (Vargas et al., CVPR 2024; onebit.methods.biper) over n floats, a = omega*w:
//   biper_wave: out = sin(a), or sign(sin(a)) where binary; returns sum sin(a)^2 (double), the loss term's
//               tau*mean(sin^2(omega*W)) before tau/n;
//   biper_wave_backward: out = (g*cos(a))*omega + loss_factor*(2*sin(a)*cos(a)) (g null: the first term is 0),
//               loss_factor = g_loss*tau*omega/n: the wave's gradient and the loss term's in one pass.
double biper_wave(const float* w, int64_t n, float omega, bool binary, float* out, int num_threads);
void biper_wave_backward(const float* g, const float* w, int64_t n, float omega, float loss_factor, float* out,
                         int num_threads);

// sin (kind 0), cos (1) or sigmoid (2) over n floats with the kernels' approximations (for the tests).
void math_rows(int kind, const float* x, int64_t n, float* out, int num_threads);

// PC++'s SignSwish weight quantizer (BNN++, PC++ BNN+) per output channel's row of w (rows x n), with
// alpha (rows; null: 1) its detached scale: out = v(w/alpha)*alpha, v = SS_beta (kSwishValue),
// sign(SS_beta) (kSwishSignOfSwish) or sign (kSwishSign); the backward is
// ((g*alpha)*SS'_beta(w/alpha))/alpha, autograd's chain through the division, SS and the product.
enum SwishWeightKind : int { kSwishValue = 0, kSwishSignOfSwish = 1, kSwishSign = 2 };
void swish_weight(int kind, const float* w, int64_t rows, int64_t n, const float* alpha, float beta, float* out,
                  int num_threads);
void swish_weight_backward(const float* g, const float* w, int64_t rows, int64_t n, const float* alpha, float beta,
                           float* out, int num_threads);

}  // namespace onebit
