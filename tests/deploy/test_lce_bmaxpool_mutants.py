"""LCE's bit-packed max-pool (``LceBMaxPool2d``: VALID padding, no dilation) only where it computes the
layer (issue 21: single-file sample 7003 of ``_lce_nodes.py`` — not an honest sample — read a padding or
dilation pair's height from its width): a max-pool between two binary convolutions padded in one axis
only stays a float max-pool and the file computes what PyTorch does; one dilated in one axis only is
refused as every dilated max-pool is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _model(pool: nn.Module, x: torch.Tensor | None = None) -> nn.Sequential:
    """binary conv (sign-bit output through thresholds) → the pool → binary conv: the pool reads bits."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        BinaryConv2d(8, 32, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(32), nn.Hardtanh(),
        pool,
        BinaryConv2d(32, 8, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(8), nn.Hardtanh(),
        nn.Flatten(), nn.LazyLinear(4),
    )
    with torch.no_grad():
        model(X if x is None else x)
        for bn in (model[2], model[6]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("padding", [(1, 0), (0, 1)])
@pytest.mark.parametrize("stride", [2, 3])
def test_a_max_pool_padded_in_one_axis_between_binary_convs(padding, stride):
    """At stride 3 the padded pool's output has the unpadded (VALID) pool's size, 3x3 from 8x8: only
    the padding itself tells them apart."""
    model = _model(nn.MaxPool2d(2, stride=stride, padding=padding))
    with torch.no_grad():
        want = model(X)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(model, X)).predict(X.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("dilation", [(2, 1), (1, 2)])
def test_a_max_pool_dilated_in_one_axis_between_binary_convs_is_refused(dilation):
    """TFLite has no dilated max-pool, bit-packed or not: one clear ExportError, never the plain pool."""
    from onebit.deploy import ExportError

    model = _model(nn.MaxPool2d(2, stride=1, dilation=dilation))
    with pytest.raises(ExportError, match="dilated max-pooling has no TFLite builtin"):
        lce.to_lce_bytes(model, X)
