"""A layer with no weights (zero input or output features) is refused when it is binarized, in one line
that says what to do, instead of failing deep inside a method's per-channel scale or a native kernel at
the first forward (a reshape of 0 elements, "bad arguments", a null address)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import onebit
from onebit.methods.base import available
from onebit.nn import BinaryConv2d, BinaryLinear


@pytest.mark.parametrize("method", available())
@pytest.mark.parametrize("make", [lambda: nn.Linear(0, 3), lambda: nn.Linear(3, 0), lambda: nn.Conv2d(0, 4, 3),
                                  lambda: nn.Conv2d(4, 0, 3), lambda: nn.Conv1d(0, 2, 1)],
                         ids=["linear-no-inputs", "linear-no-outputs", "conv-no-inputs", "conv-no-outputs", "conv1d"])
def test_binarize_refuses_a_layer_without_weights(method, make):
    with pytest.raises(ValueError, match=r"has no weights to binarize .* keep this layer full precision"):
        onebit.binarize(nn.Sequential(make()), method, keep_full_precision=[])


@pytest.mark.parametrize("layer", [lambda: BinaryLinear(0, 3, method="recu"),
                                   lambda: BinaryConv2d(3, 0, 3, method="irnet")])
def test_the_layers_refuse_it_themselves(layer):
    with pytest.raises(ValueError, match=r"weight shape \((3, 0|0, 3, 3, 3)\)"):
        layer()


def test_an_empty_first_layer_kept_full_precision_is_left_alone():
    model = onebit.binarize(nn.Sequential(nn.Linear(0, 3), nn.Linear(3, 4), nn.Linear(4, 2)), "bnn")
    assert type(model[0]) is nn.Linear and type(model[1]) is BinaryLinear
    assert model(torch.zeros(2, 0)).shape == (2, 2)
