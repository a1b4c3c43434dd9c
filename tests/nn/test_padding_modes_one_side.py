"""A reflect/replicate/circular padding on one axis only (issue 21, the honest sample of seed 73: the
"is there any padding" check turned into "is every side padded" survived, and a layer padded along the
height alone then skipped its padding). The binary layer pads its real input before binarization, as
torch's ``nn.Conv2d``/``nn.Conv1d`` do for these modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onebit.methods.functional import sign
from onebit.nn import BinaryConv1d, BinaryConv2d


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [(1, 0), (0, 2), (2, 1), (1, 1)])
def test_a_padding_mode_on_one_axis_pads_the_real_input_there(mode, padding):
    torch.manual_seed(0)
    layer = BinaryConv2d(2, 3, 3, padding=padding, padding_mode=mode, bias=False, method="bnn")
    x = torch.randn(2, 2, 6, 7)
    pads = (padding[1], padding[1], padding[0], padding[0])
    expected = F.conv2d(sign(F.pad(x, pads, mode=mode)), sign(layer.weight))
    out = layer(x)
    assert out.shape == (2, 3, 4 + 2 * padding[0], 5 + 2 * padding[1])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_a_padding_mode_of_a_1d_layer(mode):
    torch.manual_seed(1)
    layer = BinaryConv1d(2, 3, 3, padding=2, padding_mode=mode, bias=False, method="bnn")
    x = torch.randn(2, 2, 9)
    expected = F.conv1d(sign(F.pad(x, (2, 2), mode=mode)), sign(layer.weight))
    assert torch.equal(layer(x), expected)
