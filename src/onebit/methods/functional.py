"""Building blocks shared by the binarization methods: the sign, the straight-through idiom and the
surrogate functions whose derivatives replace sign's zero gradient.

Every binarizer in onebit is written as ``ste(forward, surrogate)``: the forward value is ``forward``
(usually ``sign(x)``) and the gradient is autograd's gradient of ``surrogate``. This is the idiom of the
reference implementations (``fwd.detach() - sur.detach() + sur``), so gradients match theirs exactly,
and a surrogate is just a differentiable function that ``torch.autograd.gradcheck`` can check.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "sign",
    "ste",
    "clip",
    "approx_sign",
    "sign_swish",
    "per_channel_mean_abs",
    "sample_dims",
]


def sign(x: Tensor) -> Tensor:
    """+1 where ``x >= 0``, −1 elsewhere.

    Deliberate difference from the reference repositories, which call ``torch.sign`` and so give 0 at
    exactly 0: a 1-bit kernel cannot represent 0, so onebit maps 0 to +1, as Larq and Larq Compute
    Engine do. For real-valued latent weights and batch-normalised activations an exact 0 is rare.
    """
    # sign(sign(x) + 0.5) maps {-1, 0, +1} to {-1, +1, +1} with two vectorised arithmetic kernels; a
    # comparison + where is several times slower on CPU (bool tensors), and this runs on every weight
    # and activation of every step. (-0.0 maps to +1 too, as the kernels' `x < 0` test does.)
    return torch.sign(torch.sign(x) + 0.5)


def ste(forward: Tensor, surrogate: Tensor) -> Tensor:
    """Value of ``forward``, gradient of ``surrogate`` (the straight-through estimator idiom)."""
    return forward.detach() + (surrogate - surrogate.detach())


def clip(x: Tensor) -> Tensor:
    """hardtanh: its gradient 1{|x| ≤ 1} is the clip-STE of BNN (Hubara et al., 2016, Eq. 4)."""
    return x.clamp(-1.0, 1.0)


def approx_sign(x: Tensor) -> Tensor:
    """Bi-Real Net's ApproxSign (Liu et al., ECCV 2018, Eq. 6): a piecewise quadratic whose derivative
    is ``2 − 2|x|`` on ``|x| < 1`` and 0 elsewhere."""
    xc = x.clamp(-1.0, 1.0)
    return 2 * xc - xc * xc.abs()


def sign_swish(x: Tensor, beta: float | Tensor) -> Tensor:
    """SignSwish of BNN+ (Darabi et al., 2018, Eq. 3): ``2σ(βx)[1 + βx(1 − σ(βx))] − 1``.

    Its derivative is ``β[2 − βx·tanh(βx/2)] / [1 + cosh(βx)]``; it tends to sign(x) as β grows.
    """
    bx = beta * x
    s = torch.sigmoid(bx)
    return 2 * s * (1 + bx * (1 - s)) - 1


def sample_dims(x: Tensor, channels_last: bool) -> tuple[int, ...]:
    """Dimensions that make up one sample's features: (C, *spatial) for convolutions, the last
    (feature) dimension for linear layers, whose leading dimensions are all batch-like (tokens)."""
    if channels_last:
        return (x.dim() - 1,)
    return tuple(range(1, x.dim()))


def per_channel_mean_abs(w: Tensor) -> Tensor:
    """XNOR-Net's weight scale α (Rastegari et al., ECCV 2016, Eq. 6): mean |W| per output channel,
    shaped to broadcast against ``w``."""
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


def log_linear(start: float, end: float, fraction: float) -> float:
    """Geometric interpolation from ``start`` to ``end`` at ``fraction`` ∈ [0, 1]."""
    return 10 ** (math.log10(start) + (math.log10(end) - math.log10(start)) * fraction)
