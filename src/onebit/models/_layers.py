"""What every zoo architecture shares: the factory that makes a layer binary or full precision, the
activation choices, and the base class that records a model's input shape."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing as is_fx_tracing

from ..methods import Method
from ..nn import BinaryConv1d, BinaryConv2d, BinaryLinear, RPReLU
from ..nn.convert import LAYER_OPTIONS, LINEAR_LAYER_OPTIONS
from ..nn.lean import keep_int8_for_backward

__all__ = ["ACTIVATIONS", "LAYER_OPTIONS", "LayerFactory", "ZooModel", "make_activation", "resolve_activation"]


ACTIVATIONS = ("hardtanh", "prelu", "rprelu", "relu", "identity")


class LayerFactory:
    """Builds the layers that a binary network binarizes.

    With ``method=None`` it returns torch's own ``Conv1d``/``Conv2d``/``Linear`` (the full-precision
    network); with a method it returns ``onebit.nn``'s binary layers, all sharing the one configured
    method (methods hold only options, so sharing is safe: per-layer state lives on each layer).
    Layers a paper keeps in full precision (stems, heads, downsample convs) are built with torch's
    classes directly by the architectures, never through this factory.
    """

    def __init__(self, method: Method | None, layer_options: dict[str, Any] | None = None) -> None:
        self.method = method
        self.layer_options = dict(layer_options or {})
        unknown = sorted(set(self.layer_options) - set(LAYER_OPTIONS))
        if unknown:
            raise ValueError(f"unknown layer option(s) {', '.join(unknown)}; valid: {', '.join(LAYER_OPTIONS)}")

    @property
    def binary(self) -> bool:
        return self.method is not None

    def conv2d(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
        bias: bool = False,
    ) -> nn.Conv2d:
        if self.method is None:
            return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        return BinaryConv2d(
            in_channels, out_channels, kernel_size, stride, padding, bias=bias, method=self.method,
            **self.layer_options,
        )

    def conv1d(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
        bias: bool = False,
    ) -> nn.Conv1d:
        if self.method is None:
            return nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        return BinaryConv1d(
            in_channels, out_channels, kernel_size, stride, padding, bias=bias, method=self.method,
            **self.layer_options,
        )

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
        if self.method is None:
            return nn.Linear(in_features, out_features, bias=bias)
        opts = {k: v for k, v in self.layer_options.items() if k in LINEAR_LAYER_OPTIONS}
        return BinaryLinear(in_features, out_features, bias=bias, method=self.method, **opts)


def resolve_activation(activation: str | None, binary: bool) -> str:
    """``None`` picks the papers' defaults: Hardtanh in binary networks (IR-Net, ReCU, BiPer and
    BiBench all use it, because it keeps the real-valued path inside the sign's gradient window [-1, 1])
    and ReLU in the full-precision baseline (He et al.)."""
    if activation is None:
        return "hardtanh" if binary else "relu"
    return activation


def make_activation(kind: str, channels: int) -> nn.Module:
    """One activation module; ``channels`` sizes the per-channel slopes of PReLU and RPReLU."""
    if kind == "hardtanh":  # one int8 per element kept for backward instead of the float input
        return keep_int8_for_backward(nn.Hardtanh())
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "rprelu":
        return RPReLU(channels)
    if kind == "relu":
        return nn.ReLU()
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"activation={kind!r} is not allowed; use one of {', '.join(map(repr, ACTIVATIONS))}")


class ZooModel(nn.Module):
    """Base class of the zoo's networks.

    Attributes:
        input_shape: the shape of one sample the model was built for, without the batch dimension.
        num_classes: the number of outputs of the head.
        method: the binarization method of its binary layers, or ``None`` for the full-precision network.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    method: Method | None

    def _record(self, input_shape: tuple[int, ...], num_classes: int, layers: LayerFactory) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.method = layers.method

    def example_input(self, batch_size: int = 2) -> Tensor:
        """A random batch of the input shape the model was built for (e.g. for ``binarize`` or export)."""
        param = next(self.parameters())
        return torch.randn(batch_size, *self.input_shape, device=param.device, dtype=param.dtype)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, num_classes={self.num_classes}, method={self.method!r}"


def check_input_shape(model: str, x: Tensor, expected: tuple[int, ...], dims: int, hint: str) -> None:
    """Raise a clear error when the last ``dims`` dimensions of ``x`` differ from ``expected``'s.

    Skipped while torch.fx traces the model (for export), where shapes are symbolic."""
    if is_fx_tracing():
        return
    if tuple(x.shape[-dims:]) != tuple(expected[-dims:]):
        raise ValueError(f"{model} was built for inputs of shape {tuple(expected)}, got batch {tuple(x.shape)}; {hint}")
