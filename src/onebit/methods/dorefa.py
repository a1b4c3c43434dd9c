"""DoReFa-Net at one bit, as BiBench defines it."""

from __future__ import annotations

from torch import Tensor, nn

from .base import Method, register
from .functional import ClipSTE, QuantizerCall, per_channel_mean_abs, sign_clip_ste


@register
class DoReFa(Method):
    """1-bit DoReFa-Net (Zhou et al., 2016) in BiBench's form (``dorefa.py``): ``α·sign(W)`` with α the
    per-output-channel mean |W| (detached), ``sign(A)``, clip-STE for both.

    Difference from the original paper: DoReFa's 1-bit weight rule uses one layer-wise scale E(|W|)
    (Eq. 7) and its k-bit activations live in [0, 1]; BiBench — and onebit, to reproduce BiBench —
    use a per-channel scale and ±1 activations, i.e. a channel-scaled BNN.

    Differences from BiBench's ``DoReFaLinear`` (its Linear class differs from its own
    ``DoReFaConv2d``/``DoReFaConv1d``, which onebit follows for every layer kind): (1) it multiplies the
    detached mean |W| in after its quantizer, so its weight gradient is ``g·mean|W|·1{|W| < 1}``;
    onebit's is ``g·1{|W| ≤ 1}``, not multiplied by mean |W|. (2) Its ``BinaryQuantizer`` blocks the
    gradient where ``|x| ≥ 1`` (weights and activations); onebit's clip-STE passes it at exactly
    ``|x| = 1``, as ``torch.clamp`` in the conv classes does.
    """

    name = "dorefa"
    paper = "Zhou et al., DoReFa-Net, arXiv:1606.06160 (BiBench's 1-bit form)"

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        return QuantizerCall(x, ClipSTE, (None,))

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return sign_clip_ste(w, per_channel_mean_abs(w).detach())
