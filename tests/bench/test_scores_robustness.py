"""Bounded, defined robustness (issue 16, item 3): corruptions within the FP model's sampling noise are
reported and left out, no single corruption dominates, a model at chance has no robustness score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onebit.bench import metrics as M
from onebit.bench.scores import ROBUST_CLIP, leaderboard

CORRUPTIONS = ["gaussian_noise", "brightness", "contrast", "fog"]


def _corrupted(accs: dict[str, float]) -> dict[str, float]:
    return {f"corrupt/{c}/{s}": a for c, a in accs.items() for s in (1, 2)}


def _runs(run, bi: dict[str, tuple[float, dict[str, float]]], fp=(95.0, None), seeds=3, n_test=1000):
    fp_clean, fp_corr = fp
    fp_corr = fp_corr or {"gaussian_noise": 60.0, "brightness": 94.8, "contrast": 70.0, "fog": 80.0}
    recs = []
    for seed in range(seeds):
        recs.append(run("fp", fp_clean, seed=seed, n_test=n_test, **_corrupted(fp_corr)))
        for method, (clean, corr) in bi.items():
            recs.append(run(method, clean, seed=seed, n_test=n_test, **_corrupted(corr)))
    return recs


def test_a_model_at_chance_keeps_the_track_bounded(run):
    """The case that gave 42.95: a binarized model at chance has nothing left to lose, so every G_bi is
    ~0 and G_fp / G_bi explodes. Here it has no robustness score, and a model that loses nothing while
    still well above chance is credited at most ROBUST_CLIP per corruption."""
    at_chance = {c: 10.0 for c in CORRUPTIONS}
    no_loss = {c: 70.0 for c in CORRUPTIONS}
    typical = {"gaussian_noise": 50.0, "brightness": 84.0, "contrast": 60.0, "fog": 70.0}
    recs = _runs(run, {"bnn": (10.2, at_chance), "xnor": (70.0, no_loss), "bireal": (85.0, typical)})
    # the paper's raw ratio on these numbers: unbounded (35 / 0.1 = 350 for the model at chance)
    assert M.robustness_ratio(95.0 - 60.0, 10.2 - 10.0) > 100
    lb = leaderboard(recs, bootstrap=200)
    bnn = next(c for c in lb.cells if c.method == "bnn")
    assert "no accuracy left to lose" in bnn.robust_excluded
    assert all(e["ratio"] is None for e in bnn.corruption.values())
    assert lb.row("bnn").scores["robust"] is None  # its only cell is out
    xnor = lb.row("xnor")
    assert xnor.scores["robust"] <= ROBUST_CLIP and max(xnor.by_corruption.values()) == pytest.approx(ROBUST_CLIP)
    assert xnor.ci["robust"][1] <= ROBUST_CLIP
    # brightness: the FP model drops 0.2 points on 1000 samples — within noise, reported and left out
    for c in lb.cells:
        assert c.corruption["brightness"]["ratio"] is None
        assert c.corruption["brightness"]["gap_fp"] == pytest.approx(0.2)
        assert c.corruption["brightness"]["noise_fp"] > 0.2
    assert "brightness" not in lb.row("bireal").by_corruption
    # bireal's drops equal FP's drops: ratio 1 on gaussian_noise (35 / 35)
    assert lb.row("bireal").by_corruption["gaussian_noise"] == pytest.approx(1.0)


def test_no_single_corruption_dominates(run):
    """24 corruptions at parity and one where the binarized model loses nothing: the track moves by at
    most what the clip allows, where the raw quadratic mean would be ruled by the one outlier."""
    names = [f"c{i:02d}" for i in range(25)]
    fp_corr = {c: 75.0 for c in names}
    bi_corr = {c: 60.0 for c in names}
    bi_corr["c00"] = 80.0  # no loss on one corruption
    recs = _runs(run, {"bnn": (80.0, bi_corr)}, fp=(95.0, fp_corr))
    row = leaderboard(recs, bootstrap=200).row("bnn")
    assert row.by_corruption["c00"] == pytest.approx(ROBUST_CLIP)
    assert ROBUST_CLIP == 4.0  # README's documented bound, [1/4, 4]
    assert row.scores["robust"] == pytest.approx(math.sqrt((24 * (20 / 20) ** 2 + ROBUST_CLIP**2) / 25))
    raw = M.robustness_score({c: M.robustness_ratio(20.0, 80.0 - a) for c, a in bi_corr.items()})
    assert raw > 3 * row.scores["robust"]


def test_bounded_ratio_on_numbers_and_arrays():
    assert M.bounded_robustness_ratio(10.0, 5.0, 0.5) == pytest.approx(2.0)
    assert M.bounded_robustness_ratio(10.0, 0.0, 0.5) == pytest.approx(4.0)  # 20, clipped
    assert M.bounded_robustness_ratio(-3.0, 5.0, 0.5) == pytest.approx(0.25)  # 0, clipped
    arr = M.bounded_robustness_ratio(np.array([10.0, 10.0]), np.array([5.0, -1.0]), 0.5, clip=10.0)
    assert arr == pytest.approx([2.0, 10.0])
    with pytest.raises(ValueError, match="floor"):
        M.bounded_robustness_ratio(1.0, 1.0, 0.0)


def test_raw_accuracies_are_kept_beside_the_ratio(run):
    recs = _runs(run, {"bireal": (85.0, {"gaussian_noise": 50.0, "brightness": 84.0, "contrast": 60.0,
                                         "fog": 70.0})})
    cell = leaderboard(recs, bootstrap=50).cells[0]
    e = cell.corruption["gaussian_noise"]
    assert (cell.acc_bi, cell.acc_fp, e["acc_bi"], e["acc_fp"]) == pytest.approx((85.0, 95.0, 50.0, 60.0))
    assert (e["gap_bi"], e["gap_fp"], e["severities"]) == pytest.approx((35.0, 35.0, 2))
