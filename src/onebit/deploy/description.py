"""The packed description of a binary layer: what every deployment target reads.

A trained :class:`~onebit.nn.BinaryLayer` is described once, by :func:`describe` (packing its
:class:`~onebit.methods.InferenceForm`), and folding a BatchNorm or fusing an activation after it
gives a new description (:meth:`PackedLayerDescription.fold_batchnorm`,
:meth:`~PackedLayerDescription.fuse_activation`). The description is frozen: a target never changes it,
it builds its own form from it —

* the packed engine's runtime (:mod:`onebit.deploy.packed`) and the model file (``config`` and
  tensors, :meth:`~PackedLayerDescription.to_file` / :meth:`~PackedLayerDescription.from_file`);
* Larq Compute Engine (:mod:`onebit.deploy.lce`);
* ONNX/QONNX (:mod:`onebit.deploy.onnx_export`).

What a layer computes (README, "Deploying")::

    x_q = K · sign(x + threshold)            K = mean|x| per sample for InputScale.MEAN_ABS, else 1
    y   = epilogue(output_scale ⊙ Σ_j μ_j · (m_j ⊙ B_j) ⊛ pad(x_q, pad_value))
    epilogue(y) = clamp(prelu(y · post_scale + post_bias))

with real ``x`` in place of ``x_q`` when ``binary_input`` is False (ProxConnect++'s weight-only form).

Each target declares ``supports(description) -> None | reason`` — the one place that decides what
deploys where — and refuses with :class:`~onebit.deploy.errors.UnsupportedLayerError` (see
:func:`require`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..methods.base import InferenceForm, NotDeployableError
from .errors import UnsupportedLayerError

__all__ = ["LayerKind", "InputScale", "Geometry", "WeightPlane", "Epilogue", "PackedLayerDescription",
           "describe", "require", "pack_bits", "unpack_bits"]


def pack_bits(signs: Tensor) -> Tensor:
    """±1 (or any real) tensor → uint8 bytes, one bit per element (1 = negative), for the file."""
    neg = (signs.detach().cpu().reshape(-1) < 0).numpy()
    return torch.from_numpy(np.packbits(neg, bitorder="little"))


def unpack_bits(data: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits`: ±1 float32 of ``shape``."""
    count = math.prod(shape)
    if data.dtype != torch.uint8 or data.numel() != (count + 7) // 8:
        raise ValueError(f"bit-packed tensor of {data.numel()} bytes does not hold {count} elements")
    neg = np.unpackbits(data.numpy(), count=count, bitorder="little").astype(np.float32)
    return torch.from_numpy(1.0 - 2.0 * neg).reshape(shape)


class LayerKind(str, Enum):
    """Which torch layer the description came from (compares equal to its name)."""

    LINEAR = "linear"
    CONV1D = "conv1d"
    CONV2D = "conv2d"


class InputScale(str, Enum):
    """A run-time scale of the binarized input: none, or XNOR-Net's per-sample ``K = mean|x|``."""

    NONE = "none"
    MEAN_ABS = "mean_abs"


@dataclass(frozen=True)
class Geometry:
    """A convolution's geometry per spatial dimension (empty tuples for a linear layer).

    ``padding`` holds (before, after) per spatial dimension, in dimension order; ``padding_mode`` is
    torch's (``"zeros"`` pads the binarized input with ``pad_value``, the others pad the real input
    before binarization)."""

    stride: tuple[int, ...] = ()
    padding: tuple[tuple[int, int], ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    padding_mode: str = "zeros"

    @property
    def symmetric(self) -> bool:
        return all(a == b for a, b in self.padding)

    def pads(self) -> list[int]:
        """The padding in ``F.pad`` order: last dimension first, (before, after) each."""
        return [v for before, after in reversed(self.padding) for v in (before, after)]

    def stride_2d(self) -> tuple[int, int]:
        """The stride as the engine's 2-D convolution sees it (a conv1d is 1 x L)."""
        return (1, 1) if not self.stride else (1, self.stride[0]) if len(self.stride) == 1 else \
            (self.stride[0], self.stride[1])

    def padding_2d(self) -> tuple[int, int]:
        """The (symmetric) padding as the engine's 2-D convolution sees it."""
        before = [a for a, _ in self.padding]
        return (0, 0) if not before else (0, before[0]) if len(before) == 1 else (before[0], before[1])


@dataclass(frozen=True)
class WeightPlane:
    """One ±1 weight plane: its bits (uint8, bit set = −1), per-output-channel scale μ_j (float32
    ``(C_out,)``) and optional mask of active weights (uint8, bit set = active)."""

    bits: Tensor
    scale: Tensor
    mask: Tensor | None = None


@dataclass(frozen=True)
class Epilogue:
    """What follows the scaled accumulation, in this float32 order: ``· post_scale``, ``+ post_bias``,
    PReLU (per channel), clamp. ``post_bias`` starts as the layer's bias; a folded BatchNorm scales it
    and sets ``post_scale``."""

    post_scale: Tensor | None = None
    post_bias: Tensor | None = None
    prelu: Tensor | None = None
    clamp: tuple[float, float] | None = None
    folded_batchnorm: bool = False


@dataclass(frozen=True, eq=False)
class PackedLayerDescription:
    """A packed binary layer, built once by :func:`describe` (and folding); read by every target."""

    kind: LayerKind
    method: str
    weight_shape: tuple[int, ...]
    planes: tuple[WeightPlane, ...]
    geometry: Geometry = field(default_factory=Geometry)
    binary_input: bool = True
    input_threshold: Tensor | None = None
    input_scale: InputScale = InputScale.NONE
    input_bits: tuple[int, ...] | None = None
    output_scale: Tensor | None = None
    epilogue: Epilogue = field(default_factory=Epilogue)
    pad_value: int = 0

    # -- derived views ---------------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return int(self.weight_shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight_shape[1]) * (self.geometry.groups if self.kind != LayerKind.LINEAR else 1)

    @property
    def spatial_output_scale(self) -> bool:
        """Whether ``output_scale`` varies over positions (XNOR-Net++'s Γ), not only channels."""
        return self.output_scale is not None and self.output_scale.dim() > 1

    @property
    def plane_scales(self) -> list[Tensor]:
        return [p.scale for p in self.planes]

    def signs(self) -> list[Tensor]:
        """The ±1 weight planes (float32 of the weight's shape), unpacked from the bits."""
        return [unpack_bits(p.bits, self.weight_shape) for p in self.planes]

    def masks(self) -> list[Tensor | None]:
        """Per plane, the bool mask of active weights, or None (all active)."""
        return [None if p.mask is None else unpack_bits(p.mask, self.weight_shape) < 0 for p in self.planes]

    def effective_weight(self) -> Tensor:
        """``Σ_j μ_j · m_j · B_j`` in float32 (the operations of ``InferenceForm.effective_weight``)."""
        return InferenceForm(self.signs(), self.plane_scales, self.masks()).effective_weight()

    # -- folding ---------------------------------------------------------------------------------
    def fold_batchnorm(self, bn: nn.modules.batchnorm._BatchNorm) -> PackedLayerDescription:
        """This layer followed by an eval-mode BatchNorm: ``y' = y·s + t`` per channel."""
        invstd = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
        s = invstd * (bn.weight.detach().float() if bn.weight is not None else 1.0)
        t = (bn.bias.detach().float() if bn.bias is not None else 0.0) - bn.running_mean.detach().float() * s
        ep = self.epilogue
        return replace(self, epilogue=replace(
            ep, post_scale=s if ep.post_scale is None else ep.post_scale * s,
            post_bias=t if ep.post_bias is None else ep.post_bias * s + t, folded_batchnorm=True))

    def fuse_activation(self, module: nn.Module) -> PackedLayerDescription | None:
        """This layer followed by a PReLU / Hardtanh / ReLU / ReLU6, or None where that does not fuse
        (another module, or a second activation after a clamp or a PReLU)."""
        ep = self.epilogue
        if ep.clamp is not None:
            return None
        if isinstance(module, nn.PReLU):
            if ep.prelu is not None:
                return None
            w = module.weight.detach().float()
            prelu = w.expand(self.out_channels).clone() if w.numel() == 1 else w.clone()
            return replace(self, epilogue=replace(ep, prelu=prelu))
        if isinstance(module, nn.Hardtanh):
            return replace(self, epilogue=replace(ep, clamp=(float(module.min_val), float(module.max_val))))
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            return replace(self, epilogue=replace(ep, clamp=(0.0, 6.0 if isinstance(module, nn.ReLU6) else math.inf)))
        return None

    # -- the model file --------------------------------------------------------------------------
    def to_file(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """The ``config`` (JSON) and tensors a packed-model file stores for this layer (format
        versions 1–3). Only what the packed runtime supports has a file form (symmetric padding,
        dilation 1, 1-bit activations)."""
        return _file_config(self), _file_tensors(self)

    @classmethod
    def from_file(cls, config: dict[str, Any], tensors: dict[str, Tensor]) -> PackedLayerDescription:
        """The description stored in a packed-model file (:meth:`to_file`'s inverse)."""
        return _from_file(config, {k: v.detach().cpu().contiguous() for k, v in tensors.items()})


# --------------------------------------------------------------------------------------------------
# Building a description from a trained layer
# --------------------------------------------------------------------------------------------------
def _kind(layer: nn.Module) -> LayerKind:
    if isinstance(layer, nn.Linear):
        return LayerKind.LINEAR
    return LayerKind.CONV1D if isinstance(layer, nn.Conv1d) else LayerKind.CONV2D


def _layer_geometry(layer: nn.Module, kind: LayerKind) -> Geometry:
    if kind == LayerKind.LINEAR:
        return Geometry()
    pads = list(layer._reversed_padding_repeated_twice)  # F.pad order: last dimension first
    padding = tuple((int(pads[i]), int(pads[i + 1])) for i in range(0, len(pads), 2))[::-1]
    return Geometry(stride=tuple(int(s) for s in layer.stride), padding=padding,
                    dilation=tuple(int(d) for d in layer.dilation), groups=int(layer.groups),
                    padding_mode=str(layer.padding_mode))


def _input_scale(value: str | None) -> InputScale:
    if value is None:
        return InputScale.NONE
    try:
        return InputScale(value)
    except ValueError:
        raise NotDeployableError(f"input scale {value!r} has no packed form; known: mean_abs") from None


def _float(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().float().clone()


def _planes(form: InferenceForm) -> tuple[WeightPlane, ...]:
    return tuple(
        WeightPlane(bits=pack_bits(plane), scale=scale.detach().float().reshape(-1).clone(),
                    mask=None if mask is None else pack_bits(torch.where(mask.bool(), -1.0, 1.0)))
        for plane, scale, mask in zip(form.weight_planes, form.plane_scales, form.plane_masks)
    )


def describe(layer: nn.Module) -> PackedLayerDescription:
    """The packed description of a trained binary layer (eval-mode semantics).

    Every geometry is described (grouped, dilated, asymmetric padding): which target runs it is each
    target's ``supports`` to say. Errors of the layer's :meth:`~onebit.nn.BinaryLayer.inference_form`
    (a method with no 1-bit form in its current state) propagate unchanged, for the caller to name the
    layer in its own terms."""
    form: InferenceForm = layer.inference_form()
    kind = _kind(layer)
    return PackedLayerDescription(
        kind=kind,
        method=layer.method.name,
        weight_shape=tuple(int(n) for n in form.weight_planes[0].shape),
        planes=_planes(form),
        geometry=_layer_geometry(layer, kind),
        binary_input=bool(form.binary_input),
        input_threshold=_float(form.input_threshold),
        input_scale=_input_scale(form.input_scale),
        input_bits=None if form.input_bits is None else tuple(form.input_bits),
        output_scale=_float(form.output_scale),
        epilogue=Epilogue(post_bias=_float(form.bias)),
        pad_value=int(form.pad_value),
    )


def require(supports: Callable[[PackedLayerDescription], str | None], description: PackedLayerDescription,
            label: str) -> None:
    """Raise :class:`UnsupportedLayerError` ``"{label}: {reason}"`` when ``supports`` refuses."""
    reason = supports(description)
    if reason is not None:
        raise UnsupportedLayerError(f"{label}: {reason}")


# --------------------------------------------------------------------------------------------------
# The file form (format versions 1-3): a JSON config and named tensors
# --------------------------------------------------------------------------------------------------
def _file_geometry(d: PackedLayerDescription) -> dict[str, Any]:
    if d.kind == LayerKind.LINEAR:
        return {"kind": "linear"}
    g = d.geometry
    if not g.symmetric or any(x != 1 for x in g.dilation):
        raise ValueError(f"the model file stores symmetric padding and dilation 1 only, not {g}")
    extra: dict[str, Any] = {"groups": g.groups} if g.groups != 1 else {}
    return {"kind": d.kind.value, "stride": list(g.stride_2d()), "padding": list(g.padding_2d()),
            "padding_mode": g.padding_mode, **extra}


def _file_config(d: PackedLayerDescription) -> dict[str, Any]:
    config: dict[str, Any] = {
        **_file_geometry(d),
        "method": d.method,
        "planes": len(d.planes),
        "weight_shape": list(d.weight_shape),
        "pad_value": d.pad_value,
        "input_scale": None if d.input_scale == InputScale.NONE else d.input_scale.value,
        "binary_input": d.binary_input,
    }
    if d.epilogue.folded_batchnorm:
        config["folded_batchnorm"] = True
    if d.epilogue.clamp is not None:
        config["clamp"] = list(d.epilogue.clamp)
    return config


def _file_tensors(d: PackedLayerDescription) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for j, plane in enumerate(d.planes):
        tensors[f"plane{j}"] = plane.bits
        tensors[f"plane_scale{j}"] = plane.scale
        if plane.mask is not None:
            tensors[f"mask{j}"] = plane.mask
    ep = d.epilogue
    named = {"threshold": d.input_threshold, "out_scale": d.output_scale, "post_bias": ep.post_bias,
             "post_scale": ep.post_scale, "prelu": ep.prelu}
    tensors.update({k: v for k, v in named.items() if v is not None})
    return tensors


def _file_geometry_of(config: dict[str, Any], kind: LayerKind) -> Geometry:
    if kind == LayerKind.LINEAR:
        return Geometry()
    stride = tuple(int(s) for s in config.get("stride", (1, 1)))
    padding = tuple(int(p) for p in config.get("padding", (0, 0)))
    if kind == LayerKind.CONV1D:
        stride, padding = stride[1:], padding[1:]
    return Geometry(stride=stride, padding=tuple((p, p) for p in padding), dilation=(1,) * len(stride),
                    groups=int(config.get("groups", 1)), padding_mode=config.get("padding_mode", "zeros"))


def _from_file(config: dict[str, Any], t: dict[str, Tensor]) -> PackedLayerDescription:
    kind = LayerKind(config["kind"])
    count = int(config["planes"])
    planes = tuple(WeightPlane(bits=t[f"plane{j}"], scale=t[f"plane_scale{j}"].float(), mask=t.get(f"mask{j}"))
                   for j in range(count))
    clamp = config.get("clamp")
    epilogue = Epilogue(post_scale=t.get("post_scale"), post_bias=t.get("post_bias"), prelu=t.get("prelu"),
                        clamp=None if clamp is None else (float(clamp[0]), float(clamp[1])),
                        folded_batchnorm=bool(config.get("folded_batchnorm", False)))
    return PackedLayerDescription(
        kind=kind, method=str(config.get("method", "")), weight_shape=tuple(int(n) for n in config["weight_shape"]),
        planes=planes, geometry=_file_geometry_of(config, kind), binary_input=bool(config.get("binary_input", True)),
        input_threshold=t.get("threshold"), input_scale=_input_scale(config.get("input_scale")),
        output_scale=t.get("out_scale"), epilogue=epilogue, pad_value=int(config.get("pad_value", 0)),
    )
