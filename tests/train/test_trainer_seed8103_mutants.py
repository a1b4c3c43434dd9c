"""The test accuracy a finished run reports (issue 21, single-file mutation sample ``--seed 8103`` of
train/trainer.py, not an honest sample): that of the last stage's last epoch. ``recipe.stages[-1]`` → ``[0]``
and ``history[-1]`` → ``[0]`` survived, since the tests of ``TrainResult.test_accuracy`` trained one stage."""

from __future__ import annotations

import json
import math

from onebit.train import train


def _two_stages():
    stage = {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.0},
             "lr_schedule": {"name": "constant"}}
    return {"name": "two", "seed": 5, "data": {"name": "digits", "batch_size": 256},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "stage": [{"name": "first", **stage}, {"name": "second", "init": "previous", **stage, "epochs": 2}]}


def test_a_two_stage_run_reports_its_last_stages_last_test_accuracy(tmp_path):
    result = train(_two_stages(), tmp_path / "run", progress=False)
    assert [(r["stage"], r["epoch"]) for r in result.history] == [("first", 0), ("second", 0), ("second", 1)]
    assert not math.isnan(result.test_accuracy)
    assert result.test_accuracy == result.history[-1]["test_acc"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stages"]["second"]["test_acc"] == result.history[-1]["test_acc"]
    assert summary["stages"]["first"]["test_acc"] == result.history[0]["test_acc"]
