"""Helpers shared by the benchmark scripts (plain torch: usable whichever onebit tree a script imports)."""

import torch


def trained_looking_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm2d of ``model`` a trained network's statistics instead of the untrained identity:
    with mean 0 and var 1 an integer accumulator of exactly 0 meets the next sign unshifted, where torch's
    float sums leave ±1e-9 noise, so comparisons with PyTorch would flip signs at those ties by chance."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.3, 0.3)
    return model
