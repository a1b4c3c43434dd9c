"""ReActNet: RSign's learnable thresholds on Bi-Real's binary operator."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Method, register
from .functional import QuantizerCall, ShiftedApproxSTE, per_channel_mean_abs, sign_clip_ste


@register
class ReActNet(Method):
    """ReActNet's binary operator (Liu et al., ECCV 2020; BiBench ``react.py``, ReActNet
    ``reactnet.py``).

    * activations: RSign, ``sign(A + b_c)`` with a learnable per-input-channel threshold ``b``
      (parameter ``rsign_bias``, init 0; Eq. 2) and the ApproxSign derivative ``max(0, 2 − 2|A + b|)``;
    * weights: ``α·sign(W)``, α = mean |W| per output channel (detached), clip-STE.

    RPReLU (Eq. 3) is an architectural block (``onebit.nn.RPReLU``, used by ``onebit.models``'
    ReActNet); ``binarize()`` keeps a model's own activations.

    Difference from BiBench: its ``ReActLinear`` forward takes ``sign(input)`` without the threshold
    while the surrogate uses ``input + b`` (so ``b`` never affects the output); onebit applies the
    threshold in the Linear forward too.
    """

    name = "reactnet"
    paper = "Liu et al., ReActNet, ECCV 2020"

    def init_layer(self, layer: nn.Module) -> None:
        w = layer.weight
        layer.rsign_bias = nn.Parameter(torch.zeros(layer.in_features_count, dtype=w.dtype, device=w.device))

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ShiftedApproxSTE, (layer.channel_view(layer.rsign_bias, x.dim()),))

    def input_threshold(self, layer: nn.Module) -> Tensor | None:
        return layer.rsign_bias.detach().clone()

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w, per_channel_mean_abs(w).detach())
