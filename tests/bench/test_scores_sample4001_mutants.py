"""Scoring details that a single-file mutation sample of bench/ found untested (tools/mutate.py
``--file scores.py --file stats.py --file metrics.py --sample 20 --seed 4001``; not an honest sample): a
run that recorded no ``deployable`` metric is not deployable (a trained cell's and a deployment network's),
a deployment record without per-thread latencies is one cell at thread count 0, the span of the runs starts
at the earliest known time (any positive one), and a test set of one sample still resamples."""

from __future__ import annotations

import numpy as np
import pytest

from onebit.bench import stats as S
from onebit.bench.scores import leaderboard


def test_a_run_without_a_deployable_metric_is_not_deployable(run):
    """Latencies without ``deployable``: the trained cell has no inference score and no latency."""
    recs = [run("fp", 95.0, latency_ms=2.0, file_bytes=40000.0),
            run("bnn", 85.0, latency_ms=0.5, latency_fp32_ms=2.0, file_bytes=2000.0)]
    lb = leaderboard(recs, bootstrap=10)
    (cell,) = lb.cells
    assert not cell.deployable and cell.latency_bi is None and cell.latency_ratio is None
    assert lb.row("bnn").scores["infer"] is None
    recs[1].metrics["deployable"] = 1.0  # the same run, deployed: now it has the ratio
    assert leaderboard(recs, bootstrap=10).cells[0].latency_ratio == pytest.approx(4.0)


def test_a_deployment_record_without_deployable_or_thread_latencies(run):
    """An inference record that measured nothing per thread is one cell at threads 0, not deployable
    when it lacks the ``deployable`` metric."""
    recs = [run("fp", 95.0), run("bnn", 85.0),
            run("bnn", 0.0, role="inference", arch="bireal18", task="random224", bits=(1, 1), file_bytes=1e6),
            run("xnor", 0.0, role="inference", arch="bireal18", task="random224", bits=(1, 1), deployable=1.0,
                latency_ms=3.0)]
    lb = leaderboard(recs, bootstrap=10)
    cells = {d.method: d for d in lb.deployment}
    assert set(cells) == {"bnn", "xnor"}
    assert cells["bnn"].threads == 0 and not cells["bnn"].deployable and cells["bnn"].file_bi == 1e6
    assert cells["xnor"].threads == 0 and cells["xnor"].deployable and cells["xnor"].latency_bi is None


@pytest.mark.parametrize(("starts", "first"), [((1.0, 3.0, 0.0), 1.0), ((0.5, 2.0), 0.5), ((0.0, 0.0), 0.0)])
def test_the_runs_start_at_the_earliest_known_time(run, starts, first):
    recs = [run("fp", 95.0, seed=i) for i in range(len(starts))] + \
        [run("bnn", 85.0, seed=i) for i in range(len(starts))]
    for r, t in zip(recs, starts * 2):
        r.started, r.finished = t, (t + 10.0 if t > 0 else 0.0)
    meta = leaderboard(recs, bootstrap=10).meta
    assert meta["started"] == first
    assert meta["finished"] == (max(starts) + 10.0 if max(starts) > 0 else 0.0)


def test_a_one_sample_test_set_still_resamples():
    """n = 1: each re-measured accuracy is 0 % or 100 % (one sample, right or wrong), drawn with the
    stored accuracy as its probability — not the accuracy repeated as for an unknown size."""
    draws = S.binomial_draws(np.random.default_rng(3), np.array([30.0, 100.0]), 1, 2000)
    assert set(np.unique(draws[:, 0])) == {0.0, 100.0}
    assert draws[:, 0].mean() == pytest.approx(30.0, abs=4.0)
    assert np.all(draws[:, 1] == 100.0)
