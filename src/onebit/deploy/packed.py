"""Packed layers: what a binary layer becomes after export.

Each packed module holds the layer's frozen :class:`~onebit.deploy.description.PackedLayerDescription`
(built by :func:`pack_layer`; folding a BatchNorm or fusing an activation replaces it) and runs it;
:func:`supports` says which descriptions this runtime (and so the model file) runs.

A :class:`PackedBinary` runs the layer's :class:`~onebit.methods.InferenceForm` with the 1-bit engine:
binarize and bit-pack the input (with the method's threshold), XNOR/popcount against the bit-packed
weight planes, then the fused epilogue — per-channel scale, bias, folded BatchNorm, PReLU and clamp.
Layers whose activations stay real (ProxConnect++'s weight-only binarization) are stored with 1-bit
weights but computed in fp32 by torch (:class:`PackedBinaryWeightOnly`): there is no popcount path for
real activations.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods.base import NotDeployableError, layer_label
from ..nn.layers import BinaryLayer
from .description import InputScale, PackedLayerDescription, describe, pack_bits, require, unpack_bits

__all__ = ["PackedBinary", "PackedBinaryWeightOnly", "pack_layer", "pack_bits", "unpack_bits", "supports",
           "build_packed"]


def supports(d: PackedLayerDescription) -> str | None:
    """Whether the packed runtime (and its model file) runs the layer ``d``: None, or why not."""
    if d.input_bits is not None:
        return (f"multi-bit activations ({d.method}, activations='hetero') pick each sample's bit map by "
                "sorting at run time, which the 1-bit engine cannot compute; train with "
                "activations='binary' to deploy")
    g = d.geometry
    if g.groups != 1 and not (d.in_channels == g.groups and d.out_channels == g.groups):
        return (f"groups={g.groups} (in_channels={d.in_channels}, out_channels={d.out_channels}); the packed "
                "engine runs groups=1 and depthwise convolutions (groups == in_channels == out_channels) only")
    if any(x != 1 for x in g.dilation):
        return f"dilation={g.dilation}; the packed engine runs dilation 1 only"
    if not g.symmetric:
        return (f"asymmetric padding {g.pads()} (from padding='same' with an even kernel); use an odd "
                "kernel or explicit symmetric padding")
    return None


class _PackedBase(nn.Module):
    """Shared state of packed layers: the layer's :class:`PackedLayerDescription` (frozen; folding and
    fusing replace it) and views of it."""

    def __init__(self, description: PackedLayerDescription) -> None:
        super().__init__()
        self._cache: dict[str, Any] = {}
        self._set_description(description)

    def _set_description(self, description: PackedLayerDescription) -> None:
        self.description = description
        self.planes = len(description.planes)
        self.weight_shape = description.weight_shape
        self.kind = description.kind.value  # "conv1d", "conv2d", "linear"
        self.plane_scales = description.plane_scales
        self.out_channels = description.out_channels
        self._cache.clear()

    @property
    def config(self) -> dict[str, Any]:
        """The layer's JSON config in the model file (see :meth:`PackedLayerDescription.to_file`)."""
        return self.description.to_file()[0]

    def state_tensors(self) -> dict[str, Tensor]:
        """The layer's tensors in the model file; bit planes are stored bit-packed."""
        return self.description.to_file()[1]

    # Unpacked on demand, not kept: as float32 they would take 32x the memory of the stored bits.
    @property
    def signs(self) -> list[Tensor]:
        """The ±1 weight planes (float32 of the layer's weight shape), unpacked from the stored bits."""
        return self.description.signs()

    @property
    def masks(self) -> list[Tensor | None]:
        """Per plane, the bool mask of active weights, or None (all active)."""
        return self.description.masks()

    # -- the epilogue ---------------------------------------------------------------------------
    def fold_batchnorm(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Fold an eval-mode BatchNorm that follows this layer: y' = y·s + t per channel."""
        self._set_description(self.description.fold_batchnorm(bn))

    def fuse_activation(self, module: nn.Module) -> bool:
        """Fuse a following PReLU / Hardtanh / ReLU into the epilogue (True if it was fused)."""
        fused = self.description.fuse_activation(module)
        if fused is None:
            return False
        self._set_description(fused)
        return True

    def _epilogue_torch(self, y: Tensor) -> Tensor:
        """Apply post-scale/bias/PReLU/clamp in torch (channels at dim 1, or last for linear)."""
        def view(v: Tensor) -> Tensor:
            return v if self.kind == "linear" else v.reshape((1, -1) + (1,) * (y.dim() - 2))

        from .kernels import epilogue_torch  # the one Python copy of the engine's epilogue order

        ep = self.description.epilogue
        lo, hi = ep.clamp if ep.clamp is not None else (None, None)
        return epilogue_torch(y, None if ep.post_scale is None else view(ep.post_scale),
                              None if ep.post_bias is None else view(ep.post_bias),
                              prelu=None if ep.prelu is None else view(ep.prelu), clamp_min=lo, clamp_max=hi)

    def extra_repr(self) -> str:
        ep = self.description.epilogue
        keys = ", ".join(k for k, on in (("folded_batchnorm", ep.folded_batchnorm), ("clamp", ep.clamp is not None))
                         if on)
        return f"{self.kind}, weight={tuple(self.weight_shape)}, planes={self.planes}" + (f", {keys}" if keys else "")


class PackedBinary(_PackedBase):
    """A binary layer on the 1-bit engine. Output ``y = epilogue(out_scale ⊙ Σ_j μ_j·(m_j⊙B_j) ⊛ x_b)``."""

    def __init__(self, description: PackedLayerDescription) -> None:
        super().__init__(description)
        from . import kernels

        self._k = kernels
        shape = self.weight_shape
        w_shape = shape if self.kind != "conv1d" else (shape[0], shape[1], 1, shape[2])
        geometry = description.geometry
        self.groups = geometry.groups  # groups == channels: a depthwise convolution
        masks = self.masks
        self.packed = kernels.pack_weight_planes(
            [s.reshape(w_shape) for s in self.signs],
            None if all(m is None for m in masks)
            else [None if m is None else m.reshape(w_shape).to(torch.uint8) for m in masks],
            [s.reshape(-1) for s in self.plane_scales],
            groups=self.groups,
        )
        self.padding = geometry.padding_2d()
        self.stride = geometry.stride_2d()
        self.pad_value = description.pad_value
        self.padding_mode = geometry.padding_mode

    def _transform(self) -> Any:
        """The fused epilogue, built once (the engine caches its resolved vectors inside it); folding
        and fusing, which change it, happen at export before the first call."""
        if "transform" not in self._cache:
            self._cache["transform"] = self._build_transform()
        return self._cache["transform"]

    def _build_transform(self) -> Any:
        """The fused epilogue when nothing runtime-dependent (K, spatial scale) sits before it."""
        d = self.description
        if d.spatial_output_scale or d.input_scale == InputScale.MEAN_ABS:
            return None
        ep = d.epilogue
        scale, post_scale = d.output_scale, ep.post_scale
        total_scale = scale if scale is not None else None
        if post_scale is not None:
            total_scale = post_scale if total_scale is None else total_scale * post_scale
        clamp = ep.clamp
        return self._k.OutputTransform(
            scale=total_scale, bias=ep.post_bias, prelu=ep.prelu,
            clamp_min=None if clamp is None else clamp[0],
            clamp_max=None if clamp is None or math.isinf(clamp[1]) else clamp[1],
        )

    # -- chaining bit-packed outputs into the next binary layer -----------------------------------
    def emits_bits(self) -> bool:
        """True if the whole epilogue is fused, so the engine can emit the next layer's sign bits (not
        with a padding mode other than zeros: :meth:`forward_bits` packs its input as it comes, while
        such a layer pads the real input first, as :meth:`forward` does)."""
        return self.kind in ("conv1d", "conv2d") and self.padding_mode == "zeros" and self._transform() is not None

    def accepts_bits(self) -> bool:
        """True if this layer's input is used only through its packed signs (no input scale, no
        non-zero padding mode), so a previous layer may hand it bits instead of floats."""
        return (self.kind in ("conv1d", "conv2d") and self.padding_mode == "zeros"
                and self.description.input_scale != InputScale.MEAN_ABS)

    def bits_transform(self, consumer: PackedBinary) -> Any:
        """This layer's epilogue ending in ``consumer``'s input sign: bit = (y + threshold) < 0, the
        bit ``consumer`` would compute from this layer's float output (same float32 operations)."""
        key = ("bits", id(consumer))
        entry = self._cache.get(key)
        if entry is None or entry[0] is not consumer:
            t = self._transform()
            entry = (consumer, self._k.OutputTransform(
                scale=t.scale, bias=t.bias, prelu=t.prelu, clamp_min=t.clamp_min, clamp_max=t.clamp_max,
                output="bits", threshold=consumer.description.input_threshold))  # fmt: skip
            self._cache[key] = entry
        return entry[1]

    def forward_bits(self, x: Tensor | Any, consumer: PackedBinary) -> Any:
        """Run this layer and return ``consumer``'s packed input (PackedActivations, NHWC) directly."""
        packed = x if isinstance(x, self._k.PackedActivations) else self._pack_input(x)
        return self._conv(packed, self.bits_transform(consumer))

    def forward_packed(self, packed: Any) -> Tensor:
        """Run this layer on already packed input (from :meth:`forward_bits` of the layer before)."""
        y = self._conv(packed, self._transform())
        return y.squeeze(2) if self.kind == "conv1d" else y

    def _pack_input(self, x: Tensor) -> Any:
        if x.dtype != torch.float32:
            x = x.float()
        if self.kind == "conv1d":
            x = x.unsqueeze(2)
        return self._k.pack_activations(x, self.description.input_threshold)

    def _conv(self, packed: Any, transform: Any, padding: tuple[int, int] | None = None,
              residual: Tensor | None = None, bits_for: PackedBinary | None = None,
              out: Tensor | None = None) -> Any:
        """The engine convolution with this layer's geometry, bound once per transform (and per
        ``bits_for``: a consumer whose packed input the same pass also writes)."""
        pad = self.padding if padding is None else padding
        key = ("prepared", id(transform), pad, id(bits_for))
        entry = self._cache.get(key)
        if entry is None or entry[0] is not transform or entry[1] is not bits_for:
            threshold = None if bits_for is None else bits_for.description.input_threshold
            entry = (transform, bits_for, self._k.PreparedConv2d(
                self.packed, stride=self.stride, padding=pad, pad_value=self.pad_value, transform=transform,
                groups=self.groups, also_bits=bits_for is not None, bits_threshold=threshold))  # fmt: skip
            self._cache[key] = entry
        return entry[2](packed, residual=residual, out=out)

    # -- a residual addition (and the activation after it) fused into the epilogue -----------------
    def residual_transform(self, clamp: tuple[float, float | None] | None) -> Any:
        """The epilogue of ``act(layer(x) + r)`` with ``act`` a clamp (or None): this layer's fused
        float epilogue with the clamp after the engine's residual addition, or None where the layer's
        own epilogue already ends in an activation (which must come before the addition) or cannot
        take a residual (conv1d, linear, depthwise, non-zero padding modes, a run-time input scale)."""
        key = ("residual", clamp)
        if key not in self._cache:
            t = self._transform()
            ok = (self.kind == "conv2d" and self.groups == 1 and self.padding_mode == "zeros" and t is not None
                  and t.prelu is None and t.clamp_min is None and t.clamp_max is None)
            self._cache[key] = None if not ok else t if clamp is None else self._k.OutputTransform(
                scale=t.scale, bias=t.bias, clamp_min=clamp[0], clamp_max=clamp[1])  # fmt: skip
        return self._cache[key]

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.weight_shape[2], self.weight_shape[3]
        return ((h + 2 * self.padding[0] - kh) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - kw) // self.stride[1] + 1)  # fmt: skip

    def forward_residual(self, x: Tensor | Any, residual: Tensor, transform: Any,
                         bits_for: PackedBinary | None = None, overwrite_residual: bool = False) -> Any:
        """``act(layer(x) + residual)`` in one engine pass (``transform`` from :meth:`residual_transform`);
        ``x`` floats or this layer's packed input; ``residual`` float32, channels_last, output-shaped.
        With ``bits_for`` (a layer that :meth:`accepts_bits`), returns ``(y, bits_for's packed input)``.
        ``overwrite_residual``: write y into ``residual``'s memory (a temporary nobody reads after)."""
        packed = x if isinstance(x, self._k.PackedActivations) else self._pack_input(x)
        return self._conv(packed, transform, residual=residual, bits_for=bits_for,
                          out=residual if overwrite_residual else None)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        kinds = self._k
        if x.dtype != torch.float32:
            x = x.float()
        threshold = self.description.input_threshold
        lead: tuple[int, ...] = ()
        if self.kind == "linear":
            lead = tuple(x.shape[:-1])
            x = x.reshape(-1, x.shape[-1])
        elif self.kind == "conv1d":
            x = x.unsqueeze(2)
        if self.padding_mode != "zeros":
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode)
        k = None
        if self.description.input_scale == InputScale.MEAN_ABS:
            dims = tuple(range(1, x.dim()))
            k = x.abs().mean(dim=dims, keepdim=True)
        packed = kinds.pack_activations(x, threshold)
        transform = self._transform()
        fused = transform is not None
        if self.kind == "linear":
            y = kinds.binary_linear(packed, self.packed, transform=transform)
        else:
            pad = (0, 0) if self.padding_mode != "zeros" else self.padding
            y = self._conv(packed, transform, pad)
        if self.kind == "conv1d":
            y = y.squeeze(2)
        if not fused:
            scale = self.description.output_scale
            if scale is not None:
                y = y * (scale if self.kind == "linear" else
                         scale.reshape((1,) + tuple(scale.shape) + (1,) * (y.dim() - 1 - scale.dim())))
            if k is not None:
                y = y * k.reshape((-1,) + (1,) * (y.dim() - 1))
            y = self._epilogue_torch(y)
        if self.kind == "linear":
            return y.reshape(lead + (y.shape[-1],))
        # The engine writes NHWC: conv outputs stay channels_last (torch's pooling, convolutions and
        # element-wise ops run fastest in that layout on CPU, and the next pack reads it in place).
        return y


class PackedBinaryWeightOnly(_PackedBase):
    """1-bit weights with real activations: stored bit-packed, computed by torch in fp32."""

    def __init__(self, description: PackedLayerDescription) -> None:
        super().__init__(description)
        weight = torch.zeros(self.weight_shape)
        for sign, scale, mask in zip(self.signs, self.plane_scales, self.masks):  # (unpacked once here)
            term = sign * scale.reshape((-1,) + (1,) * (sign.dim() - 1))
            weight = weight + (term if mask is None else term * mask)
        out_scale = description.output_scale
        if out_scale is not None and out_scale.dim() == 1:
            weight = weight * out_scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        self.register_buffer("weight", weight, persistent=False)
        geometry = description.geometry
        self.stride = geometry.stride_2d()
        self.padding = geometry.padding_2d()
        self.padding_mode = geometry.padding_mode
        self.groups = geometry.groups

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "linear":
            y = F.linear(x, self.weight)
        else:
            conv = F.conv2d if self.kind == "conv2d" else F.conv1d
            pads = self.padding if self.kind == "conv2d" else self.padding[1:]
            if self.padding_mode != "zeros":
                flat = [p for pair in reversed(pads) for p in (pair, pair)]
                x = F.pad(x, flat, mode=self.padding_mode)
                pads = (0,) * len(pads)
            y = conv(x, self.weight, None, self.stride if self.kind == "conv2d" else self.stride[1:], pads,
                     1, self.groups)
        scale = self.description.output_scale
        if scale is not None and scale.dim() > 1:
            y = y * scale.reshape((1,) + tuple(scale.shape))
        return self._epilogue_torch(y)


def pack_layer(layer: BinaryLayer) -> _PackedBase:
    """The packed module of a trained binary layer (eval-mode semantics); raises
    :class:`~onebit.methods.NotDeployableError` (an :class:`UnsupportedLayerError` where the packed
    runtime does not run the layer, see :func:`supports`) naming the layer."""
    try:
        description = describe(layer)
    except NotDeployableError:
        raise
    except ValueError as err:
        raise NotDeployableError(f"{layer_label(layer)} ({layer.method.name}): {err}") from None
    require(supports, description, layer_label(layer))
    return build_module(description)


def build_module(description: PackedLayerDescription) -> _PackedBase:
    """The packed runtime module of a description the runtime :func:`supports`."""
    cls = PackedBinary if description.binary_input else PackedBinaryWeightOnly
    return cls(description)


def build_packed(config: dict[str, Any], tensors: dict[str, Tensor]) -> _PackedBase:
    """The packed module stored in a model file as ``config`` and ``tensors`` (format versions 1–3)."""
    return build_module(PackedLayerDescription.from_file(config, tensors))
