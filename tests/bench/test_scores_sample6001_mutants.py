"""Scoring details found by a single-file mutation sample of src/onebit/bench/scores.py (tools/mutate.py
--file src/onebit/bench/scores.py --sample 20 --seed 6001; not an honest sample; issue 21): how each setting
was trained as the leaderboard states it, ratios of sub-millisecond and sub-second measurements, the
robustness track's bootstrap interval around its point estimate, and the printed rank kept on one line."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from onebit.bench.scores import leaderboard, print_leaderboard


def _with_hparams(record, **hparams):
    record.config["hparams"] = hparams
    return record


def test_the_training_setup_names_epochs_and_where_binarized_runs_start(run):
    """meta["training"]: per (task, arch) the epochs of its main runs ("?" when no run says) and where the
    BINARIZED runs start. The FP runs carry the suite's ``init`` too; where only FP runs have finished
    (conv1d here), nothing is said about binarized runs."""
    recs = []
    for seed in (0, 1):
        recs.append(_with_hparams(run("fp", 95.0, seed=seed), lr=0.1, epochs=4, init="fp"))
        recs.append(_with_hparams(run("bnn", 85.0, seed=seed), lr=0.1, epochs=4, init="fp"))
        recs.append(_with_hparams(run("fp", 95.0, arch="conv1d", seed=seed), lr=0.1, epochs=3, init="fp"))
        recs.append(_with_hparams(run("fp", 95.0, arch="resnet20", seed=seed), lr=0.1))  # no epochs recorded
        recs.append(_with_hparams(run("bnn", 80.0, arch="resnet20", seed=seed), lr=0.1))
    assert leaderboard(recs, bootstrap=20).meta["training"] == [
        "digits × conv1d: 3 epochs",
        "digits × mlp: 4 epochs, binarized runs start from their FP run",
        "digits × resnet20: ? epochs, binarized runs start from scratch",
    ]


def test_ratios_of_small_measurements(run):
    """Latencies under a millisecond (the digits MLP's) and epoch times under a second are ratios like
    any other: 0.06 / 0.02 ms = 3, 0.4 / 0.8 s = 0.5. A zero FP time is a ratio of 0, not missing."""
    recs = []
    for seed in (0, 1):
        recs.append(run("fp", 95.0, seed=seed, epoch_time_s=0.4, latency_ms=0.06, file_bytes=0.5))
        recs.append(run("bnn", 85.0, seed=seed, epoch_time_s=0.8, deployable=1, latency_ms=0.02,
                        latency_fp32_ms=0.06, file_bytes=0.25))
        recs.append(run("xnor", 85.0, seed=seed, epoch_time_s=0.8, deployable=1, latency_ms=0.02,
                        latency_fp32_ms=0.0, file_bytes=0.25))
    cells = {c.method: c for c in leaderboard(recs, bootstrap=20).cells}
    assert cells["bnn"].latency_ratio == pytest.approx(3.0)
    assert cells["bnn"].time_ratio == pytest.approx(0.5)
    assert cells["bnn"].storage_ratio == pytest.approx(2.0)
    assert cells["xnor"].latency_ratio == 0.0


def test_the_robustness_interval_surrounds_its_point_estimate(run):
    """The FP model loses 30 points under noise, the binarized one 15: ratio G_FP / G_bi = 2 per seed; the
    bootstrap replicates draw the same ratio (FP gap over binarized gap), so the 95 % interval of the robust
    track holds 2 and stays near it (10 000 test samples)."""
    recs = []
    for seed in range(3):
        recs.append(run("fp", 95.0, seed=seed, n_test=10000, **{"corrupt/gaussian_noise/1": 65.0}))
        recs.append(run("bnn", 85.0, seed=seed, n_test=10000, **{"corrupt/gaussian_noise/1": 70.0}))
    row = leaderboard(recs, bootstrap=200).row("bnn")
    assert row.scores["robust"] == pytest.approx(2.0)
    lo, hi = row.ci["robust"]
    assert 1.7 < lo <= 2.0 <= hi < 2.3


def test_a_narrow_console_keeps_the_rank_column(run):
    """In a console narrower than the table (56 columns for six tracks), rich shortens the columns it may
    wrap first: the rank column must not be one of them, or it is cut to a bare "…" while the track columns
    keep their numbers. Shortened like every no-wrap column, each rank keeps its leading digits ("1.…")."""
    recs = []
    for seed in (0, 1):
        recs.append(run("fp", 95.0, seed=seed, epoch_time_s=1.0))
        for method, acc, time in (("bnn", 80.0, 2.0), ("xnor", 85.0, 3.0), ("dorefa", 70.0, 1.5)):
            recs.append(run(method, acc, seed=seed, epoch_time_s=time))
    lb = leaderboard(recs, bootstrap=20)
    assert [round(r.overall, 2) for r in lb.rows] == [1.67, 2.0, 2.33]  # ranks of 4 characters
    buf = io.StringIO()
    print_leaderboard(lb, console=Console(file=buf, width=56))
    lines = buf.getvalue().splitlines()
    rule = next(i for i, line in enumerate(lines) if "━━━" in line)
    end = next(i for i in range(rule + 1, len(lines)) if not lines[i].strip())
    body = lines[rule + 1:end]
    assert [line.split()[1] for line in body] == ["xnor", "bnn", "dorefa"], body  # one line per method
    assert [line.split()[-1][:2] for line in body] == ["1.", "2.", "2."], body
