"""The benchmark's leaderboard: BiBench's six track scores per method, with 95 % intervals, computed from
finished runs and ranked like for like.

**What follows BiBench** (Qin et al., ICML 2023, Sec. 3; formulas in :mod:`onebit.bench.metrics`): every
score is a ratio to the full-precision (FP) run of the same role, architecture, task, seed and
hyper-parameters (``config["hparams"]`` and the setting's data/model options); the task, architecture,
training, complexity and inference tracks are BiBench's quadratic means of those ratios.

**What is onebit's own** (BiBench is silent, or its wording breaks at this scale):

* *Groups.* A run's weight/activation bit widths (``w_bits``/``a_bits``, :mod:`onebit.bench.precision`)
  are part of its identity: ``W1A1`` runs are ranked among themselves; a weight-only ``W1A32`` run or
  HBNN's ``W1.4A1`` forms its own labelled group and is never ranked against ``W1A1``.
* *FP-baseline check.* A (task, architecture, hyper-parameters) setting whose FP accuracy is not clearly
  above chance (its 95 % lower bound must exceed chance by :data:`CHANCE_MARGIN` points) measures
  nothing; its cells are flagged with the reason and left out of every score.
* *Bounded robustness.* Per corruption the FP drop must exceed its test-set noise (else the corruption is
  reported and left out of the ratio); the binarized drop is floored at its own noise level; each ratio
  is clipped to ``[1/ROBUST_CLIP, ROBUST_CLIP]``; a binarized model not clearly above chance has no
  robustness (nothing left to lose) and is left out. The track is then BiBench's quadratic mean.
* *Intervals.* Each score is the point estimate with a 95 % percentile-bootstrap interval over seeds
  (resampled per setting, paired: a replicate uses the same seeds for a method and its FP baseline and
  for every method) and test samples (each accuracy redrawn from Binomial(n_test, p), which is exactly
  what resampling its test samples does to one accuracy; bi and FP draws are independent, which widens
  the interval slightly as their errors on shared samples are positively correlated). Complexity
  (exact counts) and inference (timing medians) carry no sampling interval.
* *Overall.* The mean of a method's per-track ranks within its group (1 = best; ties share the average
  rank), so each track counts once however large its ratios; its interval comes from the same
  replicates. A method is marked "≈ best" on a track or overall when the 95 % bootstrap interval of
  its paired difference from the best method includes 0.
* *Rank stability.* Kendall's τ between the learning-task rankings computed on two disjoint halves of
  the seeds (every split), and between the point ranking and bootstrap replicates.

A binarized run without its FP counterpart raises :class:`MissingBaselineError` naming what to add.
"""

from __future__ import annotations

import json
import math
import statistics
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from . import stats as S
from .db import ResultsDB, RunRecord, records_from
from .precision import FULL_PRECISION, PRIMARY, declared_bits, declares_real_weights, precision_label

__all__ = [
    "Baseline",
    "Cell",
    "Leaderboard",
    "LeaderboardRow",
    "MissingBaselineError",
    "Sensitivity",
    "CHANCE_MARGIN",
    "ROBUST_CLIP",
    "fmt",
    "leaderboard",
    "print_leaderboard",
]

FP = "fp"
CORRUPT_PREFIX = "corrupt/"
#: Points by which a model's accuracy (its 95 % lower bound) must beat chance to count as learned.
CHANCE_MARGIN = 10.0
#: Bound of a per-corruption robustness ratio: one corruption can credit at most this factor (or 1/it).
ROBUST_CLIP = 4.0
#: Bootstrap replicates of every interval.
BOOTSTRAP = 1000
#: Tracks whose scores are redrawn by the bootstrap (the others are exact counts or timing medians).
SAMPLED_TRACKS = ("task", "arch", "robust", "train")


class MissingBaselineError(ValueError):
    """A binarized run has no full-precision run of the same role, architecture, task, seed and
    hyper-parameters to be compared with."""


@dataclass
class Baseline:
    """The FP runs of one (architecture, task, hyper-parameters) setting and whether they learned."""

    arch: str
    family: str
    task: str
    hparams: dict[str, Any]
    seeds: list[int]
    acc_fp: float
    n_test: int | None
    n_classes: int | None
    #: None when the FP accuracy is clearly above chance; else why the setting is left out
    flag: str | None = None
    #: smallest accuracy difference (points) between two methods this test set resolves at 95 %
    resolvable: float | None = None

    @property
    def chance(self) -> float | None:
        return 100.0 / self.n_classes if self.n_classes else None


@dataclass
class Cell:
    """One ``"main"`` setting of a method in one precision group — (architecture, task,
    hyper-parameters) — over the seeds it shares with its FP baseline, with per-seed values and the
    ratios the tracks use (``None`` where a metric is missing)."""

    method: str
    arch: str
    family: str
    task: str
    hparams: dict[str, Any]
    seeds: list[int]
    precision: str = PRIMARY
    acc_bi: float | None = None
    acc_fp: float | None = None
    acc_ratio: float | None = None
    acc_bi_seeds: list[float] = field(default_factory=list)
    acc_fp_seeds: list[float] = field(default_factory=list)
    n_test: int | None = None
    n_classes: int | None = None
    #: why the cell is left out of every score (its FP baseline did not learn), or None
    excluded: str | None = None
    #: why the cell has no robustness score (the binarized model is at chance), or None
    robust_excluded: str | None = None
    epoch_time_bi: float | None = None
    epoch_time_fp: float | None = None
    time_ratio: float | None = None
    time_bi_seeds: list[float] = field(default_factory=list)
    time_fp_seeds: list[float] = field(default_factory=list)
    bops: float | None = None
    flops_bi: float | None = None
    flops_fp: float | None = None
    flops_ratio: float | None = None
    params_bi: float | None = None
    params_fp: float | None = None
    params_ratio: float | None = None
    deployable: bool = False
    latency_bi: float | None = None
    latency_fp: float | None = None
    latency_ratio: float | None = None
    file_bi: float | None = None
    file_fp: float | None = None
    storage_ratio: float | None = None
    #: corruption -> {"acc_bi", "acc_fp" (mean corrupted accuracy), "gap_bi", "gap_fp", "noise_fp",
    #: "noise_bi", "severities", "ratio" (None when the FP drop is within noise)}
    corruption: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: corruption -> (binarized, FP) corrupted accuracy per seed, averaged over the severities
    corruption_seeds: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @property
    def setting_key(self) -> tuple[str, str, str]:
        return (self.arch, self.task, json.dumps(self.hparams, sort_keys=True))


@dataclass
class Sensitivity:
    """Accuracy of a method and of FP over the hyper-parameter grid of one (architecture, task)."""

    method: str
    arch: str
    family: str
    task: str
    hparams: list[dict[str, Any]]
    #: accuracy per grid point (mean over its seeds), aligned with ``hparams``
    acc_bi: list[float]
    acc_fp: list[float]
    std_bi: float
    std_fp: float
    ratio: float
    precision: str = PRIMARY


@dataclass
class DeployCell:
    """A method's inference form on one deployment network at one thread count (role ``"inference"``)."""

    method: str
    precision: str
    network: str
    threads: int
    deployable: bool
    latency_bi: float | None = None
    latency_fp: float | None = None
    latency_lce: float | None = None
    file_bi: float | None = None
    file_fp: float | None = None

    @property
    def latency_ratio(self) -> float | None:
        return _ratio(self.latency_fp, self.latency_bi) if self.deployable else None

    @property
    def storage_ratio(self) -> float | None:
        return _ratio(self.file_fp, self.file_bi) if self.deployable else None


@dataclass
class LeaderboardRow:
    """A method's track scores in one precision group (keys of :data:`onebit.bench.metrics.TRACKS`;
    ``None`` = no data), their 95 % intervals, per-track ranks, and the overall mean rank."""

    method: str
    scores: dict[str, float | None]
    overall: float | None
    rank: int | None
    n_runs: int
    group: str = PRIMARY
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: tracks (and "overall") on which the method is not significantly different from the group's best
    tied_best: dict[str, bool] = field(default_factory=dict)
    track_ranks: dict[str, float] = field(default_factory=dict)
    overall_ci: tuple[float, float] | None = None
    by_task: dict[str, float] = field(default_factory=dict)
    by_family: dict[str, float] = field(default_factory=dict)
    by_corruption: dict[str, float] = field(default_factory=dict)
    time_ratio: float | None = None
    std_ratio: float | None = None
    flops_ratio: float | None = None
    params_ratio: float | None = None
    latency_ratio: float | None = None
    storage_ratio: float | None = None


@dataclass
class Leaderboard:
    """Scores of every binarized method, per precision group (``rows``: the primary group first, each
    group best first) and what supports them."""

    rows: list[LeaderboardRow]
    cells: list[Cell]
    sensitivity: list[Sensitivity]
    #: suites, code versions, machines, run counts, time span, groups, rank stability, ...
    meta: dict[str, Any]
    baselines: list[Baseline] = field(default_factory=list)
    deployment: list[DeployCell] = field(default_factory=list)
    tracks: tuple[str, ...] = M.TRACKS

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.rows))

    def group_rows(self, group: str) -> list[LeaderboardRow]:
        return [r for r in self.rows if r.group == group]

    def row(self, method: str, group: str | None = None) -> LeaderboardRow:
        for r in self.rows:
            if r.method == method and (group is None or r.group == group):
                return r
        raise KeyError(f"no method {method!r} in the leaderboard; methods: {[r.method for r in self.rows]}")

    def track_available(self, track: str) -> bool:
        """Whether any method has a score on ``track``."""
        return any(r.scores.get(track) is not None for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serializable) of the whole leaderboard."""
        return {
            "tracks": list(self.tracks),
            "rows": [asdict(r) for r in self.rows],
            "cells": [asdict(c) for c in self.cells],
            "sensitivity": [asdict(s) for s in self.sensitivity],
            "baselines": [asdict(b) for b in self.baselines],
            "deployment": [asdict(d) for d in self.deployment],
            "meta": dict(self.meta),
        }


def fmt(value: float | None, digits: int = 3) -> str:
    """A score for display: ``None`` (no data) is an em dash, never 0."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def fmt_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``value [lo, hi]``, or the value alone without an interval."""
    if value is None or ci is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


# ---------------------------------------------------------------------------------------------------
# grouping runs


def _hkey(record: RunRecord) -> str:
    """What, besides method, arch, task and seed, a run and its baseline must share: the hyper-parameters
    and the setting's data/model options (two settings may put the same arch on the same task)."""
    setting = record.config.get("setting", {})
    options = {k: setting[k] for k in ("data_options", "model_options") if setting.get(k)}
    return json.dumps({"hparams": record.config.get("hparams", {}), **options}, sort_keys=True)


def _precision(record: RunRecord) -> str:
    """The run's group label: measured bit widths, else the ones its method and options declare."""
    m = record.metrics
    options = record.config.get("layer_options")
    # the measured widths hold when the final stage ran, and for a deployment run (it times the finalized form)
    trained_to_final = bool(record.config.get("final_stage")) or record.role == "inference"
    if not trained_to_final and declares_real_weights(record.method, options):  # stored as W1 before the rule
        return precision_label(FULL_PRECISION, m.get("a_bits", declared_bits(record.method, options)[1]))
    if "w_bits" in m and "a_bits" in m:
        return precision_label(m["w_bits"], m["a_bits"])
    if record.method == FP:
        return "W32A32"
    try:
        return precision_label(*declared_bits(record.method, record.config.get("layer_options")))
    except ValueError:  # a method this version does not know (results of another version)
        return "W?A?"


def _training_setup(records: list[RunRecord]) -> list[str]:
    """How the main runs of each setting were trained: epochs, where the binarized runs start (their FP
    run's weights or scratch), and the two-stage methods' split of the epochs."""
    main = [r for r in records if r.role == "main"]
    out = []
    for task, arch in sorted({(r.task, r.arch) for r in main}):
        runs = [r for r in main if (r.task, r.arch) == (task, arch)]
        hps = [r.config.get("hparams", {}) for r in runs]
        epochs = sorted({hp["epochs"] for hp in hps if "epochs" in hp})
        starts = sorted({"their FP run" if hp.get("init") == "fp" else "scratch"
                         for r, hp in zip(runs, hps) if r.method != FP})
        staged = sorted({f"{r.method} {fs['first_epochs']} + {fs['epochs']}"
                         for r in runs if (fs := r.config.get("final_stage"))})
        text = f"{task} × {arch}: {', '.join(map(str, epochs)) or '?'} epochs"
        text += f", binarized runs start from {' or '.join(starts)}" if starts else ""
        out.append(text + (f" (two stages: {', '.join(staged)})" if staged else ""))
    return out


def _avg(records: Iterable[RunRecord], name: str) -> float | None:
    vals = [r.metrics[name] for r in records if name in r.metrics]
    return sum(vals) / len(vals) if vals else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0 or num < 0:
        return None
    return num / den


def _derived(records: list[RunRecord], name: str, parts: tuple[str, str], combine) -> float | None:
    """Mean of metric ``name`` over ``records``, computed as ``combine(*parts)`` where a record lacks it
    (the first part defaults to 0: a full-precision run has no binary ops or params)."""
    vals = []
    for r in records:
        m = r.metrics
        if name in m:
            vals.append(m[name])
        elif parts[1] in m:
            vals.append(combine(m.get(parts[0], 0.0), m[parts[1]]))
    return sum(vals) / len(vals) if vals else None


def _corruptions(records: list[RunRecord]) -> dict[str, dict[str, float]]:
    """corruption -> severity -> accuracy, averaged over ``records``."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for name, value in r.metrics.items():
            if name.startswith(CORRUPT_PREFIX):
                parts = name.split("/")
                if len(parts) == 3:
                    acc[parts[1]][parts[2]].append(value)
    return {c: {s: sum(v) / len(v) for s, v in sev.items()} for c, sev in acc.items()}


def _describe(role: str, arch: str, task: str, seed: int | None, hkey: str) -> str:
    seed_part = f", seed={seed}" if seed is not None else ""
    key = json.loads(hkey)
    options = "".join(
        f", {k}={json.dumps(key[k], sort_keys=True)}" for k in ("data_options", "model_options") if k in key
    )
    hparams = json.dumps(key["hparams"], sort_keys=True)
    return f"(role={role}, arch={arch}, task={task}{seed_part}, hparams={hparams}{options})"


def _missing_error(missing: list[str], source: str) -> MissingBaselineError:
    shown = "\n  ".join(missing[:10]) + (f"\n  … and {len(missing) - 10} more" if len(missing) > 10 else "")
    return MissingBaselineError(
        f"{source}: {len(missing)} full-precision baseline run(s) missing — a binarized run is compared with "
        f"the '{FP}' run of the same role, arch, task, seed and hparams, and none was found for:\n  {shown}\n"
        f"Add '{FP}' to the suite's methods (for the sensitivity grid too, if the suite has one) and run "
        "`onebit bench SUITE --out DIR` again: finished runs are skipped, failed ones (a baseline that "
        "crashed counts as missing) are retried."
    )


def _seed_mean(by_seed: dict[int, list[RunRecord]], seeds: list[int], name: str) -> list[float] | None:
    """Per seed, the mean of metric ``name`` over that seed's records; None if a seed lacks it."""
    out = []
    for s in seeds:
        vals = [r.metrics[name] for r in by_seed[s] if name in r.metrics]
        if not vals:
            return None
        out.append(sum(vals) / len(vals))
    return out


def _count(records: list[RunRecord], name: str) -> int | None:
    vals = {int(r.metrics[name]) for r in records if name in r.metrics}
    return min(vals) if vals else None


# ---------------------------------------------------------------------------------------------------
# FP-baseline check


def clearly_above_chance(acc: float, n_test: int | None, n_classes: int | None, seeds: int = 1) -> str | None:
    """None when accuracy ``acc`` (%, mean of ``seeds`` runs on ``n_test`` samples) is clearly above
    chance — its 95 % binomial lower bound exceeds ``100/n_classes`` by :data:`CHANCE_MARGIN` points —
    else the reason it is not. Without the class count, only the margin over 0 is checked."""
    chance = 100.0 / n_classes if n_classes else 0.0
    lower = acc - (S.Z95 * S.binomial_se(acc, n_test * max(1, seeds)) if n_test else 0.0)
    if lower > chance + CHANCE_MARGIN:
        return None
    what = f"chance {chance:.1f}%" if n_classes else "chance (class count unknown)"
    return (
        f"accuracy {acc:.1f}% (95% lower bound {lower:.1f}%) is not {CHANCE_MARGIN:g} points above {what}"
    )


def _baselines(fp_groups: dict[tuple[str, str, str], dict[int, list[RunRecord]]]) -> dict[tuple, Baseline]:
    out = {}
    for (arch, task, hkey), by_seed in fp_groups.items():
        seeds = sorted(by_seed)
        records = [r for s in seeds for r in by_seed[s]]
        acc = _avg(records, "acc")
        if acc is None:
            continue
        n_test, n_classes = _count(records, "n_test"), _count(records, "n_classes")
        base = Baseline(arch, records[0].family, task, json.loads(hkey)["hparams"], seeds, acc, n_test, n_classes)
        flag = clearly_above_chance(acc, n_test, n_classes, len(seeds))
        base.flag = f"FP baseline {flag}: the setting measures nothing and is left out of every score" if flag else None
        if n_test:
            base.resolvable = S.resolvable_difference(acc, n_test, len(seeds))
        out[(arch, task, hkey)] = base
    return out


# ---------------------------------------------------------------------------------------------------
# cells


def _robustness(cell: Cell, bi: dict[int, list[RunRecord]], fp: dict[int, list[RunRecord]], eps: float) -> None:
    """Fill ``cell.corruption`` with the bounded per-corruption ratios (see the module docstring)."""
    per_seed_bi = {s: _corruptions(bi[s]) for s in cell.seeds}
    per_seed_fp = {s: _corruptions(fp[s]) for s in cell.seeds}
    names = set.intersection(*(set(per_seed_bi[s]) & set(per_seed_fp[s]) for s in cell.seeds))
    k, n = len(cell.seeds), cell.n_test
    for c in sorted(names):
        sev = sorted(set.intersection(*(set(per_seed_bi[s][c]) & set(per_seed_fp[s][c]) for s in cell.seeds)))
        if not sev:
            continue
        a_bi = [statistics.fmean(per_seed_bi[s][c][v] for v in sev) for s in cell.seeds]
        a_fp = [statistics.fmean(per_seed_fp[s][c][v] for v in sev) for s in cell.seeds]
        cell.corruption_seeds[c] = (a_bi, a_fp)
        mean_bi, mean_fp = statistics.fmean(a_bi), statistics.fmean(a_fp)
        g_bi, g_fp = M.corruption_gap(cell.acc_bi, mean_bi), M.corruption_gap(cell.acc_fp, mean_fp)
        if n:
            noise_fp = S.gap_noise(cell.acc_fp, n * k, mean_fp, n * len(sev) * k)
            noise_bi = S.gap_noise(cell.acc_bi, n * k, mean_bi, n * len(sev) * k)
        else:  # test-set size unknown (older results): the fixed floor, and no corruption left out
            noise_fp, noise_bi = 0.0, eps
        entry: dict[str, Any] = {
            "acc_bi": mean_bi, "acc_fp": mean_fp, "gap_bi": g_bi, "gap_fp": g_fp,
            "noise_fp": noise_fp, "noise_bi": max(noise_bi, eps), "severities": len(sev), "ratio": None,
        }
        if g_fp > noise_fp and cell.robust_excluded is None:
            entry["ratio"] = M.bounded_robustness_ratio(g_fp, g_bi, entry["noise_bi"], ROBUST_CLIP)
        cell.corruption[c] = entry


def _cell(key: tuple, by_seed: dict, fp_by_seed: dict, seeds: list[int], base: Baseline | None, eps: float) -> Cell:
    method, precision, arch, task, hkey = key
    bi = [r for s in seeds for r in by_seed[s]]
    fp = [r for s in seeds for r in fp_by_seed[s]]
    cell = Cell(method, arch, bi[0].family, task, json.loads(hkey)["hparams"], seeds, precision)
    cell.n_test, cell.n_classes = _count(bi + fp, "n_test"), _count(bi + fp, "n_classes")
    acc_bi, acc_fp = _seed_mean(by_seed, seeds, "acc"), _seed_mean(fp_by_seed, seeds, "acc")
    if acc_bi is not None and acc_fp is not None:
        cell.acc_bi_seeds, cell.acc_fp_seeds = acc_bi, acc_fp
        cell.acc_bi, cell.acc_fp = statistics.fmean(acc_bi), statistics.fmean(acc_fp)
        if cell.acc_fp > 0:
            cell.acc_ratio = M.accuracy_ratio(cell.acc_bi, cell.acc_fp)
    if base is not None and base.flag:
        cell.excluded = base.flag
    t_bi, t_fp = _seed_mean(by_seed, seeds, "epoch_time_s"), _seed_mean(fp_by_seed, seeds, "epoch_time_s")
    if t_bi is not None and t_fp is not None:
        cell.time_bi_seeds, cell.time_fp_seeds = t_bi, t_fp
        cell.epoch_time_bi, cell.epoch_time_fp = statistics.fmean(t_bi), statistics.fmean(t_fp)
        cell.time_ratio = _ratio(cell.epoch_time_fp, cell.epoch_time_bi)
    cell.bops = _avg(bi, "bops")
    cell.flops_bi = _derived(bi, "flops_bibench", ("bops", "fp_macs"), M.bibench_flops)
    cell.flops_fp = _derived(fp, "flops_bibench", ("bops", "fp_macs"), M.bibench_flops)
    cell.flops_ratio = _ratio(cell.flops_fp, cell.flops_bi)
    cell.params_bi = _derived(bi, "params_bibench", ("params_1bit", "params_32bit"), M.bibench_params)
    cell.params_fp = _derived(fp, "params_bibench", ("params_1bit", "params_32bit"), M.bibench_params)
    cell.params_ratio = _ratio(cell.params_fp, cell.params_bi)
    _latency(cell, bi, fp)
    if cell.acc_bi is not None and cell.acc_fp is not None:
        at_chance = clearly_above_chance(cell.acc_bi, cell.n_test, cell.n_classes, len(seeds))
        if at_chance:
            cell.robust_excluded = f"binarized {at_chance}: it has no accuracy left to lose"
        _robustness(cell, by_seed, fp_by_seed, eps)
    return cell


def _latency(cell: Cell, bi: list[RunRecord], fp: list[RunRecord]) -> None:
    # deployable only if EVERY seed's model was: the latency must describe all of them
    cell.deployable = all(r.metrics.get("deployable", 0.0) >= 0.5 for r in bi)
    if not cell.deployable:
        return
    cell.latency_bi = _avg(bi, "latency_ms")
    # the runner times the same architecture in torch fp32 interleaved with the packed model
    # (``latency_fp32_ms``): same process, same load, so that is the FP time; the fp run's own is the fallback
    paired = all("latency_fp32_ms" in r.metrics for r in bi)
    cell.latency_fp = _avg(bi, "latency_fp32_ms") if paired else _avg(fp, "latency_ms")
    cell.file_bi, cell.file_fp = _avg(bi, "file_bytes"), _avg(fp, "file_bytes")
    cell.latency_ratio = _ratio(cell.latency_fp, cell.latency_bi)
    cell.storage_ratio = _ratio(cell.file_fp, cell.file_bi)


def _main_cells(records: list[RunRecord], eps: float, missing: list[str]) -> tuple[list[Cell], dict[tuple, Baseline]]:
    groups: dict[tuple, dict[int, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    fp_groups: dict[tuple, dict[int, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.role != "main":
            continue
        if r.method == FP:
            fp_groups[(r.arch, r.task, _hkey(r))][r.seed].append(r)
        else:
            groups[(r.method, _precision(r), r.arch, r.task, _hkey(r))][r.seed].append(r)
    baselines = _baselines(fp_groups)
    cells = []
    for key, by_seed in sorted(groups.items()):
        _, _, arch, task, hkey = key
        fp_by_seed = fp_groups.get((arch, task, hkey), {})
        missing.extend(_describe("main", arch, task, s, hkey) for s in sorted(by_seed) if s not in fp_by_seed)
        seeds = [s for s in sorted(by_seed) if s in fp_by_seed]  # all of them unless strict=False
        if seeds:
            cells.append(_cell(key, by_seed, fp_by_seed, seeds, baselines.get((arch, task, hkey)), eps))
    return cells, baselines


def _sensitivity(records: list[RunRecord], eps: float, missing: list[str]) -> list[Sensitivity]:
    groups: dict[tuple, dict[str, dict[int, list[RunRecord]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records:
        if r.role == "sensitivity" and "acc" in r.metrics:
            precision = "W32A32" if r.method == FP else _precision(r)
            groups[(r.method, precision, r.arch, r.task)][_hkey(r)][r.seed].append(r)
    fp_grids = {(a, t): g for (m, _, a, t), g in groups.items() if m == FP}
    out = []
    for (method, precision, arch, task), grid in sorted(groups.items()):
        if method == FP:
            continue
        fp_grid = fp_grids.get((arch, task), {})
        absent = [(h, s) for h in sorted(grid) for s in sorted(grid[h]) if s not in fp_grid.get(h, {})]
        missing.extend(_describe("sensitivity", arch, task, s, h) for h, s in absent)
        common = {h: [s for s in grid[h] if s in fp_grid.get(h, {})] for h in grid}
        keys = sorted(h for h, seeds in common.items() if seeds)
        if len(keys) < 2:
            continue  # a standard deviation needs two grid points
        acc_bi = [statistics.fmean(r.metrics["acc"] for s in common[h] for r in grid[h][s]) for h in keys]
        acc_fp = [statistics.fmean(r.metrics["acc"] for s in common[h] for r in fp_grid[h][s]) for h in keys]
        std_bi, std_fp = statistics.pstdev(acc_bi), statistics.pstdev(acc_fp)
        family = next(iter(next(iter(grid.values())).values()))[0].family
        ratio = max(std_fp, eps) / max(std_bi, eps)  # a method that never varies: at most std_fp/eps steadier
        out.append(Sensitivity(method, arch, family, task, [json.loads(h) for h in keys], acc_bi, acc_fp,
                               std_bi, std_fp, ratio, precision))
    return out


def _deployment(records: list[RunRecord]) -> list[DeployCell]:
    """The inference track's measurements on deployment networks (runs of role ``"inference"``)."""
    out = []
    for r in records:
        if r.role != "inference" or r.method == FP:
            continue
        m = r.metrics
        threads = sorted({int(k.split("/t")[-1]) for k in m if k.startswith("latency_ms/t")})
        for t in threads or [0]:
            out.append(DeployCell(
                r.method, _precision(r), r.arch, t, m.get("deployable", 0.0) >= 0.5,
                m.get(f"latency_ms/t{t}"), m.get(f"latency_fp32_ms/t{t}"), m.get(f"latency_lce_ms/t{t}"),
                m.get("file_bytes"), m.get("file_fp32_bytes"),
            ))
    return sorted(out, key=lambda d: (d.precision, d.method, d.network, d.threads))


# ---------------------------------------------------------------------------------------------------
# bootstrap replicates of the sampled quantities


def _rng(seed: int, *key: Any) -> np.random.Generator:
    """A generator determined by ``key``: the same key gives the same draws (so the FP draws of a
    setting, and the resampled seeds, are shared by every method's replicates)."""
    return np.random.default_rng([seed, zlib.crc32(json.dumps(key, default=str).encode())])


@dataclass
class _Draws:
    """One cell's bootstrap replicates (arrays of length B)."""

    acc_ratio: np.ndarray | None = None
    time_ratio: np.ndarray | None = None
    corruption: dict[str, np.ndarray] = field(default_factory=dict)


def _replicate(cell: Cell, b: int, seed: int) -> _Draws:
    out = _Draws()
    k = len(cell.seeds)
    setting = (*cell.setting_key, tuple(cell.seeds))
    idx = _rng(seed, "seeds", *setting).integers(0, k, size=(b, k))

    def resampled(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, idx, axis=1).mean(axis=1)

    if cell.acc_bi_seeds:
        clean_bi = S.binomial_draws(_rng(seed, "bi", cell.method, cell.precision, *setting),
                                    np.array(cell.acc_bi_seeds), cell.n_test, b)
        clean_fp = S.binomial_draws(_rng(seed, "fp", *setting), np.array(cell.acc_fp_seeds), cell.n_test, b)
        mean_bi, mean_fp = resampled(clean_bi), resampled(clean_fp)
        out.acc_ratio = mean_bi / np.maximum(mean_fp, 1e-9)
        for c, entry in cell.corruption.items():
            if entry["ratio"] is None:
                continue
            a_bi, a_fp = cell.corruption_seeds[c]
            n = cell.n_test * entry["severities"] if cell.n_test else None
            corr_bi = S.binomial_draws(_rng(seed, "bi", c, cell.method, cell.precision, *setting), np.array(a_bi), n, b)
            corr_fp = S.binomial_draws(_rng(seed, "fp", c, *setting), np.array(a_fp), n, b)
            gap_bi, gap_fp = mean_bi - resampled(corr_bi), mean_fp - resampled(corr_fp)
            out.corruption[c] = M.bounded_robustness_ratio(gap_fp, gap_bi, entry["noise_bi"], ROBUST_CLIP)
    if cell.time_bi_seeds:
        t_bi = np.broadcast_to(np.array(cell.time_bi_seeds), (b, k))
        t_fp = np.broadcast_to(np.array(cell.time_fp_seeds), (b, k))
        out.time_ratio = resampled(t_fp) / np.maximum(resampled(t_bi), 1e-12)
    return out


# ---------------------------------------------------------------------------------------------------
# track scores (the same code on floats — point estimates — and on arrays — bootstrap replicates)


def _mean(values: list) -> Any:
    return sum(values) / len(values)


def _qmean(values: list) -> Any:
    return np.sqrt(_mean([v * v for v in values]))


def _group_means(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list] = defaultdict(list)
    for key, value in pairs:
        groups[key].append(value)
    return {k: _mean(v) for k, v in sorted(groups.items())}


def _accuracy_parts(cells: list[Cell], get: Callable[[Cell], Any]) -> tuple[dict, dict]:
    pairs = [(c, get(c)) for c in cells if c.excluded is None and c.acc_ratio is not None]
    return _group_means([(c.task, v) for c, v in pairs]), _group_means([(c.family, v) for c, v in pairs])


def _robust_parts(cells: list[Cell], get: Callable[[Cell, str], Any]) -> dict[str, Any]:
    pairs = [
        (name, get(c, name))
        for c in cells
        if c.excluded is None
        for name, entry in c.corruption.items()
        if entry["ratio"] is not None
    ]
    return _group_means(pairs)


def _train_score(times: list, stds: list[float]) -> Any:
    parts = [p for p in (_mean(times) if times else None, _mean(stds) if stds else None) if p is not None]
    return _qmean(parts) if parts else None


def _point_scores(cells: list[Cell], sens: list[Sensitivity], deploy: list[DeployCell], row: LeaderboardRow) -> None:
    by_task, by_family = _accuracy_parts(cells, lambda c: c.acc_ratio)
    by_corr = _robust_parts(cells, lambda c, n: c.corruption[n]["ratio"])
    live = [c for c in cells if c.excluded is None]

    def collect(attr: str, only: Iterable[Cell] = live) -> list[float]:
        return [getattr(c, attr) for c in only if getattr(c, attr) is not None]

    times, stds = collect("time_ratio"), [s.ratio for s in sens]
    flops, params = collect("flops_ratio"), collect("params_ratio")
    if deploy:  # the deployment networks decide the inference track when the suite measured them
        usable = [d for d in deploy if d.latency_ratio is not None and d.storage_ratio is not None]
        lat, sto = [d.latency_ratio for d in usable], [d.storage_ratio for d in usable]
    else:
        deployed = [c for c in live if c.deployable and c.latency_ratio is not None and c.storage_ratio is not None]
        lat, sto = collect("latency_ratio", deployed), collect("storage_ratio", deployed)
    row.scores = {
        "task": float(_qmean(list(by_task.values()))) if by_task else None,
        "arch": float(_qmean(list(by_family.values()))) if by_family else None,
        "robust": float(_qmean(list(by_corr.values()))) if by_corr else None,
        "train": float(_train_score(times, stds)) if (times or stds) else None,
        "comp": M.complexity_score(flops, params) if flops and params else None,
        "infer": M.inference_score(lat, sto) if lat else None,
    }
    row.by_task, row.by_family, row.by_corruption = by_task, by_family, by_corr
    row.time_ratio = M.mean(times) if times else None
    row.std_ratio = M.mean(stds) if stds else None
    row.flops_ratio = M.mean(flops) if flops else None
    row.params_ratio = M.mean(params) if params else None
    row.latency_ratio = M.mean(lat) if lat else None
    row.storage_ratio = M.mean(sto) if sto else None


def _replicate_scores(cells: list[Cell], sens: list[Sensitivity], draws: dict[int, _Draws]) -> dict[str, np.ndarray]:
    """The sampled tracks' scores in every bootstrap replicate (arrays of length B)."""
    out = {}
    by_task, by_family = _accuracy_parts(cells, lambda c: draws[id(c)].acc_ratio)
    if by_task:
        out["task"] = _qmean(list(by_task.values()))
        out["arch"] = _qmean(list(by_family.values()))
    by_corr = _robust_parts(cells, lambda c, n: draws[id(c)].corruption[n])
    if by_corr:
        out["robust"] = _qmean(list(by_corr.values()))
    times = [draws[id(c)].time_ratio for c in cells if c.excluded is None and draws[id(c)].time_ratio is not None]
    if times or sens:
        out["train"] = np.asarray(_train_score(times, [s.ratio for s in sens]), dtype=float)
    return out


# ---------------------------------------------------------------------------------------------------
# ranking within a group


def _rank_group(rows: list[LeaderboardRow], reps: dict[str, dict[str, np.ndarray]], tracks: tuple[str, ...], b: int):
    """Per-track ranks, the overall mean rank with its interval, and the "≈ best" marks."""
    from scipy.stats import rankdata

    rank_reps: dict[str, dict[str, np.ndarray]] = {r.method: {} for r in rows}
    for t in tracks:
        have = [r for r in rows if r.scores.get(t) is not None]
        if not have:
            continue
        point = S.ranks({r.method: r.scores[t] for r in have})
        mat = np.stack([np.broadcast_to(np.asarray(reps[r.method].get(t, r.scores[t]), dtype=float), (b,))
                        for r in have])
        rep_ranks = rankdata(-mat, axis=0, method="average")
        best = max(have, key=lambda r: r.scores[t])
        for i, r in enumerate(have):
            r.track_ranks[t] = point[r.method]
            rank_reps[r.method][t] = rep_ranks[i]
            if t in reps[r.method] and t in reps[best.method]:
                r.ci[t] = S.percentile_ci(mat[i])
                diff = mat[i] - mat[have.index(best)]
                r.tied_best[t] = r is best or not S.differs_from_zero(diff)
            else:
                r.tied_best[t] = r.scores[t] == best.scores[t]
    overall_reps = {}
    for r in rows:
        if r.track_ranks:
            r.overall = float(np.mean(list(r.track_ranks.values())))
            overall_reps[r.method] = np.mean(np.stack(list(rank_reps[r.method].values())), axis=0)
            r.overall_ci = S.percentile_ci(overall_reps[r.method])
    rows.sort(key=lambda r: (r.overall is None, r.overall if r.overall is not None else 0.0, r.method))
    ranked = [r for r in rows if r.overall is not None]
    for i, r in enumerate(ranked):
        r.rank = i + 1
        best = ranked[0]
        diff = overall_reps[r.method] - overall_reps[best.method]
        r.tied_best["overall"] = r is best or not S.differs_from_zero(diff)


# ---------------------------------------------------------------------------------------------------
# rank stability and the whole leaderboard


def _task_scores_on(cells: list[Cell], seeds: tuple[int, ...]) -> dict[str, float]:
    """Each method's learning-task score from the runs of ``seeds`` only (point estimates)."""
    per_method: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for c in cells:
        if c.excluded is not None or not c.acc_bi_seeds:
            continue
        pos = [i for i, s in enumerate(c.seeds) if s in seeds]
        if not pos:
            continue
        fp = statistics.fmean(c.acc_fp_seeds[i] for i in pos)
        if fp > 0:
            per_method[c.method].append((c.task, statistics.fmean(c.acc_bi_seeds[i] for i in pos) / fp))
    return {m: float(_qmean(list(_group_means(pairs).values()))) for m, pairs in per_method.items()}


def _stability(rows: list[LeaderboardRow], cells: list[Cell], reps: dict[str, dict[str, np.ndarray]]) -> dict:
    seeds = sorted({s for c in cells for s in c.seeds})
    out: dict[str, Any] = {"seeds": seeds, "split_half": S.split_half_tau(seeds, lambda h: _task_scores_on(cells, h))}
    have = [r for r in rows if r.scores.get("task") is not None and "task" in reps.get(r.method, {})]
    if len(have) >= 3:
        point = [r.scores["task"] for r in have]
        mat = np.stack([reps[r.method]["task"] for r in have])
        taus = [S.kendall_tau(point, list(mat[:, i])) for i in range(mat.shape[1])]
        taus = [t for t in taus if t is not None]
        out["bootstrap_median"] = float(np.median(taus)) if taus else None
    return out


def _group_order(groups: Iterable[str]) -> list[str]:
    return sorted(set(groups), key=lambda g: (g != PRIMARY, g))


def leaderboard(
    source: str | Path | ResultsDB | Iterable[RunRecord],
    *,
    overall: str = "rank",
    eps: float = M.DEFAULT_EPS,
    strict: bool = True,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> Leaderboard:
    """Compute the leaderboard from finished runs: a results directory or database file, an open
    :class:`~onebit.bench.db.ResultsDB`, or records.

    ``overall`` is ``"rank"`` (the mean of per-track ranks within a group; the only kind since the
    geometric mean of unbounded ratios let one track decide — the old names are refused with that
    reason); ``eps`` is the floor, in points, for gaps and standard deviations used as denominators when
    the test-set size is unknown; ``bootstrap`` the number of replicates of every interval (``seed``
    fixes them). Raises :class:`MissingBaselineError` when a binarized run lacks its full-precision
    counterpart — unless ``strict=False``, which leaves such runs out and lists them in
    ``meta["missing_baselines"]`` — and ``ValueError`` when there are no finished runs.
    """
    if overall != "rank":
        raise ValueError(
            f"overall={overall!r}: the overall score is the mean of per-track ranks ('rank'); means of the raw "
            "track ratios ('geometric', 'quadratic', 'arithmetic') are unbounded and let one track decide"
        )
    if bootstrap < 10:
        raise ValueError(f"bootstrap must be at least 10 replicates, got {bootstrap}")
    where = str(source) if isinstance(source, str | Path) else "results"
    records = [r for r in records_from(source) if r.status == "done"]
    if not records:
        raise ValueError(f"{where}: no finished runs to score; run `onebit bench SUITE --out DIR` first")
    missing: list[str] = []
    cells, baselines = _main_cells(records, eps, missing)
    sens = _sensitivity(records, eps, missing)
    if missing and strict:
        raise _missing_error(missing, where)
    deploy = _deployment(records)
    draws = {id(c): _replicate(c, bootstrap, seed) for c in cells}

    runs_per_key: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        if r.method != FP:
            runs_per_key[(r.method, _precision(r))] += 1
    keys = sorted({(c.method, c.precision) for c in cells} | {(s.method, s.precision) for s in sens}
                  | {(d.method, d.precision) for d in deploy})
    rows, stability = [], {}
    for group in _group_order(g for _, g in keys):
        group_rows, reps = [], {}
        for method in sorted(m for m, g in keys if g == group):
            row = LeaderboardRow(method, {}, None, None, runs_per_key[(method, group)], group)
            mcells = [c for c in cells if (c.method, c.precision) == (method, group)]
            msens = [s for s in sens if (s.method, s.precision) == (method, group)]
            _point_scores(mcells, msens, [d for d in deploy if (d.method, d.precision) == (method, group)], row)
            reps[method] = _replicate_scores(mcells, msens, draws)
            group_rows.append(row)
        _rank_group(group_rows, reps, M.TRACKS, bootstrap)
        stability[group] = _stability(group_rows, [c for c in cells if c.precision == group], reps)
        rows += group_rows

    roles: dict[str, int] = defaultdict(int)
    for r in records:
        roles[r.role] += 1
    meta = {
        "suites": sorted({r.suite for r in records}),
        "code_versions": sorted({r.code_version for r in records if r.code_version}),
        "machines": sorted({r.machine for r in records if r.machine}),
        "n_runs": len(records),
        "n_runs_by_role": dict(sorted(roles.items())),
        "n_fp_runs": sum(1 for r in records if r.method == FP),
        "tasks": sorted({r.task for r in records if r.role != "inference"}),
        "archs": sorted({r.arch for r in records if r.role != "inference"}),
        "families": sorted({r.family for r in records}),
        "training": _training_setup(records),
        # 0 marks an unknown time (records built by hand): the span covers the runs that have one
        "started": min((r.started for r in records if r.started > 0), default=0.0),
        "finished": max((r.finished for r in records if r.finished > 0), default=0.0),
        "overall": overall,
        "eps": eps,
        "bootstrap": bootstrap,
        "missing_baselines": missing,
        "stability": stability,
        "infer_source": "deployment networks" if deploy else "trained models",
    }
    return Leaderboard(rows=rows, cells=cells, sensitivity=sens, meta=meta,
                       baselines=sorted(baselines.values(), key=lambda b: (b.task, b.arch)), deployment=deploy)


def print_leaderboard(lb: Leaderboard, console: Any = None) -> None:
    """Print each group's leaderboard as a ``rich`` table (to ``console``, default a new Console)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console if console is not None else Console()
    for group in lb.groups:
        table = Table(
            title=f"{group}: BiBench track scores (ratio to FP, higher is better)",
            caption="rank = mean per-track rank (onebit's, not BiBench's); ≈ = not significantly different "
            "from the best (95% bootstrap); — = no data",
            box=box.SIMPLE_HEAVY,  # no vertical rules and shared padding: the table fits an 80-column terminal
            collapse_padding=True,
            pad_edge=False,
        )
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("method", no_wrap=True)
        for t in lb.tracks:
            table.add_column(t, justify="right", no_wrap=True)
        table.add_column("rank", justify="right", style="bold", no_wrap=True)
        for r in lb.group_rows(group):
            table.add_row(
                (str(r.rank) if r.rank is not None else "—")
                + ("≈" if r.tied_best.get("overall") and r.rank != 1 else ""),
                r.method,
                *(fmt(r.scores.get(t)) for t in lb.tracks),
                fmt(r.overall, 2),
            )
        console.print(table)
