"""The trainer end to end on embedded data: files, two stages with distillation, exact resume after a
real SIGKILL, a 2-process torchrun run, and the CLI's errors."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from onebit.cli import main as cli
from onebit.train import CheckpointError, evaluate_checkpoint, load_recipe, load_run_model, train

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"name": "digits", "batch_size": 64},
    "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
    "stage": [{
        "name": "main", "method": "bnn", "epochs": 3,
        "optimizer": {"name": "adam", "lr": 3e-3},
        "lr_schedule": {"name": "cosine", "warmup_epochs": 1},
    }],
}


def tiny(**stage_changes):
    recipe = json.loads(json.dumps(TINY))
    recipe["stage"][0].update(stage_changes)
    return recipe


def test_train_writes_the_run_directory_and_learns(tmp_path):
    result = train(tiny(), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "model.pt", "stage-main.pt", "metrics.jsonl", "metrics.csv", "recipe.json",
                 "summary.json"):
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.test_accuracy > 50  # 10 classes: chance is 10%
    assert evaluate_checkpoint(run, device="cpu") == pytest.approx(result.test_accuracy)
    model, recipe, stage = load_run_model(run / "model.pt")
    assert stage.method == "bnn" and not model.training
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(tiny(), run, progress=False)


def test_two_stages_with_distillation_and_init_from_previous(tmp_path):
    recipe = tiny(name="fp", method=None, epochs=1)
    recipe["stage"].append({
        "name": "binary", "method": "reactnet", "epochs": 1, "init": "previous",
        "optimizer": {"name": "adam", "lr": 1e-3}, "distill": {"teacher": "fp", "loss": "kl+ce", "alpha": 0.5},
    })
    result = train(recipe, tmp_path / "run", progress=False)
    assert [r["stage"] for r in result.history] == ["fp", "binary"]
    fp_state = torch.load(tmp_path / "run" / "stage-fp.pt", weights_only=True)["model"]
    assert set(fp_state) < set(result.model.state_dict())  # binary net has the RSign thresholds on top


def _python_env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    recipe = tiny(epochs=5)
    recipe_toml = tmp_path / "r.toml"
    recipe_toml.write_text(_to_toml(recipe))
    base = [sys.executable, "-m", "onebit", "train", str(recipe_toml), "--quiet", "--device", "cpu", "--out"]
    # The uninterrupted reference runs in a process like the killed one (same thread count).
    subprocess.run(base + [str(tmp_path / "straight")], env=_python_env(), check=True, timeout=300)

    run = tmp_path / "killed"
    proc = subprocess.Popen(base + [str(run)], env=_python_env())
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once two epochs are checkpointed, mid-run
            metrics = run / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "model.pt").exists(), "killed before the end"
    subprocess.run(base + [str(run), "--resume"], env=_python_env(), check=True, timeout=300)
    resumed = torch.load(run / "model.pt", weights_only=True)["model"]
    reference = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_acc"] for r in straight_rows] == [r["test_acc"] for r in rows]


def _to_toml(recipe):
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in recipe.items() if k not in ("data", "model", "stage")]
    for table in ("data", "model"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in recipe[table].items()]
    for stage in recipe["stage"]:
        lines.append("[[stage]]")
        lines += [f"{k} = {value(v)}" for k, v in stage.items() if v is not None]
    return "\n".join(lines) + "\n"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one_process(tmp_path):
    recipe = tiny(epochs=2, method="xnor")
    # LayerNorm, not BatchNorm: BN statistics are per process under DDP on CPU (SyncBatchNorm is
    # GPU-only), which would make the two runs differ by design rather than by a bug.
    recipe["model"] = {"name": "vit", "options": {"patch_size": 2, "dim": 32, "depth": 1, "heads": 2}}
    path = tmp_path / "r.toml"
    path.write_text(_to_toml(recipe))
    one = train(load_recipe(path), tmp_path / "one", progress=False, device="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
           "-m", "onebit", "train", str(path), "--out", str(tmp_path / "two"), "--quiet", "--device", "cpu"]
    done = subprocess.run(cmd, env=_python_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for single, multi in zip(one.history, rows):
        assert multi["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)
        assert multi["test_acc"] == pytest.approx(single["test_acc"], abs=0.6)


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nname = "digits"\n[model]\nname = "mlp"\n[[stage]]\nname = "a"\nepochs = "two"\n')
    assert cli(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "epochs: 'two' is not an integer" in err and "Traceback" not in err
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    assert cli(["eval", str(corrupt)]) == 2
    assert "not a readable onebit checkpoint" in capsys.readouterr().err
    assert cli(["train", "fast", "--data", "nope", "--out", str(tmp_path / "y")]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli(["train", "fast", "--out", str(tmp_path / "z"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_damaged_checkpoints_give_one_clear_error(tmp_path):
    """A flipped bit anywhere in a checkpoint raises CheckpointError (torch.load alone would load
    most such files with silently different weights), unless it only hit alignment padding."""
    import random

    from onebit.train.trainer import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    payload = {"model": {"w": torch.randn(128, 128), "b": torch.randn(128)}, "epoch": 3}
    good = tmp_path / "model.pt"
    save_checkpoint(good, payload)
    data = good.read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.pt"
    detected = 0
    for offset in rng.sample(range(len(data)), 150):
        broken = bytearray(data)
        broken[offset] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(broken))
        try:
            loaded = load_checkpoint(bad)
        except CheckpointError as err:
            assert "bad.pt" in str(err)
            detected += 1
            continue
        assert loaded["epoch"] == 3  # loaded: then nothing that matters changed
        assert all(torch.equal(loaded["model"][k], payload["model"][k]) for k in payload["model"])
    assert detected >= 140
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable onebit checkpoint"):
        load_checkpoint(bad)
    weight = payload["model"]["w"].numpy().tobytes()
    broken = bytearray(data)
    broken[data.index(weight) + 1000] ^= 0x10
    bad.write_bytes(bytes(broken))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        load_checkpoint(bad)


def test_init_from_full_precision_accepts_method_state_only():
    from torch import nn

    from onebit.train.recipe import RecipeError
    from onebit.train.trainer import _load_init

    def net():
        return nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4))

    fp = net().state_dict()
    fda = onebit_binarize(net(), "fda")  # adds scales and NA modules the source lacks: fine
    _load_init(fda, fp, "fp")
    assert torch.equal(fda[1].weight, fp["1.weight"])
    bigger = nn.Sequential(*net(), nn.Linear(4, 2))
    with pytest.raises(RecipeError, match=r"layers missing from the source: 3\.weight"):
        _load_init(bigger, fp, "fp")
    partial = {k: v for k, v in fp.items() if k != "1.bias"}
    with pytest.raises(RecipeError, match=r"layers missing from the source: 1\.bias"):
        _load_init(onebit_binarize(net(), "fda"), partial, "fp")


def onebit_binarize(model, method):
    import onebit

    return onebit.binarize(model, method)


def test_init_from_full_precision_into_lazily_sized_method_state(tmp_path):
    """XNOR-Net++'s Γ of a conv is sized by the first forward pass: loading the FP weights must not read
    it (the default suite's MNIST-1D ConvNet runs failed so with ``init = "fp"``), and the stage then
    sizes it and trains."""
    from torch import nn

    from onebit.train.trainer import _load_init

    def net():
        return nn.Sequential(nn.Conv1d(1, 8, 3), nn.Conv1d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 6, 4))

    fp = net().state_dict()
    xnorpp = onebit_binarize(net(), "xnorpp")
    assert any(isinstance(p, nn.parameter.UninitializedParameter) for p in xnorpp.parameters())
    _load_init(xnorpp, fp, "fp")
    assert torch.equal(xnorpp[1].weight, fp["1.weight"])
    xnorpp(torch.randn(2, 1, 10))  # sized after the load, as the trainer does
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in xnorpp.parameters())
