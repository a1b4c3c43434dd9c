"""The fused quantizers' fallbacks that no other test reached (issue 21, found by mutation testing):
the shifted ApproxSign (ReActNet's RSign) whose forward ran natively (keeping no ``x + b``) and whose
backward cannot (the native kernels switched off in between: the torch formula adds ``b`` again), and
the clip STE's int8 code of an empty batch and of float64 inputs (not the native code kernels: the
"every |x| ≤ 1" check on the torch/numpy path). Each gradient is checked against the formula written
out here."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import functional as fx
from onebit.nn import BinaryConv2d, BinaryLinear


def _shifted_input():
    # values on both sides of |x + b| = 1 and of 0, with b = ±0.25 per channel
    x = torch.tensor([[-1.5, -0.9, -0.3, 0.0, 0.2, 0.6, 0.8, 1.4],
                      [0.5, -0.5, 1.0, -1.0, 0.1, -0.1, 0.7, -0.7]])
    shift = torch.tensor([[0.25], [-0.25]])  # per row
    grad = torch.linspace(-1.0, 2.0, 16).reshape(2, 8)
    return x, shift, grad


def _approx_sign_grad(grad, shifted):
    return grad * torch.clamp(2 - 2 * shifted.abs(), min=0.0)


@pytest.mark.parametrize("learned", [False, True])
def test_shifted_approx_sign_gradient_without_the_native_kernel_adds_the_shift_again(monkeypatch, learned):
    """A forward that ran natively keeps no ``x + b`` (``kept`` empty); a backward that cannot run
    natively (here: the kernels switched off) takes the torch formula on ``x + b`` formed again."""
    x, shift, grad = _shifted_input()
    b = shift.clone().requires_grad_(learned)
    out, kept = fx.ShiftedApproxSTE.value(x, b)
    assert torch.equal(out, torch.where(x + shift >= 0, 1.0, -1.0))
    monkeypatch.setattr(fx, "NATIVE_ACTIVATIONS", False)
    gx = fx.ShiftedApproxSTE.grad(grad, x, (), b)
    expected = _approx_sign_grad(grad, x + shift)
    torch.testing.assert_close(gx, expected, rtol=1e-6, atol=1e-7)
    assert expected.abs().sum() > 0 and (expected == 0).any()  # both sides of |x + b| = 1 reached
    (gb,) = fx.ShiftedApproxSTE.arg_grads(gx, (learned,), b)
    if learned:
        torch.testing.assert_close(gb, expected.sum(dim=1, keepdim=True), rtol=1e-6, atol=1e-6)
    else:
        assert gb is None


def test_shifted_approx_sign_through_autograd_with_the_kernels_switched_off_before_backward(monkeypatch):
    x, shift, grad = _shifted_input()
    leaf, b = x.clone().requires_grad_(True), shift.clone().requires_grad_(True)
    out = fx.QuantizerCall(leaf, fx.ShiftedApproxSTE, (b,)).apply()
    monkeypatch.setattr(fx, "NATIVE_ACTIVATIONS", False)
    out.backward(grad)
    expected = _approx_sign_grad(grad, x + shift)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.grad, expected.sum(dim=1, keepdim=True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", [lambda: BinaryLinear(8, 4, method="bnn"),
                                   lambda: BinaryConv2d(3, 4, 3, padding=1, method="bnn")])
def test_an_empty_batch_passes_forward_and_backward(layer):
    torch.manual_seed(0)
    module = layer()
    shape = (0, 8) if isinstance(module, BinaryLinear) else (0, 3, 5, 5)
    x = torch.empty(shape, requires_grad=True)
    y = module(x)
    assert y.shape[0] == 0
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(module.weight.grad, torch.zeros_like(module.weight))


@pytest.mark.parametrize("inside", [True, False])
def test_the_float64_clip_ste_gradient_is_masked_only_outside_one(inside):
    """BNN's gradient ``(g·sign(W))·1{|x| ≤ 1}`` on the numpy code path (float64): an input all within
    [−1, 1] passes the whole gradient, one with entries outside has them zeroed."""
    torch.manual_seed(1)
    layer = BinaryLinear(6, 3, bias=False, method="bnn", dtype=torch.float64)
    x = torch.tensor([[0.5, -1.0, 1.0, -0.25, 0.0, 0.75], [-0.5, 0.9, -0.1, 0.3, -0.8, 0.2]], dtype=torch.float64)
    if not inside:
        x[0, 1], x[1, 3] = -1.5, 2.0
    leaf = x.clone().requires_grad_(True)
    g = torch.tensor([[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]], dtype=torch.float64)
    layer(leaf).backward(g)
    w_sign = torch.where(layer.weight.detach() >= 0, 1.0, -1.0).double()
    expected = (g @ w_sign) * (x.abs() <= 1)
    torch.testing.assert_close(leaf.grad, expected, rtol=1e-12, atol=1e-12)
    assert (leaf.grad == 0).any() != inside
