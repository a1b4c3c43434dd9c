"""HBNN: heterogeneous bitwidth binarization (residual binarization with a per-element bit map)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from . import functional
from .base import InferenceForm, Method, Option, register
from .functional import ClipSTE, QuantizerCall, _clip_grad, sign

__all__ = [
    "HBNN",
    "PAPER_MIX",
    "ResidualBinarization",
    "average_bits",
    "binarize_with_bitmap",
    "bit_planes",
    "forget_bit_maps",
    "middle_out_bitmap",
    "model_average_bits",
    "residual_binarize",
    "stop_counts",
]

MAX_BITS = 8
#: The paper's 1.4-bit setting (Fromm et al. 2018, Sec. 4.3): 70 % of the values at 1 bit, 20 % at 2, 10 % at 3.
PAPER_MIX = {1: 0.7, 2: 0.2, 3: 0.1}
SELECTIONS = ("paper", "residual")


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
    level j the ±1 plane ``sign(R_j)`` and its scale ``μ_j`` (one per row, shape ``(rows, 1)``);
    ``bitmap`` (int8) holds each element's bitwidth, and ``masks`` (computed from it on demand) the
    elements that use bit j. ``planes`` is None where the caller asked for the value only
    (``planes=False``: a training forward) and the native kernel made it. ``within_one``: whether
    every ``|x| ≤ 1`` (the clip STE's gradient is then the identity), where the native kernel found it
    in its pass (None: not known)."""

    approx: Tensor
    planes: list[Tensor] | None
    scales: list[Tensor]
    bitmap: Tensor
    within_one: bool | None = None

    @property
    def masks(self) -> list[Tensor]:
        """Per bit level j, the boolean mask ``bitmap ≥ j`` of the elements that use bit j."""
        return [self.bitmap >= level for level in range(1, len(self.scales) + 1)]


# Masks below are float 0/1 tensors written by comparisons with a float ``out`` and applied by
# multiplication: on CPU, torch's kernels that write or read bool tensors (``<=`` into bool, ``where``,
# ``masked_fill_``) cost 5-20x a float pass, and HBNN runs them over every weight at every step. Products
# with a 0/1 mask equal ``where(mask, v, 0)`` for the finite values they see (magnitudes, ±μ).
def _mask(compare: Any, a: Tensor, b: Tensor | float, dtype: torch.dtype) -> Tensor:
    """``compare(a, b)`` (``torch.le``, ``torch.ge``, …) as a 0/1 tensor of ``dtype``."""
    return compare(a, b, out=torch.empty(a.shape, dtype=dtype, device=a.device))


def _count(mask: Tensor) -> Tensor:
    """The number of ones per row of a 0/1 float mask, ``(rows, 1)``: exact in the mask's dtype below
    2²⁴ elements per row (float32's integers), in float64 from there (a float64 sum is ~8x slower)."""
    return mask.sum(dim=1, keepdim=True, dtype=torch.float64 if mask.shape[1] >= 2**24 else None)


def _kth_smallest(distance: Tensor, count: int) -> Tensor:
    """The ``count``-th smallest value of each row, shape ``(rows, 1)``. On CPU numpy's introselect
    (``np.partition``), ~10x faster there than ``torch.kthvalue``; the same order statistic."""
    if distance.device.type == "cpu" and distance.dtype in (torch.float32, torch.float64):
        column = np.partition(distance.numpy(), count - 1, axis=1)[:, count - 1:count]
        return torch.from_numpy(np.ascontiguousarray(column))
    return distance.kthvalue(count, dim=1, keepdim=True).values


def _smallest(distance: Tensor, count: int) -> Tensor:
    """The float 0/1 mask of the ``count`` elements of each row with the smallest ``distance`` (``inf``
    marks the ineligible ones), ties broken toward the lower index: exactly the first ``count`` of a
    stable ascending sort, found from one order statistic (linear time) instead of a full sort."""
    threshold = _kth_smallest(distance, count)
    chosen = _mask(torch.le, distance, threshold, distance.dtype)
    if bool((_count(chosen) == count).all()):  # no surplus tie at the threshold (the usual case)
        return chosen
    return _with_first_ties(distance, threshold, count)


def _with_first_ties(distance: Tensor, threshold: Tensor, count: int) -> Tensor:
    """The elements below each row's threshold and, of those equal to it, the first by index up to
    ``count`` per row, as a float 0/1 mask. (On CPU through numpy: the tied few are found by index
    instead of a cumulative sum over the row.)"""
    if distance.device.type == "cpu":
        values, bounds = distance.numpy(), threshold.numpy()
        chosen = values < bounds
        for row in range(values.shape[0]):
            room = count - int(np.count_nonzero(chosen[row]))
            chosen[row, np.flatnonzero(values[row] == bounds[row, 0])[:room]] = True
        return torch.from_numpy(chosen).to(distance.dtype)
    return _with_first_ties_torch(distance, threshold, count)


def _with_first_ties_torch(distance: Tensor, threshold: Tensor, count: int) -> Tensor:
    below = distance < threshold
    tied = (distance <= threshold) & ~below
    room = count - below.sum(dim=1, keepdim=True)
    return (below | (tied & (tied.cumsum(dim=1) <= room))).to(distance.dtype)


def _masked_mean(values: Tensor, mask: Tensor | None, count: int | Tensor) -> Tensor:
    """Per-row mean of ``values`` over the 0/1 float ``mask`` (all elements when None), which holds
    ``count`` elements per row (0 gives 0), shape ``(rows, 1)``."""
    kept = values if mask is None else values * mask
    denominator = count.clamp(min=1).to(values.dtype) if isinstance(count, Tensor) else max(count, 1)
    return kept.sum(dim=1, keepdim=True) / denominator


def _stop(bitmap: Tensor, remaining: Tensor, distance: Tensor, count: int, left: int) -> Tensor:
    """Count one more level for every element of the 0/1 ``remaining`` mask in ``bitmap`` (an element's
    bitwidth is the number of levels it was still unassigned at), then take the ``count`` of the
    ``left`` remaining elements per row closest in ``distance`` out of it; returns the new mask."""
    bitmap.add_(remaining.to(torch.int8))
    if count == 0:
        return remaining
    if count == left:  # everyone left stops here: no order needed
        return torch.zeros_like(remaining)
    # +inf on the elements already assigned: 1/0 − 1 = inf, 1/1 − 1 = 0.
    eligible = distance.add_(remaining.reciprocal().sub_(1.0))
    return remaining.sub_(_smallest(eligible, count))


def middle_out_bitmap(x: Tensor, counts: list[int]) -> Tensor:
    """The bit map of Algorithm 1 (Fromm et al., NeurIPS 2018) for each row of ``x``: with R the values
    not yet assigned (all of them at first), for bitwidth b = 1, 2, … sort R by Eq. 6's middle-out
    distance ``| |t| − mean_R |t| |`` ascending, give the first ``counts[b−1]`` of them b bits and remove
    them from R. The sort always runs over the original values, re-centred on the mean magnitude of
    those still in R. Returns an int8 tensor of ``x``'s shape."""
    magnitude = x.abs()
    remaining = torch.ones_like(magnitude)
    bitmap = torch.zeros_like(x, dtype=torch.int8)
    n = left = x.shape[1]
    for count in counts:
        distance = None
        if 0 < count < left:
            distance = (magnitude - _masked_mean(magnitude, None if left == n else remaining, left)).abs_()
        remaining = _stop(bitmap, remaining, distance, count, left)
        left -= count
    return bitmap


def binarize_with_bitmap(x: Tensor, bitmap: Tensor, planes: bool = True) -> ResidualBinarization:
    """Residual binarization of each row of ``x`` under a given bit map (Fromm et al., Eq. 4/5; the loop
    of ``jwfromm/BinOps`` ``multibit.cc``): with ``R_1 = x``, at bit level j the elements with
    ``bitmap ≥ j`` are active, ``μ_j`` = mean ``|R_j|`` over them, each adds ``μ_j·sign(R_j)`` to the
    approximation and ``R_{j+1} = R_j − μ_j·sign(R_j)``. No gradient. (Natively where
    :func:`_native_binarization` runs; ``planes=False`` lets it skip the planes.)"""
    with torch.no_grad():
        native = _native_binarization(x, None, None, bitmap, planes)
        if native is not None:
            return native
        x = x.detach()
        mu = x.abs().mean(dim=1, keepdim=True)  # level 1: every element is active
        plane = sign(x)
        approx = mu * plane
        residual = x - approx
        planes, scales = [plane], [mu]
        for level in range(2, int(bitmap.max()) + 1 if bitmap.numel() else 1):
            active = _mask(torch.ge, bitmap, level, x.dtype)
            mu = _masked_mean(residual.abs(), active, _count(active))
            plane = sign(residual)
            # ±μ·0 on the inactive elements may be −0.0: adding it leaves approx as it was, and the
            # residual it changes (−0.0 to +0.0) is inactive at every later level.
            step = (mu * plane).mul_(active)
            planes.append(plane)
            scales.append(mu)
            approx += step
            residual -= step
        return ResidualBinarization(approx, planes, scales, bitmap)


def _planes_from_scales(x: Tensor, bitmap: Tensor, scales: list[Tensor]) -> list[Tensor]:
    """The planes ``sign(R_j)`` of :func:`binarize_with_bitmap` given its scales ``μ_j``: the same float
    operations (``R_2 = x − μ_1·sign(x)``, then ``R_{j+1} = R_j − (μ_j·sign(R_j))·active_j``), so the
    same planes, without the masked means."""
    plane = sign(x)
    planes = [plane]
    residual = x - scales[0] * plane
    for level, mu in enumerate(scales[1:], start=2):
        plane = sign(residual)
        planes.append(plane)
        residual -= (mu * plane).mul_(_mask(torch.ge, bitmap, level, x.dtype))
    return planes


# The native kernel (csrc/train_hbnn.cpp, in onebit._engine; mode numbers of train_hbnn.h HbnnMode).
_HBNN_KERNEL = functional._engine is not None and hasattr(functional._engine, "hbnn_binarize")
# An engine built before the kernel reported max |x| (within_one stays None there: the clip mask is applied).
_KERNEL_MAX_ABS = _HBNN_KERNEL and "max_abs_addr" in (functional._engine.hbnn_binarize.__doc__ or "")
_KERNEL_MODES = {"paper": 0, "residual": 1, None: 2}


def _native_binarization(x: Tensor, counts: list[int] | None, selection: str | None,
                         bitmap: Tensor | None = None, planes: bool = True) -> ResidualBinarization | None:
    """The native kernel's binarization of the rows ``x``: the bit map of ``selection`` (``"paper"`` or
    ``"residual"``, with the stop ``counts``) or the given int8 ``bitmap`` (``selection=None``), then the
    residual levels, with the torch path's float operations. Its means sum in double precision in index
    order (torch in float32, in an order that depends on the ISA and the thread count), the one source
    of difference: a scale can move by an ulp, and an element whose distance is within a few ulp of a
    level's threshold can land on the other side of it. None where it does not run: the torch path
    then (functional.NATIVE_KERNELS off, anything but an eagerly run float32 CPU plain tensor, an
    engine built without it, a non-finite value, a given map with a level above MAX_BITS)."""
    if not (_HBNN_KERNEL and functional._native(x)) or x.numel() == 0 or x.shape[1] >= 2**31:
        return None
    if bitmap is not None and not (type(bitmap) is torch.Tensor and bitmap.dtype == torch.int8
                                   and bitmap.device.type == "cpu" and bitmap.shape == x.shape):
        return None
    rows = x.detach().contiguous()
    bitmap = torch.empty(rows.shape, dtype=torch.int8) if bitmap is None else bitmap.contiguous()
    approx = torch.empty_like(rows)
    scales = torch.zeros(MAX_BITS + 1, rows.shape[0], 1)  # the levels' scales, then max |x| per row
    top = functional._engine.hbnn_binarize(
        _KERNEL_MODES[selection], rows.data_ptr(), rows.shape[0], rows.shape[1], counts or [], bitmap.data_ptr(),
        approx.data_ptr(), scales.data_ptr(), torch.get_num_threads(),
        *([scales[MAX_BITS].data_ptr()] if _KERNEL_MAX_ABS else []))
    if top == 0:
        return None
    levels = list(scales[:top])
    within_one = bool(scales[MAX_BITS].max() <= 1.0) if _KERNEL_MAX_ABS else None
    return ResidualBinarization(approx, _planes_from_scales(rows, bitmap, levels) if planes else None, levels, bitmap,
                                within_one)


def _residual_rule(x: Tensor, counts: list[int]) -> ResidualBinarization:
    """The ``selection="residual"`` variant: residual binarization where, at each level j, of the active
    elements the ``counts[j−1]`` whose residual magnitude ``|R_j|`` is closest to ``μ_j`` stop at j bits
    (those ``±μ_j`` represents best), the rest continue."""
    residual = x.detach().clone()
    active = torch.ones_like(residual)  # 0/1 float mask
    bitmap = torch.zeros_like(residual, dtype=torch.int8)
    left = x.shape[1]
    for count in counts:
        magnitude = residual.abs()
        mu = _masked_mean(magnitude, active, left)
        step = (mu * sign(residual)).mul_(active)  # (−0.0 on inactive elements: see binarize_with_bitmap)
        active = _stop(bitmap, active, (magnitude - mu).abs_() if 0 < count < left else None, count, left)
        left -= count
        residual -= step
    return binarize_with_bitmap(x, bitmap)


def residual_binarize(x: Tensor, bits: tuple[int, ...], mix: tuple[float, ...],
                      selection: str = "paper", planes: bool = True) -> ResidualBinarization:
    """Heterogeneous residual binarization of each row of ``x`` (shape ``(rows, n)``), no gradient.

    The bit map gives ``count_j`` elements (:func:`stop_counts` of ``mix``) j bits; ``selection`` picks
    which: ``"paper"`` is Algorithm 1 with the middle-out heuristic over the original values
    (:func:`middle_out_bitmap`); ``"residual"`` decides level by level on the residuals, stopping the
    active elements whose ``|R_j|`` is closest to ``μ_j``. Both give the same map at level 1 and differ
    from level 2 on (with three or more bitwidths, or two when nobody stops at 1 bit). Then
    :func:`binarize_with_bitmap`.

    Float32 CPU rows take the native kernel (:func:`_native_binarization`; ``planes=False`` lets it skip
    the planes, which a training forward does not use); the torch code is the fallback and the oracle.

    Differences from BinOps: ``sign(0) = +1`` (BinOps' ``carry_over > 0`` test sends 0 to −μ); a level
    with no active element would divide by zero there and gives μ = 0 here.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"hbnn: selection={selection!r} is not one of {', '.join(map(repr, SELECTIONS))}")
    with torch.no_grad():
        counts = stop_counts(x.shape[1], bits, mix)
        native = _native_binarization(x, counts, selection, planes=planes)
        if native is not None:
            return native
        if selection == "residual":
            return _residual_rule(x, counts)
        return binarize_with_bitmap(x, middle_out_bitmap(x.detach(), counts))


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


def paper_mix(bits: tuple[int, ...]) -> tuple[float, ...]:
    """The paper's 1.4-bit setting (:data:`PAPER_MIX`: 70/20/10 % at 1/2/3 bits) over ``bits``, which must
    hold 1, 2 and 3."""
    if not set(PAPER_MIX) <= set(bits):
        raise ValueError(
            f"hbnn: the default mix (the paper's 70 % 1-bit, 20 % 2-bit, 10 % 3-bit) needs bitwidths 1, 2 and 3 "
            f"in bits={tuple(bits)}; add them or give the fractions with mix=... (or average_bits=...)"
        )
    return tuple(PAPER_MIX.get(b, 0.0) for b in bits)


class ResidualClipSTE:
    """HBNN's quantizer (:class:`onebit.methods.functional.QuantizerCall`): the value of ``binarize(x)``
    (a :class:`ResidualBinarization`, no gradient), the gradient BinOps' STE ``g·1{|x| ≤ 1}`` in one
    kernel (``ste(binarize(x), clip(x))``, fused). It keeps ``x`` and the value (``from_kept``), so the
    binarization is not recomputed in backward; where the binarization found every ``|x| ≤ 1`` (the
    native kernel's ``within_one``: the usual case for weights) it keeps an empty tensor instead of ``x``
    and the gradient is ``g`` itself, which is what the clip mask gives then (no pass at all)."""

    @staticmethod
    def value(x: Tensor, binarize: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
        result = binarize(x)
        approx = result.approx.reshape(x.shape)
        return approx, (x.new_empty(0) if result.within_one else x, approx)

    @staticmethod
    def from_kept(x: Tensor, kept: tuple[Tensor, ...]) -> Tensor:
        return kept[0]

    @staticmethod
    def grad(grad: Tensor, x: Tensor, kept: tuple[Tensor, ...], binarize: Any) -> Tensor:
        if x.numel() == 0:  # every |x| <= 1 (an empty input has an empty gradient alike)
            return grad
        return _clip_grad(grad, x)


@register
class HBNN(Method):
    """Heterogeneous bitwidth binarization (Fromm, Patel, Philipose, NeurIPS 2018).

    * weights: residual binarization over the whole tensor (Eq. 4/5; one μ_j per bit level, as BinOps'
      ``multibit`` op when the bit map has the weight's shape) under a per-weight bit map;
      backward the STE ``g·1{|W| ≤ 1}`` (BinOps' ``multibit_grad``), no gradient through the scales or
      the bit map;
    * the bit map (``selection``): ``"paper"`` (default) is Algorithm 1 literally: for each bitwidth in
      increasing order, the not-yet-assigned original weights are ordered by Eq. 6's middle-out distance
      ``| |t| − mean|t| |`` (the mean over those weights), ascending, and the first ``p_b·N`` get b bits.
      ``"residual"`` is the variant onebit used before the paper's text was read: at level j the active
      weights whose residual ``|R_j|`` is closest to ``μ_j`` stop. Both give the same map at level 1; with
      three bitwidths 10–24 % of the weights of a Gaussian tensor get another bitwidth;
    * activations (``activations``): ``"binary"`` (default) is ``sign(x)`` with the same clip STE
      (BinOps' ``binarize`` op); ``"hetero"`` applies the same heterogeneous scheme and mix to the
      activations, with μ_j and the bit map computed per sample (over one sample's features);
    * the target mix: ``bits`` (allowed bitwidths) with ``mix`` (the fraction of elements at each), or
      the shorthand ``average_bits`` (split between the two neighbouring bitwidths, see
      :func:`mix_for_average`). With neither, the paper's 1.4-bit setting: 70 % 1-bit, 20 % 2-bit, 10 %
      3-bit (Sec. 4.3; it reports 80/0/20 about as good).

    When the bit map is computed: at every forward in training mode (the weights change at every step,
    so the map must follow them); in eval mode the layer's map is kept until its weight changes (the
    same Parameter object and torch's version counter, which every in-place update of the parameter
    bumps: an optimizer step, ``load_state_dict``, ``with torch.no_grad(): w.copy_(...)``), so eval
    forwards, :func:`bit_planes`, :func:`average_bits` and the exporters select once. A write through
    ``w.data`` bypasses that counter: call :func:`forget_bit_maps` after one. Activation maps are
    computed per forward (every input is new). On float32 CPU tensors the map and the binarization run
    in onebit's native kernel (csrc/train_hbnn.cpp: a few passes per level over the elements still in
    play, each level's order statistic from a bracketing sample and one counting pass, exact; see
    :func:`_native_binarization` for its one difference, the means' summation order); elsewhere
    selection takes one order statistic per level (linear time: ``np.partition`` on CPU, ``kthvalue``
    elsewhere) instead of a sort, with the sort's order on ties (lower index first), and its masks are
    float 0/1 tensors (bit-identical maps and values to the bool-mask code, which
    tests/methods/test_fused_quantizers.py keeps as the oracle; the native kernel is tested against this
    torch code in tests/methods/test_native_hbnn.py). The weight's STE
    and the binary activations' clip STE are fused quantizers (one kernel in backward; the activations'
    one fused with the layer's product).

    Verified: residual binarization with masked means and the STE against BinOps' code; Algorithm 1,
    Eq. 6 and the 70/20/10 setting against the paper's camera-ready text. Assumed (the paper does not
    say): the fractions are of the whole tensor; the map's recomputation schedule above; activations'
    granularity (per sample).

    Differences: activation statistics are per sample (BinOps' op, applied to a batch, takes one μ over
    the whole batch, so one sample's output would depend on the others); ``sign(0) = +1``.
    """

    name = "hbnn"
    paper = ("Fromm, Patel, Philipose, Heterogeneous Bitwidth Binarization in Convolutional Neural Networks, "
             "NeurIPS 2018")
    multibit = True
    options: ClassVar[dict[str, Option]] = {
        "bits": Option((1, 2, 3), "the allowed bitwidths, increasing", check=_check_bits),
        "mix": Option(None, "fraction of elements at each bitwidth of bits (>= 0, summing to 1), or None "
                      "(the paper's 70/20/10 at 1/2/3 bits)", check=_check_mix),
        "average_bits": Option(None, "target average bitwidth (shorthand for mix), or None",
                               check=_check_average),
        "selection": Option("paper", "bit map rule: 'paper' (Algorithm 1, middle-out over the original values) "
                            "or 'residual' (middle-out over each level's residuals)", choices=SELECTIONS),
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
        elif self.average_bits is not None:
            mix = mix_for_average(bits, float(self.average_bits))
        else:
            mix = paper_mix(bits)
        self.__dict__["target_bits"] = bits
        self.__dict__["target_mix"] = mix

    @property
    def target_average(self) -> float:
        """The requested average bitwidth Σ b·p_b."""
        return sum(b * f for b, f in zip(self.target_bits, self.target_mix))

    def binarize_tensor(self, rows: Tensor, planes: bool = True) -> ResidualBinarization:
        """:func:`residual_binarize` of a ``(rows, n)`` tensor with this method's mix and selection."""
        return residual_binarize(rows, self.target_bits, self.target_mix, self.selection, planes)

    def weight_binarization(self, layer: nn.Module, w: Tensor | None = None,
                            planes: bool = True) -> ResidualBinarization:
        """The residual binarization of ``w`` (default ``layer.weight``) as one row. In eval mode the bit
        map of the layer's own weight is reused while the weight is unchanged (see the class notes)."""
        w = layer.weight if w is None else w
        rows = w.detach().reshape(1, -1)
        if layer.training or w is not layer.weight:
            return self.binarize_tensor(rows, planes)
        # the same tensor object (a weak reference: a new Parameter never matches), unchanged since
        key = (w.data_ptr(), w._version, w.shape, w.dtype, w.device, self.selection, self.target_bits,
               self.target_mix)
        cached = _EVAL_BITMAPS.get(layer)
        if cached is not None and cached[0]() is w and cached[1] == key:
            return binarize_with_bitmap(rows, cached[2], planes)
        result = self.binarize_tensor(rows, planes)
        _EVAL_BITMAPS[layer] = (weakref.ref(w), key, result.bitmap)
        return result

    # -- hooks ---------------------------------------------------------------------------------------
    def quantize_weight(self, layer: nn.Module, w: Tensor) -> Tensor:
        return QuantizerCall(w, ResidualClipSTE, (partial(self._weight_approx, layer),)).apply()

    def input_quantizer(self, layer: nn.Module, x: Tensor) -> QuantizerCall:
        if self.activations == "binary":
            return QuantizerCall(x, ClipSTE, (None,))
        return QuantizerCall(x, ResidualClipSTE, (partial(self._sample_approx, layer.features_last),))

    def _weight_approx(self, layer: nn.Module, w: Tensor) -> ResidualBinarization:
        return self.weight_binarization(layer, w, planes=False)

    def _sample_approx(self, features_last: bool, x: Tensor) -> ResidualBinarization:
        rows = x.reshape(-1, x.shape[-1]) if features_last else x.reshape(x.shape[0], -1)
        return self.binarize_tensor(rows, planes=False)

    def weight_bits(self, layer: nn.Module) -> float:
        """The realized average bitwidth of the layer's weights (:func:`average_bits`)."""
        return average_bits(layer)

    def inference(self, layer: nn.Module) -> InferenceForm:
        binarization = self.weight_binarization(layer)
        planes = _planes_of(layer, binarization)
        c_out = layer.weight.shape[0]
        quantized_input = bool(getattr(layer, "binarize_activations", True))
        hetero_input = self.activations == "hetero" and quantized_input
        realized = binarization.bitmap.double().mean().item()
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
            notes=[f"hbnn: {len(planes)} weight bit planes, realized {realized:.4f} average bits"],
        )


#: The eval-mode bit maps, per layer, outside the layers so that they never reach a pickle or a deepcopy.
_EVAL_BITMAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forget_bit_maps(model: nn.Module) -> None:
    """Drop the eval-mode bit maps kept by the hbnn layers of ``model`` (needed only after writing a
    weight through ``.data``, which torch's version counter does not see)."""
    for module in model.modules():
        _EVAL_BITMAPS.pop(module, None)


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
    return _hbnn_method(layer).weight_binarization(layer)


def _planes_of(layer: nn.Module, result: ResidualBinarization) -> list[tuple[Tensor, Tensor, Tensor]]:
    shape = layer.weight.shape
    return [
        (plane.reshape(shape), scale.reshape(()), mask.reshape(shape))
        for plane, scale, mask in zip(result.planes, result.scales, result.masks)
    ]


def bit_planes(layer: nn.Module) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The weight's bit planes of an hbnn layer: ``(plane, scale, mask)`` per bit level, with ``plane``
    the ±1 tensor ``sign(R_j)`` of the weight's shape, ``scale`` the per-tensor scalar ``μ_j`` (0-d),
    and ``mask`` the boolean tensor of the weights that use bit j. The quantized weight is
    ``Σ_j scale·mask·plane``."""
    return _planes_of(layer, _weight_binarization(layer))


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
