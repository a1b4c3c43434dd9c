"""The fused product's backward (issue 21, single-file mutation sample ``--seed 8101`` of functional.py, not an
honest sample): the input quantizer's surrogate gradient is taken only when the input or a learnable argument
(ReActNet's threshold) needs it — ``_needs_input_grad``'s ``hasattr(arg_grads) and any(needs)`` turned ``or``
survived, since the extra pass changed no returned value. Each gradient is checked against the formula written
out here (ApproxSign, Liu et al., ECCV 2018, Eq. 6, on ``x + b``)."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import functional as fx


class _CountingShiftedApprox(fx.ShiftedApproxSTE):
    """ReActNet's RSign quantizer, counting its backward passes."""

    calls = 0

    @staticmethod
    def grad(grad, x, kept, shift):
        _CountingShiftedApprox.calls += 1
        return fx.ShiftedApproxSTE.grad(grad, x, kept, shift)


def _layer_inputs(x_grad: bool, shift_grad: bool):
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 5, 5) * 0.8).requires_grad_(x_grad)
    shift = (torch.randn(1, 3, 1, 1) * 0.3).requires_grad_(shift_grad)
    weight = torch.randn(4, 3, 3, 3).requires_grad_(True)
    return x, shift, weight


def _backward(x, shift, weight):
    _CountingShiftedApprox.calls = 0
    call = fx.QuantizerCall(x, _CountingShiftedApprox, (shift,))
    out = fx.quantized_product(call, weight, "conv2d", ((1, 1), (1, 1), (1, 1), 1))
    grad_out = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    out.backward(grad_out)
    return grad_out


def test_no_surrogate_pass_when_neither_the_input_nor_the_threshold_needs_a_gradient():
    x, shift, weight = _layer_inputs(x_grad=False, shift_grad=False)
    grad_out = _backward(x, shift, weight)
    assert _CountingShiftedApprox.calls == 0  # the weight gradient alone needs no input gradient
    xq = torch.where(x + shift >= 0, 1.0, -1.0)
    expected_gw = torch.ops.aten.convolution_backward(
        grad_out, xq, weight.detach(), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]
    torch.testing.assert_close(weight.grad, expected_gw, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("x_grad", "shift_grad"), [(True, False), (False, True), (True, True)])
def test_one_surrogate_pass_when_the_input_or_the_threshold_needs_a_gradient(x_grad, shift_grad):
    x, shift, weight = _layer_inputs(x_grad, shift_grad)
    grad_out = _backward(x, shift, weight)
    assert _CountingShiftedApprox.calls == 1
    grad_xq = torch.nn.functional.conv_transpose2d(grad_out, weight.detach(), padding=1)
    grad_x = grad_xq * torch.clamp(2 - 2 * (x + shift).detach().abs(), min=0.0)  # ApproxSign on x + b
    if x_grad:
        torch.testing.assert_close(x.grad, grad_x, rtol=1e-6, atol=1e-6)
    if shift_grad:
        torch.testing.assert_close(shift.grad, grad_x.sum((0, 2, 3), keepdim=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("learned", [(False, True, True), (True, False, True), (True, True, False),
                                     (False, False, True), (False, True, False), (True, True, True)])
def test_each_spatial_scale_gets_its_own_gradient_whichever_of_the_three_is_learned(learned):
    """XNOR-Net++'s Γ = c ⊗ h ⊗ w (Bulat & Tzimiropoulos, BMVC 2019, Eq. 6) with some factors frozen: each
    learned factor's gradient is Σ of g·y times the other two (autograd on the plain product), a frozen one
    gets none — the spatial backward reads h's and w's own flags, not c's (``needs[2:5]`` for ``[3:5]``)."""
    torch.manual_seed(1)
    x, weight = torch.randn(2, 3, 4, 5), torch.randn(6, 3, 3, 3)
    factors = [torch.rand(6) + 0.5, torch.rand(4) + 0.5, torch.rand(5) + 0.5]
    fused = [f.clone().requires_grad_(need) for f, need in zip(factors, learned)]
    plain = [f.clone().requires_grad_(need) for f, need in zip(factors, learned)]
    call = fx.QuantizerCall(x, fx.ClipSTE, (None,))
    out = fx.quantized_product(call, weight, "conv2d", ((1, 1), (1, 1), (1, 1), 1), tuple(fused))
    y = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), weight, padding=1)
    expected = y * plain[0].reshape(1, -1, 1, 1) * plain[1].reshape(1, 1, -1, 1) * plain[2].reshape(1, 1, 1, -1)
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=1e-6, atol=1e-6)
    grad_out = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    out.backward(grad_out)
    expected.backward(grad_out)
    for got, want, need in zip(fused, plain, learned):
        if need:
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-5)
        else:
            assert got.grad is None
