"""What each node of an exported graph becomes in LCE's TFLite graph: one handler per node kind.

As in Brevitas's export managers, :class:`_Exporter` walks the fx graph and gives each node to the
handler of its kind; a handler *validates* the node (what LCE cannot express raises one
:class:`~onebit.deploy.errors.ExportError` naming the layer), *prepares* what it computes without
touching the graph (constants, padding and threshold decisions), then *emits* the operators through
:class:`~onebit.deploy._lce_graph._Graph`. Binary layers are read from their
:class:`~onebit.deploy.description.PackedLayerDescription`; :func:`supports` is LCE's one decision
about which descriptions it runs.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..nn.blocks import LearnableBias, RPReLU, RSign
from ._lce_graph import _BITS, _NHWC, _SAME, _Graph, _same_pad, _Val
from .description import InputScale, LayerKind, PackedLayerDescription, require
from .errors import ExportError
from .packed import PackedBinary, PackedBinaryWeightOnly, _PackedBase

__all__ = ["supports", "SUPPORTED"]

#: What the exporter translates besides binary layers (for the error message and the README).
SUPPORTED = (
    "Conv2d (any groups=1 or depthwise, dilation, zero padding), Linear, BatchNorm1d/2d, ReLU, ReLU6, "
    "Hardtanh, PReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Softmax(last dim), Identity, Dropout, Flatten, "
    "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, LearnableBias, RSign, RPReLU; +, -, *, / (tensors or "
    "numbers), torch.cat, flatten/view/reshape, mean, F.pad (constant), slicing with steps, relu, "
    "hardtanh, contiguous"
)

def supports(d: PackedLayerDescription) -> str | None:
    """Whether onebit's LCE export runs the layer ``d``: None, or why not."""
    if d.input_bits is not None:
        return (f"multi-bit activations of {d.method} (bits {d.input_bits}) have no LCE op; use "
                "activations='sign' to deploy to LCE")
    if d.kind == LayerKind.CONV1D:
        return "binary Conv1d layers are not exported to LCE (2-D convolutions only)"
    g = d.geometry
    if g.groups != 1 and d.in_channels == d.out_channels == g.groups:
        return (f"binary depthwise convolutions (groups={g.groups}) are not exported to LCE by onebit; keep "
                "the layer in full precision for an LCE export")
    if g.groups != 1:
        return (f"groups={g.groups} (in_channels={d.in_channels}, out_channels={d.out_channels}): LCE's bconv "
                "runs groups=1 only; keep the layer in full precision for an LCE export")
    if any(x != 1 for x in g.dilation):
        return f"dilation={g.dilation}: dilated binary convolutions are not exported to LCE by onebit"
    if not g.symmetric:
        return f"asymmetric padding {g.pads()}: use an odd kernel or explicit symmetric padding"
    if g.padding_mode != "zeros" and any(p for pair in g.padding for p in pair):
        return (f"padding_mode={g.padding_mode!r} pads the real input before binarization; LCE exports "
                "support padding_mode='zeros' only")
    return None


@dataclass
class _Node:
    """One call_module node as its handler sees it."""

    node: fx.Node
    module: nn.Module
    x: Any  # the first argument, as a graph value
    label: str

    @property
    def out_shape(self) -> tuple[int, ...]:
        return _Graph.out_shape(self.node)


# --------------------------------------------------------------------------------------------------
# Binary layers
# --------------------------------------------------------------------------------------------------
@dataclass
class _BconvPlan:
    """What a packed binary layer becomes, decided before anything is emitted."""

    n: int
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int]
    out_hw: tuple[int, int]
    mode: str  # the bconv's padding, "VALID" or "SAME"
    lce_pad: int  # its pad_values
    route: str  # how the input is packed: "direct", "pad_real" (PADV2 −1) or "pad_bits" (PAD of words)
    correction: Tensor | None  # (C_out, Ho, Wo) float64 to subtract: 0-padding as +1 padding minus this
    fold: bool  # every scale and the bias go into the bconv's multiplier/bias
    per_channel: Tensor  # float64 (C_out,): the folded output and post scales
    terms: list[tuple[np.ndarray, Tensor]]  # ±1 filters (O, I, kh, kw) and their multipliers
    bits_out: bool  # write the next layer's sign bits through thresholds


def _padding_route(d: PackedLayerDescription, hw: tuple[int, int], kernel: tuple[int, int],
                   stride: tuple[int, int], pads: tuple[int, int], lce_zero_padding: bool) -> tuple[str, int, str]:
    """(bconv padding, pad_values, input route) for onebit's padding (see lce's module docstring)."""
    (h, w), (kh, kw), (ph, pw) = hw, kernel, pads
    if ph == 0 and pw == 0:
        return "VALID", 1, "direct"
    oh, top, _ = _same_pad(h, kh, stride[0])
    ow, left, _ = _same_pad(w, kw, stride[1])
    torch_out = ((h + 2 * ph - kh) // stride[0] + 1, (w + 2 * pw - kw) // stride[1] + 1)
    same_ok = (oh, ow) == torch_out and (top, left) == (ph, pw)
    # LCE's zero-padding correction is wrong when the input is smaller than the kernel (a window
    # padded on both sides; measured with LCE 0.16): such layers take the explicit path.
    if same_ok and (d.pad_value == 1 or (d.pad_value == 0 and lce_zero_padding and h >= kh and w >= kw)):
        return "SAME", d.pad_value, "direct"
    return "VALID", 1, "pad_real" if d.pad_value == -1 else "pad_bits"


def _zero_pad_correction(d: PackedLayerDescription, c_in: int, hw: tuple[int, int], stride: tuple[int, int],
                         pads: tuple[int, int]) -> Tensor:
    """``Σ_{padded taps} W`` per output position, (C_out, Ho, Wo) in float64: what +1 padding adds
    where 0-padding adds nothing."""
    (h, w), (ph, pw) = hw, pads
    border = F.pad(torch.zeros(1, c_in, h, w, dtype=torch.float64), (pw, pw, ph, ph), value=1.0)
    w_raw = sum(
        (s.double() * sc.double().reshape(-1, 1, 1, 1) * (1.0 if mk is None else mk.double()))
        for s, sc, mk in zip(d.signs(), d.plane_scales, d.masks())
    )
    return F.conv2d(border, w_raw, stride=stride)[0]


def _plane_terms(d: PackedLayerDescription, signs: list[np.ndarray]) -> list[tuple[np.ndarray, Tensor]]:
    """One ±1 filter per bconv: a masked plane ``m ⊙ B`` is written as ``(B' + B'')/2``."""
    terms: list[tuple[np.ndarray, Tensor]] = []
    for s, sc, mk in zip(signs, d.plane_scales, d.masks()):
        mu = sc.double().reshape(-1)
        if mk is None:
            terms.append((s, mu))
        else:
            mask = mk.numpy().reshape(s.shape)
            terms.append((np.where(mask, s, 1.0), mu / 2))
            terms.append((np.where(mask, s, -1.0), mu / 2))
    return terms


def _folded_scale(d: PackedLayerDescription, fold: bool) -> Tensor:
    per_channel = torch.ones(d.out_channels, dtype=torch.float64)
    if fold:
        if d.output_scale is not None:
            per_channel = per_channel * d.output_scale.double().reshape(-1)
        if d.epilogue.post_scale is not None:
            per_channel = per_channel * d.epilogue.post_scale.double()
    return per_channel


def _sign_preserving_epilogue(d: PackedLayerDescription) -> bool:
    """sign(act(y)) = sign(y): PReLU with positive slopes, a clamp around 0."""
    prelu, clamp = d.epilogue.prelu, d.epilogue.clamp
    return (prelu is None or bool((prelu > 0).all())) and (clamp is None or float(clamp[0]) < 0 <= float(clamp[1]))


def _bit_thresholds(plan: _BconvPlan, d: PackedLayerDescription) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """(filter, |multiplier|, bias, thresholds) of a bconv writing sign bits: with
    ``y = (K − 2a)·m + b``, ``y < 0 ⟺ a > (K + b/m)/2`` for m > 0 (a negative m flips the filter)."""
    s, mu = plan.terms[0]
    mult = (plan.per_channel * mu).numpy()
    post_bias = d.epilogue.post_bias
    bias = post_bias.double().numpy() if post_bias is not None else np.zeros(plan.c_out)
    s = np.where((mult < 0).reshape(-1, 1, 1, 1), -s, s)
    k_taps = plan.kernel[0] * plan.kernel[1] * plan.c_in
    m_abs = np.abs(mult)
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = np.where(m_abs > 0, np.floor((k_taps + bias / np.where(m_abs > 0, m_abs, 1.0)) / 2),
                       np.where(bias < 0, -1, k_taps))
    return s, m_abs, bias, np.clip(thr, -1, k_taps)


class _BinaryLayerHandler:
    """A :class:`PackedBinary`: ``LceQuantize`` (or bits from the layer before) → ``LceBconv2d`` per
    bit plane → the scales and epilogue LCE's multiplier/bias cannot hold."""

    def __init__(self, exporter: _Exporter) -> None:
        self.ex, self.g = exporter, exporter.g

    def validate(self, n: _Node) -> None:
        m = n.module
        if not isinstance(n.x, _Val):
            raise ExportError(f"{n.label}: its input is not a tensor")
        if n.x.layout == _BITS and not isinstance(m, PackedBinary):
            raise ExportError(f"{n.label}: internal error, bit-packed input to a non-binary layer")
        require(supports, m.description, n.label)
        if isinstance(m, PackedBinary) and m.kind == "conv2d" and n.x.layout not in (_NHWC, _BITS):
            raise ExportError(f"{n.label}: expects a 4-D image tensor")

    def prepare(self, n: _Node) -> _BconvPlan:
        d: PackedLayerDescription = n.module.description
        linear = d.kind == LayerKind.LINEAR
        if linear:  # tokens/batch rows as an N x 1 x 1 x F image, run by a 1x1 bconv
            lead = n.x.shape[:-1]
            shape, stride, pads = (int(np.prod(lead)) if lead else 1, n.x.shape[-1], 1, 1), (1, 1), (0, 0)
        else:
            shape, stride, pads = n.x.shape, tuple(n.module.stride), tuple(n.module.padding)
        batch, c_in, h, w = shape
        signs = [s.numpy() for s in d.signs()]
        if linear:
            signs = [s.reshape(s.shape[0], s.shape[1], 1, 1) for s in signs]
        kernel = tuple(signs[0].shape[2:])
        mode, lce_pad, route = _padding_route(d, (h, w), kernel, stride, pads, self.ex.lce_zero_padding)
        correction = None
        if route == "pad_bits" and d.pad_value == 0:
            correction = _zero_pad_correction(d, c_in, (h, w), stride, pads)
        fold = d.input_scale != InputScale.MEAN_ABS and not d.spatial_output_scale
        terms = _plane_terms(d, signs)
        out_hw = (1, 1) if linear else tuple(n.out_shape[2:])
        plan = _BconvPlan(batch, c_in, d.out_channels, kernel, stride, pads, out_hw, mode, lce_pad, route,
                          correction, fold, _folded_scale(d, fold), terms, bits_out=False)
        plan.bits_out = (not linear and len(terms) == 1 and fold and correction is None
                         and (mode, lce_pad) != ("SAME", 0) and _sign_preserving_epilogue(d)
                         and self.ex.feeds_only_a_sign(n.node))
        return plan

    def emit(self, n: _Node, plan: _BconvPlan) -> _Val:
        d: PackedLayerDescription = n.module.description
        x_img = self._as_image(n.x, d, plan)
        k_val = self._input_scale(x_img, plan) if d.input_scale == InputScale.MEAN_ABS else None
        xin = x_img
        if d.input_threshold is not None:
            xin = self.g.binary("ADD", xin, self.g.channel_vec(xin, d.input_threshold))
        packed = self._packed_input(n.x, xin, plan)
        out_nhwc = (plan.n, *plan.out_hw, plan.c_out)
        if plan.bits_out:
            s, m_abs, bias, thr = _bit_thresholds(plan, d)
            idx = self.g.bconv(packed, s, plan.c_in, plan.stride, plan.mode, plan.lce_pad, m_abs, bias, out_nhwc,
                               thresholds=thr)
            return _Val(idx, (plan.n, plan.c_out, *plan.out_hw), _BITS)
        y = self._accumulate(packed, d, plan)
        if not plan.fold:
            y = self._unfolded_scales(y, d, k_val, n.label)
        y = _epilogue(self.g, y, d)
        if d.kind == LayerKind.LINEAR:
            out_shape = n.out_shape
            out = _Val(self.g.b.tensor(out_shape), out_shape, _SAME)
            self.g.b.op("RESHAPE", [y.index, self.g.b.const(np.array(out_shape, np.int32))], [out.index])
            return out
        return y

    def _as_image(self, x: _Val, d: PackedLayerDescription, plan: _BconvPlan) -> _Val:
        if d.kind != LayerKind.LINEAR:
            return x
        img = _Val(self.g.b.tensor((plan.n, 1, 1, x.shape[-1])), (plan.n, x.shape[-1], 1, 1), _NHWC)
        self.g.b.op("RESHAPE", [x.index, self.g.b.const(np.array(img.tfl_shape(), np.int32))], [img.index])
        return img

    def _input_scale(self, x_img: _Val, plan: _BconvPlan) -> _Val:
        """XNOR-Net's run-time K = mean|x| per sample (per token for Linear), before any padding."""
        absx = self.g.unary("ABS", x_img)
        k_val = self.g.new((plan.n, 1, 1, 1), _NHWC)
        self.g.b.op("MEAN", [absx.index, self.g.b.const(np.array([1, 2, 3], np.int32))], [k_val.index],
                    "ReducerOptions", keep_dims=True)
        return k_val

    def _packed_input(self, x: _Val, xin: _Val, plan: _BconvPlan) -> int:
        def quantized(v: _Val) -> int:
            return x.index if x.layout == _BITS else self.g.quantize(v)

        ph, pw = plan.pads
        if plan.route == "direct":
            return quantized(xin)
        if plan.route == "pad_real":
            return self.g.quantize(self.g.pad(xin, (ph, ph, pw, pw), -1.0))
        # +1: pad the bit-packed words with 0 bits (0-padding: the same, minus the correction)
        _, _, h, w = xin.shape
        qv = _Val(quantized(xin), (plan.n, (plan.c_in + 31) // 32, h, w), _NHWC)
        return self.g.pad(qv, (ph, ph, pw, pw), None, dtype=np.int32).index

    def _accumulate(self, packed: int, d: PackedLayerDescription, plan: _BconvPlan) -> _Val:
        """``Σ_j`` one float bconv per ±1 filter (the bias on the first), minus the 0-padding correction."""
        out_nhwc = (plan.n, *plan.out_hw, plan.c_out)
        post_bias = d.epilogue.post_bias
        acc: _Val | None = None
        for i, (s, mu) in enumerate(plan.terms):
            bias = np.zeros(plan.c_out)
            if i == 0 and plan.fold and post_bias is not None:
                bias = post_bias.double().numpy()
            idx = self.g.bconv(packed, s, plan.c_in, plan.stride, plan.mode, plan.lce_pad,
                               (plan.per_channel * mu).numpy(), bias, out_nhwc)
            val = _Val(idx, (plan.n, plan.c_out, *plan.out_hw), _NHWC)
            acc = val if acc is None else self.g.binary("ADD", acc, val)
        assert acc is not None
        if plan.correction is not None:
            corr = -plan.correction * (plan.per_channel.reshape(-1, 1, 1) if plan.fold else 1.0)
            acc = self.g.binary("ADD", acc, corr.permute(1, 2, 0).unsqueeze(0).float().numpy())
        return acc

    def _unfolded_scales(self, acc: _Val, d: PackedLayerDescription, k_val: _Val | None, label: str) -> _Val:
        """The scales that vary per sample or position: output scale, K, then post scale and bias."""
        if d.output_scale is not None:
            s_arr = d.output_scale.double()
            if d.spatial_output_scale:
                if d.kind != LayerKind.CONV2D:
                    raise ExportError(f"{label}: a spatial output scale needs a conv2d layer")
                s_np = s_arr.permute(1, 2, 0).unsqueeze(0).float().numpy()
            else:
                s_np = s_arr.reshape(-1).float().numpy()
            acc = self.g.binary("MUL", acc, s_np)
        if k_val is not None:
            acc = self.g.binary("MUL", acc, k_val)
        ep = d.epilogue
        if ep.post_scale is not None:
            acc = self.g.binary("MUL", acc, ep.post_scale.float().numpy())
        if ep.post_bias is not None:
            acc = self.g.binary("ADD", acc, ep.post_bias.float().numpy())
        return acc


def _epilogue(g: _Graph, y: _Val, d: PackedLayerDescription) -> _Val:
    """PReLU, then the clamp."""
    if d.epilogue.prelu is not None:
        y = g.prelu(y, d.epilogue.prelu)
    if d.epilogue.clamp is not None:
        y = g.clamp(y, float(d.epilogue.clamp[0]), float(d.epilogue.clamp[1]))
    return y


class _WeightOnlyHandler(_BinaryLayerHandler):
    """A :class:`PackedBinaryWeightOnly`: a float conv/linear with the ±scale weight."""

    def prepare(self, n: _Node) -> None:
        return None

    def emit(self, n: _Node, plan: None) -> _Val:
        m: PackedBinaryWeightOnly = n.module
        d = m.description
        if m.kind == "linear":
            y = self.g.linear(n.x, m.weight, None, n.out_shape)
        else:
            conv = nn.Conv2d(m.weight_shape[1], m.weight_shape[0], tuple(m.weight_shape[2:]), tuple(m.stride),
                             tuple(m.padding), bias=False)
            y = self.g.conv(n.x, m.weight, None, conv, n.label, n.out_shape)
        if d.spatial_output_scale:
            y = self.g.binary("MUL", y, d.output_scale.permute(1, 2, 0).unsqueeze(0).float().numpy())
        ep = d.epilogue
        if ep.post_scale is not None:
            y = self.g.binary("MUL", y, self.g.channel_vec(y, ep.post_scale))
        if ep.post_bias is not None:
            y = self.g.binary("ADD", y, self.g.channel_vec(y, ep.post_bias))
        return _epilogue(self.g, y, d)


# --------------------------------------------------------------------------------------------------
# Full-precision modules
# --------------------------------------------------------------------------------------------------
def _batchnorm(g: _Graph, n: _Node) -> _Val:
    m, x = n.module, n.x
    if not m.track_running_stats or m.running_var is None:
        raise ExportError(f"{n.label}: BatchNorm without running statistics cannot be exported")
    s = torch.rsqrt(m.running_var.float() + m.eps) * (m.weight.detach().float() if m.affine else 1.0)
    t = (m.bias.detach().float() if m.affine else 0.0) - m.running_mean.float() * s
    if len(x.shape) == 3:
        raise ExportError(f"{n.label}: BatchNorm1d on (N, C, L) inputs is not supported by to_lce")
    return g.binary("ADD", g.binary("MUL", x, g.channel_vec(x, s)), g.channel_vec(x, t))


def _softmax(g: _Graph, n: _Node) -> _Val:
    if n.module.dim not in (-1, len(n.x.shape) - 1) or n.x.layout == _NHWC:
        raise ExportError(f"{n.label}: softmax is exported over the last dimension of a non-image tensor only")
    return g.unary("SOFTMAX", n.x, "SoftmaxOptions", beta=1.0)


def _rsign(g: _Graph, n: _Node) -> _Val:
    shift = n.module.shift
    shifted = g.binary("ADD", n.x, g.channel_vec(n.x, shift.bias, shift.features_last))
    return g.dequantize(g.quantize(shifted), shifted.shape, shifted.layout)


def _rprelu(g: _Graph, n: _Node) -> _Val:
    m, last = n.module, n.module.features_last
    y = g.binary("ADD", n.x, g.channel_vec(n.x, m.shift_in.bias, last))
    y = g.prelu(y, m.prelu.weight, last)
    return g.binary("ADD", y, g.channel_vec(y, m.shift_out.bias, last))


#: module class → what it emits; looked up along the module's MRO, so ReLU6 (a Hardtanh) finds its own.
_MODULES: dict[type, Any] = {
    nn.Conv2d: lambda g, n: g.conv(n.x, n.module.weight.detach(), n.module.bias, n.module, n.label, n.out_shape),
    nn.Linear: lambda g, n: g.linear(n.x, n.module.weight.detach(), n.module.bias, n.out_shape),
    nn.modules.batchnorm._BatchNorm: _batchnorm,
    nn.ReLU: lambda g, n: g.clamp(n.x, 0.0, math.inf),
    nn.ReLU6: lambda g, n: g.clamp(n.x, 0.0, 6.0),
    nn.Hardtanh: lambda g, n: g.clamp(n.x, float(n.module.min_val), float(n.module.max_val)),
    nn.PReLU: lambda g, n: g.prelu(n.x, n.module.weight),
    nn.LeakyReLU: lambda g, n: g.unary("LEAKY_RELU", n.x, "LeakyReluOptions", alpha=float(n.module.negative_slope)),
    nn.Sigmoid: lambda g, n: g.unary("LOGISTIC", n.x),
    nn.Tanh: lambda g, n: g.unary("TANH", n.x),
    nn.GELU: lambda g, n: g.unary("GELU", n.x, "GeluOptions", approximate=n.module.approximate == "tanh"),
    nn.SiLU: lambda g, n: g.binary("MUL", n.x, g.unary("LOGISTIC", n.x)),
    nn.Softmax: _softmax,
    nn.Flatten: lambda g, n: g.reshape(n.x, n.out_shape),
    nn.MaxPool2d: lambda g, n: g.pool(n.x, n.module, n.label, n.out_shape),
    nn.AvgPool2d: lambda g, n: g.pool(n.x, n.module, n.label, n.out_shape),
    nn.AdaptiveAvgPool2d: lambda g, n: g.adaptive_avg(n.x, n.out_shape, n.label),
    LearnableBias: lambda g, n: g.binary("ADD", n.x, g.channel_vec(n.x, n.module.bias, n.module.features_last)),
    RSign: _rsign,
    RPReLU: _rprelu,
}


def _module_emitter(m: nn.Module) -> Any:
    for cls in type(m).__mro__:
        if cls in _MODULES:
            return _MODULES[cls]
    return None


# --------------------------------------------------------------------------------------------------
# Functions and tensor methods
# --------------------------------------------------------------------------------------------------
_ARITH = ("add", "iadd", "sub", "mul", "imul", "truediv", "div")


def _has_val(v: Any) -> bool:
    return isinstance(v, _Val) or (isinstance(v, (list, tuple)) and any(_has_val(u) for u in v))


def _python_value(node: fx.Node, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A call on Python-level values (x.size(0), shapes, constants): evaluated on the example's metadata."""
    target = node.target
    if name == "size":
        shape = node.args[0].meta["tensor_meta"].shape
        return tuple(shape) if len(args) < 2 else int(shape[args[1]])
    if target is getattr and args[1] == "shape":
        return tuple(node.args[0].meta["tensor_meta"].shape)
    if callable(target) and not isinstance(target, str):
        return target(*args, **kwargs)
    raise ExportError(f"node {node.name!r}: .{name}() on a non-tensor value is not supported by to_lce")


def _shape_query(node: fx.Node, name: str, args: list[Any]) -> Any:
    shape = tuple(node.args[0].meta["tensor_meta"].shape)
    if name == "dim":
        return len(shape)
    if name == "shape":
        return shape
    return shape if len(args) < 2 else shape[args[1]]


def _hardtanh(g: _Graph, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> _Val:
    lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
    hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
    return g.clamp(args[0], float(lo), float(hi))


def _cat(g: _Graph, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> _Val:
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    return g.concat(args[0], dim, g.out_shape(node))


#: function or tensor-method name → what it emits (on graph values).
_FUNCTIONS: dict[str, Any] = {
    **{name: lambda g, node, args, kw: args[0] for name in ("contiguous", "float", "clone", "detach")},
    **{name: lambda g, node, args, kw: g.reshape(args[0], g.out_shape(node))
       for name in ("flatten", "view", "reshape")},
    **{name: lambda g, node, args, kw: g.clamp(args[0], 0.0, math.inf) for name in ("relu", "relu_")},
    "hardtanh": _hardtanh,
    "cat": _cat,
    "mean": lambda g, node, args, kw: g.mean(node, args, kw),
    "pad": lambda g, node, args, kw: g.fpad(args, kw, node),
}


def _emit_function(g: _Graph, node: fx.Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if not _has_val(args) and not _has_val(list(kwargs.values())):
        return _python_value(node, name, args, kwargs)
    if name in _ARITH or target in (operator.add, operator.sub, operator.mul, operator.truediv):
        return g.arith(node, name, args)
    if name in ("size", "dim"):
        return _shape_query(node, name, args)
    if target is getattr and args[1] == "shape":
        return _shape_query(node, "shape", args)
    if name in _FUNCTIONS:
        return _FUNCTIONS[name](g, node, args, kwargs)
    if name == "getitem" and isinstance(args[0], _Val):
        return g.slice(args[0], args[1], g.out_shape(node))
    raise ExportError(f"node {node.name!r} calls {name}, which to_lce does not translate; supported: {SUPPORTED}")


# --------------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------------
class _Exporter:
    """Walks the exported graph and hands each node to its handler (see the module docstring)."""

    def __init__(self, gm: fx.GraphModule, example: tuple[Tensor, ...], lce_zero_padding: bool = True) -> None:
        self.g = _Graph()
        self.gm = gm
        self.example = example
        self.modules = dict(gm.named_modules())
        self.env: dict[str, Any] = {}
        self.lce_zero_padding = lce_zero_padding
        self.binary_handler = _BinaryLayerHandler(self)
        self.weight_only_handler = _WeightOnlyHandler(self)

    def run(self) -> bytes:
        ShapeProp(self.gm).propagate(*self.example)
        placeholders = iter(self.example)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node.name] = self._input(node, next(placeholders, None))
            elif node.op == "output":
                self._outputs(node)
            else:
                try:
                    self.env[node.name] = self.node(node)
                except ExportError:
                    raise
                except (ValueError, KeyError, TypeError, NotImplementedError) as err:
                    raise ExportError(f"node {node.name!r} ({node.format_node()}): {err}") from None
        return self.g.b.serialize()

    def _input(self, node: fx.Node, x: Any) -> _Val:
        if not isinstance(x, Tensor):
            raise ExportError(f"input {node.name!r}: to_lce needs one example tensor per model input")
        val = self.g.new(tuple(x.shape), _NHWC if x.dim() == 4 else _SAME)
        self.g.b.inputs.append(val.index)
        return val

    def _outputs(self, node: fx.Node) -> None:
        outs = node.args[0]
        for o in list(outs) if isinstance(outs, (tuple, list)) else [outs]:
            v = self.env.get(o.name) if isinstance(o, fx.Node) else None
            if not isinstance(v, _Val):
                raise ExportError(f"model output {o!r} is not a tensor; to_lce exports tensor outputs only")
            self.g.b.outputs.append(v.index)

    def arg(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(v) for v in a)
        return a

    def node(self, node: fx.Node) -> Any:
        if node.op == "call_module":
            return self.module(node, self.modules[node.target])
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj.detach().cpu() if isinstance(obj, Tensor) else obj
        if node.op in ("call_function", "call_method"):
            args = [self.arg(a) for a in node.args]
            return _emit_function(self.g, node, args, {k: self.arg(v) for k, v in node.kwargs.items()})
        raise ExportError(f"graph node {node.name!r} of kind {node.op} is not supported by to_lce")

    def module(self, node: fx.Node, m: nn.Module) -> Any:
        n = _Node(node, m, self.arg(node.args[0]) if node.args else None, f"layer {node.target!r} ({type(m).__name__})")
        if isinstance(m, _PackedBase):
            handler = self.binary_handler if isinstance(m, PackedBinary) else self.weight_only_handler
            handler.validate(n)
            return handler.emit(n, handler.prepare(n))
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return n.x
        if not isinstance(n.x, _Val):
            raise ExportError(f"{n.label}: its input is not a tensor of the graph")
        if n.x.layout == _BITS:
            if isinstance(m, nn.MaxPool2d):
                return self.g.bmaxpool(n.x, m, n.out_shape)
            raise ExportError(f"{n.label}: internal error, a bit-packed tensor reached a real-valued layer")
        emit = _module_emitter(m)
        if emit is None:
            raise ExportError(f"{n.label} has no TFLite/LCE translation; supported: {SUPPORTED}")
        return emit(self.g, n)

    # -- graph queries ---------------------------------------------------------------------------
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
        if not isinstance(m, PackedBinary) or m.kind != "conv2d":
            return False
        d = m.description
        if d.input_threshold is not None or d.input_scale != InputScale.NONE:
            return False
        padded = any(m.padding)
        return not (padded and (m.padding_mode != "zeros" or d.pad_value == -1))

    def bitpacked_maxpool(self, node: fx.Node, m: nn.MaxPool2d) -> bool:
        """Whether LceBMaxPool2d (VALID padding, no dilation) computes this max-pool."""
        def pair(v: Any) -> tuple[int, int]:
            return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

        if pair(m.padding) != (0, 0) or pair(m.dilation) != (1, 1):
            return False
        shape_in = node.args[0].meta["tensor_meta"].shape
        k, s = pair(m.kernel_size), pair(m.stride or m.kernel_size)
        floor_out = tuple((shape_in[2 + i] - k[i]) // s[i] + 1 for i in range(2))
        return tuple(_Graph.out_shape(node)[2:]) == floor_out
