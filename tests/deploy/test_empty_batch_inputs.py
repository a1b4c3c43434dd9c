"""An empty batch beside an input that is not batched (issue 21, the honest sample of seed 73: "any input
is an empty batch" turned into "every input is" survived, since every test model took one input). The
packed model must still answer with an empty output instead of running the engine on zero rows."""

from __future__ import annotations

import torch
from torch import nn

import onebit
from onebit.deploy import export


class _Shifted(nn.Module):
    """A binarized MLP on ``x + shift``: ``x`` is batched, ``shift`` (one value per feature) is not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = onebit.binarize(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Hardtanh(),
                                                 nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Hardtanh(),
                                                 nn.Linear(8, 3)), "bnn")

    def forward(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self.net(x + shift)


def test_an_empty_batch_beside_an_unbatched_input():
    net = _Shifted().eval()
    packed = export(net)
    shift = torch.linspace(-1, 1, 6)
    out = packed(torch.zeros(0, 6), shift)
    assert out.shape == net(torch.zeros(0, 6), shift).shape == (0, 3) and out.dtype == torch.float32
    full = torch.randn(4, 6)
    torch.testing.assert_close(packed(full, shift), net(full, shift))
