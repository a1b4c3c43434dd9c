"""ONNX and QONNX export of onebit models.

Two flavors of one graph, both the *eval-mode* network with every binary layer in its deployed
inference form (:meth:`onebit.methods.Method.inference`, :class:`~onebit.methods.InferenceForm`), read
from the layer's :class:`~onebit.deploy.description.PackedLayerDescription` — the description the packed
runtime and LCE read (:func:`supports` says which layers have an ONNX form):

``"float"``
    standard ONNX operators only, runnable in onnxruntime. A binary layer becomes::

        k   = ReduceMean(Abs(x))                      (XNOR-Net's per-sample K, only for input_scale="mean_abs")
        s   = Where(x + threshold >= 0, +1, -1)       (sign with sign(0) = +1, onebit's convention)
        s   = Pad(s, pad_value)                       (the padding value the layer was trained with)
        y   = Conv/Gemm(s, W) · k · output_scale + bias

    with ``W = Σ_j scale_j · mask_j · plane_j`` materialised as one fp32 initializer (``±α`` per output
    channel for every 1-bit method; HBNN's masked residual planes summed). Layers with real activations
    (ProxConnect++'s default) skip the sign.

``"qonnx"``
    the same graph with the sign sites and the weights expressed with QONNX's quantization nodes
    (domain ``qonnx.custom_op.general``; spec: https://github.com/fastmachinelearning/qonnx,
    ``docs/qonnx-custom-ops``), so FINN's flow and QONNX's executor read it:

    * activations: ``BipolarQuant(x + threshold, scale=1)`` — QONNX defines it as ``x >= 0 → +1`` else
      ``−1`` (``qonnx/custom_op/general/bipolar_quant.py``), i.e. onebit's ``sign(0) = +1``;
    * 1-bit weights: ``BipolarQuant(plane, scale)`` with the ±1 plane as initializer and the
      per-output-channel scale α (shape ``(C_out, 1, …)``) as the node's scale;
    * HBNN's residual bit planes: ``Σ_j`` of one quantizer node per plane, summed before the
      convolution — ``BipolarQuant`` for a plane every weight uses, and for a masked plane (only the
      weights with more bits use it) a ternary ``Quant`` (2 bits, signed, narrow range: ``{−1, 0, +1}·μ_j``).
      Why not one ``Quant`` node of the layer's bit width: residual binarization's levels
      ``±μ_1 ± μ_2 ± …`` (Fromm et al., NeurIPS 2018) are not a uniform integer grid (``μ_1 ≠ 2μ_2`` in
      general), so a ``Quant`` node of 2 or 3 bits cannot represent them; the sum of planes is exact
      and still tells a compiler each plane's bit width and scale.

    The rest (scales, K, bias, BatchNorm, full-precision layers) stays as standard ONNX operators.

Export goes through PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``):
with torch 2.13 it is deprecated (it warns that it will be removed) but works offline, needs no
onnxscript, and lets an ``autograd.Function`` emit a custom-domain node through ``symbolic``, which is
how the QONNX nodes get into the graph (the dynamo exporter would need a ``torch.library`` custom op
plus an onnxscript translation per QONNX node). The model is traced with ``torch.jit.trace``
semantics, so Python control flow in ``forward`` is frozen at the example input.

The BatchNorm layers are kept as ``BatchNormalization`` nodes (``TrainingMode.PRESERVE`` on the eval-mode
copy) rather than folded into the preceding convolution, so the binary layers' weights stay ``±α`` in the
file; onnxruntime fuses them at load time anyway.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._io import atomic_write_bytes
from ..methods.base import NotDeployableError, layer_label
from ..nn.blocks import RSign
from ..nn.layers import BinaryLayer
from ._finite import guard_inputs, mark_outputs
from .description import InputScale, LayerKind, PackedLayerDescription, describe, require
from .errors import ExportError

__all__ = ["to_onnx", "run_onnx", "inference_module", "supports", "FLAVORS", "QONNX_DOMAIN", "DEFAULT_OPSET"]

FLAVORS = ("float", "qonnx")
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Opset 17 has LayerNormalization as one node (the ViT) and is read by onnxruntime ≥ 1.13 and qonnx.
DEFAULT_OPSET = 17
_MIN_OPSET = 13  # ReduceMean/Pad/Where forms used below; Quant nodes of FINN's flow use opset ≥ 11
_MAX_OPSET = 20  # the TorchScript exporter's maximum in torch 2.x


# --------------------------------------------------------------------------------------------------
# The quantizer nodes (QONNX) and the sign
# --------------------------------------------------------------------------------------------------
def _bipolar(x: Tensor, scale: Tensor) -> Tensor:
    """QONNX BipolarQuant: ``(x >= 0 ? +1 : −1) · scale``."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x)) * scale


class _BipolarQuantFn(torch.autograd.Function):
    """Computes QONNX's BipolarQuant in torch and exports as that node (inference only)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor) -> Tensor:
        return _bipolar(x, scale)

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any) -> Any:
        return g.op(f"{QONNX_DOMAIN}::BipolarQuant", x, scale).setType(x.type())


class _QuantFn(torch.autograd.Function):
    """QONNX's integer Quant (``rounding_mode="ROUND"``, half to even as numpy's ``round``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, zeropt: Tensor, bitwidth: Tensor, signed: int,
                narrow: int) -> Tensor:
        bits = int(bitwidth.item())
        if signed:
            low, high = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1 - narrow
        q = torch.round(x / scale + zeropt).clamp(low, high)
        return (q - zeropt) * scale

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, zeropt: Any, bitwidth: Any, signed: int, narrow: int) -> Any:
        return g.op(f"{QONNX_DOMAIN}::Quant", x, scale, zeropt, bitwidth, signed_i=signed, narrow_i=narrow,
                    rounding_mode_s="ROUND").setType(x.type())


_ONNX_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


class _PadFn(torch.autograd.Function):
    """``F.pad`` exported as one ``Pad`` node with constant pads: torch's own symbolic computes the
    pads with a dozen shape ops that its constant folding leaves in the graph, which FINN's
    streamlining and readers of the file have to see through."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, pads: tuple[int, ...], mode: str, value: float) -> Tensor:
        if mode == "constant":
            return F.pad(x, list(pads), mode="constant", value=value)
        return F.pad(x, list(pads), mode=mode)

    @staticmethod
    def symbolic(g: Any, x: Any, pads: tuple[int, ...], mode: str, value: float) -> Any:
        rank = x.type().dim()
        pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]  # leading padded dim first
        lead = [0] * (rank - len(pairs))
        onnx_pads = lead + [a for a, _ in pairs] + lead + [b for _, b in pairs]
        pads_value = g.op("Constant", value_t=torch.tensor(onnx_pads, dtype=torch.int64))
        if mode != "constant":
            return g.op("Pad", x, pads_value, mode_s=_ONNX_PAD_MODES[mode])
        fill = g.op("Constant", value_t=torch.tensor(value, dtype=torch.float32))
        return g.op("Pad", x, pads_value, fill, mode_s="constant")


def _pad(x: Tensor, pads: list[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    if mode in _ONNX_PAD_MODES:
        return _PadFn.apply(x, tuple(pads), mode, float(value))
    return F.pad(x, pads, mode=mode)  # circular: torch's symbolic (Slice + Concat)


# --------------------------------------------------------------------------------------------------
# Inference-form modules
# --------------------------------------------------------------------------------------------------
class _SignSite(nn.Module):
    """``sign(x + threshold)`` as a float ``Where`` or a QONNX ``BipolarQuant`` of unit scale."""

    def __init__(self, threshold: Tensor | None, features_last: bool, qonnx: bool) -> None:
        super().__init__()
        self.features_last = features_last
        self.qonnx = qonnx
        self.register_buffer("threshold", None if threshold is None else threshold.detach().float().clone())
        self.register_buffer("unit", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        if self.threshold is not None:
            t = self.threshold
            if not self.features_last and x.dim() > 2:
                t = t.reshape((-1,) + (1,) * (x.dim() - 2))
            x = x + t
        if self.qonnx:
            return _BipolarQuantFn.apply(x, self.unit)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _RSignInference(nn.Module):
    """ReActNet's standalone RSign block at inference: ``sign(x + b)``."""

    def __init__(self, block: RSign, qonnx: bool) -> None:
        super().__init__()
        self.site = _SignSite(block.shift.bias.detach(), block.shift.features_last, qonnx)

    def forward(self, x: Tensor) -> Tensor:
        return self.site(x)


class _BinaryInference(nn.Module):
    """One binary layer in its inference form, written with plain torch ops (see the module docstring),
    built from the layer's :class:`~onebit.deploy.description.PackedLayerDescription`."""

    def __init__(self, d: PackedLayerDescription, qonnx: bool) -> None:
        super().__init__()
        self.kind = d.kind.value
        self.qonnx = qonnx
        self.binary_input = d.binary_input
        self.mean_abs = d.input_scale == InputScale.MEAN_ABS and self.binary_input
        self.pad_value = float(d.pad_value)
        features_last = d.kind == LayerKind.LINEAR
        self.site = _SignSite(d.input_threshold, features_last, qonnx) if self.binary_input else None
        if d.kind != LayerKind.LINEAR:
            g = d.geometry
            self.stride, self.dilation, self.groups = g.stride, g.dilation, g.groups
            self.padding_mode = g.padding_mode
            self.pads = g.pads()  # F.pad order
        ep = d.epilogue
        for name, value in (("output_scale", d.output_scale), ("post_scale", ep.post_scale),
                            ("bias", ep.post_bias), ("prelu", ep.prelu)):
            self.register_buffer(name, None if value is None else value.detach().float().clone())
        self.clamp = ep.clamp
        if not qonnx:
            self.register_buffer("weight", d.effective_weight())
            self.planes = 0
        else:
            self._quantized_planes(d)

    def _quantized_planes(self, d: PackedLayerDescription) -> None:
        col = (-1,) + (1,) * (len(d.weight_shape) - 1)
        self.planes = len(d.planes)
        self.ternary: list[bool] = []
        for j, (plane, scale, mask) in enumerate(zip(d.signs(), d.plane_scales, d.masks())):
            scale = scale.detach().float().reshape(col).clone()
            if mask is None:
                # BipolarQuant only looks at the sign of its input: the ±1 plane itself.
                self.register_buffer(f"plane{j}", plane.clone())
                self.ternary.append(False)
            else:
                # Ternary Quant(x, μ): x = μ·m·b gives x/μ ∈ {−1, 0, +1} exactly (μ·1/μ = 1 in IEEE).
                self.register_buffer(f"plane{j}", (plane * mask.float() * scale).clone())
                self.ternary.append(True)
            self.register_buffer(f"scale{j}", scale)
        self.register_buffer("zeropt", torch.zeros(()))
        self.register_buffer("bitwidth", torch.tensor(2.0))

    def _weight(self) -> Tensor:
        if not self.qonnx:
            return self.weight
        total: Tensor | None = None
        for j in range(self.planes):
            plane, scale = getattr(self, f"plane{j}"), getattr(self, f"scale{j}")
            if self.ternary[j]:
                term = _QuantFn.apply(plane, scale, self.zeropt, self.bitwidth, 1, 1)
            else:
                term = _BipolarQuantFn.apply(plane, scale)
            total = term if total is None else total + term
        assert total is not None
        return total

    def _channel(self, v: Tensor, y: Tensor) -> Tensor:
        if self.kind == "linear" or v.dim() > 1:
            return v  # (C_out,) against features-last, or (C_out, *spatial) against one sample
        return v.reshape((-1,) + (1,) * (y.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        spatial = {"linear": 0, "conv1d": 1, "conv2d": 2}[self.kind]
        unbatched = spatial > 0 and x.dim() == spatial + 1
        if unbatched:
            x = x.unsqueeze(0)
        padded = spatial > 0 and any(p != 0 for p in self.pads)
        conv_pad: Any = 0
        if padded and self.padding_mode != "zeros":
            x = _pad(x, self.pads, self.padding_mode)  # the real input, before binarization
            padded = False
        k = None
        if self.mean_abs:
            dims = [x.dim() - 1] if self.kind == "linear" else list(range(1, x.dim()))
            k = x.abs().mean(dim=dims, keepdim=True)
        if self.site is not None:
            x = self.site(x)
        if padded:
            symmetric = all(self.pads[i] == self.pads[i + 1] for i in range(0, len(self.pads), 2))
            if symmetric and (self.pad_value == 0.0 or not self.binary_input):
                # zero padding after the sign is the convolution's own padding
                conv_pad = tuple(self.pads[::2][::-1])
            else:
                x = _pad(x, self.pads, "constant", self.pad_value if self.binary_input else 0.0)
        y = self._product(x, conv_pad)
        if k is not None:
            y = y * k  # conv(K·s) = K·conv(s); K·pad_value at padded positions included
        y = self._epilogue(y)
        return y.squeeze(0) if unbatched else y

    def _product(self, x: Tensor, conv_pad: Any) -> Tensor:
        w = self._weight()
        if self.kind == "linear":
            return F.linear(x, w)
        if self.kind == "conv1d":
            return F.conv1d(x, w, None, self.stride, conv_pad, self.dilation, self.groups)
        return F.conv2d(x, w, None, self.stride, conv_pad, self.dilation, self.groups)

    def _epilogue(self, y: Tensor) -> Tensor:
        """The description's scales and epilogue, in its float32 order (a layer described from a
        training layer has only the output scale and the bias)."""
        if self.output_scale is not None:
            y = y * self._channel(self.output_scale, y)
        if self.post_scale is not None:
            y = y * self._channel(self.post_scale, y)
        if self.bias is not None:
            y = y + self._channel(self.bias, y)
        if self.prelu is not None:
            y = torch.where(y < 0, y * self._channel(self.prelu, y), y)
        if self.clamp is not None:
            y = y.clamp(*self.clamp)
        return y


def supports(d: PackedLayerDescription) -> str | None:
    """Whether the ONNX/QONNX export runs the layer ``d``: None, or why not. (Grouped and dilated
    convolutions, every padding and padding mode have an ONNX form.)"""
    if d.input_bits is not None:
        return (f"{d.method} with activations='hetero' binarizes activations at run time with a per-sample "
                "bit map chosen by sorting (middle-out selection), which has no ONNX/QONNX form; train with "
                "activations='binary' to export")
    return None


def _describe(layer: BinaryLayer, name: str) -> PackedLayerDescription:
    """The layer's description, refused (one :class:`ExportError` naming the layer) where it has no
    ONNX form."""
    label = layer_label(layer) if getattr(layer, "onebit_name", None) else f"layer {name!r} ({type(layer).__name__})"
    try:
        description = describe(layer)
    except NotDeployableError as err:
        raise ExportError(f"cannot export {label}: {err}") from None
    except ValueError as err:
        raise ExportError(f"cannot export {label} ({layer.method.name}): {err}") from None
    require(supports, description, f"cannot export {label}")
    return description


def _replace(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
    return root


def inference_module(model: nn.Module, flavor: str = "float") -> nn.Module:
    """A copy of ``model`` (eval mode, CPU, fp32) with every binary layer and RSign replaced by its
    inference form in plain torch ops — the module that :func:`to_onnx` exports. Its output equals the
    eval-mode model's (up to float rounding); useful to inspect what the file computes."""
    _check_flavor(flavor)
    work = copy.deepcopy(model).cpu().float().eval()
    qonnx = flavor == "qonnx"
    for name, module in list(work.named_modules()):
        if isinstance(module, BinaryLayer):
            work = _replace(work, name, _BinaryInference(_describe(module, name), qonnx))
        elif isinstance(module, RSign):
            work = _replace(work, name, _RSignInference(module, qonnx))
    return work.eval()


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def _check_flavor(flavor: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"flavor={flavor!r} is not supported; use one of {', '.join(map(repr, FLAVORS))}")


def _inputs(example_input: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    items = (example_input,) if isinstance(example_input, Tensor) else tuple(example_input)
    if not items or not all(isinstance(t, Tensor) for t in items):
        raise TypeError(
            f"example_input must be a tensor (or a tuple of tensors) of the model's input shape, "
            f"got {type(example_input).__name__}"
        )
    return tuple(t.detach().cpu().float() if t.is_floating_point() else t.detach().cpu() for t in items)


def _constants_to_initializers(model: Any) -> None:
    """Make every quantizer's scale, zero point and bit width an initializer of its own: QONNX reads
    them with ``ModelWrapper.get_initializer`` (a ``BipolarQuant`` whose scale is not one is typed
    FLOAT32 instead of BIPOLAR), while the exporter emits small tensors as ``Constant`` nodes and
    turns equal buffers of several layers into ``Identity`` nodes of one initializer."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    wanted: set[str] = set()
    for node in graph.node:
        if node.domain == QONNX_DOMAIN:
            wanted.update(node.input[1:])
    keep = []
    for node in graph.node:
        out = node.output[0] if node.output else None
        if out in wanted and node.op_type == "Constant" and node.attribute[0].name == "value":
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), out))
        elif out in wanted and node.op_type == "Identity" and node.input[0] in initializers:
            array = numpy_helper.to_array(initializers[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(array, out))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


#: Operators of index/shape arithmetic that torch's exporter leaves unfolded (its ``F.pad`` symbolic
#: computes the pads with a chain of them); folding them never touches a weight or a quantizer.
_FOLDABLE = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze", "Squeeze",
             "Gather", "Range"}


def _fold_constants(model: Any) -> None:
    """Replace foldable nodes whose inputs are all constant by initializers (evaluated with onnx's
    reference evaluator), and drop the Constant nodes nobody reads any more."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    keep = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.domain in ("", "ai.onnx") and node.op_type in _FOLDABLE and all(i in values for i in inputs):
            single = helper.make_model(
                helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None)
                                                       for o in node.output]),
                opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
            feeds = {i: values[i] for i in inputs}
            single.graph.input.extend(helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                                    v.shape) for i, v in feeds.items())
            for name, array in zip(node.output, ReferenceEvaluator(single).run(None, feeds)):
                values[name] = array
                graph.initializer.append(numpy_helper.from_array(array, name))
        else:
            keep.append(node)
    used = {i for node in keep for i in node.input} | {o.name for o in graph.output}
    keep = [n for n in keep if n.op_type != "Constant" or n.output[0] in used]
    alive = {i for node in keep for i in node.input} | {o.name for o in graph.output}
    initializers = [t for t in graph.initializer if t.name in alive]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _infer_shapes(model: Any) -> None:
    """Annotate every tensor's shape. onnx's shape inference stops at custom-domain nodes, so it runs
    on a copy where each QONNX quantizer is an Identity (what QONNX's own ``InferShapes`` does: their
    output has the input's shape); the shapes found are written back into ``model``."""
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    for i, node in enumerate(graph.node):
        if node.domain == QONNX_DOMAIN:
            graph.node[i].CopyFrom(helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name))
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True).graph
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.value_info)
    for out, found in zip(model.graph.output, inferred.output):
        out.type.CopyFrom(found.type)


def to_onnx(
    model: nn.Module,
    example_input: Tensor | Sequence[Tensor],
    path: str | Path,
    flavor: str = "float",
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the eval-mode ``model`` (with onebit binary layers) to an ONNX file and return its path.

    Args:
        model: a torch module converted with :func:`onebit.binarize` or built by
            :func:`onebit.models.create` (full-precision layers export as usual). It is copied and put
            in eval mode; the original is not modified.
        example_input: a tensor (or tuple of tensors) of the input shape; the graph is traced with it.
        path: the file to write (atomically: a temporary file renamed into place).
        flavor: ``"float"`` (standard ONNX, onnxruntime) or ``"qonnx"`` (QONNX ``BipolarQuant``/``Quant``
            nodes for binary weights and activations; QONNX's executor, FINN).
        opset: the default-domain opset (13 … 20; 17 by default).
        dynamic_batch: make dimension 0 of inputs and outputs symbolic (``"batch"``); default: True
            for ``"float"``, False for ``"qonnx"`` (FINN and QONNX's executor work on fixed shapes).
        metadata: extra ``metadata_props`` entries (strings).

    Raises:
        ExportError: a layer has no ONNX form in its current state (BiPer stage 1, ProxConnect++ before
            its hard-sign epoch, weights left real, HBNN heterogeneous activations) or torch's exporter
            failed on a part of the model; the message names the layer and the reason.
    """
    onnx = _import_onnx()
    path = _check_arguments(model, flavor, opset, path)
    inputs = _inputs(example_input)
    work, n_outputs = _run_reference(model, inputs)
    net = inference_module(work, flavor)
    if dynamic_batch is None:
        dynamic_batch = flavor == "float"
    data = _trace(net, type(model).__name__, inputs, n_outputs, flavor, opset, dynamic_batch)
    proto = onnx.load_from_string(data)
    if flavor == "qonnx":
        _constants_to_initializers(proto)
    _fold_constants(proto)
    _infer_shapes(proto)
    _label(proto, flavor, metadata)
    try:
        onnx.checker.check_model(proto)
    except Exception as err:
        raise ExportError(f"the exported graph does not pass onnx.checker ({str(err)[:300]})") from None
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'onnx>=1.14'") from None
    return onnx


def _check_arguments(model: nn.Module, flavor: str, opset: int, path: str | Path) -> Path:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    _check_flavor(flavor)
    if isinstance(opset, bool) or not isinstance(opset, int) or not _MIN_OPSET <= opset <= _MAX_OPSET:
        raise ValueError(f"opset={opset!r} is not supported; use an integer from {_MIN_OPSET} to {_MAX_OPSET}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist; create it first")
    return path


def _run_reference(model: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[nn.Module, int]:
    """An eval-mode fp32 copy of ``model``, run once on the example (which materialises lazy layers
    and XNOR-Net++'s Γ before the layers are described), and its number of outputs."""
    work = copy.deepcopy(model).cpu().float().eval()
    with torch.no_grad():
        try:
            reference = work(*inputs)
        except Exception as err:
            raise ExportError(
                f"the model does not run on example_input of shape {[tuple(t.shape) for t in inputs]} "
                f"({type(err).__name__}: {str(err)[:300]}); pass an input of the model's input shape"
            ) from None
    outputs = reference if isinstance(reference, (tuple, list)) else (reference,)
    if not all(isinstance(o, Tensor) for o in outputs):
        raise ExportError("ONNX export needs the model to return a tensor or a tuple of tensors")
    return work, len(outputs)


def _trace(net: nn.Module, model_name: str, inputs: tuple[Tensor, ...], n_outputs: int, flavor: str, opset: int,
           dynamic_batch: bool) -> bytes:
    """The serialized graph of torch's TorchScript-based ONNX exporter."""
    input_names = ["input"] + [f"input_{i}" for i in range(1, len(inputs))]
    output_names = ["output"] + [f"output_{i}" for i in range(1, n_outputs)]
    dynamic_axes = {n: {0: "batch"} for n in input_names + output_names} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and warns about traced shapes; neither
        # is actionable for the caller (see the module docstring for why this exporter is used).
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, inputs, buffer, dynamo=False, opset_version=opset,
                input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
                custom_opsets={QONNX_DOMAIN: 1} if flavor == "qonnx" else None,
            )
        except Exception as err:
            message = str(err).strip().splitlines()[0][:400] if str(err).strip() else ""
            raise ExportError(
                f"torch.onnx could not export {model_name} ({type(err).__name__}: {message}); "
                "a layer or function in the model has no ONNX form at this opset"
            ) from None
    return buffer.getvalue()


def _label(proto: Any, flavor: str, metadata: dict[str, str] | None) -> None:
    proto.producer_name = "onebit"
    entries = {"onebit.flavor": flavor, **{str(k): str(v) for k, v in (metadata or {}).items()}}
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


# --------------------------------------------------------------------------------------------------
# Running a file
# --------------------------------------------------------------------------------------------------
def run_onnx(path: str | Path, *inputs: Tensor | Any, flavor: str | None = None,
             nonfinite: str = "raise") -> list[Any]:
    """Run an exported file on ``inputs`` (tensors or numpy arrays) and return its outputs as numpy
    arrays: with onnxruntime for ``"float"`` files, with QONNX's executor
    (``qonnx.core.onnx_exec.execute_onnx`` on a ``ModelWrapper``) for ``"qonnx"`` ones. ``flavor``
    defaults to the one recorded in the file's metadata.

    Both runtimes binarize NaN to −1 (``Where(x >= 0, 1, -1)``, ``BipolarQuant``) and answer with a
    confident class, so an input with NaN/±inf raises :class:`~onebit.deploy.NonFiniteInputError`,
    or with ``nonfinite="propagate"`` gives NaN outputs for those samples (see
    :mod:`onebit.deploy._finite`)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write one with onebit.deploy.onnx_export.to_onnx")
    arrays = [x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x) for x in inputs]
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    arrays, bad = guard_inputs(tuple(arrays), nonfinite, str(path))
    outputs = _run_file(path, list(arrays), flavor)
    return outputs if bad is None else mark_outputs(outputs, bad)


def _run_file(path: Path, arrays: list[Any], flavor: str | None) -> list[Any]:
    import onnx

    proto = onnx.load(str(path))
    if flavor is None:
        flavor = {p.key: p.value for p in proto.metadata_props}.get("onebit.flavor", "float")
    _check_flavor(flavor)
    names = [i.name for i in proto.graph.input]
    if len(names) != len(arrays):
        raise ValueError(f"{path} takes {len(names)} input(s) ({', '.join(names)}), got {len(arrays)}")
    if flavor == "float":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return list(session.run(None, dict(zip(names, arrays))))
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    for value, array in zip(proto.graph.input, arrays):
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if len(fixed) != array.ndim or any(f is not None and f != n for f, n in zip(fixed, array.shape)):
            raise ValueError(
                f"{path} takes input {value.name!r} of shape {tuple('?' if f is None else f for f in fixed)}, "
                f"got {tuple(array.shape)}; QONNX files have a fixed batch unless exported with dynamic_batch=True"
            )
    # QONNX's executor needs every tensor's shape; its InferShapes knows the custom nodes.
    wrapper = ModelWrapper(proto).transform(InferShapes())
    result = execute_onnx(wrapper, dict(zip(names, arrays)))
    return [result[o.name] for o in proto.graph.output]
