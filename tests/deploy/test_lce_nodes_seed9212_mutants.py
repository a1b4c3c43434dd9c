"""The LCE exporter's padding route (``deploy/_lce_nodes.py``; issue 21: single-file sample 9212, hunting,
not an honest sample, on the fast LCE tests): a binary conv padded like TFLite's SAME (stride 1, odd
kernel, padding k // 2) with a +1 pad value runs as one ``LceBconv2d`` with SAME padding, as LCE's
converter writes it; the height's torch output size off by one (mutant) sent it to the explicit-padding
route, which computes the same numbers through extra operators: only the file's operators tell. And
RSign and RPReLU exported as modules of their own add their learned per-channel shifts (mutant: the
arguments of ``channel_vec`` swapped)."""

from __future__ import annotations

import pytest
import torch
from test_lce_bmaxpool_floor_mutants import _op_names
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

tflite = pytest.importorskip("tflite")
pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


@pytest.mark.parametrize("hw", [(8, 8), (6, 9)])
def test_a_same_padded_binary_conv_is_one_bconv(hw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), BinaryConv2d(8, 16, 3, 1, 1, method="bireal", pad_value=1.0),
                          nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16 * hw[0] * hw[1], 4)).eval()
    x = torch.randn(2, 3, *hw)
    buf = lce.to_lce_bytes(model, x)
    names = _op_names(buf)
    assert names[:3] == ["CONV_2D", "LceQuantize", "LceBconv2d"], names  # no PAD before the bconv
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


class ShapeReader(nn.Module):
    """RSign and RPReLU as modules of their own (not folded into a binary conv), then a flatten by
    ``y.shape[0]``."""

    def __init__(self):
        super().__init__()
        from onebit.nn.blocks import RPReLU, RSign

        self.conv, self.rprelu, self.rsign = nn.Conv2d(3, 8, 3, padding=1), RPReLU(8), RSign(8)
        self.fc = nn.Linear(8 * 6 * 6, 4)
        with torch.no_grad():
            for p in (self.rprelu.shift_in.bias, self.rprelu.shift_out.bias, self.rsign.shift.bias):
                p.uniform_(-0.5, 0.5)

    def forward(self, x):
        y = self.rsign(self.rprelu(self.conv(x)))
        return self.fc(y.reshape(y.shape[0], -1))


def test_rsign_rprelu_and_a_shape_attribute_run_as_in_torch():
    torch.manual_seed(1)
    model = ShapeReader().eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(model, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())

