"""Packed 1-bit inference kernels (Python API over the C++ engine ``onebit._engine``).

Conventions
-----------
* Sign: a real value ``v`` maps to +1 if ``v >= 0`` else -1 (``sign(0) = +1``, as Larq/LCE).
  In packed form **bit 1 means -1, bit 0 means +1**. NaN has no sign: the bit ``(v + t) < 0`` is
  false, so NaN packs as +1 without a word; these kernels do not check (it would cost a pass per
  layer), :class:`~onebit.deploy.PackedModel` checks its input once (:mod:`onebit.deploy._finite`).
* Activations are packed along the channel axis into 64-bit words (bit ``c % 64`` of word
  ``c // 64``), pixels in NHWC order: a :class:`PackedActivations` holds an int64 tensor of
  shape ``(N, H, W, ceil(C/64))`` (conv) or ``(N, ceil(K/64))`` (linear).  Tail bits of the last
  word are zero; every function here produces zero tails and the kernels rely on it.
* Weights are packed once (at export) by :func:`pack_weights` / :func:`pack_weight_planes` into
  the kernel layout ``(planes, ceil(Cout/32), kh, kw, ceil(Cin/64), 32)`` int64 (blocks of 32
  output channels innermost), plus small per-channel correction tables.  Depthwise weights
  (``groups == Cin == Cout``, weight ``(C, 1, kh, kw)``, packed with ``groups=C``) become a
  :class:`PackedDepthwiseWeights`: per tap one row of sign words in the activation layout.
* A binary convolution computes ``acc[n,o,h,w] = sum_{c,i,j} sx * sw`` with ``sx`` the input sign,
  or ``pad_value`` (-1, 0 or +1) at padded positions (``pad_value=0``: padded taps contribute
  nothing).  Multi-bit (bit-serial) weights ``w = sum_j mu_j * m_j * b_j`` give
  ``acc = sum_j mu_j * sum m_j * sx * b_j``.
* The fused :class:`OutputTransform` then computes ``y = scale * acc + bias`` (folded BatchNorm),
  optionally ``+ residual`` (a channels_last shortcut tensor, float output), optional PReLU
  (``y < 0 -> slope * y``), optional clamp, and returns either float32, or the re-binarized bits
  ``(y + threshold) < 0`` of the next binary layer, or (``also_bits``) both.
* :func:`binary_conv2d` checks every argument at each call; :class:`PreparedConv2d` binds a
  layer's weights, geometry and transform once and checks only the input per call (what an
  exported model's layers run).

Kernel paths: ``portable`` (plain C++ for the baseline ISA, SWAR popcount), ``popcnt`` (the same
plain C++ with the scalar POPCNT instruction of x86-64-v2), ``avx2`` (vpshufb nibble LUT) and
``avx512`` (AVX-512 VPOPCNTDQ), chosen at run time: :func:`set_kernel` wins, else the
``ONEBIT_KERNEL`` environment variable (read at every call), else the fastest one the CPU has.
``reference`` (``csrc/isa_reference.cpp``) is selectable the same way but never chosen on its own:
the slow value-by-value definition (no blocking, tables or precomputed corrections) that every other
path must reproduce bit for bit, conv and depthwise; it is not in :data:`KERNELS`.
The engine has its own thread count (:func:`set_num_threads`; default ``torch.get_num_threads()``).
Its work runs on torch's OpenMP team where the process has torch's libgomp loaded (Linux wheels),
so torch's spinning idle workers and the engine's never compete for cores; elsewhere, or with
``ONEBIT_THREADS=own``, on a small pool of the engine's own.

The ``reference_*`` functions are deliberately slow float64 torch implementations that work on
unpacked +-1 tensors; they are the test oracle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from onebit import _engine
from onebit.errors import OnebitError

from .errors import UnsupportedLayerError

__all__ = [
    "KERNELS",
    "KernelUnavailableError",
    "OutputTransform",
    "PackedActivations",
    "PackedDepthwiseWeights",
    "PackedWeights",
    "PreparedConv2d",
    "active_kernel",
    "available_kernels",
    "binary_conv2d",
    "binary_linear",
    "epilogue_torch",
    "get_num_threads",
    "pack_activations",
    "pack_weight_planes",
    "pack_weights",
    "popcount_peak",
    "reference_binary_conv2d",
    "reference_binary_linear",
    "set_kernel",
    "set_num_threads",
    "unpack_activations",
]

# The engine's production kernel paths, slowest first, as it numbers them (their names are defined
# once, in csrc/engine.h); the reference path comes after them and is only chosen by name.
KERNELS: tuple[str, ...] = tuple(_engine.KERNEL_NAMES)
REFERENCE_KERNEL: str = str(_engine.REFERENCE_KERNEL)
_REFERENCE_ID = int(_engine.REFERENCE_KERNEL_ID)
_BLOCK = int(_engine.BLOCK)  # output channels per weight block (32)
_ENV = "ONEBIT_KERNEL"


class KernelUnavailableError(OnebitError, RuntimeError):
    """A kernel path was requested that this CPU (or this build) cannot run."""


# --------------------------------------------------------------------------------------------
# kernel selection and threads
# --------------------------------------------------------------------------------------------

_forced_kernel: int | None = None  # the engine's id of the kernel set_kernel chose
_num_threads: int | None = None
_BEST_KERNEL: int = max(i for i in range(len(KERNELS)) if _engine.cpu_supports(i))


def available_kernels() -> list[str]:
    """Kernel paths this CPU supports, slowest first."""
    return [name for i, name in enumerate(KERNELS) if _engine.cpu_supports(i)]


def _check_kernel(name: object, source: str) -> int:
    if isinstance(name, str) and name.lower() == REFERENCE_KERNEL:
        return _REFERENCE_ID
    if not isinstance(name, str) or name.lower() not in KERNELS:
        raise ValueError(f"{source}: unknown kernel {name!r}; valid values are {', '.join(KERNELS)} "
                         f"(and {REFERENCE_KERNEL!r}, the slow path every other one is checked against)")
    kid = KERNELS.index(name.lower())
    if not _engine.cpu_supports(kid):
        raise KernelUnavailableError(
            f"{source}: kernel {name!r} is not supported by this CPU "
            f"(supported: {', '.join(available_kernels())})"
        )
    return kid


def set_kernel(name: str | None) -> None:
    """Force a kernel path (``'portable'``, ``'popcnt'``, ``'avx2'``, ``'avx512'``, or ``'reference'``, the
    value-by-value definition the others are tested against) or ``None`` for automatic.

    Raises ValueError for an unknown name and KernelUnavailableError if the CPU lacks the ISA.
    A forced kernel takes precedence over the ``ONEBIT_KERNEL`` environment variable.
    """
    global _forced_kernel
    if name is None:
        _forced_kernel = None
        return
    _forced_kernel = _check_kernel(name, "set_kernel")


# os.environ.get costs ~0.7 us, a sixth of a small layer's Python time per call; CPython's
# os.environ keeps its values in the `_data` dict (encoded keys), which is read in ~0.04 us and
# sees every change made through os.environ (as os.environ.get does).
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(_ENV) if _ENV_DATA is not None and hasattr(os.environ, "encodekey") else None


def _kernel_env() -> str | None:
    if _ENV_KEY is None:
        return os.environ.get(_ENV)
    raw = _ENV_DATA.get(_ENV_KEY)
    return None if raw is None else os.environ.decodevalue(raw)


def _kernel_id() -> int:
    if _forced_kernel is not None:
        return _forced_kernel
    env = _kernel_env()
    if env is not None and env.strip() != "":
        return _check_kernel(env.strip(), f"environment variable {_ENV}={env!r}")
    return _BEST_KERNEL


def active_kernel() -> str:
    """Name of the kernel path the next call will use (see module docstring for the rules)."""
    kid = _kernel_id()
    return REFERENCE_KERNEL if kid == _REFERENCE_ID else KERNELS[kid]


def set_num_threads(n: int | None) -> None:
    """Set the engine's own thread count (``None``: follow ``torch.get_num_threads()``)."""
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1 or None, got {n!r}")
    _num_threads = n


def get_num_threads() -> int:
    """Thread count used by the engine's kernels."""
    return _num_threads if _num_threads is not None else max(1, torch.get_num_threads())


def popcount_peak(kernel: str | None = None, iterations: int = 20_000_000, threads: int = 1) -> float:
    """Register-only xor+popcount+accumulate throughput of a kernel path, on one thread or on
    ``threads`` threads of the engine's team at once (each runs ``iterations``).

    Returns binary operations (bits, i.e. binary MACs) per second, all threads together.  Used by
    the benchmark to express kernel throughput as a fraction of what the instruction mix can reach
    at all, and the kernels' multi-thread speedup beside the speedup the hardware gives this loop.
    """
    kid = _kernel_id() if kernel is None else _check_kernel(kernel, "popcount_peak")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"popcount_peak: threads must be an int >= 1, got {threads!r}")
    return float(_engine.popcount_peak(kid, int(iterations), threads))


# --------------------------------------------------------------------------------------------
# data containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PackedActivations:
    """Sign bits of an activation tensor.

    ``data``: int64, ``(N, H, W, ceil(C/64))`` for conv activations or ``(N, ceil(C/64))`` for
    linear ones; ``channels``: C.  Bit 1 = -1.  Tail bits are zero.
    """

    data: torch.Tensor
    channels: int

    def __post_init__(self) -> None:
        d = self.data
        if not isinstance(d, torch.Tensor):
            raise TypeError(f"PackedActivations.data must be a torch.Tensor, got {type(d).__name__}")
        if d.dtype not in (torch.int64, torch.uint64):
            raise TypeError(f"PackedActivations.data must be int64 (or uint64), got {d.dtype}")
        if d.dim() not in (2, 4):
            raise ValueError(f"PackedActivations.data must be 2-D or 4-D, got shape {tuple(d.shape)}")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"PackedActivations.channels must be an int >= 1, got {self.channels!r}")
        if d.shape[-1] != _words(self.channels):
            raise ValueError(
                f"PackedActivations: {self.channels} channels need {_words(self.channels)} words, "
                f"data has {d.shape[-1]} (shape {tuple(d.shape)})"
            )

    @classmethod
    def _trusted(cls, data: torch.Tensor, channels: int) -> PackedActivations:
        """Wraps an engine output, which is valid by construction, without re-validating it
        (the checks cost about a microsecond, a tenth of a small layer's call)."""
        obj = object.__new__(cls)
        fields = obj.__dict__  # (the frozen dataclass's fields, set without its __setattr__ guard)
        fields["data"] = data
        fields["channels"] = channels
        return obj

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape of the unpacked tensor: (N, C, H, W) or (N, C)."""
        d = self.data
        if d.dim() == 4:
            return (d.shape[0], self.channels, d.shape[1], d.shape[2])
        return (d.shape[0], self.channels)


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Binary or multi-bit (bit-serial) weights in the kernel layout.

    ``bits``/``masks``: int64 ``(J, ceil(Cout/32), kh, kw, ceil(Cin/64), 32)`` (masks may be None:
    all weights active).  ``base``: int32 ``(J, Cout)`` number of active weight bits over all taps;
    ``wsum``: int32 ``(J, Cout, kh*kw)`` sum of active weight signs per tap (for 0 padding);
    ``scales``: float32 ``(J, Cout)`` per-plane scales mu_j.
    """

    bits: torch.Tensor
    masks: torch.Tensor | None
    base: torch.Tensor
    wsum: torch.Tensor
    scales: torch.Tensor
    out_channels: int
    in_channels: int
    kernel_size: tuple[int, int]
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_planes(self) -> int:
        return int(self.bits.shape[0])

    def engine_weights(self) -> _engine.Weights:
        """The engine-owned copy of these weights (built once, cached)."""
        h = self._cache.get("engine")
        if h is None:
            h = _engine.Weights(
                self.bits.contiguous(),
                None if self.masks is None else self.masks.contiguous(),
                self.base.to(torch.int32).contiguous(),
                self.wsum.to(torch.int32).contiguous(),
                self.scales.to(torch.float32).contiguous(),
                int(self.in_channels),
                int(self.out_channels),
            )
            self._cache["engine"] = h
        return h


@dataclass(frozen=True, eq=False)
class PackedDepthwiseWeights:
    """Binary or multi-bit depthwise weights (``groups == in_channels == out_channels = C``).

    Built by :func:`pack_weights` / :func:`pack_weight_planes` with ``groups=C`` from a
    ``(C, 1, kh, kw)`` weight.  ``bits``/``masks``: int64 ``(J, kh*kw, ceil(C/64))``, per plane and
    tap the weight signs of all channels in the activation layout (bit ``c % 64`` of word
    ``c // 64``, bit 1 = -1, tail bits zero); masks may be None (all weights active).
    ``scales``: float32 ``(J, C)`` per-plane scales mu_j.
    """

    bits: torch.Tensor
    masks: torch.Tensor | None
    scales: torch.Tensor
    channels: int
    kernel_size: tuple[int, int]
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_planes(self) -> int:
        return int(self.bits.shape[0])

    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def out_channels(self) -> int:
        return self.channels

    @property
    def groups(self) -> int:
        return self.channels

    def engine_weights(self) -> _engine.DepthwiseWeights:
        """The engine-owned copy of these weights (built once, cached)."""
        h = self._cache.get("engine")
        if h is None:
            h = _engine.DepthwiseWeights(
                self.bits.contiguous(),
                None if self.masks is None else self.masks.contiguous(),
                self.scales.to(torch.float32).contiguous(),
                int(self.channels),
                int(self.kernel_size[0]),
                int(self.kernel_size[1]),
            )
            self._cache["engine"] = h
        return h


@dataclass(frozen=True, eq=False)
class OutputTransform:
    """Fused per-output-channel epilogue of a binary layer.

    ``y = scale * acc + bias``; then ``y = where(y < 0, prelu * y, y)`` if ``prelu`` is given;
    then ``clamp(y, clamp_min, clamp_max)``.  ``output='float'`` returns float32 ``y``;
    ``output='bits'`` returns :class:`PackedActivations` with bit = ``(y + threshold) < 0``.
    ``scale``, ``bias``, ``prelu``, ``threshold`` are None, a number, or a ``(Cout,)`` tensor.
    """

    scale: torch.Tensor | float | None = None
    bias: torch.Tensor | float | None = None
    prelu: torch.Tensor | float | None = None
    clamp_min: float | None = None
    clamp_max: float | None = None
    output: str = "float"
    threshold: torch.Tensor | float | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.output not in ("float", "bits"):
            raise ValueError(f"OutputTransform.output must be 'float' or 'bits', got {self.output!r}")
        if self.threshold is not None and self.output != "bits":
            raise ValueError("OutputTransform.threshold only applies to output='bits'")
        for name in ("clamp_min", "clamp_max"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or math.isnan(v)):
                raise ValueError(f"OutputTransform.{name} must be a number (not NaN) or None, got {v!r}")

    def resolved(self, cout: int) -> dict:
        """The per-channel float32 vectors for ``cout`` output channels (cached)."""
        r = self._cache.get(cout)
        if r is None:
            r = {
                "scale": _channel_vec(self.scale, cout, 1.0, "scale"),
                "bias": _channel_vec(self.bias, cout, 0.0, "bias"),
                "prelu": None if self.prelu is None else _channel_vec(self.prelu, cout, 0.0, "prelu"),
                "threshold": None
                if self.threshold is None
                else _channel_vec(self.threshold, cout, 0.0, "threshold"),
                "clamp_min": -math.inf if self.clamp_min is None else float(self.clamp_min),
                "clamp_max": math.inf if self.clamp_max is None else float(self.clamp_max),
            }
            r["engine"] = _engine.Transform(
                cout, r["scale"], r["bias"], r["prelu"], r["clamp_min"], r["clamp_max"],
                self.output == "bits", r["threshold"],
            )  # fmt: skip
            self._cache[cout] = r
        return r


_IDENTITY = OutputTransform()


def _words(c: int) -> int:
    return (c + 63) // 64


def _channel_vec(v: torch.Tensor | float | None, n: int, default: float, name: str) -> torch.Tensor:
    if v is None:
        return torch.full((n,), default, dtype=torch.float32)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return torch.full((n,), float(v), dtype=torch.float32)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"OutputTransform.{name}: expected None, a number or a tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"OutputTransform.{name}: expected a floating-point tensor, got {v.dtype}")
    if v.numel() == 1:
        return torch.full((n,), float(v.reshape(())), dtype=torch.float32)
    if v.dim() != 1 or v.shape[0] != n:
        raise ValueError(f"OutputTransform.{name}: expected shape ({n},), got {tuple(v.shape)}")
    return v.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _check_float_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise ValueError(f"{name}: the packed engine runs on CPU tensors, got device {x.device}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: expected float32, got {x.dtype}")
    return x.detach()


# --------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------


def pack_activations(x: torch.Tensor, threshold: torch.Tensor | None = None) -> PackedActivations:
    """Binarize and pack ``x`` (float32, ``(N, C, H, W)`` or ``(N, C)``): bit = ``(x + threshold) < 0``
    (so NaN packs as +1: check inputs with ``torch.isfinite`` first where they may hold NaN).

    ``threshold`` is an optional ``(C,)`` float32 tensor.  Any memory format is accepted
    (NCHW-contiguous and channels_last are read in place; others are copied first).
    """
    x = _check_float_tensor(x, "pack_activations")
    if x.dim() not in (2, 4):
        raise ValueError(f"pack_activations: expected (N, C, H, W) or (N, C), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if C < 1:
        raise ValueError("pack_activations: need at least one channel")
    thr = None
    if threshold is not None:
        thr = _check_float_tensor(threshold, "pack_activations: threshold")
        if thr.shape != (C,):
            raise ValueError(f"pack_activations: threshold must have shape ({C},), got {tuple(thr.shape)}")
        thr = thr.contiguous()
    nt = get_num_threads()
    taddr = 0 if thr is None else thr.data_ptr()
    if x.dim() == 2:
        x = x.contiguous()
        out = torch.empty((x.shape[0], _words(C)), dtype=torch.int64)
        if x.numel():
            _engine.pack_rows(x.data_ptr(), x.shape[0], C, taddr, out.data_ptr(), _kernel_id(), nt)
        return PackedActivations(out, C)
    N, _, H, W = x.shape
    out = torch.empty((N, H, W, _words(C)), dtype=torch.int64)
    if x.numel() == 0:
        return PackedActivations(out, C)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        rows = x.permute(0, 2, 3, 1).reshape(N * H * W, C)
        _engine.pack_rows(rows.data_ptr(), N * H * W, C, taddr, out.data_ptr(), _kernel_id(), nt)
    else:
        x = x.contiguous()
        _engine.pack_nchw(x.data_ptr(), N, C, H * W, taddr, out.data_ptr(), nt)
    return PackedActivations(out, C)


def unpack_activations(p: PackedActivations) -> torch.Tensor:
    """Inverse of :func:`pack_activations`: float32 +-1 tensor, ``(N, C, H, W)`` or ``(N, C)``."""
    if not isinstance(p, PackedActivations):
        raise TypeError(f"unpack_activations: expected PackedActivations, got {type(p).__name__}")
    d = p.data.view(torch.int64) if p.data.dtype == torch.uint64 else p.data
    shifts = torch.arange(64, dtype=torch.int64)
    bits = (d.unsqueeze(-1) >> shifts) & 1
    bits = bits.reshape(*d.shape[:-1], d.shape[-1] * 64)[..., : p.channels]
    vals = (1 - 2 * bits).to(torch.float32)
    if d.dim() == 4:
        vals = vals.permute(0, 3, 1, 2).contiguous()
    return vals


def _as_conv_weight(w: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor of +-1, got {w.dtype}")
    w = w.detach().cpu()
    if w.dim() == 2:
        w = w[:, :, None, None]
    if w.dim() != 4 or min(w.shape) < 1:
        raise ValueError(f"{name}: expected (Cout, Cin, kh, kw) or (Cout, Cin), got shape {tuple(w.shape)}")
    return w


def _pack_bits(neg: torch.Tensor) -> torch.Tensor:
    """bool (Cout, Cin, kh, kw) -> int64 (ceil(Cout/32), kh, kw, ceil(Cin/64), 32)."""
    cout, cin, kh, kw = neg.shape
    kwords, ncb = _words(cin), (cout + _BLOCK - 1) // _BLOCK
    b = torch.zeros((ncb * _BLOCK, kh, kw, kwords * 64), dtype=torch.bool)  # padded channels: 0 bits
    b[:cout, :, :, :cin] = neg.permute(0, 2, 3, 1)
    # channel c of a word at bit c % 64: little-endian bit order, then 8 bytes as a little-endian int64
    words = np.packbits(b.numpy(), axis=-1, bitorder="little").view("<i8").astype(np.int64, copy=False)
    words = torch.from_numpy(words).reshape(ncb, _BLOCK, kh, kw, kwords)
    return words.permute(0, 2, 3, 4, 1).contiguous()


def pack_weights(w_signs: torch.Tensor, *, groups: int = 1) -> PackedWeights | PackedDepthwiseWeights:
    """Pack binary weights ``(Cout, Cin, kh, kw)`` (conv) or ``(Cout, Cin)`` (linear).

    Signs follow the module convention (``w >= 0 -> +1``), so +-1 tensors or latent real
    weights both work.  Done once at export time.  ``groups=C`` with a ``(C, 1, kh, kw)`` weight
    packs a depthwise convolution (:class:`PackedDepthwiseWeights`); other groups are refused.
    """
    if groups != 1:
        return pack_weight_planes([w_signs], groups=groups)
    w = _as_conv_weight(w_signs, "pack_weights")
    cout, cin, kh, kw = w.shape
    neg = w < 0
    return PackedWeights(
        bits=_pack_bits(neg).unsqueeze(0),
        masks=None,
        base=torch.full((1, cout), cin * kh * kw, dtype=torch.int32),
        wsum=(cin - 2 * neg.sum(1, dtype=torch.int32)).reshape(1, cout, kh * kw).contiguous(),
        scales=torch.ones((1, cout), dtype=torch.float32),
        out_channels=cout,
        in_channels=cin,
        kernel_size=(kh, kw),
    )


def pack_weight_planes(
    planes: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None] | None = None,
    scales: Sequence[float | torch.Tensor] | None = None,
    *,
    groups: int = 1,
) -> PackedWeights | PackedDepthwiseWeights:
    """Pack multi-bit (bit-serial) weights ``w = sum_j scales[j] * masks[j] * planes[j]``.

    ``planes[j]``: +-1 tensors (signs taken as in :func:`pack_weights`), all of one shape
    ``(Cout, Cin, kh, kw)`` or ``(Cout, Cin)``; ``masks[j]``: 0/1 tensors of the same shape or
    None (all active); ``scales[j]``: a number or a ``(Cout,)`` tensor (default 1).
    ``groups``: 1, or ``C`` for a depthwise convolution (planes ``(C, 1, kh, kw)``), which returns
    :class:`PackedDepthwiseWeights`; other group counts raise NotImplementedError.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"pack_weight_planes: groups must be an int >= 1, got {groups!r}")
    if isinstance(planes, torch.Tensor) or len(planes) == 0:
        raise ValueError("pack_weight_planes: planes must be a non-empty sequence of tensors")
    J = len(planes)
    if masks is not None and len(masks) != J:
        raise ValueError(f"pack_weight_planes: {J} planes but {len(masks)} masks")
    if scales is not None and len(scales) != J:
        raise ValueError(f"pack_weight_planes: {J} planes but {len(scales)} scales")
    ws = [_as_conv_weight(p, f"pack_weight_planes: planes[{j}]") for j, p in enumerate(planes)]
    shape = ws[0].shape
    for j, w in enumerate(ws):
        if w.shape != shape:
            raise ValueError(f"pack_weight_planes: planes[{j}] has shape {tuple(w.shape)}, expected {tuple(shape)}")
    cout, cin, kh, kw = shape
    if groups != 1 and not (cin == 1 and cout == groups):
        raise UnsupportedLayerError(
            f"pack_weight_planes: groups={groups} with weights {tuple(shape)}: only groups=1 and depthwise "
            f"convolution (groups == in_channels == out_channels, weights (C, 1, kh, kw)) are implemented"
        )
    ms: list[torch.Tensor] | None = None
    if masks is not None and any(m is not None for m in masks):
        ms = []
        for j, m in enumerate(masks):
            if m is None:
                ms.append(torch.ones(shape, dtype=torch.bool))
                continue
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"pack_weight_planes: masks[{j}] must be a tensor or None")
            m = m.detach().cpu()
            if m.dim() == 2:
                m = m[:, :, None, None]
            if m.shape != shape:
                raise ValueError(f"pack_weight_planes: masks[{j}] has shape {tuple(m.shape)}, expected {tuple(shape)}")
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"pack_weight_planes: masks[{j}] must contain only 0 and 1")
            ms.append(m == 1)
    if groups != 1:
        return _pack_depthwise(ws, ms, scales, cout, kh, kw)
    bits, mbits, base, wsum, mus = [], [], [], [], []
    for j, w in enumerate(ws):
        neg = w < 0
        bits.append(_pack_bits(neg))
        if ms is None:  # every weight active: sum of signs = Cin - 2 * #negative
            base.append(torch.full((cout,), cin * kh * kw, dtype=torch.int32))
            wsum.append(cin - 2 * neg.sum(1, dtype=torch.int32).reshape(cout, kh * kw))
        else:
            mbits.append(_pack_bits(ms[j]))
            base.append(ms[j].sum((1, 2, 3), dtype=torch.int32))
            wsum.append((ms[j].sum(1, dtype=torch.int32) - 2 * (neg & ms[j]).sum(1, dtype=torch.int32))
                        .reshape(cout, kh * kw))  # fmt: skip
        s = 1.0 if scales is None else scales[j]
        if isinstance(s, torch.Tensor) and s.numel() != 1 and tuple(s.shape) != (cout,):
            raise ValueError(f"pack_weight_planes: scales[{j}] must be a number or shape ({cout},)")
        mus.append(_channel_vec(s, cout, 1.0, f"scales[{j}]"))
    return PackedWeights(
        bits=torch.stack(bits).contiguous(),
        masks=torch.stack(mbits).contiguous() if ms is not None else None,
        base=torch.stack(base).to(torch.int32).contiguous(),
        wsum=torch.stack(wsum).to(torch.int32).contiguous(),
        scales=torch.stack(mus).contiguous(),
        out_channels=cout,
        in_channels=cin,
        kernel_size=(kh, kw),
    )


def _pack_depthwise_bits(b: torch.Tensor) -> torch.Tensor:
    """bool (C, 1, kh, kw) -> int64 (kh*kw, ceil(C/64)): per tap, channel c at bit c % 64."""
    c, _, kh, kw = b.shape
    v = b.reshape(c, kh * kw).T.to(torch.int64)  # (taps, C)
    v = F.pad(v, (0, _words(c) * 64 - c)).reshape(kh * kw, _words(c), 64)
    return (v << torch.arange(64, dtype=torch.int64)).sum(-1).contiguous()  # disjoint bits: sum == or


def _pack_depthwise(ws, ms, scales, c: int, kh: int, kw: int) -> PackedDepthwiseWeights:
    bits, mbits, mus = [], [], []
    for j, w in enumerate(ws):
        bits.append(_pack_depthwise_bits(w < 0))
        if ms is not None:
            mbits.append(_pack_depthwise_bits(ms[j]))
        s = 1.0 if scales is None else scales[j]
        if isinstance(s, torch.Tensor) and s.numel() != 1 and tuple(s.shape) != (c,):
            raise ValueError(f"pack_weight_planes: scales[{j}] must be a number or shape ({c},)")
        mus.append(_channel_vec(s, c, 1.0, f"scales[{j}]"))
    return PackedDepthwiseWeights(
        bits=torch.stack(bits).contiguous(),
        masks=torch.stack(mbits).contiguous() if ms is not None else None,
        scales=torch.stack(mus).contiguous(),
        channels=c,
        kernel_size=(kh, kw),
    )


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    try:
        a, b = v  # type: ignore[misc]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (a, b)):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    return (a, b)


def _packed_input(x: PackedActivations | torch.Tensor, channels: int | None, dims: int, fn: str):
    if type(x) is PackedActivations and channels is None:
        # The common case, a layer's packed input as the engine or pack_activations made it:
        # the checks below that can fail for it, in their cheapest form (about 0.3 us of 1 us).
        data = x.data
        if data.dtype is torch.int64 and data.dim() == dims and data.is_cpu and data.is_contiguous():
            return data, x.channels
    if isinstance(x, PackedActivations):
        if channels is not None and channels != x.channels:
            raise ValueError(f"{fn}: in_channels={channels} but the packed input has {x.channels}")
        data, channels = x.data, x.channels
    elif isinstance(x, torch.Tensor):
        if channels is None:
            raise ValueError(f"{fn}: pass in_channels when x is a raw tensor of packed words")
        data = x
    else:
        raise TypeError(f"{fn}: x must be PackedActivations or an int64 tensor, got {type(x).__name__}")
    if data.dtype == torch.uint64:
        data = data.view(torch.int64)
    if data.dtype != torch.int64:
        raise TypeError(f"{fn}: packed input must be int64 words, got {data.dtype}")
    if not data.is_cpu:  # (is_cpu: a fifth of the cost of device.type on this per-call path)
        raise ValueError(f"{fn}: the packed engine runs on CPU tensors, got device {data.device}")
    if data.dim() != dims:
        raise ValueError(f"{fn}: packed input must be {dims}-D, got shape {tuple(data.shape)}")
    if not isinstance(channels, int) or channels < 1 or data.shape[-1] != _words(channels):
        raise ValueError(
            f"{fn}: {channels} input channels need "
            f"{_words(channels) if isinstance(channels, int) and channels > 0 else '?'} "
            f"words per pixel, packed input has {data.shape[-1]}"
        )
    return data.contiguous(), channels


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of two dense tensors share a byte."""
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


class _Bound:
    """A packed layer's weights, output transform and geometry, checked and resolved once to the
    engine's bound layer (``_engine.BoundLayer``): a call passes only the input and output buffers."""

    __slots__ = ("weights", "transform", "in_channels", "out_channels", "bits", "also_bits", "depthwise", "stride",
                 "padding", "_layer", "_kh", "_kw", "_out_last", "_out_dtype")  # fmt: skip

    def __init__(self, w: PackedWeights | PackedDepthwiseWeights, transform: OutputTransform | None, fn: str,
                 also_bits: bool = False, bits_threshold: torch.Tensor | float | None = None,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0), pad_value: int = 0) -> None:
        depthwise = isinstance(w, PackedDepthwiseWeights)
        if not depthwise and not isinstance(w, PackedWeights):
            raise TypeError(f"{fn}: weights must be PackedWeights (see pack_weights), got {type(w).__name__}")
        if transform is None:
            transform = _IDENTITY
        if not isinstance(transform, OutputTransform):
            raise TypeError(f"{fn}: transform must be an OutputTransform or None")
        self.weights, self.transform, self.depthwise = w, transform, depthwise
        self.in_channels, self.out_channels = w.in_channels, w.out_channels
        self.bits = transform.output == "bits"
        self.stride, self.padding = stride, padding
        self._kh, self._kw = w.kernel_size
        self._out_last = _words(w.out_channels) if self.bits else w.out_channels
        self._out_dtype = torch.int64 if self.bits else torch.float32
        self.also_bits = bool(also_bits)
        thr = None
        if self.also_bits:
            if self.bits:
                raise ValueError(f"{fn}: also_bits adds a bits output to a float output (transform.output='float')")
            if depthwise:
                raise NotImplementedError(f"{fn}: also_bits is not implemented for depthwise convolutions")
            if bits_threshold is not None:
                thr = _channel_vec(bits_threshold, w.out_channels, 0.0, "bits_threshold")
        elif bits_threshold is not None:
            raise ValueError(f"{fn}: bits_threshold is the threshold of the also_bits output; pass also_bits=True")
        self._layer = _engine.BoundLayer(w.engine_weights(), transform.resolved(w.out_channels)["engine"],
                                         stride[0], stride[1], padding[0], padding[1], pad_value, thr)  # fmt: skip

    def run(self, data: torch.Tensor, cin: int, fn: str, residual: torch.Tensor | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
        """Calls the engine on a (N, H, W, words) input; returns the NHWC output buffer (``out``'s
        memory when given: a channels_last (N, Cout, OH, OW) float32 tensor, possibly ``residual``)."""
        if cin != self.in_channels:
            raise ValueError(f"{fn}: weights expect {self.in_channels} input channels, input has {cin}")
        N, H, W, _ = data.shape
        if N * H * W == 0:
            raise ValueError(f"{fn}: empty input of shape {tuple(data.shape)}")
        kh, kw, stride, padding = self._kh, self._kw, self.stride, self.padding
        if H + 2 * padding[0] < kh or W + 2 * padding[1] < kw:
            raise ValueError(f"{fn}: kernel {kh}x{kw} does not fit the padded {H}x{W} input (padding {padding})")
        oh = (H + 2 * padding[0] - kh) // stride[0] + 1
        ow = (W + 2 * padding[1] - kw) // stride[1] + 1
        if residual is not None:
            self._check_residual(residual, (N, self.out_channels, oh, ow), fn)
        if out is None:
            out = torch.empty(N, oh, ow, self._out_last, dtype=self._out_dtype)
        else:
            out = self._check_out(out, (N, self.out_channels, oh, ow), data, residual, fn).permute(0, 2, 3, 1)
        if residual is None and not self.also_bits:
            self._layer.run(data.data_ptr(), N, H, W, out.data_ptr(), _kernel_id(), get_num_threads())
            return out
        bits = torch.empty(N, oh, ow, _words(self.out_channels), dtype=torch.int64) if self.also_bits else None
        self._layer.run(data.data_ptr(), N, H, W, out.data_ptr(), _kernel_id(), get_num_threads(),
                        0 if residual is None else residual.data_ptr(), 0 if bits is None else bits.data_ptr())
        return out if bits is None else (out, bits)

    def _check_out(self, out: object, shape: tuple[int, int, int, int], data: torch.Tensor,
                   residual: torch.Tensor | None, fn: str) -> torch.Tensor:
        if self.bits:
            raise ValueError(f"{fn}: out= takes a float output (transform.output='float')")
        _check_nhwc_float(out, "out", shape, fn)
        # the engine may write into the residual it reads (value by value), into nothing else it reads
        same_as_residual = residual is not None and out.data_ptr() == residual.data_ptr()
        for other, what in ((data, "the input"), (None if same_as_residual else residual, "the residual")):
            if other is not None and _overlaps(out, other):
                raise ValueError(f"{fn}: out overlaps {what} (it may be the residual tensor itself, "
                                 "nothing else the call reads)")  # fmt: skip
        return out

    def _check_residual(self, r: object, shape: tuple[int, int, int, int], fn: str) -> None:
        if self.bits:
            raise ValueError(f"{fn}: a residual needs float output (transform.output='float')")
        if self.depthwise:
            raise NotImplementedError(f"{fn}: a residual is not implemented for depthwise convolutions")
        _check_nhwc_float(r, "residual", shape, fn)


def _check_nhwc_float(t: object, name: str, shape: tuple[int, int, int, int], fn: str) -> None:
    """``t`` must be a float32 CPU tensor of logical ``shape`` (N, C, H, W) in channels_last memory."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or not t.is_cpu:
        raise TypeError(f"{fn}: {name} must be a float32 CPU tensor, got "
                        f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")  # fmt: skip
    if tuple(t.shape) != shape:
        raise ValueError(f"{fn}: {name} of shape {tuple(t.shape)}, the output is {shape}")
    if not t.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"{fn}: {name} must be channels_last (NHWC) memory: "
                         "t.contiguous(memory_format=torch.channels_last)")  # fmt: skip


def _conv_geometry(w_packed: object, kernel_size, stride, padding, pad_value: int, dilation, groups: int,
                   fn: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Checks a convolution's arguments against its packed weights; returns (stride, padding)."""
    if _pair(dilation, "dilation") != (1, 1):
        raise UnsupportedLayerError(f"{fn}: dilation={dilation} is not implemented by the packed engine (only 1)")
    if isinstance(w_packed, PackedDepthwiseWeights):
        if groups != w_packed.channels:
            raise ValueError(
                f"{fn}: depthwise weights for {w_packed.channels} channels need groups={w_packed.channels}, "
                f"got groups={groups}"
            )
    elif groups != 1:
        raise UnsupportedLayerError(
            f"{fn}: groups={groups}: the packed engine implements groups=1 and depthwise convolution "
            "(groups == in_channels == out_channels, weights packed with pack_weights(w, groups=C)) only"
        )
    if kernel_size is not None and isinstance(w_packed, (PackedWeights, PackedDepthwiseWeights)):
        if _pair(kernel_size, "kernel_size") != tuple(w_packed.kernel_size):
            raise ValueError(f"{fn}: kernel_size={kernel_size} but the weights are {w_packed.kernel_size}")
    s, p = _pair(stride, "stride"), _pair(padding, "padding")
    if min(s) < 1:
        raise ValueError(f"{fn}: stride must be >= 1, got {stride}")
    if min(p) < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding}")
    if pad_value not in (-1, 0, 1):
        raise ValueError(f"{fn}: pad_value must be -1, 0 or +1, got {pad_value!r}")
    return s, p


class PreparedConv2d:
    """:func:`binary_conv2d` with the layer bound once: ``PreparedConv2d(w_packed, stride=...,
    padding=..., pad_value=..., transform=..., groups=...)(x)`` returns what
    ``binary_conv2d(x, w_packed, ...)`` returns, but every argument except the input is checked
    and resolved at construction, so a call costs about half the Python time (what an exported
    model's layers run: the per-call overhead is a few percent of a small layer).  A call takes
    ``(x, in_channels=None, residual=None, out=None)``, the per-call arguments of
    :func:`binary_conv2d`; ``also_bits`` and ``bits_threshold`` are bound at construction."""

    __slots__ = ("_bound", "stride", "padding", "pad_value")

    def __init__(
        self,
        w_packed: PackedWeights | PackedDepthwiseWeights,
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        pad_value: int = 0,
        transform: OutputTransform | None = None,
        groups: int = 1,
        dilation: int | tuple[int, int] = 1,
        kernel_size: int | tuple[int, int] | None = None,
        also_bits: bool = False,
        bits_threshold: torch.Tensor | float | None = None,
    ) -> None:
        fn = "binary_conv2d"
        self.stride, self.padding = _conv_geometry(w_packed, kernel_size, stride, padding, pad_value, dilation,
                                                   groups, fn)  # fmt: skip
        self.pad_value = int(pad_value)
        self._bound = _Bound(w_packed, transform, fn, also_bits, bits_threshold, self.stride, self.padding,
                             self.pad_value)  # fmt: skip

    @property
    def weights(self) -> PackedWeights | PackedDepthwiseWeights:
        return self._bound.weights

    @property
    def transform(self) -> OutputTransform:
        return self._bound.transform

    def __call__(self, x: PackedActivations | torch.Tensor, in_channels: int | None = None,
                 residual: torch.Tensor | None = None, out: torch.Tensor | None = None):
        fn = "binary_conv2d"
        data, cin = _packed_input(x, in_channels, 4, fn)
        b = self._bound
        y = b.run(data, cin, fn, residual, out)
        if b.bits:
            return PackedActivations._trusted(y, b.out_channels)
        y, bits = y if b.also_bits else (y, None)
        y = y.permute(0, 3, 1, 2) if out is None else out  # (N, C, H, W) over the NHWC buffer
        return y if bits is None else (y, PackedActivations._trusted(bits, b.out_channels))


def binary_conv2d(
    x: PackedActivations | torch.Tensor,
    w_packed: PackedWeights | PackedDepthwiseWeights,
    in_channels: int | None = None,
    kernel_size: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    pad_value: int = 0,
    transform: OutputTransform | None = None,
    *,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    residual: torch.Tensor | None = None,
    also_bits: bool = False,
    bits_threshold: torch.Tensor | float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor | PackedActivations | tuple[torch.Tensor, PackedActivations]:
    """Binary (or multi-bit, see :func:`pack_weight_planes`) 2-D convolution on packed input.

    ``x``: :class:`PackedActivations` or int64 words ``(N, H, W, ceil(C/64))`` with ``in_channels``.
    ``kernel_size`` is optional (checked against the weights).  ``pad_value`` in {-1, 0, +1} is
    the value the padded input positions take (0: they contribute nothing).  Any stride >= 1.
    ``groups``: 1, or ``C`` for a depthwise convolution, whose weights come from
    ``pack_weights(w, groups=C)`` (:class:`PackedDepthwiseWeights`, ``w`` of shape ``(C, 1, kh, kw)``);
    other group counts raise NotImplementedError.  A layer called many times can bind its
    arguments once with :class:`PreparedConv2d`.

    ``residual`` (float output, groups 1): a float32 tensor of the output's shape ``(N, Cout, OH,
    OW)`` in channels_last memory, added after the scale and bias and before PReLU and clamp, i.e.
    ``clamp(prelu(scale * acc + bias + residual))``: a residual block's shortcut addition and its
    activation fused into the convolution's epilogue (the same float32 operations as the unfused
    ``y + residual`` and activation, so the same values).

    ``also_bits`` (float output, groups 1): return ``(y, bits)``, ``bits`` the
    :class:`PackedActivations` ``pack_activations(y, bits_threshold)`` would give, i.e. bit =
    ``(y + bits_threshold) < 0`` (the next binary layer's input) written by the same pass, for a
    float output that another layer reads too (a residual block's output).

    ``out`` (float output): a float32 ``(N, Cout, OH, OW)`` channels_last tensor the output is
    written into and returned, e.g. ``residual`` itself when nothing else needs the shortcut after
    this call (the epilogue reads each residual value before overwriting it; the output then costs
    no new memory and no read-for-ownership of fresh cache lines).  Any other overlap with what the
    call reads is refused.

    Returns float32 of logical shape ``(N, Cout, OH, OW)`` in **channels_last** memory format
    (a zero-copy view of the kernel's NHWC output, or ``out``; call ``.contiguous()`` for NCHW
    memory), or, when ``transform.output == 'bits'``, :class:`PackedActivations` ``(N, OH, OW,
    ceil(Cout/64))``.
    """
    prepared = PreparedConv2d(w_packed, stride=stride, padding=padding, pad_value=pad_value, transform=transform,
                              groups=groups, dilation=dilation, kernel_size=kernel_size, also_bits=also_bits,
                              bits_threshold=bits_threshold)  # fmt: skip
    return prepared(x, in_channels, residual, out)


def binary_linear(
    x: PackedActivations | torch.Tensor,
    w_packed: PackedWeights,
    in_features: int | None = None,
    transform: OutputTransform | None = None,
) -> torch.Tensor | PackedActivations:
    """Binary (or multi-bit) GEMM: ``acc[n, o] = sum_k sx[n, k] * sw[o, k]`` on packed input.

    ``x``: :class:`PackedActivations` or int64 words ``(N, ceil(K/64))`` with ``in_features``;
    ``w_packed`` from a ``(Cout, K)`` tensor.  Returns float32 ``(N, Cout)`` or, for
    ``transform.output == 'bits'``, :class:`PackedActivations` ``(N, ceil(Cout/64))``.
    """
    fn = "binary_linear"
    if isinstance(w_packed, PackedDepthwiseWeights):
        raise TypeError(f"{fn}: depthwise weights are for binary_conv2d(..., groups=C), not a linear layer")
    data, cin = _packed_input(x, in_features, 2, fn)
    if isinstance(w_packed, PackedWeights) and tuple(w_packed.kernel_size) != (1, 1):
        raise ValueError(f"{fn}: weights have kernel {w_packed.kernel_size}; linear weights are (Cout, Cin)")
    N = data.shape[0]
    b = _Bound(w_packed, transform, fn)
    out = b.run(data.view(1, 1, N, -1), cin, fn).view(N, -1)
    if b.bits:
        return PackedActivations._trusted(out, w_packed.out_channels)
    return out


# --------------------------------------------------------------------------------------------
# reference implementations (slow, obvious; the test oracle)
# --------------------------------------------------------------------------------------------


def epilogue_torch(y: torch.Tensor, scale: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                   residual: torch.Tensor | None = None, prelu: torch.Tensor | None = None,
                   clamp_min: float | None = None, clamp_max: float | None = None) -> torch.Tensor:
    """The engine's fused epilogue (csrc/epilogue.h) in torch, in its float32 operation order:
    ``y * scale``, ``+ bias``, ``+ residual``, PReLU ``where(y < 0, y * prelu, y)``, then the clamp.
    ``scale``, ``bias``, ``prelu`` are per-channel tensors already shaped to broadcast against ``y``
    (channels at dim 1, or last for linear outputs); an absent part is skipped, not applied as an
    identity (``+ 0`` would turn -0 into +0).  The one Python copy of the order: the test oracle
    (:func:`reference_binary_conv2d`) and the packed runtime's torch fallbacks apply it."""
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    if prelu is not None:
        y = torch.where(y < 0, y * prelu, y)
    if clamp_min is not None or clamp_max is not None:
        y = torch.clamp(y, min=clamp_min, max=clamp_max)
    return y


def _reference_transform(acc_planes: list[torch.Tensor], mus: list[torch.Tensor], t: OutputTransform, shape,
                         residual: torch.Tensor | None = None):
    """The planes' accumulation and :func:`epilogue_torch`: the engine's float32 operation order."""
    cout = acc_planes[0].shape[1]
    r = t.resolved(cout)
    acc = torch.zeros(acc_planes[0].shape, dtype=torch.float32)
    for a, mu in zip(acc_planes, mus):
        acc = acc + mu.view(shape) * a.to(torch.float32)
    y = epilogue_torch(acc, r["scale"].view(shape), r["bias"].view(shape),
                       None if residual is None else residual.detach().cpu().to(torch.float32),
                       None if r["prelu"] is None else r["prelu"].view(shape), r["clamp_min"], r["clamp_max"])
    if t.output == "bits":
        thr = r["threshold"] if r["threshold"] is not None else torch.zeros(cout)
        return torch.where((y + thr.view(shape)) < 0, -1.0, 1.0)
    return y


def _reference_planes(weight, masks, scales, cout_dim_ok: int):
    planes = list(weight) if isinstance(weight, (list, tuple)) else [weight]
    ps, mus = [], []
    for j, p in enumerate(planes):
        p = p.detach().cpu().to(torch.float64)
        sign = torch.where(p >= 0, 1.0, -1.0).to(torch.float64)
        m = masks[j] if masks is not None else None
        if m is not None:
            m = m.detach().cpu().to(torch.float64)
            if m.shape != p.shape:
                m = m.reshape(p.shape)
            sign = sign * m
        ps.append(sign)
        s = 1.0 if scales is None else scales[j]
        mus.append(_channel_vec(s, p.shape[0], 1.0, "scales"))
    return ps, mus


def reference_binary_conv2d(
    x: torch.Tensor | PackedActivations,
    weight: torch.Tensor | Sequence[torch.Tensor],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    pad_value: int = 0,
    transform: OutputTransform | None = None,
    *,
    masks: Sequence[torch.Tensor | None] | None = None,
    scales: Sequence[float | torch.Tensor] | None = None,
    groups: int = 1,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Slow oracle for :func:`binary_conv2d` on unpacked tensors (float64 ``F.conv2d``).

    ``x``: +-1 ``(N, C, H, W)`` (signs taken with sign(0)=+1) or PackedActivations; ``weight``:
    +-1 ``(Cout, Cin, kh, kw)`` (``(Cout, Cin/groups, kh, kw)`` with ``groups``) or a list of planes
    (with ``masks``/``scales`` as in :func:`pack_weight_planes`).  Returns float32 NCHW; for
    ``output='bits'`` the +-1 signs of the next layer's input (compare with :func:`unpack_activations`).
    """
    if isinstance(x, PackedActivations):
        x = unpack_activations(x)
    xs = torch.where(x.detach().cpu() >= 0, 1.0, -1.0).to(torch.float64)
    ph, pw = _pair(padding, "padding")
    xs = F.pad(xs, (pw, pw, ph, ph), mode="constant", value=float(pad_value))
    ps, mus = _reference_planes(weight, masks, scales, xs.shape[1])
    accs = [F.conv2d(xs, p, stride=_pair(stride, "stride"), groups=groups) for p in ps]
    return _reference_transform(accs, mus, transform or _IDENTITY, (1, -1, 1, 1), residual)


def reference_binary_linear(
    x: torch.Tensor | PackedActivations,
    weight: torch.Tensor | Sequence[torch.Tensor],
    transform: OutputTransform | None = None,
    *,
    masks: Sequence[torch.Tensor | None] | None = None,
    scales: Sequence[float | torch.Tensor] | None = None,
) -> torch.Tensor:
    """Slow oracle for :func:`binary_linear` (float64 matmul of +-1 tensors); see the conv one."""
    if isinstance(x, PackedActivations):
        x = unpack_activations(x)
    xs = torch.where(x.detach().cpu() >= 0, 1.0, -1.0).to(torch.float64)
    ps, mus = _reference_planes(weight, masks, scales, xs.shape[1])
    accs = [xs @ p.reshape(p.shape[0], -1).T for p in ps]
    return _reference_transform(accs, mus, transform or _IDENTITY, (1, -1))
