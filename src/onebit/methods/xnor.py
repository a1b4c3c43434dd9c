"""XNOR-Net: binary weights and activations with analytic scales."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Method, register
from .functional import ClipSTE, QuantizerCall, per_channel_mean_abs, sign_clip_ste


@register
class XNOR(Method):
    """XNOR-Net (Rastegari et al., ECCV 2016), in BiBench's operator form (``xnor.py``).

    * weights: ``α·sign(W)``, α = mean |W| per output channel (Eq. 6), detached; clip-STE backward, not
      multiplied by α (``α·sign(W)).detach() − clip(W).detach() + clip(W)``);
    * activations: ``K·sign(A)``, K = mean |A| over one sample's features (C, H, W for convolutions;
      the feature dim of each token for Linear), detached; clip-STE backward. The paper's K is a spatial
      map (the channel mean convolved with a box filter, Sec. 3.2); BiBench, and onebit, use one scalar
      per sample. Padded positions hold ``pad_value·K``.

    Deliberate difference: BiBench's ``XNORLinear`` also centres each weight row and lets the gradient
    be multiplied by the scales; onebit uses the convolution's rule for every layer kind.
    """

    name = "xnor"
    paper = "Rastegari et al., XNOR-Net, ECCV 2016"

    def _input_scale(self, layer: nn.Module, x: Tensor) -> Tensor:
        with torch.no_grad():  # detached: no autograd record of |x| (it would keep x for nothing)
            return x.abs().mean(dim=layer.sample_dims(x), keepdim=True)

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ClipSTE, (self._input_scale(layer, x),))

    def input_pad_scale(self, layer: nn.Module, x: Tensor) -> Tensor | None:
        return self._input_scale(layer, x)

    def input_scale_kind(self, layer: nn.Module) -> str | None:
        return "mean_abs"

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w, per_channel_mean_abs(w).detach())
