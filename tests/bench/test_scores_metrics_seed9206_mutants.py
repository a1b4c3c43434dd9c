"""BiBench's robustness ratio of an unknown gap (issue 21: single-file sample 9206 of
``bench/metrics.py``, hunting, not an honest sample: ``max(gap_bi, eps)`` written ``max(eps, gap_bi)``
survived). A NaN gap — an accuracy never measured — leaves the ratio unknown, NaN, on either side; the
swapped floor would read a NaN binarized gap as ``eps`` and report the model ``G_FP / eps`` times as
robust."""

from __future__ import annotations

import math

from onebit.bench import metrics as M


def test_a_nan_gap_gives_a_nan_robustness_ratio():
    nan = float("nan")
    assert math.isnan(M.robustness_ratio(5.0, nan))
    assert math.isnan(M.robustness_ratio(nan, 5.0))
    assert M.robustness_ratio(5.0, -1.0, eps=0.5) == 10.0  # a gain is floored at eps
