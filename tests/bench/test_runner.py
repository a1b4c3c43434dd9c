"""The benchmark runner: suite files, the results database, resume after a kill, executors, CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onebit.bench import ResultsDB, load_suite
from onebit.bench.db import DatabaseError, RunRecord
from onebit.bench.runner import execute, run_suite
from onebit.bench.suite import SuiteError, builtin_suites, suite_from_dict
from onebit.cli import main


def tiny_suite(name: str = "tiny", methods: tuple[str, ...] = ("bnn",), sensitivity: bool = True) -> dict:
    tracks = ["accuracy", "robustness", "training", "complexity", "inference"]
    if sensitivity:
        tracks.append("sensitivity")
    return {
        "name": name, "methods": list(methods), "seeds": [0], "tracks": tracks,
        "train": {"epochs": 1, "batch_size": 64},
        "setting": [{"task": "digits", "arch": "mlp", "model_options": {"hidden": [32, 32]}}],
        "robustness": {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]},
        "sensitivity": {"grid": [{"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam", "lr": 1e-3}],
                        "schedules": ["cosine"]},
        "inference": {"repeats": 3},
    }


def write_toml(path: Path, table: dict) -> Path:
    def value(v):
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict) and k != "setting"]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    for setting in table["setting"]:
        lines += ["[[setting]]"] + [f"{kk} = {value(vv)}" for kk, vv in setting.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------------
def test_default_suite_covers_bibench_methods_both_tasks_and_every_track():
    from onebit.bench.literature import IMAGENET_RESNET18
    from onebit.methods import available

    suite = load_suite("default")
    assert "default" in builtin_suites()
    # BiBench's eight methods plus every method with a published ImageNet number (the side by side)
    bibench = {"bnn", "xnor", "dorefa", "bireal", "xnorpp", "reactnet", "recu", "fda"}
    assert set(suite.methods) == bibench | set(IMAGENET_RESNET18) and set(suite.methods) <= set(available())
    assert {s.family for s in suite.settings} == {"cnn", "mlp"}
    assert {s.task for s in suite.settings} == {"digits", "mnist1d"}
    assert set(suite.tracks) == {"accuracy", "robustness", "training", "sensitivity", "complexity", "inference"}
    runs = suite.runs()
    assert len({r.run_id for r in runs}) == len(runs)
    main_runs = [r for r in runs if r.role == "main"]
    assert len(main_runs) == len(suite.settings) * len(suite.seeds) * (len(suite.methods) + 1)
    assert len(suite.seeds) >= 3  # intervals and rank stability need several seeds
    # the inference track times every method on the deployment networks, not the trained models
    deploy = [r for r in runs if r.role == "inference"]
    assert len(deploy) == len(suite.methods) * len(suite.inference["networks"])
    assert {r.setting.arch for r in deploy} == {"bireal18", "reactnet_a"}
    assert all("inference" not in r.tracks for r in main_runs)
    sens = [r for r in runs if r.role == "sensitivity"]
    assert {(r.hparams["optimizer"], r.hparams["lr"], r.hparams["schedule"]) for r in sens} == {
        (o, lr, s) for o, lr in (("sgd", 0.1), ("sgd", 0.01), ("adam", 1e-3), ("adam", 1e-4))
        for s in ("cosine", "step")}


def test_suite_file_round_trip(tmp_path):
    path = write_toml(tmp_path / "mine.toml", tiny_suite("mine"))
    suite = load_suite(path)
    assert suite.name == "mine" and suite.methods == ["bnn"] and suite.severities == (1, 5)
    assert [r.run_id for r in suite.runs()] == [r.run_id for r in suite_from_dict(tiny_suite("mine")).runs()]


@pytest.mark.parametrize(("change", "message"), [
    ({"methods": ["bnn", "nope"]}, "unknown method(s) nope"),
    ({"tracks": ["robustness"]}, "includes accuracy"),
    ({"robustness": {"severities": [0, 6]}}, "list from 1..5"),
    ({"setting": [{"task": "digits", "arch": "resnet99"}]}, "unknown model 'resnet99'"),
    ({"setting": [{"task": "imagenet", "arch": "mlp"}]}, "unknown dataset 'imagenet'"),
    ({"train": {"lr": -1}}, "train.lr: must be positive"),
    ({"train": {"optimizer": "lion"}}, "'lion' is not one of"),
    ({"colour": "blue"}, "unknown key(s) colour"),
    ({"sensitivity": {"setting": 3}}, "index into [[setting]]"),
])
def test_suite_errors_name_the_entry(change, message):
    table = tiny_suite()
    table.update(change)
    with pytest.raises(SuiteError) as err:
        suite_from_dict(table)
    assert message in str(err.value)


def test_unknown_suite_lists_shipped():
    with pytest.raises(SuiteError, match="shipped: .*default"):
        load_suite("no-such-suite")


def test_run_id_depends_on_what_the_run_computes():
    a, b = suite_from_dict(tiny_suite("a")).runs()[:2]
    renamed = suite_from_dict(tiny_suite("other-name")).runs()[0]
    assert a.run_id == renamed.run_id  # the suite's name is not part of the run
    assert a.run_id != b.run_id
    longer = tiny_suite()
    longer["train"]["epochs"] = 2
    assert suite_from_dict(longer).runs()[0].run_id != a.run_id


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------
def test_database_rejects_foreign_files_and_bad_metrics(tmp_path):
    junk = tmp_path / "results.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="not a onebit results database"):
        ResultsDB(junk)
    with ResultsDB(tmp_path / "ok.sqlite") as db:
        record = RunRecord("r", "s", "main", "fp", "mlp", "mlp", "digits", 0, {}, metrics={"acc": float("nan")})
        with pytest.raises(ValueError, match="finite number"):
            db.write_run(record)
        assert db.count() == {"metrics": 0}  # nothing half-written


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------
def test_execute_measures_every_track(tmp_path):
    spec = next(r for r in suite_from_dict(tiny_suite()).runs() if r.method == "bnn" and r.role == "main")
    record = execute(spec, tmp_path, threads=1)
    assert record.status == "done", record.error
    m = record.metrics
    for key in ("acc", "epoch_time_s", "params_1bit", "params_32bit", "bops", "flops_bibench", "deployable",
                "latency_ms", "latency_fp32_ms", "file_bytes"):
        assert key in m, key
    assert {k for k in m if k.startswith("corrupt/")} == {
        f"corrupt/{c}/{s}" for c in ("gaussian_noise", "contrast") for s in (1, 5)}
    assert 0 <= m["acc"] <= 100 and m["bops"] == 32 * 32 and m["deployable"] == 1.0
    assert m["file_bytes"] == (tmp_path / "runs" / spec.run_id / "model.onebit").stat().st_size


def test_failed_run_is_recorded_not_raised(tmp_path):
    table = tiny_suite()
    table["setting"] = [{"task": "digits", "arch": "mlp", "model_options": {"hidden": "wide"}}]
    spec = suite_from_dict(table).runs()[0]
    record = execute(spec, tmp_path)
    assert record.status == "failed" and "hidden" in record.error
    assert (tmp_path / "runs" / spec.run_id / "error.txt").exists()


def test_suite_runs_once_then_skips_and_reports(tmp_path):
    out = tmp_path / "bench"
    result = run_suite(tiny_suite(), out, workers=1, progress=False)
    n = len(suite_from_dict(tiny_suite()).runs())
    assert result["runs"] == n and result["failed"] == [] and result["skipped"] == 0
    with ResultsDB(out / "results.sqlite") as db:
        first = {r.run_id: r.finished for r in db.runs()}
        assert len(first) == n and all(r.code_version and r.machine for r in db.runs())
    assert (out / "report" / "report.html").stat().st_size > 0
    again = run_suite(tiny_suite(), out, workers=1, progress=False, report=False)
    assert again["skipped"] == n
    with ResultsDB(out / "results.sqlite") as db:
        assert {r.run_id: r.finished for r in db.runs()} == first
    assert main(["report", str(out)]) == 0


def test_killed_suite_resumes_without_duplicates_or_losses(tmp_path):
    suite = write_toml(tmp_path / "kill.toml", tiny_suite("kill", methods=("bnn", "xnor", "dorefa"),
                                                           sensitivity=False))
    out = tmp_path / "out"
    db_path = out / "results.sqlite"
    cmd = [sys.executable, "-m", "onebit", "bench", str(suite), "--out", str(out), "--workers", "1",
           "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if db_path.exists():
                with sqlite3.connect(db_path) as con:
                    if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 1:
                        break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    with ResultsDB(db_path) as db:
        before = {r.run_id: (r.finished, r.metrics) for r in db.runs()}
    assert 1 <= len(before) < 4
    assert main(["bench", str(suite), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]) == 0
    with ResultsDB(db_path) as db:
        after = {r.run_id: (r.finished, r.metrics) for r in db.runs()}
        metric_rows = db.count()["metrics"]
    assert len(after) == 4  # fp + 3 methods, each exactly once
    assert {k: after[k] for k in before} == before  # finished runs were not redone
    assert metric_rows == sum(len(m) for _, m in after.values())


def test_ray_executor_runs_a_two_run_suite(tmp_path):
    out = tmp_path / "ray"
    result = run_suite(tiny_suite("ray", sensitivity=False), out, executor="ray", workers=2, progress=False,
                       report=False)
    assert result["failed"] == [] and result["runs"] == 2
    with ResultsDB(out / "results.sqlite") as db:
        runs = db.runs()
    assert sorted(r.method for r in runs) == ["bnn", "fp"] and all("acc" in r.metrics for r in runs)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "no-such-suite", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a shipped suite" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no results database" in capsys.readouterr().err
