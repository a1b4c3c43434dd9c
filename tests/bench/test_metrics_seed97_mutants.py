"""BiBench's accuracy ratio on either accuracy scale (seed-97 honest mutation sample).

``accuracy_ratio`` is ``A_bi / A_FP`` (BiBench Sec. 3.1) whatever the unit: accuracies given as fractions
in (0, 1] must work as well as percentages; only a full-precision accuracy that is not positive is refused."""

from __future__ import annotations

import math

import pytest

from onebit.bench import metrics as M


@pytest.mark.parametrize(("acc_bi", "acc_fp"), [(0.45, 0.5), (0.9, 1.0), (0.001, 0.002), (45.0, 50.0)])
def test_the_ratio_takes_fractions_and_percentages(acc_bi, acc_fp):
    assert M.accuracy_ratio(acc_bi, acc_fp) == pytest.approx(acc_bi / acc_fp)


@pytest.mark.parametrize("acc_fp", [0.0, -1.0, math.nan])
def test_a_full_precision_accuracy_that_is_not_positive_is_refused(acc_fp):
    with pytest.raises(ValueError, match="must be positive"):
        M.accuracy_ratio(0.5, acc_fp)
