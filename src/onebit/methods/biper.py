"""BiPer: binary neural networks with periodic (square-wave) weights and a sine surrogate."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from . import functional
from .base import FinalStage, InferenceForm, Method, NotDeployableError, Option, layer_label, register
from .functional import ApproxSTE, QuantizerCall, sign, sine_wave
from .recu import standardized_call

__all__ = ["TAU_STAGE1", "TAU_STAGE2", "BiPer", "quantization_error", "to_stage2"]

#: τ of the released CIFAR-10 recipes (``edmav4/BiPer`` ``cifar10/run_stg1.sh`` / ``run_stg2.sh``).
TAU_STAGE1 = 0.037
TAU_STAGE2 = 0.0468


@register
class BiPer(Method):
    """BiPer (Vargas, Sanchez, Arguello, Lepesteur, Fuentes, CVPR 2024; ``edmav4/BiPer``
    ``cifar10/modules/binarized_modules.py``, ``BinarizeConv2d``).

    * weights: the square wave ``sign(sin(ωW))`` (the paper's binary periodic function) with the sine
      of the same period as surrogate, so ``∂L/∂W = g·ω·cos(ωW)`` (the reference's ``BinaryQuantize``
      is an identity STE applied to ``sin(ωW)``). **Stage 1** (``stage=1``, the default, as the
      reference's ``--stage2`` off) uses the real ``sin(ωW)`` weights with binary activations;
      **stage 2** binarizes them. :func:`to_stage2` switches a trained stage-1 model, as
      ``main_stage2.py`` does by loading the stage-1 checkpoint;
    * activations: while training each sample is divided by ``sqrt(var + 1e-5)`` (unbiased variance
      over the sample's features; no effect on the sign), then ``sign`` with the ApproxSign derivative
      ``max(0, 2 − 2|a|)`` — the ReCU activation path the reference keeps;
    * a learnable per-output-channel scale ``alpha`` initialised U[0, 1] (``torch.rand``) multiplies
      the output;
    * loss term (``loss``): ``τ·mean(½ − ½cos(2ωW)) = τ·mean(sin²(ωW))`` per layer, the reference's
      ``loss_reg``; :func:`onebit.extra_loss` sums it over the layers. τ is constant in the CIFAR
      recipes: 0.037 in stage 1 (the default here), 0.0468 in stage 2 (pass ``tau=TAU_STAGE2`` to
      :func:`to_stage2`). ω is fixed (20 in every released script; the argparse default is 30).
      On float32 CPU weights a training-mode forward computes the wave and this term in one native pass, and
      one backward pass gives both gradients (:class:`_WaveAndLoss`; the sine is the kernels', within
      3.5 ulp of torch's).

    Verified against the reference code (forward of both stages, gradients, α init, the loss form,
    the τ/ω values of the run scripts) and the paper's abstract (square-wave forward, sine surrogate of
    the same period, QE controlled by the frequency, two stages). The paper body was not reachable, so
    no equation numbers are quoted; QE versus ω is measured by ``benchmarks/quantization.py``.

    Differences: ``sign(0) = +1`` (onebit's sign; the reference's ``torch.sign`` gives 0, which only
    happens at ``W = kπ/ω`` exactly). The reference adds the conv bias *before* multiplying by α;
    onebit's layers add the bias after the output scale (the reference ResNets have no conv bias, so
    the released models agree). The stage is a method option (the reference's ``args.stage2``), not
    part of the ``state_dict``: build the model with ``stage=2``, or call :func:`to_stage2`, before
    loading stage-2 weights.
    """

    name = "biper"
    paper = "Vargas et al., BiPer: Binary Neural Networks using a Periodic Function, CVPR 2024"
    options: ClassVar[dict[str, Option]] = {
        "omega": Option(20.0, "frequency ω of the square wave sign(sin(ωW))", low=0.0, low_open=True),
        "tau": Option(TAU_STAGE1, "weight of the τ·mean(sin²(ωW)) loss term (stage 2 recipe: 0.0468)",
                      low=0.0),
        "stage": Option(1, "1: real sin(ωW) weights; 2: binary sign(sin(ωW)) weights", choices=(1, 2)),
    }

    def init_layer(self, layer: nn.Module) -> None:
        w = layer.weight
        layer.alpha = nn.Parameter(torch.rand(w.shape[0], dtype=w.dtype, device=w.device))

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        if layer.training:
            return standardized_call(x, layer.sample_dims(x))
        return QuantizerCall(x, ApproxSTE)

    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        if layer.training and _fused(w):  # (eval: torch's sine, the values of the formula)
            wave, loss = _WaveAndLoss.apply(w, float(self.omega), self.stage == 2, float(self.tau))
            if loss.requires_grad:
                _LOSS_OF_FORWARD[layer] = (loss, w, w._version, float(self.omega), float(self.tau))
            return wave
        return sine_wave(w, self.omega, binary=self.stage == 2)

    def scale_output(self, layer: nn.Module, y: Tensor) -> Tensor:
        return y * layer.channel_view(layer.alpha, y.dim())

    def output_scale_factors(self, layer: nn.Module, spatial_size: tuple[int, ...]) -> tuple[Tensor, ...]:
        return (layer.alpha,)

    def output_scale_tensor(self, layer: nn.Module) -> Tensor | None:
        return layer.alpha.detach().clone()

    @classmethod
    def final_stage(cls, options: dict[str, Any]) -> FinalStage | None:
        """Stage 2 for a stage-1 run (the default): binary weights warm-started from stage 1, τ =
        :data:`TAU_STAGE2`, a third of the epochs at a tenth of the learning rate — the reference's
        ImageNet recipe (200 + 100 epochs, lr 0.1 then 0.01; CIFAR-10: 600 + 300, lr 0.021 then 0.0037,
        ``run_stg1.sh``/``run_stg2.sh``)."""
        if options.get("stage", 1) != 1:
            return None
        return FinalStage({"stage": 2, "tau": TAU_STAGE2}, epoch_share=1 / 3, lr_factor=0.1)

    def finalize(self, layer: nn.Module) -> None:
        """Stage 2 (binary sign(sin(ωW)) weights), as :func:`to_stage2`; τ is kept."""
        layer.method = self.with_options(stage=2)

    def loss(self, layer: nn.Module) -> Tensor | None:
        if self.tau == 0:
            return None
        kept = _LOSS_OF_FORWARD.pop(layer, None)
        if kept is not None and torch.is_grad_enabled():
            loss, w, version, omega, tau = kept
            if w is layer.weight and w._version == version and (omega, tau) == (float(self.omega), float(self.tau)):
                return loss  # computed by this step's forward with the wave (:class:`_WaveAndLoss`)
        return _SineSquaredMean.apply(layer.weight, float(self.omega), float(self.tau))

    def inference(self, layer: nn.Module) -> InferenceForm:
        if self.stage == 1:
            raise NotDeployableError(
                f"{layer_label(layer)}: biper stage 1 computes with the real weights sin(ωW), which a 1-bit "
                "kernel cannot run; convert the model with onebit.methods.biper.to_stage2(model) and "
                "fine-tune it (stage 2) before export"
            )
        return super().inference(layer)


#: Each BiPer layer's loss term as its last training forward computed it with the wave (weakly keyed:
#: no reference to the layer, nothing in its ``__dict__`` to copy or pickle); :meth:`BiPer.loss`
#: takes it when the weight has not changed since, else computes the term on its own.
_LOSS_OF_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: Whether the engine has the fused kernels (an engine built before them: the torch formulas).
_FUSED_KERNELS = hasattr(functional._engine, "biper_wave")


def _fused(w: Tensor) -> bool:
    return _FUSED_KERNELS and functional._native(w)


class _WaveAndLoss(torch.autograd.Function):
    """BiPer's weight ``sin(ωW)`` (stage 1) or ``sign(sin(ωW))`` (stage 2, identity STE through the
    sign) and its loss term ``τ·mean(sin²(ωW))`` from one native pass over W (``biper_wave``,
    csrc/train_quantizers.h), and both gradients, ``(g·cos(ωW))·ω + (g_loss·τ·ω/N)·2·sin(ωW)·cos(ωW)``, from
    one more (``biper_wave_backward``): torch takes ~9 passes for the two forwards and ~3 for the backwards.

    Against the torch formulas (:func:`~onebit.methods.functional.sine_wave`, :class:`_SineSquaredMean`,
    the tests' oracle): the sine is the kernels' (≤ 3.5 ulp from torch's), so the stage-1 weights differ
    from torch's by a few ulp; the loss is ``τ·Σ sin²/N`` summed in double instead of
    ``τ·mean(½ − ½cos 2ωW)`` in float (≤ 1e-6 relative); its gradient uses ``2·sin·cos`` for ``sin 2ωW``
    (≤ 1e-6 relative). W is kept on ``ctx`` (not ``save_for_backward``), with its version checked by hand:
    the wave's and the loss's gradients may come in two backward calls (a loss term backpropagated on its
    own after the task loss), as with two separate functions."""

    @staticmethod
    def forward(ctx, w: Tensor, omega: float, binary: bool, tau: float) -> tuple[Tensor, Tensor]:
        wc = w.detach().contiguous()
        out = torch.empty_like(wc)
        total = functional._engine.biper_wave(wc.data_ptr(), wc.numel(), omega, binary, out.data_ptr(),
                                              functional.kernel_threads(wc.numel()))
        ctx.set_materialize_grads(False)
        ctx.w, ctx.version, ctx.omega = wc, w._version, omega
        ctx.factor = tau * omega / max(wc.numel(), 1)
        return out.reshape(w.shape), torch.tensor(tau * total / max(wc.numel(), 1), dtype=w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_loss: Tensor | None) -> tuple[Tensor | None, None, None, None]:
        functional._once_differentiable()
        if grad is None and grad_loss is None:
            return None, None, None, None
        w = ctx.w
        if w._version != ctx.version:
            raise RuntimeError("BiPer: the weight was modified in place between the forward pass and backward "
                               "(e.g. an optimizer step); run the forward pass again before backward")
        g = None if grad is None else grad.contiguous()
        out = torch.empty_like(w)
        factor = 0.0 if grad_loss is None else float(grad_loss) * ctx.factor
        functional._engine.biper_wave_backward(functional.data_address(g), w.data_ptr(), w.numel(), ctx.omega,
                                               factor, out.data_ptr(), functional.kernel_threads(w.numel()))
        return out, None, None, None


class _SineSquaredMean(torch.autograd.Function):
    """BiPer's loss term ``τ·mean(0.5 − 0.5·cos(2ωW))`` (= τ·mean sin²(ωW)), the value in the formula's
    order of operations, the gradient ``g·τ·ω·sin(2ωW)/N`` in two passes over the saved angle 2ωW
    (autograd's chain through mean, the subtraction, the product and cos takes about six; a native
    one-pass sin(2ωW)·factor measured no faster: the kernels' sine costs what torch's two passes do)."""

    @staticmethod
    def forward(ctx, w: Tensor, omega: float, tau: float) -> Tensor:
        angle = w * (2 * omega)
        halves = torch.cos(angle).mul_(-0.5).add_(0.5)  # −(0.5·c) + 0.5 is 0.5 − 0.5·c, bit for bit
        ctx.save_for_backward(angle)
        ctx.factor = tau * omega / w.numel()
        return tau * torch.mean(halves)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (angle,) = ctx.saved_tensors
        return torch.sin(angle).mul_(grad * ctx.factor), None, None


def to_stage2(model: nn.Module, tau: float | None = None) -> nn.Module:
    """Switch every BiPer layer of ``model`` (or ``model`` itself, if it is one) to stage 2, in place.

    Everything the reference's ``main_stage2.py`` carries over from the stage-1 checkpoint stays: the
    latent weights, ``alpha``, biases and every other parameter or buffer of the model; ω is kept (the
    reference reads it from the stage-1 config). ``tau`` replaces the loss weight when given (the
    CIFAR stage-2 recipe uses :data:`TAU_STAGE2` = 0.0468); ``None`` keeps each layer's τ. The
    reference also fills an unused ``beta`` buffer with mean|W|; onebit has no such buffer.
    Returns ``model``.
    """
    changes = {"stage": 2} if tau is None else {"stage": 2, "tau": tau}
    found = 0
    for module in model.modules():
        method = getattr(module, "method", None)
        if isinstance(method, BiPer) and hasattr(module, "weight"):
            module.method = method.with_options(**changes)
            found += 1
    if not found:
        raise ValueError(
            "to_stage2: the model has no BiPer layers; binarize it first with "
            "onebit.binarize(model, 'biper', stage=1) and train stage 1"
        )
    return model


def quantization_error(weights: Tensor | Iterable[Tensor], omega: float) -> float:
    """BiPer's quantization error as its ``cifar10/vis_get_QE.py`` computes it: for each weight tensor,
    ``mean|sin(ωW) − sign(sin(ωW))|``, summed over the tensors (the reference sums over the binary
    layers of a checkpoint; pass one tensor for one layer). Uses onebit's ``sign(0) = +1``.
    """
    if isinstance(omega, bool) or not isinstance(omega, (int, float)) or not omega > 0:
        raise ValueError(f"quantization_error: omega={omega!r} must be a positive number")
    tensors = [weights] if isinstance(weights, Tensor) else list(weights)
    if not tensors:
        raise ValueError("quantization_error: no weight tensors given; pass a tensor or a list of tensors")
    total = 0.0
    with torch.no_grad():
        for w in tensors:
            if not isinstance(w, Tensor) or w.numel() == 0:
                raise ValueError("quantization_error: every weight must be a non-empty tensor")
            wave = torch.sin(omega * w.detach().double())
            total += (wave - sign(wave)).abs().mean().item()
    return total
