"""Layer names on the torch.export capture path (issue 21, the honest sample of seed 73: ``onebit_name or
path`` turned into ``and`` survived, timing out on the loaded machine). A binary layer built by hand has
no recorded name; ``capture`` names it by its path in the model, so a refusal says which layer it is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import UnsupportedLayerError, export
from onebit.nn import BinaryConv2d


class _ShapeBranch(nn.Module):
    """torch.fx cannot trace the ``if`` on a shape, so export needs ``example_input`` (torch.export)."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(BinaryConv2d(8, 8, 3, padding=dilation, dilation=dilation, bias=False,
                                               method="bnn"), nn.BatchNorm2d(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x))
        return y if x.shape[-1] > 4 else -y


def test_a_hand_built_layer_refused_on_the_capture_path_is_named_by_its_path():
    torch.manual_seed(0)
    net = _ShapeBranch(dilation=2).eval()
    with pytest.raises(UnsupportedLayerError, match=r"layer 'body\.0' \(BinaryConv2d\).*dilation=\(2, 2\)"):
        export(net, example_input=torch.randn(2, 3, 8, 8))


def test_a_hand_built_layer_on_the_capture_path_runs_as_torch_does():
    torch.manual_seed(0)
    net = _ShapeBranch(dilation=1).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(export(net, example_input=x)(x), net(x), rtol=1e-5, atol=1e-5)
