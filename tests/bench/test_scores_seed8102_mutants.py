"""Scoring details found by a single-file mutation sample of src/onebit/bench/scores.py (tools/mutate.py
--file src/onebit/bench/scores.py --sample 30 --seed 8102; not an honest sample; issue 21)."""

from __future__ import annotations

import pytest

from onebit.bench.scores import CHANCE_MARGIN, clearly_above_chance, leaderboard


def test_without_the_class_count_chance_is_zero_and_only_the_margin_counts():
    """Unknown class count (None or 0): chance is 0 %, so an accuracy just over the margin is clearly above it
    (without a test-set size there is no interval: the lower bound is the accuracy itself)."""
    for n_classes in (None, 0):
        assert clearly_above_chance(CHANCE_MARGIN + 0.5, None, n_classes) is None
        reason = clearly_above_chance(CHANCE_MARGIN - 0.5, None, n_classes)
        assert "lower bound 9.5%" in reason and "chance (class count unknown)" in reason


def _corrupted(accs):
    return {f"corrupt/{c}/{s}": a for c, a in accs.items() for s in (1, 2)}


def test_a_corruption_the_fp_model_loses_nothing_on_has_no_ratio_without_a_test_set_size(run):
    """Without the test-set size (older results) the FP model's noise floor is 0: a corruption it loses
    exactly nothing on (G_FP = 0) gives no G_FP / G_bi ratio — the gap must exceed the floor, not reach it —
    while one it loses 20 points on does."""
    recs = []
    for seed in (0, 1):
        recs.append(run("fp", 90.0, seed=seed, n_test=None, **_corrupted({"fog": 90.0, "contrast": 70.0})))
        recs.append(run("bnn", 80.0, seed=seed, n_test=None, **_corrupted({"fog": 75.0, "contrast": 70.0})))
    cell = next(c for c in leaderboard(recs, bootstrap=20).cells if c.method == "bnn")
    assert cell.corruption["fog"]["gap_fp"] == 0.0 and cell.corruption["fog"]["noise_fp"] == 0.0
    assert cell.corruption["fog"]["ratio"] is None
    assert cell.corruption["contrast"]["ratio"] == pytest.approx(2.0)  # 20 / 10
