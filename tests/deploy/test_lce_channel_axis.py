"""ReActNet's blocks and PReLU on sequences in the LCE export: the channel axis is torch's dim 1, or the last
dim with ``features_last`` (tokens), and the exported graph broadcasts each per-channel vector along it.
Before the fix, ``features_last`` was ignored (wrong values on (N, C, C) inputs, an interpreter failure on
(N, L, C)), PReLU on (N, C, L) did not prepare, and RSign on a 3-D input failed to export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn.blocks import LearnableBias, RPReLU, RSign

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _lce_matches_torch(net: nn.Module, x: torch.Tensor) -> None:
    net.eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():  # distinct per-channel values: a wrong axis changes the output
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
        want = net(x)
    fed = x.permute(0, 2, 3, 1) if x.dim() == 4 else x  # the interpreter takes images as NHWC
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(fed.numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("block", [LearnableBias, RPReLU, RSign])
@pytest.mark.parametrize("tokens", [3, 4])  # 4: as many tokens as features (the axis mix-up ran silently)
def test_features_last_blocks_shift_the_last_axis(block, tokens):
    x = torch.randn(2, tokens, 4, generator=torch.Generator().manual_seed(tokens))
    _lce_matches_torch(nn.Sequential(block(4, features_last=True), nn.Linear(4, 2)), x)


@pytest.mark.parametrize("block", [nn.PReLU, RPReLU, RSign])
def test_channel_first_blocks_on_a_sequence(block):
    x = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    _lce_matches_torch(nn.Sequential(block(4), nn.Flatten(), nn.Linear(20, 2)), x)


def test_features_last_on_a_feature_map_kept_in_nhwc():
    """After a conv the LCE graph keeps (N, C, H, W) as NHWC: torch's last dim (W) is TFLite's axis 2."""
    x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(1))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), LearnableBias(5, features_last=True), nn.Flatten(), nn.Linear(100, 2))
    _lce_matches_torch(net, x)
