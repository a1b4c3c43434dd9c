"""Training memory of the binary networks' Hardtanh: one int8 per element kept for backward.

``nn.Hardtanh`` keeps its float input for backward, whose gradient ``g·1{−1 < x < 1}`` needs only
where the input lies: inside (−1, 1), at or below −1, at or above 1. In a binary network the
Hardtanh in front of every binary convolution then keeps as much as the convolution did in full
precision (the binary convolution itself keeps one byte per element), and is the largest tensor a
binary step keeps beyond its full-precision twin's. :func:`keep_int8_for_backward` makes a Hardtanh
keep ``clamp(x, −1, 1)`` truncated to int8 instead (taken from its output, which is that clamp,
once the forward is done: no second clamp) — −1, 0 or +1, which torch's own backward reads
exactly as it reads ``x`` (strictly inside iff 0) — so gradients are bit-identical. When the binary
layer's fused quantizer keeps the float output itself for its own surrogate gradient (ApproxSign,
EDE, SignSwish, ReCU's standardisation: :func:`onebit.methods.functional.announce_kept`), the
Hardtanh keeps that same tensor instead of the code: no memory of its own at all; so does a binary
layer with real activations (the weight-only presets), whose convolution keeps its input for the
weight's gradient. Such a Hardtanh makes no code at its next call either: it keeps its output as it is
(the network's graph is the same at every step) and, should nothing keep that output after all, goes
back to the code at the call after (an output so kept and then changed in place raises in backward,
as torch does for its own saves). The module
stays an ``nn.Hardtanh`` (export recognises it by type); the saving is done by autograd's
saved-tensor hooks, entered by a forward pre-hook and left by a forward hook.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from ..methods.functional import KEPT_ANYWAY

__all__ = ["MIN_NUMEL", "keep_int8_for_backward"]

#: Smaller inputs keep their float copy: the hooks' fixed cost (~tens of µs) would outweigh the few
#: kilobytes saved (the digits MLP's 32 x 512 activations).
MIN_NUMEL = 1 << 16
#: Set on a module whose last output was kept by the layer after it (:func:`_keep_output`).
_CLAIMED = "_onebit_output_claimed"


def _unpack(saved: list) -> Tensor:
    code, dtype, version = saved
    if version is not None and code._version != version:
        # The output itself, kept on the guess that the layer after it keeps it too (see _leave), was
        # changed in place since: what backward needs is gone; torch's message for that case.
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            "operation: the output of a Hardtanh kept by onebit.nn.lean (its previous call's output was "
            "kept by the layer after it, this one's was not); do not change it in place"
        )
    # torch's own cast, not numpy's: both are vectorised, and torch's also runs on every thread. Measured
    # side by side on ResNet-20's codes (AMD Zen 3, load ~12, 100 interleaved samples, median): 128 x 16 x
    # 32 x 32 at 1 thread 0.27 ms against numpy's 0.32 ms, at 2 threads 0.49 against 0.74 ms (10th
    # percentile); 128 x 64 x 8 x 8 0.056 against 0.067 ms (1T), 0.071 against 0.106 ms (2T). Exact
    # (−1, 0, 1); preserve_format keeps the code's strides (channels_last stays so).
    return code.to(dtype)


def _applies(module: nn.Hardtanh, x: Any) -> bool:
    """Only for the default bounds ±1 (the code's meaning), a float input that autograd will save,
    and plain eager execution (not while tracing, exporting or compiling)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or not torch.is_grad_enabled():
        return False
    if module.min_val != -1.0 or module.max_val != 1.0 or not x.requires_grad or x.numel() < MIN_NUMEL:
        return False
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def _enter(module: nn.Hardtanh, args: tuple) -> None:
    if args and _applies(module, args[0]):
        pending: list[list] = []

        def pack(t: Tensor) -> list:
            # The input itself for now; _leave swaps in the int8 code of the output, clamp(x, −1, 1),
            # which is the code of the input's clamp without clamping a second time.
            holder = [t, t.dtype, None]
            pending.append(holder)
            return holder

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, _unpack)
        hooks.__enter__()
        module._onebit_saved_hooks = (hooks, pending)


def _leave(module: nn.Hardtanh, args: tuple, output: Any) -> None:
    entered = module.__dict__.pop("_onebit_saved_hooks", None)
    if entered is None:
        return
    hooks, pending = entered
    hooks.__exit__(None, None, None)
    if pending and isinstance(output, Tensor):
        version = output._version
        if module.__dict__.pop(_CLAIMED, False):
            # Its last output was kept by the layer after it (a network's graph is the same at every
            # step): keep this one as it is, without a pass to make a code that would be dropped.
            for holder in pending:
                holder[0], holder[2] = output, version
        else:
            with torch.no_grad():
                code = output.to(torch.int8)  # −1, 0 (strictly inside) or +1, truncating clamp(x, −1, 1)
            for holder in pending:
                holder[0] = code
        output.__dict__[KEPT_ANYWAY] = partial(_keep_output, module, pending, version)


def _keep_output(module: nn.Hardtanh, pending: list[list], version: int, output: Tensor) -> None:
    """A fused quantizer keeps ``output`` itself for backward (announce_kept): keep it here too, in
    place of the int8 code — the same memory, and torch's backward reads clamp(x, −1, 1) exactly as
    it reads x (strictly inside (−1, 1) iff x is) — and take the output as it is at the module's next
    call. Not if ``output`` was changed in place since."""
    if output._version != version:
        return
    for holder in pending:
        holder[0], holder[2] = output, None  # the layer's own save now guards it against changes
    module.__dict__[_CLAIMED] = True


def keep_int8_for_backward(module: nn.Hardtanh) -> nn.Hardtanh:
    """Make ``module`` keep one int8 per element for backward instead of its float input (see the
    module docstring); values and gradients are unchanged. Returns ``module``."""
    if not isinstance(module, nn.Hardtanh):
        raise TypeError(f"keep_int8_for_backward: expected an nn.Hardtanh, got {type(module).__name__}")
    module.register_forward_pre_hook(_enter)
    module.register_forward_hook(_leave, always_call=True)
    return module
