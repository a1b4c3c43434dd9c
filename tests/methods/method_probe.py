"""Shared probe for hand-checked method tests: one input row through a one-output BinaryLinear."""

import torch


def run(layer, x):
    """(output, ∂y/∂x, ∂y/∂W) of ``layer`` on the single row ``x``."""
    x = torch.tensor([x], requires_grad=True)
    y = layer(x)
    y.sum().backward()
    return y.detach()[0, 0].item(), x.grad[0].tolist(), layer.weight.grad[0].tolist()
