"""`onebit export CHECKPOINT OUT --format onebit|onnx|qonnx|lce` on a trained run, and `onebit infer`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from onebit.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "fast", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("fmt", ["onnx", "qonnx", "lce"])
def test_export_formats_are_checked_against_their_runtime(run_dir, tmp_path, capsys, fmt):
    if fmt == "lce":
        from onebit.deploy.lce import LCE_PLATFORM

        if not LCE_PLATFORM:
            pytest.skip("larq-compute-engine ships its interpreter for x86-64 Linux only")
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(run_dir), str(out), "--format", fmt]) == 0
    line = capsys.readouterr().out
    diff = float(re.search(r"matches PyTorch to ([0-9.e+-]+) of the output scale", line).group(1))
    assert out.stat().st_size > 0 and diff <= 1e-4


def test_export_onebit_then_infer(run_dir, tmp_path, capsys):
    out = tmp_path / "model.onebit"
    assert main(["export", str(run_dir), str(out)]) == 0
    batch = tmp_path / "x.npy"
    np.save(batch, np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert main(["infer", str(out), str(batch)]) == 0
    assert "packed layers" in capsys.readouterr().out


def test_infer_normalizes_a_raw_batch_with_the_training_statistics(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    from onebit.deploy import load

    model = tmp_path / "model.onebit"
    assert main(["export", str(run_dir), str(model)]) == 0
    info = load(model).meta["data"]
    raw = (load_digits().images[:6] / 16.0).astype(np.float32)[:, None]  # pixels in [0, 1]
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "normalized.npy", ((raw - info["mean"][0]) / info["std"][0]).astype(np.float32))
    assert main(["infer", str(model), str(tmp_path / "raw.npy"), "--normalize", "--out", str(tmp_path / "a.npy")]) == 0
    assert main(["infer", str(model), str(tmp_path / "normalized.npy"), "--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    np.save(tmp_path / "flat.npy", raw.reshape(6, 64))
    assert main(["infer", str(model), str(tmp_path / "flat.npy"), "--normalize"]) == 2
    assert "this model takes batches of (1, 8, 8)" in capsys.readouterr().err


def test_infer_normalize_needs_recorded_statistics(tmp_path, capsys):
    from torch import nn

    import onebit
    from onebit.deploy import export, save

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3))
    onebit.binarize(model, "bnn")
    path = tmp_path / "bare.onebit"
    save(export(model.eval()), path)  # no training run: no data statistics in the file
    np.save(tmp_path / "x.npy", np.zeros((2, 16), dtype=np.float32))
    assert main(["infer", str(path), str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    assert main(["infer", str(path), str(tmp_path / "x.npy"), "--normalize"]) == 2
    err = capsys.readouterr().err
    assert "records no input mean/std" in err and err.count("\n") == 1


def test_export_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none"), str(tmp_path / "m.onnx"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()
