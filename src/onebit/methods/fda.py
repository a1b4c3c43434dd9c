"""FDA: Fourier-series gradient approximation with a learned noise-adaptation term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Method, Option, register
from .functional import per_channel_mean_abs, sign_fourier


def fourier_sign(x: Tensor, terms: int, omega: float) -> Tensor:
    """Truncated Fourier series of the square wave (Xu et al., NeurIPS 2021, Eq. 5):
    ``(4/π)·Σ_{i=0..n} sin((2i+1)ωx)/(2i+1)`` on ``|x| ≤ 1``, constant outside, so its derivative is
    ``(4ω/π)·Σ cos((2i+1)ωx)`` inside and 0 outside, as the reference backward. This is the formula;
    training uses :func:`onebit.methods.functional.sign_fourier`, which applies that derivative with
    the sum in closed form."""
    xc = x.clamp(-1.0, 1.0)
    total = torch.zeros_like(xc)
    for i in range(terms + 1):
        k = 2 * i + 1
        total = total + torch.sin(k * omega * xc) / k
    return total * (4 / math.pi)


def fda_schedule(epoch: int, epochs: int) -> tuple[int, float]:
    """FDA's per-epoch number of extra Fourier terms ``n = 9 + ⌊9e/E⌋`` and noise weight
    ``α = 0.05(1 + cos(π(e+1)/E))``, which falls from ~0.1 to 0 (BiBench ``fda.py``)."""
    return 9 + int(epoch / epochs * 9), 0.05 * (1 + math.cos(math.pi * (epoch + 1) / epochs))


class NoiseAdaptation(nn.Module):
    """FDA's noise-adaptation module ``fc2(ReLU(fc1(x))) + 0.1·sin(x)`` (bottleneck d → d/k → d, no
    biases) applied along the last dimension."""

    def __init__(self, features: int, ratio: int = 64) -> None:
        super().__init__()
        # The reference's fallback to ratio 4 never fires (torch accepts a 0-wide layer, whose output
        # is identically 0); onebit keeps at least one hidden unit so the module can learn.
        hidden = max(1, features // ratio)
        self.fc1 = nn.Linear(features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x))) + 0.1 * torch.sin(x)


@register
class FDA(Method):
    """FDA (Xu et al., NeurIPS 2021) in BiBench's operator form (``fda.py``).

    * forward ``sign`` of weights and activations; backward the derivative of :func:`fourier_sign`
      with ``n`` terms and frequency ``omega`` (BiBench: ω = 0.1);
    * while training, ``α_t·NA(x)`` is added to both binary tensors (``NA`` a :class:`NoiseAdaptation`
      over each output channel's flattened kernel for weights, over the channel dimension at each
      position for activations); α_t and n follow :func:`fda_schedule`;
    * the weight is scaled by the detached per-output-channel mean |W| (the gradient is scaled too).

    Differences from BiBench: the activation NA module is built with the layer (BiBench builds it at
    the first forward, after the optimizer was made, so it is never trained); and the NA terms are
    added only in training mode, so the eval-mode layer is the deployed binary operator (at the end of
    the schedule α = 0 and the two agree); and :class:`NoiseAdaptation` has ``max(1, d // 64)`` hidden
    units where BiBench's ``NoiseAdaption``/``NoiseAdaption_a`` build ``d // 64``, which is 0 for
    d < 64 (torch accepts a 0-wide layer, so its fallback to k = 4 never fires): there the reference's
    NA is exactly ``0.1·sin(x)``, onebit's learns.
    """

    name = "fda"
    paper = "Xu et al., Learning Frequency Domain Approximation for Binary Neural Networks, NeurIPS 2021"
    options = {
        "omega": Option(0.1, "frequency ω of the Fourier series", low=0.0, low_open=True),
        "noise_adaptation": Option(True, "learn the NA residual modules", choices=(True, False)),
    }

    def init_layer(self, layer: nn.Module) -> None:
        layer.register_buffer("fda_terms", torch.tensor(9))
        layer.register_buffer("fda_alpha", torch.tensor(0.1))
        if self.noise_adaptation:
            w = layer.weight
            layer.weight_noise = NoiseAdaptation(w[0].numel()).to(device=w.device, dtype=w.dtype)
            layer.input_noise = NoiseAdaptation(layer.in_features_count).to(device=w.device, dtype=w.dtype)

    def _binary(self, layer: nn.Module, x: Tensor) -> Tensor:
        return sign_fourier(x, int(layer.fda_terms), self.omega)

    def quantize_input(self, layer: nn.Module, x: Tensor) -> Tensor:
        out = self._binary(layer, x)
        if self.noise_adaptation and layer.training:
            channels_last = x if layer.features_last else x.movedim(1, -1)
            noise = layer.input_noise(channels_last)
            out = out + layer.fda_alpha * (noise if layer.features_last else noise.movedim(-1, 1))
        return out

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        out = self._binary(layer, w)
        if self.noise_adaptation and layer.training:
            out = out + layer.fda_alpha * layer.weight_noise(w.reshape(w.shape[0], -1)).reshape(w.shape)
        return out * per_channel_mean_abs(w).detach()

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        terms, alpha = fda_schedule(epoch, epochs)
        layer.fda_terms.fill_(terms)
        layer.fda_alpha.fill_(alpha)
