"""LCE export geometry the other LCE tests never meet (found by tools/mutate.py): a 5x5 binary conv
with padding 2 and a 3x3 one padded only along the width (the explicit-padding arithmetic), a
full-precision conv with unequal strides, and an
average pool with count_include_pad=False (TFLite's SAME average), then a flatten of a multi-channel
spatial map into a linear head. Compared with PyTorch through LCE's interpreter."""

import pytest
import torch
from deploy_probe import randomize_norms
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def model():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=(2, 1), padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
        BinaryConv2d(8, 8, 5, padding=2, method="bireal"), nn.BatchNorm2d(8),
        BinaryConv2d(8, 8, 3, padding=(0, 1), method="bireal"), nn.BatchNorm2d(8),
        nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        nn.Flatten(), nn.Linear(8 * 2 * 5, 10),
    )
    randomize_norms(net)
    return net.eval()


def test_unusual_geometry_matches_pytorch():
    net = model()
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    interp = lce.interpreter(lce.to_lce_bytes(net, x, lce_zero_padding=True))
    got = torch.from_numpy(interp.predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
