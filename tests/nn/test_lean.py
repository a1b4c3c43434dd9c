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
