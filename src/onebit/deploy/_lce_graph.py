"""The TFLite graph that :func:`onebit.deploy.lce.to_lce` writes, in torch's terms.

:class:`_Graph` emits TFLite builtins and LCE's custom ops (``LceQuantize``, ``LceBconv2d``,
``LceBMaxPool2d``, ``LceDequantize``) for values that keep their torch shape and say how their axes
are stored (:class:`_Val`); it decides nothing about a model. The node handlers that use it (what
each fx node becomes, and what LCE cannot express) are in :mod:`onebit.deploy._lce_nodes`; the
conventions of LCE's ops are in :mod:`onebit.deploy.lce`'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, fx, nn

from .errors import ExportError

__all__ = ["pack_filter"]

_NHWC = "nhwc"  # a 4-D torch tensor (N, C, H, W) stored as (N, H, W, C)
_SAME = "same"  # stored in torch's own order
_BITS = "bits"  # a ±1 (N, C, H, W) tensor stored bit-packed: int32 (N, H, W, ceil(C/32)) from a bconv
_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}


def pack_filter(signs: np.ndarray) -> np.ndarray:
    """±1 filter ``(O, I, kh, kw)`` (torch layout) → LCE's OHWI int32 filter bit-packed along I:
    channel ``32·w + i`` in bit ``i`` of word ``w``, bit set = −1, unused bits 0."""
    o, i, kh, kw = signs.shape
    words = (i + 31) // 32
    neg = np.zeros((o, kh, kw, words * 32), dtype=np.uint8)
    neg[..., :i] = (signs.transpose(0, 2, 3, 1) < 0)
    packed = np.packbits(neg, axis=-1, bitorder="little")  # 4 bytes per word, little-endian
    return np.ascontiguousarray(packed).view("<i4").reshape(o, kh, kw, words).astype(np.int32)



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


def out_shape_of(node: fx.Node) -> tuple[int, ...]:
    """The torch shape of a node's single tensor output (from ShapeProp)."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise ExportError(f"node {node.name!r} does not produce one tensor")
    return tuple(meta.shape)


class _Graph:
    """Emits TFLite tensors and operators for torch-shaped values (see the module docstring)."""

    def __init__(self) -> None:
        try:
            from ._tflite_builder import ModelBuilder
        except ImportError as err:
            raise ImportError(f"to_lce writes TFLite flatbuffers with the `tflite` and `flatbuffers` packages "
                              f"({err}); pip install 'tflite>=2.10' 'flatbuffers>=23'") from None
        self.b = ModelBuilder()

    @staticmethod
    def out_shape(node: fx.Node) -> tuple[int, ...]:
        return out_shape_of(node)

    # -- tensors and element-wise operators ------------------------------------------------------
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

    def channel_vec(self, x: _Val, v: Tensor | np.ndarray, features_last: bool = False) -> np.ndarray:
        """A per-channel vector shaped to broadcast against ``x`` in its TFLite layout: the channel is
        torch's dim 1, or its last dim with ``features_last`` (tokens, as ``LearnableBias`` takes them)."""
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, Tensor) else v, dtype=np.float32).reshape(-1)
        if features_last and len(x.shape) > 2:  # torch's last dim: W, which NHWC keeps before C
            return arr.reshape(-1, 1) if x.layout == _NHWC else arr
        if x.layout == _NHWC or len(x.shape) <= 2:
            return arr  # channels are the last axis
        return arr.reshape((-1,) + (1,) * (len(x.shape) - 2))

    @staticmethod
    def channel_count(x: _Val, features_last: bool = False) -> int:
        """The size of ``x``'s channel axis (torch's dim 1, or its last with ``features_last``)."""
        return int(x.shape[-1] if features_last or len(x.shape) <= 2 else x.shape[1])

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

    def prelu(self, x: _Val, slope: Tensor, features_last: bool = False) -> _Val:
        """PReLU with one slope per channel (or one for all), the channel axis as :meth:`channel_vec`'s."""
        alpha = slope.detach().float().reshape(-1).numpy()
        if alpha.size == 1:
            alpha = np.full(self.channel_count(x, features_last), alpha[0], np.float32)
        out = self.new(x.shape, x.layout)
        self.b.op("PRELU", [x.index, self.b.const(self.channel_vec(x, alpha, features_last))], [out.index])
        return out

    # -- LCE ops ---------------------------------------------------------------------------------
    def quantize(self, x: _Val) -> int:
        """LceQuantize: the signs of ``x`` bit-packed along its last TFLite axis (any rank)."""
        *outer, c = x.tfl_shape()
        out = self.b.tensor((*outer, (c + 31) // 32), np.int32)
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
