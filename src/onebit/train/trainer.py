"""The trainer: runs a recipe's stages with checkpoints, exact resume, distillation and DDP.

One process or many: under ``torchrun`` (``WORLD_SIZE > 1``) the trainer joins the process group
(gloo on CPU, nccl on GPU), wraps the model in DistributedDataParallel, gives each process
``batch_size / world_size`` samples of every global batch, and only rank 0 writes files. The data
order is the one ``DistributedSampler`` defines for one process too, so a 2-process run sees the same
global batches as a 1-process run with the same seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from .. import __version__
from .._io import atomic_write_bytes
from ..errors import OnebitError
from ..nn import BinaryLayer, extra_loss, schedule_step
from .recipe import DistillSpec, OptimizerSpec, Recipe, RecipeError, Stage, load_recipe
from .schedules import lr_at

__all__ = ["train", "evaluate_checkpoint", "load_run_model", "build_model", "TrainResult", "CheckpointError"]

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
FORMAT = "onebit-train/1"


class CheckpointError(OnebitError, ValueError):
    """A checkpoint is missing, truncated, corrupt, or was not written by ``onebit train``."""


class TrainingDivergedError(OnebitError, FloatingPointError):
    """The loss became NaN or infinite; the message names the stage, epoch and step."""


@dataclass
class TrainResult:
    run_dir: Path
    test_accuracy: float
    history: list[dict[str, Any]]
    model: nn.Module


# --------------------------------------------------------------------------------------------------
# Seeds, processes, files
# --------------------------------------------------------------------------------------------------
def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for each (run seed, stage, epoch, ...) tuple."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class _Processes:
    """The process group (or the lack of one) this run trains in."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use cpu or auto")
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ and dev.index is None:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "onebit_version": __version__, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a file written by ``onebit train``; anything else raises one CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / FINAL
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a run directory or its {FINAL}")
    try:
        # torch.save writes a zip archive with a CRC-32 per record, but torch.load does not check
        # them: without this, a flipped bit in a weight loads silently.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        # weights_only: a checkpoint is data (tensors, numbers, strings), never code to run.
        payload = None if damaged else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable onebit checkpoint (truncated, corrupt or foreign: {type(err).__name__})"
        ) from None
    if damaged is not None:
        raise CheckpointError(f"{path} is corrupt: its record {damaged!r} fails its CRC-32 check (damaged in "
                              "storage or transfer?); copy it again or train again")  # fmt: skip
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by onebit train (format {FORMAT!r} expected)")
    return payload


# --------------------------------------------------------------------------------------------------
# Model, optimizer, data
# --------------------------------------------------------------------------------------------------
def build_model(recipe: Recipe, stage: Stage, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """The recipe's model for ``stage``: full precision when the stage has no method."""
    from ..models import create
    from ..models import spec as model_spec

    spec = stage.model or recipe.model
    options = dict(spec.options)
    options.setdefault("in_channels", input_shape[0])
    try:
        known = model_spec(spec.name)
    except ValueError as err:
        raise RecipeError(f"recipe: model: {err}") from None
    # Size the network for the data: the whole sample shape (MLP) or its spatial size.
    if "input_shape" in known.options:
        options.setdefault("input_shape", tuple(input_shape))
    elif known.size_option is not None:
        options.setdefault(known.size_option, input_shape[-1])
    try:
        return create(spec.name, num_classes=num_classes, method=stage.method,
                      **options, **stage.method_options)
    except ValueError as err:
        raise RecipeError(f"recipe: model/stage {stage.name!r}: {err}") from None
    except (MemoryError, RuntimeError) as err:  # sizes no memory can hold (torch's allocator fails at once)
        if not isinstance(err, MemoryError) and not any(w in str(err) for w in ("alloc", "overflow", "memory")):
            raise
        raise RecipeError(f"recipe: model {spec.name!r} (stage {stage.name!r}) does not fit in memory with "
                          f"options {spec.options}; make it smaller") from None


def _param_groups(model: nn.Module, spec: OptimizerSpec) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if spec.weight_decay_groups == "all":
            use = True
        elif spec.weight_decay_groups == "no_norm_bias":
            use = p.dim() > 1  # norm weights, biases and per-channel scales/thresholds are 1-D
        else:  # conv_fc_only, as BiPer's ImageNet script
            use = "conv" in name or "fc" in name
        (decay if use else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    groups = _param_groups(model, spec)
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)
    if spec.name == "adam":
        return torch.optim.Adam(groups, lr=spec.lr, betas=tuple(spec.betas))
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas))


class _Shard(Sampler[int]):
    """Every ``world``-th test sample starting at ``rank``: no padding, so summed counts are exact."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loaders(bundle: Any, recipe: Recipe, procs: _Processes, num_workers: int, stage_index: int
             ) -> tuple[DataLoader, DistributedSampler, DataLoader]:
    batch = recipe.data.batch_size
    if batch % procs.world:
        raise RecipeError(
            f"recipe: data.batch_size={batch} must be divisible by the number of processes ({procs.world})"
        )
    sampler = DistributedSampler(
        bundle.train, num_replicas=procs.world, rank=procs.rank, shuffle=True,
        seed=derive_seed(recipe.seed, stage_index, 1 << 20) % (1 << 62), drop_last=True,
    )
    train = DataLoader(bundle.train, batch_size=batch // procs.world, sampler=sampler, drop_last=True,
                       num_workers=num_workers)
    if len(train) == 0:
        raise RecipeError(
            f"recipe: data.batch_size={batch} is larger than the training set ({len(bundle.train)} samples)"
        )
    test = DataLoader(bundle.test, batch_size=recipe.data.eval_batch_size or batch,
                      sampler=_Shard(len(bundle.test), procs.rank, procs.world), num_workers=num_workers)
    return train, sampler, test


def load_data(recipe: Recipe) -> Any:
    from ..data import load

    try:
        return load(recipe.data.name, recipe.data.root, seed=recipe.seed, **recipe.data.options)
    except TypeError as err:
        raise RecipeError(f"recipe: data: {err}") from None


# --------------------------------------------------------------------------------------------------
# Losses and evaluation
# --------------------------------------------------------------------------------------------------
def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(teacher ‖ student) on temperature-softened distributions, times T² (Hinton et al., 2015);
    at T = 1 its gradient is that of ReActNet's ``DistributionLoss``."""
    t = temperature
    soft = F.softmax(teacher / t, dim=1)
    return (soft * (F.log_softmax(teacher / t, dim=1) - F.log_softmax(student / t, dim=1))).sum(1).mean() * t * t


def _batch_loss(logits: Tensor, y: Tensor, stage: Stage, teacher_logits: Tensor | None) -> Tensor:
    ce = F.cross_entropy(logits, y, label_smoothing=stage.label_smoothing)
    if teacher_logits is None:
        return ce
    kd = distillation_loss(logits, teacher_logits, stage.distill.temperature)
    if stage.distill.loss == "kl":
        return kd
    return stage.distill.alpha * kd + (1 - stage.distill.alpha) * ce


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, procs: _Processes | None = None
             ) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of ``model`` in eval mode over ``loader``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
    model.train(was_training)
    if procs is not None:
        correct, total, loss_sum = procs.sum([correct, total, loss_sum])
    return 100.0 * correct / max(total, 1), loss_sum / max(total, 1)


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------
class _Progress:
    """A live tqdm bar per epoch (stage, epoch, step, loss, accuracy, ETA) on rank 0."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        # Without a terminal (a log file, CI) the bar's carriage returns would pile up on one line:
        # the per-epoch lines alone are printed then.
        live = self.enabled and sys.stderr.isatty()
        return tqdm(total=total, desc=desc, leave=False, disable=not live, dynamic_ncols=True,
                    mininterval=0.5, file=sys.stderr)

    def line(self, text: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stdout)


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())
    if history:
        out = io.StringIO()
        fields = list(dict.fromkeys(k for row in history for k in row))
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_bytes(run_dir / "metrics.csv", out.getvalue().encode())


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _has_lazy(model: nn.Module) -> bool:
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


def _load_init(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load weights from another stage or run; method-owned parameters the source lacks keep their
    initialisation (fine-tuning a binary net from a full-precision one), anything else must match.
    Lazily sized state (XNOR-Net++'s Γ of a conv) is still unsized here: ``keep_vars`` reads it without
    touching its data, and the stage sizes it after the load."""
    own = model.state_dict(keep_vars=True)
    for key, value in state.items():
        lazy = isinstance(own.get(key), nn.parameter.UninitializedParameter)
        if key in own and not lazy and own[key].shape != value.shape:
            raise RecipeError(f"recipe: init from {source}: {key} has shape {tuple(value.shape)}, "
                              f"this stage's model has {tuple(own[key].shape)}")
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RecipeError(
            f"recipe: init from {source}: the source has entries this stage's model lacks "
            f"({', '.join(result.unexpected_keys[:5])}); is it the same architecture?"
        )
    # Missing entries are fine only where a method owns them: state a binary layer's method added
    # (scales, thresholds, FDA's noise modules), never a layer's own weight or bias.
    binary = [name for name, m in model.named_modules() if isinstance(m, BinaryLayer)]

    def method_owned(key: str) -> bool:
        return any(key.startswith(f"{b}.") and key[len(b) + 1:] not in ("weight", "bias") for b in binary)
    foreign = [k for k in result.missing_keys if not method_owned(k)]
    if foreign:
        raise RecipeError(
            f"recipe: init from {source}: layers missing from the source: {', '.join(foreign[:5])}"
        )


def _stage_file(run_dir: Path, stage: Stage) -> Path:
    return run_dir / f"stage-{stage.name}.pt"


def _source_state(run_dir: Path, recipe: Recipe, ref: str, index: int) -> tuple[dict[str, Tensor], str]:
    names = [s.name for s in recipe.stages]
    if ref == "previous":
        ref = "stage:" + names[index - 1]
    if ref.startswith("stage:") or ref in names[:index]:
        name = ref[6:] if ref.startswith("stage:") else ref
        path = _stage_file(run_dir, recipe.stages[names.index(name)])
        return load_checkpoint(path)["model"], f"stage {name!r}"
    return load_checkpoint(ref)["model"], ref


def _build_teacher(run_dir: Path, recipe: Recipe, distill: DistillSpec, index: int, bundle: Any,
                   device: torch.device) -> nn.Module:
    names = [s.name for s in recipe.stages]
    if distill.teacher in names[:index]:
        teacher_recipe, teacher_stage = recipe, recipe.stages[names.index(distill.teacher)]
        state = load_checkpoint(_stage_file(run_dir, teacher_stage))["model"]
    else:
        payload = load_checkpoint(distill.teacher)
        teacher_recipe = load_recipe(payload["recipe"])
        teacher_stage = teacher_recipe.stages[payload["stage_index"]]
        state = payload["model"]
    teacher = build_model(teacher_recipe, teacher_stage, bundle.num_classes, tuple(bundle.input_shape))
    teacher.load_state_dict(state)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def train(
    recipe: Recipe | str | Path | dict[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    num_workers: int = 0,
) -> TrainResult:
    """Run ``recipe`` and write the run directory ``out_dir``:

    * ``checkpoint.pt`` after every epoch (atomic), from which ``resume=True`` continues a killed run
      to the same final weights (seeds are derived per stage and epoch, learning rates from progress);
    * ``stage-NAME.pt`` at the end of each stage and ``model.pt`` at the end (weights + recipe);
    * ``metrics.jsonl`` / ``metrics.csv`` with one row per epoch (and TensorBoard if installed).
    """
    recipe = load_recipe(recipe)
    run_dir = Path(out_dir)
    dev = resolve_device(device)
    procs = _Processes(dev)
    try:
        return _run(recipe, run_dir, resume, dev, progress and procs.main, num_workers, procs)
    finally:
        procs.close()


def _run(recipe: Recipe, run_dir: Path, resume: bool, device: torch.device, show: bool, num_workers: int,
         procs: _Processes) -> TrainResult:
    ckpt_path = run_dir / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"--resume: {ckpt_path} does not exist; start the run without --resume")
        state = load_checkpoint(ckpt_path)
        if state["recipe"] != recipe.to_dict():
            changed = "; ".join(recipe_differences(state["recipe"], recipe.to_dict()))
            raise RecipeError(
                f"--resume: the recipe differs from the one {ckpt_path} was trained with: {changed}; "
                f"resume with the same settings (`onebit train --resume {run_dir}` alone reads the run's "
                "own recipe) or start a new run directory"
            )
    elif ckpt_path.exists() and procs.main:
        raise CheckpointError(
            f"{run_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it or choose a new --out"
        )
    bundle = load_data(recipe)  # (a bad data name, option or root fails before the run directory exists)
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "recipe.json", json.dumps(recipe.to_dict(), indent=2).encode())
    procs.barrier()

    input_shape = tuple(bundle.input_shape)
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    progress = _Progress(show)
    board = _tensorboard(run_dir) if procs.main else None
    model: nn.Module | None = None
    test_acc = float("nan")

    for index, stage in enumerate(recipe.stages):
        if state is not None and index < state["stage_index"]:
            continue  # finished before the interruption; its stage file holds its weights
        torch.manual_seed(derive_seed(recipe.seed, index))
        model = build_model(recipe, stage, bundle.num_classes, input_shape).to(device)
        if stage.init != "scratch":
            source, label = _source_state(run_dir, recipe, stage.init, index)
            _load_init(model, source, label)
        train_loader, sampler, test_loader = _loaders(bundle, recipe, procs, num_workers, index)
        if _has_lazy(model):  # size lazily-shaped method state before the optimizer and DDP see it
            model.eval()
            with torch.no_grad():
                model(next(iter(test_loader))[0][:1].to(device))
            model.train()
        optimizer = make_optimizer(model, stage.optimizer)
        teacher = None
        if stage.distill is not None:
            teacher = _build_teacher(run_dir, recipe, stage.distill, index, bundle, device)
        start_epoch = 0
        if state is not None and index == state["stage_index"]:
            load_weights(model, state["model"], str(ckpt_path))
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = state["epoch"] + 1
            state = None
        net: nn.Module = model
        if procs.world > 1:
            if device.type == "cuda":  # batch statistics over the global batch, as one process sees them
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if recipe.compile:  # the eager `model` keeps the state; the compiled wrapper shares it
            net = torch.compile(net)

        for epoch in range(start_epoch, stage.epochs):
            torch.manual_seed(derive_seed(recipe.seed, index, epoch))
            sampler.set_epoch(epoch)
            if hasattr(bundle.train, "set_epoch"):
                bundle.train.set_epoch(epoch)
            schedule_step(model, epoch, stage.epochs)
            row = _train_epoch(net, model, teacher, optimizer, stage, train_loader, device, epoch, procs,
                               progress, index)
            test_acc, test_loss = evaluate(net, test_loader, device, procs)
            row.update(test_loss=test_loss, test_acc=test_acc)
            history.append(row)
            if procs.main:
                save_checkpoint(ckpt_path, {
                    "recipe": recipe.to_dict(), "stage_index": index, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                })
                _write_metrics(run_dir, history)
                if board is not None:
                    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                        board.add_scalar(f"{stage.name}/{key}", row[key], epoch)
            progress.line(
                f"[{stage.name}] epoch {epoch + 1}/{stage.epochs}  loss {row['train_loss']:.4f}  "
                f"train {row['train_acc']:.2f}%  test {test_acc:.2f}%  lr {row['lr']:.3g}  "
                f"{row['epoch_time']:.1f}s"
            )
        if procs.main:
            save_checkpoint(_stage_file(run_dir, stage), {
                "recipe": recipe.to_dict(), "stage_index": index, "model": model.state_dict(),
                "test_acc": test_acc, "data_info": _data_info(bundle),
            })
        procs.barrier()

    assert model is not None
    if procs.main:
        final_stage = len(recipe.stages) - 1
        atomic_write_bytes(run_dir / FINAL, _stage_file(run_dir, recipe.stages[final_stage]).read_bytes())
        if board is not None:
            board.close()
        if not history or history[-1]["stage"] != recipe.stages[-1].name:
            test_acc = float("nan")
        else:
            test_acc = history[-1]["test_acc"]
        _write_summary(run_dir, recipe, history)
    if show:
        print(f"test accuracy: {test_acc:.2f}% ({recipe.stages[-1].method or 'full precision'}, "
              f"{recipe.model.name} on {recipe.data.name}) -> {run_dir / FINAL}")
    return TrainResult(run_dir, test_acc, history, model)


def _train_epoch(net: nn.Module, model: nn.Module, teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
                 stage: Stage, loader: DataLoader, device: torch.device, epoch: int, procs: _Processes,
                 progress: _Progress, stage_index: int) -> dict[str, Any]:
    net.train()
    steps = len(loader)
    loss_sum = extra_sum = 0.0
    correct = seen = 0
    start = time.perf_counter()
    bar = progress.bar(steps, f"{stage.name} {epoch + 1}/{stage.epochs}")
    lr = stage.optimizer.lr
    for step, (x, y) in enumerate(loader):
        lr = lr_at(stage.lr_schedule, stage.optimizer.lr, stage.epochs, epoch + step / steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(device), y.to(device)
        logits = net(x)
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
        task = _batch_loss(logits, y, stage, teacher_logits)
        extra = extra_loss(model)
        loss = task + extra
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"[{stage.name}] epoch {epoch + 1} step {step + 1}: the loss is {loss.item()}; lower the "
                "learning rate or check the data for NaN"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), stage.grad_clip)
        optimizer.step()
        loss_sum += task.item() * y.numel()
        extra_sum += float(extra.detach()) * y.numel()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.numel()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.1f}%")
    bar.close()
    elapsed = time.perf_counter() - start
    loss_sum, extra_sum, correct, seen = procs.sum([loss_sum, extra_sum, correct, seen])
    return {
        "stage": stage.name, "stage_index": stage_index, "epoch": epoch, "lr": lr,
        "train_loss": loss_sum / seen, "extra_loss": extra_sum / seen, "train_acc": 100.0 * correct / seen,
        "epoch_time": elapsed,
    }


def _data_info(bundle: Any) -> dict[str, Any]:
    """What inference needs to prepare raw inputs: the normalization and the class names."""
    return {"name": bundle.name, "num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape),
            "mean": [float(v) for v in bundle.mean], "std": [float(v) for v in bundle.std],
            "classes": [str(c) for c in getattr(bundle, "classes", ())]}


def _write_summary(run_dir: Path, recipe: Recipe, history: list[dict[str, Any]]) -> None:
    summary = {
        "recipe": recipe.name, "data": recipe.data.name, "model": recipe.model.name,
        "stages": {
            s.name: {
                "method": s.method,
                "test_acc": next((r["test_acc"] for r in reversed(history) if r["stage"] == s.name), None),
                "epoch_time_mean": _mean([r["epoch_time"] for r in history if r["stage"] == s.name]),
            } for s in recipe.stages
        },
        "onebit_version": __version__, "torch_version": torch.__version__, "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------------------------------
# Using a finished run
# --------------------------------------------------------------------------------------------------
def load_run_model(checkpoint: str | Path | dict[str, Any]) -> tuple[nn.Module, Recipe, Stage]:
    """The trained model of a run (``model.pt``, a run directory, or a payload already read with
    :func:`load_checkpoint`), in eval mode, with its recipe and the stage that produced it."""
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    where = "checkpoint" if isinstance(checkpoint, dict) else checkpoint
    try:
        if not isinstance(payload.get("recipe"), dict) or type(payload.get("stage_index")) is not int:
            raise KeyError("recipe or stage_index")
        recipe = load_recipe(payload["recipe"])
        stage = recipe.stages[payload["stage_index"]] if payload["stage_index"] >= 0 else None
        if stage is None:
            raise IndexError(payload["stage_index"])
    except (KeyError, IndexError, RecipeError) as err:
        raise CheckpointError(f"{where}: its recipe is unreadable ({err})") from None
    # Stage files record the data's shape; a per-epoch checkpoint does not, so the data is read then.
    info = payload.get("data_info") or _data_info(load_data(recipe))
    if not _valid_data_info(info):
        raise CheckpointError(f"{where}: its data_info {info!r} is not a shape and a class count; train again")
    model = build_model(recipe, stage, info["num_classes"], tuple(info["input_shape"]))
    load_weights(model, payload["model"], "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint))
    return model.eval(), recipe, stage


def _valid_data_info(info: Any) -> bool:
    def positive(v: Any) -> bool:
        return type(v) is int and v >= 1

    return (isinstance(info, dict) and positive(info.get("num_classes"))
            and isinstance(info.get("input_shape"), (list, tuple)) and len(info["input_shape"]) >= 1
            and all(positive(v) for v in info["input_shape"]))


def load_weights(model: nn.Module, state: Any, source: str) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model its recipe builds raise one
    CheckpointError naming the first mismatch (instead of torch's list of every key)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: its weights are not a table of tensors; train again")
    own = model.state_dict(keep_vars=True)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and (not isinstance(state[k], Tensor) or (
        not nn.parameter.is_lazy(own[k]) and state[k].shape != own[k].shape))]
    if missing or unexpected or wrong:
        first = (f"{wrong[0]} has shape {tuple(getattr(state[wrong[0]], 'shape', ()))}, the model's "
                 f"{tuple(own[wrong[0]].shape)}" if wrong else f"e.g. {(missing or unexpected)[0]!r}")
        raise CheckpointError(
            f"{source}: its weights do not fit the model its recipe builds ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape; {first}); the file was edited or "
            "written by another version: train again or use the matching onebit"
        )
    model.load_state_dict(state)


def recipe_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """The keys whose values differ between two recipe dicts, as ``key was OLD, now NEW``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            out += recipe_differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in recipe_differences(a, b, f"{where}.{i}")]
    return [] if old == new else [f"{where} was {old!r}, now {new!r}"]


def evaluate_checkpoint(checkpoint: str | Path, *, data: str | None = None, root: str | None = None,
                        device: str = "auto", batch_size: int = 256) -> float:
    """Test accuracy (%) of a trained run on its own test set, or on ``data``/``root`` if given."""
    model, recipe, _ = load_run_model(checkpoint)
    if data is not None or root is not None:
        recipe.data.name = data or recipe.data.name
        recipe.data.root = root if root is not None else recipe.data.root
    bundle = load_data(recipe)
    dev = resolve_device(device)
    loader = DataLoader(bundle.test, batch_size=batch_size)
    acc, _ = evaluate(model.to(dev), loader, dev)
    if not math.isfinite(acc):
        raise ValueError("evaluation produced no samples")
    return acc
