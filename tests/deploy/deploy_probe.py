"""Shared by the deploy tests: give an untrained model the statistics of a trained one, so that an
export which dropped or mis-folded BatchNorm, a PReLU slope or a threshold cannot pass by accident."""

from __future__ import annotations

import torch
from torch import nn

import onebit


def finish_training(model: nn.Module, method: str) -> None:
    """Bring a model to its deployable state: every schedule at its end (as after the last epoch), then
    each method's finalize (BiPer's stage 2, the hard sign at the end of PC++/BNN++)."""
    onebit.schedule_step(model, 10, 10)
    onebit.finalize(model)


class Residual(nn.Module):
    """A full-precision 3x3 conv + BN added to its (pooled, at stride 2) input, then Hardtanh."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.Hardtanh()
        self.pool = nn.AvgPool2d(2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.pool(x))


def randomize_norms(model: nn.Module) -> None:
    """BatchNorm running statistics and affine parameters, and PReLU slopes, away from their inits."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)
