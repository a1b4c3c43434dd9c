"""Binarized Conv1d, Conv2d and Linear layers.

Each is a subclass of its torch counterpart, with the same constructor arguments and the same
``weight`` (the latent real weights) and ``bias`` parameters, plus:

* ``method``: a registered method name or :class:`onebit.methods.Method`, and that method's options
  as keyword arguments;
* ``pad_value`` (convolutions): the value that padded positions of the *binarized* input hold,
  ``0`` (default), ``+1`` or ``−1``. The reference implementations binarize the input and then let
  ``F.conv2d`` zero-pad it, so ``0`` reproduces them; a 1-bit kernel has no 0, so it needs a correction
  term for zero padding, while ``±1`` padding is a plain packed constant (Larq Compute Engine pads
  with +1). With a ``padding_mode`` other than ``"zeros"`` the *real* input is padded that way before
  binarization instead, and ``pad_value`` plays no part;
* ``binarize_weights`` / ``binarize_activations``: switch either side to full precision (ReActNet's
  step 1 trains binary activations with real weights; ProxConnect++ keeps real activations).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods import Method, get
from ..methods.base import InferenceForm, NotDeployableError, layer_label
from ..methods.functional import announce_kept, quantized_product

__all__ = ["BinaryLayer", "BinaryConv1d", "BinaryConv2d", "BinaryLinear", "PAD_VALUES"]

PAD_VALUES = (0.0, 1.0, -1.0)


class BinaryLayer:
    """Mixin holding what the three binary layers share: the method, its hooks, and the schedule,
    loss and inference entry points."""

    method: Method
    weight: nn.Parameter
    bias: nn.Parameter | None
    #: Linear layers treat every leading dimension as batch (tokens); convolutions have channels at 1.
    features_last: bool = False

    def _setup_binary(
        self,
        method: str | Method,
        options: dict[str, Any],
        binarize_weights: bool,
        binarize_activations: bool | None,
        pad_value: float = 0.0,
    ) -> None:
        self.method = get(method, **options)
        if self.weight.numel() == 0:  # the methods' per-channel scales and kernels need a weight to reduce
            raise ValueError(f"{type(self).__name__} with weight shape {tuple(self.weight.shape)} has no weights to "
                             "binarize (zero input or output features); keep this layer full precision")
        if pad_value not in PAD_VALUES:
            raise ValueError(f"pad_value={pad_value!r} is not allowed; use 0, 1 or -1")
        self.pad_value = float(pad_value)
        self.binarize_weights = bool(binarize_weights)
        if binarize_activations is None:
            binarize_activations = self.method.binarizes_activations
        self.binarize_activations = bool(binarize_activations)
        self.method.init_layer(self)

    # Broadcast helpers the methods use, so that one method file serves all three layer kinds.
    @property
    def in_features_count(self) -> int:
        return self.weight.shape[1] * getattr(self, "groups", 1)

    @property
    def out_features_count(self) -> int:
        return self.weight.shape[0]

    def channel_view(self, v: Tensor, ndim: int) -> Tensor:
        """Reshape a per-channel vector ``(C,)`` to broadcast against a tensor of ``ndim`` dims."""
        if self.features_last:
            return v
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def sample_dims(self, x: Tensor) -> tuple[int, ...]:
        """The dims of one sample's features (everything but the batch; the last dim for Linear)."""
        if self.features_last:
            return (x.dim() - 1,)
        return tuple(range(1, x.dim()))

    def _binary_product(self, x: Tensor, kind: str, conv: tuple, padding: tuple[int, ...] | None) -> Tensor:
        """``product(quantize_input(x) padded, quantize_weight(W))``. When the method's input quantizer
        is a fused one and the padding is the product's own zero padding, quantizer and product run as
        one autograd.Function (:func:`~onebit.methods.functional.quantized_product`) that keeps the real
        input rather than a float copy of the binary one; otherwise quantize, pad and multiply apart."""
        x = self._pre_pad(x)
        call = None
        # (A method class that overrides quantize_input itself keeps its own path.)
        own_path = type(self.method).quantize_input is not Method.quantize_input
        if self.binarize_activations and padding is not None and not own_path:
            call = self.method.input_quantizer(self, x)
        if call is not None:
            wq = self.method.quantize_weight(self, self.weight) if self.binarize_weights else self.weight
            full_conv = conv[:1] + (padding,) + conv[1:] if conv else ()
            scales = self._fused_scales(x, full_conv)
            y = quantized_product(call, wq, kind, full_conv, scales or ())
            return y if scales is not None else self.method.scale_output(self, y)
        xq = self.method.quantize_input(self, x) if self.binarize_activations else x
        xq = self._post_pad(xq, x)
        wq = self.method.quantize_weight(self, self.weight) if self.binarize_weights else self.weight
        if xq is x and wq.requires_grad and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type):
            announce_kept(x)  # the product keeps the real input itself for the weight's gradient (autocast: a copy)
        if kind == "linear":
            return self.method.scale_output(self, F.linear(xq, wq))
        op = F.conv1d if kind == "conv1d" else F.conv2d
        return self.method.scale_output(self, op(xq, wq, None, conv[0], padding or 0, *conv[1:]))

    def _fused_scales(self, x: Tensor, conv: tuple) -> tuple[Tensor, ...] | None:
        """The method's output scale as factors for the fused product, or None (scale_output then
        runs after it): also None when a subclass overrides scale_output below the class that
        defines output_scale_factors, whose factors would then not be its scale."""
        method_type = type(self.method)
        if not issubclass(_owner(method_type, "output_scale_factors"), _owner(method_type, "scale_output")):
            return None
        spatial = ()
        if conv:
            stride, padding, dilation = conv[0], conv[1], conv[2]
            spatial = tuple(
                (n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, p, d, k, s in zip(x.shape[2:], padding, dilation, self.kernel_size, stride)
            )
        return self.method.output_scale_factors(self, spatial)

    def _finish(self, y: Tensor) -> Tensor:
        if self.bias is not None:
            y = y + self.channel_view(self.bias, y.dim())
        return y

    def _pre_pad(self, x: Tensor) -> Tensor:
        return x

    def _post_pad(self, xq: Tensor, x: Tensor) -> Tensor:
        return xq

    # Entry points used by onebit.schedule_step / extra_loss / export.
    def schedule_step(self, epoch: int, epochs: int) -> None:
        self.method.schedule(self, epoch, epochs)

    def extra_loss(self) -> Tensor | None:
        return self.method.loss(self)

    def inference_form(self) -> InferenceForm:
        if not self.binarize_weights:
            raise NotDeployableError(
                f"{layer_label(self)}: weights are full precision (binarize_weights=False); "
                "a 1-bit kernel needs binary weights"
            )
        return self.method.inference(self)

    def extra_repr(self) -> str:  # type: ignore[override]
        base = super().extra_repr()  # type: ignore[misc]
        extras = [f"method={self.method!r}"]
        if not self.binarize_weights:
            extras.append("binarize_weights=False")
        if not self.binarize_activations:
            extras.append("binarize_activations=False")
        if getattr(self, "pad_value", 0.0) != 0.0:
            extras.append(f"pad_value={self.pad_value:g}")
        return ", ".join([base] + extras)


def _owner(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO that defines ``name``."""
    return next(c for c in cls.__mro__ if name in c.__dict__)


class _BinaryConvMixin(BinaryLayer):
    """Explicit padding: torch's ``_reversed_padding_repeated_twice`` already resolves int, tuple and
    'same' padding into F.pad order. Zero padding after binarization goes to the convolution itself
    (no padded copy of the binary input is made or saved for backward); ±1 padding and asymmetric
    padding pad the binary tensor explicitly, and the convolution then runs unpadded."""

    padding_mode: str
    _reversed_padding_repeated_twice: list[int]

    def _has_padding(self) -> bool:
        return any(p != 0 for p in self._reversed_padding_repeated_twice)

    def _pre_pad(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" and self._has_padding():
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return x

    def _conv_padding(self) -> tuple[int, ...] | None:
        """The padding to hand to the convolution itself, which pads with zeros without copying the
        input: for zero padding after binarization (``pad_value = 0``, or real activations), when the
        padding is the same on both sides of every dim; else None (pad explicitly)."""
        if self.padding_mode != "zeros":
            return (0,) * len(self.kernel_size)  # the real input was padded before binarization
        if self.pad_value != 0.0 and self.binarize_activations:
            return None
        pads = self._reversed_padding_repeated_twice
        left, right = pads[0::2], pads[1::2]
        if left != right:
            return None
        return tuple(reversed(left))

    def _post_pad(self, xq: Tensor, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros" or not self._has_padding() or self._conv_padding() is not None:
            return xq
        if self.pad_value == 0.0 or not self.binarize_activations:
            return F.pad(xq, self._reversed_padding_repeated_twice, value=0.0)
        scale = self.method.input_pad_scale(self, x)
        if scale is None:  # ±1 padding of a binary tensor: one padded copy, no border arithmetic
            return F.pad(xq, self._reversed_padding_repeated_twice, value=self.pad_value)
        padded = F.pad(xq, self._reversed_padding_repeated_twice, value=0.0)
        border = F.pad(torch.zeros_like(xq[:1, :1]), self._reversed_padding_repeated_twice, value=1.0)
        return padded + self.pad_value * border * scale

    def _check_input(self, x: Tensor, spatial: int) -> bool:
        """Validate the rank; True when the input is batched (unbatched inputs count as one sample)."""
        if x.dim() not in (spatial + 1, spatial + 2):
            raise ValueError(
                f"{type(self).__name__} expects a {spatial + 2}-D (batched) or {spatial + 1}-D input, "
                f"got shape {tuple(x.shape)}"
            )
        return x.dim() == spatial + 2


class BinaryConv1d(_BinaryConvMixin, nn.Conv1d):
    """Binarized ``nn.Conv1d``; see the module docstring for the extra arguments."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] | str = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        method: str | Method = "bnn",
        pad_value: float = 0.0,
        binarize_weights: bool = True,
        binarize_activations: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        self._setup_binary(method, options, binarize_weights, binarize_activations, pad_value)

    def forward(self, x: Tensor) -> Tensor:
        batched = self._check_input(x, 1)
        conv = (self.stride, self.dilation, self.groups)
        y = self._finish(self._binary_product(x if batched else x.unsqueeze(0), "conv1d", conv, self._conv_padding()))
        return y if batched else y.squeeze(0)


class BinaryConv2d(_BinaryConvMixin, nn.Conv2d):
    """Binarized ``nn.Conv2d``; see the module docstring for the extra arguments."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        method: str | Method = "bnn",
        pad_value: float = 0.0,
        binarize_weights: bool = True,
        binarize_activations: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        self._setup_binary(method, options, binarize_weights, binarize_activations, pad_value)

    def forward(self, x: Tensor) -> Tensor:
        batched = self._check_input(x, 2)
        conv = (self.stride, self.dilation, self.groups)
        y = self._finish(self._binary_product(x if batched else x.unsqueeze(0), "conv2d", conv, self._conv_padding()))
        return y if batched else y.squeeze(0)


class BinaryLinear(BinaryLayer, nn.Linear):
    """Binarized ``nn.Linear``. Inputs may have any number of leading (batch, token) dimensions;
    per-sample statistics (XNOR-Net's K, ReCU's std) are taken over the feature dimension of each
    token, as BiBench's Linear variants do."""

    features_last = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        method: str | Method = "bnn",
        binarize_weights: bool = True,
        binarize_activations: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._setup_binary(method, options, binarize_weights, binarize_activations)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"BinaryLinear expects inputs whose last dimension is in_features={self.in_features}, "
                f"got shape {tuple(x.shape)}"
            )
        return self._finish(self._binary_product(x, "linear", (), ()))
