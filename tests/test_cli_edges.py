"""The command line's hard edges (issue 18, CLI half): every bad value, file or fault gives one line on
stderr naming the problem and the fix, exit status 2 (usage) or 1 (fault), no traceback, nothing
half-written; zeros are refused rather than ignored; --resume RUN_DIR; `onebit summary`."""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import onebit
from onebit.cli import main

TINY = ["--epochs", "1", "--set", "model.options.hidden=[32,32,32]", "--batch-size", "256", "--quiet"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny binary run (two epochs, to be resumed) and a tiny full-precision run, with a packed file."""
    root = tmp_path_factory.mktemp("edges")
    assert main(["train", "fast", *TINY, "--out", str(root / "bin")]) == 0
    assert main(["train", "fast", *TINY, "--method", "fp", "--out", str(root / "fp")]) == 0
    assert main(["export", str(root / "bin"), str(root / "bin.onebit")]) == 0
    np.save(root / "ok.npy", np.zeros((2, 1, 8, 8), np.float32))
    return root


# -- 0: one base class, one handler --------------------------------------------------------------
def test_onebit_error_is_the_base_of_the_library_errors():
    from onebit.bench.db import DatabaseError
    from onebit.bench.suite import SuiteError
    from onebit.deploy.export import ModelFileError
    from onebit.deploy.graph import ExportError
    from onebit.deploy.kernels import KernelUnavailableError
    from onebit.errors import UsageError
    from onebit.train.recipe import RecipeError
    from onebit.train.trainer import CheckpointError, TrainingDivergedError

    for cls, builtin in [(ModelFileError, ValueError), (RecipeError, ValueError), (SuiteError, ValueError),
                         (CheckpointError, ValueError), (ExportError, ValueError), (UsageError, ValueError),
                         (DatabaseError, RuntimeError), (KernelUnavailableError, RuntimeError),
                         (TrainingDivergedError, FloatingPointError)]:
        assert issubclass(cls, onebit.OnebitError) and issubclass(cls, builtin), cls


def test_os_errors_are_one_line_with_the_fix_and_exit_1(runs, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "train", "fast", *TINY, "--out", runs / "ok.npy" / "run")
    assert code == 1
    assert_one_line(err, "Not a directory", "fix the path")

    def read_only(*args, **kwargs):  # (tests run as root, for whom chmod does not make a folder read-only)
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "out.npy"))

    monkeypatch.setattr("onebit._io.open", read_only, raising=False)
    code, _, err = run_cli(capsys, "infer", runs / "bin.onebit", runs / "ok.npy", "--out", tmp_path / "out.npy")
    assert code == 1
    assert_one_line(err, "Read-only file system", "writable")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "writable --out")])
def test_a_full_or_unwritable_run_directory_is_one_line(tmp_path, capsys, monkeypatch, code, fix):
    def failing(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr("onebit._io.open", failing, raising=False)
    status, _, err = run_cli(capsys, "train", "fast", *TINY, "--out", tmp_path / "run")
    assert status == 1
    assert_one_line(err, os.strerror(code), fix)


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--debug", "train", "fast", "--data", "nope", "--out", tmp_path / "r")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("onebit train: error:")


def test_ctrl_c_is_a_line_of_its_own_naming_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("onebit.train.train", interrupted)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = run_cli(capsys, "train", "fast", "--out", tmp_path / "r")
    assert code == 130
    assert err.startswith("\n") and f"onebit train --resume {tmp_path / 'r'}" in err


# -- 1: zeros and negatives are refused, for every command, by argparse types -------------------------
@pytest.mark.parametrize("argv", [
    ["train", "fast", "--epochs", "0"], ["train", "fast", "--lr", "0"], ["train", "fast", "--batch-size", "0"],
    ["train", "fast", "--epochs", "-1"], ["train", "fast", "--lr", "nan"], ["train", "fast", "--lr", "inf"],
    ["train", "fast", "--seed", "-3"], ["train", "fast", "--workers", "-1"],
    ["infer", "m.onebit", "x.npy", "--threads", "0"], ["infer", "m.onebit", "x.npy", "--top", "0"],
    ["infer", "m.onebit", "x.npy", "--top", "-1"], ["bench", "--workers", "0"],
    ["summary", "mlp", "--input-shape", "0,8,8"],
])
def test_zero_and_negative_values_are_refused(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_line(err, "error: argument --", "see `onebit")


# -- 3: what used to be tracebacks ------------------------------------------------------------------
def test_export_into_an_existing_directory(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", runs / "bin", tmp_path)
    assert code == 2 and list(tmp_path.iterdir()) == []
    assert_one_line(err, "is a directory", "model.onebit")


def test_nan_loss_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("onebit.train.trainer._batch_loss", lambda *a: torch.tensor(float("nan")))
    code, _, err = run_cli(capsys, "train", "fast", *TINY, "--out", tmp_path / "r")
    assert code == 1
    assert_one_line(err, "the loss is nan", "lower the learning rate")


@pytest.mark.parametrize("line, key", [
    ("stage = 5", "stage: 5 is not a list"), ("method_options = 5", "method_options: 5 is not a table"),
    ('name = 5', "name: 5 is not a run name"), ("method_options = { scael = 1 }", "method_options: unknown option"),
    ("epochs = nan", "epochs: nan is not an integer"), ("optimizer = { lr = inf }", "lr: inf is not a number"),
])
def test_recipe_type_errors_name_the_key_and_leave_no_run_directory(tmp_path, capsys, line, key):
    recipe = tmp_path / "r.toml"
    top, stage = (line, "") if line.startswith(("stage", "name")) else ("", line)
    stages = "" if line.startswith("stage") else f'[[stage]]\nmethod = "xnor"\n{stage}\n'
    recipe.write_text(f'{top}\n[data]\nname = "digits"\n[model]\nname = "mlp"\n{stages}')
    code, _, err = run_cli(capsys, "train", recipe, "--out", tmp_path / "run")
    assert code == 2 and not (tmp_path / "run").exists()
    assert_one_line(err, key)
    assert "mlp:" not in err  # (a method option was reported under the model)


def test_bad_data_name_leaves_no_run_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "fast", "--data", "nope", "--out", tmp_path / "run")
    assert code == 2 and not (tmp_path / "run").exists()
    assert_one_line(err, "'nope' is not a dataset")


def test_checkpoint_whose_weights_do_not_fit_its_model(runs, tmp_path, capsys):
    from onebit.train.trainer import load_checkpoint, save_checkpoint

    payload = load_checkpoint(runs / "bin" / "model.pt")
    name = next(k for k, v in payload["model"].items() if v.dim() == 2)
    payload["model"][name] = torch.zeros(3, 3)
    save_checkpoint(tmp_path / "model.pt", payload)
    for command in (["eval"], ["export"], ["summary"]):
        argv = [*command, tmp_path / "model.pt"] + ([tmp_path / "m.onebit"] if command == ["export"] else [])
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and not (tmp_path / "m.onebit").exists()
        assert_one_line(err, "do not fit", f"{name} has shape (3, 3)")


@pytest.mark.parametrize("content, needle", [
    (np.zeros((0, 1, 8, 8), np.float32), "empty"), (np.array(["a", "b"]), "not real numbers"),
    (np.zeros((2, 1, 8, 8), np.complex64), "not real numbers"), (np.float32(1.0), "single number"),
    (np.zeros((2, 3, 8, 8), np.float32), "this model takes batches of (1, 8, 8)"),
])
def test_infer_on_malformed_batches(runs, tmp_path, capsys, content, needle):
    path = tmp_path / "x.npy"
    np.save(path, content)
    code, out, err = run_cli(capsys, "infer", runs / "bin.onebit", path, "--out", tmp_path / "y.npy")
    assert code == 2 and out == "" and not (tmp_path / "y.npy").exists()
    assert_one_line(err, needle)


def test_infer_rejects_unknown_extensions_listing_the_accepted_ones(runs, tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text("1,2,3\n")
    code, _, err = run_cli(capsys, "infer", runs / "bin.onebit", path)
    assert code == 2
    assert_one_line(err, "unknown file type '.csv'", ".npy", ".safetensors", ".png")


def test_executor_ray_without_ray_names_the_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code, _, err = run_cli(capsys, "bench", "--executor", "ray", "--out", tmp_path / "b")
    assert code == 2 and not (tmp_path / "b").exists()
    assert_one_line(err, "pip install 'ray>=2.9'")


# -- 7: resume from the run directory alone ---------------------------------------------------------
def test_resume_from_the_run_directory_alone(tmp_path, capsys, monkeypatch):
    import onebit.train.trainer as trainer

    calls = []
    real = trainer.evaluate

    def stop_after_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(trainer, "evaluate", stop_after_first_epoch)
    argv = ["train", "fast", *TINY, "--epochs", "3", "--out", run]
    assert run_cli(capsys, *argv)[0] == 130
    monkeypatch.setattr(trainer, "evaluate", real)
    code, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", "4")
    assert code == 2
    assert_one_line(err, "stage.0.epochs was 3, now 4")
    code, out, err = run_cli(capsys, "train", "--resume", run, "--quiet")
    assert code == 0, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_runs_recipe_json_is_a_recipe(runs, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", runs / "fp" / "recipe.json", "--quiet", "--out", tmp_path / "again")
    assert code == 0, err
    recorded = json.loads((runs / "fp" / "recipe.json").read_text())
    assert json.loads((tmp_path / "again" / "recipe.json").read_text()) == recorded


# -- 9: install hints name everything an extra needs, as pyproject pins it ---------------------------
def test_install_hints_match_pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    from onebit.cli import EXTRA_REQUIREMENTS

    extras = pyproject["project"]["optional-dependencies"]
    pinned = {req.split(";")[0].strip() for reqs in extras.values() for req in reqs}
    for feature, requirements in EXTRA_REQUIREMENTS.items():
        assert set(requirements) <= pinned, feature
    from onebit.deploy import _lce_graph, _lce_nodes, lce

    # the LCE exporter's install hints, wherever its modules raise them
    source = "".join(Path(m.__file__).read_text() for m in (lce, _lce_graph, _lce_nodes))
    assert "tflite>=2.10" in source and "tflite>=2.18" not in source


@pytest.mark.parametrize("fmt, names", [("onnx", "onnx, onnxruntime"), ("lce", "tflite, flatbuffers")])
def test_export_checks_every_dependency_before_writing(runs, tmp_path, capsys, monkeypatch, fmt, names):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    out = tmp_path / f"model.{fmt}"
    code, _, err = run_cli(capsys, "export", runs / "bin", out, "--format", fmt)
    assert code == 2 and not out.exists()
    assert_one_line(err, names, "pip install")


# -- 10: the smaller ones ---------------------------------------------------------------------------
def test_exporting_a_full_precision_run_says_so(runs, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "export", runs / "fp", tmp_path / "fp.onebit")
    assert code == 0 and "(full precision)" in out and "None" not in out


def test_progress_without_a_terminal_is_one_line_per_epoch(tmp_path, capsys):
    args = [a for a in TINY if a != "--quiet"] + ["--epochs", "2"]
    code, out, err = run_cli(capsys, "train", "fast", *args, "--out", tmp_path / "r")
    assert code == 0 and "\r" not in err and "\r" not in out
    assert "epoch 1/2" in out and "epoch 2/2" in out


# -- 11: onebit summary -----------------------------------------------------------------------------
def test_summary_of_a_run_and_of_a_zoo_model(runs, capsys):
    from onebit.models import create

    code, out, _ = run_cli(capsys, "summary", runs / "bin")
    assert code == 0 and "1-bit params" in out and "compression" in out
    code, out, _ = run_cli(capsys, "summary", "mlp", "--method", "xnor", "--input-shape", "1,8,8")
    assert code == 0
    expected = str(onebit.summary(create("mlp", method="xnor", in_channels=1, input_shape=(1, 8, 8))))
    assert out.strip() == expected.strip()
    code, _, err = run_cli(capsys, "summary", "nope")
    assert code == 2
    assert_one_line(err, "neither a run directory", "mlp")


def test_broken_pipe_is_quiet(capsys, monkeypatch):
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def fileno(self):
            return fd

    fd = os.open(os.devnull, os.O_WRONLY)
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["methods"]) == 1
    os.close(fd)
    assert capsys.readouterr().err == ""
