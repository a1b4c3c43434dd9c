"""The warm-up's end (tools/mutate.py single-file sample ``--seed 4006``, not an honest sample: the warm-up
test ``progress < warm`` turned ``<=`` survived): at exactly ``warmup_epochs`` the warm-up is over and the
schedule proper runs — a step schedule whose first milestone is the warm-up's last epoch has already
decayed there, and the learning rate reaches the value just past it."""

from __future__ import annotations

import pytest

from onebit.train import ScheduleSpec, lr_at


def test_a_milestone_at_the_end_of_the_warm_up_applies_at_that_epoch():
    spec = ScheduleSpec(name="step", warmup_epochs=2.0, milestones=[2, 4], gamma=0.1)
    assert lr_at(spec, 1.0, 6, 1.0) == pytest.approx(0.5)  # halfway through the warm-up
    assert lr_at(spec, 1.0, 6, 1.999) == pytest.approx(0.9995)
    assert lr_at(spec, 1.0, 6, 2.0) == pytest.approx(0.1)  # warm-up over, the milestone at 2 passed
    assert lr_at(spec, 1.0, 6, 4.0) == pytest.approx(0.01)


@pytest.mark.parametrize("warm", [0.5, 1.0])
def test_a_warm_up_of_at_most_one_epoch_still_ramps(warm):
    spec = ScheduleSpec(name="cosine", warmup_epochs=warm)
    assert lr_at(spec, 0.4, 10, warm / 2) == pytest.approx(0.2)
    assert lr_at(spec, 0.4, 10, 0.0) == pytest.approx(0.4e-3)  # from 1e-3 of the rate, never exactly 0
