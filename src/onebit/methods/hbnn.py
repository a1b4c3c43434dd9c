"""HBNN: heterogeneous bitwidth binarization (residual binarization with a per-element bit map)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import InferenceForm, Method, Option, register
from .functional import clip, sign, ste

__all__ = [
    "HBNN",
    "ResidualBinarization",
    "average_bits",
    "bit_planes",
    "model_average_bits",
    "residual_binarize",
    "stop_counts",
]

MAX_BITS = 8
DEFAULT_AVERAGE_BITS = 1.4


def stop_counts(n: int, bits: tuple[int, ...], mix: tuple[float, ...]) -> list[int]:
    """How many of ``n`` elements stop at bit level 1, 2, …, max(bits): the fractions ``mix`` of the
    bitwidths ``bits`` turned into integer counts by rounding the cumulative fractions, so the counts
    always sum to ``n`` and the realized average is within 1/n of the requested one. Levels after the
    highest bitwidth with a non-zero count are dropped."""
    fractions = dict(zip(bits, mix))
    levels = max(b for b, f in zip(bits, mix) if f > 0)
    counts, cumulative, done = [], 0.0, 0
    for level in range(1, levels + 1):
        cumulative += fractions.get(level, 0.0)
        upto = n if level == levels else min(n, math.floor(cumulative * n + 0.5))
        counts.append(upto - done)
        done = upto
    return counts


@dataclass
class ResidualBinarization:
    """The result of :func:`residual_binarize` on a ``(rows, n)`` tensor: the approximation, and per bit
    level j the ±1 plane ``sign(R_j)``, its scale ``μ_j`` (one per row, shape ``(rows, 1)``) and the
    mask of elements that use bit j; ``bitmap`` holds each element's bitwidth."""

    approx: Tensor
    planes: list[Tensor]
    scales: list[Tensor]
    masks: list[Tensor]
    bitmap: Tensor


def residual_binarize(x: Tensor, bits: tuple[int, ...], mix: tuple[float, ...]) -> ResidualBinarization:
    """Heterogeneous residual binarization of each row of ``x`` (shape ``(rows, n)``), no gradient.

    With ``R_1 = x`` and all elements active, for each bit level j: ``μ_j`` = mean ``|R_j|`` over the
    row's active elements, every active element adds ``μ_j·sign(R_j)`` to the approximation and
    ``R_{j+1} = R_j − μ_j·sign(R_j)`` (Fromm et al., NeurIPS 2018, residual binarization; the loop
    of ``jwfromm/BinOps`` ``multibit.cc``). Middle-out selection then decides who stops at j bits: of
    the active elements, the ``count_j`` (:func:`stop_counts`) whose ``|R_j|`` is closest to ``μ_j``
    — those ``±μ_j`` represents best — stop, the rest continue to bit j + 1.

    Differences from BinOps: ``sign(0) = +1`` (BinOps' ``carry_over > 0`` test sends 0 to −μ); a level
    with no active element would divide by zero there and cannot occur here (levels end at the
    highest used bitwidth).
    """
    with torch.no_grad():
        residual = x.detach().clone()
        n = residual.shape[1]
        active = torch.ones_like(residual, dtype=torch.bool)
        bitmap = torch.zeros_like(residual, dtype=torch.int64)
        approx = torch.zeros_like(residual)
        planes, scales, masks = [], [], []
        for level, count in enumerate(stop_counts(n, bits, mix), start=1):
            magnitude = residual.abs()
            n_active = active.sum(dim=1, keepdim=True)
            mu = torch.where(active, magnitude, torch.zeros_like(magnitude)).sum(dim=1, keepdim=True)
            mu = mu / n_active.clamp(min=1).to(mu.dtype)
            plane = sign(residual)
            step = torch.where(active, mu * plane, torch.zeros_like(plane))
            planes.append(plane)
            scales.append(mu)
            masks.append(active.clone())
            approx = approx + step
            if count > 0:
                distance = (magnitude - mu).abs().masked_fill(~active, math.inf)
                chosen = distance.argsort(dim=1, stable=True)[:, :count]
                stop = torch.zeros_like(active).scatter_(1, chosen, True)
                bitmap[stop] = level
                active = active & ~stop
            residual = residual - step
        return ResidualBinarization(approx, planes, scales, masks, bitmap)


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
def _check_bits(value: Any) -> str | None:
    if not isinstance(value, (tuple, list)) or not value:
        return "not a non-empty tuple of bitwidths"
    if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BITS for b in value):
        return f"not a tuple of integers in [1, {MAX_BITS}]"
    if list(value) != sorted(set(value)):
        return "not strictly increasing"
    return None


def _check_mix(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or not value:
        return "not a tuple of fractions"
    if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in value):
        return "not a tuple of numbers"
    if any(f < 0 for f in value):
        return "negative somewhere (fractions must be >= 0)"
    if abs(sum(value) - 1.0) > 1e-6:
        return f"summing to {sum(value):g}, not 1"
    return None


def _check_average(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_BITS:
        return f"not a number in [1, {MAX_BITS}] or None"
    return None


def mix_for_average(bits: tuple[int, ...], average: float) -> tuple[float, ...]:
    """The mix of the two bitwidths around ``average`` (``⌊a⌋`` and ``⌈a⌉``) whose mean is ``average``,
    e.g. 1.4 → 60 % 1-bit and 40 % 2-bit. Both bitwidths must be in ``bits``."""
    low, high = math.floor(average), math.ceil(average)
    if low not in bits or high not in bits:
        raise ValueError(
            f"hbnn: average_bits={average:g} needs bitwidths {low} and {high} in bits={tuple(bits)}; "
            "add them to bits or give the fractions explicitly with mix=..."
        )
    weights = {low: 1.0} if low == high else {low: high - average, high: average - low}
    return tuple(weights.get(b, 0.0) for b in bits)


@register
class HBNN(Method):
    """Heterogeneous bitwidth binarization (Fromm, Patel, Philipose, NeurIPS 2018).

    * weights: :func:`residual_binarize` over the whole tensor (one μ_j per bit level, as BinOps'
      ``multibit`` op when the bit map has the weight's shape), with a bit map chosen at every forward
      by middle-out selection toward the target mix; backward the STE ``g·1{|W| ≤ 1}`` (BinOps'
      ``multibit_grad``), no gradient through the scales or the bit map;
    * activations (``activations``): ``"binary"`` (default) is ``sign(x)`` with the same clip STE
      (BinOps' ``binarize`` op); ``"hetero"`` applies the same heterogeneous scheme and mix to the
      activations, with μ_j and the bit map computed per sample (over one sample's features);
    * the target mix: ``bits`` (allowed bitwidths) with ``mix`` (the fraction of elements at each), or
      the shorthand ``average_bits`` (split between the two neighbouring bitwidths, see
      :func:`mix_for_average`). With neither, 1.4 average bits (60 % 1-bit, 40 % 2-bit), the paper's
      headline setting.

    Verified: residual binarization with masked means and the STE against BinOps' code; the 1.4-bit
    headline and "bitwidths chosen at parameter granularity during training" against the abstract.
    Assumed (the paper body was not reachable): middle-out's rule "the elements whose residual is
    closest to μ_j stop at j bits"; the fractions are of the whole tensor; the bit map is recomputed at
    every forward (training and eval) and for activations per sample.

    Differences: activation statistics are per sample (BinOps' op, applied to a batch, takes one μ over
    the whole batch, so one sample's output would depend on the others); ``sign(0) = +1``.
    """

    name = "hbnn"
    paper = ("Fromm, Patel, Philipose, Heterogeneous Bitwidth Binarization in Convolutional Neural Networks, "
             "NeurIPS 2018")
    multibit = True
    options: ClassVar[dict[str, Option]] = {
        "bits": Option((1, 2, 3), "the allowed bitwidths, increasing", check=_check_bits),
        "mix": Option(None, "fraction of elements at each bitwidth of bits (>= 0, summing to 1), or None",
                      check=_check_mix),
        "average_bits": Option(None, "target average bitwidth (shorthand for mix), or None",
                               check=_check_average),
        "activations": Option("binary", "'binary': sign(x); 'hetero': heterogeneous bits like the weights",
                              choices=("binary", "hetero")),
    }

    def validate_config(self) -> None:
        bits = tuple(self.bits)
        if self.mix is not None:
            mix = tuple(float(f) for f in self.mix)
            if len(mix) != len(bits):
                raise ValueError(
                    f"hbnn: mix={tuple(self.mix)} has {len(mix)} fractions but bits={bits} has {len(bits)} "
                    "bitwidths; give one fraction per bitwidth"
                )
            realized = sum(b * f for b, f in zip(bits, mix))
            if self.average_bits is not None and abs(realized - self.average_bits) > 1e-6:
                raise ValueError(
                    f"hbnn: mix={tuple(self.mix)} averages {realized:g} bits but average_bits="
                    f"{self.average_bits:g}; give only one of mix and average_bits"
                )
        else:
            average = DEFAULT_AVERAGE_BITS if self.average_bits is None else float(self.average_bits)
            mix = mix_for_average(bits, average)
        self.__dict__["target_bits"] = bits
        self.__dict__["target_mix"] = mix

    @property
    def target_average(self) -> float:
        """The requested average bitwidth Σ b·p_b."""
        return sum(b * f for b, f in zip(self.target_bits, self.target_mix))

    def binarize_tensor(self, rows: Tensor) -> ResidualBinarization:
        """:func:`residual_binarize` of a ``(rows, n)`` tensor with this method's mix."""
        return residual_binarize(rows, self.target_bits, self.target_mix)

    # -- hooks ---------------------------------------------------------------------------------------
    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        approx = self.binarize_tensor(w.reshape(1, -1)).approx.reshape(w.shape)
        return ste(approx, clip(w))

    def quantize_input(self, layer: nn.Module, x: Tensor) -> Tensor:
        if self.activations == "binary":
            return ste(sign(x), clip(x))
        rows = x.reshape(-1, x.shape[-1]) if layer.features_last else x.reshape(x.shape[0], -1)
        approx = self.binarize_tensor(rows).approx.reshape(x.shape)
        return ste(approx, clip(x))

    def inference(self, layer: nn.Module) -> InferenceForm:
        planes = bit_planes(layer)
        c_out = layer.weight.shape[0]
        quantized_input = bool(getattr(layer, "binarize_activations", True))
        hetero_input = self.activations == "hetero" and quantized_input
        return InferenceForm(
            weight_planes=[plane for plane, _, _ in planes],
            plane_scales=[scale.reshape(1).expand(c_out).clone() for _, scale, _ in planes],
            plane_masks=[None if bool(mask.all()) else mask for _, _, mask in planes],
            binary_input=quantized_input and not hetero_input,
            bias=None if layer.bias is None else layer.bias.detach().clone(),
            # the layer zero-pads a real input; pad_value only applies to a quantized one
            pad_value=float(getattr(layer, "pad_value", 0.0)) if quantized_input else 0.0,
            input_bits=self.target_bits if hetero_input else None,
            input_mix=self.target_mix if hetero_input else None,
            notes=[f"hbnn: {len(planes)} weight bit planes, realized {average_bits(layer):.4f} average bits"],
        )


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------
def _hbnn_method(layer: nn.Module) -> HBNN:
    method = getattr(layer, "method", None)
    if not isinstance(method, HBNN) or not hasattr(layer, "weight"):
        raise ValueError(
            f"{type(layer).__name__} is not an hbnn layer; build it with method='hbnn' "
            "(onebit.binarize(model, 'hbnn') or BinaryConv2d(..., method='hbnn'))"
        )
    return method


def _weight_binarization(layer: nn.Module) -> ResidualBinarization:
    method = _hbnn_method(layer)
    return method.binarize_tensor(layer.weight.detach().reshape(1, -1))


def bit_planes(layer: nn.Module) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The weight's bit planes of an hbnn layer: ``(plane, scale, mask)`` per bit level, with ``plane``
    the ±1 tensor ``sign(R_j)`` of the weight's shape, ``scale`` the per-tensor scalar ``μ_j`` (0-d),
    and ``mask`` the boolean tensor of the weights that use bit j. The quantized weight is
    ``Σ_j scale·mask·plane``."""
    result = _weight_binarization(layer)
    shape = layer.weight.shape
    return [
        (plane.reshape(shape), scale.reshape(()), mask.reshape(shape))
        for plane, scale, mask in zip(result.planes, result.scales, result.masks)
    ]


def average_bits(layer: nn.Module) -> float:
    """The realized average bitwidth of an hbnn layer's weights (the mean of the current bit map)."""
    return _weight_binarization(layer).bitmap.double().mean().item()


def model_average_bits(model: nn.Module) -> float:
    """The realized average weight bitwidth over every hbnn layer of ``model`` whose weights are
    binarized, weighted by each layer's number of weights."""
    total_bits, total = 0.0, 0
    for module in model.modules():
        if isinstance(getattr(module, "method", None), HBNN) and getattr(module, "binarize_weights", True):
            n = module.weight.numel()
            total_bits += average_bits(module) * n
            total += n
    if total == 0:
        raise ValueError(
            "model_average_bits: the model has no hbnn layers with binarized weights; "
            "binarize it with onebit.binarize(model, 'hbnn')"
        )
    return total_bits / total
