"""ReCU: rectified clamp unit reviving dead weights, with a learnable output scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import functional
from .base import Method, Option, register
from .functional import ApproxSTE, QuantizerCall, _clip_grad, native_activations, recu_weight, sign

EPS = 1e-5


def recu_tau(epoch: int, epochs: int, tau_min: float, tau_max: float) -> float:
    """ReCU's exponential τ schedule (Xu et al., ICCV 2021, Sec. 3.4): ``τ(e) = A·e^{e/E} + B`` with
    ``A = (τmax − τmin)/(e − 1)``, ``B = τmin − A``; τ(0) = τmin, τ(E) = τmax."""
    a = (tau_max - tau_min) / (math.e - 1)
    return a * math.exp(epoch / epochs) + (tau_min - a)


def unbiased_var(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """The reference's unbiased variance over ``dims``; over a single element (a fan-in of one) it
    is undefined and torch returns NaN, so onebit takes the biased value 0 there instead."""
    count = 1
    for d in dims:
        count *= x.shape[d]
    return x.var(dim=dims, keepdim=True, correction=1 if count > 1 else 0)


def standardize_per_sample(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x / sqrt(var + 1e-5)`` over one sample's features (unbiased variance, as the reference)."""
    return x / torch.sqrt(unbiased_var(x, dims) + EPS)


class StandardizedApproxSTE:
    """``ste(sign(a), approx_sign(a))`` with ``a = standardize_per_sample(x)``, as a fused quantizer
    (:class:`onebit.methods.functional.QuantizerCall`): the variance in two passes (mean, then a dot
    product of the centred rows: torch's Welford ``var`` is ~20x slower on CPU), and the backward
    through ApproxSign and the standardisation in closed form,
    ``g_x = (g_a − (Σ g_a·a)·(a − m/σ)/(n − 1))/σ`` per sample (σ = sqrt(var + ε), m the mean, n
    features). It keeps ``x``, the mean and σ (``slim``), and backward rebuilds ``a = x/σ`` with the
    forward's own division (bit-identical, one pass): ``x`` is what the Hardtanh in front keeps
    anyway (:func:`onebit.methods.functional.announce_kept`), so no float copy of ``a`` is kept.
    On float32 CPU tensors the forward, the rebuilt binary input and the backward are native row
    kernels (csrc/train_activations.cpp: one sample's row, L2-resident, at a time): ``a`` is then never
    materialised (the kept ``a`` is None) and the gradient is two passes per row instead of ~10 over
    the whole tensor; the same element-wise arithmetic, the row sums in double precision."""

    @staticmethod
    def value(x: Tensor, features: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        if native_activations(x):
            return _native_standardize_sign(x, features)
        rows = x.reshape(-1, features)
        mean = rows.mean(dim=1, keepdim=True)
        centred = rows - mean
        std = torch.sqrt(torch.linalg.vecdot(centred, centred).unsqueeze(1) / _dof(features) + EPS)
        a = torch.div(rows, std, out=centred).reshape(x.shape)  # reuses the spent centred rows
        return sign(a), (a, mean, std)

    @staticmethod
    def slim(kept: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return kept[1:]  # (mean, σ): a is rebuilt from x

    @staticmethod
    def restore(x: Tensor, slim: tuple[Tensor, ...], features: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        mean, std = slim
        if native_activations(x, std):
            return _native_scaled_sign(x, std, features), (None, mean, std)
        a = torch.div(x.reshape(-1, features), std).reshape(x.shape)
        return sign(a), (a, mean, std)

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], features: int) -> Tensor:
        a, mean, std = kept
        if a is None:  # the native forward or restore: a = x/σ rebuilt inside the kernel
            return _native_standardized_grad(grad, x, mean, std, features)
        a = a.reshape(-1, features)
        inside = _clip_grad(grad.reshape(a.shape), a)
        grad_a = torch.addcmul(inside * 2, inside, a.abs(), value=-2)  # ApproxSign: g·(2 − 2|a|)
        coef = torch.linalg.vecdot(grad_a, a).unsqueeze(1) / _dof(features)
        shifted = a - mean / std  # (x − m)/σ
        return grad_a.addcmul_(shifted, coef, value=-1).div_(std).reshape(grad.shape)


def _native_standardize_sign(x: Tensor, features: int) -> tuple[Tensor, tuple[None, Tensor, Tensor]]:
    """(sign(x/σ), (None, mean, σ)) by ``standardize_sign_rows``, mean and σ shaped (rows, 1)."""
    rows = x.detach().reshape(-1, features).contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    mean, std = torch.empty(2, rows.shape[0], 1, dtype=x.dtype)
    functional._activation_engine.standardize_sign_rows(rows.data_ptr(), rows.shape[0], features, float(_dof(features)),
                                                        EPS, out.data_ptr(), mean.data_ptr(), std.data_ptr(),
                                                        torch.get_num_threads())
    return out, (None, mean, std)


def _native_scaled_sign(x: Tensor, std: Tensor, features: int) -> Tensor:
    """sign(x/σ) per sample by ``scaled_sign_rows`` (the binary input rebuilt in backward)."""
    rows = x.detach().reshape(-1, features).contiguous()
    s = std.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    functional._activation_engine.scaled_sign_rows(rows.data_ptr(), s.data_ptr(), rows.shape[0], features,
                                                   out.data_ptr(), torch.get_num_threads())
    return out


def _native_standardized_grad(grad: Tensor, x: Tensor, mean: Tensor, std: Tensor, features: int) -> Tensor:
    """:meth:`StandardizedApproxSTE.grad` by ``standardized_approx_grad_rows`` (a = x/σ rebuilt per row)."""
    rows = x.detach().reshape(-1, features).contiguous()
    g = grad.reshape(rows.shape).contiguous()
    m, s = mean.contiguous(), std.contiguous()
    out = torch.empty(grad.shape, dtype=grad.dtype)
    functional._activation_engine.standardized_approx_grad_rows(g.data_ptr(), rows.data_ptr(), m.data_ptr(),
                                                                s.data_ptr(), rows.shape[0], features,
                                                                float(_dof(features)), out.data_ptr(),
                                                                torch.get_num_threads())
    return out


def _dof(features: int) -> int:
    """unbiased_var's divisor: n − 1, or 1 for a fan-in of one (whose variance is 0)."""
    return features - 1 if features > 1 else 1


def standardized_call(x: Tensor, dims: tuple[int, ...]) -> QuantizerCall:
    """The :class:`StandardizedApproxSTE` quantizer on ``x`` over one sample's trailing ``dims``."""
    if tuple(dims) != tuple(range(x.dim() - len(dims), x.dim())):
        raise ValueError(f"standardized_sign_approx: dims {dims} are not the trailing dims of a {x.dim()}-D input")
    features = 1
    for d in dims:
        features *= x.shape[d]
    return QuantizerCall(x, StandardizedApproxSTE, (features,))


def standardized_sign_approx(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """ReCU's (and BiPer's) training-mode activation quantizer: ``sign(x/σ)`` per sample with the
    ApproxSign derivative taken at ``x/σ`` and the gradient flowing through σ (unbiased variance +
    1e-5, as :func:`standardize_per_sample`). ``dims`` are one sample's trailing feature dims."""
    if tuple(dims) != tuple(range(x.dim() - len(dims), x.dim())):
        raise ValueError(f"standardized_sign_approx: dims {dims} are not the trailing dims of a {x.dim()}-D input")
    return standardized_call(x, dims).apply()


@register
class ReCU(Method):
    """ReCU (Xu et al., ICCV 2021; BiBench ``recu.py``, ``z-hXu/ReCU``).

    * weights (Eq. 11–13): ``W1 = (W − mean_c W) / (std_c(W − mean_c W)/(2√2))`` per output channel,
      ``Q_τ = −mean|W1|·ln(2 − 2τ)`` over the whole tensor (detached), ``sign(clamp(W1, −Q_τ, Q_τ))``;
      identity STE through the sign, so the gradient flows through the clamp and the standardisation;
    * activations: while training, each sample is divided by its std (this leaves the sign unchanged
      and widens the gradient window), then ``sign`` with the ApproxSign derivative ``max(0, 2 − 2|a|)``;
    * a learnable per-output-channel scale ``alpha`` initialised U[0, 1] multiplies the output;
    * τ follows :func:`recu_tau` from ``tau_min`` to ``tau_max`` (BiBench's hard-coded 0.85 → 0.99),
      stored in the ``tau`` buffer by :func:`onebit.schedule_step`.

    Difference: the reference initialises the ``tau`` buffer to 1 (no clamping) until its hook runs;
    onebit initialises it to τ(0) = ``tau_min``, so a layer used without a schedule behaves as at epoch 0.
    """

    name = "recu"
    paper = "Xu et al., ReCU: Reviving the Dead Weights in Binary Neural Networks, ICCV 2021"
    options = {
        "tau_min": Option(0.85, "τ at the first epoch", low=0.5, high=1.0, high_open=True),
        "tau_max": Option(0.99, "τ at the last epoch", low=0.5, high=1.0, high_open=True),
    }

    def validate_config(self) -> None:
        if self.tau_max < self.tau_min:
            raise ValueError(f"recu: tau_max={self.tau_max} must be >= tau_min={self.tau_min}")

    def init_layer(self, layer: nn.Module) -> None:
        w = layer.weight
        layer.alpha = nn.Parameter(torch.rand(w.shape[0], dtype=w.dtype, device=w.device))
        layer.register_buffer("tau", torch.tensor(float(self.tau_min)))

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        if layer.training:
            return standardized_call(x, layer.sample_dims(x))
        return QuantizerCall(x, ApproxSTE)

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        # W1 = (W − mean)/(sqrt(var + ε)/(2√2)) per channel, Q_τ = −mean|W1|·ln(2 − 2τ) detached,
        # sign(clamp(W1, ±Q_τ)) with clamp's gradient: one autograd.Function (the formulas are the
        # oracle in tests/methods/test_fused_quantizers.py).
        return recu_weight(w, layer.tau, EPS)

    def scale_output(self, layer: nn.Module, y: Tensor) -> Tensor:
        return y * layer.channel_view(layer.alpha, y.dim())

    def output_scale_factors(self, layer: nn.Module, spatial_size: tuple[int, ...]) -> tuple[Tensor, ...]:
        return (layer.alpha,)

    def output_scale_tensor(self, layer: nn.Module) -> Tensor | None:
        return layer.alpha.detach().clone()

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        layer.tau.fill_(recu_tau(epoch, epochs, self.tau_min, self.tau_max))
