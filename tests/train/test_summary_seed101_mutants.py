"""summary.json's ``epoch_time_mean`` is the mean of a stage's epoch times (seed-101 honest mutation
sample: ``sum / len`` → ``sum * len`` survived)."""

from __future__ import annotations

import pytest

from onebit.train import trainer


@pytest.mark.parametrize(("values", "mean"), [([2.0], 2.0), ([1.0, 3.0], 2.0), ([0.5, 1.0, 3.0], 1.5)])
def test_the_mean_of_epoch_times(values, mean):
    assert trainer._mean(values) == pytest.approx(mean)


def test_no_epochs_have_no_mean():
    assert trainer._mean([]) is None
