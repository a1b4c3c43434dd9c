"""A custom method that only overrides ``scale_output`` (single-file mutation sample ``--seed 4008``, not an
honest sample: ``output_scale_factors``' test ``type(self).scale_output is Method.scale_output`` turned
``is not`` survived, because the one such test method ran with float activations, which take no fused
product): with binarized activations the fused product has no factor form of that scale, so the layer
must still apply it itself."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import Method, functional
from onebit.nn import BinaryConv2d, BinaryLinear


class _Signs(Method):
    name = "test-signs"

    def quantize_weight(self, layer, w):
        return functional.ste(functional.sign(w), functional.clip(w))

    def input_quantizer(self, layer, x):
        return functional.QuantizerCall(x, functional.ClipSTE, (None,))


class _HalfGain(_Signs):
    name = "test-half-gain"

    def scale_output(self, layer, y):
        return y * 0.5


def test_a_scale_output_without_factors_is_applied_to_binarized_activations():
    layer = BinaryLinear(3, 2, bias=False, method=_HalfGain())
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, -0.3, 0.1], [-0.4, -0.1, 0.5]]))
    x = torch.tensor([[1.5, -2.0, 0.25], [-0.5, 0.0, -3.0]])
    expected = 0.5 * torch.where(x >= 0, 1.0, -1.0) @ torch.where(layer.weight >= 0, 1.0, -1.0).T
    assert torch.equal(layer(x).detach(), expected)
    assert layer.method.output_scale_factors(layer, ()) is None  # no factor form: the layer applies it


@pytest.mark.parametrize(("method", "gain"), [(_HalfGain(), 0.5), (_Signs(), 1.0)])
def test_conv_output_scale_with_and_without_an_override(method, gain):
    torch.manual_seed(0)
    layer = BinaryConv2d(2, 3, 3, padding=1, bias=False, method=method)
    x = torch.randn(1, 2, 5, 5)
    xs, ws = torch.where(x >= 0, 1.0, -1.0), torch.where(layer.weight.detach() >= 0, 1.0, -1.0)
    expected = gain * torch.nn.functional.conv2d(xs, ws, padding=1)
    torch.testing.assert_close(layer(x).detach(), expected, rtol=0, atol=1e-5)
