// Training-time activation quantizers, forward and backward, in one pass over the activations where
// the formula allows (torch takes one pass per op: ReCU's standardised ApproxSign costs ~16 passes per
// binary layer and step). Float32, contiguous, CPU only; the Python layer (onebit.methods.functional,
// onebit.methods.recu) checks the tensors, allocates the outputs and keeps the torch formulas as the
// fallback and the test oracle. Work is split over `num_threads` threads of the engine's pool; every
// element and every row is computed the same way whatever the thread count, so the results do not
// depend on it.
//
// The element-wise arithmetic is torch's, operation for operation (this file is compiled without
// FMA contraction; std::fma where torch's AVX2/AVX-512 kernels fuse), so the element-wise results are
// bit-identical to the torch formulas on such CPUs; only the row sums (mean, sum of squares,
// sum g_a*a) are taken in another order (double accumulators).
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>

namespace onebit {

// onebit's sign of x + shift[c]: +1 where x + shift >= 0 (-0.0 and NaN included), -1 below. x is
// (outer, channels, inner) row-major; shift (channels) may be null (plain sign).
void activation_sign(const float* x, const float* shift, int64_t outer, int64_t channels, int64_t inner, float* out,
                     int num_threads);

// ApproxSign's gradient at v = x + shift[c] (shift may be null), torch's formula operation for
// operation: inside = (v <= -b || v >= b) ? 0 : g (b = 1 + FLT_EPSILON: hardtanh_backward's open
// interval, i.e. |v| <= 1), out = fma((-2)*inside, |v|, inside*2) (addcmul as torch's AVX2/AVX-512
// kernels compute it).
void approx_sign_grad(const float* g, const float* x, const float* shift, int64_t outer, int64_t channels,
                      int64_t inner, float* out, int num_threads);

// approx_sign_grad with shift (not null) and also the shift's gradient: sums[c] = the sum of out over
// outer and inner at channel c (ReActNet's threshold, autograd's sum_to_size), taken in double per
// (outer, channel) span and then over outer in order, so it does not depend on the thread count.
void approx_sign_grad_sum(const float* g, const float* x, const float* shift, int64_t outer, int64_t channels,
                          int64_t inner, float* out, float* sums, int num_threads);

// XNOR-Net++'s output scale Gamma = c (x) h (x) w on a convolution's output y (N, C, H, W; w null for
// conv1d: W = 1): out = ((y*c[ch])*h[i])*w[j], torch's order of products (bit-identical); where code
// is not null, also the int16 copy of y (y is then an exact integer that fits: the caller checks).
// out may be y itself (scaled in place, the code taken first).
void spatial_scale(const float* y, const float* c, const float* h, const float* w, int64_t n, int64_t channels,
                   int64_t height, int64_t width, float* out, int16_t* code, int num_threads);

// Its backward given the incoming gradient g and the unscaled product (float y, or its int16 code when
// y is null): out = g*s[i][j] with s = h[i]*w[j] (torch's grad*spatial, bit-identical) and
// per_sample[ch][i][j] = sum over n of g*y (double, in n order; torch: (grad*y).sum(0) in float).
void spatial_scale_backward(const float* g, const float* y, const int16_t* code, const float* h, const float* w,
                            int64_t n, int64_t channels, int64_t height, int64_t width, float* out,
                            float* per_sample, int num_threads);

// ReCU's per-sample standardisation forward, per row of x (rows x n): mean m = sum x / n, centred
// sum of squares sq (double accumulators, rounded to float), std = sqrt(sq/dof + eps) in float;
// out = sign(x/std) (the binary input), mean[r] = m, std[r] = std.
void standardize_sign_rows(const float* x, int64_t rows, int64_t n, float dof, float eps, float* out, float* mean,
                           float* std, int num_threads);

// sign(x/std[r]) per row: the binary input rebuilt in backward from the kept x and std.
void scaled_sign_rows(const float* x, const float* std, int64_t rows, int64_t n, float* out, int num_threads);

// The gradient of sign(x/std) with the ApproxSign derivative taken at a = x/std, through the
// standardisation (recu.py StandardizedApproxSTE.grad): per row, g_a = approx_sign_grad(g, a),
// coef = (sum g_a*a)/dof, out = fma(-(a - m/std), coef, g_a)/std.
void standardized_approx_grad_rows(const float* g, const float* x, const float* mean, const float* std, int64_t rows,
                                   int64_t n, float dof, float* out, int num_threads);

// BNN's clip-STE int8 code of n floats: sign(x)*(|x| > 1 ? 2 : 1) (sign +1 where x >= 0), and back:
// out = the code clamped to [-1, 1] as float (the binary input); clip_unpack returns whether any
// |code| > 1 (some |x| > 1, whose gradient the clip mask stops).
void clip_pack(const float* x, int64_t n, int8_t* code, int num_threads);
bool clip_unpack(const int8_t* code, int64_t n, float* out, int num_threads);

// Binds the functions above into the engine module (raw addresses, as the other training kernels).
void bind_train_activations(nanobind::module_& mod);

}  // namespace onebit
