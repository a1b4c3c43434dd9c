"""Fuzzing the command line (issue 18): mutated recipes, model files, checkpoints and `infer` inputs.

Every case runs `onebit.cli.main([...])` in-process (a few through a real `python -m onebit`), with a
fixed seed, and must end in exactly one of two ways:

* rejected: a non-zero exit, exactly one line on stderr, no traceback, no "internal error" (the
  handler's last resort for bugs), and no file left behind (half-written or not);
* accepted: exit 0 with the right answer: a recipe that passes must really be valid (an invalid
  mutation accepted is a silent wrong answer), a mutated model file or checkpoint that loads must give
  what the original gives, an accepted `infer` input must give the logits of the packed model on it.

Training is not run: `_run` is replaced by a stand-in that loads the data and builds every stage's model
(so the data and model options are checked as training would) and then stops with ``Accepted``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from onebit.cli import main

SEED = 18
TINY = ["--epochs", "1", "--set", "model.options.hidden=[32,32,32]", "--batch-size", "256", "--quiet"]


class Accepted(BaseException):
    """Raised by the training stand-in: the recipe passed every check training makes first."""


@dataclass
class Tally:
    cases: int = 0
    rejected: int = 0
    accepted: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, case: str, why: str) -> None:
        self.failures.append(f"{case}: {why}")


def run(capsys, argv: list[Any]) -> tuple[int | str, str, str]:
    try:
        code: int | str = main([str(a) for a in argv])
    except Accepted:
        code = "accepted"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_rejection(tally: Tally, case: str, code: Any, err: str) -> None:
    lines = err.strip().splitlines()
    if code in (0, "accepted"):
        tally.fail(case, "accepted")
    elif len(lines) != 1 or "Traceback" in err or "internal error" in err:
        tally.fail(case, f"exit {code}, stderr {err.strip()[-300:]!r}")
    else:
        tally.rejected += 1


def leftovers(folder: Path, allowed: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in allowed)


# --------------------------------------------------------------------------------------------------
# The reference run
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    assert main(["train", "fast", *TINY, "--out", str(root / "run")]) == 0
    assert main(["export", str(root / "run"), str(root / "model.onebit")]) == 0
    return root


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------
BASE_RECIPE: dict[str, Any] = {
    "name": "fuzz", "seed": 0, "description": "",
    "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 128, "options": {"test_fraction": 0.2}},
    "model": {"name": "mlp", "options": {"hidden": [16, 16], "activation": "hardtanh"}},
    "stage": [
        {"name": "fp", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.01},
         "lr_schedule": {"name": "cosine", "warmup_epochs": 0.5, "final_lr": 0.0}},
        {"name": "bin", "method": "reactnet", "method_options": {"binarize_activations": True}, "epochs": 2,
         "init": "previous", "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                                           "nesterov": False, "weight_decay_groups": "no_norm_bias"},
         "lr_schedule": {"name": "step", "milestones": [1], "gamma": 0.1}, "label_smoothing": 0.1,
         "grad_clip": 5.0, "distill": {"teacher": "fp", "loss": "kl+ce", "alpha": 0.5, "temperature": 2.0}},
    ],
}

# Each leaf's kind: what a valid value is, so that a mutation's expected verdict is known.
#   pos_int: int >= 1; nonneg_int: int >= 0; pos: number > 0; nonneg: number >= 0; unit: number in [0, 1];
#   text: any non-empty string; choice: one of the listed strings; bool; free: the verdict is not predicted.
KINDS: dict[str, Any] = {
    "name": "text", "seed": "seed", "description": "any_text",
    "data.name": ("choice", "digits"), "data.batch_size": "pos_int", "data.eval_batch_size": "opt_pos_int",
    "data.options.test_fraction": "open_unit",
    "model.name": ("choice", "mlp"), "model.options.hidden": "free", "model.options.activation": "free",
    "stage.*.name": "text", "stage.*.epochs": "pos_int", "stage.*.method": ("choice", "reactnet"),
    "stage.*.init": "free", "stage.*.optimizer.name": ("choice", "adam", "sgd", "adamw"),
    "stage.*.optimizer.lr": "pos", "stage.*.optimizer.momentum": "nonneg",
    "stage.*.optimizer.weight_decay": "nonneg", "stage.*.optimizer.nesterov": "bool",
    "stage.*.optimizer.weight_decay_groups": ("choice", "all", "no_norm_bias", "conv_fc_only"),
    "stage.*.lr_schedule.name": ("choice", "cosine", "linear", "step", "constant"),
    "stage.*.lr_schedule.warmup_epochs": "nonneg", "stage.*.lr_schedule.final_lr": "nonneg",
    "stage.*.lr_schedule.gamma": "pos", "stage.*.lr_schedule.milestones": "free",
    "stage.*.lr_schedule.milestones.*": "nonneg_int", "stage.*.label_smoothing": "nonneg",
    "stage.*.grad_clip": "opt_pos", "stage.*.method_options.binarize_activations": "bool",
    "stage.*.distill.teacher": "free", "stage.*.distill.loss": ("choice", "kl", "kl+ce"),
    "stage.*.distill.alpha": "unit", "stage.*.distill.temperature": "pos",
}
# Keys whose removal leaves an invalid recipe (the others have defaults).
REQUIRED = {"stage"}
WEIRD = ["", "x", "nan", None, True, False, [], {}, [1, 2], {"a": 1}, -1, 0, 0.5, 2**62, 1e308, -1e308,
         float("nan"), float("inf"), float("-inf"), "∞", "digits", "reactnet", 3]


def kind_of(path: tuple[str, ...]) -> Any:
    key = ".".join("*" if p.isdigit() else p for p in path)
    return KINDS.get(key, "free")


def valid(kind: Any, value: Any) -> bool | None:
    """Whether ``value`` is valid for ``kind`` (None: not predicted)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = number and math.isfinite(value)
    if kind == "free":
        return None
    if isinstance(kind, tuple):
        return value in kind[1:]
    if kind.startswith("opt_"):  # (None: the default)
        return True if value is None else valid(kind[4:], value)
    return {
        "text": isinstance(value, str) and bool(value.strip()),
        "any_text": isinstance(value, str),
        "bool": isinstance(value, bool),
        "pos_int": isinstance(value, int) and finite and value >= 1,
        "nonneg_int": isinstance(value, int) and finite and value >= 0,
        "seed": isinstance(value, int) and finite and 0 <= value < 2**32,
        "pos": finite and value > 0,
        "nonneg": finite and value >= 0,
        "unit": finite and 0 <= value <= 1,
        "open_unit": finite and 0 < value < 1,
    }[kind]


def leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [path] * bool(path) + [p for k, v in node.items() for p in leaves(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in leaves(v, (*path, str(i)))]
    return [path]


def locate(recipe: Any, path: tuple[str, ...]) -> tuple[Any, Any]:
    parent = recipe
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, (int(path[-1]) if isinstance(parent, list) else path[-1])


def mutate(rng: random.Random) -> tuple[dict[str, Any], str, bool | None]:
    """A mutated copy of BASE_RECIPE, a description, and whether it should be valid (None: unknown)."""
    recipe = copy.deepcopy(BASE_RECIPE)
    path = rng.choice(leaves(recipe))
    parent, key = locate(recipe, path)
    where = ".".join(path)
    action = rng.choice(["set", "set", "set", "set", "delete", "unknown_key", "numeric"])
    if action == "delete" and isinstance(parent, dict):
        del parent[key]
        return recipe, f"del {where}", (False if where in REQUIRED else None)
    if action == "unknown_key" and isinstance(parent[key], dict):
        parent[key]["bogus_" + str(rng.randrange(100))] = 1  # (in an options table too: none takes any key)
        return recipe, f"{where}.bogus", False
    if action == "unknown_key" and isinstance(parent, dict):
        parent["bogus"] = 1  # next to the leaf
        return recipe, f"{where}+bogus", False
    if action == "numeric":
        value: Any = rng.choice([0, -1, -0.5, 1e-300, 2**62, 1e308, float("nan"), float("inf"), 7, 0.25])
    else:
        value = rng.choice(WEIRD)
    parent[key] = value
    return recipe, f"{where}={value!r}", valid(kind_of(path), value)


def to_file(recipe: dict[str, Any], path: Path) -> Path:
    """As JSON, the format a run records its recipe in (and one that, unlike TOML, holds null and NaN)."""
    path = path.with_suffix(".json")
    path.write_text(json.dumps(recipe, allow_nan=True))
    return path


@pytest.fixture
def no_training(monkeypatch):
    """`train` checks the recipe, then this stand-in loads the data and builds each stage's model."""
    import onebit.train.trainer as trainer

    cache: dict[str, Any] = {}

    def stand_in(recipe, run_dir, resume, device, show, num_workers, procs):
        key = json.dumps([recipe.data.name, recipe.data.root, recipe.data.options, recipe.seed], default=str)
        if key not in cache:
            cache[key] = trainer.load_data(recipe)
        bundle = cache[key]
        for stage in recipe.stages:
            trainer.build_model(recipe, stage, bundle.num_classes, tuple(bundle.input_shape))
        raise Accepted

    monkeypatch.setattr(trainer, "_run", stand_in)


def fuzz_recipes(tally: Tally, capsys, folder: Path, rng: random.Random, n: int) -> None:
    for i in range(n):
        recipe, what, expected = mutate(rng)
        path = to_file(recipe, folder / f"r{i}")
        out = folder / f"run{i}"
        code, _, err = run(capsys, ["train", path, "--out", out])
        tally.cases += 1
        case = f"recipe {what}"
        if out.exists():
            tally.fail(case, "left a run directory behind")
        if code == "accepted":
            tally.accepted += 1
            if expected is False:
                tally.fail(case, "invalid recipe accepted")
        elif expected is True:
            tally.fail(case, f"valid recipe rejected: {err.strip()}")
        else:
            check_rejection(tally, case, code, err)
        path.unlink()


def fuzz_cli_values(tally: Tally, capsys, rng: random.Random, n: int) -> None:
    """Command-line values of every command: numbers as text, including the ones argparse must refuse."""
    options = [("train", "fast", "--epochs"), ("train", "fast", "--lr"), ("train", "fast", "--batch-size"),
               ("train", "fast", "--seed", "-1"), ("train", "fast", "--workers", "-1"), ("infer", "m", "x", "--top"),
               ("infer", "m", "x", "--threads"), ("bench", "--workers"), ("summary", "mlp", "--input-shape")]
    texts = ["0", "-1", "-0", "nan", "inf", "-inf", "1e999", "", " ", "x", "1.5", "0x10", "--", "0,0", "-3,8,8"]
    for _ in range(n):
        *argv, option = rng.choice(options)
        text = rng.choice(texts)
        if option == "-1":  # (--seed, --workers: 0 is a valid value, only negatives are bad)
            *argv, option = argv
            text = rng.choice(["-1", "-7", "x", "nan", "1.5", ""])
        code, out, err = run(capsys, [*argv, option, text])
        tally.cases += 1
        check_rejection(tally, f"{' '.join(argv)} {option} {text!r}", code, err)


# --------------------------------------------------------------------------------------------------
# Benchmark suites: `onebit bench` checks the whole suite before anything trains
# --------------------------------------------------------------------------------------------------
BASE_SUITE: dict[str, Any] = {
    "name": "fuzz", "methods": ["xnor", "bnn"], "seeds": [0], "tracks": ["accuracy", "robustness", "complexity"],
    "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"},
    "setting": [{"task": "digits", "arch": "mlp", "model_options": {"hidden": [16, 16]}}],
    "robustness": {"corruptions": ["gaussian_noise"], "severities": [1]},
}


@pytest.fixture
def no_benchmarking(monkeypatch):
    """`bench` checks the suite (onebit.bench.preflight), then this stand-in stops before any run."""
    import onebit.bench.runner as runner

    def stand_in(*args, **kwargs):
        raise Accepted

    monkeypatch.setattr(runner, "_run_specs", stand_in)


def fuzz_suites(tally: Tally, capsys, folder: Path, rng: random.Random, n: int) -> None:
    """Suite mutations; their verdicts are not predicted except unknown keys (refused), but each must be
    one clean line or pass every check."""
    import shutil

    for i in range(n):
        suite = copy.deepcopy(BASE_SUITE)
        path = rng.choice(leaves(suite))
        parent, key = locate(suite, path)
        if rng.random() < 0.2 and isinstance(parent, dict):
            parent["bogus"] = 1
            what, expected = f"{'.'.join(path)}+bogus", False
        else:
            parent[key] = rng.choice(WEIRD + ["all", "binary", "nope"])
            what, expected = f"{'.'.join(path)}={parent[key]!r}", None
        file = folder / f"s{i}.json"
        file.write_text(json.dumps(suite, allow_nan=True))
        out = folder / f"bench{i}"
        code, _, err = run(capsys, ["bench", file, "--out", out, "--quiet"])
        tally.cases += 1
        case = f"suite {what}"
        if code == "accepted":
            tally.accepted += 1
            if expected is False:
                tally.fail(case, "invalid suite accepted")
            shutil.rmtree(out, ignore_errors=True)
        else:
            check_rejection(tally, case, code, err)
            if out.exists():
                tally.fail(case, "left an output folder behind")
        file.unlink()


# --------------------------------------------------------------------------------------------------
# Model files, checkpoints, infer inputs
# --------------------------------------------------------------------------------------------------
def corrupt(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "flip", "flip", "truncate", "append", "zero", "random", "empty", "swap"])
    buf = bytearray(data)
    if kind == "flip":
        at = rng.randrange(len(buf))
        buf[at] ^= 1 << rng.randrange(8)
        return bytes(buf), f"flip@{at}"
    if kind == "truncate":
        at = rng.randrange(len(buf))
        return bytes(buf[:at]), f"truncate@{at}"
    if kind == "append":
        return bytes(buf) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), "append"
    if kind == "zero":
        at = rng.randrange(len(buf))
        width = rng.randrange(1, 256)
        buf[at:at + width] = bytes(len(buf[at:at + width]))
        return bytes(buf), f"zero@{at}+{width}"
    if kind == "random":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))), "random"
    if kind == "swap":
        at = rng.randrange(len(buf) // 2)
        return bytes(buf[at:] + buf[:at]), f"rotate@{at}"
    return b"", "empty"


def fuzz_model_files(tally: Tally, capsys, ref: Path, folder: Path, rng: random.Random, n: int) -> None:
    original = (ref / "model.onebit").read_bytes()
    x = np.random.default_rng(SEED).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.save(folder / "x.npy", x)
    assert main(["infer", str(ref / "model.onebit"), str(folder / "x.npy"), "--out", str(folder / "ref.npy")]) == 0
    expected = np.load(folder / "ref.npy")
    capsys.readouterr()
    for i in range(n):
        data, what = corrupt(original, rng)
        path = folder / f"m{i}.onebit"
        path.write_bytes(data)
        out = folder / f"y{i}.npy"
        code, _, err = run(capsys, ["infer", path, folder / "x.npy", "--out", out])
        tally.cases += 1
        case = f"model file {what}"
        if code == 0:
            tally.accepted += 1
            if not np.array_equal(np.load(out), expected):
                tally.fail(case, "a damaged model file gave other logits without an error")
            out.unlink()
        else:
            check_rejection(tally, case, code, err)
            if out.exists():
                tally.fail(case, "wrote logits although it failed")
        path.unlink()


def fuzz_checkpoints(tally: Tally, capsys, ref: Path, folder: Path, rng: random.Random, n: int) -> None:
    from onebit.train.trainer import load_checkpoint, save_checkpoint

    original = (ref / "run" / "model.pt").read_bytes()
    expected = digest(ref / "model.onebit")
    payload = load_checkpoint(ref / "run" / "model.pt")
    for i in range(n):
        path = folder / f"c{i}.pt"
        if i % 3 == 0:  # a well-formed file whose content is wrong
            bad, what = mutate_payload(copy.deepcopy(payload), rng)
            save_checkpoint(path, bad)
        else:
            data, what = corrupt(original, rng)
            path.write_bytes(data)
        out = folder / f"e{i}.onebit"
        code, _, err = run(capsys, ["export", path, out])
        tally.cases += 1
        case = f"checkpoint {what}"
        if code == 0:
            tally.accepted += 1
            if digest(out) != expected:
                tally.fail(case, "a damaged checkpoint exported another model without an error")
            out.unlink()
        else:
            check_rejection(tally, case, code, err)
            if out.exists():
                tally.fail(case, "left an exported file although it failed")
        path.unlink()


def digest(path: Path) -> str:
    """The packed file's SHA-256 of its content (its bytes also hold metadata in no fixed order)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()["sha256"]


def mutate_payload(payload: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], str]:
    weights = payload["model"]
    name = rng.choice(sorted(weights))
    kind = rng.choice(["shape", "drop", "extra", "dtype", "recipe", "stage_index", "data_info", "weights"])
    if kind == "shape":
        weights[name] = torch.zeros(*(s + 1 for s in weights[name].shape)) if weights[name].dim() else torch.zeros(2)
    elif kind == "drop":
        del weights[name]
    elif kind == "extra":
        weights["bogus.weight"] = torch.zeros(3)
    elif kind == "dtype":
        weights[name] = "not a tensor"
    elif kind == "recipe":
        payload["recipe"] = rng.choice([5, "x", {}, {"stage": 5}, None])
    elif kind == "stage_index":
        payload["stage_index"] = rng.choice([7, -9, "0", None])
    elif kind == "data_info":
        payload["data_info"] = rng.choice([{"input_shape": [0, 8, 8], "num_classes": 10},
                                           {"input_shape": [1, 8, 8], "num_classes": 0},
                                           {"input_shape": "x", "num_classes": 10}, {"num_classes": 10}, 5])
    else:
        payload["model"] = rng.choice([5, [], None])
    return payload, f"payload {kind} {name}"


def infer_input(rng: random.Random) -> tuple[Any, str, bool | None]:
    """A batch for a model of (1, 8, 8) inputs, whether it is a valid one (None: not predicted)."""
    shapes = [(2, 1, 8, 8), (1, 8, 8), (0, 1, 8, 8), (2, 1, 8), (2, 8, 8), (2, 2, 8, 8), (64,), (), (1, 1, 1, 8, 8),
              (2, 1, 0, 8), (5, 1, 8, 8)]
    shape = rng.choice(shapes)
    dtype = rng.choice(["float32", "float64", "float16", "int8", "int64", "uint8", "bool", ">f4", "complex64",
                        "U3", "S3", "datetime64[s]", "V4"])
    right_shape = shape in ((2, 1, 8, 8), (1, 8, 8), (5, 1, 8, 8))
    try:
        array = np.zeros(shape, dtype=dtype)
    except TypeError:
        array = np.zeros(shape, dtype="float32")
        dtype = "float32"
    real = np.dtype(dtype).kind in "biuf"
    special = None
    if real and array.size:
        values = np.random.default_rng(rng.randrange(2**32)).standard_normal(array.shape) * 3
        array = values.astype(dtype) if np.dtype(dtype).kind == "f" else np.abs(values).astype(dtype)
        if np.dtype(dtype).kind == "f" and rng.random() < 0.3:
            special = rng.choice(["nan", "inf", "-inf", "1e39"])
            with np.errstate(over="ignore"):
                array.flat[rng.randrange(array.size)] = float(special)
    if rng.random() < 0.1 and array.ndim >= 2:
        array = np.asfortranarray(array)
    # NaN, inf and 1e39 (inf once cast to the engine's float32) have no sign to take: refused
    return array, f"{shape} {dtype} {special or ''}", right_shape and real and special is None


def fuzz_infer_inputs(tally: Tally, capsys, ref: Path, folder: Path, rng: random.Random, n: int) -> None:
    from onebit.deploy import load

    packed = load(ref / "model.onebit")
    for i in range(n):
        array, what, expected = infer_input(rng)
        path = folder / f"x{i}.npy"
        np.save(path, array)
        out = folder / f"y{i}.npy"
        code, _, err = run(capsys, ["infer", ref / "model.onebit", path, "--out", out,
                                    "--top", rng.choice(["1", "3", "10", "99"])])
        tally.cases += 1
        case = f"infer {what}"
        if code == 0:
            tally.accepted += 1
            x = torch.from_numpy(np.array(array, dtype=np.float32))
            x = x.unsqueeze(0) if x.dim() == 3 else x
            if expected is False:
                tally.fail(case, "an invalid input gave predictions")
            elif not np.array_equal(np.load(out), packed(x).numpy()):
                tally.fail(case, "logits differ from the packed model's on the same batch")
            out.unlink()
        else:
            if expected is True:
                tally.fail(case, f"a valid batch was refused: {err.strip()}")
            check_rejection(tally, case, code, err)
            if out.exists():
                tally.fail(case, "wrote logits although it failed")
        path.unlink()


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------
def test_fuzz_the_command_line(ref, tmp_path, capsys, no_training, no_benchmarking, monkeypatch):
    monkeypatch.setattr("os.fsync", lambda fd: None)  # (durability is not what is fuzzed; a busy disk is slow)
    rng = random.Random(SEED)
    tally = Tally()
    start, cpu = time.perf_counter(), time.process_time()
    fuzz_cli_values(tally, capsys, rng, 300)
    fuzz_recipes(tally, capsys, tmp_path, rng, 900)
    fuzz_suites(tally, capsys, tmp_path, rng, 100)
    fuzz_model_files(tally, capsys, ref, tmp_path, rng, 400)
    fuzz_checkpoints(tally, capsys, ref, tmp_path, rng, 150)
    fuzz_infer_inputs(tally, capsys, ref, tmp_path, rng, 600)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    left = leftovers(tmp_path, {"x.npy", "ref.npy"})
    print(f"fuzz: {tally.cases} cases in {seconds:.0f} s ({cpu:.0f} s CPU): {tally.rejected} rejected with one line, "
          f"{tally.accepted} accepted and checked, {len(tally.failures)} failures")
    assert not left, f"files left behind: {left[:10]}"
    assert tally.cases >= 2000
    assert not tally.failures, "\n".join(tally.failures[:40])


@pytest.mark.parametrize("argv, status, needle", [
    (["train", "fast", "--epochs", "0"], 2, "--epochs"),
    (["infer", "missing.onebit", "x.npy"], 2, "does not exist"),
    (["export", "no-such-run", "m.onebit"], 2, "does not exist"),
    (["summary", "no-such-model"], 2, "neither a run directory"),
])
def test_real_processes_print_one_line(tmp_path, argv, status, needle):
    """The same through a real process: the exit status and one line on stderr, nothing else."""
    done = subprocess.run([sys.executable, "-m", "onebit", *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == status
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
