"""The contract every binarization method fulfils, and the registry that names them.

A method is a small declarative object holding only its options; all per-layer state (learnable
scales, thresholds, schedule buffers, bit maps) is registered on the layer by :meth:`Method.init_layer`,
so it lands in the layer's ``state_dict`` and ``parameters()`` like any torch module state. The layer
(``onebit.nn``) calls the hooks in this order::

    x_q = quantize_input(layer, x)          # binary (or multi-bit) activations, surrogate gradient
                                            # (= input_quantizer(layer, x).apply() when the method
                                            # has a fused quantizer, which the layer fuses with conv)
    w_q = quantize_weight(layer, W)         # binary weights, surrogate gradient
    y   = scale_output(layer, conv(x_q, w_q)) + bias

and, around training, ``schedule(layer, epoch, epochs)`` before each epoch and ``loss(layer)`` added to
the task loss. :meth:`Method.inference` states what the deployed layer computes so that export can
fold it into popcount arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from .._registry import Registry
from ..errors import OnebitError
from .functional import QuantizerCall, sign

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "Option",
    "Method",
    "FinalStage",
    "InferenceForm",
    "NotDeployableError",
    "register",
    "get",
    "available",
    "method_class",
]


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default, what values are allowed, and what it means.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound); ``choices`` lists the
    allowed values of a categorical option; ``check`` is a custom validator returning an error text or
    ``None``.
    """

    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            return f"a number in {lo}{low}, {high}{hi}"
        return self.doc

    def validate(self, name: str, method: str, value: Any) -> Any:
        problem = None
        if self.choices is not None:
            if value not in self.choices:
                problem = "not allowed"
        elif self.low is not None or self.high is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                problem = "not a number"
            else:
                below = self.low is not None and (value < self.low or (self.low_open and value == self.low))
                above = self.high is not None and (value > self.high or (self.high_open and value == self.high))
                if below or above:
                    problem = "out of range"
        if problem is None and self.check is not None:
            problem = self.check(value)
        if problem is not None:
            raise ValueError(
                f"{method}: option {name}={value!r} is {problem}; allowed: {self.allowed()} ({self.doc})"
            )
        return value


# --------------------------------------------------------------------------------------------------
# What a deployed layer computes
# --------------------------------------------------------------------------------------------------
class NotDeployableError(OnebitError, ValueError):
    """The layer's current form cannot run as 1-bit arithmetic; the message names the layer and why."""


@dataclass
class InferenceForm:
    """What a trained layer computes at inference, in the terms a 1-bit kernel needs.

    ``y = output_scale ⊙ Σ_j (plane_scales[j] ⊙ (plane_masks[j] ⊙ weight_planes[j])) ⊛ x_q + bias``

    where ``x_q = input_scale(x) · sign(x + input_threshold)`` if ``binary_input`` (``input_scale`` is
    ``"mean_abs"`` for XNOR-Net's per-sample K, else ``None``), or the real ``x`` otherwise; padded
    positions of ``x_q`` hold ``pad_value`` (times K). ``weight_planes`` are ±1 tensors of the weight's
    shape; ``plane_scales`` are per-output-channel vectors ``(C_out,)``; ``plane_masks`` are boolean
    tensors or ``None`` (all active). ``output_scale`` broadcasts against one sample's output
    (``(C_out,)`` or ``(C_out, *spatial)``); ``bias`` is ``(C_out,)`` or ``None``.

    ``input_bits``/``input_mix`` (``None`` for every 1-bit method): set by multi-bit activation
    quantizers (HBNN's heterogeneous activations). Then ``binary_input`` is False and ``x_q`` is the
    runtime residual binarization of ``x`` with these bitwidths and fractions
    (:func:`onebit.methods.hbnn.residual_binarize`, per sample), not ``sign(x)``.
    """

    weight_planes: list[Tensor]
    plane_scales: list[Tensor]
    plane_masks: list[Tensor | None]
    binary_input: bool = True
    input_threshold: Tensor | None = None
    input_scale: str | None = None
    output_scale: Tensor | None = None
    bias: Tensor | None = None
    pad_value: float = 0.0
    notes: list[str] = field(default_factory=list)
    input_bits: tuple[int, ...] | None = None
    input_mix: tuple[float, ...] | None = None

    def effective_weight(self) -> Tensor:
        """The real weight the planes stand for: ``Σ_j scale_j · mask_j · plane_j``."""
        total = torch.zeros_like(self.weight_planes[0])
        for plane, scale, mask in zip(self.weight_planes, self.plane_scales, self.plane_masks):
            shape = (-1,) + (1,) * (plane.dim() - 1)
            term = plane * scale.reshape(shape)
            total = total + (term if mask is None else term * mask)
        return total


@dataclass(frozen=True)
class FinalStage:
    """The last training stage a two-stage method needs before it computes with its binary form (BiPer:
    stage 1 trains real sin(ωW) weights, stage 2 their sign), as its reference recipe runs it: the stage's
    method ``options``, its ``epoch_share`` of a run's epochs, and its learning rate relative to the first
    stage's (``lr_factor``). A fixed budget of E epochs is split between the stages, so that a two-stage
    method trains as many epochs as a one-stage one."""

    options: dict[str, Any]
    epoch_share: float
    lr_factor: float

    def epochs(self, total: int) -> tuple[int, int]:
        """(first stage, final stage) epochs of a run of ``total`` epochs: the final stage gets
        ``round(epoch_share·total)``, at least 1, and the first the rest, at least 1."""
        last = max(1, round(self.epoch_share * total))
        return max(1, total - last), last


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------
class Method:
    """Base class of a binarization method. Subclasses set ``name``, ``paper``, ``options`` and
    override the hooks they need; the defaults are "keep it real" (no quantization, no scale)."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    #: Whether the method binarizes activations by default (the ``binarize_activations`` option).
    binarizes_activations: ClassVar[bool] = True
    #: Whether the quantized weight is a sum of several ±1 bit planes (HBNN) rather than ±scale per
    #: output channel; such methods override :meth:`inference` to return every plane.
    multibit: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        self.config: dict[str, Any] = {}
        for key, spec in self.options.items():
            value = options.get(key, spec.default)
            self.config[key] = spec.validate(key, self.name, value)
        self.validate_config()

    def validate_config(self) -> None:
        """Cross-option checks (one option's range depending on another)."""

    def __getattr__(self, item: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and item in config:
            return config[item]
        raise AttributeError(f"{type(self).__name__} has no attribute {item!r}")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.name}({opts})"

    def with_options(self, **changes: Any) -> Method:
        """A copy of this method with some options changed (validated again)."""
        return type(self)(**{**self.config, **changes})

    # -- per-layer state -----------------------------------------------------------------------------
    def init_layer(self, layer: nn.Module) -> None:
        """Register the method's parameters and buffers on ``layer`` (called once, at construction)."""

    # -- forward -------------------------------------------------------------------------------------
    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall | None:
        """The activation quantizer as a fused quantizer call (:mod:`onebit.methods.functional`), which
        the layer can fuse with its convolution so that the binary activations are recomputed in
        backward instead of kept; None for a method without one (it overrides :meth:`quantize_input`)."""
        return None

    def quantize_input(self, layer: nn.Module, x: Tensor) -> Tensor:
        """Binarized activations with the method's surrogate gradient."""
        call = self.input_quantizer(layer, x)
        return x if call is None else call.apply()

    def input_pad_scale(self, layer: nn.Module, x: Tensor) -> Tensor | None:
        """The activation scale that padded positions are multiplied by (XNOR-Net's K), or None."""
        return None

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        """Binarized weights with the method's surrogate gradient."""
        return w

    def scale_output(self, layer: nn.Module, y: Tensor) -> Tensor:
        """Output scaling (analytic or learnable) applied to the conv/linear result, before the bias."""
        return y

    def output_scale_factors(self, layer: nn.Module, spatial_size: tuple[int, ...]) -> tuple[Tensor, ...] | None:
        """:meth:`scale_output` as factors the fused product applies itself (:func:`onebit.methods.
        functional.quantized_product`): ``()`` for no scale, ``(c,)`` for ``y·c`` per output channel,
        ``(c, h[, w])`` for ``y·c`` then ``·h`` along the first and ``·w`` along the second spatial
        dim (``spatial_size`` is the output's). None: no such form; the layer calls scale_output."""
        return () if type(self).scale_output is Method.scale_output else None

    # -- training ------------------------------------------------------------------------------------
    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        """Per-epoch update of the layer's schedule buffers; called before epoch ``epoch`` of ``epochs``
        (0-based), as BiBench's ``ModelParamsUpdateHook`` does."""

    def loss(self, layer: nn.Module) -> Tensor | None:
        """An extra loss term of this layer, added to the task loss, or None."""
        return None

    @classmethod
    def final_stage(cls, options: dict[str, Any]) -> FinalStage | None:
        """The stage a run with these method ``options`` still has to train before its weights are the
        binary ones it is deployed with, or None: most methods train in their binary form throughout."""
        return None

    def finalize(self, layer: nn.Module) -> None:
        """Bring ``layer``, trained, to the state it is deployed in (in place; :func:`onebit.finalize`
        calls it on every binary layer once training is over, before export): BiPer's stage 2,
        ProxConnect++'s hard sign. Most methods deploy as they train: nothing. (State sized by the
        first forward pass, such as XNOR-Net++'s Γ, is sized by ``onebit.finalize(model, x)``.)"""

    # -- deployment ----------------------------------------------------------------------------------
    def input_threshold(self, layer: nn.Module) -> Tensor | None:
        """Per-input-channel threshold b in ``sign(x + b)`` at inference, or None."""
        return None

    def input_scale_kind(self, layer: nn.Module) -> str | None:
        """``"mean_abs"`` if inference multiplies binary activations by a runtime per-sample scale."""
        return None

    def output_scale_tensor(self, layer: nn.Module) -> Tensor | None:
        """The output scale at inference (broadcasting against one sample's output), or None."""
        return None

    # -- complexity (onebit.summary; BiBench, Qin et al. 2023, Sec. 3.5) ---------------------------------
    def weight_bits(self, layer: nn.Module) -> float:
        """Average bits per binarized weight: 1 (one ±1 plane); HBNN, its active bit planes."""
        return 1.0

    def activation_bits(self, layer: nn.Module) -> float:
        """Bits per binarized activation."""
        return 1.0

    def extra_fp_ops(self, layer: nn.Module, inputs: int, outputs: int) -> int:
        """Full-precision operations the method adds to a call of ``layer`` with ``inputs`` input and
        ``outputs`` output elements, read from its inference hooks: a multiply per output element for
        an output scale (α, Γ); with binary activations, an add per input element for a threshold
        (RSign) and a multiply-add per input element for a runtime input scale (XNOR-Net's K)."""
        extra = outputs if self.output_scale_tensor(layer) is not None else 0
        if getattr(layer, "binarize_activations", True):
            extra += inputs if self.input_threshold(layer) is not None else 0
            extra += 2 * inputs if self.input_scale_kind(layer) == "mean_abs" else 0
        return extra

    def inference(self, layer: nn.Module) -> InferenceForm:
        """What the eval-mode layer computes, for export. The default reads the quantized weight and
        checks that it really is ``±scale`` per output channel; methods with several bit planes or
        a non-binary inference form override it."""
        with torch.no_grad():
            w = layer.weight.detach()
            was_training = layer.training
            layer.train(False)
            try:
                wq = self.quantize_weight(layer, w)
            finally:
                layer.train(was_training)
            planes = sign(wq)
            scale = wq.abs().reshape(wq.shape[0], -1).mean(dim=1)
            shape = (-1,) + (1,) * (wq.dim() - 1)
            if not torch.allclose(planes * scale.reshape(shape), wq, rtol=1e-6, atol=1e-12):
                raise NotDeployableError(
                    f"{layer_label(layer)}: method {self.name}'s weights are not binary in this state "
                    f"({self}); they cannot be packed into 1-bit planes"
                )
            binary_input = bool(getattr(layer, "binarize_activations", True))
            return InferenceForm(
                weight_planes=[planes],
                plane_scales=[scale],
                plane_masks=[None],
                binary_input=binary_input,
                input_threshold=self.input_threshold(layer),
                input_scale=self.input_scale_kind(layer),
                output_scale=self.output_scale_tensor(layer),
                bias=None if layer.bias is None else layer.bias.detach().clone(),
                # Real activations are zero-padded by the layer whatever pad_value says.
                pad_value=float(getattr(layer, "pad_value", 0.0)) if binary_input else 0.0,
            )


def layer_label(layer: nn.Module) -> str:
    """How errors name a layer: its qualified name in the model when binarize() recorded one."""
    name = getattr(layer, "onebit_name", None)
    return f"layer {name!r} ({type(layer).__name__})" if name else type(layer).__name__


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
_METHODS: Registry[type[Method]] = Registry(duplicate="a method named {name!r} is already registered",
                                            unknown="unknown binarization method {name!r}; available: {names}",
                                            same_again=True)
_REGISTRY = _METHODS.entries


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return _METHODS.add(cls.name, cls)


def available() -> list[str]:
    """Names of all registered methods, sorted."""
    return _METHODS.names()


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``; unknown names raise ValueError listing the valid ones."""
    return _METHODS.get(name)


def get(name: str | Method, **options: Any) -> Method:
    """The method ``name`` configured with ``options`` (validated). A Method instance passes through
    (with ``options`` applied on top of its own)."""
    if isinstance(name, Method):
        return name.with_options(**options) if options else name
    return method_class(name)(**options)


def iter_classes() -> Iterator[type[Method]]:
    yield from _METHODS
