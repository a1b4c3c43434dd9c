"""binarize()'s layer options reach a linear layer (seed-101 honest mutation sample: the filter of
``LINEAR_LAYER_OPTIONS`` inverted survived): ``binarize_weights``/``binarize_activations`` apply to linear
and convolutional layers alike, and ``pad_value`` only to convolutions (a linear layer does not pad)."""

from __future__ import annotations

import pytest
from torch import nn

import onebit
from onebit.nn import BinaryConv2d, BinaryLinear


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("flag", ["binarize_weights", "binarize_activations"])
def test_a_linear_layer_takes_the_binarize_flags(flag):
    model = onebit.binarize(_model(), "bnn", keep_full_precision=[], **{flag: False})
    conv, linear = model[0], model[2]
    assert type(conv) is BinaryConv2d and type(linear) is BinaryLinear
    assert getattr(linear, flag) is False and getattr(conv, flag) is False
    other = "binarize_activations" if flag == "binarize_weights" else "binarize_weights"
    assert getattr(linear, other) is True


def test_pad_value_reaches_convolutions_only():
    model = onebit.binarize(_model(), "bnn", keep_full_precision=[], pad_value=1.0)
    assert model[0].pad_value == 1.0
    assert not hasattr(model[2], "pad_value") or model[2].pad_value == 0.0
