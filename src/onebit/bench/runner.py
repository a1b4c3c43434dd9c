"""Run a benchmark suite: train every run, measure its tracks, and record it in the results database.

Each :class:`~onebit.bench.suite.RunSpec` runs in a worker (a local process pool, or Ray tasks) that
trains it with :func:`onebit.train.train` into ``OUT/runs/<run_id>/`` and returns its metrics; only
this process writes ``OUT/results.sqlite``, one transaction per run. A re-run skips the runs already
recorded, and a run killed half-way resumes from its last epoch checkpoint.

Training, evaluation and the robustness track run on the suite's ``device`` (``--device cuda``); the
complexity and inference tracks measure the CPU deployment form and run on the CPU. With
``executor="ray"`` and a cluster ``address``, every worker machine needs onebit installed and the
data at the same ``data_root`` path; its run folders go to ``out_dir`` on its own disk (a shared file
system makes resume work across machines) and its results come back to this process's database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from .._io import atomic_write_bytes
from ..errors import OnebitError
from ._lifetime import OutputLock, die_with_parent, output_folder_error
from .db import ResultsDB, RunRecord
from .preflight import check_runs
from .suite import FP, RunSpec, Suite, SuiteError, load_suite

__all__ = ["run_suite", "execute", "code_version", "machine_description", "check_device", "needs_data_root",
           "fp_init", "EXECUTORS"]

EXECUTORS = ("local", "ray")
RESULTS_FILE = "results.sqlite"


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """onebit's version, plus the git commit (and ``.dirty``) when running from a checkout."""
    root = Path(__file__).resolve().parents[3]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()

    try:
        rev, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{rev}{'.dirty' if dirty else ''}"


@functools.lru_cache(maxsize=1)
def machine_description() -> str:
    """CPU model, core count, OS and torch version, e.g. for comparing timings across result files."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, torch {torch.__version__}"


def _machine(device: torch.device) -> str:
    """:func:`machine_description`, plus the GPU's name when the run trains on one."""
    if device.type == "cuda":
        return f"{machine_description()}, {torch.cuda.get_device_name(device)}"
    return machine_description()


# --------------------------------------------------------------------------------------------------
# Where runs execute: the device and the data folder
# --------------------------------------------------------------------------------------------------
def check_device(device: str, *, on_this_machine: bool = True) -> str:
    """``device`` as torch spells it ("cpu", "cuda", "cuda:1"); one :class:`SuiteError` naming the fix when
    it is not a CPU/CUDA device or, for runs on this machine, when CUDA is not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SuiteError(f"device {device!r} is not one of cpu, cuda, cuda:N; pass --device cpu or --device cuda")
    if dev.type == "cuda" and on_this_machine:
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SuiteError(f"--device {device}: CUDA is not available on this machine ({build}, torch "
                             f"{torch.__version__}); run with --device cpu, or on a machine with an NVIDIA GPU "
                             "and a CUDA build of torch (or on a Ray cluster with GPU workers: --executor ray "
                             "--address HOST:PORT)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SuiteError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them")
    return str(dev)


def needs_data_root(task: str) -> bool:
    """Whether the dataset ``task`` is read from a local folder (cifar10, imagefolder)."""
    from ..data._registry import _REGISTRY

    spec = _REGISTRY.get(task.lower())
    return bool(spec is not None and spec.needs_root)


# --------------------------------------------------------------------------------------------------
# One run (executed in a worker)
# --------------------------------------------------------------------------------------------------
def fp_init(spec: RunSpec, out_dir: str | Path) -> Path | None:
    """The FP model (``model.pt``) a binarized run of a suite with ``init = "fp"`` starts from: that of the
    FP run of the same setting, seed and hyper-parameters, which the runner trains first (BiBench's
    ``init_cfg=Pretrained``); None for a run that starts from scratch."""
    if spec.method == FP or spec.hparams.get("init", "scratch") != "fp":
        return None
    fp = replace(spec, method=FP, layer_options={}, final_stage={})
    return Path(out_dir).resolve() / "runs" / fp.run_id / "model.pt"


def _schedule(hp: dict[str, Any], epochs: int) -> Any:
    from ..train.recipe import ScheduleSpec

    schedule = ScheduleSpec(name=hp["schedule"], warmup_epochs=hp["warmup_epochs"])
    if hp["schedule"] == "step":  # BiBench's eff_train steps at 50% and 75% of training ([100, 150] of 200)
        schedule.milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
    return schedule


def _stages(spec: RunSpec, init: Path | None) -> list[Any]:
    """The run's stage, or a two-stage method's two (:attr:`RunSpec.final_stage`: the second warm-starts
    from the first with its own options, epochs and learning rate, on a schedule of its own)."""
    from ..train.recipe import OptimizerSpec, Stage

    hp, final = spec.hparams, spec.final_stage

    def stage(name: str, options: dict[str, Any], epochs: int, lr: float, start: str) -> Stage:
        optimizer = OptimizerSpec(name=hp["optimizer"], lr=lr, momentum=hp["momentum"],
                                  weight_decay=hp["weight_decay"])
        return Stage(name=name, method=None if spec.method == FP else spec.method, method_options=options,
                     epochs=epochs, optimizer=optimizer, lr_schedule=_schedule(hp, epochs), init=start)

    # layer_options: e.g. binarize_activations, the run's W/A bit widths
    start = str(init) if init is not None else "scratch"
    if not final:
        return [stage("main", dict(spec.layer_options), hp["epochs"], hp["lr"], start)]
    return [stage("main", dict(spec.layer_options), final["first_epochs"], hp["lr"], start),
            stage("final", {**spec.layer_options, **final["options"]}, final["epochs"], final["lr"], "previous")]


def _recipe(spec: RunSpec, data_root: str | None = None, init: Path | None = None) -> Any:
    """The training recipe of a run (one stage, or two for a two-stage method); ``data_root`` is the folder
    of a dataset read from disk (ignored by the others, so that it never changes a run's recipe where it
    plays no part); ``init`` the checkpoint the run starts from (:func:`fp_init`)."""
    from ..train.recipe import DataSpec, ModelSpec, Recipe

    hp = spec.hparams
    return Recipe(
        name=f"bench-{spec.run_id}",
        seed=spec.seed,
        data=DataSpec(name=spec.setting.task, batch_size=hp["batch_size"], options=dict(spec.setting.data_options),
                      root=data_root if needs_data_root(spec.setting.task) else None),
        model=ModelSpec(name=spec.setting.arch, options=dict(spec.setting.model_options)),
        stages=_stages(spec, init),
    ).check()


def _train(recipe: Any, run_dir: Path, device: torch.device) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The trained model (on ``device``) and its epoch history; finishes or resumes an interrupted run
    directory."""
    from ..train.trainer import load_checkpoint, load_run_model, train

    final, checkpoint = run_dir / "model.pt", run_dir / "checkpoint.pt"
    if final.exists() and checkpoint.exists():
        model, _, _ = load_run_model(final)
        return model.to(device), load_checkpoint(checkpoint)["history"]
    result = train(recipe, run_dir, resume=checkpoint.exists(), progress=False, device=str(device))
    return result.model.eval(), result.history


def _accuracy(model: nn.Module, dataset: Any, batch_size: int = 256) -> float:
    """Test accuracy (%) of ``model`` on ``dataset``, on the device the model's weights are on."""
    from ..train.trainer import evaluate

    device = next(model.parameters(), torch.empty(0)).device
    acc, _ = evaluate(model, DataLoader(dataset, batch_size=batch_size), device)
    return acc


def _robustness(spec: RunSpec, model: nn.Module, bundle: Any, cache_dir: Path) -> dict[str, float]:
    """Accuracy on each corrupted copy of the test set (CIFAR-10-C's set for images, the 1-D set for
    signals), built once per suite and shared through ``cache_dir``."""
    from . import corruptions

    names = corruptions.corruptions_for(bundle.input_shape) if spec.corruptions == "all" else spec.corruptions
    out = {}
    for name in names:
        for severity in spec.severities:
            data = corruptions.corrupt_dataset(bundle, name, severity, seed=spec.seed, cache_dir=cache_dir)
            out[f"corrupt/{name}/{severity}"] = _accuracy(model, data)
    return out


def _elapsed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _inference(spec: RunSpec, recipe: Any, model: nn.Module, run_dir: Path, bundle: Any) -> dict[str, float]:
    """Batch-1 latency and file size of the deployed model. A binarized model is packed for the 1-bit
    engine and timed side by side with the same architecture at full precision in torch fp32 (the ratio
    is what the track scores); an fp model is timed in torch and stored as an fp32 safetensors file."""
    from safetensors.torch import save as save_tensors

    from ..deploy import ExportError, export, save
    from ..deploy.kernels import set_num_threads
    from ..methods import NotDeployableError
    from ..train.trainer import build_model

    threads, repeats = spec.inference.get("threads", 1), spec.inference.get("repeats", 20)
    torch.set_num_threads(threads)
    x = bundle.test[0][0].unsqueeze(0)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)

    def fp32_forward(net: nn.Module) -> Callable[[], Any]:
        net = net.eval()
        if x.dim() == 4:  # torch's faster CPU layout for convolutions
            net = net.to(memory_format=torch.channels_last)
        return lambda: net(x)

    with torch.no_grad():
        if spec.method == FP:
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            forward = fp32_forward(model)
            forward()
            return {
                "deployable": 1.0,
                "latency_ms": statistics.median(_elapsed_ms(forward) for _ in range(repeats)),
                "file_bytes": float(len(save_tensors(state))),
            }
        try:
            packed = export(model)
        except (ExportError, NotDeployableError, NotImplementedError):
            return {"deployable": 0.0}
        path = run_dir / "model.onebit"
        save(packed, path)
        set_num_threads(threads)
        fp_model = build_model(recipe, replace(recipe.stages[0], method=None), bundle.num_classes,
                               tuple(bundle.input_shape))
        fp_forward = fp32_forward(fp_model)
        for warm in (lambda: packed(x), fp_forward):
            warm()
        # Interleaved, so that both see the same machine load.
        packed_ms, fp_ms = [], []
        for _ in range(repeats):
            packed_ms.append(_elapsed_ms(lambda: packed(x)))
            fp_ms.append(_elapsed_ms(fp_forward))
        return {
            "deployable": 1.0,
            "latency_ms": statistics.median(packed_ms),
            "latency_fp32_ms": statistics.median(fp_ms),
            "file_bytes": float(path.stat().st_size),
        }


def _complexity(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    from .summary import summary

    totals = summary(model, input_shape).totals
    keys = ("params_1bit", "params_32bit", "params_bibench", "bops", "fp_macs", "flops_bibench", "memory_bytes")
    return {k: float(totals[k]) for k in keys}


def _identity(model: nn.Module, bundle: Any) -> dict[str, float]:
    """The run's bit widths (part of its identity: scores never rank W1A32 against W1A1) and what the
    statistics need: the test-set size (binomial noise) and the class count (chance level)."""
    from .precision import model_bits

    w_bits, a_bits = model_bits(model)
    return {"w_bits": w_bits, "a_bits": a_bits, "n_test": float(len(bundle.test)),
            "n_classes": float(bundle.num_classes)}


def _execute_deployment(spec: RunSpec, record: RunRecord, run_dir: Path) -> RunRecord:
    """The inference track's run on a deployment network (:func:`onebit.bench.deployment.measure`)."""
    from .deployment import measure

    try:
        record.metrics = measure(spec.method, spec.setting.arch, threads=spec.inference["threads"],
                                 repeats=spec.inference["repeats"], layer_options=dict(spec.layer_options))
    except Exception as err:  # recorded like a failed training run
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "error.txt", traceback.format_exc().encode())
    record.finished = time.time()
    return record


def execute(spec: RunSpec, out_dir: str | Path, threads: int | None = None, device: str = "cpu",
            data_root: str | None = None) -> RunRecord:
    """Train and measure one run; never raises (a failure becomes a ``failed`` record with the error).

    Training, the accuracy and the robustness track run on ``device``; complexity and inference on the
    CPU (the packed engine's deployment form). ``data_root`` is the folder of a dataset read from disk.
    """
    from ..train.trainer import load_data

    if threads is not None:
        torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / spec.run_id
    record = RunRecord(
        spec.run_id,
        spec.suite,
        spec.role,
        spec.method,
        spec.setting.arch,
        spec.setting.family,
        spec.setting.task,
        spec.seed,
        spec.config(),
        code_version=code_version(),
        machine=machine_description(),
        started=time.time(),
    )
    dev = torch.device(device)
    if spec.role == "inference":  # a deployment network: timed with random weights, not trained
        return _execute_deployment(spec, record, run_dir)
    train_threads = torch.get_num_threads()
    try:
        record.machine = _machine(dev)
        init = fp_init(spec, out_dir)
        if init is not None and not init.exists():
            raise FileNotFoundError(
                f'init = "fp": the FP run this run starts from left no {init} on this machine (see its own '
                "error if it failed); on a Ray cluster, OUT must be a folder every machine shares")
        recipe = _recipe(spec, data_root, init)
        model, history = _train(recipe, run_dir, dev)
        epochs = [row["epoch_time"] for row in history]
        metrics: dict[str, float] = {
            "acc": float(history[-1]["test_acc"]),
            "epoch_time_s": statistics.mean(epochs),
            "train_time_s": sum(epochs),
        }
        bundle = load_data(recipe)
        input_shape = tuple(bundle.input_shape)
        metrics.update(_identity(model, bundle))
        if "robustness" in spec.tracks:
            metrics.update(_robustness(spec, model, bundle, Path(out_dir) / "cache"))
        model = model.cpu()  # the deployment form is measured and timed on the CPU
        if "complexity" in spec.tracks:
            metrics.update(_complexity(model, input_shape))
        if "inference" in spec.tracks:
            metrics.update(_inference(spec, recipe, model, run_dir, bundle))
        record.metrics = metrics
    except Exception as err:  # one failed run must not stop the suite; its error is recorded
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "error.txt", traceback.format_exc().encode())
    finally:
        torch.set_num_threads(train_threads)  # _inference times with the suite's inference threads
    record.finished = time.time()
    return record


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """Runs that may start once every run of the phase before has finished; ``alone``: one at a time,
    with nothing else running (timed runs whose threads must not share the cores with training)."""

    runs: list[RunSpec]
    alone: bool = False

    def limit(self, workers: int) -> int:
        return 1 if self.alone else workers


def _phases(todo: list[RunSpec], out: Path) -> list[Phase]:
    """Training runs first; then the runs that start from an FP run's weights (init = "fp"); last, the
    inference track's timed deployment runs, one at a time (latency measured at 2 threads beside a
    training worker says little: an earlier default run measured 69-3236 ms where 1 thread took 13-126)."""
    fresh: list[RunSpec] = []
    from_fp: list[RunSpec] = []
    timed: list[RunSpec] = []
    for spec in todo:
        (timed if spec.role == "inference" else from_fp if fp_init(spec, out) else fresh).append(spec)
    phases = [Phase(fresh), Phase(from_fp), Phase(timed, alone=True)]
    return [phase for phase in phases if phase.runs]


def _local(phases: list[Phase], out_dir: Path, workers: int, threads: int, device: str,
           data_root: str | None) -> Iterator[RunRecord]:
    """The runs of each phase in a process pool, at most the phase's limit at a time; a phase starts when
    the one before it has finished."""
    if workers == 1:  # in this process: simplest to debug, and no pool start-up
        for spec in (spec for phase in phases for spec in phase.runs):
            yield execute(spec, out_dir, threads, device, data_root)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: forked children would inherit torch's thread pools and OpenMP state. The workers die with
    # this process, even on kill -9 (see _lifetime).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        for phase in phases:
            queue, pending = list(phase.runs), set()
            while queue or pending:
                while queue and len(pending) < phase.limit(workers):
                    pending.add(pool.submit(execute, queue.pop(0), out_dir, threads, device, data_root))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ray(phases: list[Phase], out_dir: Path, workers: int, threads: int, address: str | None,
         device: str, data_root: str | None) -> Iterator[RunRecord]:
    """Ray tasks on the cluster at ``address`` ("HOST:PORT" or "auto": one started with ``ray start``) or on
    a local instance of ``workers`` CPUs. A CUDA run asks Ray for one GPU, so that Ray places it on a GPU
    machine and gives it a GPU of its own (``CUDA_VISIBLE_DEVICES``)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as err:  # an OSError: not the output folder's fault (see _writing)
                raise SuiteError(f"--address {address}: no Ray cluster answers there ({err}); start one with "
                                 "`ray start --head` and pass the address it prints (README: Benchmark)") from None
        else:  # a local instance sized to the worker count
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if device.startswith("cuda") else 0
        if gpus and ray.cluster_resources().get("GPU", 0) < 1:
            raise SuiteError(f"--device {device}: the Ray cluster{f' at {address}' if address else ''} has no GPU; "
                             "start its GPU machines with `ray start --address HOST:PORT --num-gpus N`, or run "
                             "with --device cpu")
        if gpus and device != "cuda":  # Ray hides all but the task's own GPU: it is cuda:0 in the task
            device = "cuda"
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(execute)
        for phase in phases:  # a phase starts when the one before it has finished
            queue, pending = list(phase.runs), []
            while queue or pending:
                while queue and len(pending) < phase.limit(workers):
                    pending.append(task.remote(queue.pop(0), str(out_dir), threads, device, data_root))
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------------
class _Display:
    """A rich progress bar: run i of n, the runs in flight, elapsed time and ETA."""

    def __init__(self, enabled: bool, total: int, console: Any = None) -> None:
        self.progress = None
        if enabled and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            # fixed-width columns (46 characters) and the last run's result first, its label cut with an
            # ellipsis: the line stays one line in an 80-column terminal
            self.progress = Progress(
                TextColumn("[bold]bench[/]"),
                BarColumn(bar_width=10),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis",
                                                                     max_width=32)),
                transient=False,
                console=console,
            )
            self.task = self.progress.add_task("", total=total)
            self.progress.start()

    def update(self, record: RunRecord, label: str) -> None:
        if self.progress is not None:
            status = "FAILED" if record.status != "done" else (
                f"{record.metrics['acc']:.1f}%" if "acc" in record.metrics else "done")
            self.progress.update(self.task, advance=1, description=f"{status} {label}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_suite(
    suite: str | Path | dict[str, Any] | Suite,
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    report: bool = True,
    device: str | None = None,
    data_root: str | Path | None = None,
) -> dict[str, Any]:
    """Run every run of ``suite`` not yet in ``out_dir``'s results database and record it.

    Args:
        suite: a shipped suite name, a TOML/YAML path, a table or a :class:`Suite`.
        out_dir: where ``results.sqlite``, ``runs/`` and the report go.
        executor: ``"local"`` (a process pool on this machine) or ``"ray"`` (Ray tasks, on the cluster at
            ``address`` or on a local instance).
        workers: parallel runs (default: one per core, at most 4; one with a local CUDA device); each run
            gets cores / workers threads.
        device: where training, evaluation and robustness run ("cpu", "cuda", "cuda:N"); default: the
            suite's ``device`` ("cpu" unless it says otherwise).
        data_root: the local folder of datasets read from disk (CIFAR-10); default: the suite's
            ``data_root``. On a Ray cluster, every worker machine reads it at this same path.
        progress: show a live progress bar and the leaderboard at the end.
        report: write the Markdown/HTML report into ``out_dir/report`` at the end.

    Returns:
        ``{"runs": n, "skipped": already done, "done": ..., "failed": [...], "wall_s": ..., "report": path}``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    suite = load_suite(suite)
    remote = executor == "ray" and bool(address)  # the workers, not this machine, need the GPU
    device = check_device(device or suite.device, on_this_machine=not remote)
    root = str(data_root) if data_root is not None else suite.data_root
    cores = os.cpu_count() or 1
    workers = workers or (1 if device.startswith("cuda") and executor == "local" else min(cores, 4))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = max(1, cores // workers)
    out = Path(out_dir)
    specs = list({spec.run_id: spec for spec in suite.runs()}.values())  # shared fp baselines once
    check_runs(specs, suite.name, root)  # every problem of the suite, reported before anything trains
    with OutputLock(out):  # one benchmark per folder
        return _run_specs(suite, specs, out, executor, workers, threads, address, progress, report,
                          device, root)


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """An OS or SQLite write failure in ``out`` (read-only, full) as one error naming the folder."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as err:
        if isinstance(err, OnebitError):
            raise
        raise output_folder_error(out, err) from None


def _run_specs(suite: Suite, specs: list[RunSpec], out: Path, executor: str, workers: int, threads: int,
               address: str | None, progress: bool, report: bool, device: str = "cpu",
               data_root: str | None = None) -> dict[str, Any]:
    with _writing(out):
        _write_suite_file(suite, specs, out)
    start = time.perf_counter()
    failed: list[str] = []
    with _writing(out), ResultsDB(out / RESULTS_FILE) as db:
        done = db.done_ids(s.run_id for s in specs)
        todo = [s for s in specs if s.run_id not in done]
        labels = {s.run_id: s.label for s in todo}
        phases = _phases(todo, out)
        display = _Display(progress, len(todo))
        try:
            records = (
                _local(phases, out, workers, threads, device, data_root)
                if executor == "local"
                else _ray(phases, out, workers, threads, address, device, data_root)
            )
            for record in records:
                db.write_run(record)
                if record.status != "done":
                    failed.append(f"{labels[record.run_id]}: {record.error}")
                display.update(record, labels[record.run_id])
        finally:
            display.close()
        counts = db.count()
    result: dict[str, Any] = {
        "runs": len(specs),
        "skipped": len(done),
        "done": counts.get("done", 0),
        "failed": failed,
        "wall_s": time.perf_counter() - start,
        "report": None,
    }
    if report and not result["done"]:
        print(f"no report: every run failed (errors in {out / 'runs'}/*/error.txt)", file=sys.stderr)
    elif report:
        from .report import write_report

        try:
            result["report"] = write_report(out).get("html")
        except ValueError as err:
            print(f"no report: {err}", file=sys.stderr)
    if progress:
        from .scores import leaderboard, print_leaderboard

        with contextlib.suppress(ValueError):  # a suite without its fp baselines has no leaderboard
            print_leaderboard(leaderboard(out))
        for line in failed:
            print(f"FAILED {line}", file=sys.stderr)
    return result


def _write_suite_file(suite: Suite, specs: list[RunSpec], out: Path) -> None:
    atomic_write_bytes(
        out / "suite.json",
        json.dumps(
            {
                "name": suite.name,
                "description": suite.description,
                "runs": [s.run_id for s in specs],
                "tracks": list(suite.tracks),
            },
            indent=2,
        ).encode(),
    )
