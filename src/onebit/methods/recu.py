"""ReCU: rectified clamp unit reviving dead weights, with a learnable output scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Method, Option, register
from .functional import clamp_ste, sign_approx_ste

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

    def quantize_input(self, layer: nn.Module, x: Tensor) -> Tensor:
        a0 = standardize_per_sample(x, layer.sample_dims(x)) if layer.training else x
        return sign_approx_ste(a0)

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        dims = tuple(range(1, w.dim()))
        w0 = w - w.mean(dim=dims, keepdim=True)
        w1 = w0 / (torch.sqrt(unbiased_var(w0, dims) + EPS) / (2 * math.sqrt(2)))
        q_tau = (-w1.abs().mean() * torch.log(2 - 2 * layer.tau)).detach()
        return clamp_ste(w1, q_tau)

    def scale_output(self, layer: nn.Module, y: Tensor) -> Tensor:
        return y * layer.channel_view(layer.alpha, y.dim())

    def output_scale_tensor(self, layer: nn.Module) -> Tensor | None:
        return layer.alpha.detach().clone()

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        layer.tau.fill_(recu_tau(epoch, epochs, self.tau_min, self.tau_max))
