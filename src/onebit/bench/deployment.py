"""The inference track on deployment networks: each method's inference form timed at ImageNet shape.

BiBench's hardware track (Qin et al., ICML 2023, Sec. 3.6) deploys ResNet-18/34-class networks, not the
small models the accuracy tracks train: at 8x8 inputs a batch-1 call is per-call overhead, not
arithmetic. Here each method's network is built at 224x224 with random weights (latency and file size
do not depend on trained values), converted to its inference form (:func:`onebit.deploy.export`) and
timed at batch 1 on onebit's packed engine, side by side with the same architecture in torch fp32 — in
NCHW and channels_last, the faster of the two being the baseline — and with Larq Compute Engine's
interpreter where it is installed. Samples of all runtimes alternate within one process
(:func:`timed_side_by_side`), so machine load reaches them alike.

Networks (:data:`NETWORKS`): Bi-Real ResNet-18 (``resnet18_imagenet`` with Bi-Real's per-conv
shortcuts) and ReActNet-A (``reactnet_a``). The metrics, per thread count ``t``: ``latency_ms/t<t>``
(packed engine), ``latency_fp32_ms/t<t>`` (torch fp32, faster layout), ``latency_fp32_nchw_ms/t<t>``,
``latency_fp32_cl_ms/t<t>``, ``latency_lce_ms/t<t>`` (LCE, when installed and the model converts);
``file_bytes`` (the packed ``.onebit`` file), ``file_fp32_bytes`` (the fp32 safetensors file),
``deployable``, and the bit widths ``w_bits``/``a_bits``.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["NETWORKS", "deployment_models", "measure", "timed_side_by_side"]

#: name -> (zoo model, its options, what it is)
NETWORKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "bireal18": ("resnet18_imagenet", {"bireal": True}, "Bi-Real ResNet-18"),
    "reactnet_a": ("reactnet_a", {}, "ReActNet-A"),
}
#: Warm-up rounds before samples are kept.
WARMUP = 3


def timed_side_by_side(runs: dict[str, tuple[Callable[[Any], Any], Any]], threads: int,
                       repeats: int) -> dict[str, float]:
    """Median wall time in ms of each ``fn(x)`` in ``runs`` (name -> (fn, x)) on ``threads`` threads.

    The samples of the runs alternate (one call of each per round, after :data:`WARMUP` rounds), so that
    a shared machine's speed drifting over the measurement does not favour whichever ran first. The
    thread count stays fixed within the call, as in an application (switching it costs OpenMP a
    re-synchronisation of its team).
    """
    from ..deploy import kernels

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(threads)
    kernels.set_num_threads(threads)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for rnd in range(repeats + WARMUP):
            for name, (fn, x) in runs.items():
                start = time.perf_counter()
                fn(x)
                if rnd >= WARMUP:
                    samples[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(v) for name, v in samples.items()}


def _trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm statistics like a trained network's, not the untrained identity: with mean 0 and var 1
    an integer accumulator of exactly 0 meets the next sign unshifted (see benchmarks/e2e.py)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
                if m.bias is not None:
                    m.bias.copy_(0.6 * torch.rand(m.bias.shape, generator=gen) - 0.3)
    return model.eval()


def deployment_models(network: str, method: str, *, size: int = 224, num_classes: int = 1000, seed: int = 0,
                      layer_options: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
    """The full-precision and the binarized ``network`` (a key of :data:`NETWORKS`) at ``size`` x ``size``,
    random weights with trained-looking BatchNorm statistics, in eval mode."""
    from ..models import create
    from ..nn.convert import finalize, schedule_step

    if network not in NETWORKS:
        raise ValueError(f"unknown deployment network {network!r}; available: {', '.join(NETWORKS)}")
    name, options, _ = NETWORKS[network]
    options = dict(options, input_size=size) if "input_size" in _model_options(name) else dict(options)
    torch.manual_seed(seed)
    fp = create(name, num_classes=num_classes, **options).eval()
    binary = create(name, num_classes=num_classes, method=method, **options, **(layer_options or {}))
    schedule_step(binary, 1, 1)  # the end of every training schedule (ReCU's τ, IRNet's t)
    finalize(binary)  # the deployed state (BiPer's stage-2 sign(sin(ωW)) weights, PC++'s hard sign)
    return fp, _trained_looking(binary, seed)


def _model_options(name: str) -> dict[str, Any]:
    from ..models import spec

    return dict(spec(name).options)


def _fp32_bytes(model: nn.Module) -> int:
    from safetensors.torch import save as save_tensors

    return len(save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}))


def _lce_runner(packed: Any, x: torch.Tensor, threads: int) -> Callable[[Any], Any] | None:
    """LCE's interpreter on the packed model's flatbuffer, or None when LCE is not installed or cannot
    take the model (the track then has no LCE column for it)."""
    from ..deploy import lce

    if not lce.lce_available():
        return None
    try:
        interp = lce.interpreter(lce.to_lce_bytes(packed, x), threads, use_indirect_bgemm=True, use_xnnpack=True)
    except Exception:  # a model LCE's converter or interpreter refuses: no LCE time, not a failed run
        return None
    return lambda x_nhwc: interp.predict(x_nhwc)


def measure(method: str, network: str, *, threads: Sequence[int] = (1, 2), repeats: int = 20, size: int = 224,
            layer_options: dict[str, Any] | None = None, seed: int = 0, lce: bool = True) -> dict[str, float]:
    """The inference-track metrics (see the module docstring) of ``method`` on ``network``; ``lce=False``
    leaves Larq Compute Engine out even where it is installed (its conversion takes seconds)."""
    from ..deploy import ExportError, export, save
    from ..methods import NotDeployableError
    from .precision import model_bits

    fp, binary = deployment_models(network, method, size=size, seed=seed, layer_options=layer_options)
    w_bits, a_bits = model_bits(binary)
    out: dict[str, float] = {"w_bits": w_bits, "a_bits": a_bits, "file_fp32_bytes": float(_fp32_bytes(fp))}
    try:
        packed = export(binary)
    except (ExportError, NotDeployableError, NotImplementedError):
        return {**out, "deployable": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{network}.onebit"
        save(packed, path)
        out.update(deployable=1.0, file_bytes=float(path.stat().st_size))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
    saved = torch.get_num_threads()
    try:
        for t in threads:
            runs: dict[str, tuple[Callable[[Any], Any], Any]] = {
                "nchw": (fp, x), "cl": (fp_cl, x_cl), "packed": (packed, x)}
            lce_fn = _lce_runner(packed, x, t) if lce else None
            if lce_fn is not None:
                runs["lce"] = (lce_fn, x.permute(0, 2, 3, 1).contiguous().numpy())
            ms = timed_side_by_side(runs, t, repeats)
            out[f"latency_ms/t{t}"] = ms["packed"]
            out[f"latency_fp32_nchw_ms/t{t}"], out[f"latency_fp32_cl_ms/t{t}"] = ms["nchw"], ms["cl"]
            out[f"latency_fp32_ms/t{t}"] = min(ms["nchw"], ms["cl"])
            if "lce" in ms:
                out[f"latency_lce_ms/t{t}"] = ms["lce"]
    finally:
        torch.set_num_threads(saved)
    return out
