"""Packed layers: what a binary layer becomes after export.

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods.base import InferenceForm, NotDeployableError, layer_label
from ..nn.layers import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear

__all__ = ["PackedBinary", "PackedBinaryWeightOnly", "pack_layer", "pack_bits", "unpack_bits"]


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


class _PackedBase(nn.Module):
    """Shared state of packed layers: geometry, the inference form's tensors, and the epilogue."""

    #: Tensors of the layer (saved to the file); bit planes are stored bit-packed.
    def __init__(self, config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.config = dict(config)
        self.planes = int(config["planes"])
        shape = tuple(config["weight_shape"])
        self.weight_shape = shape
        self.kind = config["kind"]  # "conv1d", "conv2d", "linear"
        self._tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self._cache: dict[str, Any] = {}
        self.plane_scales = [self._tensors[f"plane_scale{j}"].float() for j in range(self.planes)]
        self.out_channels = shape[0]

    # Unpacked on demand, not kept: as float32 they would take 32x the memory of the stored bits.
    @property
    def signs(self) -> list[Tensor]:
        """The ±1 weight planes (float32 of the layer's weight shape), unpacked from the stored bits."""
        return [unpack_bits(self._tensors[f"plane{j}"], self.weight_shape) for j in range(self.planes)]

    @property
    def masks(self) -> list[Tensor | None]:
        """Per plane, the bool mask of active weights, or None (all active)."""
        return [unpack_bits(self._tensors[f"mask{j}"], self.weight_shape) < 0 if f"mask{j}" in self._tensors
                else None for j in range(self.planes)]  # fmt: skip

    # -- the epilogue ---------------------------------------------------------------------------
    def _vec(self, name: str) -> Tensor | None:
        return self._tensors.get(name)

    def fold_batchnorm(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Fold an eval-mode BatchNorm that follows this layer: y' = y·s + t per channel."""
        invstd = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
        s = invstd * (bn.weight.detach().float() if bn.weight is not None else 1.0)
        t = (bn.bias.detach().float() if bn.bias is not None else 0.0) - bn.running_mean.detach().float() * s
        self._tensors["post_scale"] = self._vec("post_scale") * s if "post_scale" in self._tensors else s
        bias = self._vec("post_bias")
        self._tensors["post_bias"] = t if bias is None else bias * s + t
        self.config["folded_batchnorm"] = True
        self._cache.clear()

    def fuse_activation(self, module: nn.Module) -> bool:
        """Fuse a following PReLU / Hardtanh / ReLU into the epilogue (True if it was fused)."""
        if "clamp" in self.config:
            return False
        self._cache.clear()
        if isinstance(module, nn.PReLU):
            if "prelu" in self._tensors:
                return False
            w = module.weight.detach().float()
            self._tensors["prelu"] = w.expand(self.out_channels).clone() if w.numel() == 1 else w.clone()
            return True
        if isinstance(module, nn.Hardtanh):
            self.config["clamp"] = [float(module.min_val), float(module.max_val)]
            return True
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            self.config["clamp"] = [0.0, 6.0 if isinstance(module, nn.ReLU6) else math.inf]
            return True
        return False

    def _epilogue_torch(self, y: Tensor) -> Tensor:
        """Apply post-scale/bias/PReLU/clamp in torch (channels at dim 1, or last for linear)."""
        def view(v: Tensor) -> Tensor:
            return v if self.kind == "linear" else v.reshape((1, -1) + (1,) * (y.dim() - 2))

        if "post_scale" in self._tensors:
            y = y * view(self._tensors["post_scale"])
        if "post_bias" in self._tensors:
            y = y + view(self._tensors["post_bias"])
        if "prelu" in self._tensors:
            y = torch.where(y < 0, y * view(self._tensors["prelu"]), y)
        if "clamp" in self.config:
            lo, hi = self.config["clamp"]
            y = y.clamp(lo, hi)
        return y

    def state_tensors(self) -> dict[str, Tensor]:
        return dict(self._tensors)

    def extra_repr(self) -> str:
        keys = ", ".join(k for k in ("folded_batchnorm", "clamp") if k in self.config)
        return f"{self.kind}, weight={tuple(self.weight_shape)}, planes={self.planes}" + (f", {keys}" if keys else "")


class PackedBinary(_PackedBase):
    """A binary layer on the 1-bit engine. Output ``y = epilogue(out_scale ⊙ Σ_j μ_j·(m_j⊙B_j) ⊛ x_b)``."""

    def __init__(self, config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        super().__init__(config, tensors)
        from . import kernels

        self._k = kernels
        shape = self.weight_shape
        w_shape = shape if self.kind != "conv1d" else (shape[0], shape[1], 1, shape[2])
        # groups == channels: a depthwise convolution (config "groups", absent for 1)
        self.groups = int(config.get("groups", 1))
        masks = self.masks
        self.packed = kernels.pack_weight_planes(
            [s.reshape(w_shape) for s in self.signs],
            None if all(m is None for m in masks)
            else [None if m is None else m.reshape(w_shape).to(torch.uint8) for m in masks],
            [s.reshape(-1) for s in self.plane_scales],
            groups=self.groups,
        )
        self.padding = tuple(config.get("padding", (0, 0)))
        self.stride = tuple(config.get("stride", (1, 1)))
        self.pad_value = int(config.get("pad_value", 0))
        self.padding_mode = config.get("padding_mode", "zeros")

    def _transform(self) -> Any:
        """The fused epilogue, built once (the engine caches its resolved vectors inside it); folding
        and fusing, which change it, happen at export before the first call."""
        if "transform" not in self._cache:
            self._cache["transform"] = self._build_transform()
        return self._cache["transform"]

    def _build_transform(self) -> Any:
        """The fused epilogue when nothing runtime-dependent (K, spatial scale) sits before it."""
        t = self._tensors
        scale = t.get("out_scale")
        if scale is not None and scale.dim() > 1:
            return None
        if self.config.get("input_scale") == "mean_abs":
            return None
        post_scale, post_bias = t.get("post_scale"), t.get("post_bias")
        total_scale = scale if scale is not None else None
        if post_scale is not None:
            total_scale = post_scale if total_scale is None else total_scale * post_scale
        clamp = self.config.get("clamp")
        return self._k.OutputTransform(
            scale=total_scale, bias=post_bias, prelu=t.get("prelu"),
            clamp_min=None if clamp is None else clamp[0],
            clamp_max=None if clamp is None or math.isinf(clamp[1]) else clamp[1],
        )

    # -- chaining bit-packed outputs into the next binary layer -----------------------------------
    def emits_bits(self) -> bool:
        """True if the whole epilogue is fused, so the engine can emit the next layer's sign bits."""
        return self.kind in ("conv1d", "conv2d") and self._transform() is not None

    def accepts_bits(self) -> bool:
        """True if this layer's input is used only through its packed signs (no input scale, no
        non-zero padding mode), so a previous layer may hand it bits instead of floats."""
        return (self.kind in ("conv1d", "conv2d") and self.padding_mode == "zeros"
                and self.config.get("input_scale") != "mean_abs")

    def bits_transform(self, consumer: PackedBinary) -> Any:
        """This layer's epilogue ending in ``consumer``'s input sign: bit = (y + threshold) < 0, the
        bit ``consumer`` would compute from this layer's float output (same float32 operations)."""
        key = ("bits", id(consumer))
        entry = self._cache.get(key)
        if entry is None or entry[0] is not consumer:
            t = self._transform()
            entry = (consumer, self._k.OutputTransform(
                scale=t.scale, bias=t.bias, prelu=t.prelu, clamp_min=t.clamp_min, clamp_max=t.clamp_max,
                output="bits", threshold=consumer._tensors.get("threshold")))  # fmt: skip
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
        return self._k.pack_activations(x, self._tensors.get("threshold"))

    def _conv(self, packed: Any, transform: Any, padding: tuple[int, int] | None = None,
              residual: Tensor | None = None, bits_for: PackedBinary | None = None,
              out: Tensor | None = None) -> Any:
        """The engine convolution with this layer's geometry, bound once per transform (and per
        ``bits_for``: a consumer whose packed input the same pass also writes)."""
        pad = self.padding if padding is None else padding
        key = ("prepared", id(transform), pad, id(bits_for))
        entry = self._cache.get(key)
        if entry is None or entry[0] is not transform or entry[1] is not bits_for:
            threshold = None if bits_for is None else bits_for._tensors.get("threshold")
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
        t = self._tensors
        threshold = t.get("threshold")
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
        if self.config.get("input_scale") == "mean_abs":
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
            scale = t.get("out_scale")
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

    def __init__(self, config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        super().__init__(config, tensors)
        weight = torch.zeros(self.weight_shape)
        for sign, scale, mask in zip(self.signs, self.plane_scales, self.masks):  # (unpacked once here)
            term = sign * scale.reshape((-1,) + (1,) * (sign.dim() - 1))
            weight = weight + (term if mask is None else term * mask)
        if "out_scale" in self._tensors and self._tensors["out_scale"].dim() == 1:
            weight = weight * self._tensors["out_scale"].reshape((-1,) + (1,) * (weight.dim() - 1))
        self.register_buffer("weight", weight, persistent=False)
        self.stride = tuple(config.get("stride", (1, 1)))
        self.padding = tuple(config.get("padding", (0, 0)))
        self.padding_mode = config.get("padding_mode", "zeros")
        self.groups = int(config.get("groups", 1))

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
        scale = self._tensors.get("out_scale")
        if scale is not None and scale.dim() > 1:
            y = y * scale.reshape((1,) + tuple(scale.shape))
        return self._epilogue_torch(y)


def _geometry(layer: BinaryLayer) -> dict[str, Any]:
    if isinstance(layer, BinaryLinear):
        return {"kind": "linear"}
    groups = int(layer.groups)
    if groups != 1 and not (layer.in_channels == groups and layer.out_channels == groups):
        raise NotDeployableError(
            f"{layer_label(layer)}: groups={groups} (in_channels={layer.in_channels}, out_channels="
            f"{layer.out_channels}); the packed engine runs groups=1 and depthwise convolutions "
            "(groups == in_channels == out_channels) only"
        )
    extra: dict[str, Any] = {"groups": groups} if groups != 1 else {}
    dil = tuple(layer.dilation)
    if any(d != 1 for d in dil):
        raise NotDeployableError(f"{layer_label(layer)}: dilation={dil}; the packed engine runs dilation 1 only")
    pads = layer._reversed_padding_repeated_twice  # (left, right[, top, bottom]) in F.pad order
    pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]
    if any(a != b for a, b in pairs):
        raise NotDeployableError(
            f"{layer_label(layer)}: asymmetric padding {pads} (from padding='same' with an even kernel); "
            "use an odd kernel or explicit symmetric padding"
        )
    if isinstance(layer, BinaryConv1d):
        return {"kind": "conv1d", "stride": [1, layer.stride[0]], "padding": [0, pairs[0][0]],
                "padding_mode": layer.padding_mode, **extra}
    assert isinstance(layer, BinaryConv2d)
    return {"kind": "conv2d", "stride": list(layer.stride), "padding": [pairs[0][0], pairs[1][0]],
            "padding_mode": layer.padding_mode, **extra}


def pack_layer(layer: BinaryLayer) -> _PackedBase:
    """The packed module of a trained binary layer (eval-mode semantics)."""
    try:
        form: InferenceForm = layer.inference_form()
    except NotDeployableError:
        raise
    except ValueError as err:
        raise NotDeployableError(f"{layer_label(layer)} ({layer.method.name}): {err}") from None
    if form.input_bits is not None:
        raise NotDeployableError(
            f"{layer_label(layer)} ({layer.method.name}): multi-bit activations (activations='hetero') pick "
            "each sample's bit map by sorting at run time, which the 1-bit engine cannot compute; train with "
            "activations='binary' to deploy"
        )
    config: dict[str, Any] = {
        **_geometry(layer),
        "method": layer.method.name,
        "planes": len(form.weight_planes),
        "weight_shape": list(form.weight_planes[0].shape),
        "pad_value": int(form.pad_value),
        "input_scale": form.input_scale,
        "binary_input": bool(form.binary_input),
    }
    tensors: dict[str, Tensor] = {}
    for j, (plane, scale, mask) in enumerate(zip(form.weight_planes, form.plane_scales, form.plane_masks)):
        tensors[f"plane{j}"] = pack_bits(plane)
        tensors[f"plane_scale{j}"] = scale.detach().float().reshape(-1).clone()
        if mask is not None:
            tensors[f"mask{j}"] = pack_bits(torch.where(mask.bool(), -1.0, 1.0))
    if form.input_threshold is not None:
        tensors["threshold"] = form.input_threshold.detach().float().clone()
    if form.output_scale is not None:
        tensors["out_scale"] = form.output_scale.detach().float().clone()
    if form.bias is not None:
        tensors["post_bias"] = form.bias.detach().float().clone()
    if not form.binary_input:
        return PackedBinaryWeightOnly(config, tensors)
    return PackedBinary(config, tensors)


def build_packed(config: dict[str, Any], tensors: dict[str, Tensor]) -> _PackedBase:
    cls = PackedBinary if config.get("binary_input", True) else PackedBinaryWeightOnly
    return cls(config, tensors)
