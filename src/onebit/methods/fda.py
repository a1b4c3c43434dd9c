"""FDA: Fourier-series gradient approximation with a learned noise-adaptation term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from . import functional
from .base import Method, Option, register
from .functional import data_address, per_channel_mean_abs, sign_fourier


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
        return self.learned(x) + 0.1 * torch.sin(x)

    def learned(self, x: Tensor) -> Tensor:
        """The learned part ``fc2(ReLU(fc1(x)))`` alone (:func:`noisy_fourier_sign` adds the sine)."""
        return self.fc2(F.relu(self.fc1(x)))


#: Whether the engine has the fused kernels (an engine built before them: the torch formula).
_FUSED_KERNELS = hasattr(functional._engine, "fda_value")
_MEAN_ABS_KERNEL = hasattr(functional._engine, "fda_value_mean_abs")


class _NoisyFourierSign(torch.autograd.Function):
    """``(sign(x) + α·(h + 0.1·sin x))·s`` and its gradients in one native pass each
    (``fda_value``/``fda_backward``, csrc/train_quantizers.h); see :func:`noisy_fourier_sign`."""

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, alpha: float, scale: Tensor | str | None, terms: int, omega: float
                ) -> Tensor:
        xc, hc = x.detach().contiguous(), h.detach().contiguous()
        out = torch.empty_like(xc)
        if isinstance(scale, str):  # "mean_abs": each row's mean |x|, taken in the value's pass
            rows = x.shape[0]
            sc = torch.empty(rows, dtype=x.dtype)
            functional._engine.fda_value_mean_abs(xc.data_ptr(), hc.data_ptr(), rows, xc.numel() // rows, alpha,
                                                  out.data_ptr(), sc.data_ptr(), functional.kernel_threads(xc.numel()))
        else:
            rows = 1 if scale is None else scale.numel()
            sc = None if scale is None else scale.detach().reshape(rows).contiguous()
            functional._engine.fda_value(xc.data_ptr(), hc.data_ptr(), rows, xc.numel() // max(rows, 1),
                                         data_address(sc), alpha, out.data_ptr(),
                                         functional.kernel_threads(xc.numel()))
        if scale is None and x.is_contiguous():
            functional.announce_kept(x)  # an activation kept as it is: its producer may share it
        ctx.save_for_backward(xc, sc)
        ctx.alpha, ctx.params = alpha, (omega, 2.0 * (terms + 1), 4 * omega / math.pi)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        functional._once_differentiable()
        x, sc = ctx.saved_tensors
        rows = 1 if sc is None else sc.numel()
        g = grad.contiguous()
        grad_x = torch.empty_like(x)
        grad_h = torch.empty_like(x) if ctx.needs_input_grad[1] else None
        functional._engine.fda_backward(g.data_ptr(), x.data_ptr(), rows, x.numel() // max(rows, 1),
                                        data_address(sc), ctx.alpha, *ctx.params, grad_x.data_ptr(),
                                        data_address(grad_h),
                                        functional.kernel_threads(x.numel()))
        return grad_x if ctx.needs_input_grad[0] else None, grad_h, None, None, None, None


def _fused_fourier(x: Tensor, h: Tensor, terms: int, omega: float, *scale: Tensor) -> bool:
    """Whether :class:`_NoisyFourierSign` takes these tensors: non-empty (an empty tensor has no data
    address, which the kernels refuse) float32 CPU, run eagerly, and the Fourier kernel's range (ω < π,
    2(n+1)ω ≤ 8192), as :class:`~onebit.methods.functional.FourierSTE`."""
    return (_FUSED_KERNELS and x.numel() > 0 and omega < math.pi and omega * 2 * (terms + 1) <= 8192
            and functional._native(x, h, *scale))


def noisy_fourier_sign(x: Tensor, h: Tensor, alpha: Tensor, terms: int, omega: float,
                       scale: Tensor | None = None, scale_by_mean_abs: bool = False) -> Tensor:
    """FDA's training-mode binary tensor ``(sign(x) + α·(h + 0.1·sin x))·s``: :func:`sign_fourier` plus
    α times the noise adaptation ``NA(x) = h + 0.1·sin x`` (``h = fc2(ReLU(fc1(x)))`` computed by the
    caller, with ``x``'s shape), times the detached per-output-channel scale ``s`` for a weight (``scale``
    shaped to broadcast against ``x``, one entry per row of ``x``; None for an activation). ``α`` (a
    buffer) gets no gradient; ``x`` gets the Fourier surrogate's ``g·s·(4ω/π)·Σ cos((2i+1)ωx)`` (on
    ``|x| ≤ 1``) plus ``α·0.1·cos(x)·g·s``, and ``h`` gets ``α·g·s`` (autograd carries it on through
    ``fc1``/``fc2`` to their weights and to ``x``). ``scale_by_mean_abs`` (a weight, ``scale`` None): ``s`` is
    :func:`per_channel_mean_abs` of ``x``, detached — natively taken in the value's own pass (summed in
    double, so ``s`` may differ from torch's float mean in the last bit).

    On float32 CPU tensors the value and the gradients are one native pass each instead of ~10 torch
    ops over the tensor (``fda_value``/``fda_backward``, csrc/train_quantizers.h); elsewhere, or with
    ``functional.NATIVE_KERNELS`` off, the torch formula (the tests' oracle). The two agree to the bit
    where their sines agree: the value is computed in torch's order of operations without FMA
    contraction, its ``sin`` by the kernels' approximation (≤ 3.5 ulp, so the value differs by at
    most a few ulp of ``0.1·α·s``); the gradients agree to ~1e-7 relative (the kernels' cos, the terms
    added before autograd adds the ``fc1`` path)."""
    if scale_by_mean_abs:
        if _MEAN_ABS_KERNEL and _fused_fourier(x, h, terms, omega) and x.dim() >= 2 and x[0].numel() > 0:
            return _NoisyFourierSign.apply(x, h, float(alpha), "mean_abs", int(terms), float(omega))
        scale = per_channel_mean_abs(x)
    if scale is not None:
        scale = scale.detach()
    if _fused_fourier(x, h, terms, omega, *(() if scale is None else (scale,))):
        return _NoisyFourierSign.apply(x, h, float(alpha), scale, int(terms), float(omega))
    out = sign_fourier(x, terms, omega) + alpha * (h + 0.1 * torch.sin(x))
    return out if scale is None else out * scale


#: Whether the engine fuses the noise adaptation in too (csrc/train_fda.h).
_NA_KERNELS = hasattr(functional._engine, "fda_na_forward")


class _FusedNoiseAdaptationSign(torch.autograd.Function):
    """:func:`noisy_fourier_sign` with ``h = fc2(ReLU(fc1(x)))`` computed inside, per row of a rows x d
    ``x``, in one native pass each way (``fda_na_forward``/``fda_na_backward``, csrc/train_fda.h): the
    gradients to ``x``, ``fc1.weight`` and ``fc2.weight`` (``α`` gets none); see :func:`fused_noisy_sign`."""

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, w2: Tensor, alpha: float, weight: bool, terms: int, omega: float
                ) -> Tensor:
        rows, d = x.shape
        out, pre = torch.empty_like(x), x.new_empty(rows, w1.shape[0])
        scale = x.new_empty(rows) if weight else None  # a weight's per-row mean |x|, taken in the pass
        functional._engine.fda_na_forward(x.data_ptr(), rows, d, w1.data_ptr(), w2.data_ptr(), w1.shape[0], alpha,
                                          out.data_ptr(), pre.data_ptr(), data_address(scale),
                                          functional.kernel_threads(x.numel()))
        ctx.save_for_backward(x, w1, w2, pre, scale)
        ctx.alpha, ctx.params = alpha, (omega, 2.0 * (terms + 1), 4 * omega / math.pi)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        functional._once_differentiable()
        x, w1, w2, pre, scale = ctx.saved_tensors
        grads = [torch.empty_like(t) if wanted else None for t, wanted in zip((x, w1, w2), ctx.needs_input_grad)]
        functional._engine.fda_na_backward(grad.contiguous().data_ptr(), x.data_ptr(), *x.shape, w1.data_ptr(),
                                           w2.data_ptr(), w1.shape[0], pre.data_ptr(), data_address(scale), ctx.alpha,
                                           *ctx.params, *map(data_address, grads), functional.kernel_threads(x.numel()))
        return (*grads, None, None, None, None)


def _hooked(*modules: nn.Module) -> bool:
    """Whether calling these modules would run a hook (nn.Module.__call__'s test): the fused kernel calls none."""
    m = torch_module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks) or any(
        mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks or mod._backward_pre_hooks
        for mod in modules)


def _fused_na(na: nn.Module, x: Tensor, terms: int, omega: float) -> bool:
    """Whether :class:`_FusedNoiseAdaptationSign` takes ``na`` and ``x`` (features last): a plain
    :class:`NoiseAdaptation` of bias-free ``nn.Linear`` layers without hooks, a contiguous non-empty ``x``
    over its features, and what :func:`_fused_fourier` asks (float32 CPU tensors, eager); not under autocast
    (which would run the layers in lower precision)."""
    if not (_NA_KERNELS and type(na) is NoiseAdaptation):
        return False
    fc1, fc2 = na.fc1, na.fc2  # (each nn.Module attribute is a __getattr__ call: read once)
    if not (type(fc1) is nn.Linear and type(fc2) is nn.Linear and fc1.bias is None and fc2.bias is None):
        return False
    w1, w2 = fc1.weight, fc2.weight
    return (x.numel() > 0 and x.is_contiguous() and x.shape[-1] == w1.shape[1] == w2.shape[0]
            and not _hooked(fc1, fc2) and not torch.is_autocast_enabled(x.device.type)
            and _fused_fourier(x, w1, terms, omega, w2))


def fused_noisy_sign(na: NoiseAdaptation, x: Tensor, alpha: Tensor, terms: int, omega: float, weight: bool) -> Tensor:
    """``noisy_fourier_sign(x, na.learned(x), ...)`` over ``x``'s last dimension in one native pass each way;
    ``weight``: ``x`` is a weight (rows = output channels; ``scale_by_mean_abs``), else an activation
    (scale 1). Call it where :func:`_fused_na` holds. ``fc1``, ``fc2`` and the sign's terms are applied
    per row with the row, W1 and W2 in cache instead of torch's thin GEMMs (N or K = d/64) and a full
    ``grad_h`` tensor; in ``h`` and ``W1ᵀ·gpre`` the terms of a unit that ReLU switched off are skipped
    (exact: a 0·v term adds nothing; kept where W1/W2 hold inf or NaN, so NaN and inf come out where
    torch's do, as in the weight gradients, which take every term). Its sums run in another order than
    torch's GEMMs (float, one partial per vector lane; the weight gradients summed over fixed blocks of
    rows, so 1 and N threads give the same bits), so values and gradients agree with the torch path to
    ~1e-6 relative; ReLU's decision can differ from torch's only where ``fc1(x)`` is within rounding of 0.
    A tensor below :data:`~onebit.methods.functional.SERIAL_BELOW` elements (a batch-32 MLP's input, most of
    ResNet-20's weights) runs on the calling thread (:func:`~onebit.methods.functional.kernel_threads`).
    Rows whose every ``|x| < 1.5`` (a weight's, a clipped activation's) take sin and cos without the range
    reduction's rounding step (the same sines and cosines as the general path), and where every
    ``|2(n+1)ω·clamp(x)| < 1.5`` and ``2(n+1) >= 8`` (a weight's) the Fourier ratio
    ``sin(2(n+1)t)/(2 sin t)`` as ``(n+1)·sinc-polynomial·(t/sin t)-series`` without a division (within
    2 ulp of the quotient, exactly ``n + 1`` at ``t = 0``): the gradient's element-wise part about twice as fast."""
    if not weight:
        functional.announce_kept(x)  # an activation kept as it is: its producer may share it
    # A 2-D x (a Linear layer's weight and batch) is its own rows: no view, and no ViewBackward node each way.
    rows = x if x.dim() == 2 else x.reshape(x.shape[0], -1) if weight else x.reshape(-1, x.shape[-1])
    out = _FusedNoiseAdaptationSign.apply(rows, na.fc1.weight, na.fc2.weight, float(alpha), weight, int(terms),
                                          float(omega))
    return out if rows is x else out.reshape(x.shape)


@register
class FDA(Method):
    """FDA (Xu et al., NeurIPS 2021) in BiBench's operator form (``fda.py``).

    * forward ``sign`` of weights and activations; backward the derivative of :func:`fourier_sign`
      with ``n`` terms and frequency ``omega`` (BiBench: ω = 0.1);
    * while training, ``α_t·NA(x)`` is added to both binary tensors (``NA`` a :class:`NoiseAdaptation`
      over each output channel's flattened kernel for weights, over the channel dimension at each
      position for activations); α_t and n follow :func:`fda_schedule`;
    * the weight is scaled by the detached per-output-channel mean |W| (the gradient is scaled too).

    While training on float32 CPU tensors, a weight's NA and binary value (and a linear layer's input's)
    run as one native function each way (:func:`fused_noisy_sign`; the torch formulas stay the fallback
    and the tests' oracle; a convolution's input takes :func:`noisy_fourier_sign`).

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
        if not (self.noise_adaptation and layer.training):
            return self._binary(layer, x)
        terms = int(layer.fda_terms)
        if layer.features_last and _fused_na(layer.input_noise, x, terms, self.omega):
            return fused_noisy_sign(layer.input_noise, x, layer.fda_alpha, terms, self.omega, False)
        channels_last = x if layer.features_last else x.movedim(1, -1)
        h = layer.input_noise.learned(channels_last)
        h = h if layer.features_last else h.movedim(-1, 1)
        return noisy_fourier_sign(x, h, layer.fda_alpha, terms, self.omega)

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        if not (self.noise_adaptation and layer.training):
            return self._binary(layer, w) * per_channel_mean_abs(w).detach()
        terms = int(layer.fda_terms)
        if w.dim() >= 2 and _fused_na(layer.weight_noise, w.flatten(1), terms, self.omega):
            return fused_noisy_sign(layer.weight_noise, w, layer.fda_alpha, terms, self.omega, True)
        h = layer.weight_noise.learned(w.reshape(w.shape[0], -1)).reshape(w.shape)
        return noisy_fourier_sign(w, h, layer.fda_alpha, terms, self.omega, scale_by_mean_abs=True)

    def schedule(self, layer: nn.Module, epoch: int, epochs: int) -> None:
        terms, alpha = fda_schedule(epoch, epochs)
        layer.fda_terms.fill_(terms)
        layer.fda_alpha.fill_(alpha)
