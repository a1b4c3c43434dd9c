"""Scoring partial results (mutation survivors of tools/mutate.py): a missing full-precision run is
named with its role, setting, seed, hyper-parameters and (only when the setting has them) model
options; a cell that measured FLOPs but not parameter counts has no complexity score."""

from __future__ import annotations

import pytest

from onebit.bench.scores import MissingBaselineError, leaderboard


def test_a_missing_baseline_is_described_with_its_options_only_when_it_has_them(run):
    plain = run("bnn", 85.0, seed=1)
    wide = run("bnn", 86.0, seed=2)
    wide.config["setting"] = {"model_options": {"width": 2}}
    with pytest.raises(MissingBaselineError) as info:
        leaderboard([run("fp", 95.0), run("bnn", 85.0), plain, wide], bootstrap=10)
    text = str(info.value)
    hparams = '{"epochs": 2, "lr": 0.001, "optimizer": "adam", "schedule": "cosine"}'
    assert f"(role=main, arch=mlp, task=digits, seed=1, hparams={hparams})" in text
    assert f'(role=main, arch=mlp, task=digits, seed=2, hparams={hparams}, model_options={{"width": 2}})' in text


def test_flops_without_parameter_counts_give_no_complexity_score(run):
    recs = [run("fp", 95.0, flops_bibench=64000.0), run("bnn", 85.0, flops_bibench=4000.0)]
    row = leaderboard(recs, bootstrap=10).row("bnn")
    assert row.flops_ratio == pytest.approx(16.0) and row.params_ratio is None
    assert row.scores["comp"] is None
