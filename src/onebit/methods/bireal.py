"""Bi-Real Net: ApproxSign activations and magnitude-aware binary weights."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Method, register
from .functional import ApproxSTE, QuantizerCall, per_channel_mean_abs, sign_clip_ste


@register
class BiReal(Method):
    """Bi-Real Net (Liu et al., ECCV 2018; BiBench ``bireal.py``, ReActNet's ``HardBinaryConv``).

    * activations: ``sign(A)`` with the ApproxSign derivative ``max(0, 2 − 2|A|)`` (Eq. 6);
    * weights: magnitude-aware ``α·sign(W)``, α = mean |W| per output channel, detached, with the clip
      STE (gradient not multiplied by α, as in the reference code; the paper's Eq. 8 derivation keeps
      α in the chain rule).

    The Bi-Real shortcut around every binary conv is architectural (``onebit.models``).
    """

    name = "bireal"
    paper = "Liu et al., Bi-Real Net, ECCV 2018"

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ApproxSTE)

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w, per_channel_mean_abs(w).detach())
