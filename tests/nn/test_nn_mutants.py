"""nn behaviour that no other test reached (survivors of tools/mutate.py's fresh samples)."""

from __future__ import annotations

from torch import nn

import onebit
from onebit.nn import BinaryLinear


def test_summary_reads_the_models_own_input_shape():
    """summary(model) without input_shape uses the model's ``input_shape`` attribute (the zoo sets it)."""
    net = nn.Sequential(BinaryLinear(4, 3, method="bnn"), nn.ReLU(), nn.Linear(3, 2))
    net.input_shape = (4,)
    assert onebit.summary(net).totals == onebit.summary(net, (4,)).totals
    assert onebit.summary(net).totals["params_1bit"] == 12
