"""Scoring details that the seed-47 mutation sample (tools/mutate.py) found untested: the list of missing
baselines shows ten runs and counts the rest; corruptions of runs with an unknown test-set size keep the
fixed noise floor (none for the FP gap, eps for the binarized one) and still get a ratio."""

from __future__ import annotations

import re

import pytest

from onebit.bench.scores import MissingBaselineError, leaderboard


def _missing_message(run, n_missing: int) -> str:
    recs = [run("fp", 95.0, seed=0), run("bnn", 85.0, seed=0)]
    recs += [run("bnn", 85.0, seed=s) for s in range(1, n_missing + 1)]
    with pytest.raises(MissingBaselineError) as info:
        leaderboard(recs, bootstrap=10)
    return str(info.value)


@pytest.mark.parametrize("n_missing", [9, 10, 11, 13])
def test_the_missing_baselines_list_shows_ten_runs_and_counts_the_rest(run, n_missing):
    text = _missing_message(run, n_missing)
    assert f"{n_missing} full-precision baseline run(s) missing" in text
    shown = sorted(int(s) for s in re.findall(r"seed=(\d+)", text))
    assert shown == list(range(1, min(n_missing, 10) + 1))
    more = re.findall(r"… and (\d+) more", text)
    assert more == ([str(n_missing - 10)] if n_missing > 10 else [])


def _corrupted(accs: dict[str, float]) -> dict[str, float]:
    return {f"corrupt/{c}/{s}": a for c, a in accs.items() for s in (1, 2)}


def test_an_unknown_test_size_keeps_the_fixed_noise_floor_and_a_ratio(run):
    """Older results carry no ``n_test``: no corruption is left out as FP noise (floor 0), and the
    binarized gap's floor is eps — so an FP drop of half a point still gets a ratio."""
    recs = []
    for seed in range(2):
        recs.append(run("fp", 95.0, seed=seed, n_test=None, **_corrupted({"fog": 94.5, "contrast": 75.0})))
        recs.append(run("bnn", 85.0, seed=seed, n_test=None, **_corrupted({"fog": 84.0, "contrast": 65.0})))
    lb = leaderboard(recs, eps=0.25, bootstrap=10)
    (cell,) = lb.cells
    fog, contrast = cell.corruption["fog"], cell.corruption["contrast"]
    assert fog["noise_fp"] == 0.0 and contrast["noise_fp"] == 0.0
    assert fog["noise_bi"] == 0.25 and contrast["noise_bi"] == 0.25
    assert fog["ratio"] == pytest.approx(0.5 / 1.0)
    assert contrast["ratio"] == pytest.approx(20.0 / 20.0)
    assert lb.row("bnn").by_corruption == pytest.approx({"fog": 0.5, "contrast": 1.0})
