"""Error bars, significance, rank stability, the FP-baseline check and the bounded overall score
(issue 16, items 2, 4 and 5), on hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onebit.bench import stats as S
from onebit.bench.scores import CHANCE_MARGIN, clearly_above_chance, leaderboard

# ---------------------------------------------------------------------------------------------------
# the statistics themselves


def test_binomial_noise_and_resolvable_difference():
    assert S.binomial_se(50.0, 100) == pytest.approx(5.0)
    assert S.binomial_se(90.0, 10000) == pytest.approx(0.3)
    assert S.gap_noise(90.0, 10000, 90.0, 10000) == pytest.approx(S.Z95 * 0.3 * math.sqrt(2))
    # digits: ~360 test images at 95 % accuracy resolve differences of about 3.2 points (one seed)
    assert S.resolvable_difference(95.0, 360) == pytest.approx(S.Z95 * math.sqrt(2 * 0.95 * 0.05 / 360) * 100)
    assert S.resolvable_difference(95.0, 360, seeds=3) < S.resolvable_difference(95.0, 360)
    with pytest.raises(ValueError, match="positive"):
        S.binomial_se(50.0, 0)


def test_percentile_interval_and_paired_test():
    samples = np.arange(1001) / 10.0  # 0.0 .. 100.0
    assert S.percentile_ci(samples) == pytest.approx((2.5, 97.5))
    assert not S.differs_from_zero(np.linspace(-1, 3, 1001))
    assert S.differs_from_zero(np.linspace(0.5, 3, 1001))
    assert not S.differs_from_zero(np.zeros(100))  # an exact tie


def test_binomial_draws_match_resampling_test_samples():
    rng = np.random.default_rng(0)
    draws = S.binomial_draws(rng, np.array([80.0]), 400, 20000)
    assert draws.mean() == pytest.approx(80.0, abs=0.1)
    assert draws.std() == pytest.approx(S.binomial_se(80.0, 400), rel=0.05)
    assert np.all(S.binomial_draws(rng, np.array([80.0, 70.0]), None, 5) == [80.0, 70.0])


def test_ranks_and_correlations():
    assert S.ranks({"a": 0.9, "b": 0.8, "c": 0.9}) == {"a": 1.5, "b": 3.0, "c": 1.5}
    assert S.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert S.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert S.spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert S.kendall_tau([1, 2], [1, 2]) is None  # undefined for two items
    assert S.seed_halves([0, 1, 2, 3]) == [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    assert S.seed_halves([0, 1, 2]) == [((0,), (1, 2)), ((1,), (0, 2)), ((2,), (0, 1))]
    assert S.seed_halves([0]) == []


# ---------------------------------------------------------------------------------------------------
# intervals on hand-made results


def _cell_runs(run, method, accs, fp_accs, **kw):
    out = []
    for seed, (a, f) in enumerate(zip(accs, fp_accs)):
        out += [run(method, a, seed=seed, **kw), run("fp", f, seed=seed, **kw)]
    return out


def test_interval_over_seeds_only(run):
    """Without a test-set size only seeds are resampled: the interval lies within the seeds' spread."""
    recs = _cell_runs(run, "bnn", [80.0, 84.0, 88.0], [100.0, 100.0, 100.0], n_test=None)
    row = leaderboard(recs, bootstrap=2000).row("bnn")
    lo, hi = row.ci["task"]
    assert row.scores["task"] == pytest.approx(0.84)
    assert 0.80 <= lo < 0.84 < hi <= 0.88
    # identical seeds and no test noise: a zero-width interval
    same = leaderboard(_cell_runs(run, "bnn", [80.0] * 3, [100.0] * 3, n_test=None), bootstrap=200).row("bnn")
    assert same.ci["task"] == pytest.approx((0.8, 0.8))


def test_interval_from_test_samples_matches_the_binomial(run):
    """Equal seeds, 1000 test samples: the interval comes from test-sample noise alone. Expected
    half-width of A_bi/A_fp = 80/90 by the delta method: each mean of 3 resampled seeds has variance
    σ²·5/9 (a multinomial's E[Σ c_i²] = 5), σ² = p(1−p)/n."""
    recs = _cell_runs(run, "bnn", [80.0] * 3, [90.0] * 3, n_test=1000)
    row = leaderboard(recs, bootstrap=4000).row("bnn")
    r = 80 / 90
    sd = r * math.sqrt((0.8 * 0.2 / 1000 * 5 / 9) / 0.8**2 + (0.9 * 0.1 / 1000 * 5 / 9) / 0.9**2)
    lo, hi = row.ci["task"]
    assert (hi - lo) / 2 == pytest.approx(S.Z95 * sd, rel=0.15)
    assert lo < row.scores["task"] < hi


def test_leaderboard_marks_methods_not_significantly_different(run):
    recs = _cell_runs(run, "bnn", [80.0, 80.5, 79.5], [90.0] * 3)
    recs += [run("xnor", a, seed=s) for s, a in enumerate([80.2, 80.4, 79.9])]  # within noise of bnn
    recs += [run("reactnet", a, seed=s) for s, a in enumerate([88.0, 88.5, 87.5])]  # clearly better
    lb = leaderboard(recs, bootstrap=1000)
    best = lb.rows[0]
    assert best.method == "reactnet" and best.tied_best["task"]
    assert not lb.row("bnn").tied_best["task"] and not lb.row("xnor").tied_best["task"]
    assert not lb.row("bnn").tied_best["overall"]
    # remove reactnet: bnn and xnor cannot be told apart
    lb2 = leaderboard([r for r in recs if r.method != "reactnet"], bootstrap=1000)
    assert lb2.row("bnn").tied_best["task"] and lb2.row("xnor").tied_best["task"]
    assert all(r.tied_best["overall"] for r in lb2.rows)


def test_rank_stability_is_kendall_tau_between_seed_halves(run):
    methods = {"bnn": 70.0, "xnor": 75.0, "bireal": 80.0, "reactnet": 85.0}
    recs = []
    for seed in range(4):
        recs.append(run("fp", 90.0, seed=seed))
        recs += [run(m, a + (0.5 if seed % 2 else -0.5), seed=seed) for m, a in methods.items()]
    stab = leaderboard(recs, bootstrap=200).meta["stability"]["W1A1"]
    assert stab["split_half"]["mean"] == pytest.approx(1.0) and stab["split_half"]["splits"] == 3
    assert stab["bootstrap_median"] == pytest.approx(1.0)
    # the order flips between the two halves: tau of the split {0, 1} vs {2, 3} is -1
    flipped = []
    for seed in range(4):
        flipped.append(run("fp", 90.0, seed=seed))
        sign = 1 if seed < 2 else -1
        flipped += [run(m, 77.5 + sign * (a - 77.5), seed=seed) for m, a in methods.items()]
    stab2 = leaderboard(flipped, bootstrap=200).meta["stability"]["W1A1"]
    assert stab2["split_half"]["min"] == pytest.approx(-1.0)
    assert stab2["split_half"]["mean"] < 0.5


# ---------------------------------------------------------------------------------------------------
# the FP baseline at chance is flagged and left out


def test_chance_check():
    assert clearly_above_chance(95.0, 360, 10) is None
    assert "not 10 points above chance 10.0%" in clearly_above_chance(15.0, 1000, 10)
    # within the margin once the binomial lower bound is taken: 21 % on 100 samples (lower ~13 %)
    assert clearly_above_chance(21.0, 100, 10) is not None
    assert clearly_above_chance(10.0 + CHANCE_MARGIN + 5.0, 100000, 10) is None


def test_a_setting_whose_fp_baseline_is_at_chance_is_flagged_and_excluded(run):
    recs = []
    for seed in range(3):
        recs += [run("fp", 95.0, seed=seed), run("bnn", 85.0, seed=seed), run("xnor", 90.0, seed=seed)]
        # mnist1d's FP model never learned: 11 % on 10 classes; bnn "beats" it with 30 %
        recs += [run("fp", 11.0, seed=seed, task="mnist1d"), run("bnn", 30.0, seed=seed, task="mnist1d"),
                 run("xnor", 10.0, seed=seed, task="mnist1d")]
    lb = leaderboard(recs, bootstrap=200)
    flagged = [b for b in lb.baselines if b.flag]
    assert [(b.task, b.arch) for b in flagged] == [("mnist1d", "mlp")]
    assert "chance 10.0%" in flagged[0].flag and "left out of every score" in flagged[0].flag
    assert all(c.excluded for c in lb.cells if c.task == "mnist1d")
    for r in lb.rows:
        assert set(r.by_task) == {"digits"}  # mnist1d counts nowhere
    assert lb.row("bnn").scores["task"] == pytest.approx(85 / 95)
    assert [r.method for r in lb.rows] == ["xnor", "bnn"]
    ok = next(b for b in lb.baselines if b.task == "digits")
    assert ok.flag is None and ok.resolvable == pytest.approx(S.resolvable_difference(95.0, 1000, 3))


# ---------------------------------------------------------------------------------------------------
# overall: mean of per-track ranks, bounded whatever one track's ratios are


def test_overall_is_a_bounded_mean_rank(run):
    recs = []
    for seed in range(3):
        recs.append(run("fp", 90.0, seed=seed, bops=0, fp_macs=1e6, params_1bit=0, params_32bit=1e5))
        recs.append(run("bnn", 80.0, seed=seed, bops=1e6, fp_macs=10, params_1bit=1e5, params_32bit=1))
        recs.append(run("xnor", 85.0, seed=seed, bops=1e6, fp_macs=1e5, params_1bit=1e5, params_32bit=1e4))
    lb = leaderboard(recs, bootstrap=200)
    bnn, xnor = lb.row("bnn"), lb.row("xnor")
    assert bnn.scores["comp"] > 5 * xnor.scores["comp"]  # a much larger complexity ratio ...
    assert bnn.track_ranks["comp"] == 1 and xnor.track_ranks["task"] == 1
    # ... is worth one rank, like any other track: task, arch and train(equal times) vs comp
    assert bnn.overall == pytest.approx((2 + 2 + 1.5 + 1) / 4)
    assert xnor.overall == pytest.approx((1 + 1 + 1.5 + 2) / 4)
    assert all(1 <= r.overall <= len(lb.rows) for r in lb.rows)
    assert lb.rows[0].method == "xnor"
    assert bnn.overall_ci[0] <= bnn.overall <= bnn.overall_ci[1]
