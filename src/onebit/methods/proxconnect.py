"""ProxConnect++: weight binarization with a forward quantizer F and a backward quantizer B, F = P∘B.

One quantizer, :class:`ProxConnectPP`, with five presets registered as methods:

============  ===============================  =====================  ==========================
method        forward F = P∘B                  backward B             μ schedule
============  ===============================  =====================  ==========================
pcpp-bc       sign (P = sign)                  identity               none
pcpp-pc       P^μ = clip(w + μ·sign w, ±1)     identity               μ: 0 → 1, linear
pcpp-bnn      sign (P = sign)                  clip to [−1, 1]        none
pcpp-bnn+     sign (P = sign)                  SignSwish_β            none (β fixed)
bnn++         SignSwish_μ (P = identity)       SignSwish_μ            μ: 1 → 20, linear; then sign
============  ===============================  =====================  ==========================
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from . import functional
from .base import InferenceForm, Method, NotDeployableError, Option, layer_label, register
from .functional import (
    ClipSTE,
    IdentitySTE,
    QuantizerCall,
    SwishSTE,
    clip,
    scaled_sign_swish,
    sign,
    sign_clip_ste,
    sign_identity_ste,
    sign_swish,
    sign_swish_ste,
    ste,
)

__all__ = [
    "PCBNN",
    "BNNPlusPlus",
    "PCBNNPlus",
    "PCBinaryConnect",
    "PCProxConnect",
    "ProxConnectPP",
    "pcpp_mu",
    "pcpp_quantize",
    "prox_sign",
]


def prox_sign(u: Tensor, mu: float | Tensor) -> Tensor:
    """The proximal quantizer ``P^μ(u) = clip(u + μ·sign(u), −1, 1)``: the proximal map of
    ``μ·r`` with ``r(u) = ι_[−1,1](u) + 1 − |u|`` (a concave penalty on the box, 0 at ±1). μ = 0 gives
    the identity on [−1, 1] (ProxConnect's starting point), μ ≥ 1 gives sign exactly."""
    return (u + mu * sign(u)).clamp(-1.0, 1.0)


def pcpp_mu(epoch: int, epochs: int, mu_start: float, mu_end: float, hard_epochs: int) -> tuple[float, bool]:
    """μ before epoch ``epoch`` (0-based) of ``epochs``, and whether the forward is the hard sign.

    μ rises linearly from ``mu_start`` at epoch 0 to ``mu_end`` at the last annealing epoch
    ``epochs − hard_epochs − 1``; the final ``hard_epochs`` epochs (and ``epoch == epochs``, i.e. after
    training) use the hard sign forward, so the trained weights are binary.
    """
    annealing = epochs - hard_epochs
    if epoch >= annealing:
        return float(mu_end), True
    fraction = epoch / (annealing - 1) if annealing > 1 else 1.0
    return float(mu_start + (mu_end - mu_start) * fraction), False


def pcpp_quantize(u: Tensor, prox, backward, mu: Tensor | float, hard: bool) -> Tensor:
    """PC++'s quantizer: forward value ``F(u) = P(B(u))`` (``sign`` for P once ``hard``), gradient
    ``B'(u)`` — the chain rule goes through the backward quantizer B, not through F."""
    b = backward(u, mu)
    with torch.no_grad():
        f = sign(b) if hard else prox(b, mu)
    return ste(f, b)


class _ProxIdentity(torch.autograd.Function):
    """``P^μ(u)`` forward, identity gradient: ``pcpp_quantize`` of the ProxConnect preset, fused."""

    @staticmethod
    def forward(ctx, u: Tensor, mu: Tensor) -> Tensor:
        return prox_sign(u, mu)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


# The native kernel (csrc/train_pcpp.cpp, in onebit._engine): kinds of train_pcpp.h PcppValueKind, PcppGradKind.
_PCPP_KERNEL = functional._engine is not None and hasattr(functional._engine, "pcpp_weight")
_SIGN, _PROX = 0, 1
_IDENTITY_GRAD, _CLIP_GRAD = 0, 1


def _native_weight(w: Tensor) -> bool:
    """Whether the native kernel takes this weight: a float32 CPU plain tensor with an output-channel
    dimension, run eagerly (:func:`onebit.methods.functional._native`), with the kernel in the engine."""
    return _PCPP_KERNEL and functional._native(w) and w.dim() > 1 and w.numel() > 0


def _native_mean_abs(w: Tensor) -> Tensor:
    """The per-output-channel mean |W| (shape ``(c_out, 1, …)``, as :meth:`ProxConnectPP._scale`) in one
    native pass: summed in double, rounded once (torch sums in float32: within an ulp or so of it)."""
    rows = w.detach().reshape(w.shape[0], -1).contiguous()
    alpha = torch.empty(rows.shape[0])
    functional._engine.pcpp_weight(_SIGN, rows.data_ptr(), rows.shape[0], rows.shape[1], alpha.data_ptr(), False, 0.0,
                                   0, functional.kernel_threads(rows.numel()))
    return alpha.reshape((-1,) + (1,) * (w.dim() - 1))


class _PcppWeight(torch.autograd.Function):
    """``F(w) = α·v(w/α)`` with B's gradient, natively (csrc/train_pcpp.h): forward one pass per row (α =
    mean |W| of the row, then the value), backward one pass (``B'(u)·(g·α)/α``, autograd's chain through
    the product, B and the division). α is detached; with ``scaled`` False, α = 1 and no product."""

    @staticmethod
    def forward(ctx, w: Tensor, kind: int, grad_kind: int, mu: float, scaled: bool) -> Tensor:
        rows = w.detach().reshape(w.shape[0], -1).contiguous()
        out = torch.empty_like(rows)
        alpha = torch.empty(rows.shape[0]) if scaled else None
        functional._engine.pcpp_weight(kind, rows.data_ptr(), rows.shape[0], rows.shape[1],
                                       functional.data_address(alpha), False, mu, out.data_ptr(),
                                       functional.kernel_threads(rows.numel()))
        ctx.save_for_backward(rows, alpha)
        ctx.grad_kind, ctx.shape = grad_kind, w.shape
        return out.reshape(w.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        functional._once_differentiable()
        rows, alpha = ctx.saved_tensors
        if alpha is None and ctx.grad_kind == _IDENTITY_GRAD:
            return grad, None, None, None, None
        g = grad.reshape(rows.shape).contiguous()
        out = torch.empty_like(rows)
        functional._engine.pcpp_weight_backward(ctx.grad_kind, g.data_ptr(), rows.data_ptr(), rows.shape[0],
                                                rows.shape[1], functional.data_address(alpha),
                                                out.data_ptr(), functional.kernel_threads(g.numel()))
        return out.reshape(ctx.shape), None, None, None, None


def _identity(u: Tensor, mu: Tensor | float) -> Tensor:
    return u


def _clip(u: Tensor, mu: Tensor | float) -> Tensor:
    return clip(u)


def _sign(u: Tensor, mu: Tensor | float) -> Tensor:
    return sign(u)


def _check_int(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "not a non-negative integer"
    return None


_SCALE = Option("mean_abs", "weight scale: 'mean_abs' (per-output-channel mean |W|, detached) or 'none'",
                choices=("mean_abs", "none"))
_HARD = Option(1, "number of final epochs trained with the hard sign forward", check=_check_int)


class ProxConnectPP(Method):
    """ProxConnect++ (Lu, Yu, Li, Partovi Nia, NeurIPS 2023, arXiv 2402.17710), the weight quantizer.

    ``F(w) = α·P^μ(B^μ(w/α))`` in the forward pass; in the backward pass the gradient reaching the
    latent weight is ``g·(B^μ)'(w/α)`` (α = per-output-channel mean |W|, detached, with
    ``scale="mean_abs"``; α = 1 with ``scale="none"``). Writing F as ``P∘B`` is the paper's
    decomposition criterion (F = P^μ_r ∘ B^μ_r), under which PC++ inherits ProxConnect's guarantees;
    every preset here is built that way, so the criterion holds by construction.

    μ is a per-layer buffer (``pcpp_mu``) set by :func:`onebit.schedule_step` following :func:`pcpp_mu`;
    ``pcpp_hard`` marks the end of training, where P becomes ``sign`` and :meth:`inference` becomes
    deployable (binary ±α). Before that, presets whose forward is not binary (``pcpp-pc``, ``bnn++``)
    raise :class:`NotDeployableError` from :meth:`inference`.

    On float32 CPU weights (run eagerly) the presets with a sign or proximal forward (pcpp-bc, pcpp-pc,
    pcpp-bnn) run F and B's gradient natively (csrc/train_pcpp.cpp, :class:`_PcppWeight`): one pass per
    output channel's row each way instead of torch's chain of element-wise ops, the same float operations
    in the same order, except α: the native mean |W| is summed in double (torch: float32), so α, and every
    value and gradient scaled by it, can differ from the torch formulas by an ulp or so (≤ 1e-6 relative;
    bit for bit given the same α, tests/methods/test_native_pcpp.py). The SignSwish presets take α from
    the same kernel and their own (:func:`~onebit.methods.functional.scaled_sign_swish`). Anything else
    (float64, a tracer, an exporter, torch.compile, ``functional.NATIVE_KERNELS = False``) takes the torch
    formulas below, which stay the definition and the tests' oracle.

    Activations: the paper binarizes weights only (``binarizes_activations = False``; activations stay
    real). With ``binarize_activations=True`` on the layer, activations use ``sign`` forward with the
    preset's backward quantizer B (at the current μ) as surrogate, so they are binary at every point of
    the schedule; no scale.

    Verified against the paper's abstract and summaries: forward/backward quantizers F and B coupled
    through μ, the F = P∘B criterion, BC/PC/BNN/BNN+ as special cases, BNN++ replacing BNN+'s sign
    forward by SignSwish, weight binarization of CNNs and ViTs. **Assumed** (Sec. 4 and Table 1 were not
    reachable): the proximal quantizer :func:`prox_sign`, the linear μ schedules and their ranges, the
    fixed β = 5 of BNN+, the detached mean-|W| scale, and the final hard-sign epochs.
    """

    binarizes_activations = False
    #: Whether F is binary before the end of the schedule (so inference works at any time).
    always_binary: ClassVar[bool] = True

    # P and B of the preset: (u, mu) -> Tensor.
    def prox(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return sign(u)

    def backward_quantizer(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return u

    def mu_range(self) -> tuple[float, float]:
        """(μ at the first epoch, μ at the last annealing epoch)."""
        return 0.0, 0.0

    def init_layer(self, layer: nn.Module) -> None:
        w = layer.weight
        layer.register_buffer("pcpp_mu", torch.tensor(self.mu_range()[0], dtype=w.dtype, device=w.device))
        layer.register_buffer("pcpp_hard", torch.tensor(False, device=w.device))

    def _scale(self, w: Tensor) -> Tensor | None:
        if self.scale == "none":
            return None
        if _native_weight(w):
            return _native_mean_abs(w)
        return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).detach()

    # The fused forms of pcpp_quantize(u, prox, backward_quantizer, μ, hard) and of
    # ste(sign(x), backward_quantizer(x, μ)); the preset formulas above stay as their definition.
    def fused_weight(self, u: Tensor, mu: Tensor, hard: bool) -> Tensor:
        return sign_identity_ste(u)

    def fused_input(self, x: Tensor, mu: Tensor) -> QuantizerCall:
        return QuantizerCall(x, IdentitySTE)

    def native_kinds(self, hard: bool) -> tuple[int, int] | None:
        """(value kind, gradient kind) of the native kernel (csrc/train_pcpp.h) for this preset, or None
        where it has none (the SignSwish presets: their own kernel, functional.scaled_sign_swish)."""
        return _SIGN, _IDENTITY_GRAD

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        hard = bool(layer.pcpp_hard)
        kinds = self.native_kinds(hard) if _native_weight(w) else None
        if kinds is not None:  # the fused formula below in one pass each way (values bit for bit given α)
            return _PcppWeight.apply(w, *kinds, float(layer.pcpp_mu), self.scale != "none")
        return self.scaled_weight(w, self._scale(w), layer.pcpp_mu, hard)

    def scaled_weight(self, w: Tensor, alpha: Tensor | None, mu: Tensor, hard: bool) -> Tensor:
        """``fused_weight(w/α)·α`` (α None: ``fused_weight(w)``); the SignSwish presets fuse all of it
        (:func:`onebit.methods.functional.scaled_sign_swish`)."""
        u = w if alpha is None else w / alpha
        q = self.fused_weight(u, mu, hard)
        return q if alpha is None else q * alpha

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return self.fused_input(x, layer.pcpp_mu)

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        start, end = self.mu_range()
        mu, hard = pcpp_mu(epoch, epochs, start, end, self.hard_epochs)
        layer.pcpp_mu.fill_(mu)
        layer.pcpp_hard.fill_(hard)

    def finalize(self, layer: nn.Module) -> None:
        """The state after training (epoch == epochs): μ at its end, the hard sign forward."""
        self.schedule(layer, 1, 1)

    def is_binary(self, layer: nn.Module) -> bool:
        """Whether the layer's forward quantizer gives binary weights in its current state."""
        return self.always_binary or bool(layer.pcpp_hard)

    def inference(self, layer: nn.Module) -> InferenceForm:
        if not self.is_binary(layer):
            raise NotDeployableError(
                f"{layer_label(layer)}: {self.name}'s forward quantizer is not binary before the end of its "
                f"schedule (μ={float(layer.pcpp_mu):g}); finish training — onebit.schedule_step(model, "
                "epoch, epochs) for the last epoch (or epoch=epochs after training) switches to the hard sign"
            )
        form = super().inference(layer)
        if not form.binary_input:
            form.pad_value = 0.0  # the layer zero-pads a real input; pad_value applies to binary inputs
        return form


@register
class PCBinaryConnect(ProxConnectPP):
    """BinaryConnect as PC++: F = sign, B = identity (P = sign). Hand-check: value ±α, gradient g."""

    name = "pcpp-bc"
    paper = "Lu et al., ProxConnect++ (NeurIPS 2023): BinaryConnect (Courbariaux et al., 2015) preset"
    options: ClassVar[dict[str, Option]] = {"scale": _SCALE, "hard_epochs": _HARD}


@register
class PCProxConnect(ProxConnectPP):
    """ProxConnect (Dockhorn et al., NeurIPS 2021) as PC++: F = P^μ (:func:`prox_sign`), B = identity;
    μ rises linearly from ``mu_start`` = 0 (identity on [−1, 1]) to ``mu_end`` = 1 (sign), then the
    final ``hard_epochs`` use sign. Binary (deployable) once μ ≥ 1 or at the end of the schedule."""

    name = "pcpp-pc"
    paper = "Lu et al., ProxConnect++ (NeurIPS 2023): ProxConnect (Dockhorn et al., 2021) preset"
    always_binary = False
    options: ClassVar[dict[str, Option]] = {
        "mu_start": Option(0.0, "μ of the proximal quantizer at the first epoch", low=0.0),
        "mu_end": Option(1.0, "μ at the last annealing epoch (μ >= 1 is sign)", low=0.0),
        "scale": _SCALE,
        "hard_epochs": _HARD,
    }

    def validate_config(self) -> None:
        if self.mu_end < self.mu_start:
            raise ValueError(f"pcpp-pc: mu_end={self.mu_end} must be >= mu_start={self.mu_start}")

    def prox(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return prox_sign(u, mu)

    def fused_weight(self, u: Tensor, mu: Tensor, hard: bool) -> Tensor:
        return sign_identity_ste(u) if hard else _ProxIdentity.apply(u, mu.detach())

    def native_kinds(self, hard: bool) -> tuple[int, int] | None:
        return (_SIGN if hard else _PROX), _IDENTITY_GRAD

    def mu_range(self) -> tuple[float, float]:
        return float(self.mu_start), float(self.mu_end)

    def is_binary(self, layer: nn.Module) -> bool:
        return bool(layer.pcpp_hard) or float(layer.pcpp_mu) >= 1.0


@register
class PCBNN(ProxConnectPP):
    """BNN (Hubara et al., 2016) as PC++: F = sign = sign∘clip, B = clip to [−1, 1] (gradient
    ``g·1{|u| ≤ 1}``)."""

    name = "pcpp-bnn"
    paper = "Lu et al., ProxConnect++ (NeurIPS 2023): BNN (Hubara et al., 2016) preset"
    options: ClassVar[dict[str, Option]] = {"scale": _SCALE, "hard_epochs": _HARD}

    def backward_quantizer(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return clip(u)

    def fused_weight(self, u: Tensor, mu: Tensor, hard: bool) -> Tensor:
        return sign_clip_ste(u)  # sign∘clip = sign

    def native_kinds(self, hard: bool) -> tuple[int, int] | None:
        return _SIGN, _CLIP_GRAD

    def fused_input(self, x: Tensor, mu: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ClipSTE, (None,))


@register
class PCBNNPlus(ProxConnectPP):
    """BNN+ (Darabi et al., 2018) as PC++: F = sign = sign∘SS_β (SignSwish is odd and keeps the sign),
    B = SignSwish_β with a fixed ``beta``."""

    name = "pcpp-bnn+"
    paper = "Lu et al., ProxConnect++ (NeurIPS 2023): BNN+ (Darabi et al., 2018) preset"
    options: ClassVar[dict[str, Option]] = {
        "beta": Option(5.0, "SignSwish slope β of the backward quantizer", low=0.0, low_open=True),
        "scale": _SCALE,
        "hard_epochs": _HARD,
    }

    def backward_quantizer(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return sign_swish(u, self.beta)

    def fused_weight(self, u: Tensor, mu: Tensor, hard: bool) -> Tensor:
        return sign_swish_ste(u, self.beta, value="sign_swish")

    def scaled_weight(self, w: Tensor, alpha: Tensor | None, mu: Tensor, hard: bool) -> Tensor:
        return scaled_sign_swish(w, alpha, self.beta, "sign_swish")

    def native_kinds(self, hard: bool) -> tuple[int, int] | None:
        return None

    def fused_input(self, x: Tensor, mu: Tensor) -> QuantizerCall:
        return QuantizerCall(x, SwishSTE, (self.beta, "sign"))


@register
class BNNPlusPlus(ProxConnectPP):
    """BNN++ (the paper's proposal): F = SignSwish_μ (P = identity), B = SignSwish_μ, so forward and
    backward agree; μ (the slope) rises linearly from ``mu_start`` = 1 to ``mu_end`` = 20 and the final
    ``hard_epochs`` use F = sign∘SS_μ = sign, which binarizes the weights. At μ = 20 the forward is
    within 1e-3 of sign for |w/α| ≥ 0.5 (α = mean |W|)."""

    name = "bnn++"
    paper = ("Lu et al., Understanding Neural Network Binarization with Forward and Backward Proximal "
             "Quantizers, NeurIPS 2023")
    always_binary = False
    options: ClassVar[dict[str, Option]] = {
        "mu_start": Option(1.0, "SignSwish slope μ at the first epoch", low=0.0, low_open=True),
        "mu_end": Option(20.0, "SignSwish slope μ at the last annealing epoch", low=0.0, low_open=True),
        "scale": _SCALE,
        "hard_epochs": _HARD,
    }

    def validate_config(self) -> None:
        if self.mu_end < self.mu_start:
            raise ValueError(f"bnn++: mu_end={self.mu_end} must be >= mu_start={self.mu_start}")

    def prox(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return u

    def backward_quantizer(self, u: Tensor, mu: Tensor | float) -> Tensor:
        return sign_swish(u, mu)

    def fused_weight(self, u: Tensor, mu: Tensor, hard: bool) -> Tensor:
        return sign_swish_ste(u, mu, value="sign_swish" if hard else "swish")

    def scaled_weight(self, w: Tensor, alpha: Tensor | None, mu: Tensor, hard: bool) -> Tensor:
        return scaled_sign_swish(w, alpha, mu.detach(), "sign_swish" if hard else "swish")

    def native_kinds(self, hard: bool) -> tuple[int, int] | None:
        return None

    def fused_input(self, x: Tensor, mu: Tensor) -> QuantizerCall:
        return QuantizerCall(x, SwishSTE, (mu.detach(), "sign"))

    def mu_range(self) -> tuple[float, float]:
        return float(self.mu_start), float(self.mu_end)
