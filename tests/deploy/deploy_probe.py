"""Shared by the deploy tests: give an untrained model the statistics of a trained one, so that an
export which dropped or mis-folded BatchNorm, a PReLU slope or a threshold cannot pass by accident."""

from __future__ import annotations

import torch
from torch import nn


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
