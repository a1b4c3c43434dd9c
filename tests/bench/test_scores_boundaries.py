"""The scoring's smallest legal inputs (mutation survivors of tools/mutate.py): a sensitivity grid of
exactly two points is scored (one point is not: a standard deviation needs two), and ``bootstrap=10``
is the fewest replicates accepted."""

from __future__ import annotations

import pytest

from onebit.bench.scores import leaderboard


def _grid_run(run, method, acc, lr):
    record = run(method, acc, role="sensitivity", n_test=None)
    record.config["hparams"] = {**record.config["hparams"], "lr": lr}
    return record


def _records(run):
    recs = [run("fp", 95.0), run("bnn", 85.0), run("xnor", 86.0)]
    for lr, fp, bnn in ((0.1, 95.0, 80.0), (0.01, 97.0, 90.0)):
        recs += [_grid_run(run, "fp", fp, lr), _grid_run(run, "bnn", bnn, lr)]
    recs.append(_grid_run(run, "xnor", 88.0, 0.1))  # one grid point only
    return recs


def test_a_two_point_grid_is_scored_and_a_one_point_grid_is_not(run):
    lb = leaderboard(_records(run), bootstrap=50)
    assert [s.method for s in lb.sensitivity] == ["bnn"]
    sens = lb.sensitivity[0]
    assert [h["hparams"]["lr"] for h in sens.hparams] == [0.01, 0.1]  # sorted by their JSON keys
    assert sens.acc_bi == [90.0, 80.0] and sens.acc_fp == [97.0, 95.0]
    # population standard deviations: bnn |90 - 80| / 2 = 5, fp |97 - 95| / 2 = 1; ratio std_fp / std_bi
    assert sens.std_bi == pytest.approx(5.0) and sens.std_fp == pytest.approx(1.0)
    assert sens.ratio == pytest.approx(0.2)
    assert lb.row("bnn").std_ratio == pytest.approx(0.2)
    assert lb.row("xnor").std_ratio is None


def test_ten_bootstrap_replicates_is_the_least_accepted(run):
    recs = _records(run)
    lb = leaderboard(recs, bootstrap=10)
    assert [r.method for r in lb.rows] and all(r.overall is not None for r in lb.rows)
    with pytest.raises(ValueError, match="bootstrap must be at least 10 replicates, got 9"):
        leaderboard(recs, bootstrap=9)
