"""Scoring details that the seed-67 and seed-71 mutation samples (tools/mutate.py, issue 21) found untested:
a deployed cell's full-precision latency is the one timed beside the packed model in the same process
(``latency_fp32_ms``) when every seed has it, and the full-precision run's own only otherwise; bootstrap
replicates average the resampled seeds."""

from __future__ import annotations

import pytest

from onebit.bench.scores import leaderboard


def _cell(run, paired_seeds: tuple[int, ...]):
    recs = []
    for seed in (0, 1):
        paired = {"latency_fp32_ms": 2.0} if seed in paired_seeds else {}
        recs += [run("fp", 95.0, arch="mlp", seed=seed, latency_ms=8.0, file_bytes=40000),
                 run("bnn", 85.0, arch="mlp", seed=seed, deployable=1, latency_ms=0.5, file_bytes=2000, **paired)]
    return next(c for c in leaderboard(recs, bootstrap=20).cells if c.method == "bnn")


def test_latency_ratio_uses_the_paired_fp32_time_when_every_seed_has_it(run):
    """scores.py:524: both seeds timed fp32 beside the packed model (2 ms): 2 / 0.5 = 4, not the fp run's
    8 ms (ratio 16)."""
    cell = _cell(run, paired_seeds=(0, 1))
    assert cell.latency_fp == pytest.approx(2.0)
    assert cell.latency_ratio == pytest.approx(4.0)


@pytest.mark.parametrize("paired_seeds", [(), (1,)])
def test_latency_ratio_falls_back_to_the_fp_run_unless_every_seed_is_paired(run, paired_seeds):
    """Without a paired time on every seed, the fp run's own latency (8 ms) is the baseline: 8 / 0.5 = 16."""
    cell = _cell(run, paired_seeds)
    assert cell.latency_fp == pytest.approx(8.0)
    assert cell.latency_ratio == pytest.approx(16.0)


def test_bootstrap_replicates_average_the_seeds_not_sum_them(run):
    """Seed-71 sample (scores.py:626, ``mean`` -> ``sum`` over the resampled seeds): the ratios of clean
    accuracies and of times do not tell a sum from a mean, but the robust track does, because its
    binarized gap is floored at the model's own test-set noise (an absolute number of points). FP loses
    1.5 points under noise, the binarized model nothing (floored at its noise, ~0.57 points): ratio ~2.6.
    Summed over 3 seeds the FP gap would read 4.5 points and every replicate clip at 4."""
    recs = []
    for seed in range(3):
        recs.append(run("fp", 95.0, seed=seed, n_test=10000, **{"corrupt/gaussian_noise/1": 93.5}))
        recs.append(run("bnn", 85.0, seed=seed, n_test=10000, **{"corrupt/gaussian_noise/1": 85.0}))
    row = leaderboard(recs, bootstrap=200).row("bnn")
    point = row.scores["robust"]
    assert 2.0 < point < 3.0
    lo, hi = row.ci["robust"]
    assert lo <= point <= hi < 3.6
