"""HBNN option checks that a mutation run showed no test reached (tools/mutate.py, seed 11)."""

from __future__ import annotations

import math

import pytest

from onebit.nn import BinaryLinear


@pytest.mark.parametrize("mix", [(0.7, math.nan, 0.3), (0.7, "0.2", 0.1), (0.7, True, 0.3)])
def test_hbnn_mix_with_one_bad_entry_is_refused(mix):
    # Every entry must be a finite number: one NaN among valid fractions sums to NaN, which no later
    # check (negative? sums to 1?) would notice.
    with pytest.raises(ValueError, match="mix"):
        BinaryLinear(4, 4, method="hbnn", bits=(1, 2, 3), mix=mix)
