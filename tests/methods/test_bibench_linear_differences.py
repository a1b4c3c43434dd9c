"""The documented differences of onebit's Linear layers from BiBench's Linear classes (README's method table
and the docstrings of dorefa, xnorpp and fda), checked on fixed tensors: BiBench's ``DoReFaLinear`` and
``XNORPlusPlusLinear`` (``bibench/models/layers/{dorefa,xnorplusplus}.py``) written out below, onebit
following BiBench's conv classes instead."""

import torch

from onebit.methods.fda import NoiseAdaptation
from onebit.nn import BinaryLinear

W = torch.tensor([[1.0, 0.5, -2.0], [-1.0, 0.25, 0.75]])
X = torch.tensor([[1.0, -1.0, 0.3], [0.5, 2.0, -0.2]])
C = torch.tensor([1.0, 2.0])  # the loss Σ C_o·y_o, so that no gradient cancels between outputs


class _BlockingQuantizer(torch.autograd.Function):
    """BiBench's ``BinaryQuantizer`` for Linear layers: sign, gradient zeroed where |x| >= 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < 1)


def bibench_linear_grads(weight, x, scaled):
    w = weight.clone().requires_grad_()
    a = x.clone().requires_grad_()
    bw = _BlockingQuantizer.apply(w)
    if scaled:  # DoReFaLinear: bw * mean|W| (detached), after the quantizer
        bw = bw * w.abs().mean(dim=-1, keepdim=True).detach()
    (torch.nn.functional.linear(_BlockingQuantizer.apply(a), bw) * C).sum().backward()
    return w.grad, a.grad


def onebit_linear_grads(method, weight, x):
    layer = BinaryLinear(3, 2, bias=False, method=method)
    with torch.no_grad():
        layer.weight.copy_(weight)
    a = x.clone().requires_grad_()
    (layer(a) * C).sum().backward()
    return layer.weight.grad, a.grad


def test_dorefa_linear_weight_gradient_is_not_scaled_and_passes_at_one():
    w_grad, x_grad = onebit_linear_grads("dorefa", W, X)
    column_sums = C[:, None] * torch.sign(X).sum(dim=0)  # dL/dW[o, i] = C_o·Σ_batch sign(x_i), before the STE
    assert torch.equal(w_grad, column_sums * (W.abs() <= 1))  # not multiplied by mean|W|
    assert w_grad[0, 0] != 0 and w_grad[1, 0] != 0  # |W| = 1 passes
    assert x_grad[0, 0] != 0 and x_grad[0, 1] != 0  # |x| = 1 passes
    ref_w, ref_x = bibench_linear_grads(W, X, scaled=True)
    scale = W.abs().mean(dim=1, keepdim=True)
    assert torch.allclose(ref_w, column_sums * scale * (W.abs() < 1))
    assert ref_w[0, 0] == 0 and ref_x[0, 0] == 0 and ref_x[0, 1] == 0  # DoReFaLinear blocks |x| = 1
    assert torch.allclose(w_grad[0, 1] * scale[0, 0], ref_w[0, 1])  # inside: the factor mean|W| apart


def test_xnorpp_linear_passes_the_gradient_at_one():
    w_grad, x_grad = onebit_linear_grads("xnorpp", W, X)
    ref_w, ref_x = bibench_linear_grads(W, X, scaled=False)
    inside = (W.abs() < 1) & (W.abs() != 1)
    assert torch.equal(w_grad[inside], ref_w[inside])  # the same STE away from |x| = 1
    assert w_grad[0, 0] != 0 and ref_w[0, 0] == 0  # at |W| = 1: onebit passes, XNORPlusPlusLinear blocks
    assert x_grad[0, 0] != 0 and ref_x[0, 0] == 0


def test_fda_noise_adaptation_keeps_one_hidden_unit_below_64_features():
    assert NoiseAdaptation(48).fc1.out_features == 1  # BiBench: 48 // 64 = 0, NA = 0.1·sin(x)
    assert NoiseAdaptation(63).fc1.out_features == 1
    assert NoiseAdaptation(128).fc1.out_features == 2  # = 128 // 64, as BiBench
    torch.manual_seed(0)
    with torch.no_grad():
        na = NoiseAdaptation(48)
        # 64 rows: with 4 the one ReLU unit was off for every row in about 1 draw of 16 (a flaky test)
        x = torch.randn(64, 48)
        assert not torch.allclose(na(x), 0.1 * torch.sin(x))  # its hidden unit contributes
