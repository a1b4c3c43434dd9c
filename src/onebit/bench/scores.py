"""The benchmark's leaderboard: BiBench's six track scores per method, computed from finished runs.

A binarized run is compared with the full-precision run (``method == "fp"``) of the same role,
architecture, task, seed and hyper-parameters (``config["hparams"]``). Runs are averaged over seeds
into *cells* — one (method, architecture, task, hyper-parameters) setting — and the formulas of
:mod:`onebit.bench.metrics` turn the cells' ratios into track scores:

* **task / arch** (BiBench 3.1 / 3.2): accuracy ratios ``A_bi / A_fp`` of the ``"main"`` cells,
  averaged per task (per architecture family), then the quadratic mean over tasks (families);
* **robust** (3.3): per corruption, the accuracy gap ``G = A_clean − A_corrupt`` with the corrupted
  accuracy averaged over the severities both runs have, and the ratio ``G_fp / G_bi``;
* **train** (3.4): epoch-time ratios ``T_fp / T_bi`` of the main cells, and per (architecture, task)
  the ratio ``std_fp / std_bi`` of the accuracy's standard deviation over the ``"sensitivity"`` grid
  (each grid point averaged over its seeds; population standard deviation);
* **comp** (3.5): ``FLOPs_fp / FLOPs_bi`` and ``Params_fp / Params_bi`` in BiBench's counting;
* **infer** (3.6): latency and file-size ratios, torch fp32 over onebit's packed engine, for the cells
  whose binarized model is deployable (the FP latency is the ``latency_fp32_ms`` the runner measures
  interleaved with the packed model when the run has it, else the fp run's ``latency_ms``); a method
  with none has no inference score (``None``, shown as "—"), never 0.

The overall score is :func:`onebit.bench.metrics.overall_score` (ours, documented there). A binarized
run without its full-precision counterpart raises :class:`MissingBaselineError` naming what to add.
Runs are matched on their hyper-parameters and on the setting's ``data_options``/``model_options``
(``config["setting"]``), so two settings that put the same architecture on the same task stay apart.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnebitError
from . import metrics as M
from .db import ResultsDB, RunRecord, records_from

__all__ = [
    "Cell",
    "Leaderboard",
    "LeaderboardRow",
    "MissingBaselineError",
    "Sensitivity",
    "fmt",
    "leaderboard",
    "print_leaderboard",
]

FP = "fp"
CORRUPT_PREFIX = "corrupt/"


class MissingBaselineError(OnebitError, ValueError):
    """A binarized run has no full-precision run of the same role, architecture, task, seed and
    hyper-parameters to be compared with."""


@dataclass
class Cell:
    """One ``"main"`` setting of a method — (architecture, task, hyper-parameters) — averaged over the
    seeds it shares with its full-precision baseline, with the ratios the tracks use (``None`` where a
    metric is missing)."""

    method: str
    arch: str
    family: str
    task: str
    hparams: dict[str, Any]
    seeds: list[int]
    acc_bi: float | None = None
    acc_fp: float | None = None
    acc_ratio: float | None = None
    epoch_time_bi: float | None = None
    epoch_time_fp: float | None = None
    time_ratio: float | None = None
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
    #: corruption -> {"acc_bi", "acc_fp" (mean corrupted accuracy), "gap_bi", "gap_fp", "ratio"}
    corruption: dict[str, dict[str, float]] = field(default_factory=dict)


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


@dataclass
class LeaderboardRow:
    """A method's track scores (keys of :data:`onebit.bench.metrics.TRACKS`; ``None`` = no data), its
    overall score and rank, and the per-track parts the scores are made of."""

    method: str
    scores: dict[str, float | None]
    overall: float | None
    rank: int | None
    n_runs: int
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
    """Scores of every binarized method (``rows``, best overall first) and what supports them."""

    rows: list[LeaderboardRow]
    cells: list[Cell]
    sensitivity: list[Sensitivity]
    #: suites, code versions, machines, run counts, time span, overall-score kind, eps
    meta: dict[str, Any]
    tracks: tuple[str, ...] = M.TRACKS

    def row(self, method: str) -> LeaderboardRow:
        for r in self.rows:
            if r.method == method:
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
            "meta": dict(self.meta),
        }


def fmt(value: float | None, digits: int = 3) -> str:
    """A score for display: ``None`` (no data) is an em dash, never 0."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _hkey(record: RunRecord) -> str:
    """What, besides method, arch, task and seed, a run and its baseline must share: the hyper-parameters
    and the setting's data/model options (two settings may put the same arch on the same task)."""
    setting = record.config.get("setting", {})
    options = {k: setting[k] for k in ("data_options", "model_options") if setting.get(k)}
    return json.dumps({"hparams": record.config.get("hparams", {}), **options}, sort_keys=True)


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


def _flops(records: list[RunRecord]) -> float | None:
    return _derived(records, "flops_bibench", ("bops", "fp_macs"), M.bibench_flops)


def _params(records: list[RunRecord]) -> float | None:
    return _derived(records, "params_bibench", ("params_1bit", "params_32bit"), M.bibench_params)


def _corruptions(records: list[RunRecord]) -> dict[str, dict[str, float]]:
    """corruption -> severity -> accuracy, averaged over ``records`` (seeds)."""
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


def _main_cells(records: list[RunRecord], eps: float, missing: list[str]) -> list[Cell]:
    groups: dict[tuple[str, str, str, str], dict[int, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.role == "main":
            groups[(r.method, r.arch, r.task, _hkey(r))][r.seed].append(r)
    cells = []
    for (method, arch, task, hkey), by_seed in sorted(groups.items()):
        if method == FP:
            continue
        fp_by_seed = groups.get((FP, arch, task, hkey), {})
        absent = [s for s in sorted(by_seed) if s not in fp_by_seed]
        missing.extend(_describe("main", arch, task, s, hkey) for s in absent)
        seeds = [s for s in sorted(by_seed) if s in fp_by_seed]  # all of them unless strict=False
        if not seeds:
            continue
        bi = [r for s in seeds for r in by_seed[s]]
        fp = [r for s in seeds for r in fp_by_seed[s]]
        cell = Cell(method, arch, bi[0].family, task, json.loads(hkey)["hparams"], seeds)
        cell.acc_bi, cell.acc_fp = _avg(bi, "acc"), _avg(fp, "acc")
        if cell.acc_bi is not None and cell.acc_fp is not None and cell.acc_fp > 0:
            cell.acc_ratio = M.accuracy_ratio(cell.acc_bi, cell.acc_fp)
        cell.epoch_time_bi, cell.epoch_time_fp = _avg(bi, "epoch_time_s"), _avg(fp, "epoch_time_s")
        cell.time_ratio = _ratio(cell.epoch_time_fp, cell.epoch_time_bi)
        cell.bops = _avg(bi, "bops")
        cell.flops_bi, cell.flops_fp = _flops(bi), _flops(fp)
        cell.flops_ratio = _ratio(cell.flops_fp, cell.flops_bi)
        cell.params_bi, cell.params_fp = _params(bi), _params(fp)
        cell.params_ratio = _ratio(cell.params_fp, cell.params_bi)
        # deployable only if every seed's model was: the latency below must describe all of them
        cell.deployable = all(r.metrics.get("deployable", 0.0) >= 0.5 for r in bi)
        if cell.deployable:
            cell.latency_bi = _avg(bi, "latency_ms")
            # the runner times the same architecture in torch fp32 interleaved with the packed model
            # (``latency_fp32_ms``): same process, same machine load, so that is the FP time to compare
            # with; the fp run's own latency is the fallback
            paired = all("latency_fp32_ms" in r.metrics for r in bi)
            cell.latency_fp = _avg(bi, "latency_fp32_ms") if paired else _avg(fp, "latency_ms")
            cell.file_bi, cell.file_fp = _avg(bi, "file_bytes"), _avg(fp, "file_bytes")
            cell.latency_ratio = _ratio(cell.latency_fp, cell.latency_bi)
            cell.storage_ratio = _ratio(cell.file_fp, cell.file_bi)
        if cell.acc_bi is not None and cell.acc_fp is not None:
            corr_bi, corr_fp = _corruptions(bi), _corruptions(fp)
            for c in sorted(set(corr_bi) & set(corr_fp)):
                severities = sorted(set(corr_bi[c]) & set(corr_fp[c]))
                if not severities:
                    continue
                a_bi = sum(corr_bi[c][s] for s in severities) / len(severities)
                a_fp = sum(corr_fp[c][s] for s in severities) / len(severities)
                g_bi, g_fp = M.corruption_gap(cell.acc_bi, a_bi), M.corruption_gap(cell.acc_fp, a_fp)
                cell.corruption[c] = {
                    "acc_bi": a_bi,
                    "acc_fp": a_fp,
                    "gap_bi": g_bi,
                    "gap_fp": g_fp,
                    "ratio": M.robustness_ratio(g_fp, g_bi, eps),
                }
        cells.append(cell)
    return cells


def _sensitivity(records: list[RunRecord], eps: float, missing: list[str]) -> list[Sensitivity]:
    groups: dict[tuple[str, str, str], dict[str, dict[int, list[RunRecord]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in records:
        if r.role == "sensitivity" and "acc" in r.metrics:
            groups[(r.method, r.arch, r.task)][_hkey(r)][r.seed].append(r)
    out = []
    for (method, arch, task), grid in sorted(groups.items()):
        if method == FP:
            continue
        fp_grid = groups.get((FP, arch, task), {})
        absent = [(h, s) for h in sorted(grid) for s in sorted(grid[h]) if s not in fp_grid.get(h, {})]
        missing.extend(_describe("sensitivity", arch, task, s, h) for h, s in absent)
        # the grid points (and their seeds) both have: all of them unless strict=False
        common = {h: [s for s in grid[h] if s in fp_grid.get(h, {})] for h in grid}
        keys = sorted(h for h, seeds in common.items() if seeds)
        if len(keys) < 2:
            continue  # a standard deviation needs two grid points
        # every record here has "acc" (filtered above), so these are plain seed means
        acc_bi = [statistics.fmean(r.metrics["acc"] for s in common[h] for r in grid[h][s]) for h in keys]
        acc_fp = [statistics.fmean(r.metrics["acc"] for s in common[h] for r in fp_grid[h][s]) for h in keys]
        std_bi, std_fp = statistics.pstdev(acc_bi), statistics.pstdev(acc_fp)
        family = next(iter(next(iter(grid.values())).values()))[0].family
        out.append(
            Sensitivity(
                method,
                arch,
                family,
                task,
                [json.loads(h) for h in keys],
                acc_bi,
                acc_fp,
                std_bi,
                std_fp,
                # the same floor as robustness: a method that never varies is at most std_fp/eps steadier
                max(std_fp, eps) / max(std_bi, eps),
            )
        )
    return out


def _row(method: str, n_runs: int, cells: list[Cell], sens: list[Sensitivity], overall: str) -> LeaderboardRow:
    by_task: dict[str, list[float]] = defaultdict(list)
    by_family: dict[str, list[float]] = defaultdict(list)
    by_corr: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        if c.acc_ratio is not None:
            by_task[c.task].append(c.acc_ratio)
            by_family[c.family].append(c.acc_ratio)
        for name, parts in c.corruption.items():
            by_corr[name].append(parts["ratio"])

    def collect(attr: str, only: Iterable[Cell] = cells) -> list[float]:
        return [getattr(c, attr) for c in only if getattr(c, attr) is not None]

    times, stds = collect("time_ratio"), [s.ratio for s in sens]
    flops, params = collect("flops_ratio"), collect("params_ratio")
    deployed = [c for c in cells if c.deployable and c.latency_ratio is not None and c.storage_ratio is not None]
    lat, sto = collect("latency_ratio", deployed), collect("storage_ratio", deployed)
    scores: dict[str, float | None] = {
        "task": M.task_score(by_task) if by_task else None,
        "arch": M.arch_score(by_family) if by_family else None,
        "robust": M.robustness_score(by_corr) if by_corr else None,
        "train": M.training_score(times or None, stds or None) if (times or stds) else None,
        "comp": M.complexity_score(flops, params) if flops and params else None,
        "infer": M.inference_score(lat, sto) if lat else None,
    }
    return LeaderboardRow(
        method=method,
        scores=scores,
        overall=M.overall_score(scores, overall),
        rank=None,
        n_runs=n_runs,
        by_task={k: M.mean(v) for k, v in sorted(by_task.items())},
        by_family={k: M.mean(v) for k, v in sorted(by_family.items())},
        by_corruption={k: M.mean(v) for k, v in sorted(by_corr.items())},
        time_ratio=M.mean(times) if times else None,
        std_ratio=M.mean(stds) if stds else None,
        flops_ratio=M.mean(flops) if flops else None,
        params_ratio=M.mean(params) if params else None,
        latency_ratio=M.mean(lat) if lat else None,
        storage_ratio=M.mean(sto) if sto else None,
    )


def leaderboard(
    source: str | Path | ResultsDB | Iterable[RunRecord],
    *,
    overall: str = "geometric",
    eps: float = M.DEFAULT_EPS,
    strict: bool = True,
) -> Leaderboard:
    """Compute the leaderboard from finished runs: a results directory or database file, an open
    :class:`~onebit.bench.db.ResultsDB`, or records.

    ``overall`` picks the cross-track mean (see :func:`onebit.bench.metrics.overall_score`); ``eps`` is
    the floor, in percentage points, for accuracy gaps and standard deviations used as denominators.
    Raises :class:`MissingBaselineError` when a binarized run lacks its full-precision counterpart —
    unless ``strict=False``, which leaves such runs out and lists them in ``meta["missing_baselines"]``
    (what a report of a partly failed benchmark shows) — and ``ValueError`` when there are no finished
    runs.
    """
    if overall not in ("geometric", "quadratic", "arithmetic"):
        raise ValueError(f"unknown overall-score kind {overall!r}; use 'geometric', 'quadratic' or 'arithmetic'")
    where = str(source) if isinstance(source, str | Path) else "results"
    records = [r for r in records_from(source) if r.status == "done"]
    if not records:
        raise ValueError(f"{where}: no finished runs to score; run `onebit bench SUITE --out DIR` first")
    missing: list[str] = []
    cells = _main_cells(records, eps, missing)
    sens = _sensitivity(records, eps, missing)
    if missing and strict:
        raise _missing_error(missing, where)

    methods = sorted({r.method for r in records if r.method != FP})
    runs_per_method = defaultdict(int)
    for r in records:
        runs_per_method[r.method] += 1
    rows = [
        _row(
            m,
            runs_per_method[m],
            [c for c in cells if c.method == m],
            [s for s in sens if s.method == m],
            overall,
        )
        for m in methods
    ]
    rows.sort(key=lambda r: (r.overall is None, -(r.overall or 0.0), r.method))
    for i, r in enumerate(rows):
        r.rank = i + 1 if r.overall is not None else None

    roles: dict[str, int] = defaultdict(int)
    for r in records:
        roles[r.role] += 1
    meta = {
        "suites": sorted({r.suite for r in records}),
        "code_versions": sorted({r.code_version for r in records if r.code_version}),
        "machines": sorted({r.machine for r in records if r.machine}),
        "n_runs": len(records),
        "n_runs_by_role": dict(sorted(roles.items())),
        "n_fp_runs": runs_per_method.get(FP, 0),
        "tasks": sorted({r.task for r in records}),
        "archs": sorted({r.arch for r in records}),
        "families": sorted({r.family for r in records}),
        # 0 marks an unknown time (records built by hand): the span covers the runs that have one
        "started": min((r.started for r in records if r.started > 0), default=0.0),
        "finished": max((r.finished for r in records if r.finished > 0), default=0.0),
        "overall": overall,
        "eps": eps,
        "missing_baselines": missing,
    }
    return Leaderboard(rows=rows, cells=cells, sensitivity=sens, meta=meta)


def print_leaderboard(lb: Leaderboard, console: Any = None) -> None:
    """Print the leaderboard as a ``rich`` table (to ``console``, default a new ``rich.console.Console``)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console if console is not None else Console()
    table = Table(
        title="BiBench track scores: ratio to full precision, higher is better",
        caption=f"overall = {lb.meta.get('overall', 'geometric')} mean of the tracks a method has (onebit's, "
        "not BiBench's); — = no data",
        box=box.SIMPLE_HEAVY,  # no vertical rules and shared padding: the table fits an 80-column terminal
        collapse_padding=True,
        pad_edge=False,
    )
    # short headers and unwrappable numbers: the table must stay readable in an 80-column terminal
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for t in lb.tracks:
        table.add_column(t, justify="right", no_wrap=True)
    table.add_column("overall", justify="right", style="bold", no_wrap=True)
    table.add_column("runs", justify="right", no_wrap=True)
    for r in lb.rows:
        table.add_row(
            str(r.rank) if r.rank is not None else "—",
            r.method,
            *(fmt(r.scores.get(t)) for t in lb.tracks),
            fmt(r.overall),
            str(r.n_runs),
        )
    console.print(table)
