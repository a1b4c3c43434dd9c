"""Method behaviour that no other test reached (survivors of tools/mutate.py's fresh samples)."""

from __future__ import annotations

import torch

from onebit.nn import BinaryLinear


def test_recu_fan_in_of_one_standardizes_to_finite_values():
    """ReCU standardizes each weight row by its unbiased variance; a row of one weight has none, so
    onebit takes the biased value 0 there (recu.unbiased_var) instead of torch's NaN."""
    torch.manual_seed(0)
    layer = BinaryLinear(1, 3, method="recu")
    x = torch.randn(4, 1, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(layer.weight.grad).all() and torch.isfinite(x.grad).all()
