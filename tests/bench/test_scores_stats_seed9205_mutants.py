"""A NaN accuracy's binomial standard error (issue 21: single-file sample 9205 of ``bench/stats.py``,
hunting, not an honest sample: the clip ``max(acc / 100, 0.0)`` written ``max(0.0, acc / 100)``
survived). An accuracy that was never measured has an unknown standard error, NaN, and so has every
interval built on it; the swapped clip would turn it into p = 0 and a standard error of 0, a claim of
perfect certainty."""

from __future__ import annotations

import math

from onebit.bench import stats as S


def test_a_nan_accuracy_has_a_nan_standard_error():
    assert math.isnan(S.binomial_se(float("nan"), 1000))
    assert math.isnan(S.gap_noise(float("nan"), 1000, 80.0, 1000))
    assert math.isnan(S.resolvable_difference(float("nan"), 1000, seeds=3))
    # the clip still holds for real accuracies outside 0-100
    assert S.binomial_se(-5.0, 100) == 0.0 and S.binomial_se(105.0, 100) == 0.0
