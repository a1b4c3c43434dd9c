"""The NaN/inf guard (``onebit.deploy._finite``) on the input sizes at its edges (issue 21: mutants of its
fast path survived every test): an input of a single value is checked like any other, and an empty batch,
as a tensor or as an array, passes the guard with nothing to mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import onebit
from onebit.deploy import NonFiniteInputError, export
from onebit.deploy._finite import guard_inputs


def _one_feature_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.Hardtanh(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                        nn.Hardtanh(), nn.Linear(8, 3))
    return onebit.binarize(net, "bnn").eval()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_input_of_one_value_is_checked(bad):
    """One sample of one feature: its sum is the value itself, and a NaN there is refused as anywhere."""
    packed = export(_one_feature_net())
    assert torch.isfinite(packed(torch.tensor([[0.5]]))).all()
    with pytest.raises(NonFiniteInputError, match="1 NaN/inf value in sample 0"):
        packed(torch.tensor([[bad]]))
    packed.nonfinite = "propagate"
    assert torch.isnan(packed(torch.tensor([[bad]]))).all()


@pytest.mark.parametrize("policy", ["raise", "propagate"])
def test_an_empty_batch_passes_the_guard_with_nothing_to_mark(policy):
    """Tensor (the packed runtime) or array (the ONNX and LCE runtimes): no sample, no finding."""
    inputs = (torch.empty(0, 3), np.empty((0, 3), np.float32), torch.empty(0, 2, 4, 4))
    cleaned, bad = guard_inputs(inputs, policy, "test")
    assert bad is None and all(a is b for a, b in zip(cleaned, inputs))
