"""Blocks that binary architectures need besides the binary layers: ReActNet's learnable shifts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..methods.functional import approx_sign, sign, ste

__all__ = ["LearnableBias", "RSign", "RPReLU"]


class LearnableBias(nn.Module):
    """A learnable per-channel shift ``x + b`` (ReActNet's ``LearnableBias``, init 0).

    ``features_last=True`` puts the channel on the last dimension (tokens of a transformer)."""

    def __init__(self, channels: int, features_last: bool = False) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.features_last = features_last

    def forward(self, x: Tensor) -> Tensor:
        if self.features_last or x.dim() <= 2:
            return x + self.bias
        return x + self.bias.reshape((1, -1) + (1,) * (x.dim() - 2))


class RSign(nn.Module):
    """ReActNet's RSign (Liu et al., ECCV 2020, Eq. 2): ``sign(x + b)`` with a learnable per-channel
    threshold and the ApproxSign derivative ``max(0, 2 − 2|x + b|)``. Output is exactly ±1."""

    def __init__(self, channels: int, features_last: bool = False) -> None:
        super().__init__()
        self.shift = LearnableBias(channels, features_last)

    def forward(self, x: Tensor) -> Tensor:
        shifted = self.shift(x)
        return ste(sign(shifted), approx_sign(shifted))


class RPReLU(nn.Module):
    """ReActNet's RPReLU (Eq. 3): ``PReLU(x − γ) + ζ`` with per-channel γ, ζ and PReLU slope
    (slope init 0.25 as torch's PReLU, shifts init 0)."""

    def __init__(self, channels: int, features_last: bool = False) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels, features_last)
        self.prelu = nn.PReLU(channels)
        self.shift_out = LearnableBias(channels, features_last)
        self.features_last = features_last

    def forward(self, x: Tensor) -> Tensor:
        x = self.shift_in(x)
        if self.features_last and x.dim() > 2:
            # nn.PReLU puts channels at dim 1; move the feature dim there and back.
            x = self.prelu(x.movedim(-1, 1)).movedim(1, -1)
        else:
            x = self.prelu(x)
        return self.shift_out(x)
