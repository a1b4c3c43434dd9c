// ProxConnect++'s weight quantizer F = P∘B with its backward quantizer B's gradient (Lu, Yu, Li, Partovi
// Nia, NeurIPS 2023; onebit.methods.proxconnect), one output channel's row at a time, forward and backward
// one pass each instead of torch's chain of ~8 element-wise ops (|W|, the mean, W/α, sign, μ·sign, +,
// clamp, ·α). Float32, contiguous, CPU only; the Python layer checks the tensors, allocates the outputs
// and keeps the torch formulas as the fallback and the test oracle. Rows are split over `num_threads`
// threads, one thread per row: no result depends on the thread count.
//
// Arithmetic: torch's float32 operations in its order (this file is compiled without FMA contraction),
// so every value is bit-identical to the torch formulas given the same α; α itself (the per-row mean
// |W|) is summed here in double, in a fixed order, and rounded once (torch sums in float32), so it can
// differ from torch's by an ulp or so, and every value scaled by it by as much.
#pragma once

#include <cstdint>

namespace onebit {

// The forward value v(u) of u = w/α (u = w where alpha is null):
//  kPcppSign: sign(u) (+1 for u >= 0, -0.0 and NaN included: onebit's sign);
//  kPcppProx: the proximal quantizer clamp(u + mu*sign(u), -1, 1) (NaN stays NaN, as torch's clamp).
// out = v(u)*α (out = v(u) where alpha is null). alpha (rows, may be null): with alpha_given the row
// scales to use, else written: α_r = mean |w_r| (double sum, rounded once). out may be null (kPcppSign
// or kPcppProx with alpha written and out null: the scales only).
enum PcppValueKind : int { kPcppSign = 0, kPcppProx = 1 };
void pcpp_weight(int kind, const float* w, int64_t rows, int64_t n, float* alpha, bool alpha_given, float mu,
                 float* out, int num_threads);

// The latent weight's gradient given the output's g: autograd's chain through ·α, B's derivative at u
// and /α: out = B'(u)·(g*α)/α with
//  kPcppIdentityGrad: B = identity: (g*α)/α;
//  kPcppClipGrad:     B = clip to [-1, 1]: ((|u| <= 1 ? g*α : 0))/α (hardtanh_backward's test, NaN passes);
// (alpha null: g, or the clip mask times g).
enum PcppGradKind : int { kPcppIdentityGrad = 0, kPcppClipGrad = 1 };
void pcpp_weight_backward(int kind, const float* g, const float* w, int64_t rows, int64_t n, const float* alpha,
                          float* out, int num_threads);

}  // namespace onebit
