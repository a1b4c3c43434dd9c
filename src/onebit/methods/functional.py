"""Building blocks shared by the binarization methods: the sign, the straight-through idiom and the
surrogate functions whose derivatives replace sign's zero gradient.

Every binarizer in onebit is written as ``ste(forward, surrogate)``: the forward value is ``forward``
(usually ``sign(x)``) and the gradient is autograd's gradient of ``surrogate``. This is the idiom of the
reference implementations (``fwd.detach() - sur.detach() + sur``), so gradients match theirs exactly,
and a surrogate is just a differentiable function that ``torch.autograd.gradcheck`` can check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sign",
    "sign_clip_ste",
    "sign_approx_ste",
    "sign_ede",
    "sign_fourier",
    "sign_identity_ste",
    "sign_swish_ste",
    "clamp_ste",
    "ste",
    "clip",
    "approx_sign",
    "sign_swish",
    "per_channel_mean_abs",
    "sample_dims",
]


def sign(x: Tensor) -> Tensor:
    """+1 where ``x >= 0``, −1 elsewhere.

    Deliberate difference from the reference repositories, which call ``torch.sign`` and so give 0 at
    exactly 0: a 1-bit kernel cannot represent 0, so onebit maps 0 to +1, as Larq and Larq Compute
    Engine do. For real-valued latent weights and batch-normalised activations an exact 0 is rare.
    """
    # sign(sign(x) + 0.5) maps {-1, 0, +1} to {-1, +1, +1} with two vectorised arithmetic kernels; a
    # comparison + where is several times slower on CPU (bool tensors), and this runs on every weight
    # and activation of every step. (-0.0 maps to +1 too, as the kernels' `x < 0` test does.)
    # In place after the first kernel: the same values with one allocation instead of three. Where
    # no gradient is recorded, one native pass instead (:func:`native_sign`, the same values).
    if type(x) in _PLAIN_TENSORS and not (x.requires_grad and torch.is_grad_enabled()):
        out = native_sign(x)
        if out is not None:
            return out
    return torch.sign(x).add_(0.5).sign_()


def ste(forward: Tensor, surrogate: Tensor) -> Tensor:
    """Value of ``forward``, gradient of ``surrogate`` (the straight-through estimator idiom)."""
    return forward.detach() + (surrogate - surrogate.detach())


def clip(x: Tensor) -> Tensor:
    """hardtanh: its gradient 1{|x| ≤ 1} is the clip-STE of BNN (Hubara et al., 2016, Eq. 4)."""
    return x.clamp(-1.0, 1.0)


def approx_sign(x: Tensor) -> Tensor:
    """Bi-Real Net's ApproxSign (Liu et al., ECCV 2018, Eq. 6): a piecewise quadratic whose derivative
    is ``2 − 2|x|`` on ``|x| < 1`` and 0 elsewhere."""
    xc = x.clamp(-1.0, 1.0)
    return 2 * xc - xc * xc.abs()


def sign_swish(x: Tensor, beta: float | Tensor) -> Tensor:
    """SignSwish of BNN+ (Darabi et al., 2018, Eq. 3): ``2σ(βx)[1 + βx(1 − σ(βx))] − 1``.

    Its derivative is ``β[2 − βx·tanh(βx/2)] / [1 + cosh(βx)]``; it tends to sign(x) as β grows.
    """
    bx = beta * x
    s = torch.sigmoid(bx)
    return 2 * s * (1 + bx * (1 - s)) - 1


def sample_dims(x: Tensor, channels_last: bool) -> tuple[int, ...]:
    """Dimensions that make up one sample's features: (C, *spatial) for convolutions, the last
    (feature) dimension for linear layers, whose leading dimensions are all batch-like (tokens)."""
    if channels_last:
        return (x.dim() - 1,)
    return tuple(range(1, x.dim()))


def per_channel_mean_abs(w: Tensor) -> Tensor:
    """XNOR-Net's weight scale α (Rastegari et al., ECCV 2016, Eq. 6): mean |W| per output channel,
    shaped to broadcast against ``w``."""
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


def log_linear(start: float, end: float, fraction: float) -> float:
    """Geometric interpolation from ``start`` to ``end`` at ``fraction`` ∈ [0, 1]."""
    return 10 ** (math.log10(start) + (math.log10(end) - math.log10(start)) * fraction)


# --------------------------------------------------------------------------------------------------
# Fused quantizers
# --------------------------------------------------------------------------------------------------
# ``ste(sign(x), surrogate(x))`` costs, on every activation of every step, the sign's kernels, the
# surrogate's forward (its value is thrown away), the ste's subtract and add, and in backward the
# surrogate's autograd chain (clamp's backward alone is four passes: ge, le, logical_and, where). A
# quantizer below is a pair of functions, ``value(x, *args)`` -> (binary value, small tensors to keep)
# and ``grad(g, x, kept, *args)`` -> the surrogate's gradient, run by one autograd.Function
# (:class:`QuantizerCall`): the value costs the sign's kernels only, backward applies the derivative
# with as few kernels as torch's eager ops allow, and only the input is saved. The binary layers go
# one step further (:func:`quantized_conv`): the convolution and its quantizer are one Function that
# keeps the real input and recomputes the binary one in backward, so a step holds no float copy of
# the binary activations. Values and gradients equal the ``ste`` formulas (tests/methods/
# test_fused_quantizers.py keeps those formulas as the oracle).
#
# Why the float input is saved rather than a 1-bit mask: on CPU, torch's boolean kernels (comparisons
# writing bool, masked_fill/where reading it) run 5-10x slower than float arithmetic, so building and
# applying a mask would cost more time than the memory it saves; clip's gradient is instead one
# ``hardtanh_backward`` kernel over the saved input. And the input is what the full-precision layer
# keeps for its own backward, so the binary layer keeps no more than its twin.


def _above_one(dtype: torch.dtype) -> float:
    """The next ``dtype`` value above 1: hardtanh_backward passes the gradient on the open interval
    (−b, b), which for this b is exactly clamp's closed [−1, 1]."""
    return 1.0 + torch.finfo(dtype).eps


def _numpy_friendly(x: Tensor) -> bool:
    """Whether the int8 codes of ``x`` are taken with numpy: on CPU, float32/64. Its comparisons write
    a byte per element in one vectorised pass, where torch's bool-writing kernels cost 5-15x a float
    pass on this CPU (measured: 2M elements, 2.1 ms against 6.3 ms for the five float passes). Plain
    tensors only, run eagerly: the fake tensors of torch.export/compile have no data for numpy."""
    return _eager_plain(x) and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _torch_owned_int8(shape: torch.Size) -> Tensor:
    """An int8 CPU tensor for numpy to write a code into: the memory is torch's, so torch's profiler
    (and ``benchmarks/train_step.py``'s peak memory) counts it, which a ``torch.from_numpy`` array's
    is not."""
    return torch.empty(shape, dtype=torch.int8)


def _all_within_one(code: Tensor) -> bool:
    """Whether every entry of a clip-STE int8 code is ±1 (no |x| > 1), read as bytes."""
    if code.numel() == 0:
        return True
    if code.device.type == "cpu" and _eager_plain(code):
        return bool(np.abs(code.numpy()).max() <= 1)
    return bool(code.abs().max() <= 1)


def _clip_grad(grad: Tensor, x: Tensor) -> Tensor:
    """``grad·1{|x| ≤ 1}`` in one kernel (clamp's backward, boundary included)."""
    bound = _above_one(x.dtype)
    return torch.ops.aten.hardtanh_backward(grad, x, -bound, bound)


# Native activation kernels (csrc/train_activations.cpp, in onebit._engine): sign, ApproxSign's
# gradient (with ReActNet's per-channel shift) and ReCU/BiPer's standardised ApproxSign in one pass
# over the activations each, where torch takes one pass per op. They run on float32 CPU tensors
# outside torch.compile; anything else, or an engine built without them, takes the torch formulas,
# which stay the tests' oracle (tests/methods/test_native_activations.py).
try:
    from onebit import _engine as _activation_engine
except ImportError:  # a source tree without the compiled engine: the torch path only
    _activation_engine = None

#: Whether the native activation kernels may run (tests set it False to take the torch path).
NATIVE_ACTIVATIONS = _activation_engine is not None and hasattr(_activation_engine, "activation_sign")


def native_activations(*tensors: Tensor) -> bool:
    """Whether the native activation kernels take these (non-empty float32 CPU) tensors: plain
    tensors only, run eagerly (a tracer, an exporter or a compiler would see no op, or a fake tensor
    without data)."""
    return (NATIVE_ACTIVATIONS and _eager_plain(*tensors)
            and tensors[0].numel() > 0 and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors))


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _eager_plain(*tensors: Tensor) -> bool:
    """Whether these are plain tensors (not a fake or functional subclass) run eagerly: only those have
    data a native kernel or numpy can read."""
    return all(type(t) in _PLAIN_TENSORS for t in tensors) and not _tracing()


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


#: Whether the engine has the clip-STE code kernels (an engine built before them has the others).
_CLIP_CODE_KERNELS = NATIVE_ACTIVATIONS and hasattr(_activation_engine, "clip_pack")


def _native_code(code: Tensor) -> bool:
    """Whether the native kernels take this int8 clip-STE code (contiguous, CPU, eager)."""
    return (NATIVE_ACTIVATIONS and _CLIP_CODE_KERNELS and type(code) is torch.Tensor and not _tracing()
            and code.dtype == torch.int8 and code.device.type == "cpu" and code.numel() > 0 and code.is_contiguous())


def _channel_layout(x: Tensor, shift: Tensor | None) -> tuple[int, int, int] | None:
    """(outer, channels, inner) of ``x`` around the one dim along which ``shift`` varies (shift
    broadcasting to x with at most one non-1 dim, of x's size there), or None for another shape."""
    if shift is None:
        return 1, 1, x.numel()
    if shift.dim() > x.dim() or shift.numel() == 0:
        return None
    sizes = (1,) * (x.dim() - shift.dim()) + tuple(shift.shape)
    varying = [d for d, s in enumerate(sizes) if s != 1]
    if len(varying) > 1 or any(s not in (1, x.shape[d]) for d, s in enumerate(sizes)):
        return None
    if not varying:  # one value for all
        return 1, 1, x.numel()
    d = varying[0]
    return math.prod(x.shape[:d]), x.shape[d], math.prod(x.shape[d + 1:])


def native_sign(x: Tensor, shift: Tensor | None = None) -> Tensor | None:
    """onebit's sign of ``x`` (+ ``shift``, per channel) in one native pass, or None where the kernel
    does not take it (then the caller takes the torch formula)."""
    layout = _channel_layout(x, shift)
    if layout is None or not native_activations(x, *(() if shift is None else (shift,))):
        return None
    src = x.detach().contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    b = None if shift is None else shift.detach().reshape(-1).contiguous()
    _activation_engine.activation_sign(src.data_ptr(), data_address(b), *layout, out.data_ptr(),
                                       torch.get_num_threads())
    return out


def native_approx_grad(grad: Tensor, x: Tensor, shift: Tensor | None = None) -> Tensor | None:
    """ApproxSign's gradient ``g·max(0, 2 − 2|x (+ shift)|)`` in one native pass, operation for operation
    :meth:`ApproxSTE.grad`'s (bit-identical), or None where the kernel does not take the tensors."""
    layout = _channel_layout(x, shift)
    if layout is None or grad.shape != x.shape or not native_activations(x, grad, *(() if shift is None else (shift,))):
        return None
    src, g = x.detach().contiguous(), grad.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    b = None if shift is None else shift.detach().reshape(-1).contiguous()
    _activation_engine.approx_sign_grad(g.data_ptr(), src.data_ptr(), data_address(b), *layout,
                                        out.data_ptr(), torch.get_num_threads())
    return out


#: The attribute under which :meth:`ShiftedApproxSTE.grad` leaves the shift's gradient, summed in the
#: same native pass, for :meth:`ShiftedApproxSTE.arg_grads` (which takes it off again).
SHIFT_GRAD = "_onebit_shift_grad"


def native_approx_grad_sum(grad: Tensor, x: Tensor, shift: Tensor) -> Tensor | None:
    """:func:`native_approx_grad` with ``shift``, the shift's gradient (the gradient summed over all but
    the shift's dim, taken in double in the same pass: within float rounding of ``sum_to_size``) left
    on the result under :data:`SHIFT_GRAD`; None where the kernel does not take the tensors."""
    layout = _channel_layout(x, shift)
    if (layout is None or grad.shape != x.shape or not native_activations(x, grad, shift)
            or not hasattr(_activation_engine, "approx_sign_grad_sum")):
        return None
    src, g = x.detach().contiguous(), grad.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    b = shift.detach().reshape(-1).contiguous()
    sums = torch.empty(layout[1], dtype=x.dtype)
    _activation_engine.approx_sign_grad_sum(g.data_ptr(), src.data_ptr(), b.data_ptr(), *layout, out.data_ptr(),
                                            sums.data_ptr(), torch.get_num_threads())
    out.__dict__[SHIFT_GRAD] = sums.reshape(shift.shape)
    return out


class ClipSTE:
    """``scale·sign(x)``, gradient ``g·1{|x| ≤ 1}`` not multiplied by the (detached) scale."""

    @staticmethod
    def value(x: Tensor, scale: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        out = sign(x)
        return (out if scale is None else out.mul_(scale)), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor | None, kept: tuple[Tensor, ...], scale: Tensor | None) -> Tensor:
        return grad if x is None else _clip_grad(grad, x)  # (None: unpack found every |x| ≤ 1)

    # What the fused product keeps instead of x: one int8 per element, sign(x)·(1 if |x| ≤ 1 else 2),
    # which gives back both sign(x) and the clip mask (|code| ≤ 1 exactly where |x| ≤ 1).
    @staticmethod
    def pack(x: Tensor, scale: Tensor | None) -> Tensor:
        if _CLIP_CODE_KERNELS and native_activations(x):  # the same code in one native pass
            code = torch.empty(x.shape, dtype=torch.int8)
            _activation_engine.clip_pack(x.detach().contiguous().data_ptr(), x.numel(), code.data_ptr(),
                                         torch.get_num_threads())
            return code
        if _numpy_friendly(x):
            values, code = x.detach().numpy(), _torch_owned_int8(x.shape)
            np.add(np.greater(np.abs(values), 1).view(np.int8), np.int8(1), out=code.numpy())  # 1 in, 2 out
            code.numpy()[...] *= np.greater_equal(values, 0).view(np.int8) * np.int8(2) - np.int8(1)  # −0.0: +1
            return code
        positive_zero = x + 0.0  # −0.0 + 0.0 = +0.0, so copysign gives sign(0) = +1 as sign() does
        code = positive_zero.abs().clamp_(1.0, 2.0).ceil_()
        return torch.copysign(code, positive_zero, out=code).to(torch.int8)

    @staticmethod
    def unpack(code: Tensor, dtype: torch.dtype, scale: Tensor | None,
               need_input: bool = True) -> tuple[Tensor, Tensor | None]:
        """(scale·sign(x), the code as a float tensor standing in for x in the clip mask, or None
        when not ``need_input`` (the forward needs the binary value only) or when every |x| ≤ 1 (the
        mask would pass the whole gradient: the input of a binary layer after a Hardtanh))."""
        if dtype == torch.float32 and _native_code(code):  # ±1 and the |x| > 1 check in one pass
            xq = torch.empty(code.shape, dtype=dtype)
            outside = _activation_engine.clip_unpack(code.data_ptr(), code.numel(), xq.data_ptr(),
                                                     torch.get_num_threads())
            return (xq if scale is None else xq.mul_(scale)), (code.to(dtype) if need_input and outside else None)
        if need_input and _all_within_one(code):
            need_input = False
        as_float = code.to(dtype) if need_input else None
        xq = as_float.clamp(-1.0, 1.0) if need_input else code.to(dtype).clamp_(-1.0, 1.0)
        return (xq if scale is None else xq.mul_(scale)), as_float


class ApproxSTE:
    """``sign(x)``, gradient ``g·max(0, 2 − 2|x|)`` (ApproxSign)."""

    @staticmethod
    def value(x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        return sign(x), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...]) -> Tensor:
        native = native_approx_grad(grad, x)
        if native is not None:
            return native
        inside = _clip_grad(grad, x)
        return torch.addcmul(inside * 2, inside, x.abs(), value=-2)  # g·(2 − 2|x|) on |x| ≤ 1


class ShiftedApproxSTE:
    """``sign(x + b)``, gradient ``g·max(0, 2 − 2|x + b|)`` for ``x`` and, summed over ``b``'s broadcast
    dims, for ``b`` (ReActNet's RSign with its learnable threshold, Liu et al., ECCV 2020, Eq. 2).
    The shift is inside the fused quantizer so that it keeps ``x`` (what the layer in front keeps
    anyway) rather than its own float copy ``x + b``; backward adds ``b`` again (one pass)."""

    @staticmethod
    def value(x: Tensor, shift: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        native = native_sign(x, shift)  # x + b and its sign in one pass, x + b not kept (grad adds b again)
        if native is not None:
            return native, ()
        shifted = x + shift
        return sign(shifted), (shifted,)

    @staticmethod
    def slim(kept: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return ()

    @staticmethod
    def restore(x: Tensor, slim: tuple[Tensor, ...], shift: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        return ShiftedApproxSTE.value(x, shift)

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], shift: Tensor) -> Tensor:
        if not kept:  # the native value kept no x + b: the native gradient adds b again
            # (with the threshold's gradient in the same pass when it is learned)
            native = native_approx_grad_sum(grad, x, shift) if shift.requires_grad else None
            native = native if native is not None else native_approx_grad(grad, x, shift)
            if native is not None:
                return native
            kept = (x + shift,)
        return ApproxSTE.grad(grad, kept[0], ())

    @staticmethod
    def arg_grads(grad_x: Tensor, needs: tuple[bool, ...], shift: Tensor) -> tuple[Tensor | None, ...]:
        """The gradients of the arguments given the input's: ∂L/∂b = Σ ∂L/∂x over b's broadcast dims
        (what autograd's ``x + b`` gives; summed by the native gradient's pass where it ran)."""
        # (a traced or compiled gradient has no __dict__; the native pass that leaves the sum never runs there)
        summed = None if _tracing() else grad_x.__dict__.pop(SHIFT_GRAD, None)
        if not needs[0]:
            return (None,)
        return (summed if summed is not None else grad_x.sum_to_size(shift.shape),)


def _arg_grads(quantizer: type, grad_x: Tensor | None, needs: tuple[bool, ...], args: tuple) -> tuple:
    """Gradients of a fused quantizer's arguments: None for each, unless the quantizer has learnable
    ones (``arg_grads``, e.g. ReActNet's threshold)."""
    if grad_x is None or not hasattr(quantizer, "arg_grads") or not any(needs):
        return (None,) * len(args)
    return quantizer.arg_grads(grad_x, needs, *args)


def _needs_input_grad(quantizer: type, needs_x: bool, needs_args: tuple[bool, ...]) -> bool:
    """Whether the input's gradient must be computed: for the input, or for learnable arguments."""
    return needs_x or (hasattr(quantizer, "arg_grads") and any(needs_args))


class EDESTE:
    """``sign(x)``, gradient ``g·k·t·(1 − tanh²(t·x))``."""

    @staticmethod
    def value(x: Tensor, k: Tensor | float, t: Tensor | float) -> tuple[Tensor, tuple[Tensor, ...]]:
        return sign(x), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], k: Tensor | float, t: Tensor | float) -> Tensor:
        if _EDE_KERNEL and _native_grad(x, grad):  # the same chain in one pass, tanh within 2 ulp of torch's
            g, src = grad.contiguous(), x.detach().contiguous()
            out = torch.empty_like(src)
            _engine.ede_grad(g.data_ptr(), src.data_ptr(), src.numel(), float(k), float(t), out.data_ptr(),
                             torch.get_num_threads())
            return out
        # The order of autograd's chain through k·tanh(t·x), so the result is bit-identical to it.
        return torch.ops.aten.tanh_backward(grad * k, torch.tanh(t * x)) * t


class FourierSTE:
    """``sign(x)``, gradient ``g·(4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)`` on ``|x| ≤ 1``, 0 outside."""

    @staticmethod
    def value(x: Tensor, terms: int, omega: float) -> tuple[Tensor, tuple[Tensor, ...]]:
        return sign(x), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], terms: int, omega: float) -> Tensor:
        if omega < math.pi and omega * 2 * (terms + 1) <= 8192 and _native_grad(x, grad):  # one pass, same formula
            return _native_surrogate(_FOURIER_GRAD, grad, x, omega, 2.0 * (terms + 1), 4 * omega / math.pi)
        series = fourier_derivative_sum(x.clamp(-1.0, 1.0), terms, omega)
        return _clip_grad(grad, x).mul_(series).mul_(4 * omega / math.pi)


class IdentitySTE:
    """``sign(x)``, gradient ``g``."""

    @staticmethod
    def value(x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        return sign(x), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...]) -> Tensor:
        return grad

    @staticmethod
    def pack(x: Tensor) -> Tensor:
        if _numpy_friendly(x):  # 2·1{x ≥ 0} − 1 (−0.0 ≥ 0: +1)
            code = _torch_owned_int8(x.shape)
            bytes_ = code.numpy()
            np.greater_equal(x.detach().numpy(), 0, out=bytes_.view(np.bool_))
            np.add(bytes_, bytes_, out=bytes_)  # (numpy's int8 shift is not vectorised: 3x slower)
            np.subtract(bytes_, np.int8(1), out=bytes_)
            return code
        return sign(x).to(torch.int8)

    @staticmethod
    def unpack(code: Tensor, dtype: torch.dtype, need_input: bool = True) -> tuple[Tensor, Tensor]:
        xq = code.to(dtype)
        return xq, xq


class SwishSTE:
    """Gradient ``g·SS'_β(x) = g·2β·s(1 − s)·(2 + βx(1 − 2s))``, s = σ(βx); value ``sign(x)``,
    ``sign(SS_β(x))`` or ``SS_β(x)`` (``kind`` "sign", "sign_swish", "swish")."""

    @staticmethod
    def value(x: Tensor, beta: Tensor | float, kind: str) -> tuple[Tensor, tuple[Tensor, ...]]:
        if kind == "sign":
            return sign(x), ()
        bx = beta * x
        s = torch.sigmoid(bx)
        swish = 2 * s * (1 + bx * (1 - s)) - 1  # sign_swish's own order of operations
        return (swish if kind == "swish" else sign(swish)), ()

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], beta: Tensor | float, kind: str) -> Tensor:
        if _native_grad(x, grad):  # the same formula in one pass (train_quantizers.h)
            return _native_surrogate(_SWISH_GRAD, grad, x, float(beta))
        bx = beta * x
        s = torch.sigmoid(bx)
        one_minus_s = 1 - s
        derivative = torch.mul(s, one_minus_s).mul_(2 + bx * (one_minus_s - s)).mul_(2 * beta)
        return derivative.mul_(grad)


#: The attribute under which a tensor's producer may leave a callable ``keep(tensor)``: a fused
#: quantizer that keeps the tensor itself for backward calls it (:func:`announce_kept`), so that the
#: producer keeps that same tensor (shared memory) instead of a compact copy of its own — the
#: Hardtanh of :mod:`onebit.nn.lean` and its int8 code, in front of ApproxSign, EDE, SignSwish, …
KEPT_ANYWAY = "_onebit_kept_anyway"


def announce_kept(x: Tensor) -> None:
    """Tell ``x``'s producer that ``x`` itself is kept for backward (see :data:`KEPT_ANYWAY`); not
    while compiling (the producer's hooks are off then, and a traced tensor has no ``__dict__``)."""
    if torch.compiler.is_compiling():
        return
    keep = x.__dict__.pop(KEPT_ANYWAY, None)
    if keep is not None:
        keep(x)


def kept_for_backward(quantizer: type, x: Tensor, kept: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """What a fused quantizer keeps for backward, as (first, rest): its first kept tensor and the rest
    when it says ``from_kept``; else ``x`` and its kept tensors, slimmed by ``slim`` where its
    ``restore`` rebuilds the rest in backward. The real input, when kept, is announced to its
    producer (:func:`announce_kept`)."""
    if hasattr(quantizer, "from_kept"):
        first, rest = kept[0], tuple(kept[1:])
    else:
        first, rest = x, tuple(quantizer.slim(kept) if hasattr(quantizer, "slim") else kept)
    if first is x:
        announce_kept(x)
    return first, rest


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, quantizer: type, *args: Any) -> Tensor:
        out, kept = quantizer.value(x, *args)
        first, rest = kept_for_backward(quantizer, x, kept)
        ctx.save_for_backward(first, *rest)
        ctx.quantizer, ctx.args = quantizer, args
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        x, kept = (saved[0], saved) if hasattr(ctx.quantizer, "from_kept") else (saved[0], saved[1:])
        if hasattr(ctx.quantizer, "restore"):
            _, kept = ctx.quantizer.restore(x, kept, *ctx.args)
        needs = ctx.needs_input_grad
        gx = ctx.quantizer.grad(grad, x, tuple(kept), *ctx.args)
        return (gx if needs[0] else None, None) + _arg_grads(ctx.quantizer, gx, needs[2:], ctx.args)


@dataclass(frozen=True)
class QuantizerCall:
    """A quantizer applied to ``x`` with ``args`` (detached tensors or numbers, or learnable tensors
    for a quantizer with ``arg_grads``): what a method's
    :meth:`~onebit.methods.Method.input_quantizer` returns, so the layer can fuse it with its
    convolution; :meth:`apply` runs it alone."""

    x: Tensor
    quantizer: type
    args: tuple[Any, ...] = ()

    def apply(self) -> Tensor:
        return _Fused.apply(self.x, self.quantizer, *self.args)


def _no_grad(v: Any) -> Any:
    return v.detach() if isinstance(v, Tensor) else v


def sign_clip_ste(x: Tensor, scale: Tensor | None = None) -> Tensor:
    """``scale·sign(x)`` with BNN's clip STE ``g·1{|x| ≤ 1}`` (Hubara et al., 2016, Eq. 4), the
    gradient not multiplied by ``scale`` (a detached per-channel or per-sample scale, or None):
    ``ste(scale·sign(x), clip(x))``, fused."""
    return QuantizerCall(x, ClipSTE, (_no_grad(scale),)).apply()


def sign_approx_ste(x: Tensor) -> Tensor:
    """``sign(x)`` with Bi-Real Net's ApproxSign derivative ``g·max(0, 2 − 2|x|)`` (Liu et al., ECCV
    2018, Eq. 6): ``ste(sign(x), approx_sign(x))``, fused."""
    return QuantizerCall(x, ApproxSTE).apply()


def sign_ede(x: Tensor, k: Tensor | float, t: Tensor | float) -> Tensor:
    """``sign(x)`` with IR-Net's error decay estimator ``g·k·t·(1 − tanh²(t·x))``, the derivative of
    ``k·tanh(t·x)`` (Qin et al., CVPR 2020): ``ste(sign(x), k·tanh(t·x))``, fused. ``k`` and ``t``
    carry no gradient (schedule buffers)."""
    return QuantizerCall(x, EDESTE, (_no_grad(k), _no_grad(t))).apply()


def fourier_derivative_sum(x: Tensor, terms: int, omega: float) -> Tensor:
    """``Σ_{i=0..n} cos((2i+1)·ω·x)`` (n = ``terms``) in closed form,
    ``sin(2(n+1)θ) / (2 sin θ)`` with θ = ωx, and its limit n + 1 at θ = 0. When ω|x| can reach π (ω ≥ π on
    the clipped input) the zeros of sin θ at θ = mπ, m ≠ 0, are taken in float64 with the limit
    (n+1)(−1)^m at exact multiples."""
    n1 = terms + 1
    if omega < math.pi:
        # |θ| < π: sin θ = 0 only at θ = 0 (or θ underflowing to 0), where 0/0 gives NaN and the
        # limit n + 1 replaces it. (torch.sinc, which takes the limit itself, is ~20x slower than
        # sin on CPU: it is not vectorised.)
        theta = x * omega
        ratio = torch.sin(theta * (2 * n1)).div_(torch.sin(theta).mul_(2))
        return ratio.nan_to_num_(nan=float(n1), posinf=math.inf, neginf=-math.inf)
    u = x.double() * (omega / math.pi)
    m = torch.round(u)
    limit = n1 * (1 - 2 * torch.remainder(m, 2))
    ratio = torch.sinc(u * (2 * n1)) / torch.sinc(u) * n1
    return torch.where(u == m, limit, ratio).to(x.dtype)


def sign_fourier(x: Tensor, terms: int, omega: float) -> Tensor:
    """``sign(x)`` with the derivative of FDA's truncated Fourier series of the square wave (Xu et al.,
    NeurIPS 2021, Eq. 5), ``g·(4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)`` on ``|x| ≤ 1`` and 0 outside, the sum in
    closed form (:func:`fourier_derivative_sum`): one pass instead of n."""
    return QuantizerCall(x, FourierSTE, (int(terms), float(omega))).apply()


def sign_identity_ste(x: Tensor) -> Tensor:
    """``sign(x)`` with the identity straight-through gradient (BinaryConnect; BiPer's ``sign(sin ωW)``):
    ``ste(sign(x), x)``, fused."""
    return QuantizerCall(x, IdentitySTE).apply()


def sign_swish_ste(x: Tensor, beta: Tensor | float, value: str = "sign") -> Tensor:
    """A quantizer with BNN+'s SignSwish derivative ``β[2 − βx·tanh(βx/2)]/[1 + cosh(βx)]`` (Darabi et
    al., 2018, Eq. 3) as gradient, fused. Its value: ``"sign"`` → ``sign(x)``; ``"sign_swish"`` →
    ``sign(SS_β(x))`` (PC++'s F = sign∘B, which differs from sign(x) only where SS_β(x) rounds to 0);
    ``"swish"`` → ``SS_β(x)`` itself (BNN++ before its hard epochs)."""
    if value not in ("sign", "sign_swish", "swish"):
        raise ValueError(f"sign_swish_ste: value={value!r}; use 'sign', 'sign_swish' or 'swish'")
    return QuantizerCall(x, SwishSTE, (_no_grad(beta), value)).apply()


class _ClampSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward((x >= -bound) & (x <= bound))  # a bool mask (weights: small tensors)
        return sign(x.clamp(-bound, bound))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (inside,) = ctx.saved_tensors
        return torch.where(inside, grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None


def clamp_ste(x: Tensor, bound: Tensor) -> Tensor:
    """``sign(clamp(x, −q, q))`` with clamp's gradient ``g·1{−q ≤ x ≤ q}`` (ReCU's weight quantizer,
    Xu et al., ICCV 2021, Eq. 11–13, ``q`` detached): ``ste(sign(w2), w2)`` with ``w2 = clamp(x, ±q)``,
    fused."""
    return _ClampSign.apply(x, bound.detach())


# --------------------------------------------------------------------------------------------------
# Per-output-channel standardisation of the weights (IR-Net's Libra-PB, ReCU), fused
# --------------------------------------------------------------------------------------------------
def centred_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows − mean, Σ (rows − mean)²)`` per output channel, rows = ``w`` flattened per channel:
    the two-pass variance's parts (torch's Welford ``var`` is ~20x slower on CPU)."""
    rows = w.reshape(w.shape[0], -1)
    centred = rows - rows.mean(dim=1, keepdim=True)
    return centred, torch.linalg.vecdot(centred, centred).unsqueeze(1)


def standardize_backward(grad_s: Tensor, z: Tensor, z_mean: Tensor, dof: int, through_std: Tensor | bool) -> Tensor:
    """The gradient of ``z = c/std`` per row (c = rows − mean, std = sqrt(Σc²/dof + ε), any ε) with
    respect to the rows, given ``grad_s`` = ∂L/∂z already divided by std (the callers fold 1/std into a
    per-row factor they apply anyway) and ``z_mean`` = z's row mean (0 up to rounding):
    ``g_s − z·c − mean(g_s − z·c)`` with ``c = Σ(g_s·z)/dof``, i.e. ``((g − z·Σ(g·z)/dof)/std)`` minus its row
    mean (the centring) in four passes. ``through_std`` (per row) False where std is a constant (a
    zero-variance row of Libra-PB)."""
    coef = torch.linalg.vecdot(grad_s, z).unsqueeze(1) / dof
    if isinstance(through_std, Tensor):
        coef = coef * through_std
    elif not through_std:
        coef = torch.zeros_like(coef)
    centring = grad_s.mean(dim=1, keepdim=True) - z_mean * coef
    return torch.addcmul(grad_s, z, coef, value=-1).sub_(centring)


# Native row kernels (csrc/train_quantizers.cpp, in onebit._engine): a weight's whole
# standardisation, sign and scale in one pass over memory, each output channel's row kept in L1 while
# its passes run (torch takes one pass over the whole weight per op: ~20 for IR-Net's weight). They
# run on contiguous float32 CPU weights; anything else, or an engine built without them, takes the
# torch formulas below, which also stay the tests' oracle (tests/methods/test_native_quantizers.py).
try:
    from onebit import _engine
except ImportError:  # a source tree without the compiled engine: the torch path only
    _engine = None

#: Whether the native kernels may run (tests set it False to take the torch path as the oracle).
NATIVE_KERNELS = _engine is not None and hasattr(_engine, "standardize_rows")
_LIBRA, _RECU = 0, 1  # csrc/train_quantizers.h StandardizeKind
_EDE_GRAD, _WINDOW_GRAD = 0, 1  # DerivativeKind


_SINE_GRAD, _SWISH_GRAD, _FOURIER_GRAD = 0, 1, 2  # SurrogateKind
_EDE_KERNEL = NATIVE_KERNELS and hasattr(_engine, "ede_grad")  # IR-Net's EDE on activations (EDESTE)


def _native(*tensors: Tensor) -> bool:
    """Whether the weight-quantizer kernels take these tensors: float32 CPU plain tensors, run eagerly
    (a tracer, an exporter or a compiler would see no op, a fake tensor has no data: torch's formulas)."""
    return (NATIVE_KERNELS and _eager_plain(*tensors)
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors))


def _native_grad(*tensors: Tensor) -> bool:
    """Whether a gradient may be taken natively: not under ``create_graph`` (grad mode on in backward),
    where the torch formula keeps the graph for a second derivative, and not for an empty ``x`` (the
    first tensor; its gradient has its shape): an empty tensor has no data address, which the kernels
    refuse (an empty training batch)."""
    return _native(*tensors) and tensors[0].numel() > 0 and not torch.is_grad_enabled()


#: Tensors with fewer elements run a native kernel on the calling thread alone (torch's own element-wise
#: grain, at::internal::GRAIN_SIZE): ResNet-20's weights (2.3K-37K elements) would otherwise open a
#: 2-thread region whose hand-off and join cost as much as the work, and whose join on a busy machine waits
#: for a thread that is not running. The kernels give the same bits on any number of threads.
SERIAL_BELOW = 32768


def data_address(t: Tensor | None) -> int:
    """A native kernel's pointer argument: the tensor's data address, or 0 (null) for a missing one."""
    return 0 if t is None else t.data_ptr()


def kernel_threads(numel: int) -> int:
    """The thread count a native kernel over ``numel`` elements is given (see :data:`SERIAL_BELOW`)."""
    return 1 if numel < SERIAL_BELOW else torch.get_num_threads()


def _once_differentiable() -> None:
    """Raises for a second derivative through a native kernel's backward (the kernels build no graph)."""
    if torch.is_grad_enabled():
        raise RuntimeError("a second derivative through onebit's native weight-quantizer kernels is not "
                           "available; set onebit.methods.functional.NATIVE_KERNELS = False before the forward "
                           "pass to take the torch formulas")


def _native_surrogate(kind: int, grad: Tensor, x: Tensor, p0: float, p1: float = 0.0, p2: float = 0.0) -> Tensor:
    """``surrogate_grad`` (train_quantizers.h) of ``kind`` over ``x`` and ``grad`` (same shape)."""
    _once_differentiable()
    x = x.detach().contiguous()
    g = grad.contiguous()
    out = torch.empty_like(x)
    _engine.surrogate_grad(kind, g.data_ptr(), x.data_ptr(), x.numel(), p0, p1, p2, out.data_ptr(),
                           torch.get_num_threads())
    return out


def _native_standardize(kind: int, w: Tensor, k: float = 0.0, t: float = 0.0, eps: float = 0.0
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(z, out, z_mean, factor, through, abs_sum) of ``standardize_rows`` (train_quantizers.h) on the
    rows of ``w`` (one per output channel); the per-row tensors are shaped (rows, 1)."""
    rows = w.detach().reshape(w.shape[0], -1).contiguous()
    z, out = torch.empty_like(rows), torch.empty_like(rows)
    stats = torch.empty(4, rows.shape[0], 1, dtype=rows.dtype)
    ptrs = [s.data_ptr() for s in stats]
    _engine.standardize_rows(kind, rows.data_ptr(), rows.shape[0], rows.shape[1], k, t, eps, z.data_ptr(),
                             out.data_ptr(), *ptrs, kernel_threads(rows.numel()))
    return (z, out, *stats)


def _native_standardize_backward(kind: int, grad: Tensor, z: Tensor, z_mean: Tensor, factor: Tensor,
                                 through: Tensor, param: float, dof: int) -> Tensor:
    """:func:`standardize_backward` of ``d(z)·grad`` (``kind``: the EDE derivative with t = ``param``,
    or ReCU's window ``|z| ≤ param``; ``factor`` per row) by ``standardize_backward_rows``."""
    _once_differentiable()
    g = grad.reshape(z.shape).to(torch.float32).contiguous()
    out = torch.empty_like(g)
    _engine.standardize_backward_rows(kind, g.data_ptr(), z.data_ptr(), z_mean.data_ptr(), factor.data_ptr(),
                                      through.data_ptr(), param, float(dof), z.shape[0], z.shape[1],
                                      out.data_ptr(), kernel_threads(g.numel()))
    return out


class _LibraEDE(torch.autograd.Function):
    """IR-Net's weight ``s·sign(Ŵ)``, Ŵ = (W − mean)/std per output channel, with the EDE gradient
    through Ŵ and the standardisation (s detached). Backward folds s, k, t and 1/std into one per-row
    factor: ``tanh_backward(g·s·k·t/std, tanh(t·Ŵ))``, then :func:`standardize_backward`. On float32
    CPU weights both run natively (:func:`_native_standardize`), the same formulas row by row."""

    @staticmethod
    def forward(ctx, w: Tensor, k: Tensor, t: Tensor) -> Tensor:
        ctx.shape, ctx.native = w.shape, _native(w)
        if ctx.native:
            ctx.t = float(t)
            balanced, out, balanced_mean, factor, varies, _ = _native_standardize(_LIBRA, w, float(k), ctx.t)
            ctx.save_for_backward(balanced, balanced_mean, factor, varies)
            return out.reshape(w.shape)
        centred, sq = centred_rows(w)
        n = centred.shape[1]
        if n > 1:
            var = sq / (n - 1)
            varies = var > 0
            std = torch.sqrt(torch.where(varies, var, torch.ones_like(var)))
        else:
            varies, std = torch.zeros_like(sq, dtype=torch.bool), torch.ones_like(sq)
        balanced = centred.div_(std)
        scale = torch.pow(2.0, torch.round(torch.log2(balanced.abs().mean(dim=1, keepdim=True))))
        ctx.save_for_backward(balanced, balanced.mean(dim=1, keepdim=True), scale * k * t / std,
                              varies.to(w.dtype), t)
        return sign(balanced).mul_(scale).reshape(w.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.native:
            balanced, balanced_mean, factor, varies = ctx.saved_tensors
            dof = max(balanced.shape[1] - 1, 1)
            gw = _native_standardize_backward(_EDE_GRAD, grad, balanced, balanced_mean, factor, varies, ctx.t, dof)
            return gw.reshape(ctx.shape), None, None
        balanced, balanced_mean, factor, varies, t = ctx.saved_tensors
        grad_s = torch.ops.aten.tanh_backward(grad.reshape(balanced.shape) * factor, torch.tanh(t * balanced))
        dof = max(balanced.shape[1] - 1, 1)
        return standardize_backward(grad_s, balanced, balanced_mean, dof, varies).reshape(ctx.shape), None, None


def libra_ede(w: Tensor, k: Tensor, t: Tensor) -> Tensor:
    """IR-Net's binary weight ``s·sign(Ŵ)`` (Libra-PB, :func:`onebit.methods.irnet.libra_pb`) with the
    EDE gradient ``k·t·(1 − tanh²(t·Ŵ))`` through Ŵ and its standardisation, as one autograd.Function
    (``k``, ``t`` and the power-of-two scale ``s`` detached)."""
    return _LibraEDE.apply(w, k.detach(), t.detach())


class _SineWave(torch.autograd.Function):
    """``sin(ω·W)`` (or ``sign(sin(ω·W))`` with the identity STE through the sign), its gradient
    ``(g·cos(ω·W))·ω`` — autograd's chain through the product and the sine — in one native pass; only
    ``W`` is kept (autograd would keep the product ω·W as well)."""

    @staticmethod
    def forward(ctx, w: Tensor, omega: float, binary: bool) -> Tensor:
        ctx.save_for_backward(w)
        ctx.omega = omega
        wave = torch.sin(omega * w)
        return sign(wave) if binary else wave

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (w,) = ctx.saved_tensors
        return _native_surrogate(_SINE_GRAD, grad, w, ctx.omega), None, None


def sine_wave(w: Tensor, omega: float, binary: bool) -> Tensor:
    """BiPer's weight (Vargas et al., CVPR 2024): ``sin(ω·W)``, or with ``binary`` the square wave
    ``sign(sin(ω·W))`` with the sine's gradient (identity STE through the sign). On float32 CPU weights
    the backward is one native pass (:class:`_SineWave`); the values are torch's either way."""
    if _native(w):
        return _SineWave.apply(w, float(omega), bool(binary))
    wave = torch.sin(omega * w)
    return sign_identity_ste(wave) if binary else wave


class _ScaledSwish(torch.autograd.Function):
    """:func:`scaled_sign_swish` on float32 CPU weights: forward and backward one native pass each
    (train_quantizers.h ``swish_weight``); keeps W and α only."""

    @staticmethod
    def forward(ctx, w: Tensor, alpha: Tensor | None, beta: float, kind: int) -> Tensor:
        rows = w.detach().reshape(w.shape[0], -1).contiguous()
        scale = None if alpha is None else alpha.detach().reshape(-1).to(torch.float32).contiguous()
        out = torch.empty_like(rows)
        _engine.swish_weight(kind, rows.data_ptr(), rows.shape[0], rows.shape[1],
                             data_address(scale), beta, out.data_ptr(),
                             kernel_threads(rows.numel()))
        ctx.save_for_backward(rows, scale)
        ctx.beta, ctx.shape = beta, w.shape
        return out.reshape(w.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        _once_differentiable()
        rows, scale = ctx.saved_tensors
        g = grad.reshape(rows.shape).contiguous()
        out = torch.empty_like(rows)
        _engine.swish_weight_backward(g.data_ptr(), rows.data_ptr(), rows.shape[0], rows.shape[1],
                                      data_address(scale), ctx.beta, out.data_ptr(),
                                      kernel_threads(g.numel()))
        return out.reshape(ctx.shape), None, None, None


_SWISH_VALUES = {"swish": 0, "sign_swish": 1, "sign": 2}  # train_quantizers.h SwishWeightKind


def scaled_sign_swish(w: Tensor, alpha: Tensor | None, beta: Tensor | float, value: str) -> Tensor:
    """``sign_swish_ste(w/α, β, value)·α`` (α a detached per-output-channel scale shaped to broadcast,
    or None for α = 1): PC++'s SignSwish weight quantizer (BNN++, PC++ BNN+). On float32 CPU weights
    its forward and backward are one native pass each, row by row (:class:`_ScaledSwish`): the sign
    values bit for bit, the SignSwish value and the gradients within float rounding of torch's (the
    sigmoid is the kernels' approximation, at most 3 ulp)."""
    if value not in _SWISH_VALUES:
        raise ValueError(f"scaled_sign_swish: value={value!r}; use 'swish', 'sign_swish' or 'sign'")
    if _native(w) and w.dim() > 1 and (alpha is None or alpha.numel() == w.shape[0]):
        return _ScaledSwish.apply(w, alpha, float(beta), _SWISH_VALUES[value])
    u = w if alpha is None else w / alpha
    q = sign_swish_ste(u, beta, value)
    return q if alpha is None else q * alpha


class _RecuWeight(torch.autograd.Function):
    """ReCU's weight ``sign(clamp(W1, ±Q_τ))``, W1 = (W − mean)/(std/(2√2)) per output channel
    (std = sqrt(unbiased var + ε)), Q_τ = −mean|W1|·ln(2 − 2τ) detached; clamp's gradient, then the
    standardisation's. Forward keeps clamp's window ``1{|W1| ≤ Q_τ}`` already divided by the per-row
    divisor, so backward's first pass is one product."""

    @staticmethod
    def forward(ctx, w: Tensor, tau: Tensor, eps: float) -> Tensor:
        ctx.shape, ctx.native = w.shape, _native(w)
        if ctx.native:
            return _RecuWeight.native_forward(ctx, w, tau, eps)
        centred, sq = centred_rows(w)
        n = centred.shape[1]
        dof = n - 1 if n > 1 else 1
        std = torch.sqrt(sq / dof + eps) / (2 * math.sqrt(2))
        w1 = centred.div_(std)
        magnitude = w1.abs()
        q_tau = -magnitude.mean() * torch.log(2 - 2 * tau)
        # For Q_τ > 0 the clamp keeps every sign (−0.0 included): sign(W1) without it (a clamp with
        # tensor bounds costs ~6 passes on CPU). Read on CPU only, where .item() does not synchronise.
        positive = q_tau.device.type == "cpu" and q_tau.item() > 0
        clamped = w1 if positive else w1.clamp(-q_tau, q_tau)
        # |W1| ≤ Q_τ is clamp's window −Q_τ ≤ W1 ≤ Q_τ, boundary included (and empty for Q_τ < 0).
        window = torch.le(magnitude, q_tau, out=magnitude).div_(std)
        ctx.save_for_backward(w1, w1.mean(dim=1, keepdim=True), window)
        ctx.dof = dof
        return sign(clamped).reshape(w.shape)

    @staticmethod
    def native_forward(ctx, w: Tensor, tau: Tensor, eps: float) -> Tensor:
        """The same, natively: W1, sign(W1), its row means, 1/divisor and Σ|W1| per row in one pass;
        backward applies the window |W1| ≤ Q_τ itself (nothing but W1 kept)."""
        w1, out, w1_mean, inverse, through, abs_sum = _native_standardize(_RECU, w, eps=eps)
        q_tau = -(abs_sum.sum() / w1.numel()) * torch.log(2 - 2 * tau.to(w1.dtype))
        ctx.q = float(q_tau)
        if not ctx.q > 0:  # clamp changes signs (Q_τ ≤ 0: every weight pinned to Q_τ)
            out = sign(w1.clamp(-q_tau, q_tau))
        ctx.save_for_backward(w1, w1_mean, inverse, through)
        n = w1.shape[1]
        ctx.dof = n - 1 if n > 1 else 1
        return out.reshape(w.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.native:
            w1, w1_mean, inverse, through = ctx.saved_tensors
            gw = _native_standardize_backward(_WINDOW_GRAD, grad, w1, w1_mean, inverse, through, ctx.q, ctx.dof * 8)
            return gw.reshape(ctx.shape), None, None
        w1, w1_mean, window = ctx.saved_tensors
        grad_s = grad.reshape(w1.shape) * window
        # W1 = c·2√2/sqrt(v + ε): the z of standardize_backward with std/(2√2) as its divisor.
        return standardize_backward(grad_s, w1, w1_mean, ctx.dof * 8, True).reshape(ctx.shape), None, None


def recu_weight(w: Tensor, tau: Tensor, eps: float) -> Tensor:
    """ReCU's binary weight (Xu et al., ICCV 2021, Eq. 11–13) as one autograd.Function: per output
    channel standardisation, the detached Q_τ, ``sign(clamp(W1, −Q_τ, Q_τ))`` with clamp's gradient
    ``1{−Q_τ ≤ W1 ≤ Q_τ}`` flowing back through the standardisation."""
    return _RecuWeight.apply(w, tau.detach(), eps)


# --------------------------------------------------------------------------------------------------
# The quantizer fused with the layer's product
# --------------------------------------------------------------------------------------------------
def _product(kind: str, xq: Tensor, weight: Tensor, conv: tuple) -> Tensor:
    if kind == "linear":
        return F.linear(xq, weight)
    op = F.conv1d if kind == "conv1d" else F.conv2d
    return op(xq, weight, None, *conv)


def _product_backward(kind: str, grad: Tensor, xq: Tensor, weight: Tensor, conv: tuple,
                      needs: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
    if kind == "linear":
        gx = grad.matmul(weight) if needs[0] else None
        gw = grad.reshape(-1, grad.shape[-1]).t().mm(xq.reshape(-1, xq.shape[-1])) if needs[1] else None
        return gx, gw
    stride, padding, dilation, groups = conv
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad, xq, weight, None, list(stride), list(padding), list(dilation), False, [0] * len(stride), groups,
        [needs[0], needs[1], False],
    )
    return gx, gw


def _scale_views(kind: str, ndim: int, scales: tuple[Tensor | None, ...]) -> list[Tensor]:
    """The output scale factors shaped to broadcast against the product's output: the channel factor
    over dim 1 (the last dim for linear), the spatial ones over dims 2, 3."""
    views = []
    for i, factor in enumerate(scales):
        if factor is None:
            continue
        if kind == "linear":
            views.append(factor)
            continue
        shape = [1] * ndim
        shape[1 + i] = -1
        views.append(factor.reshape(shape))
    return views


def _per_out_channel(v: Tensor, weight: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (weight.dim() - 1))


class _QuantizedProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, channel: Tensor | None, height: Tensor | None,
                width: Tensor | None, kind: str, conv: tuple, quantizer: type, *args: Any) -> Tensor:
        ctx.kind, ctx.conv, ctx.quantizer, ctx.args, ctx.dtype = kind, conv, quantizer, args, x.dtype
        ctx.packed = hasattr(quantizer, "pack")
        if ctx.packed:  # one int8 per element holds all that backward needs (clip / identity STE)
            code = quantizer.pack(x, *args)
            xq, _ = quantizer.unpack(code, x.dtype, *args, need_input=False)
            first = code
        else:
            xq, kept = quantizer.value(x, *args)
            # A quantizer whose kept tensors hold all that backward needs (HBNN's value) keeps
            # those instead of the input; one that can rebuild them cheaply from the input (ReCU's
            # standardised input from x and σ) keeps the input and the small ones.
            first, kept = kept_for_backward(quantizer, x, kept)
        y = _product(kind, xq, weight, conv)
        views = _scale_views(kind, y.dim(), (channel, height, width))
        ctx.spatial = height is not None
        # A per-channel factor alone needs no saved output (its gradient comes from the weight
        # gradient, see backward); spatial factors need the unscaled product, kept once.
        # The weight-gradient route for the channel factor costs weight-sized temporaries; where the
        # output is smaller than the weight (a linear layer on a small batch) keeping it is cheaper.
        ctx.via_output = channel is not None and not ctx.spatial and y.numel() < weight.numel()
        keep_output = ctx.spatial or ctx.via_output
        fused = _native_spatial_scale(kind, y, channel, height, width,
                                      _compactable(y, weight, ctx.packed, args)) if ctx.spatial else None
        if fused is not None:  # Γ's products and the int16 copy in one native pass, the same values
            out, kept_output = fused
        else:
            out = y.mul(views[0]) if keep_output else (y.mul_(views[0]) if views else y)
            for view in views[1:]:
                out.mul_(view)  # the order of scale_output's products: bit-identical values
            kept_output = _compact_product(y, xq, weight, ctx.packed, args) if keep_output else None
        scales = [t for t in (channel, height, width)]
        ctx.has = [t is not None for t in scales]
        extra = [t for t in scales if t is not None] + ([kept_output] if keep_output else [])
        ctx.save_for_backward(first, weight, *extra, *([] if ctx.packed else kept))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        first, weight, *rest = ctx.saved_tensors
        scales: list[Tensor | None] = [rest.pop(0) if has else None for has in ctx.has]
        y = rest.pop(0) if ctx.spatial or ctx.via_output else None
        kept = tuple(rest)
        if ctx.packed:
            xq, x = ctx.quantizer.unpack(first, ctx.dtype, *ctx.args)
        else:  # recomputed: a few elementwise passes instead of a stored float copy
            x = first
            if hasattr(ctx.quantizer, "from_kept"):
                xq, kept = ctx.quantizer.from_kept(first, kept), (first, *kept)
            elif hasattr(ctx.quantizer, "restore"):
                xq, kept = ctx.quantizer.restore(x, kept, *ctx.args)
            else:
                xq, _ = ctx.quantizer.value(x, *ctx.args)
        grad = grad.contiguous()
        channel, height, width = scales
        needs = ctx.needs_input_grad
        need_gx = _needs_input_grad(ctx.quantizer, needs[0], needs[8:])
        grads_scale: list[Tensor | None] = [None, None, None]
        if ctx.spatial:
            grad, grads_scale[1:] = _spatial_backward(ctx.kind, grad, y, channel, height, width, needs[3:5])
        if ctx.via_output:  # y·c with y kept: autograd's own route
            view = _scale_views(ctx.kind, y.dim(), (channel,))[0]
            if needs[2]:
                grads_scale[0] = (grad * y).sum_to_size(view.shape).reshape(channel.shape)
            grad, channel = grad * view, None
        # y·c per output channel is the product with the weight scaled by c, so the product's
        # gradients are taken once with the unscaled grad: ∂/∂x through W·c, ∂/∂W = c·G, and
        # ∂/∂c = Σ G·W with G the weight gradient of the unscaled product — no pass over the output.
        w_eff = weight if channel is None else weight * _per_out_channel(channel, weight)
        need_gw = needs[1] or (channel is not None and needs[2])
        gxq, gw = _product_backward(ctx.kind, grad, xq, w_eff, ctx.conv, (need_gx, need_gw))
        if channel is not None and gw is not None:
            if needs[2]:
                grads_scale[0] = (gw * weight).reshape(weight.shape[0], -1).sum(1).reshape(channel.shape)
            gw = gw.mul_(_per_out_channel(channel, weight)) if needs[1] else None
        gx = None if gxq is None else ctx.quantizer.grad(gxq, x, kept, *ctx.args)
        grads_args = _arg_grads(ctx.quantizer, gx, needs[8:], ctx.args)
        return (gx if needs[0] else None, gw, *grads_scale, None, None, None) + grads_args


def _compact_product(y: Tensor, xq: Tensor, weight: Tensor, packed: bool, args: tuple) -> Tensor:
    """The unscaled product as backward keeps it: as int16 when it is exactly an integer that fits
    (±1 activations from an unscaled packed quantizer, ±1 weights, fan-in < 2¹⁵: every output is an
    exact sum of ±1 terms), else the float tensor itself."""
    return y.to(torch.int16) if _compactable(y, weight, packed, args) else y


def _compactable(y: Tensor, weight: Tensor, packed: bool, args: tuple) -> bool:
    """Whether :func:`_compact_product` keeps ``y`` as int16 (see there)."""
    fan_in = weight[0].numel()
    if not packed or any(a is not None for a in args) or fan_in >= 2**15 or y.numel() < weight.numel():
        return False  # (an output smaller than the weight: the ±1 check would cost more than it saves)
    return bool(weight.detach().abs().eq(1).all())


def _spatial_layout(kind: str, y: Tensor, height: Tensor, width: Tensor | None) -> tuple[int, int, int, int] | None:
    """(N, C, H, W) of a conv output for the spatial-scale kernels (conv1d: W = 1, no width), or None."""
    if kind == "conv2d" and width is not None and y.dim() == 4:
        return tuple(y.shape)
    if kind == "conv1d" and width is None and y.dim() == 3:
        return (*y.shape, 1)
    return None


def _native_spatial_scale(kind: str, y: Tensor, channel: Tensor | None, height: Tensor, width: Tensor | None,
                          compact: bool) -> tuple[Tensor, Tensor] | None:
    """``((y·c)·h)·w`` (XNOR-Net++'s Γ, torch's order of products: the same bits) and what backward
    keeps of ``y`` (its int16 copy where ``compact``, else ``y``) in one native pass
    (``spatial_scale``, csrc/train_activations.h); None where the kernel does not take the tensors."""
    layout = _spatial_layout(kind, y, height, width)
    factors = [t for t in (channel, height, width) if t is not None]
    if (layout is None or channel is None or not hasattr(_activation_engine, "spatial_scale")
            or not y.is_contiguous() or not native_activations(y, *factors)):
        return None
    c, h = channel.detach().contiguous(), height.detach().contiguous()
    w = None if width is None else width.detach().contiguous()
    code = torch.empty(y.shape, dtype=torch.int16) if compact else None
    # With the int16 code kept, y itself is not: scale it in place (no second output-sized tensor; an
    # engine that says so takes the code before it scales), else y is kept and a new tensor scaled.
    in_place = compact and getattr(_activation_engine, "spatial_scale_in_place", False)
    out = y if in_place else torch.empty_like(y)
    _activation_engine.spatial_scale(y.data_ptr(), c.data_ptr(), h.data_ptr(), data_address(w),
                                     *layout, out.data_ptr(), data_address(code),
                                     torch.get_num_threads())
    return out, (y if code is None else code)


def _native_spatial_grad(grad: Tensor, y: Tensor, height: Tensor, width: Tensor | None
                         ) -> tuple[Tensor, Tensor] | None:
    """``grad·(h ⊗ w)`` (bit for bit) and ``Σ_n grad·y`` (in double) in one native pass
    (``spatial_scale_backward``), or None where the kernel does not take the tensors."""
    layout = _spatial_layout("conv2d" if width is not None else "conv1d", grad, height, width)
    if (layout is None or not hasattr(_activation_engine, "spatial_scale_backward") or y.shape != grad.shape
            or y.dtype not in (torch.float32, torch.int16) or not y.is_contiguous() or y.device.type != "cpu"
            or not native_activations(grad, height, *(() if width is None else (width,)))):
        return None
    g = grad.contiguous()
    h = height.detach().contiguous()
    w = None if width is None else width.detach().contiguous()
    out = torch.empty_like(g)
    per_sample = torch.empty(g.shape[1:], dtype=g.dtype)
    is_code = y.dtype == torch.int16
    _activation_engine.spatial_scale_backward(
        g.data_ptr(), 0 if is_code else y.data_ptr(), y.data_ptr() if is_code else 0, h.data_ptr(),
        data_address(w), *layout, out.data_ptr(), per_sample.data_ptr(), torch.get_num_threads())
    return out, per_sample


def _spatial_backward(kind: str, grad: Tensor, y: Tensor, channel: Tensor | None, height: Tensor,
                      width: Tensor | None, needs: tuple[bool, bool]) -> tuple[Tensor, list[Tensor | None]]:
    """The spatial factors of ``y·c·h·w``: the product's gradient without c (``g·h·w``) and the
    gradients of h and w from ``S = Σ_n g·y`` (one pass over the output)."""
    spatial = height if width is None else height.unsqueeze(1) * width  # (H,) or (H, W)
    native = _native_spatial_grad(grad, y, height, width)  # g·spatial and S in one pass
    per_sample = (grad * y).sum(0) if native is None else native[1]  # S: (C, *spatial)
    weighted = per_sample if channel is None else per_sample * channel.reshape((-1,) + (1,) * spatial.dim())
    grad_spatial = weighted.sum(0)  # ∂L/∂(h⊗w)
    grad_h = grad_w = None
    if width is None:
        grad_h = grad_spatial if needs[0] else None
    else:
        grad_h = (grad_spatial * width).sum(1) if needs[0] else None
        grad_w = (grad_spatial * height.unsqueeze(1)).sum(0) if needs[1] else None
    return (grad * spatial if native is None else native[0]), [grad_h, grad_w]


def quantized_product(call: QuantizerCall, weight: Tensor, kind: str, conv: tuple = (),
                      scales: tuple[Tensor, ...] = ()) -> Tensor:
    """``F.linear`` / ``F.conv1d`` / ``F.conv2d`` (``kind`` "linear", "conv1d", "conv2d"; ``conv`` =
    (stride, padding, dilation, groups)) of the quantized input ``call`` and ``weight``, as one
    autograd.Function that keeps no float copy of the binary input: it keeps one int8 per element
    when the quantizer can say all it needs in one (``pack``/``unpack``: the clip and identity STEs),
    else the real input (what the full-precision layer keeps), and recomputes the binary input in
    backward. ``scales`` (:meth:`onebit.methods.Method.output_scale_factors`) multiply the output
    in the method's order: a per-output-channel factor costs one in-place pass and nothing in
    backward (its gradient is read off the weight gradient); spatial factors (XNOR-Net++'s h, w)
    keep the unscaled product once. Values are those of ``product(call.apply(), weight)`` times the
    factors; gradients equal within float rounding (the products are taken in another order)."""
    if len(scales) > 3 or (kind == "linear" and len(scales) > 1):
        raise ValueError(f"quantized_product: {len(scales)} output scale factors for a {kind} product")
    channel, height, width = (tuple(scales) + (None, None, None))[:3]
    return _QuantizedProduct.apply(call.x, weight, channel, height, width, kind, tuple(conv), call.quantizer,
                                   *call.args)
