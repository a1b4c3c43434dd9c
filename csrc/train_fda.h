// FDA's whole training-mode quantizer with its noise-adaptation module, fused (Xu et al., NeurIPS
// 2021; onebit.methods.fda): per row x (d floats) of a rows x d tensor, with NA's fc1.weight W1
// (hidden x d) and fc2.weight W2 (d x hidden), hidden = max(1, d/64):
//   pre = W1·x, u = relu(pre), h = W2·u,
//   out = (sign(x) + alpha*(h + 0.1*sin(x)))*s
// (s = the row's mean |x| for a weight, 1 for an activation), and its backward with gs = g*s:
//   gh = gs*alpha (never materialised beyond one row), dW2 += gh ⊗ u, gpre = (W2ᵀ·gh)·1{pre > 0 or NaN},
//   dW1 += gpre ⊗ x, grad_x = Fourier surrogate + ((gs*alpha)*0.1)*cos(x) + W1ᵀ·gpre.
// torch computes the same with nn.Linear's thin GEMMs (N or K = hidden) at a fraction of the
// machine's peak, plus separate element-wise passes and a full rows x d tensor gh; here a row, W1
// and W2 stay in L1/L2 while all of it runs. Float32, contiguous, CPU; the Python layer
// (onebit.methods.fda) checks the tensors and keeps the torch formula as fallback and test oracle.
//
// Determinism: forward rows are independent. Backward rows are grouped into at most kFdaUnits fixed
// units (independent of the thread count), each unit sums its rows' dW1/dW2 in row order into its
// own partial, and the partials are added in unit order: 1 and N threads give the same bits.
// Summation orders differ from MKL's (float, FMA: one accumulator per vector lane in W1·x and W2ᵀ·gh,
// running sums over the rows in dW1 and dW2), so the results agree with torch's to ~1e-6 relative;
// relu's decision can differ only where pre is within rounding of 0. The relu gate is torch's
// threshold_backward: the gradient passes unless relu(pre) <= 0 (a NaN pre passes it).
#pragma once

#include <cstdint>

#include <nanobind/nanobind.h>

namespace onebit {

constexpr int64_t kFdaUnits = 8;

// out (rows x d), pre (rows x hidden, kept for backward), scale_out (rows; null: s = 1, an activation).
void fda_na_forward(const float* x, int64_t rows, int64_t d, const float* w1, const float* w2, int64_t hidden,
                    float alpha, float* out, float* pre, float* scale_out, int num_threads);

// The Fourier surrogate's parameters as fda_backward (train_quantizers.h): p0 = omega < pi, p1 = 2(n+1),
// p2 = 4*omega/pi. scale null: s = 1. grad_x, grad_w1 (hidden x d), grad_w2 (d x hidden): null = not wanted.
void fda_na_backward(const float* g, const float* x, int64_t rows, int64_t d, const float* w1, const float* w2,
                     int64_t hidden, const float* pre, const float* scale, float alpha, float p0, float p1, float p2,
                     float* grad_x, float* grad_w1, float* grad_w2, int num_threads);

void bind_train_fda(nanobind::module_& mod);

}  // namespace onebit
