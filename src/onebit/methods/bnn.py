"""BNN: binarized neural networks with sign and the clip straight-through estimator."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Method, register
from .functional import ClipSTE, QuantizerCall, sign_clip_ste


@register
class BNN(Method):
    """BNN (Hubara, Courbariaux et al., NeurIPS 2016; BiBench ``bnn.py``).

    Forward ``sign(W)`` and ``sign(A)``, no scale; backward the clip STE ``g·1{|x| ≤ 1}`` (Eq. 4 of the
    paper) for both weights and activations.
    """

    name = "bnn"
    paper = "Hubara et al., Binarized Neural Networks, NeurIPS 2016"

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ClipSTE, (None,))

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w)
