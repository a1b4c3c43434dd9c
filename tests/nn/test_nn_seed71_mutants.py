"""Unbatched inputs of the 1-D binary layers, as torch's Conv1d and Linear take them (seed-71 mutation
sample, issue 21: BinaryConv1d added the batch axis at position 1 instead of 0 and no test noticed,
because the one unbatched test was a Conv2d's)."""

from __future__ import annotations

import pytest
import torch

from onebit.nn import BinaryConv1d, BinaryLinear


@pytest.mark.parametrize("method", ["bnn", "xnor", "reactnet"])
def test_an_unbatched_conv1d_input_is_one_sample(method):
    torch.manual_seed(0)
    layer = BinaryConv1d(3, 4, 3, padding=1, method=method)
    x = torch.randn(3, 10)  # (channels, length): no batch axis
    y = layer(x)
    assert y.shape == (4, 10)
    assert torch.equal(y, layer(x.unsqueeze(0))[0])


def test_an_unbatched_linear_input_is_one_sample():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 5, method="bnn")
    x = torch.randn(6)
    assert torch.equal(layer(x), layer(x.unsqueeze(0))[0])
