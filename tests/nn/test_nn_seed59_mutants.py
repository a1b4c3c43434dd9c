"""Details that the seed-59 mutation sample (tools/mutate.py, issue 21) found untested in onebit.nn:
``binarize``'s ``keep_full_precision`` given as one name or one module type (not a list), a custom
method's ``scale_output`` reached through the fused quantized product (it must get the layer, then the
output), the lean Hardtanh under ``torch.jit.trace`` (no saved-tensor hooks while tracing), and the
summary's operation counts as integers (a grouped convolution's ``in_channels // groups``)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import onebit
from onebit.methods import Method, functional
from onebit.nn import BinaryConv2d, BinaryLayer, BinaryLinear
from onebit.nn.lean import MIN_NUMEL, keep_int8_for_backward


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Hardtanh(), nn.Linear(8, 8), nn.Hardtanh(), nn.Linear(8, 3))


@pytest.mark.parametrize(("keep", "full"), [("first", [0]), ("last", [4]), ("2", [2]), ("*", [0, 2, 4]),
                                            (nn.Linear, [0, 2, 4])])
def test_keep_full_precision_takes_one_name_or_one_type(keep, full):
    """A single string is one name or pattern (not its characters), a single class one module type."""
    model = onebit.binarize(_mlp(), "bnn", keep_full_precision=keep)
    binary = [i for i in (0, 2, 4) if isinstance(model[i], BinaryLayer)]
    assert binary == [i for i in (0, 2, 4) if i not in full]


class _SignsWithGain(Method):
    """sign(W)·sign(x) with a fused input quantizer, and a per-layer output gain (``layer.gain``) applied
    by ``scale_output`` — which has no factor form, so the layer applies it after the fused product."""

    name = "test-signs-gain"

    def quantize_weight(self, layer, w):
        return functional.ste(functional.sign(w), functional.clip(w))

    def input_quantizer(self, layer, x):
        return functional.QuantizerCall(x, functional.ClipSTE, (None,))

    def scale_output(self, layer, y):
        return y * layer.gain


def _signs(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0)


def test_a_custom_scale_output_gets_the_layer_and_the_fused_output():
    torch.manual_seed(0)
    linear = BinaryLinear(4, 3, bias=False, method=_SignsWithGain())
    conv = BinaryConv2d(2, 3, 3, padding=1, bias=False, method=_SignsWithGain())
    linear.gain, conv.gain = 0.25, 3.0
    x, image = torch.randn(5, 4, requires_grad=True), torch.randn(2, 2, 5, 5)
    y = linear(x)
    assert torch.equal(y.detach(), 0.25 * _signs(x.detach()) @ _signs(linear.weight.detach()).T)
    y.sum().backward()  # ClipSTE's gradient through the gain: 0.25·Σ_o sign(W_oi) where |x| ≤ 1
    inside = (x.detach().abs() <= 1).float()
    torch.testing.assert_close(x.grad, 0.25 * inside * _signs(linear.weight.detach()).sum(0), rtol=0, atol=1e-6)
    want = 3.0 * nn.functional.conv2d(_signs(image), _signs(conv.weight.detach()), padding=1)
    torch.testing.assert_close(conv(image).detach(), want, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*is deprecated:DeprecationWarning")
def test_a_lean_hardtanh_traces_as_a_plain_hardtanh():
    """While tracing (and exporting) the lean Hardtanh takes no saved-tensor hooks, so torch.jit.trace's
    check (the graph traced twice must agree) passes and the traced module is torch's Hardtanh."""
    lean = keep_int8_for_backward(nn.Hardtanh())
    x = (torch.randn(4, MIN_NUMEL // 4) * 1.5).requires_grad_(True)  # large enough for the int8 code
    traced = torch.jit.trace(lean, (x,))
    kinds = [node.kind() for node in traced.graph.nodes()]
    assert "aten::hardtanh" in kinds and "aten::to" not in kinds
    y = traced(x)
    assert torch.equal(y.detach(), x.detach().clamp(-1, 1))
    y.sum().backward()
    assert torch.equal(x.grad, ((x.detach() > -1) & (x.detach() < 1)).float())


def test_operation_counts_are_integers_for_grouped_convolutions():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                          nn.Flatten(), nn.Linear(8 * 16, 2))
    s = onebit.summary(onebit.binarize(model, "bnn", keep_full_precision=["0"]), (4, 4, 4))
    first, second = s.layers[0], s.layers[1]
    assert type(first.macs_fp) is int and first.macs_fp == 8 * 16 * 9 * 2  # (4 / 2 groups) inputs per output
    assert type(second.macs_binary) is int and second.macs_binary == 8 * 16 * 9 * 2
    totals = s.totals
    assert type(totals["fp_macs"]) is int and type(totals["bops"]) is int
    assert f"FP MACs: {totals['fp_macs']:,}" in str(s) and ".0 " not in str(s)
    assert json.loads(json.dumps(s.as_dict()))["layers"][0]["macs_fp"] == 2304


def test_a_summary_built_from_its_layers_counts_no_other_parameters():
    """A Summary assembled by hand from layer summaries (as a tool combining two models' rows would) has
    no parameters outside them until it is told (single-file sample 6005, not honest: the default
    ``other_params = 0`` → ``1`` survived, since summary() always sets it)."""
    from onebit.nn.summary import Summary

    s = onebit.summary(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), (4,))
    assert s.other_params == 6  # BatchNorm's weight and bias
    by_hand = Summary(layers=list(s.layers))
    assert by_hand.other_params == 0
    assert by_hand.totals["params_32bit"] == 4 * 3 + 3 and Summary().totals["params_32bit"] == 0
