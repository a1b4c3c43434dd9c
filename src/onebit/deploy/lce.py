"""Export to Larq Compute Engine: a TFLite flatbuffer with LCE's binary ops, run by LCE's interpreter.

:func:`to_lce` walks the same torch.fx graph as :func:`onebit.deploy.export` (binary layers packed into
their :class:`~onebit.deploy.description.PackedLayerDescription`, BatchNorm folded, PReLU/Hardtanh/ReLU
fused) and writes it in NHWC as TFLite builtins plus LCE's custom ops. The LCE conventions used here
come from LCE's sources (github.com/larq/compute-engine):

* ``LceQuantize`` (``tflite/kernels/quantization.cc``, ``core/bitpacking/bitpack.h``): float NHWC →
  int32 ``[N, H, W, ceil(C/32)]``; channel ``32·w + i`` is bit ``i`` of word ``w``; a bit is set iff
  the value is ``< 0``, so ``sign(0) = +1`` as in onebit; unused high bits are 0.
* ``LceBconv2d`` (``tflite/kernels/bconv2d.cc``, ``core/bconv2d/output_transform.h``,
  ``mlir/ir/lce_ops.cc``): inputs ``(bitpacked input, filter, post_activation_multiplier,
  post_activation_bias, output_threshold)``; the filter is OHWI bit-packed along I into int32 with the
  same bit rule (bit set = −1); the float output is ``(K − 2·popcount(x ⊕ w)) · multiplier[c] +
  bias[c]`` — the ±1 dot product times a per-channel multiplier plus a bias — or, with an int32
  output and ``output_threshold``, bit ``c`` set iff ``popcount > threshold[c]``; flexbuffer int options
  ``channels_in, dilation_{height,width}_factor, fused_activation_function, pad_values, padding,
  stride_{height,width}`` with ``padding``/``fused_activation_function`` as the TFLite schema's
  ``Padding``/``ActivationFunctionType`` enums (``bconv2d.cc``: ``ConvertPadding((Padding)m["padding"]
  .AsInt32())``). ``padding=SAME`` pads with +1 (``pad_values=1``) or, with ``pad_values=0``, applies
  LCE's zero-padding correction so that padded taps contribute 0 (float output only).
* ``LceBMaxPool2d`` (``bmaxpool.cc``): max-pooling of bit-packed ±1 values; ``LceDequantize``: bits →
  float ±1.

How onebit's layers map (``y = epilogue(K · S ⊙ Σ_j μ_j (m_j ⊙ B_j) ⊛ x_q + b)``, README "Deploying"):

* the input threshold of ReActNet/RSign (``sign(x + b)``) is an ``ADD`` before ``LceQuantize``;
* the per-channel scales μ_j, ``output_scale`` (channel-wise), the folded BatchNorm and the bias go into
  the bconv's multiplier/bias; a spatial ``output_scale`` (XNOR-Net++'s Γ) is a ``MUL`` by a constant
  ``[1, H, W, C]``; XNOR-Net's per-sample ``K = mean|x|`` is ``ABS`` + ``MEAN`` + ``MUL``;
* several bit planes (HBNN) are one bconv each, summed with ``ADD``; a masked plane ``m ⊙ B`` is
  written exactly as two ±1 planes ``(B' + B'')/2`` (``B' = B`` or +1 off the mask, ``B'' = B`` or −1);
* padding: onebit pads the *binarized* input with 0, +1 or −1 (``pad_value``). Where TFLite's SAME
  padding has the same geometry as torch's symmetric padding, +1 and 0 use LCE's own SAME padding
  (``pad_values`` 1 or 0); otherwise (e.g. stride 2 on an even input, where SAME pads bottom/right
  only) +1 is a ``PAD`` of the bit-packed tensor with zero words, −1 a ``PADV2`` of the real input with
  −1 before quantization, and 0 is +1 padding minus a constant per-position correction
  ``Σ_{padded taps} W`` added after the bconv — exact in integer arithmetic;
* a binary conv whose output (after its folded BatchNorm, a PReLU with positive slopes or a clamp
  around 0) feeds only another binary conv's plain sign — directly or through a max-pool without
  padding — writes bit-packed output with per-channel thresholds ``floor((K + b/m)/2)`` (``K`` taps,
  multiplier ``m``, bias ``b``; a negative ``m`` flips that channel's filter) and the max-pool becomes
  ``LceBMaxPool2d``, as LCE's converter does; not when the producer uses 0-padding (LCE writes bits
  only with VALID or one-padding), several bit planes, XNOR's K or a spatial scale;
* weight-only binary layers (ProxConnect++'s default) are float ``CONV_2D``/``FULLY_CONNECTED`` with the
  ±scale weight; full-precision layers are TFLite builtins.

What LCE cannot express raises one :class:`~onebit.deploy.graph.ExportError` naming the layer:
conv1d layers, grouped or dilated binary convolutions, ``padding_mode`` other than ``"zeros"`` on a
binary layer, HBNN's multi-bit activations (for binary layers :func:`supports` decides, from the
layer's :class:`~onebit.deploy.description.PackedLayerDescription`, and refuses with its subclass
:class:`~onebit.deploy.errors.UnsupportedLayerError`), and graph operations outside the list in
:data:`SUPPORTED`. The exporter itself is a manager with one handler per node kind
(:mod:`onebit.deploy._lce_nodes`) over a TFLite graph writer (:mod:`onebit.deploy._lce_graph`).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write_bytes
from ..methods.base import NotDeployableError, layer_label
from ..nn.layers import BinaryLayer
from ._finite import guard_inputs, mark_outputs, refuse_complex
from ._lce_graph import pack_filter
from ._lce_nodes import SUPPORTED, _Exporter, supports
from .description import describe, require
from .errors import ExportError
from .export import PackedModel
from .graph import fuse, trace
from .packed import build_module

__all__ = ["to_lce", "to_lce_bytes", "interpreter", "LceInterpreter", "lce_available", "LCE_PLATFORM", "SUPPORTED",
           "supports", "pack_filter"]


# --------------------------------------------------------------------------------------------------
# LCE's interpreter without TensorFlow
# --------------------------------------------------------------------------------------------------
def _wrapper_path() -> Path | None:
    spec = importlib.util.find_spec("larq_compute_engine")  # finds the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "tflite" / "python" / "interpreter_wrapper_lite.so"
        if path.is_file():
            return path
    return None


#: Where LCE publishes its interpreter wheel (x86-64 Linux; its ARM builds are for devices, not pip).
LCE_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"


def lce_available() -> bool:
    """Whether the ``larq-compute-engine`` wheel (its interpreter extension) is installed."""
    return _wrapper_path() is not None


_WRAPPER: Any = None


def _load_wrapper() -> Any:
    global _WRAPPER
    if _WRAPPER is None:
        path = _wrapper_path()
        if path is None:
            raise ImportError(
                "Larq Compute Engine's interpreter is not installed; `pip install larq-compute-engine` "
                "(onebit needs only its interpreter extension, not TensorFlow: install it with --no-deps)"
            )
        spec = importlib.util.spec_from_file_location("interpreter_wrapper_lite", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _WRAPPER = module
    return _WRAPPER


class LceInterpreter:
    """LCE's ``LiteInterpreter`` (TFLite with LCE's kernels registered) around one model.

    ``predict(*inputs)`` takes one float32 array per model input (NHWC for images, batch included)
    and returns the list of outputs; ``input_shapes``/``output_shapes`` describe them. LCE's
    ``LceQuantize`` binarizes NaN to +1 and answers with a confident class, so an input with NaN/±inf
    raises :class:`~onebit.deploy.NonFiniteInputError`, or with ``predict(..., nonfinite="propagate")``
    gives NaN outputs for those samples (see :mod:`onebit.deploy._finite`)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self._raw.input_shapes]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self._raw.output_shapes]

    def predict(self, *inputs: np.ndarray, nonfinite: str = "raise") -> list[np.ndarray]:
        shapes = self.input_shapes
        if len(inputs) != len(shapes):
            raise ValueError(f"the model takes {len(shapes)} input(s), got {len(inputs)}")
        refuse_complex(tuple(np.asarray(x) for x in inputs), "LCE interpreter")
        arrays = []
        for i, (x, shape) in enumerate(zip(inputs, shapes)):
            x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
            if tuple(x.shape) != shape:
                raise ValueError(f"input {i} has shape {tuple(x.shape)}; the model was exported for {shape} "
                                 "(NHWC for images: x.permute(0, 2, 3, 1))")
            arrays.append(x)
        arrays, bad = guard_inputs(tuple(arrays), nonfinite, "LCE interpreter")
        with _numpy2_itemsize_shim():
            outputs = self._raw.predict(list(arrays))
        outputs = [np.array(y) for y in outputs]
        return outputs if bad is None else mark_outputs(outputs, bad)


class _numpy2_itemsize_shim:
    """Make the wheel's pybind11 read the right item size under NumPy 2, for the duration of a call.

    The larq-compute-engine 0.16 wheel is built with a pybind11 that reads ``PyArray_Descr.elsize`` as
    the ``int`` after ``type_num`` (NumPy 1's layout). NumPy 2 moved ``elsize`` to a 64-bit field and
    put the 64-bit ``flags`` there, so the wheel sees item size 0 for float32/int32: it copies 0 bytes
    into the inputs ("Expected N bytes but got 0") and builds outputs with zero strides. While the
    wrapper runs, we set the low 32 bits of the builtin float32/int32 descriptors' ``flags`` — the word
    the old layout reads as ``elsize`` — to their item size, and restore them afterwards. The offsets are
    checked against ``dtype.flags``/``dtype.itemsize`` first; on any mismatch nothing is touched.
    Under NumPy 1 this is a no-op.
    """

    def __enter__(self) -> None:
        import ctypes

        self._saved: list[tuple[Any, int]] = []
        if int(np.__version__.split(".")[0]) < 2:
            return
        ptr = ctypes.sizeof(ctypes.c_void_p)
        flags_off = object.__basicsize__ + ptr + 4 + 4  # PyObject_HEAD, typeobj, 4 chars, type_num
        for dt in (np.dtype(np.float32), np.dtype(np.int32)):
            flags = ctypes.c_uint64.from_address(id(dt) + flags_off)
            elsize = ctypes.c_int64.from_address(id(dt) + flags_off + 8)
            if flags.value != dt.flags or elsize.value != dt.itemsize or dt.flags & 0xFFFFFFFF:
                self.__exit__()
                raise RuntimeError(
                    "this NumPy's dtype layout is not the one onebit knows how to bridge for the "
                    "larq-compute-engine wheel; install numpy<2 to run LCE's interpreter"
                )
            self._saved.append((flags, flags.value))
            flags.value = flags.value | dt.itemsize

    def __exit__(self, *exc: Any) -> None:
        for flags, value in reversed(self._saved):
            flags.value = value


def interpreter(model: str | os.PathLike[str] | bytes, num_threads: int = 1, *, use_reference_bconv: bool = False,
                use_indirect_bgemm: bool = False, use_xnnpack: bool = False) -> LceInterpreter:
    """LCE's interpreter for a ``.tflite`` file (path) or its bytes, loaded WITHOUT TensorFlow.

    How: ``larq_compute_engine/__init__.py`` imports TensorFlow (for its converter), but the interpreter
    is a self-contained pybind11 extension, ``larq_compute_engine/tflite/python/interpreter_wrapper_lite.so``
    (TFLite + LCE's kernels). We locate the installed package with ``importlib.util.find_spec`` (which
    reads ``submodule_search_locations`` without executing the package ``__init__``) and load the
    ``.so`` alone with ``spec_from_file_location``; then drive its ``LiteInterpreter(flatbuffer,
    num_threads, use_reference_bconv, use_indirect_bgemm, use_xnnpack)`` exactly as LCE's own
    ``Interpreter`` class (``interpreter.py``/``interpreter_base.py``) does, whose ``predict`` sets the
    inputs from a list of arrays, invokes, and returns the outputs. Why: TensorFlow is a multi-GB
    dependency that inference does not need. Under NumPy 2 each ``predict`` bridges the wheel's
    NumPy-1 pybind11 (see :class:`_numpy2_itemsize_shim`).

    ``use_indirect_bgemm``/``use_xnnpack`` pick LCE's faster bconv kernel and TFLite's XNNPACK delegate
    for the float ops; ``use_reference_bconv`` LCE's reference kernel, which needs models written with
    ``to_lce(..., lce_zero_padding=False)`` when 0-padded layers have odd channel counts.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write one with onebit.deploy.lce.to_lce")
        data = path.read_bytes()
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    else:
        raise TypeError(f"interpreter() takes a path or the model bytes, got {type(model).__name__}")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier); write one with to_lce")
    if int(num_threads) < 1:
        raise ValueError(f"num_threads={num_threads} must be >= 1")
    wrapper = _load_wrapper()
    raw = wrapper.LiteInterpreter(data, int(num_threads), bool(use_reference_bconv), bool(use_indirect_bgemm),
                                  bool(use_xnnpack))
    return LceInterpreter(raw)


def _describe_for_lce(layer: BinaryLayer, name: str) -> Any:
    """The packed module of one trained binary layer, refused with LCE's reason where LCE does not run it."""
    label = f"layer {name!r} ({type(layer).__name__})"
    layer.onebit_name = getattr(layer, "onebit_name", None) or name  # how export() names it
    try:
        description = describe(layer)
    except NotDeployableError as err:
        raise ExportError(str(err)) from None
    except ValueError as err:
        raise ExportError(f"{layer_label(layer)} ({layer.method.name}): {err}") from None
    require(supports, description, label)
    return build_module(description)


def _pack_for_lce(model: nn.Module) -> PackedModel:
    """:func:`~onebit.deploy.export` of ``model``, each binary layer described once and checked against :func:`supports`
    first (so a layer LCE cannot run is named with LCE's reason)."""
    work = copy.deepcopy(model).cpu().eval()
    for name, layer in list(work.named_modules()):
        if isinstance(layer, BinaryLayer):
            parent_name, _, child = name.rpartition(".")
            packed = _describe_for_lce(layer, name)
            if not name:
                work = packed
            else:
                setattr(work.get_submodule(parent_name) if parent_name else work, child, packed)
    try:
        gm = fuse(trace(work))  # export() without its copy: `work` is already this function's own
        return PackedModel(gm.eval())
    except ExportError:
        raise
    except NotDeployableError as err:  # one exception type for everything to_lce refuses
        raise ExportError(str(err)) from None


def _examples(example_input: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    if isinstance(example_input, Tensor):
        example: tuple[Tensor, ...] = (example_input,)
    elif isinstance(example_input, (tuple, list)) and all(isinstance(t, Tensor) for t in example_input):
        example = tuple(example_input)
    else:
        raise TypeError("example_input must be a tensor (or a tuple of tensors) of the shape to deploy, "
                        f"got {type(example_input).__name__}")
    return tuple(t.detach().float().cpu().contiguous() for t in example)


def to_lce_bytes(model_or_packed: nn.Module, example_input: Tensor | Sequence[Tensor], *,
                 lce_zero_padding: bool = True) -> bytes:
    """The TFLite flatbuffer of :func:`to_lce`, as bytes (nothing written)."""
    example = _examples(example_input)
    if isinstance(model_or_packed, PackedModel):
        packed = model_or_packed
    elif isinstance(model_or_packed, nn.Module):
        packed = _pack_for_lce(model_or_packed)
    else:
        raise TypeError(f"to_lce takes a torch model or the PackedModel from export(), got "
                        f"{type(model_or_packed).__name__}")
    with torch.no_grad():
        return _Exporter(packed.net, example, lce_zero_padding).run()



def to_lce(model_or_packed: nn.Module, example_input: Tensor | Sequence[Tensor], path: str | os.PathLike[str], *,
           lce_zero_padding: bool = True) -> Path:
    """Write ``model_or_packed`` (a model with onebit binary layers, or :func:`onebit.deploy.export`'s
    :class:`PackedModel`) as a TFLite flatbuffer for Larq Compute Engine's interpreter; returns the path.

    ``example_input`` fixes the deployed shape (batch included). Image inputs and outputs of the TFLite
    model are NHWC (``x.permute(0, 2, 3, 1)``); 2-D tensors keep their layout. The file is written
    atomically. Layers LCE cannot express raise one :class:`~onebit.deploy.graph.ExportError` naming the
    layer (see the module docstring for the translation and the limits).

    ``lce_zero_padding``: 0-padded binary convs use LCE's own SAME zero padding where its geometry
    matches torch's (the fast path). ``False`` writes every one as +1 padding plus a constant
    correction instead, which LCE's reference kernel (``use_reference_bconv=True``) also runs with odd
    channel counts (it refuses SAME zero padding there).
    """
    data = to_lce_bytes(model_or_packed, example_input, lce_zero_padding=lce_zero_padding)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
    atomic_write_bytes(path, data)
    return path
