"""Exact values and boundaries of bench/stats.py and bench/metrics.py that a plausible one-line bug
(tools/mutate.py: `<` for `<=`, a clip's bounds swapped, `round` for `floor`, a default changed) would
move: each expectation is worked out by hand in the comment next to it (issue 21)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onebit.bench import metrics as M
from onebit.bench import stats as S


def test_binomial_se_clips_the_accuracy_to_0_100_and_refuses_a_non_positive_size():
    assert S.binomial_se(150.0, 10) == 0.0  # p clipped to 1: no spread
    assert S.binomial_se(-20.0, 10) == 0.0  # p clipped to 0
    assert S.binomial_se(20.0, 4) == pytest.approx(20.0)  # 100·sqrt(0.2·0.8/4) = 100·0.2
    for n in (0, -3, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            S.binomial_se(50.0, n)


def test_gap_noise_and_resolvable_difference_by_hand():
    # se(20, 4) = 20 and se(50, 100) = 5: 1.96·hypot(20, 5)
    assert S.gap_noise(20.0, 4, 50.0, 100) == pytest.approx(S.Z95 * math.hypot(20.0, 5.0))
    # seeds multiply the samples: se(50, 25·4) = 5 → 1.96·sqrt(2)·5; seeds < 1 count as one seed
    assert S.resolvable_difference(50.0, 25, seeds=4) == pytest.approx(S.Z95 * math.sqrt(2) * 5.0)
    assert S.resolvable_difference(50.0, 100) == pytest.approx(S.Z95 * math.sqrt(2) * 5.0)
    assert S.resolvable_difference(50.0, 100, seeds=0) == S.resolvable_difference(50.0, 100)
    assert S.Z95 == pytest.approx(1.959963984540054, abs=1e-15)


def test_binomial_draws_are_whole_counts_of_the_rounded_test_size():
    rng = np.random.default_rng(1)
    draws = S.binomial_draws(rng, np.array([30.0, 70.0]), 9.6, 4000)  # n rounds to 10
    assert draws.shape == (4000, 2)
    counts = draws * 10 / 100.0
    assert np.allclose(counts, np.round(counts))  # k/10 with k whole: tenths only
    assert set(np.unique(counts[:, 0])) <= set(range(11))
    assert draws[:, 0].mean() == pytest.approx(30.0, abs=1.0)
    assert draws[:, 1].mean() == pytest.approx(70.0, abs=1.0)
    # accuracies outside [0, 100] are clipped to a probability, never refused
    edge = S.binomial_draws(rng, np.array([100.0, 0.0, 130.0, -5.0]), 50, 200)
    assert np.all(edge[:, 0] == 100.0) and np.all(edge[:, 1] == 0.0)
    assert np.all(edge[:, 2] == 100.0) and np.all(edge[:, 3] == 0.0)


@pytest.mark.parametrize("n", [None, 0, -4])
def test_binomial_draws_without_a_test_size_repeat_the_accuracies(n):
    out = S.binomial_draws(np.random.default_rng(0), np.array([12.5, 80.0]), n, 3)
    assert out.shape == (3, 2)
    assert np.all(out == [12.5, 80.0])
    out[0, 0] = -1.0  # a copy, not a read-only broadcast view
    assert out[1, 0] == 12.5


def test_percentile_ci_levels_and_non_finite_samples():
    samples = np.arange(101, dtype=float)  # quantile q is 100·q exactly
    assert S.percentile_ci(samples, level=0.9) == pytest.approx((5.0, 95.0))
    assert S.percentile_ci(samples, level=0.5) == pytest.approx((25.0, 75.0))
    with_nan = np.concatenate([samples, [np.nan, np.inf, -np.inf]])
    assert S.percentile_ci(with_nan) == pytest.approx((2.5, 97.5))
    with pytest.raises(ValueError, match="finite"):
        S.percentile_ci([np.nan, np.inf])
    with pytest.raises(ValueError, match="finite"):
        S.percentile_ci([])


def test_differs_from_zero_needs_the_whole_interval_strictly_on_one_side():
    touching_below = np.array([0.0] * 10 + [1.0] * 90)  # the 2.5 % quantile is exactly 0
    assert S.percentile_ci(touching_below)[0] == 0.0
    assert not S.differs_from_zero(touching_below)
    assert not S.differs_from_zero(-touching_below)  # the 97.5 % quantile is exactly 0
    assert S.differs_from_zero(np.full(50, -0.25))  # every replicate negative
    assert S.differs_from_zero(np.full(50, 0.25))
    # a wider level is harder to pass: 1..100 minus 3 excludes 0 at 90 % but not at 99 %
    shifted = np.arange(1.0, 101.0) - 3.0
    assert S.differs_from_zero(shifted, level=0.9)
    assert not S.differs_from_zero(shifted, level=0.99)


def test_ranks_lower_is_better_and_ties():
    assert S.ranks({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 3.0, "c": 2.0}
    assert S.ranks({"a": 3.0, "b": 1.0, "c": 2.0}, higher_is_better=False) == {"a": 3.0, "b": 1.0, "c": 2.0}
    assert S.ranks({"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}) == {"a": 2.0, "b": 2.0, "c": 2.0, "d": 4.0}
    assert S.ranks({}) == {}


def test_correlations_by_hand_and_when_undefined():
    # x = 1..4, y = 1,3,2,4: one discordant pair of six → τ = (5 − 1)/6; ρ = 1 − 6·2/(4·15) = 0.8
    assert S.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert S.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # three items with two distinct values are enough: τ-b of (1,1,2) vs (1,2,3) = 2/sqrt(2·3)
    assert S.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert S.kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))  # and in y (seed-59 survivor)
    assert S.kendall_tau([1, 2, 3], [5, 5, 5]) is None  # a constant ranking
    assert S.spearman_rho([7, 7, 7], [1, 2, 3]) is None
    assert S.spearman_rho([1, 2], [2, 1]) is None
    with pytest.raises(ValueError, match="differ in length"):
        S.kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        S.spearman_rho([1, 2, 3], [1, 2, 3, 4])


def test_seed_halves_sorts_and_lists_each_split_once():
    assert S.seed_halves([3, 1]) == [((1,), (3,))]
    assert S.seed_halves([]) == []
    splits = S.seed_halves([5, 4, 3, 2, 1])  # halves of 2 and 3: C(5, 2) = 10 splits
    assert len(splits) == 10 and all(len(a) == 2 and len(b) == 3 for a, b in splits)
    assert splits[0] == ((1, 2), (3, 4, 5))
    assert len(S.seed_halves(range(6))) == 10  # C(6, 3) / 2: each split once, not its mirror too


def test_split_half_tau_mean_min_and_count():
    # seeds 0..3: three splits; the half holding seed 0 ranks a > b > c, the other half c > b > a
    def scores(half):
        return {"a": 3.0, "b": 2.0, "c": 1.0} if 0 in half else {"a": 1.0, "b": 2.0, "c": 3.0}
    assert S.split_half_tau([0, 1, 2, 3], scores) == {"mean": -1.0, "min": -1.0, "splits": 3.0}

    def agree_once(half):  # only the split {0, 1} | {2, 3} agrees
        base = {"a": 3.0, "b": 2.0, "c": 1.0}
        return base if half in ((0, 1), (2, 3)) else ({"a": 1.0, "b": 2.0, "c": 3.0} if 0 in half else base)
    assert S.split_half_tau([0, 1, 2, 3], agree_once) == {"mean": pytest.approx(-1 / 3), "min": -1.0, "splits": 3.0}
    assert S.split_half_tau([0], scores) is None  # one seed: no split
    assert S.split_half_tau([0, 1], lambda half: {"a": 1.0, "b": 2.0}) is None  # two methods: no τ
    # methods missing from one half are left out of that split's τ
    partial = S.split_half_tau([0, 1], lambda half: {"a": 3.0, "b": 2.0, "c": 1.0, **({"d": 9.0} if 0 in half else {})})
    assert partial == {"mean": 1.0, "min": 1.0, "splits": 1.0}


def test_bounded_robustness_ratio_floor_clip_and_arrays():
    assert M.bounded_robustness_ratio(4.0, 2.0, floor=0.5) == pytest.approx(2.0)
    assert M.bounded_robustness_ratio(4.0, 0.1, floor=2.0) == pytest.approx(2.0)  # binarized gap floored
    assert M.bounded_robustness_ratio(4.0, -3.0, floor=2.0) == pytest.approx(2.0)
    assert M.bounded_robustness_ratio(100.0, 1.0, floor=0.5) == pytest.approx(4.0)  # clipped at the default 4
    assert M.bounded_robustness_ratio(100.0, 1.0, floor=0.5, clip=10.0) == pytest.approx(10.0)
    assert M.bounded_robustness_ratio(1.0, 100.0, floor=0.5) == pytest.approx(0.25)  # and at 1/4 below
    assert M.bounded_robustness_ratio(-2.0, 1.0, floor=0.5) == pytest.approx(0.25)  # a negative FP gap is 0
    assert M.bounded_robustness_ratio(3.0, 1.0, floor=0.5, clip=1.0) == pytest.approx(1.0)  # clip 1 allowed
    assert isinstance(M.bounded_robustness_ratio(3.0, 1.0, floor=0.5), float)
    arr = M.bounded_robustness_ratio(np.array([4.0, 100.0, 1.0]), np.array([2.0, 1.0, 100.0]), floor=0.5)
    assert isinstance(arr, np.ndarray) and arr == pytest.approx([2.0, 4.0, 0.25])
    for floor, clip in ((0.0, 4.0), (-1.0, 4.0), (0.5, 0.99)):
        with pytest.raises(ValueError, match="floor must be positive"):
            M.bounded_robustness_ratio(1.0, 1.0, floor=floor, clip=clip)


def test_robustness_ratio_floors_both_gaps_at_eps():
    assert M.robustness_ratio(0.05, 2.0) == pytest.approx(0.1 / 2.0)  # the FP gap is floored too
    assert M.robustness_ratio(0.1, 0.1) == pytest.approx(1.0)
    assert M.DEFAULT_EPS == 0.1
    with pytest.raises(ValueError, match="eps"):
        M.robustness_ratio(1.0, 1.0, eps=-0.1)


def test_training_score_skips_empty_parts_and_means_by_hand():
    assert M.training_score([], [2.0, 4.0]) == pytest.approx(3.0)
    assert M.training_score(2, None) == pytest.approx(2.0)  # an int is a part of one
    with pytest.raises(ValueError, match="training"):
        M.training_score([], [])
    # the parts are means, combined by the quadratic mean: sqrt((1² + 7²)/2) = 5
    assert M.training_score([0.0, 2.0], [7.0]) == pytest.approx(5.0)


def test_geometric_and_quadratic_means_by_hand():
    assert M.geometric_mean([2.0, 8.0, 4.0]) == pytest.approx(4.0)
    assert M.quadratic_mean([1.0, 7.0]) == pytest.approx(5.0)
    assert M.quadratic_mean([-3.0]) == pytest.approx(3.0)
    assert M.mean([-1.0, 1.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        M.geometric_mean([4.0, -1.0])
    with pytest.raises(ValueError, match="finite"):
        M.quadratic_mean([math.inf])
    assert M.accuracy_ratio(10, 40) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="full-precision"):
        M.accuracy_ratio(10.0, -5.0)
