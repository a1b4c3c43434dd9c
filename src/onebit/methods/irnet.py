"""IR-Net: Libra parameter binarization and the error decay estimator."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import Method, Option, register
from .functional import EDESTE, QuantizerCall, libra_ede, log_linear, sign_ede

__all__ = ["IRNet", "ede", "irnet_tk", "libra_pb"]


def irnet_tk(epoch: int, epochs: int, t_min: float, t_max: float) -> tuple[float, float]:
    """IR-Net's EDE schedule (Qin et al., CVPR 2020, the EDE section; the reference's ``cpt_tk``):
    ``t = 10^(log10 t_min + (log10 t_max − log10 t_min)·e/E)`` and ``k = max(1/t, 1)``."""
    t = log_linear(t_min, t_max, epoch / epochs)
    return t, max(1.0 / t, 1.0)


def ede(x: Tensor, k: Tensor | float, t: Tensor | float) -> Tensor:
    """``sign(x)`` with the error decay estimator's gradient ``g·k·t·(1 − tanh²(t·x))``, the derivative
    of ``k·tanh(t·x)`` (the paper's EDE; reference ``binaryfunction.BinaryQuantize``), fused
    (:func:`onebit.methods.functional.sign_ede`)."""
    return sign_ede(x, k, t)


def libra_pb(w: Tensor) -> tuple[Tensor, Tensor]:
    """Libra-PB (the paper's Libra parameter binarization with its power-of-2 scale, as ``ir_1w1a.py``
    computes it): the per-output-channel balanced and standardized weight
    ``Ŵ = (W − mean_c W) / std_c(W − mean_c W)`` (unbiased std, as the reference's ``Tensor.std``), and
    the detached scale ``s = 2^round(log2(mean_c |Ŵ|))`` shaped to broadcast.

    Difference: a channel whose weights are all equal has std 0, where the reference divides 0 by 0
    and returns NaN; onebit divides by 1 there (Ŵ = 0, binarized to +1, scale 2^round(log2 0) = 0),
    and a channel of a single weight (undefined unbiased std) is treated the same way.
    """
    rows = w.reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    centred = rows - rows.mean(dim=1, keepdim=True)
    if rows.shape[1] > 1:
        var = centred.var(dim=1, keepdim=True)
        std = torch.sqrt(torch.where(var > 0, var, torch.ones_like(var)))  # finite gradient at var = 0
    else:
        std = torch.ones_like(centred[:, :1])
    balanced = centred / std
    scale = torch.pow(2.0, torch.round(torch.log2(balanced.abs().mean(dim=1)))).detach()
    return balanced.reshape(w.shape), scale.reshape(shape)


@register
class IRNet(Method):
    """IR-Net (Qin, Gong, Liu, Bai, Song, Sebe; CVPR 2020; ``htqin/IR-Net`` ``ir_1w1a.py``,
    ``binaryfunction.py``, ``trainer.py``).

    * weights: Libra-PB, ``s·sign(Ŵ)`` with Ŵ the per-channel standardized weight and ``s`` its
      detached power-of-2 scale (:func:`libra_pb`); the gradient flows through the (non-detached)
      mean and std into W, as in the reference;
    * activations: ``sign(A)``, no scale;
    * backward: the EDE ``g·k·t·(1 − tanh²(t·x))`` (:func:`ede`) for Ŵ and A;
    * schedule: t log-linear from ``t_min`` = 1e-3 to ``t_max`` = 10 over the epochs, ``k = max(1/t, 1)``
      (:func:`irnet_tk`; CIFAR ``trainer.py`` defaults; the ImageNet ResNet-34 script uses t_min = 1e-2),
      stored in the ``ede_t``/``ede_k`` buffers by :func:`onebit.schedule_step`.

    Verified against the reference code: unbiased std, centring before standardizing, the scale taken
    from the standardized weight and applied after the sign, the same (k, t) for weights and
    activations, ``t`` computed with ``e/E`` (so the last epoch E−1 stops short of t_max). Only the
    paper's abstract was reachable (Libra-PB: balanced and standardized weights; EDE: a gradient that
    approaches sign's gradually), so no equation numbers are quoted; the formulas are the code's.

    Differences: the reference starts its layers at t = 0.1, k = 10 until the first schedule call;
    onebit starts at the epoch-0 values (t_min, 1/t_min), so a layer used without a schedule behaves as
    at epoch 0. ``sign(0) = +1``. Zero-variance channels: see :func:`libra_pb`.
    """

    name = "irnet"
    paper = ("Qin et al., Forward and Backward Information Retention for Accurate Binary Neural Networks, "
             "CVPR 2020")
    options: ClassVar[dict[str, Option]] = {
        "t_min": Option(1e-3, "EDE t at the first epoch", low=0.0, low_open=True),
        "t_max": Option(10.0, "EDE t reached at the end of training", low=0.0, low_open=True),
    }

    def validate_config(self) -> None:
        if self.t_max < self.t_min:
            raise ValueError(f"irnet: t_max={self.t_max} must be >= t_min={self.t_min}")

    def init_layer(self, layer: nn.Module) -> None:
        t, k = irnet_tk(0, 1, self.t_min, self.t_max)
        w = layer.weight
        layer.register_buffer("ede_t", torch.tensor(t, dtype=w.dtype, device=w.device))
        layer.register_buffer("ede_k", torch.tensor(k, dtype=w.dtype, device=w.device))

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, EDESTE, (layer.ede_k.detach(), layer.ede_t.detach()))

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        # libra_pb then ede(Ŵ)·s, as one autograd.Function (tests/methods/test_fused_quantizers.py)
        return libra_ede(w, layer.ede_k, layer.ede_t)

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        t, k = irnet_tk(epoch, epochs, self.t_min, self.t_max)
        layer.ede_t.fill_(t)
        layer.ede_k.fill_(k)
