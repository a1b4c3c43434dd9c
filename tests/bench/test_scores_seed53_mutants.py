"""A scoring detail that the seed-53 mutation sample (tools/mutate.py) found untested: a sensitivity run
without its full-precision baseline is named in the error as a sensitivity run of its arch and task."""

from __future__ import annotations

import pytest

from onebit.bench.scores import MissingBaselineError, leaderboard


def _grid_run(run, method: str, acc: float, lr: float, seed: int = 0):
    record = run(method, acc, role="sensitivity", arch="conv1d", task="mnist1d", seed=seed)
    record.config["hparams"] = {**record.config["hparams"], "lr": lr}
    return record


def test_a_missing_sensitivity_baseline_is_named_with_its_role_arch_and_task(run):
    recs = [run("fp", 95.0), run("bnn", 85.0)]  # the main track is complete
    recs += [_grid_run(run, "fp", 90.0, 0.1), _grid_run(run, "bnn", 80.0, 0.1)]
    recs += [_grid_run(run, "bnn", 81.0, 0.01, seed=4)]  # its FP twin at lr 0.01, seed 4 never ran
    with pytest.raises(MissingBaselineError) as info:
        leaderboard(recs, bootstrap=10)
    text = str(info.value)
    assert "1 full-precision baseline run(s) missing" in text
    assert "(role=sensitivity, arch=conv1d, task=mnist1d, seed=4, hparams=" in text
    assert '"lr": 0.01' in text
