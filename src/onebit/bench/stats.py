"""The benchmark's statistics: binomial noise of a test set, percentile-bootstrap intervals, ranks and
rank correlations.

Everything here is onebit's own choice, not BiBench's (the paper reports single numbers): the
formulas are stated in each docstring and in the report's "How the scores are computed" section.
Rank correlations and tie-aware ranks come from scipy (``scipy.stats``); scipy is a dependency of
scikit-learn, which onebit requires for its embedded data, so the report needs no optional extra.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "Z95",
    "binomial_se",
    "binomial_draws",
    "gap_noise",
    "resolvable_difference",
    "percentile_ci",
    "differs_from_zero",
    "ranks",
    "kendall_tau",
    "spearman_rho",
    "seed_halves",
    "split_half_tau",
]

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def binomial_se(acc: float, n: float) -> float:
    """Standard error, in percentage points, of an accuracy ``acc`` (%) measured on ``n`` independent
    test samples: ``100·sqrt(p(1−p)/n)``."""
    if not n > 0:
        raise ValueError(f"binomial_se: the number of test samples must be positive, got {n!r}")
    p = min(max(float(acc) / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / float(n))


def gap_noise(acc_clean: float, n_clean: float, acc_corrupt: float, n_corrupt: float) -> float:
    """Half-width (points) of the 95 % interval of an accuracy gap ``A_clean − A_corrupt`` from the two
    accuracies' binomial noise: ``1.96·sqrt(se_clean² + se_corrupt²)``. A gap below it cannot be told
    from zero by this test set."""
    return Z95 * math.hypot(binomial_se(acc_clean, n_clean), binomial_se(acc_corrupt, n_corrupt))


def resolvable_difference(acc: float, n: float, seeds: int = 1) -> float:
    """The smallest difference (points) between two models' accuracies near ``acc`` that a test set of
    ``n`` samples, each model measured on ``seeds`` seeds (test-sample noise only), resolves at 95 %:
    ``1.96·sqrt(2)·se(acc, n·seeds)``."""
    return Z95 * math.sqrt(2.0) * binomial_se(acc, n * max(1, seeds))


def binomial_draws(rng: np.random.Generator, acc: np.ndarray, n: float | None, size: int) -> np.ndarray:
    """``size`` bootstrap copies (rows) of the accuracies ``acc`` (%, one per seed) re-measured on a
    resample of their ``n`` test samples. Resampling n samples with replacement draws the number of
    correct ones from Binomial(n, p) exactly, so the stored accuracy and n suffice (no per-sample
    record is needed). ``n=None`` (unknown test size) returns ``acc`` unchanged in every row."""
    acc = np.asarray(acc, dtype=float)
    if n is None or not n > 0:
        return np.broadcast_to(acc, (size, acc.size)).copy()
    k = rng.binomial(int(round(n)), np.clip(acc / 100.0, 0.0, 1.0), size=(size, acc.size))
    return 100.0 * k / float(int(round(n)))


def percentile_ci(samples: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile-bootstrap interval: the ``(1−level)/2`` and ``(1+level)/2`` quantiles."""
    arr = np.asarray(samples, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError("percentile_ci: no finite bootstrap samples")
    lo, hi = np.quantile(arr, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def differs_from_zero(samples: Sequence[float] | np.ndarray, level: float = 0.95) -> bool:
    """Whether the percentile-bootstrap interval of a paired difference excludes 0 (a two-sided test at
    ``1 − level``). Differences that are 0 in every replicate (exact ties) do not differ."""
    arr = np.asarray(samples, dtype=float)
    if arr.size and np.all(arr == 0):
        return False
    lo, hi = percentile_ci(arr, level)
    return lo > 0 or hi < 0


def ranks(values: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank of each key (1 = best), ties given their average rank (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata

    keys = list(values)
    if not keys:
        return {}
    vals = np.array([values[k] for k in keys], dtype=float)
    r = rankdata(-vals if higher_is_better else vals, method="average")
    return {k: float(v) for k, v in zip(keys, r)}


def _correlation(kind: str, x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) != len(y):
        raise ValueError(f"{kind}: the two sequences differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None  # undefined (or meaningless) for fewer than 3 items or a constant ranking
    from scipy import stats

    fn = stats.kendalltau if kind == "kendall_tau" else stats.spearmanr
    value = float(fn(x, y)[0])
    return value if math.isfinite(value) else None


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b (``scipy.stats.kendalltau``) of two paired sequences; ``None`` when undefined."""
    return _correlation("kendall_tau", x, y)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ (``scipy.stats.spearmanr``) of two paired sequences; ``None`` when undefined."""
    return _correlation("spearman_rho", x, y)


def seed_halves(seeds: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every split of ``seeds`` into two disjoint halves (sizes ⌊n/2⌋ and ⌈n/2⌉), each split once."""
    seeds = sorted(seeds)
    half = len(seeds) // 2
    if half == 0:
        return []
    out, seen = [], set()
    for first in itertools.combinations(seeds, half):
        second = tuple(s for s in seeds if s not in first)
        key = frozenset((first, second))
        if key not in seen:
            seen.add(key)
            out.append((first, second))
    return out


def split_half_tau(
    seeds: Sequence[int], scores_for: Callable[[tuple[int, ...]], Mapping[str, float]]
) -> dict[str, float] | None:
    """Rank stability: Kendall's τ between the rankings that ``scores_for(half)`` (method -> score from
    the runs of those seeds only) gives on two disjoint halves of the seeds, for every split.

    Returns ``{"mean", "min", "splits"}`` or ``None`` with fewer than two seeds or three methods.
    """
    taus = []
    for first, second in seed_halves(seeds):
        a, b = scores_for(first), scores_for(second)
        common = sorted(set(a) & set(b))
        tau = kendall_tau([a[m] for m in common], [b[m] for m in common])
        if tau is not None:
            taus.append(tau)
    if not taus:
        return None
    return {"mean": float(np.mean(taus)), "min": float(np.min(taus)), "splits": float(len(taus))}
