"""The benchmark report: ``report.md`` and a self-contained ``report.html`` from a results directory.

``write_report(DIR)`` reads ``DIR/results.sqlite`` (see :mod:`onebit.bench.db`), computes the
leaderboard (:mod:`onebit.bench.scores`) and writes into ``DIR/report/``, each file atomically (a temporary file renamed
into place, so an interrupted report never leaves a half-written file):

* ``plots/*.png`` — accuracy vs BOPs, robustness per corruption, sensitivity boxes, latency bars and a
  per-method radar over the tracks (matplotlib, drawn on bare ``Figure`` objects with the Agg canvas so
  no global pyplot state or backend is touched);
* ``report.md`` — the leaderboard, one section per track, the supporting per-setting ratios, and
  links to the PNGs;
* ``report.html`` — the same content with inline CSS and every plot embedded as a base64 PNG data
  URI: one file with no external resources, safe to mail or attach to CI.

A track without data (a suite with no corruptions, no hyper-parameter grid, no deployable method)
gets a section saying so instead of a plot or table.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics as M
from .scores import Leaderboard, fmt, leaderboard

__all__ = ["PLOTS", "write_report"]

#: Plot files the report may write under ``plots/`` (name -> title).
PLOTS: dict[str, str] = {
    "acc_vs_bops": "Accuracy vs BOPs",
    "robustness": "Robustness per corruption",
    "sensitivity": "Accuracy over the hyper-parameter grid",
    "latency": "Batch-1 latency: packed engine vs torch fp32",
    "radar": "Track scores per method",
}


# ---------------------------------------------------------------------------------------------------
# a tiny document model rendered twice (Markdown and HTML), so both files always say the same thing


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class _Image:
    name: str
    title: str
    png: bytes


@dataclass
class _Section:
    title: str
    blocks: list[str | _Table | _Image] = field(default_factory=list)
    level: int = 2


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, sections: list[_Section]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += ["#" * sec.level + " " + sec.title, ""]
        for block in sec.blocks:
            if isinstance(block, _Table):
                out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                out.append("|" + "|".join("---" for _ in block.headers) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            elif isinstance(block, _Image):
                out.append(f"![{block.title}](plots/{block.name}.png)")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _to_html(title: str, sections: list[_Section]) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for sec in sections:
        out.append(f"<h{sec.level}>{esc(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            if isinstance(block, _Table):
                out.append('<table class="scores">')
                out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.headers) + "</tr></thead>")
                out.append("<tbody>")
                out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, _Image):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<img src="data:image/png;base64,{data}" alt="{esc(block.title)}">')
            else:
                out.append(f"<p>{_inline_code(esc(block))}</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> (the text is already HTML-escaped)."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# ---------------------------------------------------------------------------------------------------
# plots


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _colors(methods: list[str]) -> dict[str, tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    # tab20 pairs a dark and a light shade of each hue: take the ten dark ones first so that
    # neighbouring methods differ in hue, not just in shade
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return {m: cmap(order[i % 20]) for i, m in enumerate(methods)}


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    cols = min(ncols, n)
    return math.ceil(n / cols), cols


def _plot_acc_vs_bops(lb: Leaderboard) -> bytes | None:
    cells = [c for c in lb.cells if c.acc_bi is not None and c.bops]
    if not cells:
        return None
    tasks = sorted({c.task for c in cells})
    methods = [r.method for r in lb.rows]
    colors = _colors(methods)
    markers = "osD^v<>pPX*h"
    archs = sorted({c.arch for c in cells})
    rows, cols = _grid(len(tasks))
    fig = _figure(5.2 * cols, 4.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for c in (c for c in cells if c.task == task):
            ax.scatter(
                c.bops,
                c.acc_bi,
                color=colors[c.method],
                marker=markers[archs.index(c.arch) % len(markers)],
                edgecolor="black",
                linewidth=0.4,
                s=40,
                zorder=3,
            )
        fp_lines = {(c.arch, c.acc_fp) for c in cells if c.task == task and c.acc_fp is not None}
        for arch, acc in sorted(fp_lines):
            ax.axhline(acc, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                f"fp {arch}", (0.01, acc), xycoords=("axes fraction", "data"), fontsize=7, color="grey", va="bottom"
            )
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("BOPs per sample (log)")
        ax.set_ylabel("test accuracy, %")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colors[m], marker="o", linestyle="", label=m)
        for m in methods
        if any(c.method == m for c in cells)
    ]
    handles += [
        Line2D([], [], color="black", marker=markers[i % len(markers)], linestyle="", markerfacecolor="none", label=a)
        for i, a in enumerate(archs)
    ]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle("Accuracy vs binary operations (dotted: full precision)")
    fig.tight_layout()
    return _png(fig)


def _plot_robustness(lb: Leaderboard) -> bytes | None:
    rows = [r for r in lb.rows if r.by_corruption]
    if not rows:
        return None
    corruptions = sorted({c for r in rows for c in r.by_corruption})
    values = [[r.by_corruption.get(c, math.nan) for c in corruptions] for r in rows]
    logs = [[math.log2(v) if v == v and v > 0 else math.nan for v in row] for row in values]
    finite = [abs(v) for row in logs for v in row if v == v]
    vmax = max(max(finite, default=1.0), 0.5)
    fig = _figure(max(5.0, 0.75 * len(corruptions) + 2.5), max(2.5, 0.4 * len(rows) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(logs, cmap="RdYlGn", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(corruptions)), corruptions, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [r.method for r in rows])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "—" if v != v else f"{v:.2f}", ha="center", va="center", fontsize=7)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("log2(G_fp / G_bi)")
    ax.set_title("Robustness: fp accuracy drop / binarized accuracy drop (>1: binarized drops less)")
    fig.tight_layout()
    return _png(fig)


def _plot_sensitivity(lb: Leaderboard) -> bytes | None:
    if not lb.sensitivity:
        return None
    groups = sorted({(s.arch, s.task) for s in lb.sensitivity})
    order = {r.method: i for i, r in enumerate(lb.rows)}
    rows, cols = _grid(len(groups), 2)
    width = max(5.0, 0.5 * (len(order) + 1) + 2)
    fig = _figure(width * cols, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (arch, task) in zip(axes.flat, groups):
        items = sorted((s for s in lb.sensitivity if (s.arch, s.task) == (arch, task)), key=lambda s: order[s.method])
        data = [items[0].acc_fp] + [s.acc_bi for s in items]
        labels = ["fp"] + [s.method for s in items]
        if _mpl_has_tick_labels():
            ax.boxplot(data, tick_labels=labels)
        else:
            ax.boxplot(data, labels=labels)
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        ax.set_title(f"{arch} on {task} ({len(items[0].hparams)} hyper-parameter settings)")
        ax.set_ylabel("test accuracy, %")
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def _mpl_has_tick_labels() -> bool:
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return (major, minor) >= (3, 9)  # boxplot's labels= became tick_labels= in 3.9


def _plot_latency(lb: Leaderboard) -> bytes | None:
    cells = [c for c in lb.cells if c.deployable and c.latency_bi is not None and c.latency_fp is not None]
    if not cells:
        return None
    groups = sorted({(c.arch, c.task) for c in cells})
    methods = [r.method for r in lb.rows if any(c.method == r.method for c in cells)]
    colors = _colors([r.method for r in lb.rows])
    series = ["fp (torch fp32)"] + methods
    width = 0.8 / len(series)
    fig = _figure(max(6.0, 1.2 * len(groups) * len(series) * 0.35 + 3), 4.2)
    ax = fig.subplots()
    for k, name in enumerate(series):
        heights = []
        for g in groups:
            sel = [c for c in cells if (c.arch, c.task) == g and (k == 0 or c.method == name)]
            vals = [c.latency_fp if k == 0 else c.latency_bi for c in sel]
            heights.append(sum(vals) / len(vals) if vals else 0.0)
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ax.bar(
            xs,
            heights,
            width,
            label=name,
            color="dimgrey" if k == 0 else colors[name],
            edgecolor="black",
            linewidth=0.3,
        )
    ax.set_xticks(range(len(groups)), [f"{a}\n{t}" for a, t in groups])
    ax.set_ylabel("batch-1 latency, ms")
    ax.set_title("Latency: onebit packed engine vs torch fp32 (lower is better)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _plot_radar(lb: Leaderboard) -> bytes | None:
    tracks = [t for t in lb.tracks if lb.track_available(t)]
    rows = [r for r in lb.rows if any(r.scores.get(t) is not None for t in tracks)]
    if len(tracks) < 3 or not rows:
        return None
    best = {t: max(r.scores[t] for r in rows if r.scores.get(t) is not None) for t in tracks}
    angles = [2 * math.pi * i / len(tracks) for i in range(len(tracks))]
    n_rows, n_cols = _grid(len(rows), 4)
    fig = _figure(3.2 * n_cols, 3.2 * n_rows)
    colors = _colors([r.method for r in lb.rows])
    for i, r in enumerate(rows):
        ax = fig.add_subplot(n_rows, n_cols, i + 1, projection="polar")
        vals = [(r.scores[t] or 0.0) / best[t] if best[t] > 0 else 0.0 for t in tracks]
        ax.plot(angles + angles[:1], vals + vals[:1], color=colors[r.method], linewidth=1.5)
        ax.fill(angles + angles[:1], vals + vals[:1], color=colors[r.method], alpha=0.25)
        ax.set_xticks(angles, [M.TRACK_LABELS[t] for t in tracks], fontsize=7)
        ax.tick_params(axis="x", pad=10)
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0.5, 1.0], ["", ""])
        ax.set_title(f"{r.method} (overall {fmt(r.overall, 2)})", fontsize=9)
    fig.suptitle("Track scores, each divided by the best method's score on that track (1 = best)")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------------
# sections


def _header(lb: Leaderboard, results: Path) -> _Section:
    meta = lb.meta

    def when(ts: float) -> str:
        return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    roles = ", ".join(f"{n} {role}" for role, n in meta["n_runs_by_role"].items())
    period = f"{when(meta['started'])} — {when(meta['finished'])}" if meta["started"] else "—"
    now = _dt.datetime.now(tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _Section(
        "Summary",
        [
            _Table(
                ["", ""],
                [
                    ["suite", ", ".join(meta["suites"]) or "—"],
                    ["code version", ", ".join(meta["code_versions"]) or "—"],
                    ["machine", "; ".join(meta["machines"]) or "—"],
                    ["report date", now],
                    ["runs", f"{meta['n_runs']} finished ({roles}; {meta['n_fp_runs']} full precision)"],
                    ["run period", period],
                    ["tasks", ", ".join(meta["tasks"])],
                    ["architectures", ", ".join(meta["archs"])],
                    ["results", str(results)],
                ],
            )
        ],
    )


def _missing_section(lb: Leaderboard) -> list[_Section]:
    missing = lb.meta.get("missing_baselines") or []
    if not missing:
        return []
    return [
        _Section(
            "Missing baselines",
            [
                f"{len(missing)} binarized run(s) have no full-precision run to be compared with and are left out "
                "of every score below. Add `fp` to the suite's methods (or re-run the benchmark if the fp run "
                "failed: failed runs are retried) for:",
                _Table(["setting without its fp run"], [[m] for m in missing]),
            ],
        )
    ]


def _leaderboard_section(lb: Leaderboard) -> _Section:
    table = _Table(
        ["#", "method", *(M.TRACK_LABELS[t] for t in lb.tracks), "overall", "runs"],
        [
            [
                str(r.rank) if r.rank is not None else "—",
                r.method,
                *(fmt(r.scores.get(t)) for t in lb.tracks),
                fmt(r.overall),
                str(r.n_runs),
            ]
            for r in lb.rows
        ],
    )
    return _Section(
        "Leaderboard",
        [
            "Scores follow BiBench (Qin et al., ICML 2023, Sec. 3): each is a ratio to the full-precision "
            "model (1.000 = parity, higher is better) and each track is the quadratic mean of its parts. "
            f"The overall score is onebit's own (BiBench defines none): the {lb.meta['overall']} mean of the "
            "tracks a method has. — means no data for that track, not zero.",
            table,
        ],
    )


def _definitions_section(lb: Leaderboard) -> _Section:
    eps = lb.meta["eps"]
    return _Section(
        "How the scores are computed",
        [
            "Learning task: `OM_task = sqrt(mean_tasks E[A_bi / A_fp]²)`; architecture: the same over the "
            "architecture families present (`cnn`, `mlp`, `transformer`).",
            "Robustness: per corruption `G = A_clean − A_corrupt` (corrupted accuracy averaged over the "
            f"severities), `OM_robust = sqrt(mean_c E[G_fp / G_bi]²)`; gaps are floored at {eps} points.",
            "Training: `OM_train = sqrt(½ (E[T_fp / T_bi]² + E[std_fp / std_bi]²))` with T the time per epoch "
            "and std the standard deviation of accuracy over the hyper-parameter grid (the time part alone "
            "when the suite has no grid).",
            "Complexity: `OM_comp = sqrt(½ (E[FLOPs_fp / FLOPs_bi]² + E[Params_fp / Params_bi]²))` with "
            "`FLOPs = BOPs/64 + FP MACs` and `Params = 1-bit/32 + 32-bit`.",
            "Inference: `OM_infer = sqrt(½ (E[T_fp / T_bi]² + E[S_fp / S_bi]²))`, T the batch-1 latency "
            "(binarized: onebit's packed engine; fp: torch fp32) and S the deployed file size.",
            "E[·] is the mean over the settings (architecture × task × hyper-parameters, seeds averaged "
            "first) that a method and its full-precision baseline share.",
        ],
    )


def _track_sections(lb: Leaderboard, images: dict[str, bytes | None]) -> list[_Section]:
    rows = lb.rows
    rank = {r.method: i for i, r in enumerate(rows)}
    secs = []

    def img(name: str) -> list[_Image]:
        png = images.get(name)
        return [_Image(name, PLOTS[name], png)] if png else []

    # learning task + architecture
    sec = _Section("Accuracy: learning task and architecture")
    if lb.track_available("task"):
        tasks = sorted({t for r in rows for t in r.by_task})
        fams = sorted({f for r in rows for f in r.by_family})
        sec.blocks += [
            "E[A_bi / A_fp] per task and the task track score:",
            _Table(
                ["method", *tasks, "OM_task"],
                [[r.method, *(fmt(r.by_task.get(t)) for t in tasks), fmt(r.scores["task"])] for r in rows],
            ),
            "E[A_bi / A_fp] per architecture family and the architecture track score:",
            _Table(
                ["method", *fams, "OM_arch"],
                [[r.method, *(fmt(r.by_family.get(f)) for f in fams), fmt(r.scores["arch"])] for r in rows],
            ),
            *img("acc_vs_bops"),
        ]
    else:
        sec.blocks.append("No accuracy track: the results hold no `main` run with a clean accuracy (`acc`).")
    secs.append(sec)

    sec = _Section("Corruption robustness")
    if lb.track_available("robust"):
        corrs = sorted({c for r in rows for c in r.by_corruption})
        sec.blocks += [
            "E[G_fp / G_bi] per corruption (> 1: the binarized model loses less accuracy than full precision):",
            _Table(
                ["method", *corrs, "OM_robust"],
                [[r.method, *(fmt(r.by_corruption.get(c)) for c in corrs), fmt(r.scores["robust"])] for r in rows],
            ),
            *img("robustness"),
        ]
    else:
        sec.blocks.append(
            "Not measured: no run recorded corrupted-data accuracy (`corrupt/<corruption>/<severity>`)"
            " together with its full-precision baseline; add corruptions to the suite to score it."
        )
    secs.append(sec)

    sec = _Section("Training consumption")
    if lb.track_available("train"):
        sec.blocks += [
            _Table(
                ["method", "E[T_fp / T_bi]", "E[std_fp / std_bi]", "OM_train"],
                [[r.method, fmt(r.time_ratio), fmt(r.std_ratio), fmt(r.scores["train"])] for r in rows],
            ),
        ]
        if lb.sensitivity:
            sec.blocks += [
                "Accuracy over the hyper-parameter grid (standard deviation in points):",
                _Table(
                    ["method", "arch", "task", "settings", "mean acc", "std", "fp std", "std_fp / std_bi"],
                    [
                        [
                            s.method,
                            s.arch,
                            s.task,
                            str(len(s.hparams)),
                            fmt(sum(s.acc_bi) / len(s.acc_bi), 2),
                            fmt(s.std_bi, 2),
                            fmt(s.std_fp, 2),
                            fmt(s.ratio),
                        ]
                        for s in sorted(lb.sensitivity, key=lambda s: (rank[s.method], s.arch, s.task))
                    ],
                ),
                *img("sensitivity"),
            ]
        else:
            sec.blocks.append(
                "No hyper-parameter grid (`sensitivity` runs) in these results: the track is the "
                "training-time part alone."
            )
    else:
        sec.blocks.append("Not measured: no epoch times (`epoch_time_s`) and no hyper-parameter grid.")
    secs.append(sec)

    sec = _Section("Theoretical complexity")
    if lb.track_available("comp"):
        sec.blocks.append(
            _Table(
                ["method", "E[FLOPs_fp / FLOPs_bi]", "E[Params_fp / Params_bi]", "OM_comp"],
                [[r.method, fmt(r.flops_ratio, 2), fmt(r.params_ratio, 2), fmt(r.scores["comp"], 2)] for r in rows],
            )
        )
    else:
        sec.blocks.append("Not measured: no run recorded BOPs/FLOPs and parameter counts.")
    secs.append(sec)

    sec = _Section("Hardware inference")
    if lb.track_available("infer"):
        sec.blocks += [
            "Latency and file-size ratios, torch fp32 over onebit's packed 1-bit engine, on the machine above; "
            "methods whose models do not deploy on the engine have no score (—).",
            _Table(
                ["method", "E[T_fp / T_bi]", "E[S_fp / S_bi]", "OM_infer"],
                [[r.method, fmt(r.latency_ratio, 2), fmt(r.storage_ratio, 2), fmt(r.scores["infer"], 2)] for r in rows],
            ),
            *img("latency"),
        ]
    else:
        sec.blocks.append("Not measured: no binarized run was deployable with a recorded latency and file size.")
    secs.append(sec)

    sec = _Section("Per-method profile")
    if images.get("radar"):
        sec.blocks += [
            "Each axis is a track score divided by the best method's score on that track; a track a "
            "method has no score on is drawn at 0.",
            *img("radar"),
        ]
    else:
        sec.blocks.append("Not drawn: a radar needs at least three tracks with scores.")
    secs.append(sec)
    return secs


def _cells_section(lb: Leaderboard) -> _Section:
    headers = [
        "method",
        "arch",
        "task",
        "seeds",
        "acc",
        "fp acc",
        "A_bi/A_fp",
        "T_fp/T_bi",
        "FLOPs_fp/FLOPs_bi",
        "Params_fp/Params_bi",
        "latency ms",
        "fp latency ms",
        "S_fp/S_bi",
    ]
    rows = [
        [
            c.method,
            c.arch,
            c.task,
            ",".join(map(str, c.seeds)),
            fmt(c.acc_bi, 2),
            fmt(c.acc_fp, 2),
            fmt(c.acc_ratio),
            fmt(c.time_ratio, 2),
            fmt(c.flops_ratio, 2),
            fmt(c.params_ratio, 2),
            fmt(c.latency_bi, 3),
            fmt(c.latency_fp, 3),
            fmt(c.storage_ratio, 2),
        ]
        for c in lb.cells
    ]
    blocks: list[str | _Table | _Image] = [
        "Every (method, architecture, task, hyper-parameters) setting of the `main` runs, seeds averaged:",
        _Table(headers, rows) if rows else "No `main` runs.",
    ]
    return _Section("Supporting ratios per setting", blocks)


# ---------------------------------------------------------------------------------------------------
# files


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, *, overall: str = "rank", strict: bool = False
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` for the results in ``results_dir`` (a
    directory holding ``results.sqlite``, or the database file) into ``out_dir`` (default: ``report/``
    in the results directory). Returns the written paths: ``"markdown"``, ``"html"`` and one entry per
    plot name of :data:`PLOTS` that had data to draw.

    A binarized run whose full-precision baseline is missing (say, the fp run crashed) is left out and
    listed in a "Missing baselines" section at the top; ``strict=True`` raises
    :class:`~onebit.bench.scores.MissingBaselineError` instead. Raises ``FileNotFoundError`` when there is
    no results database and ``ValueError`` when it holds no finished run.
    """
    results = Path(results_dir)
    lb = leaderboard(results, overall=overall, strict=strict)
    base = results if results.is_dir() else results.parent
    out = Path(out_dir) if out_dir is not None else base / "report"
    plot_dir = out / "plots"

    makers: dict[str, Callable[[Leaderboard], bytes | None]] = {
        "acc_vs_bops": _plot_acc_vs_bops,
        "robustness": _plot_robustness,
        "sensitivity": _plot_sensitivity,
        "latency": _plot_latency,
        "radar": _plot_radar,
    }
    images = {name: make(lb) for name, make in makers.items()}

    title = f"onebit benchmark report — {', '.join(lb.meta['suites'])}"
    sections = [
        _header(lb, results),
        *_missing_section(lb),
        _leaderboard_section(lb),
        *_track_sections(lb, images),
        _cells_section(lb),
        _definitions_section(lb),
    ]

    written: dict[str, Path] = {}
    for name, png in images.items():
        path = plot_dir / f"{name}.png"
        if png:
            _atomic_write(path, png)
            written[name] = path
        else:
            path.unlink(missing_ok=True)  # a plot from an earlier report of other results would mislead
    written["markdown"] = out / "report.md"
    _atomic_write(written["markdown"], _to_markdown(title, sections).encode("utf-8"))
    written["html"] = out / "report.html"
    _atomic_write(written["html"], _to_html(title, sections).encode("utf-8"))
    return written
