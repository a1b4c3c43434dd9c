"""A two-stage method (BiPer) is trained through its final stage in the benchmark, so that every run is
scored in the binary form it deploys in, within the same number of epochs as a one-stage method."""

from __future__ import annotations

import pytest

from onebit.bench.precision import declares_real_weights
from onebit.bench.runner import _recipe, execute
from onebit.bench.scores import _precision
from onebit.bench.suite import FP, final_stage_of, suite_from_dict
from onebit.methods import method_class
from onebit.methods.biper import TAU_STAGE2
from onebit.train.trainer import load_run_model


def _suite(epochs: int = 3, **extra) -> dict:
    return {
        "name": "two-stage", "methods": ["bnn", "biper"], "seeds": [0], "tracks": ["accuracy"],
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.01},
        "setting": [{"task": "digits", "arch": "mlp", "model_options": {"hidden": [32, 32]}}], **extra,
    }


@pytest.mark.parametrize("total, split", [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (5, (3, 2)), (15, (10, 5)),
                                          (30, (20, 10))])
def test_biper_final_stage_takes_a_third_of_the_epochs(total, split):
    assert method_class("biper").final_stage({}).epochs(total) == split


def test_only_a_stage_1_biper_run_gets_a_final_stage():
    hp = {"epochs": 30, "lr": 2e-3}
    assert final_stage_of("biper", {"binarize_activations": True}, hp) == {
        "options": {"stage": 2, "tau": TAU_STAGE2}, "first_epochs": 20, "epochs": 10, "lr": pytest.approx(2e-4)}
    assert final_stage_of("biper", {"stage": 2}, hp) == {}
    assert final_stage_of("bnn", {}, hp) == {} and final_stage_of(FP, {}, hp) == {}
    assert declares_real_weights("biper") and not declares_real_weights("biper", {"stage": 2})
    assert not declares_real_weights("bnn") and not declares_real_weights("no-such-method")


def test_suite_runs_carry_the_final_stage_and_its_id():
    suite = suite_from_dict(_suite(sensitivity={"train": {"epochs": 6}}, tracks=["accuracy", "sensitivity"]))
    biper = [s for s in suite.runs() if s.method == "biper"]
    assert {s.role for s in biper} == {"main", "sensitivity"}
    main = next(s for s in biper if s.role == "main")
    assert main.final_stage["first_epochs"] + main.final_stage["epochs"] == 3
    for spec in (s for s in biper if s.role == "sensitivity"):  # its own epochs and grid learning rate
        assert (spec.final_stage["first_epochs"], spec.final_stage["epochs"]) == (4, 2)
        assert spec.final_stage["lr"] == pytest.approx(spec.hparams["lr"] / 10)
    bnn = next(s for s in suite.runs() if s.method == "bnn" and s.role == "main")
    assert bnn.final_stage == {}
    # a BiPer run trained through stage 2 is another run than one that stopped after stage 1
    from dataclasses import replace

    assert replace(main, final_stage={}).run_id != main.run_id
    assert replace(bnn, final_stage={}).run_id == bnn.run_id  # one-stage ids are unchanged


def test_recipe_has_both_stages_with_their_options_epochs_and_rates():
    spec = next(s for s in suite_from_dict(_suite(epochs=6, train={"epochs": 6, "batch_size": 64, "lr": 0.01,
                                                                    "schedule": "step"})).runs()
                if s.method == "biper")
    first, final = _recipe(spec).stages
    assert (first.epochs, final.epochs) == (4, 2)
    assert first.method == final.method == "biper"
    assert first.method_options.get("stage", 1) == 1 and first.optimizer.lr == pytest.approx(0.01)
    # the run's W/A layer options stay in both stages
    assert final.method_options == {**first.method_options, "stage": 2, "tau": TAU_STAGE2}
    assert final.optimizer.lr == pytest.approx(0.001) and final.init == "previous"
    assert first.lr_schedule.milestones == [2, 3] and final.lr_schedule.milestones == [1]


def test_a_biper_run_ends_binary_and_is_scored_w1a1(tmp_path):
    spec = next(s for s in suite_from_dict(_suite()).runs() if s.method == "biper")
    record = execute(spec, tmp_path, threads=1)
    assert record.status == "done", record.error
    assert (record.metrics["w_bits"], record.metrics["a_bits"]) == (1.0, 1.0)
    assert _precision(record) == "W1A1"
    model, _, _ = load_run_model(tmp_path / "runs" / spec.run_id / "model.pt")
    stages = {m.method.stage for m in model.modules() if getattr(m, "method", None) is not None}
    assert stages == {2}
    # the same record without its final stage (as results before the final stage were stored) is W32A1
    old = type(record)(**{**record.__dict__, "config": {k: v for k, v in record.config.items()
                                                       if k != "final_stage"}})
    assert _precision(old) == "W32A1"
    # a deployment run times the finalized (stage-2) form: its measured widths hold without a final stage
    deployed = type(record)(**{**record.__dict__, "role": "inference", "config": old.config})
    assert _precision(deployed) == "W1A1"


def test_timed_deployment_runs_come_last_and_alone(tmp_path):
    from onebit.bench.runner import _phases, fp_init

    table = _suite(tracks=["accuracy", "inference"], inference={"networks": ["bireal18"], "threads": [1, 2]},
                   train={"epochs": 3, "batch_size": 64, "init": "fp"})
    phases = _phases(suite_from_dict(table).runs(), tmp_path)
    assert [[s.method for s in p.runs] for p in phases] == [[FP], ["bnn", "biper"], ["bnn", "biper"]]
    assert [p.runs[0].role for p in phases] == ["main", "main", "inference"]
    assert [p.limit(4) for p in phases] == [4, 4, 1]
    # every binarized run, two-stage ones included, starts from an FP run the suite trains
    fp_models = {tmp_path.resolve() / "runs" / s.run_id / "model.pt" for s in phases[0].runs}
    assert {fp_init(s, tmp_path) for s in phases[1].runs} <= fp_models


def test_report_states_how_each_setting_was_trained():
    from onebit.bench.scores import _training_setup

    specs = suite_from_dict(_suite(train={"epochs": 6, "batch_size": 64, "init": "fp"})).runs()
    records = [_record(s) for s in specs]
    assert _training_setup(records) == [
        "digits × mlp: 6 epochs, binarized runs start from their FP run (two stages: biper 4 + 2)"]
    scratch = [_record(s) for s in suite_from_dict(_suite()).runs() if s.method != "biper"]
    assert _training_setup(scratch) == ["digits × mlp: 3 epochs, binarized runs start from scratch"]


def _record(spec):
    from onebit.bench.db import RunRecord

    return RunRecord(spec.run_id, spec.suite, spec.role, spec.method, spec.setting.arch, spec.setting.family,
                     spec.setting.task, spec.seed, spec.config(), metrics={"acc": 50.0})


def test_literature_comparison_says_where_the_runs_started():
    from types import SimpleNamespace

    from onebit.bench.literature import _start

    def cells(*inits):
        return [SimpleNamespace(hparams={} if i is None else {"init": i}) for i in inits]

    assert _start(cells("fp", "fp")) == "from the FP model's weights"
    assert _start(cells(None, "scratch")) == "from scratch"
    assert _start(cells("fp", None)) == "from scratch or from the FP model's weights"
