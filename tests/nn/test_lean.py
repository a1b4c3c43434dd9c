"""The Hardtanh of the zoo's binary networks keeps one int8 per element for backward: same values and
gradients as nn.Hardtanh, bit for bit, on the edge values of its window."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from onebit.nn.lean import MIN_NUMEL, keep_int8_for_backward

EDGES = [-3e38, -2.0, -1.0 - 2**-23, -1.0, -1.0 + 2**-24, -0.5, -0.0, 0.0, 1e-30, 0.3, 1.0 - 2**-24, 1.0,
         1.0 + 2**-23, 2.0, 3e38, float("inf"), float("-inf")]


def saved_of(module, x):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        module(x)
    return saved


@pytest.mark.parametrize("inplace", [False, True])
def test_values_and_gradients_equal_nn_hardtanh(inplace):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor(EDGES), torch.randn(MIN_NUMEL, generator=g) * 1.5])
    grad = torch.randn(x.shape, generator=g)
    results = []
    for module in (nn.Hardtanh(inplace=inplace), keep_int8_for_backward(nn.Hardtanh(inplace=inplace))):
        xin = x.clone().requires_grad_(True)
        y = module(xin * 1.0)  # a non-leaf, so the in-place form is allowed
        y.backward(grad)
        results.append((y.detach(), xin.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    # ... and the window is the open interval (−1, 1): the gradient stops at exactly ±1
    edge_grad = results[1][1][: len(EDGES)] != 0
    assert edge_grad.tolist() == [False, False, False, False, True, True, True, True, True, True, True, False,
                                  False, False, False, False, False]


def test_it_keeps_int8_and_only_for_the_default_window():
    x = torch.randn(4, MIN_NUMEL // 4, requires_grad=True)
    lean = keep_int8_for_backward(nn.Hardtanh())
    # The hook is inside our own saved-tensor hooks: what autograd keeps is what lean's pack returned.
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = lean(x)
    assert kept == []  # the inner (lean) hooks took the save, not the outer ones
    assert out.grad_fn is not None
    other = keep_int8_for_backward(nn.Hardtanh(-2.0, 2.0))
    assert [t.dtype for t in saved_of(other, x)] == [torch.float32]  # another window: left as torch's
    with torch.no_grad():
        assert torch.equal(lean(x), x.clamp(-1, 1))
    small = torch.randn(4, 8, requires_grad=True)  # below MIN_NUMEL: torch's own float save
    assert [t.dtype for t in saved_of(lean, small)] == [torch.float32]


def test_the_zoo_networks_hardtanh_is_still_an_nn_hardtanh_and_exports():
    from onebit import deploy, models

    torch.manual_seed(0)
    net = models.create("resnet20", method="bnn")
    acts = [m for m in net.modules() if isinstance(m, nn.Hardtanh)]
    assert acts and all(type(m) is nn.Hardtanh for m in acts)  # export recognises it by exact type
    x = torch.randn(4, 3, 32, 32)  # 4 x 16 x 32 x 32 = MIN_NUMEL: the first stage's Hardtanh inputs
    net.train()
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if isinstance(m, nn.Hardtanh):
            m._forward_pre_hooks.clear()
            m._forward_hooks.clear()
    # (lean's hooks are innermost, so the outer hooks of saved_of see every save but the Hardtanh's)
    floats = [sum(t.is_floating_point() and t.numel() >= 2 * 16 * 8 * 8 for t in saved_of(n, x)) for n in (plain, net)]
    assert floats[0] - floats[1] == 1 + 6  # the stem's and the first stage's (later stages are smaller)
    net(x).sum().backward()  # trains
    net.eval()
    packed = deploy.export(net)
    torch.testing.assert_close(packed(x), net(x), rtol=1e-4, atol=1e-3)


def test_rejects_other_modules():
    with pytest.raises(TypeError, match="nn.Hardtanh"):
        keep_int8_for_backward(nn.ReLU())


def _hardtanh_then_binary_conv(method, lean, mutate=False):
    """x -> Hardtanh (lean or torch's) -> a binary convolution; returns the Hardtanh's output, what
    its backward reads in x's place (unpacked before backward), and the gradients of x and of every
    parameter."""
    from onebit.nn import BinaryConv2d

    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method=method, bias=False)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 8, 32, 64, generator=g) * 1.5).requires_grad_(True)  # MIN_NUMEL elements
    with torch.no_grad():
        x[0, 0, 0, :4] = torch.tensor([1.0, -1.0, 1.0 - 2**-24, 0.0])
    act = keep_int8_for_backward(nn.Hardtanh()) if lean else nn.Hardtanh()
    h = act(x * 1.0)
    hardtanh_backward = h.grad_fn
    if mutate:
        h.mul_(0.5)  # changed in place after the Hardtanh, before the layer keeps it
    out = conv(h)
    saved = hardtanh_backward._saved_self if lean else None
    out.backward(torch.randn(out.shape, generator=g))
    return h, saved, x.grad, {n: p.grad for n, p in conv.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["bireal", "reactnet", "recu", "biper", "irnet"])
def test_it_keeps_the_float_output_when_the_binary_layer_keeps_it_anyway(method):
    """A binary layer whose surrogate needs the real input keeps the Hardtanh's output: the Hardtanh then
    keeps that same tensor (no int8 code of its own) and the gradients stay bit-identical."""
    h, saved, gx, grads = _hardtanh_then_binary_conv(method, lean=True)
    assert saved.data_ptr() == h.data_ptr()  # what backward reads is the output's own memory
    h0, _, gx0, grads0 = _hardtanh_then_binary_conv(method, lean=False)
    assert torch.equal(h, h0)
    assert torch.equal(gx, gx0)
    assert grads.keys() == grads0.keys() and all(torch.equal(grads[n], grads0[n]) for n in grads)


def test_it_keeps_its_code_when_the_layer_keeps_only_bytes_or_the_output_was_changed():
    h, saved, _, _ = _hardtanh_then_binary_conv("bnn", lean=True)  # the clip STE keeps int8 codes
    assert saved.data_ptr() != h.data_ptr()
    assert torch.equal(saved, h.detach().to(torch.int8).float())
    h, saved, gx, _ = _hardtanh_then_binary_conv("bireal", lean=True, mutate=True)
    assert torch.equal(saved, (h.detach() * 2).to(torch.int8).float())  # halved: the code, not h
    _, _, gx0, _ = _hardtanh_then_binary_conv("bireal", lean=False, mutate=True)
    assert torch.equal(gx, gx0)
