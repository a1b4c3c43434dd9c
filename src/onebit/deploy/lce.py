"""Export to Larq Compute Engine: a TFLite flatbuffer with LCE's binary ops, run by LCE's interpreter.

:func:`to_lce` walks the same torch.fx graph as :func:`onebit.deploy.export` (binary layers packed into
their :class:`~onebit.methods.InferenceForm`, BatchNorm folded, PReLU/Hardtanh/ReLU fused) and writes
it in NHWC as TFLite builtins plus LCE's custom ops. The LCE conventions used here come from LCE's
sources (github.com/larq/compute-engine):

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
binary layer, HBNN's multi-bit activations, and graph operations outside the list in :data:`SUPPORTED`.
"""

from __future__ import annotations

import importlib.util
import math
import operator
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .._io import atomic_write_bytes
from ..methods.base import NotDeployableError
from ..nn.blocks import LearnableBias, RPReLU, RSign
from ..nn.layers import BinaryLayer
from ._finite import guard_inputs, mark_outputs
from .export import PackedModel, export
from .graph import ExportError
from .packed import PackedBinary, PackedBinaryWeightOnly, _PackedBase

__all__ = ["to_lce", "to_lce_bytes", "interpreter", "LceInterpreter", "lce_available", "LCE_PLATFORM", "SUPPORTED",
           "DEPLOYABLE_METHODS"]

#: What the exporter translates besides binary layers (for the error message and the README).
SUPPORTED = (
    "Conv2d (any groups=1 or depthwise, dilation, zero padding), Linear, BatchNorm1d/2d, ReLU, ReLU6, "
    "Hardtanh, PReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Softmax(last dim), Identity, Dropout, Flatten, "
    "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, LearnableBias, RSign, RPReLU; +, -, *, / (tensors or "
    "numbers), torch.cat, flatten/view/reshape, mean, F.pad (constant), slicing with steps, relu, "
    "hardtanh, contiguous"
)
#: Methods whose inference form LCE runs (pcpp-*/bnn++ after their last hard-sign epoch, BiPer in
#: stage 2; pcpp-* with real activations run as float convolutions with 1-bit-valued weights).
DEPLOYABLE_METHODS = ("bnn", "xnor", "dorefa", "bireal", "xnorpp", "reactnet", "recu", "fda", "biper",
                      "irnet", "pcpp-bc", "pcpp-pc", "pcpp-bnn", "pcpp-bnn+", "bnn++", "hbnn")


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


# --------------------------------------------------------------------------------------------------
# Bit packing in LCE's layout
# --------------------------------------------------------------------------------------------------
def pack_filter(signs: np.ndarray) -> np.ndarray:
    """±1 filter ``(O, I, kh, kw)`` (torch layout) → LCE's OHWI int32 filter bit-packed along I:
    channel ``32·w + i`` in bit ``i`` of word ``w``, bit set = −1, unused bits 0."""
    o, i, kh, kw = signs.shape
    words = (i + 31) // 32
    neg = np.zeros((o, kh, kw, words * 32), dtype=np.uint8)
    neg[..., :i] = (signs.transpose(0, 2, 3, 1) < 0)
    packed = np.packbits(neg, axis=-1, bitorder="little")  # 4 bytes per word, little-endian
    return np.ascontiguousarray(packed).view("<i4").reshape(o, kh, kw, words).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# The exporter
# --------------------------------------------------------------------------------------------------
_NHWC = "nhwc"  # a 4-D torch tensor (N, C, H, W) stored as (N, H, W, C)
_SAME = "same"  # stored in torch's own order
_BITS = "bits"  # a ±1 (N, C, H, W) tensor stored bit-packed: int32 (N, H, W, ceil(C/32)) from a bconv
_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


class _Val:
    """A tensor of the TFLite graph and how its axes relate to torch's."""

    def __init__(self, index: int, shape: tuple[int, ...], layout: str) -> None:
        self.index, self.shape, self.layout = index, tuple(shape), layout  # shape: torch's

    def tfl_shape(self) -> tuple[int, ...]:
        if self.layout == _NHWC:
            n, c, h, w = self.shape
            return (n, h, w, c)
        return self.shape


def _same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int, int]:
    """TFLite SAME padding (``tensorflow/lite/kernels/padding.h``): output, pad before, pad after."""
    eff = (k - 1) * d + 1
    out = (size + s - 1) // s
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2, total - total // 2


class _Exporter:
    def __init__(self, gm: fx.GraphModule, example: tuple[Tensor, ...], lce_zero_padding: bool = True) -> None:
        try:
            from ._tflite_builder import ModelBuilder
        except ImportError as err:
            raise ImportError(f"to_lce writes TFLite flatbuffers with the `tflite` and `flatbuffers` packages "
                              f"({err}); pip install 'tflite>=2.10' 'flatbuffers>=23'") from None

        self.gm = gm
        self.example = example
        self.b = ModelBuilder()
        self.modules = dict(gm.named_modules())
        self.env: dict[str, Any] = {}
        self.lce_zero_padding = lce_zero_padding

    # -- helpers -------------------------------------------------------------------------------
    def new(self, shape: Sequence[int], layout: str, dtype: Any = np.float32) -> _Val:
        shape = tuple(int(s) for s in shape)
        tfl = (shape[0], shape[2], shape[3], shape[1]) if layout == _NHWC else shape
        return _Val(self.b.tensor(tfl, dtype), shape, layout)

    def unary(self, name: str, x: _Val, options: str | None = None, **fields: Any) -> _Val:
        out = self.new(x.shape, x.layout)
        self.b.op(name, [x.index], [out.index], options, **fields)
        return out

    def binary(self, name: str, x: _Val, const: np.ndarray | _Val, out_shape: Sequence[int] | None = None) -> _Val:
        other = const.index if isinstance(const, _Val) else self.b.const(np.asarray(const, np.float32))
        out = self.new(out_shape or x.shape, x.layout)
        opts = {"ADD": "AddOptions", "MUL": "MulOptions", "SUB": "SubOptions", "DIV": "DivOptions"}.get(name)
        self.b.op(name, [x.index, other], [out.index], opts)
        return out

    def channel_vec(self, x: _Val, v: Tensor | np.ndarray) -> np.ndarray:
        """A per-channel vector shaped to broadcast against ``x`` in its TFLite layout."""
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, Tensor) else v, dtype=np.float32).reshape(-1)
        if x.layout == _NHWC or len(x.shape) <= 2:
            return arr  # channels are the last axis
        return arr.reshape((-1,) + (1,) * (len(x.shape) - 2))

    def to_torch_order(self, x: _Val) -> _Val:
        if x.layout != _NHWC:
            return x
        n, c, h, w = x.shape
        out = _Val(self.b.tensor(x.shape), x.shape, _SAME)
        if h * w == 1 or c == 1:  # the same bytes in both orders: a reshape suffices
            self.b.op("RESHAPE", [x.index, self.b.const(np.array(x.shape, np.int32))], [out.index])
        else:
            self.b.op("TRANSPOSE", [x.index, self.b.const(np.array([0, 3, 1, 2], np.int32))], [out.index])
        return out

    def from_torch_order(self, x: _Val) -> _Val:
        if len(x.shape) != 4 or x.layout == _NHWC:
            return x
        out = self.new(x.shape, _NHWC)
        n, c, h, w = x.shape
        if h * w == 1 or c == 1:
            self.b.op("RESHAPE", [x.index, self.b.const(np.array(out.tfl_shape(), np.int32))], [out.index])
        else:
            self.b.op("TRANSPOSE", [x.index, self.b.const(np.array([0, 2, 3, 1], np.int32))], [out.index])
        return out

    def pad(self, x: _Val, pads_hw: tuple[int, int, int, int], value: float | None,
            dtype: Any = np.float32) -> _Val:
        """Pad an NHWC tensor by (top, bottom, left, right); ``value`` None: zeros (PAD)."""
        top, bottom, left, right = pads_hw
        n, h, w, c = self.b.tensors[x.index].shape
        out_idx = self.b.tensor((n, h + top + bottom, w + left + right, c), dtype)
        paddings = self.b.const(np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        if value is None:
            self.b.op("PAD", [x.index, paddings], [out_idx])
        else:
            self.b.op("PADV2", [x.index, paddings, self.b.const(np.array(value, dtype))], [out_idx])
        shape = (x.shape[0], x.shape[1], h + top + bottom, w + left + right)
        return _Val(out_idx, shape, _NHWC)

    def clamp(self, x: _Val, lo: float, hi: float) -> _Val:
        if lo == 0 and math.isinf(hi):
            return self.unary("RELU", x)
        if lo == 0 and hi == 6:
            return self.unary("RELU6", x)
        if lo == -1 and hi == 1:
            return self.unary("RELU_N1_TO_1", x)
        if not math.isinf(hi):
            x = self.binary("MINIMUM", x, np.array(hi, np.float32))
        if not math.isinf(lo):
            x = self.binary("MAXIMUM", x, np.array(lo, np.float32))
        return x

    def prelu(self, x: _Val, slope: Tensor) -> _Val:
        alpha = slope.detach().float().reshape(-1).numpy()
        channels = x.shape[1] if x.layout == _NHWC or len(x.shape) == 2 else x.shape[-1]
        if alpha.size == 1:
            alpha = np.full(channels, alpha[0], np.float32)
        rank = len(x.tfl_shape())
        out = self.new(x.shape, x.layout)
        self.b.op("PRELU", [x.index, self.b.const(alpha.reshape((1,) * (rank - 2) + (-1,)))], [out.index])
        return out

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> bytes:
        ShapeProp(self.gm).propagate(*self.example)
        placeholders = iter(self.example)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                x = next(placeholders, None)
                if not isinstance(x, Tensor):
                    raise ExportError(f"input {node.name!r}: to_lce needs one example tensor per model input")
                layout = _NHWC if x.dim() == 4 else _SAME
                val = self.new(tuple(x.shape), layout)
                self.b.inputs.append(val.index)
                self.env[node.name] = val
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
                for o in outs:
                    v = self.env.get(o.name) if isinstance(o, fx.Node) else None
                    if not isinstance(v, _Val):
                        raise ExportError(f"model output {o!r} is not a tensor; to_lce exports tensor outputs only")
                    self.b.outputs.append(v.index)
            else:
                try:
                    self.env[node.name] = self.node(node)
                except ExportError:
                    raise
                except (ValueError, KeyError, TypeError, NotImplementedError) as err:
                    raise ExportError(f"node {node.name!r} ({node.format_node()}): {err}") from None
        return self.b.serialize()

    def arg(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(v) for v in a)
        return a

    def out_shape(self, node: fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise ExportError(f"node {node.name!r} does not produce one tensor")
        return tuple(meta.shape)

    def node(self, node: fx.Node) -> Any:
        if node.op == "call_module":
            return self.module(node, self.modules[node.target])
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj.detach().cpu() if isinstance(obj, Tensor) else obj
        if node.op in ("call_function", "call_method"):
            return self.function(node)
        raise ExportError(f"graph node {node.name!r} of kind {node.op} is not supported by to_lce")

    # -- modules ---------------------------------------------------------------------------------
    def module(self, node: fx.Node, m: nn.Module) -> Any:
        x = self.arg(node.args[0]) if node.args else None
        label = f"layer {node.target!r} ({type(m).__name__})"
        if isinstance(m, _PackedBase):
            if not isinstance(x, _Val):
                raise ExportError(f"{label}: its input is not a tensor")
            return self.binary_layer(node, m, x, label)
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x
        if not isinstance(x, _Val):
            raise ExportError(f"{label}: its input is not a tensor of the graph")
        if x.layout == _BITS:
            if isinstance(m, nn.MaxPool2d):
                return self.bmaxpool(x, m, self.out_shape(node))
            raise ExportError(f"{label}: internal error, a bit-packed tensor reached a real-valued layer")
        if isinstance(m, nn.Conv2d):
            return self.conv(x, m.weight.detach(), m.bias, m, label, self.out_shape(node))
        if isinstance(m, nn.Linear):
            return self.linear(x, m.weight.detach(), m.bias, self.out_shape(node))
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not m.track_running_stats or m.running_var is None:
                raise ExportError(f"{label}: BatchNorm without running statistics cannot be exported")
            s = torch.rsqrt(m.running_var.float() + m.eps) * (m.weight.detach().float() if m.affine else 1.0)
            t = (m.bias.detach().float() if m.affine else 0.0) - m.running_mean.float() * s
            if len(x.shape) == 3:
                raise ExportError(f"{label}: BatchNorm1d on (N, C, L) inputs is not supported by to_lce")
            return self.binary("ADD", self.binary("MUL", x, self.channel_vec(x, s)), self.channel_vec(x, t))
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            return self.clamp(x, 0.0, 6.0 if isinstance(m, nn.ReLU6) else math.inf)
        if isinstance(m, nn.Hardtanh):
            return self.clamp(x, float(m.min_val), float(m.max_val))
        if isinstance(m, nn.PReLU):
            return self.prelu(x, m.weight)
        if isinstance(m, nn.LeakyReLU):
            return self.unary("LEAKY_RELU", x, "LeakyReluOptions", alpha=float(m.negative_slope))
        if isinstance(m, nn.Sigmoid):
            return self.unary("LOGISTIC", x)
        if isinstance(m, nn.Tanh):
            return self.unary("TANH", x)
        if isinstance(m, nn.GELU):
            return self.unary("GELU", x, "GeluOptions", approximate=m.approximate == "tanh")
        if isinstance(m, nn.SiLU):
            return self.binary("MUL", x, self.unary("LOGISTIC", x))
        if isinstance(m, nn.Softmax):
            if m.dim not in (-1, len(x.shape) - 1) or x.layout == _NHWC:
                raise ExportError(f"{label}: softmax is exported over the last dimension of a non-image tensor only")
            return self.unary("SOFTMAX", x, "SoftmaxOptions", beta=1.0)
        if isinstance(m, nn.Flatten):
            return self.reshape(x, self.out_shape(node))
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            return self.pool(x, m, label, self.out_shape(node))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.adaptive_avg(x, self.out_shape(node), label)
        if isinstance(m, LearnableBias):
            return self.binary("ADD", x, self.channel_vec(x, m.bias))
        if isinstance(m, RSign):
            shifted = self.binary("ADD", x, self.channel_vec(x, m.shift.bias))
            return self.dequantize(self.quantize(shifted), shifted.shape, shifted.layout)
        if isinstance(m, RPReLU):
            y = self.binary("ADD", x, self.channel_vec(x, m.shift_in.bias))
            y = self.prelu(y, m.prelu.weight)
            return self.binary("ADD", y, self.channel_vec(y, m.shift_out.bias))
        raise ExportError(f"{label} has no TFLite/LCE translation; supported: {SUPPORTED}")

    # -- LCE ops ---------------------------------------------------------------------------------
    def quantize(self, x: _Val) -> int:
        n, h, w, c = x.tfl_shape()
        out = self.b.tensor((n, h, w, (c + 31) // 32), np.int32)
        self.b.custom("LceQuantize", [x.index], [out])
        return out

    def dequantize(self, packed: int, shape: tuple[int, ...], layout: str) -> _Val:
        out = self.new(shape, layout)
        self.b.custom("LceDequantize", [packed], [out.index])
        return out

    def bconv(self, packed: int, signs: np.ndarray, channels_in: int, stride: tuple[int, int], padding: str,
              pad_values: int, multiplier: np.ndarray, bias: np.ndarray, out_shape_nhwc: tuple[int, ...],
              thresholds: np.ndarray | None = None) -> int:
        from ._tflite_builder import ACTIVATION, PADDING, flex_map

        if thresholds is None:  # float output: (K - 2·popcount)·multiplier + bias
            out = self.b.tensor(out_shape_nhwc)
            last = -1
        else:  # bit-packed output: bit set iff popcount > threshold
            n, oh, ow, c_out = out_shape_nhwc
            out = self.b.tensor((n, oh, ow, (c_out + 31) // 32), np.int32)
            last = self.b.const(thresholds.astype(np.int32))
        inputs = [packed, self.b.const(pack_filter(signs)), self.b.const(multiplier.astype(np.float32)),
                  self.b.const(bias.astype(np.float32)), last]
        options = flex_map({
            "channels_in": channels_in, "dilation_height_factor": 1, "dilation_width_factor": 1,
            "fused_activation_function": ACTIVATION["NONE"], "pad_values": pad_values,
            "padding": PADDING[padding], "stride_height": stride[0], "stride_width": stride[1],
        })
        self.b.custom("LceBconv2d", inputs, [out], options)
        return out

    def feeds_only_a_sign(self, node: fx.Node) -> bool:
        """Whether this layer's output goes to exactly one binary conv that reads it through a plain
        sign (no threshold, no XNOR K, no −1 padding of the real value): then the bconv can write
        bit-packed output with thresholds, as LCE's converter does, and the consumer skips LceQuantize."""
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            return False
        m = self.modules.get(users[0].target)
        if isinstance(m, nn.MaxPool2d) and self.bitpacked_maxpool(users[0], m):
            # sign is monotone, so sign(maxpool(v)) = maxpool(sign(v)): LceBMaxPool2d on the bits.
            return self.feeds_only_a_sign(users[0])
        if not isinstance(m, PackedBinary) or m.config["kind"] != "conv2d":
            return False
        if "threshold" in m._tensors or m.config.get("input_scale") is not None:
            return False
        padded = any(m.padding)
        return not (padded and (m.padding_mode != "zeros" or int(m.config.get("pad_value", 0)) == -1))

    def bitpacked_maxpool(self, node: fx.Node, m: nn.MaxPool2d) -> bool:
        """Whether LceBMaxPool2d (VALID padding, no dilation) computes this max-pool."""
        def pair(v: Any) -> tuple[int, int]:
            return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

        if pair(m.padding) != (0, 0) or pair(m.dilation) != (1, 1):
            return False
        shape_in = node.args[0].meta["tensor_meta"].shape
        k, s = pair(m.kernel_size), pair(m.stride or m.kernel_size)
        floor_out = tuple((shape_in[2 + i] - k[i]) // s[i] + 1 for i in range(2))
        return tuple(self.out_shape(node)[2:]) == floor_out

    def bmaxpool(self, x: _Val, m: nn.MaxPool2d, out_shape: tuple[int, ...]) -> _Val:
        from ._tflite_builder import PADDING, flex_map

        k = (m.kernel_size, m.kernel_size) if isinstance(m.kernel_size, int) else tuple(m.kernel_size)
        st = m.stride or m.kernel_size
        st = (st, st) if isinstance(st, int) else tuple(st)
        n, c, oh, ow = out_shape
        out = self.b.tensor((n, oh, ow, (c + 31) // 32), np.int32)
        self.b.custom("LceBMaxPool2d", [x.index], [out], flex_map({
            "padding": PADDING["VALID"], "stride_height": st[0], "stride_width": st[1],
            "filter_height": k[0], "filter_width": k[1]}))
        return _Val(out, out_shape, _BITS)

    def binary_layer(self, node: fx.Node, m: _PackedBase, x: _Val, label: str) -> _Val:
        cfg, t = m.config, m._tensors
        if x.layout == _BITS and not isinstance(m, PackedBinary):
            raise ExportError(f"{label}: internal error, bit-packed input to a non-binary layer")
        kind = cfg["kind"]
        if kind == "conv1d":
            raise ExportError(f"{label}: binary Conv1d layers are not exported to LCE (2-D convolutions only)")
        if cfg.get("groups", 1) != 1:
            raise ExportError(f"{label}: binary depthwise convolutions (groups={cfg['groups']}) are not exported "
                              "to LCE by onebit; keep the layer in full precision for an LCE export")
        if cfg.get("padding_mode", "zeros") != "zeros" and any(cfg.get("padding", (0, 0))):
            raise ExportError(f"{label}: padding_mode={cfg['padding_mode']!r} pads the real input before "
                              "binarization; LCE exports support padding_mode='zeros' only")
        out_shape = self.out_shape(node)
        if isinstance(m, PackedBinaryWeightOnly):
            return self.weight_only(m, x, label, out_shape)
        assert isinstance(m, PackedBinary)
        if kind == "conv2d" and x.layout not in (_NHWC, _BITS):
            raise ExportError(f"{label}: expects a 4-D image tensor")
        # Linear: tokens/batch rows as an N x 1 x 1 x F image, run by a 1x1 bconv.
        lead: tuple[int, ...] = ()
        if kind == "linear":
            lead = x.shape[:-1]
            rows = int(np.prod(lead)) if lead else 1
            img = _Val(self.b.tensor((rows, 1, 1, x.shape[-1])), (rows, x.shape[-1], 1, 1), _NHWC)
            self.b.op("RESHAPE", [x.index, self.b.const(np.array(img.tfl_shape(), np.int32))], [img.index])
            x_img, stride, pads = img, (1, 1), (0, 0)
        else:
            x_img, stride, pads = x, tuple(m.stride), tuple(m.padding)
        n, c_in, h, w = x_img.shape
        c_out = m.out_channels
        signs = [s.numpy() for s in m.signs]
        if kind == "linear":
            signs = [s.reshape(s.shape[0], s.shape[1], 1, 1) for s in signs]
        kh, kw = signs[0].shape[2:]

        # XNOR-Net's runtime scale K = mean|x| per sample (per token for Linear), before any padding.
        k_val = None
        if cfg.get("input_scale") == "mean_abs":
            absx = self.unary("ABS", x_img)
            k_val = self.new((n, 1, 1, 1), _NHWC)
            self.b.op("MEAN", [absx.index, self.b.const(np.array([1, 2, 3], np.int32))], [k_val.index],
                      "ReducerOptions", keep_dims=True)
        xin = x_img

        def quantized(v: _Val) -> int:
            return x.index if x.layout == _BITS else self.quantize(v)

        if "threshold" in t:
            xin = self.binary("ADD", xin, self.channel_vec(xin, t["threshold"]))

        # Padding (see the module docstring).
        pad_value = int(cfg.get("pad_value", 0))
        ph, pw = pads
        correction = None
        if ph == 0 and pw == 0:
            mode, lce_pad = "VALID", 1
            packed = quantized(xin)
        else:
            oh, top, bottom = _same_pad(h, kh, stride[0])
            ow, left, right = _same_pad(w, kw, stride[1])
            torch_oh = (h + 2 * ph - kh) // stride[0] + 1
            torch_ow = (w + 2 * pw - kw) // stride[1] + 1
            same_ok = (oh, ow) == (torch_oh, torch_ow) and (top, left) == (ph, pw)
            # LCE's zero-padding correction is wrong when the input is smaller than the kernel (a
            # window padded on both sides; measured with LCE 0.16): such layers take the explicit path.
            if same_ok and (pad_value == 1 or (pad_value == 0 and self.lce_zero_padding and h >= kh and w >= kw)):
                mode, lce_pad = "SAME", pad_value
                packed = quantized(xin)
            elif pad_value == -1:
                mode, lce_pad = "VALID", 1
                packed = self.quantize(self.pad(xin, (ph, ph, pw, pw), -1.0))
            else:  # +1: pad the bit-packed words with 0 bits; 0: the same, then remove the +1 taps' sum
                mode, lce_pad = "VALID", 1
                q = quantized(xin)
                qv = _Val(q, (n, (c_in + 31) // 32, h, w), _NHWC)
                packed = self.pad(qv, (ph, ph, pw, pw), None, dtype=np.int32).index
                if pad_value == 0:
                    border = F.pad(torch.zeros(1, c_in, h, w, dtype=torch.float64), (pw, pw, ph, ph), value=1.0)
                    w_raw = sum(
                        (s.double() * sc.double().reshape(-1, 1, 1, 1)
                         * (1.0 if mk is None else mk.double()))
                        for s, sc, mk in zip(m.signs, m.plane_scales, m.masks)
                    )
                    correction = F.conv2d(border, w_raw, stride=stride)[0]  # (C_out, Ho, Wo)
        oh = out_shape[2] if kind == "conv2d" else 1
        ow = out_shape[3] if kind == "conv2d" else 1
        out_nhwc = (n, oh, ow, c_out)

        # Scales: y = epilogue(K · S ⊙ (Σ_j μ_j acc_j − corr)); epilogue = ·P + b → PReLU → clamp.
        out_scale = t.get("out_scale")
        spatial = out_scale is not None and out_scale.dim() > 1
        post_scale, post_bias = t.get("post_scale"), t.get("post_bias")
        per_channel = torch.ones(c_out, dtype=torch.float64)
        fold = k_val is None and not spatial  # everything folds into the bconv's multiplier/bias
        if fold:
            if out_scale is not None:
                per_channel = per_channel * out_scale.double().reshape(-1)
            if post_scale is not None:
                per_channel = per_channel * post_scale.double()
        terms: list[tuple[np.ndarray, torch.Tensor]] = []
        for s, sc, mk in zip(signs, m.plane_scales, m.masks):
            mu = sc.double().reshape(-1)
            if mk is None:
                terms.append((s, mu))
            else:
                mask = mk.numpy().reshape(s.shape)
                terms.append((np.where(mask, s, 1.0), mu / 2))
                terms.append((np.where(mask, s, -1.0), mu / 2))
        clamp = cfg.get("clamp")
        prelu = t.get("prelu")
        if (kind == "conv2d" and len(terms) == 1 and fold and correction is None and (mode, lce_pad) != ("SAME", 0)
                and (prelu is None or bool((prelu > 0).all()))
                and (clamp is None or float(clamp[0]) < 0 <= float(clamp[1]))
                and self.feeds_only_a_sign(node)):
            # sign(act(y)) = sign(y) here (positive PReLU slopes, a clamp around 0); with
            # y = (K − 2a)·m + b, y < 0 ⟺ a > (K + b/m)/2 for m > 0 (a negative m flips the filter).
            s, mu = terms[0]
            mult = (per_channel * mu).numpy()
            bias = post_bias.double().numpy() if post_bias is not None else np.zeros(c_out)
            s = np.where((mult < 0).reshape(-1, 1, 1, 1), -s, s)
            k_taps = kh * kw * c_in
            m_abs = np.abs(mult)
            with np.errstate(divide="ignore", invalid="ignore"):
                thr = np.where(m_abs > 0, np.floor((k_taps + bias / np.where(m_abs > 0, m_abs, 1.0)) / 2),
                               np.where(bias < 0, -1, k_taps))
            thr = np.clip(thr, -1, k_taps)
            idx = self.bconv(packed, s, c_in, stride, mode, lce_pad, m_abs, bias, out_nhwc, thresholds=thr)
            return _Val(idx, (n, c_out, oh, ow), _BITS)
        acc: _Val | None = None
        for i, (s, mu) in enumerate(terms):
            bias = np.zeros(c_out)
            if i == 0 and fold and post_bias is not None:
                bias = post_bias.double().numpy()
            idx = self.bconv(packed, s, c_in, stride, mode, lce_pad, (per_channel * mu).numpy(), bias, out_nhwc)
            val = _Val(idx, (n, c_out, oh, ow), _NHWC)
            acc = val if acc is None else self.binary("ADD", acc, val)
        assert acc is not None
        if correction is not None:
            corr = -correction * (per_channel.reshape(-1, 1, 1) if fold else 1.0)
            acc = self.binary("ADD", acc, corr.permute(1, 2, 0).unsqueeze(0).float().numpy())
        if not fold:
            if out_scale is not None:
                s_arr = out_scale.double()
                if spatial:
                    if kind != "conv2d":
                        raise ExportError(f"{label}: a spatial output scale needs a conv2d layer")
                    s_np = s_arr.permute(1, 2, 0).unsqueeze(0).float().numpy()
                else:
                    s_np = s_arr.reshape(-1).float().numpy()
                acc = self.binary("MUL", acc, s_np)
            if k_val is not None:
                acc = self.binary("MUL", acc, k_val)
            if post_scale is not None:
                acc = self.binary("MUL", acc, post_scale.float().numpy())
            if post_bias is not None:
                acc = self.binary("ADD", acc, post_bias.float().numpy())
        y = acc
        if "prelu" in t:
            y = self.prelu(y, t["prelu"])
        if "clamp" in cfg:
            y = self.clamp(y, float(cfg["clamp"][0]), float(cfg["clamp"][1]))
        if kind == "linear":
            out = _Val(self.b.tensor(out_shape), out_shape, _SAME)
            self.b.op("RESHAPE", [y.index, self.b.const(np.array(out_shape, np.int32))], [out.index])
            return out
        return y

    def weight_only(self, m: PackedBinaryWeightOnly, x: _Val, label: str, out_shape: tuple[int, ...]) -> _Val:
        """Binary weights with real activations: a float conv/linear with the ±scale weight."""
        t = m._tensors
        if m.kind == "linear":
            y = self.linear(x, m.weight, None, out_shape)
        else:
            conv = nn.Conv2d(m.weight_shape[1], m.weight_shape[0], tuple(m.weight_shape[2:]), tuple(m.stride),
                             tuple(m.padding), bias=False)
            y = self.conv(x, m.weight, None, conv, label, out_shape)
        scale = t.get("out_scale")
        if scale is not None and scale.dim() > 1:
            y = self.binary("MUL", y, scale.permute(1, 2, 0).unsqueeze(0).float().numpy())
        if "post_scale" in t:
            y = self.binary("MUL", y, self.channel_vec(y, t["post_scale"]))
        if "post_bias" in t:
            y = self.binary("ADD", y, self.channel_vec(y, t["post_bias"]))
        if "prelu" in t:
            y = self.prelu(y, t["prelu"])
        if "clamp" in m.config:
            y = self.clamp(y, float(m.config["clamp"][0]), float(m.config["clamp"][1]))
        return y

    # -- full-precision layers -------------------------------------------------------------------
    def conv(self, x: _Val, weight: Tensor, bias: Tensor | None, m: nn.Conv2d, label: str,
             out_shape: tuple[int, ...]) -> _Val:
        if x.layout != _NHWC:
            raise ExportError(f"{label}: expects a 4-D image tensor")
        if m.padding_mode != "zeros" and any(m._reversed_padding_repeated_twice):
            raise ExportError(f"{label}: padding_mode={m.padding_mode!r} is not supported by to_lce; use 'zeros'")
        left, right, top, bottom = m._reversed_padding_repeated_twice
        if any((left, right, top, bottom)):
            x = self.pad(x, (top, bottom, left, right), None)
        w = weight.detach().float()
        c_out, c_in_g = w.shape[:2]
        b = np.zeros(c_out, np.float32) if bias is None else bias.detach().float().numpy()
        out = self.new(out_shape, _NHWC)
        dil = tuple(m.dilation)
        if m.groups == 1:
            self.b.op("CONV_2D", [x.index, self.b.const(w.permute(0, 2, 3, 1).numpy()), self.b.const(b)],
                      [out.index], "Conv2DOptions", padding=1, stride_w=m.stride[1], stride_h=m.stride[0],
                      dilation_w_factor=dil[1], dilation_h_factor=dil[0])
        elif m.groups == m.in_channels and c_in_g == 1:
            self.b.op("DEPTHWISE_CONV_2D",
                      [x.index, self.b.const(w.permute(1, 2, 3, 0).numpy()), self.b.const(b)], [out.index],
                      "DepthwiseConv2DOptions", padding=1, stride_w=m.stride[1], stride_h=m.stride[0],
                      depth_multiplier=c_out // m.in_channels, dilation_w_factor=dil[1], dilation_h_factor=dil[0])
        else:
            raise ExportError(f"{label}: groups={m.groups} (neither 1 nor depthwise) has no TFLite builtin")
        return out

    def linear(self, x: _Val, weight: Tensor, bias: Tensor | None, out_shape: tuple[int, ...]) -> _Val:
        if x.layout == _NHWC:
            x = self.to_torch_order(x)
        w = weight.detach().float().numpy()
        b = np.zeros(w.shape[0], np.float32) if bias is None else bias.detach().float().numpy()
        out = self.new(out_shape, _SAME)
        self.b.op("FULLY_CONNECTED", [x.index, self.b.const(w), self.b.const(b)], [out.index],
                  "FullyConnectedOptions", keep_num_dims=len(x.shape) > 2)
        return out

    def pool(self, x: _Val, m: nn.Module, label: str, out_shape: tuple[int, ...]) -> _Val:
        def pair(v: Any) -> tuple[int, int]:
            return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

        if x.layout != _NHWC:
            raise ExportError(f"{label}: expects a 4-D image tensor")
        k, s, p = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
        is_max = isinstance(m, nn.MaxPool2d)
        if is_max and pair(m.dilation) != (1, 1):
            raise ExportError(f"{label}: dilated max-pooling has no TFLite builtin")
        if not is_max and getattr(m, "divisor_override", None):
            raise ExportError(f"{label}: divisor_override has no TFLite builtin")
        floor_out = tuple((x.shape[2 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2))
        if tuple(out_shape[2:]) != floor_out:
            raise ExportError(f"{label}: ceil_mode=True changes the output size here ({tuple(out_shape[2:])} vs "
                              f"{floor_out}); TFLite pools have no ceil mode")
        padding = 1  # VALID
        if p != (0, 0):
            same = [_same_pad(x.shape[2 + i], k[i], s[i]) for i in range(2)]
            same_ok = all(same[i][0] == floor_out[i] and same[i][1] == p[i] for i in range(2))
            if is_max:
                # torch pads max-pool with -inf: an explicit PADV2 with the lowest float is the same.
                x = self.pad(x, (p[0], p[0], p[1], p[1]), float(np.finfo(np.float32).min))
            elif m.count_include_pad:
                x = self.pad(x, (p[0], p[0], p[1], p[1]), None)
            elif same_ok:
                padding = 0  # TFLite's SAME average excludes the padded taps, as count_include_pad=False
            else:
                raise ExportError(f"{label}: count_include_pad=False with this padding has no TFLite equivalent")
        out = self.new(out_shape, _NHWC)
        self.b.op("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", [x.index], [out.index], "Pool2DOptions",
                  padding=padding, stride_w=s[1], stride_h=s[0], filter_width=k[1], filter_height=k[0])
        return out

    def adaptive_avg(self, x: _Val, out_shape: tuple[int, ...], label: str) -> _Val:
        if x.layout != _NHWC:
            raise ExportError(f"{label}: expects a 4-D image tensor")
        (h, w), (oh, ow) = x.shape[2:], out_shape[2:]
        if (oh, ow) == (h, w):
            return x
        out = self.new(out_shape, _NHWC)
        if (oh, ow) == (1, 1):
            self.b.op("MEAN", [x.index, self.b.const(np.array([1, 2], np.int32))], [out.index],
                      "ReducerOptions", keep_dims=True)
        elif h % oh == 0 and w % ow == 0:
            self.b.op("AVERAGE_POOL_2D", [x.index], [out.index], "Pool2DOptions", padding=1, stride_w=w // ow,
                      stride_h=h // oh, filter_width=w // ow, filter_height=h // oh)
        else:
            raise ExportError(f"{label}: adaptive pooling from {(h, w)} to {(oh, ow)} (not a divisor) has no "
                              "TFLite builtin")
        return out

    def reshape(self, x: _Val, shape: tuple[int, ...]) -> _Val:
        if tuple(shape) == x.shape:
            return x
        x = self.to_torch_order(x)
        out = _Val(self.b.tensor(shape), shape, _SAME)
        self.b.op("RESHAPE", [x.index, self.b.const(np.array(shape, np.int32))], [out.index])
        return self.from_torch_order(out)

    # -- functions and tensor methods ------------------------------------------------------------
    def function(self, node: fx.Node) -> Any:
        target = node.target
        args = [self.arg(a) for a in node.args]
        kwargs = {k: self.arg(v) for k, v in node.kwargs.items()}
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        def has_val(v: Any) -> bool:
            return isinstance(v, _Val) or (isinstance(v, (list, tuple)) and any(has_val(u) for u in v))

        if not has_val(args) and not has_val(list(kwargs.values())):
            # Python-level values (x.size(0), shapes, constants): evaluate on the example's metadata.
            if name == "size":
                shape = node.args[0].meta["tensor_meta"].shape
                return tuple(shape) if len(args) < 2 else int(shape[args[1]])
            if target is getattr and args[1] == "shape":
                return tuple(node.args[0].meta["tensor_meta"].shape)
            if callable(target) and not isinstance(target, str):
                return target(*args, **kwargs)
            raise ExportError(f"node {node.name!r}: .{name}() on a non-tensor value is not supported by to_lce")
        if name in ("add", "iadd", "sub", "mul", "imul", "truediv", "div") or target in (
                operator.add, operator.sub, operator.mul, operator.truediv):
            return self.arith(node, name, args)
        if name in ("size", "dim"):
            shape = tuple(node.args[0].meta["tensor_meta"].shape)
            if name == "dim":
                return len(shape)
            return shape if len(args) < 2 else shape[args[1]]
        if target is getattr and args[1] == "shape":
            return tuple(node.args[0].meta["tensor_meta"].shape)
        if name in ("contiguous", "float", "clone", "detach"):
            return args[0]
        if name in ("flatten", "view", "reshape"):
            return self.reshape(args[0], self.out_shape(node))
        if name in ("relu", "relu_"):
            return self.clamp(args[0], 0.0, math.inf)
        if name == "hardtanh":
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            return self.clamp(args[0], float(lo), float(hi))
        if name == "cat":
            vals = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return self.concat(vals, dim, self.out_shape(node))
        if name == "mean":
            return self.mean(node, args, kwargs)
        if name == "pad":
            return self.fpad(args, kwargs, node)
        if name == "getitem" and isinstance(args[0], _Val):
            return self.slice(args[0], args[1], self.out_shape(node))
        raise ExportError(f"node {node.name!r} calls {name}, which to_lce does not translate; supported: {SUPPORTED}")

    def arith(self, node: fx.Node, name: str, args: list[Any]) -> _Val:
        op = {"add": "ADD", "iadd": "ADD", "sub": "SUB", "mul": "MUL", "imul": "MUL", "truediv": "DIV",
              "div": "DIV"}[name]
        a, b = args[0], args[1]
        out_shape = self.out_shape(node)
        if not isinstance(a, _Val):  # number op tensor
            if op in ("ADD", "MUL"):
                a, b = b, a
            else:
                const = self.b.const(np.array(float(a), np.float32))
                out = self.new(out_shape, b.layout)
                self.b.op(op, [const, b.index], [out.index], "SubOptions" if op == "SUB" else "DivOptions")
                return out
        if isinstance(b, Tensor):
            if b.numel() != 1:
                raise ExportError(f"node {node.name!r}: {name} with a constant tensor of shape {tuple(b.shape)} "
                                  "is not supported (numbers only)")
            b = float(b)
        if isinstance(b, (int, float)):
            return self.binary(op, a, np.array(float(b), np.float32), out_shape)
        if a.layout != b.layout or a.shape != b.shape:
            if a.layout == _NHWC and b.layout == _NHWC and len(b.shape) == 4:
                return self.binary(op, a, b, out_shape)  # broadcasting between images
            raise ExportError(f"node {node.name!r}: {name} of tensors shaped {a.shape} and {b.shape} "
                              "(broadcasting across layouts) is not supported by to_lce")
        return self.binary(op, a, b, out_shape)

    def concat(self, vals: Sequence[Any], dim: int, out_shape: tuple[int, ...]) -> _Val:
        if not all(isinstance(v, _Val) for v in vals) or len({v.layout for v in vals}) != 1:
            raise ExportError("torch.cat of tensors in different layouts is not supported by to_lce")
        layout = vals[0].layout
        rank = len(vals[0].shape)
        dim = dim % rank
        axis = _TO_NHWC_AXIS[dim] if layout == _NHWC else dim
        out = self.new(out_shape, layout)
        self.b.op("CONCATENATION", [v.index for v in vals], [out.index], "ConcatenationOptions", axis=axis)
        return out

    def mean(self, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> _Val:
        x = args[0]
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
        rank = len(x.shape)
        dims = list(range(rank)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
        dims = sorted(d % rank for d in dims)
        axes = [_TO_NHWC_AXIS[d] for d in dims] if x.layout == _NHWC else dims
        out_shape = self.out_shape(node)
        layout = x.layout if keep else _SAME
        if x.layout == _NHWC and not keep:
            kept = [d for d in range(4) if d not in dims]
            if [_TO_NHWC_AXIS[d] for d in kept] != sorted(_TO_NHWC_AXIS[d] for d in kept):
                raise ExportError(f"node {node.name!r}: mean over {dims} without keepdim would reorder axes")
        out = self.new(out_shape, layout)
        self.b.op("MEAN", [x.index, self.b.const(np.array(axes, np.int32))], [out.index], "ReducerOptions",
                  keep_dims=keep)
        return out

    def fpad(self, args: list[Any], kwargs: dict[str, Any], node: fx.Node) -> _Val:
        x, pads = args[0], list(args[1])
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else 0.0)
        if mode != "constant":
            raise ExportError(f"node {node.name!r}: F.pad mode={mode!r} is not supported by to_lce (constant only)")
        rank = len(x.shape)
        pairs = [[0, 0] for _ in range(rank)]
        for i in range(len(pads) // 2):
            pairs[rank - 1 - i] = [pads[2 * i], pads[2 * i + 1]]
        if x.layout == _NHWC:
            pairs = [pairs[0], pairs[2], pairs[3], pairs[1]]
        out = self.new(self.out_shape(node), x.layout)
        paddings = self.b.const(np.array(pairs, np.int32))
        self.b.op("PADV2", [x.index, paddings, self.b.const(np.array(value or 0.0, np.float32))], [out.index])
        return out

    def slice(self, x: _Val, index: Any, out_shape: tuple[int, ...]) -> _Val:
        items = index if isinstance(index, tuple) else (index,)
        rank = len(x.shape)
        if any(not isinstance(s, slice) for s in items) or len(items) > rank:
            raise ExportError(f"indexing with {index!r} is not supported by to_lce (slices only)")
        begin, end, strides = [], [], []
        for d in range(rank):
            s = items[d] if d < len(items) else slice(None)
            start, stop, step = s.indices(x.shape[d])
            if step < 1:
                raise ExportError("negative slice steps are not supported by to_lce")
            begin.append(start)
            end.append(stop)
            strides.append(step)
        if x.layout == _NHWC:
            perm = [0, 2, 3, 1]
            begin, end, strides = ([v[p] for p in perm] for v in (begin, end, strides))
        out = self.new(out_shape, x.layout)
        self.b.op("STRIDED_SLICE", [x.index, self.b.const(np.array(begin, np.int32)),
                                    self.b.const(np.array(end, np.int32)), self.b.const(np.array(strides, np.int32))],
                  [out.index], "StridedSliceOptions")
        return out


def _check_activations(model: nn.Module) -> None:
    """Refuse layers whose activations are quantized to several bits at run time (HBNN's
    ``activations="hetero"``): LCE's ops binarize with one sign, and the packed form of such a layer
    does not record it."""
    for name, layer in model.named_modules():
        if isinstance(layer, BinaryLayer) and getattr(layer, "binarize_activations", False) \
                and getattr(layer.method, "multibit", False):
            try:
                form = layer.inference_form()
            except ValueError:
                continue  # export() reports it with its own message
            if form.input_bits is not None:
                raise ExportError(
                    f"layer {name!r} ({type(layer).__name__}, {layer.method.name}): multi-bit activations "
                    f"(bits {form.input_bits}) have no LCE op; use activations='sign' to deploy to LCE"
                )


def to_lce_bytes(model_or_packed: nn.Module, example_input: Tensor | Sequence[Tensor], *,
                 lce_zero_padding: bool = True) -> bytes:
    """The TFLite flatbuffer of :func:`to_lce`, as bytes (nothing written)."""
    if isinstance(example_input, Tensor):
        example: tuple[Tensor, ...] = (example_input,)
    elif isinstance(example_input, (tuple, list)) and all(isinstance(t, Tensor) for t in example_input):
        example = tuple(example_input)
    else:
        raise TypeError("example_input must be a tensor (or a tuple of tensors) of the shape to deploy, "
                        f"got {type(example_input).__name__}")
    example = tuple(t.detach().float().cpu().contiguous() for t in example)
    if isinstance(model_or_packed, PackedModel):
        packed = model_or_packed
    elif isinstance(model_or_packed, nn.Module):
        _check_activations(model_or_packed)
        try:
            packed = export(model_or_packed)
        except ExportError:
            raise
        except NotDeployableError as err:  # one exception type for everything to_lce refuses
            raise ExportError(str(err)) from None
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
