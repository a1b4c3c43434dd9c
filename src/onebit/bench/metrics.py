"""BiBench's track metrics as pure functions on numbers.

Source: Qin et al., "BiBench: Benchmarking and Analyzing Network Binarization", ICML 2023
(arXiv 2301.11233), Sec. 3 "evaluation tracks and metrics": 3.1 learning task, 3.2 neural architecture,
3.3 corruption robustness, 3.4 training consumption, 3.5 theoretical complexity, 3.6 hardware inference.

Every BiBench score compares a binarized model with its full-precision (FP) counterpart as a ratio
oriented so that **larger is better** and 1 means parity with FP, and every track's overall metric
(OM) is a *quadratic mean* — ``sqrt(mean(x²))`` — of the means ``E[·]`` of its parts (the paper's
notation ``E²[·]`` is the square of a mean over the settings of the track). Each formula is cited by
the subsection that defines it, "(3.1)" … "(3.6)": one overall metric per subsection, plus the gap G
(3.3) and the ratios r_c, r_s (3.5). Verification note: the formulas follow the paper's definitions as
we know them and agree with the project's notes (``shared/research/algorithms.md`` §2.2); the stored
copies of the paper reachable from the development machine give only its abstract and introduction,
so the text of Sec. 3 — and its printed equation numbers — could not be re-read there.

Where the paper leaves a choice open, the choice made here is stated in the function's docstring:
gaps and standard deviations of zero (a ratio with a zero denominator) are floored at ``eps``, tracks
average over the settings that exist (the paper's architecture track always has three families), and
the cross-track :func:`overall_score` — which BiBench does not define — is our own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "TRACKS",
    "TRACK_LABELS",
    "mean",
    "quadratic_mean",
    "geometric_mean",
    "accuracy_ratio",
    "task_score",
    "arch_score",
    "corruption_gap",
    "robustness_ratio",
    "bounded_robustness_ratio",
    "robustness_score",
    "training_score",
    "bibench_flops",
    "bibench_params",
    "complexity_score",
    "inference_score",
    "overall_score",
]

#: Track keys in BiBench's order (Sec. 3.1–3.6).
TRACKS: tuple[str, ...] = ("task", "arch", "robust", "train", "comp", "infer")
TRACK_LABELS: dict[str, str] = {
    "task": "Learning task",
    "arch": "Architecture",
    "robust": "Robustness",
    "train": "Training",
    "comp": "Complexity",
    "infer": "Inference",
}

#: Default floor (percentage points) for accuracy gaps and standard deviations used as denominators.
DEFAULT_EPS = 0.1


def _values(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values to average; pass at least one number")
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"{what}: every value must be a finite number, got {v!r}")
    return out


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean, BiBench's ``E[·]`` over the settings of a track."""
    vals = _values(values, "mean")
    return sum(vals) / len(vals)


def quadratic_mean(values: Iterable[float]) -> float:
    """Quadratic mean (root mean square) ``sqrt(Σ x² / n)``: the form of every BiBench overall metric."""
    vals = _values(values, "quadratic_mean")
    return math.sqrt(sum(v * v for v in vals) / len(vals))


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean ``(Π x)^(1/n)`` of positive numbers."""
    vals = _values(values, "geometric_mean")
    if any(v <= 0 for v in vals):
        raise ValueError(f"geometric_mean: values must be positive, got {vals}")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def _means(groups: Mapping[str, float | Sequence[float]], what: str) -> list[float]:
    """``E[·]`` of each group (a number is a group of one)."""
    if not groups:
        raise ValueError(f"{what}: no settings given; pass a non-empty mapping")
    out = []
    for key, value in groups.items():
        vals = [value] if isinstance(value, int | float) else list(value)
        out.append(mean(_values(vals, f"{what}[{key!r}]")))
    return out


def accuracy_ratio(acc_bi: float, acc_fp: float) -> float:
    """``A_bi / A_FP``, the accuracy of a binarized model relative to its FP counterpart (Sec. 3.1)."""
    if not acc_fp > 0:
        raise ValueError(f"full-precision accuracy must be positive to form a ratio, got {acc_fp!r}")
    return float(acc_bi) / float(acc_fp)


def task_score(ratios_by_task: Mapping[str, float | Sequence[float]]) -> float:
    """Learning-task track (3.1): ``OM_task = sqrt( (1/N) Σ_i E²[A_bi^task_i / A_FP^task_i] )``.

    ``ratios_by_task[task]`` holds the accuracy ratios of that task's settings (architectures, seeds);
    their mean is ``E[·]`` and the N tasks are combined by the quadratic mean.
    """
    return quadratic_mean(_means(ratios_by_task, "task_score"))


def arch_score(ratios_by_family: Mapping[str, float | Sequence[float]]) -> float:
    """Neural-architecture track (3.2): ``OM_arch = sqrt( (1/3) Σ_f E²[A_bi^f / A_FP^f] )``,
    f ∈ {CNN, Transformer, MLP}.

    Choice: the paper always has the three families; here the quadratic mean runs over the families
    present in ``ratios_by_family`` (a suite without transformers is scored on CNN and MLP), so a
    missing family is not counted as zero.
    """
    return quadratic_mean(_means(ratios_by_family, "arch_score"))


def corruption_gap(acc_clean: float, acc_corrupt: float) -> float:
    """Corruption generalization gap (3.3): ``G(A_norm, A_corr) = A_norm − A_corr``, the accuracy lost
    on corrupted data (BiBench takes it from Zhang et al., 2022). It may be negative."""
    return float(acc_clean) - float(acc_corrupt)


def robustness_ratio(gap_fp: float, gap_bi: float, eps: float = DEFAULT_EPS) -> float:
    """``G_FP / G_bi`` (3.3): > 1 when the binarized model loses less accuracy to a corruption than FP.

    Choice (the paper does not treat it): a gap ≤ 0 (no loss, or a gain) would make the ratio infinite
    or negative, so both gaps are floored at ``eps`` percentage points (default 0.1) before dividing —
    a model that loses nothing is then at most ``G_FP / eps`` times as robust.
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    return max(float(gap_fp), eps) / max(float(gap_bi), eps)


def bounded_robustness_ratio(gap_fp: Any, gap_bi: Any, floor: float, clip: float = 4.0) -> Any:
    """onebit's bounded form of ``G_FP / G_bi`` (3.3), used by the leaderboard: the binarized gap is
    floored at ``floor`` — its own test-set noise, below which a drop cannot be told from 0 — a negative
    FP gap counts as 0, and the ratio is clipped to ``[1/clip, clip]`` so that no single corruption can
    dominate the track. Works elementwise on numpy arrays (bootstrap replicates) as well as on numbers.

    The paper's wording averages raw ratios; those are unbounded where a binarized model has nothing left
    to lose (a model at chance scored 200 on one corruption and 42.95 on the track in an earlier report).
    """
    if not floor > 0 or not clip >= 1:
        raise ValueError(f"floor must be positive and clip >= 1, got floor={floor!r}, clip={clip!r}")
    ratio = np.clip(np.maximum(gap_fp, 0.0) / np.maximum(gap_bi, floor), 1.0 / clip, clip)
    return float(ratio) if np.ndim(ratio) == 0 else ratio


def robustness_score(ratios_by_corruption: Mapping[str, float | Sequence[float]]) -> float:
    """Corruption-robustness track (3.3): ``OM_robust = sqrt( (1/C) Σ_c E²[G_FP^c / G_bi^c] )``
    over the C corruptions; ``ratios_by_corruption[c]`` holds :func:`robustness_ratio` of each setting."""
    return quadratic_mean(_means(ratios_by_corruption, "robustness_score"))


def training_score(time_ratios: float | Sequence[float] | None, std_ratios: float | Sequence[float] | None) -> float:
    """Training-consumption track (3.4):
    ``OM_train = sqrt( ½ ( E²[T_FP / T_bi] + E²[std(A_FP^hyper) / std(A_bi^hyper)] ) )``.

    ``time_ratios`` are training-time ratios FP / binarized (one per setting); ``std_ratios`` the ratios
    of the standard deviation of final accuracy over the hyper-parameter grid, FP / binarized (a method
    whose accuracy varies less over the grid than FP's scores > 1).

    Choice: a suite without a hyper-parameter grid gives ``std_ratios=None`` and the track is the
    quadratic mean of the part that exists (the time part alone), and vice versa.
    """
    parts = [
        mean([p] if isinstance(p, int | float) else p)
        for p in (time_ratios, std_ratios)
        if p is not None and (isinstance(p, int | float) or len(p) > 0)
    ]
    if not parts:
        raise ValueError("training_score: pass training-time ratios, accuracy-std ratios, or both")
    return quadratic_mean(parts)


def bibench_flops(bops: float, fp_flops: float) -> float:
    """BiBench's FLOPs of a binarized model (3.5): ``FLOPs = BOPs / 64 + FP FLOPs`` — a 64-bit word does
    64 binary MACs at once; the FP part includes each method's extra full-precision operations."""
    return float(bops) / 64.0 + float(fp_flops)


def bibench_params(params_1bit: float, params_32bit: float) -> float:
    """BiBench's parameter count of a binarized model (3.5): ``Params = binary / 32 + FP params``."""
    return float(params_1bit) / 32.0 + float(params_32bit)


def complexity_score(flops_ratios: float | Sequence[float], params_ratios: float | Sequence[float]) -> float:
    """Theoretical-complexity track (3.5): ``OM_comp = sqrt( ½ ( E²[r_c] + E²[r_s] ) )`` with the speed-up
    ``r_c = FLOPs_FP / FLOPs_bi`` and the compression ``r_s = Params_FP / Params_bi`` of each setting
    (numerators and denominators from :func:`bibench_flops` and :func:`bibench_params`)."""
    parts = [mean([p] if isinstance(p, int | float) else p) for p in (flops_ratios, params_ratios)]
    return quadratic_mean(parts)


def inference_score(latency_ratios: float | Sequence[float], storage_ratios: float | Sequence[float]) -> float:
    """Hardware-inference track (3.6): ``OM_infer = sqrt( ½ ( E²[T_FP / T_bi] + E²[S_FP / S_bi] ) )``
    with T the measured latency and S the storage of the deployed model on each (device, library)
    setting. BiBench measures Larq Compute Engine and daBNN on ARM devices; here a setting is an
    (architecture, task) pair on this machine, the binarized model runs on onebit's packed engine and
    the FP model in torch fp32. Methods that cannot be deployed get no score (not zero)."""
    parts = [mean([p] if isinstance(p, int | float) else p) for p in (latency_ratios, storage_ratios)]
    return quadratic_mean(parts)


def overall_score(track_scores: Mapping[str, float | None], kind: str = "geometric") -> float | None:
    """One number per method across tracks — **ours, not BiBench's** (the paper reports the six track
    metrics side by side and defines no single score). The leaderboard no longer ranks by it: means of
    raw track ratios are unbounded, so one track (robustness, complexity) decided the ranking; it ranks
    by the mean of per-track ranks (:mod:`onebit.bench.scores`). Kept for comparisons.

    ``kind="geometric"`` (default): the geometric mean of the track scores the method has (``None``
    entries are skipped; no track at all gives ``None``). Every track score is a ratio to FP, and the
    geometric mean is the mean that is consistent for ratios (Fleming & Wallace, "How not to lie with
    statistics: the correct way to summarize benchmark results", CACM 1986): the ranking it gives does
    not depend on each track's scale, so the complexity track (ratios of 10–30) does not drown the
    accuracy tracks (ratios near 1), as it would in a quadratic or arithmetic mean. ``"quadratic"``
    (BiBench's within-track form) and ``"arithmetic"`` are available for comparison.
    """
    values = [float(v) for v in track_scores.values() if v is not None]
    if not values:
        return None
    if kind == "geometric":
        return geometric_mean(values)
    if kind == "quadratic":
        return quadratic_mean(values)
    if kind == "arithmetic":
        return mean(values)
    raise ValueError(f"unknown overall-score kind {kind!r}; use 'geometric', 'quadratic' or 'arithmetic'")
