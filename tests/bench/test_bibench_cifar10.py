"""The shipped ``bibench_cifar10`` suite, ``--device``, ``--data-root`` and the Ray executor on a cluster.

The suite's full runs need a GPU and the real CIFAR-10; here it runs in its shape (CIFAR-10 files in the
official format, ResNet-20, two methods) on a few random images, on the CPU, through the local executor,
a local Ray instance and a Ray cluster started with ``ray start --head``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.bench import ResultsDB, load_suite
from onebit.bench.runner import check_device, execute, run_suite
from onebit.bench.suite import SuiteError, suite_from_dict
from onebit.cli import main

NO_CUDA = not torch.cuda.is_available()


def make_cifar_folder(root: Path, per_batch: int = 8, seed: int = 0) -> Path:
    """A CIFAR-10 folder in the official python format (``cifar-10-batches-py/``) with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    return root


RESNET20 = {"arch": "resnet20", "model_options": {"activation": "hardtanh", "shortcut": "B"}}
#: the plumbing tests' model: seconds faster than ResNet-20 on a loaded 2-core machine
MLP = {"arch": "mlp", "model_options": {"hidden": [16]}}


def tiny_cifar_suite(name: str = "tiny_cifar", model: dict = RESNET20, **extra) -> dict:
    """bibench_cifar10's shape at toy scale: CIFAR-10 (40 training images: one step), a CIFAR ResNet with
    BiBench's model options, the SGD setting of its grid, two methods, W1A1, the robustness and
    complexity tracks."""
    return {
        "name": name, "methods": ["bnn", "xnor"], "seeds": [0], "activations": "binary",
        "tracks": ["accuracy", "robustness", "training", "complexity"],
        "train": {"epochs": 1, "batch_size": 40, "schedule": "cosine"},
        "setting": [{"task": "cifar10", **model,
                     "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}}],
        "robustness": {"corruptions": ["gaussian_noise", "contrast"], "severities": [1]},
        **extra,
    }


#: tiny_cifar_suite() as a suite file, for the command line
TINY_CIFAR_TOML = """name = "tiny_cifar"
methods = ["bnn", "xnor"]
seeds = [0]
activations = "binary"
tracks = ["accuracy", "robustness", "training", "complexity"]

[train]
epochs = 1
batch_size = 40
schedule = "cosine"

[[setting]]
task = "cifar10"
arch = "resnet20"
model_options = { activation = "hardtanh", shortcut = "B" }
train = { optimizer = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 1e-4 }

[robustness]
corruptions = ["gaussian_noise", "contrast"]
severities = [1]
"""


@pytest.fixture
def cifar_root(tmp_path):
    return make_cifar_folder(tmp_path / "cifar")


def _records(out: Path):
    with ResultsDB(out / "results.sqlite") as db:
        return db.runs()


def _assert_complete(out: Path) -> None:
    runs = _records(out)
    assert sorted(r.method for r in runs) == ["bnn", "fp", "xnor"]
    assert all(r.status == "done" for r in runs), [r.error for r in runs]
    for r in runs:
        assert {"acc", "corrupt/gaussian_noise/1", "corrupt/contrast/1", "bops", "n_test"} <= set(r.metrics)
        assert r.metrics["n_test"] == 8 and r.metrics["n_classes"] == 10
        assert r.config["setting"]["task"] == "cifar10"


# --------------------------------------------------------------------------------------------------
# The shipped suite follows BiBench's configs
# --------------------------------------------------------------------------------------------------
def test_shipped_suite_follows_bibench_acc_cifar10_and_eff_train_configs():
    suite = load_suite("bibench_cifar10")
    from onebit.methods import available

    assert suite.methods == available() and len(suite.seeds) >= 3 and suite.activations == "binary"
    assert suite.device == "cpu" and suite.data_root == "data/cifar10"
    main_runs = [r for r in suite.runs() if r.role == "main"]
    grid = {(r.setting.arch, r.hparams["optimizer"]) for r in main_runs}
    assert grid == {(a, o) for a in ("resnet18", "resnet20", "vgg_small") for o in ("sgd", "adam")}
    for r in main_runs:  # schedules/sgd_1e-1_cosinelr_400e.py and adam_1e-3_cosinelr_400e.py
        hp = r.hparams
        assert (hp["epochs"], hp["batch_size"], hp["schedule"], hp["warmup_epochs"]) == (400, 128, "cosine", 0)
        expected = (0.1, 0.9, 1e-4) if hp["optimizer"] == "sgd" else (1e-3, hp["momentum"], 0.0)
        assert (hp["lr"], hp["momentum"], hp["weight_decay"]) == expected
        assert r.setting.model_options["activation"] == "hardtanh"  # first_act_cfg = act_cfg = Hardtanh
        assert r.method == "fp" or r.layer_options in ({}, {"binarize_activations": True})  # W1A1 only
    assert {r.setting.model_options.get("shortcut") for r in main_runs if r.setting.arch == "resnet20"} == {"B"}
    sensitivity = [r for r in suite.runs() if r.role == "sensitivity"]  # eff_train: ResNet-18, 200 epochs
    assert {r.setting.arch for r in sensitivity} == {"resnet18"} and {r.seed for r in sensitivity} == {0}
    points = {(r.hparams["optimizer"], r.hparams["lr"], r.hparams["schedule"]): r.hparams for r in sensitivity}
    assert len(points) == 8 and all(hp["epochs"] == 200 for hp in points.values())
    assert points[("sgd", 0.1, "step")]["momentum"] == 0.0 and points[("sgd", 0.1, "cosine")]["momentum"] == 0.9


# --------------------------------------------------------------------------------------------------
# init = "fp": binarized runs start from their FP run (BiBench's init_cfg=Pretrained)
# --------------------------------------------------------------------------------------------------
def test_binarized_runs_start_from_the_fp_run_which_trains_first(tmp_path, cifar_root):
    """Two workers: without the FP-first phase a binarized run would start before its FP model exists."""
    from onebit.train.trainer import load_checkpoint

    out = tmp_path / "out"
    suite = tiny_cifar_suite(model=MLP)
    suite["train"]["init"] = "fp"
    result = run_suite(suite, out, data_root=cifar_root, workers=2, progress=False, report=False)
    assert result["failed"] == [] and result["done"] == 3
    runs = {r.method: r for r in _records(out)}
    fp_model = (out / "runs" / runs["fp"].run_id / "model.pt").resolve()
    for method in ("bnn", "xnor"):
        recipe = load_checkpoint(out / "runs" / runs[method].run_id / "model.pt")["recipe"]
        assert recipe["stage"][0]["init"] == str(fp_model)
        assert runs[method].config["hparams"]["init"] == "fp" == runs["fp"].config["hparams"]["init"]
    fp_recipe = load_checkpoint(fp_model)["recipe"]
    assert fp_recipe["stage"][0]["init"] == "scratch"


def test_init_fp_without_its_fp_model_is_a_failed_run_naming_the_cause(tmp_path, cifar_root):
    suite = tiny_cifar_suite(model=MLP)
    suite["train"]["init"] = "fp"
    spec = next(r for r in suite_from_dict(suite).runs() if r.method == "bnn")
    record = execute(spec, tmp_path, data_root=str(cifar_root))
    assert record.status == "failed" and 'init = "fp"' in record.error and "shares" in record.error


def test_init_key_is_checked_and_leaves_other_suites_ids_alone():
    plain = suite_from_dict(tiny_cifar_suite()).runs()
    assert all("init" not in r.hparams for r in plain)  # ids of suites without the key are unchanged
    with pytest.raises(SuiteError, match=r"train.init: 'imagenet' is not one of scratch, fp"):
        suite_from_dict({**tiny_cifar_suite(), "train": {"init": "imagenet"}})
    shipped = load_suite("bibench_cifar10").runs()
    assert {r.hparams.get("init") for r in shipped if r.role == "main"} == {"fp"}
    assert all("init" not in r.hparams for r in shipped if r.role == "sensitivity")  # eff_train: from scratch


# --------------------------------------------------------------------------------------------------
# The data root
# --------------------------------------------------------------------------------------------------
def test_missing_data_root_is_one_error_naming_the_fix_before_any_training(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SuiteError, match=r"data root .*no-such-folder.* is not a folder.*--data-root PATH"):
        run_suite(tiny_cifar_suite(), tmp_path / "out", data_root=missing, workers=1, progress=False)
    assert not (tmp_path / "out" / "results.sqlite").exists()
    suite_file = tmp_path / "s.toml"
    suite_file.write_text('name = "s"\nmethods = ["bnn"]\n[[setting]]\ntask = "cifar10"\narch = "resnet20"\n')
    assert main(["bench", str(suite_file), "--out", str(tmp_path / "cli"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no data root is given" in err and "--data-root PATH" in err


def test_data_root_from_the_suite_and_the_command_line(tmp_path, cifar_root):
    suite = suite_from_dict(tiny_cifar_suite(model=MLP, data_root=str(tmp_path / "elsewhere")))
    assert suite.data_root == str(tmp_path / "elsewhere")
    with pytest.raises(SuiteError, match="elsewhere"):  # the suite's folder is checked ...
        run_suite(suite, tmp_path / "a", workers=1, progress=False, report=False)
    # ... and --data-root wins over it
    result = run_suite(suite, tmp_path / "b", data_root=cifar_root, workers=1, progress=False, report=False)
    assert result["failed"] == [] and result["done"] == 3
    with pytest.raises(SuiteError, match="data_root: must be a non-empty string"):
        suite_from_dict(tiny_cifar_suite(data_root=""))


def test_data_root_is_not_part_of_a_run_id(tmp_path, cifar_root):
    """Machines of a Ray cluster (or one user moving the data) keep the copy elsewhere: the run is the same."""
    a = suite_from_dict(tiny_cifar_suite(data_root="/a")).runs()
    b = suite_from_dict(tiny_cifar_suite(data_root="/b", device="cuda")).runs()
    assert [r.run_id for r in a] == [r.run_id for r in b]


# --------------------------------------------------------------------------------------------------
# The device
# --------------------------------------------------------------------------------------------------
def test_local_run_on_an_explicit_cpu_device(tmp_path, cifar_root, monkeypatch):
    """device="cpu" reaches training and evaluation (train()'s own default, "auto", would take a GPU)."""
    import onebit.train.trainer as trainer

    seen: dict[str, set] = {"train": set(), "evaluate": set()}
    real_train, real_evaluate = trainer.train, trainer.evaluate

    def spy_train(*args, **kwargs):
        seen["train"].add(kwargs.get("device"))
        return real_train(*args, **kwargs)

    def spy_evaluate(model, loader, device, procs=None):
        seen["evaluate"].add(str(device))
        return real_evaluate(model, loader, device, procs)

    monkeypatch.setattr(trainer, "train", spy_train)
    monkeypatch.setattr(trainer, "evaluate", spy_evaluate)
    out = tmp_path / "out"
    result = run_suite(tiny_cifar_suite(model=MLP), out, device="cpu", data_root=cifar_root, workers=1,
                       progress=False, report=False)
    assert result["failed"] == []
    assert seen == {"train": {"cpu"}, "evaluate": {"cpu"}}
    _assert_complete(out)


@pytest.mark.skipif(not NO_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_any_training(tmp_path, cifar_root, capsys):
    with pytest.raises(SuiteError, match=r"--device cuda: CUDA is not available on this machine.*--device cpu"):
        run_suite(tiny_cifar_suite(), tmp_path / "api", device="cuda", data_root=cifar_root, progress=False)
    with pytest.raises(SuiteError, match="CUDA is not available"):  # the suite's own device key
        run_suite(tiny_cifar_suite(device="cuda"), tmp_path / "key", data_root=cifar_root, progress=False)
    assert not (tmp_path / "api").exists() and not (tmp_path / "key").exists()
    suite_file = tmp_path / "s.toml"
    suite_file.write_text('name = "s"\nmethods = ["bnn"]\n[[setting]]\ntask = "digits"\narch = "mlp"\n')
    assert main(["bench", str(suite_file), "--out", str(tmp_path / "cli"), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "Traceback" not in err


def test_device_names_are_checked():
    assert check_device("cpu") == "cpu" and check_device("cuda:1", on_this_machine=False) == "cuda:1"
    for bad in ("gpu", "mps", "cuda:x", ""):
        with pytest.raises(SuiteError, match="is not one of cpu, cuda, cuda:N"):
            check_device(bad)


def test_a_failed_cuda_run_is_recorded_not_raised(tmp_path, cifar_root):
    """A worker without the GPU it was sent to (e.g. a Ray worker) records the failure; the suite goes on."""
    if not NO_CUDA:
        pytest.skip("needs a machine without CUDA")
    spec = suite_from_dict(tiny_cifar_suite()).runs()[0]
    record = execute(spec, tmp_path, device="cuda", data_root=str(cifar_root))
    assert record.status == "failed" and "CUDA" in record.error


# --------------------------------------------------------------------------------------------------
# Ray: a local instance, and a cluster started with `ray start --head`
# --------------------------------------------------------------------------------------------------
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray (the [bench] extra)")


def test_unreachable_ray_cluster_is_one_error_naming_the_address(tmp_path, cifar_root, monkeypatch, capsys):
    """Ray's ConnectionError is an OSError: it must not read as an output-folder problem."""
    ray = pytest.importorskip("ray")

    def unreachable(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance")

    monkeypatch.setattr(ray, "init", unreachable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    suite_file = tmp_path / "tiny_cifar.toml"
    suite_file.write_text(TINY_CIFAR_TOML)
    code = main(["bench", str(suite_file), "--out", str(tmp_path / "out"), "--executor", "ray", "--address",
                 "10.9.8.7:6379", "--data-root", str(cifar_root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--address 10.9.8.7:6379: no Ray cluster answers there" in err and "ray start --head" in err
    assert "output folder" not in err


@needs_ray
def test_ray_local_instance_runs_the_cifar_suite(tmp_path, cifar_root):
    """Ray start-up dominates (~10-40 s on a loaded 2-core machine)."""
    out = tmp_path / "out"
    result = run_suite(tiny_cifar_suite(model=MLP), out, executor="ray", workers=2, device="cpu", data_root=cifar_root,
                       progress=False, report=False)
    assert result["failed"] == [] and result["runs"] == 3
    _assert_complete(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _ray_head(tmp: Path):
    """``ray start --head --block`` in a subprocess of its own (its own temp dir and port), ended by its id:
    the processes it started (GCS, raylet, workers) end with it; nothing else on the machine is touched."""
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = Path("/tmp") / f"rb2-{os.getpid()}-{port}"  # a short path: Ray's unix sockets live in it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=(tmp / "ray-head.log").open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # ~35 s on a 2-core machine under heavy load
        # ready when it says so: its port opens earlier, before the cluster (and its auth token) is set up
        while "Ray runtime started" not in (tmp / "ray-head.log").read_text():
            if head.poll() is not None:
                pytest.fail(f"ray start --head exited: {(tmp / 'ray-head.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("ray start --head did not start within 180 s")
            time.sleep(0.5)
        yield address
    finally:
        os.killpg(head.pid, 15)  # the session this test started (start_new_session): the head and its children
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_ray
def test_ray_cluster_started_with_ray_start_runs_the_cifar_suite(tmp_path, cifar_root, capsys):
    """The steps README gives for several machines, on one: `ray start --head`, then `onebit bench ...
    --executor ray --address HOST:PORT`; the results are gathered into the driver's database."""
    out = tmp_path / "out"
    suite_file = tmp_path / "tiny_cifar.toml"
    suite_file.write_text(TINY_CIFAR_TOML)
    with _ray_head(tmp_path) as address:
        code = main(["bench", str(suite_file), "--out", str(out), "--executor", "ray", "--address", address,
                     "--device", "cpu", "--data-root", str(cifar_root), "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    _assert_complete(out)
    assert "3 runs (0 already done, 0 failed)" in capsys.readouterr().out
