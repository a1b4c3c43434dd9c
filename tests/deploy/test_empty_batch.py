"""A packed model answers an empty batch as torch does — an empty output of the right shape and dtype —
instead of an error from deep inside the engine's kernels (which need at least one row)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import onebit
from onebit.deploy import export


def _net(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Hardtanh(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                             nn.Hardtanh(), nn.Linear(8, 3))
    else:
        body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return onebit.binarize(body, "bnn").eval()


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net("linear")

    def forward(self, x):
        y = self.net(x)
        return {"logits": y, "both": (y, y.argmax(dim=1))}


@pytest.mark.parametrize("kind,shape", [("linear", (6,)), ("conv", (3, 5, 5))])
def test_an_empty_batch_gives_an_empty_output(kind, shape):
    net = _net(kind)
    packed = export(net)
    x = torch.zeros(0, *shape)
    out = packed(x)
    assert out.shape == net(x).shape == (0, 3) and out.dtype == torch.float32
    full = torch.randn(2, *shape)
    torch.testing.assert_close(packed(full), net(full))  # the model still runs non-empty batches after it


def test_an_empty_batch_through_a_container_output():
    net = _Pair().eval()
    packed = export(net)
    out = packed(torch.zeros(0, 6))
    assert out["logits"].shape == (0, 3)
    assert out["both"][0].shape == (0, 3) and out["both"][1].shape == (0,) and out["both"][1].dtype == torch.int64
