"""Scoring details that one-line mutants of src/onebit/bench/scores.py changed without a test failing
(tools/mutate.py --sample 30 --seed 11 --area methods --area nn --area train --area bench)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from onebit.bench import stats as S
from onebit.bench.scores import _stability, leaderboard, print_leaderboard


def _seeded(run, method_accs: dict[str, float], seeds: int = 3, **kw):
    return [run(m, a, seed=s, **kw) for s in range(seeds) for m, a in {"fp": 95.0, **method_accs}.items()]


def test_fp_gap_noise_counts_every_seeds_test_samples(run):
    """scores.py:444: the clean FP accuracy is a mean over k seeds of n samples each, so its binomial
    noise is that of n·k samples (n / k would widen the noise band k² times)."""
    corrupt = {f"corrupt/gaussian_noise/{s}": 60.0 for s in (1, 2)}
    recs = _seeded(run, {"bnn": 80.0}, seeds=3, n_test=1000, **corrupt)
    cell = next(c for c in leaderboard(recs, bootstrap=50).cells if c.method == "bnn")
    entry = cell.corruption["gaussian_noise"]
    assert entry["noise_fp"] == pytest.approx(S.gap_noise(95.0, 3000, 60.0, 1000 * 2 * 3))
    assert entry["noise_bi"] == pytest.approx(S.gap_noise(80.0, 3000, 60.0, 1000 * 2 * 3))


def test_a_training_time_on_one_side_only_gives_no_time_ratio(run):
    """scores.py:472: FP runs without ``epoch_time_s`` (e.g. older results): the binarized side's time
    alone gives no speed ratio, and is not an error."""
    recs = _seeded(run, {"bnn": 80.0}, seeds=2)
    for r in recs:
        if r.method == "fp":
            del r.metrics["epoch_time_s"]
    lb = leaderboard(recs, bootstrap=50)
    cell = next(c for c in lb.cells if c.method == "bnn")
    assert cell.time_ratio is None and not cell.time_bi_seeds and cell.epoch_time_bi is None
    assert lb.row("bnn").scores["task"] == pytest.approx(80.0 / 95.0)


def test_training_track_interval_comes_from_the_scored_cells(run):
    """scores.py:709: the bootstrap replicates of the training track use the cells that are scored (not
    the excluded ones): with timings and no excluded cell, the track has an interval around its score."""
    recs = _seeded(run, {"bnn": 80.0, "xnor": 82.0}, seeds=3)
    for r in recs:
        r.metrics["epoch_time_s"] = {"fp": 1.0, "bnn": 2.0, "xnor": 4.0}[r.method] * (1 + 0.1 * r.seed)
    lb = leaderboard(recs, bootstrap=200)
    for method in ("bnn", "xnor"):
        row = lb.row(method)
        assert row.scores["train"] is not None
        lo, hi = row.ci["train"]
        assert lo <= row.scores["train"] <= hi


def test_bootstrap_rank_stability_is_the_median_over_every_replicate():
    """scores.py:783: Kendall's τ between the point ranking and each of the B replicates' rankings
    (columns of the methods × B matrix), not just the first (number of methods) replicates."""
    rows = [SimpleNamespace(method=m, scores={"task": s}) for m, s in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    same, reversed_ = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])
    cols = [same] * 3 + [reversed_] * 7  # the first 3 replicates agree, the other 7 reverse the order
    mat = np.stack(cols, axis=1)
    reps = {r.method: {"task": mat[i]} for i, r in enumerate(rows)}
    out = _stability(rows, [], reps)
    assert out["bootstrap_median"] == pytest.approx(-1.0)


def test_print_leaderboard_writes_to_the_given_console_or_stdout(run, capsys):
    """scores.py:885: the tables go to the console passed in; without one, to a new Console (stdout)."""
    lb = leaderboard(_seeded(run, {"bnn": 80.0}, seeds=2), bootstrap=50)
    buf = io.StringIO()
    print_leaderboard(lb, console=Console(file=buf, width=200))
    assert "bnn" in buf.getvalue()
    assert "bnn" not in capsys.readouterr().out
    print_leaderboard(lb)
    assert "bnn" in capsys.readouterr().out


# -- survivors of later fresh samples (tools/mutate.py --per-area, seeds 17 and 29) ----------------------
def test_an_empty_part_of_the_training_score_is_left_out():
    """metrics.training_score: a part given as an empty list does not exist (its mean is undefined), so
    the score is the other part alone, as with None."""
    from onebit.bench import metrics as M

    assert M.training_score([], [4.0]) == pytest.approx(4.0)
    assert M.training_score([2.0, 4.0], []) == pytest.approx(3.0)
    assert M.training_score([], [4.0]) == M.training_score(None, [4.0])


def test_scores_show_three_decimals_by_default():
    from onebit.bench.scores import fmt

    assert fmt(1.23456) == "1.235"
    assert fmt(2.0) == "2.000"
    assert fmt(1.23456, 1) == "1.2"


@pytest.mark.parametrize("x,y", [([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])])
def test_rank_correlation_of_a_constant_ranking_is_undefined(x, y):
    """Kendall's τ and Spearman's ρ of a constant sequence are undefined: None, not NaN."""
    assert S.kendall_tau(x, y) is None
    assert S.spearman_rho(x, y) is None


def test_a_score_with_an_interval_shows_both_and_without_one_the_value_alone():
    from onebit.bench.scores import fmt_ci

    assert fmt_ci(1.0, (0.5, 1.5)) == "1.000 [0.500, 1.500]"
    assert fmt_ci(1.0, None) == "1.000"
    assert fmt_ci(None, (0.5, 1.5)) == "—"


def test_a_zero_denominator_gives_no_ratio(run):
    """A binarized run whose parameter count (or epoch time) is 0 has no ratio to its FP run: None, not a
    ZeroDivisionError and not a number."""
    recs = [run("fp", 95.0, seed=s, params_bibench=100.0) for s in range(2)]
    recs += [run("bnn", 80.0, seed=s, params_bibench=0.0, epoch_time_s=0.0) for s in range(2)]
    cell = next(c for c in leaderboard(recs, bootstrap=10).cells if c.method == "bnn")
    assert cell.params_ratio is None and cell.time_ratio is None


def test_the_chance_check_pools_every_seeds_test_samples():
    """scores.py `n_test * max(1, seeds)` (mutant: `min`, seed-37 sample): a mean over k seeds of n
    samples each has the binomial error of n·k samples. 66 % on 100 samples of a 2-class task is not
    10 points above chance with one seed (95 % lower bound 56.7 %) but is with four (61.4 %)."""
    from onebit.bench.scores import clearly_above_chance

    assert "lower bound 56.7%" in clearly_above_chance(66.0, 100, 2, seeds=1)
    assert clearly_above_chance(66.0, 100, 2, seeds=4) is None
    assert "lower bound 59.3%" in clearly_above_chance(64.0, 100, 2, seeds=4)  # 64 - 1.96·sqrt(.64·.36/400)


def test_a_deployment_network_counts_for_inference_only_with_both_ratios(run):
    """scores.py `d.latency_ratio is not None and d.storage_ratio is not None` (mutant: `or`, seed-37
    sample): a deployment network timed but without file sizes has no storage ratio; it is left out of
    both means, so the latency mean is not taken over other networks than the storage mean."""
    from onebit.bench.deployment import NETWORKS

    full, timed_only = sorted(NETWORKS)[:2]
    recs = [run("fp", 95.0), run("bnn", 85.0)]
    recs.append(run("bnn", 0.0, role="inference", arch=full, task="random224", bits=(1, 1), deployable=1,
                    file_bytes=1e6, file_fp32_bytes=2e7, **{"latency_ms/t1": 10.0, "latency_fp32_ms/t1": 40.0}))
    recs.append(run("bnn", 0.0, role="inference", arch=timed_only, task="random224", bits=(1, 1), deployable=1,
                    **{"latency_ms/t1": 10.0, "latency_fp32_ms/t1": 20.0}))
    lb = leaderboard(recs, bootstrap=20)
    assert {d.network: d.storage_ratio for d in lb.deployment} == {full: pytest.approx(20.0), timed_only: None}
    row = lb.row("bnn")
    assert row.latency_ratio == pytest.approx(4.0) and row.storage_ratio == pytest.approx(20.0)


def test_the_span_of_the_runs_ignores_unknown_start_times(run):
    """scores.py `r.started > 0` (mutant: `>= 0`, seed-37 sample): a start time of 0 marks an unknown
    time, so the span runs from the earliest known start (not from 0) to the latest known end."""
    recs = [run("fp", 95.0), run("bnn", 85.0), run("xnor", 80.0)]
    for r, (start, end) in zip(recs, ((0.0, 0.0), (1000.0, 1500.0), (800.0, 1200.0))):
        r.started, r.finished = start, end
    meta = leaderboard(recs, bootstrap=10).meta
    assert (meta["started"], meta["finished"]) == (800.0, 1500.0)
    for r in recs:
        r.started = r.finished = 0.0
    meta = leaderboard(recs, bootstrap=10).meta
    assert (meta["started"], meta["finished"]) == (0.0, 0.0)
