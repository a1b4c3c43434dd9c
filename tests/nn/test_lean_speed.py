"""The lean Hardtanh (onebit.nn.lean) makes no int8 code where the layer after it keeps its output anyway:
a binary layer with real activations (the weight-only presets) keeps it for its weight's gradient and
says so (announce_kept), and from the module's second call on the output is kept as it is, without the
cast. Values and gradients stay bit-identical to nn.Hardtanh's; memory and passes are what change."""

from __future__ import annotations

import contextlib
import copy
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from onebit.nn import BinaryConv2d
from onebit.nn.lean import MIN_NUMEL, keep_int8_for_backward


class Int8Outputs(TorchDispatchMode):
    """Counts the ops that produce an int8 tensor (the lean Hardtanh's code)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dtype == torch.int8:
            self.count += 1
        return out


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(4, 8, 32, 64, generator=g) * 1.5).requires_grad_(True)  # MIN_NUMEL elements
    with torch.no_grad():
        x[0, 0, 0, :4] = torch.tensor([1.0, -1.0, 1.0 - 2**-24, 0.0])
    return x, torch.randn(4, 8, 32, 64, generator=g)


def _step(act, conv, x, grad, consume=True, mutate=False):
    """x -> act -> conv (or, with consume False, only a sum: nothing keeps the output); returns the
    output, what the Hardtanh's backward reads (unpacked before backward), x's and conv's gradients
    and the number of int8 tensors made in the forward."""
    x = x.detach().clone().requires_grad_(True)
    conv.zero_grad(set_to_none=True)
    with Int8Outputs() as counter:
        h = act(x * 1.0)
        node = h.grad_fn
        if mutate:
            h.mul_(0.5)
        out = conv(h) if consume else h * 1.0
    saved = node._saved_self if isinstance(act, nn.Hardtanh) and act._forward_hooks else None
    out.backward(grad if out.shape == grad.shape else torch.ones_like(out))
    return h, saved, x.grad, conv.weight.grad, counter.count


@pytest.mark.parametrize("method", ["pcpp-pc", "pcpp-bc", "bnn++"])
def test_a_weight_only_layer_keeps_the_output_and_no_code_is_made_from_the_second_call(method):
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method=method, bias=False)
    assert not conv.binarize_activations
    x, grad = _inputs()
    lean, plain = keep_int8_for_backward(nn.Hardtanh()), nn.Hardtanh()
    for call in range(3):
        h, saved, gx, gw, int8s = _step(lean, conv, x, grad)
        h0, _, gx0, gw0, _ = _step(plain, conv, x, grad)
        assert saved.data_ptr() == h.data_ptr()  # the layer's own kept input, not a code
        assert int8s == (1 if call == 0 else 0)  # the first call still makes its code, then none
        assert torch.equal(h, h0) and torch.equal(gx, gx0) and torch.equal(gw, gw0)


def test_a_layer_that_keeps_bytes_leaves_the_code_in_place():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method="bnn", bias=False)  # the clip STE keeps int8
    x, grad = _inputs()
    lean = keep_int8_for_backward(nn.Hardtanh())
    for _ in range(2):
        h, saved, gx, _, int8s = _step(lean, conv, x, grad)
        assert saved.data_ptr() != h.data_ptr() and int8s >= 1
        assert torch.equal(saved, h.detach().to(torch.int8).float())
    _, _, gx0, _, _ = _step(nn.Hardtanh(), conv, x, grad)
    assert torch.equal(gx, gx0)


def test_an_output_no_longer_kept_by_the_next_layer_is_still_right_and_the_code_comes_back():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method="pcpp-pc", bias=False)
    x, grad = _inputs()
    lean, plain = keep_int8_for_backward(nn.Hardtanh()), nn.Hardtanh()
    _step(lean, conv, x, grad)  # kept by the layer: the next call keeps its output as it is
    h, saved, gx, _, int8s = _step(lean, conv, x, grad, consume=False)  # the guess, not kept by anyone
    assert int8s == 0 and saved.data_ptr() == h.data_ptr()
    _, _, gx0, _, _ = _step(plain, conv, x, grad, consume=False)
    assert torch.equal(gx, gx0)
    h, saved, gx, _, int8s = _step(lean, conv, x, grad, consume=False)  # not kept last time: a code again
    assert int8s == 1 and saved.data_ptr() != h.data_ptr()
    assert torch.equal(gx, gx0)


def test_an_output_kept_on_the_guess_and_changed_in_place_is_an_error_not_a_wrong_gradient():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method="pcpp-pc", bias=False)
    x, grad = _inputs()
    lean = keep_int8_for_backward(nn.Hardtanh())
    _step(lean, conv, x, grad)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _step(lean, conv, x, grad, consume=False, mutate=True)
    # ... and when the layer keeps it and it changes after, torch's own check of the layer's save says so
    _step(lean, conv, x, grad)
    h = lean(x.detach().clone().requires_grad_(True) * 1.0)
    out = conv(h)
    h.mul_(0.5)
    with pytest.raises(RuntimeError, match="inplace"):
        out.sum().backward()


def _hardtanh_keeps_its_code(conv: nn.Module, context=contextlib.nullcontext) -> None:
    """Two steps of Hardtanh -> conv in which the Hardtanh keeps its own code, not its output."""
    x, _ = _inputs()
    lean = keep_int8_for_backward(nn.Hardtanh())
    for _ in range(2):
        h = lean(x.detach().clone().requires_grad_(True) * 1.0)
        node = h.grad_fn
        with context():
            out = conv(h)
        assert node._saved_self.data_ptr() != h.data_ptr()
        out.float().sum().backward()


def test_a_real_activation_layer_with_a_frozen_weight_does_not_claim_the_output():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method="pcpp-pc", bias=False)
    conv.weight.requires_grad_(False)  # the convolution then keeps nothing of its input
    _hardtanh_keeps_its_code(conv)


def test_under_autocast_the_layer_keeps_a_cast_copy_so_the_hardtanh_keeps_its_code():
    torch.manual_seed(0)
    conv = BinaryConv2d(8, 8, 3, padding=1, method="pcpp-pc", bias=False)
    # the conv keeps a bfloat16 copy of its input, so the Hardtanh must keep its int8 code
    _hardtanh_keeps_its_code(conv, partial(torch.autocast, "cpu", dtype=torch.bfloat16))


@pytest.mark.parametrize("method", ["pcpp-pc", "bnn++", "bireal"])
def test_resnet20_steps_equal_those_with_torchs_hardtanh(method):
    """Three SGD steps of the zoo's ResNet-20 with the lean Hardtanh give the same weights, bit for bit,
    as with nn.Hardtanh's own save; the first stage's Hardtanhs make no code after the first step."""
    from onebit import models

    torch.manual_seed(0)
    net = models.create("resnet20", method=method).train()
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if isinstance(m, nn.Hardtanh):
            m._forward_pre_hooks.clear()
            m._forward_hooks.clear()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # stage 1: MIN_NUMEL
    assert 4 * 16 * 32 * 32 == MIN_NUMEL
    y = torch.tensor([0, 3, 5, 9])
    counts = []
    for model in (net, plain):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            with Int8Outputs() as counter:
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            counts.append(counter.count)
    for a, b in zip(net.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    # The stem's and stage 1's 7 Hardtanhs (the later stages' are below MIN_NUMEL): each output goes
    # to a binary conv that keeps its real input, so from the second step on none makes a code.
    assert counts[:3] == [7, 0, 0]
