"""What the deployed runtimes do with NaN and ±inf inputs: onebit's one policy for all of them.

A binarized layer computes ``sign(x + threshold)``, and no sign of NaN is right: onebit's packed engine
packs bit = ``(x + t) < 0``, false for NaN, so NaN becomes +1; ONNX's ``Where(x + t >= 0, 1, -1)`` and
QONNX's ``BipolarQuant`` make it −1; LCE's ``LceQuantize`` packs bit = ``x < 0``, so +1. Each returns a
confident class for an input with one NaN pixel. (In PyTorch, ``torch.sign(NaN)`` is 0 and onebit's
``sign`` makes that +1; a training-time quantizer written as ``sign(x) + s(x) − s(x).detach()`` carries
the NaN on, which is why the PyTorch model of a run could print NaN where the engine printed a class.)
±inf has a sign, but the full-precision arithmetic around it (a convolution adding +inf and −inf)
makes NaN, which the next sign again hides.

So every place where onebit runs a deployed model — :class:`~onebit.deploy.PackedModel`,
:func:`~onebit.deploy.onnx_export.run_onnx` (onnxruntime, QONNX's executor) and
:meth:`~onebit.deploy.lce.LceInterpreter.predict` — checks its input first (one pass: a sum, see
:func:`_bad_samples`) and, by the policy ``nonfinite``:

* ``"raise"`` (the default): one :class:`NonFiniteInputError` naming how many values and which samples;
* ``"propagate"``: NaN in, NaN out — every output of a sample whose input holds NaN or ±inf is NaN (the
  other samples are computed as usual; the bad values are replaced by 0 before the runtime sees them,
  so nothing of them leaks into a sign). For ±inf this is deliberately stricter than torch, whose
  answer for inf depends on the arithmetic around it: onebit does not return a class it cannot stand by.

A file exported by onebit and run by another program through these runtimes gets none of this: check
inputs there (``np.isfinite(x).all()``) before calling the runtime.

Not checked: non-finite values that arise *inside* a network from finite input (float32 overflow of a
full-precision layer, ``|x|`` near 3.4e38).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import OnebitError

__all__ = ["NONFINITE_POLICIES", "InputTypeError", "NonFiniteInputError", "check_policy", "guard_inputs",
           "map_outputs", "mark_outputs", "refuse_complex"]

NONFINITE_POLICIES = ("raise", "propagate")


class NonFiniteInputError(OnebitError, ValueError):
    """An input holds NaN or ±inf, which a binarized layer would silently turn into a sign."""


class InputTypeError(OnebitError, TypeError):
    """An input's dtype is one no deployed model computes on: complex."""


def refuse_complex(inputs: tuple[Any, ...], where: str) -> None:
    """Raise :class:`InputTypeError` for a complex input: each runtime would either fail deep inside
    (onnxruntime, torch) or, converting to float32, drop the imaginary part with only a warning (numpy,
    LCE's ``predict``) and answer for a different input."""
    for i, x in enumerate(inputs):
        if (isinstance(x, torch.Tensor) and x.is_complex()) or (isinstance(x, np.ndarray) and np.iscomplexobj(x)):
            raise InputTypeError(f"{where}: input {i} is complex ({x.dtype}); a binarized network takes real "
                                 "values: pass the real part, the magnitude or both as channels")


def check_policy(policy: object) -> str:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE_POLICIES))}, got {policy!r}")
    return str(policy)


def _bad_samples(x: Any) -> np.ndarray | None:
    """Per sample (dim 0), whether its values include NaN/±inf; None when all are finite or ``x`` is
    not a floating-point array.

    The fast path is one sum: NaN or ±inf anywhere makes it non-finite, so a finite sum proves every
    value finite (2.7 µs for a 3x32x32 image, 7 µs for 32 of them, against 18 / 313 µs for
    ``isfinite(x).all()``, which builds a bool tensor). Only a non-finite sum — a bad value, or finite
    values whose sum overflows — pays for the exact per-element check."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point() or x.numel() == 0 or math.isfinite(float(x.detach().sum())):
            return None
        finite = torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1) if x.dim() else torch.isfinite(x)
        bad = (~finite).cpu().numpy().reshape(-1)
    elif isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and x.size:
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(x.sum()):
                return None
        bad = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1) if x.ndim else ~np.isfinite(x).reshape(1)
    else:
        return None
    return bad if bad.any() else None


def _describe(bad: np.ndarray, count: int) -> str:
    rows = np.flatnonzero(bad).tolist()
    shown = ", ".join(map(str, rows[:8])) + (f", ... ({len(rows)} samples)" if len(rows) > 8 else "")
    return f"{count} NaN/inf value{'s' if count != 1 else ''} in sample{'s' if len(rows) != 1 else ''} {shown}"


def guard_inputs(inputs: tuple[Any, ...], policy: str, where: str) -> tuple[tuple[Any, ...], np.ndarray | None]:
    """Check ``inputs`` under ``policy``: raise, or return them with non-finite values zeroed and the
    per-sample mask of the samples whose outputs must become NaN (None when every value is finite)."""
    check_policy(policy)
    refuse_complex(inputs, where)
    masks = [_bad_samples(x) for x in inputs]
    if all(m is None for m in masks):
        return inputs, None
    if policy == "raise":
        counts = sum(int((~(torch.isfinite(x) if isinstance(x, torch.Tensor) else np.isfinite(x))).sum())
                     for x, m in zip(inputs, masks) if m is not None)  # fmt: skip
        bad = np.logical_or.reduce([m for m in masks if m is not None])
        raise NonFiniteInputError(
            f"{where}: the input holds {_describe(bad, counts)}; a binarized layer would turn them into a "
            "sign and give a confident but meaningless answer. Clean the input, or ask for NaN outputs "
            "for those samples with nonfinite='propagate'"
        )
    sizes = {len(m) for m in masks if m is not None}
    bad = np.logical_or.reduce([m for m in masks if m is not None]) if len(sizes) == 1 else None
    cleaned = tuple(
        x if m is None else torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) if isinstance(x, torch.Tensor)
        else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        for x, m in zip(inputs, masks)
    )
    return cleaned, bad if bad is not None else np.ones(1, dtype=bool)


def map_outputs(outputs: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every leaf of ``outputs`` (a tensor/array, or lists/tuples/dicts of them),
    the containers rebuilt around the results."""
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(map_outputs(o, fn) for o in outputs)
    if isinstance(outputs, dict):
        return {k: map_outputs(v, fn) for k, v in outputs.items()}
    return fn(outputs)


def mark_outputs(outputs: Any, bad: np.ndarray) -> Any:
    """``outputs`` (a tensor/array, or a list/tuple/dict of them) with the rows of ``bad`` samples set to
    NaN; an output whose first dimension is not the batch becomes NaN as a whole."""
    return map_outputs(outputs, lambda output: _mark(output, bad))


def _mark(outputs: Any, bad: np.ndarray) -> Any:
    if isinstance(outputs, torch.Tensor) and outputs.is_floating_point():
        outputs = outputs.clone()
        rows = torch.from_numpy(bad)
        if outputs.dim() and outputs.shape[0] == len(bad):
            outputs[rows] = float("nan")
        else:
            outputs.fill_(float("nan"))
        return outputs
    if isinstance(outputs, np.ndarray) and np.issubdtype(outputs.dtype, np.floating):
        outputs = outputs.copy()
        if outputs.ndim and outputs.shape[0] == len(bad):
            outputs[bad] = np.nan
        else:
            outputs.fill(np.nan)
        return outputs
    return outputs
