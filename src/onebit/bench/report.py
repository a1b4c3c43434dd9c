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
from .precision import PRIMARY
from .scores import CHANCE_MARGIN, ROBUST_CLIP, SAMPLED_TRACKS, Leaderboard, fmt, fmt_ci, leaderboard

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
                out += ["<tr>" + "".join(f"<td>{_inline_code(esc(c))}</td>" for c in row) + "</tr>"
                        for row in block.rows]
                out.append("</tbody></table>")
            elif isinstance(block, _Image):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<img src="data:image/png;base64,{data}" alt="{esc(block.title)}">')
            else:
                out.append(f"<p>{_inline_code(esc(block))}</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> and **strong** spans as <strong> (the text is already
    HTML-escaped)."""
    bold = text.split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 and i < len(bold) - 1 else p for i, p in enumerate(bold))
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
    cells = [c for c in lb.cells if c.acc_bi is not None and c.excluded is None]
    if not cells:
        return None
    tasks = sorted({c.task for c in cells})
    methods = list(dict.fromkeys(r.method for r in lb.rows))
    colors = _colors(methods)
    markers = "osD^v<>pPX*h"
    archs = sorted({c.arch for c in cells})
    rows, cols = _grid(len(tasks))
    fig = _figure(5.6 * cols, 4.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        here = [c for c in cells if c.task == task]
        positive = [c.bops for c in here if c.bops]
        # methods with 0 BOPs (real activations: no XNOR/popcount work) cannot sit on a log axis: they are
        # drawn in a strip left of the smallest BOP count, behind a dashed line
        zero_x = (min(positive) / 8) if positive else 1.0
        xs = {id(c): (c.bops if c.bops else zero_x) for c in here}
        for c, x in _spread(here, xs):
            primary = c.precision == PRIMARY  # other groups hollow, in the method's colour
            ax.scatter(x, c.acc_bi, marker=markers[archs.index(c.arch) % len(markers)], s=40, zorder=3,
                       facecolor=colors[c.method] if primary else "none",
                       edgecolor="black" if primary else colors[c.method], linewidth=0.4 if primary else 1.5)
        if any(not c.bops for c in here):
            ax.axvline(zero_x * 2.5, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate("0 BOPs", (zero_x, 0.02), xycoords=("data", "axes fraction"), fontsize=7, ha="center")
        for arch, acc in sorted({(c.arch, c.acc_fp) for c in here if c.acc_fp is not None}):
            ax.axhline(acc, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"fp {arch}", (0.01, acc), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                        va="bottom")
        ax.set_xscale("log")
        if any(not c.bops for c in here):  # the strip is no BOP count: no log-axis tick labels over it
            _blank_ticks_left_of(ax, zero_x * 2.5)
        ax.set_title(task)
        ax.set_xlabel("BOPs per sample (log; coinciding points spread sideways)")
        ax.set_ylabel("test accuracy, %")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="o", linestyle="", label=m)
               for m in methods if any(c.method == m for c in cells)]
    handles += [Line2D([], [], color="black", marker=markers[i % len(markers)], linestyle="",
                       markerfacecolor="none", label=a) for i, a in enumerate(archs)]
    if any(c.precision != PRIMARY for c in cells):
        handles.append(Line2D([], [], color="black", marker="o", linestyle="", markerfacecolor="none",
                              label="hollow: not W1A1"))
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
    vmax = math.log2(ROBUST_CLIP)
    fig = _figure(max(5.0, 0.55 * len(corruptions) + 3), max(2.5, 0.38 * len(rows) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(logs, cmap="RdYlGn", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(corruptions)), corruptions, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r.method} ({r.group})" for r in rows])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "—" if v != v else f"{v:.1f}", ha="center", va="center", fontsize=6)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(f"log2 of the bounded G_fp / G_bi (clipped to [1/{ROBUST_CLIP:g}, {ROBUST_CLIP:g}])")
    ax.set_title("Robustness: FP accuracy drop / binarized drop (>1: binarized drops less; —: left out)")
    fig.tight_layout()
    return _png(fig)


def _plot_sensitivity(lb: Leaderboard) -> bytes | None:
    if not lb.sensitivity:
        return None
    groups = sorted({(s.arch, s.task) for s in lb.sensitivity})
    order = {(r.method, r.group): i for i, r in enumerate(lb.rows)}
    rows, cols = _grid(len(groups), 2)
    width = max(5.0, 0.5 * (len(order) + 1) + 2)
    fig = _figure(width * cols, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (arch, task) in zip(axes.flat, groups):
        items = sorted((s for s in lb.sensitivity if (s.arch, s.task) == (arch, task)),
                       key=lambda s: order.get((s.method, s.precision), 0))
        data = [items[0].acc_fp] + [s.acc_bi for s in items]
        labels = ["fp"] + [_name(s.method, s.precision) for s in items]
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
    if lb.deployment:
        return _plot_deployment(lb)
    cells = [c for c in lb.cells if c.deployable and c.latency_bi is not None and c.latency_fp is not None]
    if not cells:
        return None
    groups = sorted({(c.arch, c.task) for c in cells})
    bars = {"fp (torch fp32)": [_mean_or_zero([c.latency_fp for c in cells if (c.arch, c.task) == g])
                                for g in groups]}
    for m, p in dict.fromkeys((c.method, c.precision) for c in cells):
        bars[_name(m, p)] = [_mean_or_zero([c.latency_bi for c in cells
                                            if (c.arch, c.task) == g and (c.method, c.precision) == (m, p)])
                             for g in groups]
    return _bar_chart(lb, [f"{a}\n{t}" for a, t in groups], bars, "batch-1 latency, ms",
                      "Latency of the trained models: onebit packed engine vs torch fp32 (lower is better)")


def _plot_radar(lb: Leaderboard) -> bytes | None:
    tracks = [t for t in lb.tracks if lb.track_available(t)]
    rows = [r for r in lb.rows if r.track_ranks]
    if len(tracks) < 3 or not rows:
        return None
    sizes = {g: len(lb.group_rows(g)) for g in lb.groups}
    angles = [2 * math.pi * i / len(tracks) for i in range(len(tracks))]
    n_rows, n_cols = _grid(len(rows), 4)
    fig = _figure(3.2 * n_cols, 3.2 * n_rows)
    colors = _colors(list(dict.fromkeys(r.method for r in lb.rows)))
    for i, r in enumerate(rows):
        ax = fig.add_subplot(n_rows, n_cols, i + 1, projection="polar")
        n = sizes[r.group]
        # rank 1 -> 1, last rank -> 1/n; a track without a score -> 0
        vals = [(n - r.track_ranks[t] + 1) / n if t in r.track_ranks else 0.0 for t in tracks]
        ax.plot(angles + angles[:1], vals + vals[:1], color=colors[r.method], linewidth=1.5)
        ax.fill(angles + angles[:1], vals + vals[:1], color=colors[r.method], alpha=0.25)
        ax.set_xticks(angles, [M.TRACK_LABELS[t] for t in tracks], fontsize=7)
        ax.tick_params(axis="x", pad=10)
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0.5, 1.0], ["", ""])
        ax.set_title(f"{r.method} ({r.group}, mean rank {fmt(r.overall, 1)})", fontsize=8)
    fig.suptitle("Per-track rank within the group (outer ring = best)")
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
    seeds = sorted({s for c in lb.cells for s in c.seeds})
    return _Section("Summary", [_Table(["", ""], [
        ["suite", ", ".join(meta["suites"]) or "—"],
        ["code version", ", ".join(meta["code_versions"]) or "—"],
        ["machine", "; ".join(meta["machines"]) or "—"],
        ["report date", now],
        ["runs", f"{meta['n_runs']} finished ({roles}; {meta['n_fp_runs']} full precision)"],
        ["run period", period],
        ["tasks", ", ".join(meta["tasks"])],
        ["architectures", ", ".join(meta["archs"])],
        ["seeds", ", ".join(map(str, seeds)) or "—"],
        ["training", "; ".join(meta.get("training", [])) or "—"],
        ["groups (bit widths)", "; ".join(f"{g}: {_group_setting(g)}" for g in lb.groups) or "—"],
        ["intervals", f"95% percentile bootstrap, {meta['bootstrap']} replicates"],
        ["results", str(results)],
    ])])


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
    sec = _Section("Leaderboard", [
        "Each group of bit widths is ranked on its own: a weight-only (W1A32) or multi-bit run is never "
        "ranked against W1A1. Track scores follow BiBench (ratios to the full-precision model, 1.000 = "
        "parity, higher is better; robustness bounded, see below). The overall column is onebit's own: the "
        "mean of the method's per-track ranks within its group (lower is better; each track counts once, "
        "whatever the size of its ratios), with its 95% bootstrap interval. `(n)` is the rank on that track; "
        "`≈` marks a method not significantly different from the track's (or the overall) best — the 95% "
        "paired-bootstrap interval of the difference includes 0. — means no data for that track, not zero.",
    ])
    for group in lb.groups:
        rows = lb.group_rows(group)
        sec.blocks += [
            f"**{group}** — {_group_setting(group)}; {len(rows)} method(s).",
            _Table(
                ["#", "method", "mean track rank [95% CI]", *(M.TRACK_LABELS[t] for t in lb.tracks), "runs"],
                [[(str(r.rank) if r.rank is not None else "—") + _tie(r, "overall"), r.method,
                  fmt_ci(r.overall, r.overall_ci, 2),
                  *(_score_rank(r, t) for t in lb.tracks), str(r.n_runs)] for r in rows],
            ),
            "95% intervals of the sampled tracks (bootstrap over seeds and test samples):",
            _Table(["method", *(M.TRACK_LABELS[t] for t in SAMPLED_TRACKS)],
                   [[r.method, *(fmt_ci(r.scores.get(t), r.ci.get(t)) for t in SAMPLED_TRACKS)] for r in rows]),
        ]
        stab = lb.meta["stability"].get(group, {})
        sec.blocks.append(_stability_text(stab))
    return sec


def _definitions_section(lb: Leaderboard) -> _Section:
    eps = lb.meta["eps"]
    return _Section("How the scores are computed", [
        "**Following BiBench** (Qin et al., ICML 2023, Sec. 3): learning task `OM_task = sqrt(mean_tasks "
        "E[A_bi / A_fp]²)`; architecture the same over the families present (`cnn`, `mlp`, `transformer`); "
        "robustness from the corruption gap `G = A_clean − A_corrupt` and `OM_robust = sqrt(mean_c "
        "E[G_fp / G_bi]²)`; training `OM_train = sqrt(½ (E[T_fp / T_bi]² + E[std_fp / std_bi]²))` with T the "
        "time per epoch and std the accuracy's standard deviation over the hyper-parameter grid; complexity "
        "`OM_comp = sqrt(½ (E[FLOPs_fp / FLOPs_bi]² + E[Params_fp / Params_bi]²))` with `FLOPs = BOPs/64 + FP "
        "MACs`, `Params = 1-bit/32 + 32-bit`; inference `OM_infer = sqrt(½ (E[T_fp / T_bi]² + "
        "E[S_fp / S_bi]²))` with T the batch-1 latency and S the file size.",
        "**onebit's own choices**: (1) runs are grouped by their weight/activation bit widths and ranked "
        "within a group; (2) a setting whose FP baseline is not clearly above chance is left out; (3) "
        "robustness: a corruption is left out of the ratio when the FP model's drop is within its test-set "
        "noise (`1.96·sqrt(se_clean² + se_corrupt²)`), the binarized drop is floored at its own noise level "
        f"(at {eps} points when the test-set size is unknown), each ratio is clipped to "
        f"[1/{ROBUST_CLIP:g}, {ROBUST_CLIP:g}], and a binarized model not clearly above chance gets no "
        "robustness score (nothing left to lose). The paper's wording averages raw ratios, which are "
        "unbounded: an earlier report of this suite scored a model at chance 200.9 on one corruption and "
        "42.95 on the track; (4) every score is a point estimate with a 95% percentile-bootstrap interval: "
        "seeds resampled with replacement (the same draw for a method, its FP baseline and every other "
        "method of a setting: paired) and each accuracy redrawn as Binomial(n_test, p) / n_test — exactly "
        "what resampling its test samples does, so no per-sample record is needed; the binarized and FP "
        "draws are independent, which makes intervals slightly conservative; complexity (exact counts) and "
        "inference (medians of interleaved timings) have no sampling interval; (5) the overall ranking is "
        "the mean of per-track ranks (ties share the average rank), bounded by the number of methods, in "
        "place of a mean of raw ratios that let one track decide; (6) rank stability is Kendall's τ "
        "between rankings from disjoint halves of the seeds; (7) the inference track times each method's "
        "inference form on deployment networks (Bi-Real ResNet-18 and ReActNet-A, 224x224, batch 1, random "
        "weights) on onebit's packed engine against torch fp32 in its faster layout (and Larq Compute "
        "Engine where installed), interleaved in one process, when the suite lists networks; these timed "
        "runs run one at a time after every training run, so that nothing shares the cores with them; "
        "(8) a two-stage method (BiPer: real sin(ωW) weights in stage 1, their sign in stage 2) trains "
        "both stages within the run's epochs (two thirds, then a third at a tenth of the learning rate), so "
        "that it is scored with the binary weights it deploys with and trains as many epochs as the others.",
    ])


def _track_sections(lb: Leaderboard, images: dict[str, bytes | None]) -> list[_Section]:
    def img(name: str) -> list[_Image]:
        png = images.get(name)
        return [_Image(name, PLOTS[name], png)] if png else []

    return [
        _accuracy_section(lb, img("acc_vs_bops")),
        _robustness_section(lb, img("robustness")),
        _training_section(lb, img("sensitivity")),
        _complexity_section(lb),
        _inference_section(lb, img("latency")),
        _Section("Per-method profile", [
            "Each axis is the method's rank on that track within its group (outer ring = best; a track "
            "without a score is drawn at 0).", *img("radar")] if images.get("radar") else
            ["Not drawn: a radar needs at least three tracks with scores."]),
    ]


def _cells_section(lb: Leaderboard) -> _Section:
    headers = ["method", "bits", "arch", "task", "seeds", "acc", "fp acc", "A_bi/A_fp", "T_fp/T_bi",
               "FLOPs_fp/FLOPs_bi", "Params_fp/Params_bi", "latency ms", "fp latency ms", "S_fp/S_bi", "note"]
    rows = [[c.method, c.precision, c.arch, c.task, ",".join(map(str, c.seeds)), fmt(c.acc_bi, 2), fmt(c.acc_fp, 2),
             fmt(c.acc_ratio), fmt(c.time_ratio, 2), fmt(c.flops_ratio, 2), fmt(c.params_ratio, 2),
             fmt(c.latency_bi, 3), fmt(c.latency_fp, 3), fmt(c.storage_ratio, 2),
             "left out: FP at chance" if c.excluded else ("no robustness: at chance" if c.robust_excluded else "")]
            for c in lb.cells]
    return _Section("Supporting ratios per setting", [
        "Every (method, bit widths, architecture, task, hyper-parameters) setting of the `main` runs, seeds "
        "averaged:", _Table(headers, rows) if rows else "No `main` runs."])


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


def _spread(cells: list, xs: dict[int, float], step: float = 1.08) -> list[tuple]:
    """x position per cell, points that would coincide (same x, accuracy within 0.25 points) spread
    sideways by factors of ``step`` around their place, so every method stays visible."""
    out, groups = [], {}
    for c in sorted(cells, key=lambda c: (xs[id(c)], c.acc_bi, c.method)):
        key = (round(math.log10(xs[id(c)]), 3), round(c.acc_bi * 2) / 2)
        groups.setdefault(key, []).append(c)
    for group in groups.values():
        for k, c in enumerate(group):
            out.append((c, xs[id(c)] * step ** (k - (len(group) - 1) / 2)))
    return out


def _blank_ticks_left_of(ax, boundary: float) -> None:
    """Keep the x axis's tick labels (major and minor) right of ``boundary`` only: left of it lies the
    0-BOPs strip, where a log-axis label (e.g. 6x10^2) would read as those methods' BOP count."""
    from matplotlib.ticker import Formatter

    class Blank(Formatter):
        def __init__(self, inner: Formatter) -> None:
            self.inner = inner

        def set_locs(self, locs) -> None:
            self.inner.set_locs(locs)

        def __call__(self, x: float, pos: int | None = None) -> str:
            return "" if x < boundary else self.inner(x, pos)

    ax.xaxis.set_major_formatter(Blank(ax.xaxis.get_major_formatter()))
    ax.xaxis.set_minor_formatter(Blank(ax.xaxis.get_minor_formatter()))


def _mean_or_zero(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _plot_deployment(lb: Leaderboard) -> bytes | None:
    cells = [d for d in lb.deployment if d.deployable and d.latency_bi is not None]
    if not cells:
        return None
    groups = sorted({(d.network, d.threads) for d in cells})
    bars = {"torch fp32 (best layout)": [_mean_or_zero([d.latency_fp for d in cells
                                                        if (d.network, d.threads) == g and d.latency_fp])
                                         for g in groups]}
    if any(d.latency_lce for d in cells):
        bars["LCE (bnn)"] = [_mean_or_zero([d.latency_lce for d in cells if (d.network, d.threads) == g
                                            and d.latency_lce and d.method == "bnn"]) for g in groups]
    for m, p in dict.fromkeys((d.method, d.precision) for d in cells):
        bars[_name(m, p)] = [_mean_or_zero([d.latency_bi for d in cells
                                            if (d.network, d.threads) == g and (d.method, d.precision) == (m, p)])
                             for g in groups]
    return _bar_chart(lb, [f"{n}\n{t} thread{'s' if t > 1 else ''}" for n, t in groups], bars,
                      "batch-1 latency at 224x224, ms",
                      "Deployment networks: onebit packed engine per method vs torch fp32 (lower is better)")


def _bar_chart(lb: Leaderboard, labels: list[str], bars: dict[str, list[float]], ylabel: str, title: str) -> bytes:
    colors = _colors(list(dict.fromkeys(r.method for r in lb.rows)))
    width = 0.8 / len(bars)
    fig = _figure(max(6.0, 0.25 * len(labels) * len(bars) + 3), 4.2)
    ax = fig.subplots()
    for k, (name, heights) in enumerate(bars.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(labels))]
        method, other_group = name.split(" (")[0], " (" in name  # other groups: the method's colour, hatched
        ax.bar(xs, heights, width, label=name, color=colors.get(method, "dimgrey" if k == 0 else "silver"),
               edgecolor="black", linewidth=0.3, hatch="//" if other_group else None)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _group_setting(group: str) -> str:
    """What a precision label means, in words."""
    if group == PRIMARY:
        return "1-bit weights and activations in every binary layer (BiBench's setting)"
    if group.endswith("A32"):
        return f"weight-only: {group[1:group.index('A')]}-bit weights, real (32-bit) activations"
    w, a = group[1:].split("A")
    return f"{w} average weight bits, {a}-bit activations"


def _tie(r, track: str) -> str:
    """The ``≈`` mark: the method ties the best on ``track`` (or "overall") without being ranked first."""
    first = r.rank == 1 if track == "overall" else r.track_ranks.get(track) == 1
    return " ≈" if r.tied_best.get(track) and not first else ""


def _score_rank(r, track: str) -> str:
    score = r.scores.get(track)
    if score is None:
        return "—"
    return f"{fmt(score)} ({r.track_ranks[track]:g}){_tie(r, track)}"


def _stability_text(stab: dict) -> str:
    half = stab.get("split_half")
    boot = stab.get("bootstrap_median")
    if not half:
        seeds = stab.get("seeds", [])
        return (f"Rank stability: not computable from {len(seeds)} seed(s) — it needs two disjoint halves of "
                "the seeds and three methods." + (f" Bootstrap: median Kendall τ {fmt(boot, 2)} between the "
                                                  "point ranking and resampled rankings." if boot is not None else ""))
    return (f"Rank stability of the learning-task ranking: Kendall's τ between the rankings from two disjoint "
            f"halves of the seeds {stab['seeds']} = {fmt(half['mean'], 2)} (mean over {half['splits']:g} "
            f"splits; lowest {fmt(half['min'], 2)}); median τ between the point ranking and bootstrap "
            f"replicates {fmt(boot, 2)}.")


def _literature_section(lb: Leaderboard) -> _Section:
    from . import literature as L

    comp = L.compare(lb)
    sec = _Section("Side by side with the literature", [f"Published: {L.SOURCE}. Here: the W1A1 learning-task "
                                                        "score (OM_task) of this suite."])
    if comp is None:
        sec.blocks.append(L.summary_line(comp))
        return sec
    sec.blocks += [
        _Table(["method", "published top-1 %", "published rank", "suite OM_task", "suite rank"], L.as_rows(comp)),
        L.summary_line(comp),
    ]
    if comp.notes:
        sec.blocks.append("Disagreements (a method two or more places away from its published rank), with the "
                          "numbers behind them:")
        sec.blocks += comp.notes
    sec.blocks.append(L.conditions(lb))
    return sec


def _baselines_section(lb: Leaderboard) -> _Section:
    rows = []
    for b in lb.baselines:
        rows.append([b.task, b.arch, fmt(b.acc_fp, 2), str(len(b.seeds)), str(b.n_test or "—"),
                     fmt(b.chance, 1), fmt(b.resolvable, 2), b.flag or "ok: clearly above chance"])
    return _Section("Full-precision baselines", [
        "Every score is relative to these models. A setting whose FP accuracy is not clearly above chance "
        f"(its 95% binomial lower bound at least {CHANCE_MARGIN:g} points above 100/classes) measures nothing "
        "and is left out of every score. The resolvable difference is the smallest accuracy difference "
        "between two methods the test set can tell apart at 95% from test-sample noise alone, seeds pooled "
        "(1.96·√2·binomial standard error at the FP accuracy); differences below it are noise.",
        _Table(["task", "arch", "FP acc %", "seeds", "test samples", "chance %", "resolvable diff. (points)",
                "status"], rows) if rows else "No full-precision `main` runs.",
    ])


def _label(r) -> str:
    """A row's method, with its group when it is not W1A1."""
    return _name(r.method, r.group)


def _name(method: str, group: str) -> str:
    return method if group == PRIMARY else f"{method} ({group})"


def _accuracy_section(lb: Leaderboard, plot: list) -> _Section:
    sec = _Section("Accuracy: learning task and architecture")
    if not lb.track_available("task"):
        sec.blocks.append("No accuracy track: the results hold no `main` run with a clean accuracy (`acc`) "
                          "whose FP baseline learned.")
        return sec
    rows = lb.rows
    tasks = sorted({t for r in rows for t in r.by_task})
    fams = sorted({f for r in rows for f in r.by_family})
    sec.blocks += [
        "E[A_bi / A_fp] per task and the task track score with its 95% interval (settings whose FP baseline "
        "is at chance are left out):",
        _Table(["method", *tasks, "OM_task [95% CI]"],
               [[_label(r), *(fmt(r.by_task.get(t)) for t in tasks), fmt_ci(r.scores["task"], r.ci.get("task"))]
                for r in rows]),
        "E[A_bi / A_fp] per architecture family and the architecture track score:",
        _Table(["method", *fams, "OM_arch [95% CI]"],
               [[_label(r), *(fmt(r.by_family.get(f)) for f in fams), fmt_ci(r.scores["arch"], r.ci.get("arch"))]
                for r in rows]),
        *plot,
    ]
    if plot:
        sec.blocks.append("Methods with 0 BOPs (real activations: no XNOR/popcount work) are drawn in the strip "
                          "left of the dashed line; points that would coincide are spread sideways (8% per "
                          "point on the log axis), so every method is visible.")
    return sec


def _robustness_section(lb: Leaderboard, plot: list) -> _Section:
    sec = _Section("Corruption robustness")
    if not any(c.corruption for c in lb.cells):
        sec.blocks.append("Not measured: no run recorded corrupted-data accuracy (`corrupt/<corruption>/"
                          "<severity>`) together with its full-precision baseline; add corruptions to the "
                          "suite to score it.")
        return sec
    sec.blocks += [
        f"Bounded G_fp / G_bi (> 1: the binarized model loses less accuracy than full precision; each "
        f"corruption's ratio clipped to [1/{ROBUST_CLIP:g}, {ROBUST_CLIP:g}]), the track score with its "
        "interval, and the raw accuracies behind it (means over the method's settings; corrupted: over "
        "corruptions and severities):",
        _Table(["method", "OM_robust [95% CI]", "corruptions scored", "clean acc %", "corrupted acc %",
                "settings at chance"], [_robust_row(lb, r) for r in lb.rows]),
    ]
    sec.blocks += _fp_drops(lb)
    sec.blocks += _ratios_by_corruption(lb)
    sec.blocks += plot
    return sec


def _robust_row(lb: Leaderboard, r) -> list[str]:
    cells = [c for c in lb.cells if (c.method, c.precision) == (r.method, r.group) and c.excluded is None]
    # both over the same settings: the clean accuracy, and the corrupted one averaged over its corruptions
    with_corr = [c for c in cells if c.acc_bi is not None and c.corruption]
    clean = [c.acc_bi for c in with_corr]
    corr = [_avg([e["acc_bi"] for e in c.corruption.values()]) for c in with_corr]
    at_chance = sum(1 for c in cells if c.robust_excluded)
    return [_label(r), fmt_ci(r.scores.get("robust"), r.ci.get("robust")), str(len(r.by_corruption)),
            fmt(sum(clean) / len(clean), 2) if clean else "—", fmt(sum(corr) / len(corr), 2) if corr else "—",
            str(at_chance)]


def _fp_drops(lb: Leaderboard) -> list:
    """Per corruption: the FP model's drop, its noise, and whether it is scored (one row per corruption)."""
    per: dict[str, list[dict]] = {}
    seen = set()
    for c in lb.cells:
        if c.excluded is not None or c.setting_key in seen:
            continue
        seen.add(c.setting_key)
        for name, e in c.corruption.items():
            per.setdefault(name, []).append(dict(e, acc_clean=c.acc_fp))
    if not per:
        return []
    rows = []
    for name, entries in sorted(per.items()):
        scored = sum(1 for e in entries if e["gap_fp"] > e["noise_fp"])
        mean = {k: fmt(_avg([e[k] for e in entries]), 2) for k in ("acc_clean", "acc_fp", "gap_fp", "noise_fp")}
        rows.append([name, mean["acc_clean"], mean["acc_fp"], mean["gap_fp"], mean["noise_fp"],
                     f"{scored} of {len(entries)}" if scored else "no: FP drop within noise, left out"])
    return ["The FP model per corruption (means over settings): a corruption enters a setting's ratio only "
            "where the FP drop exceeds its 95% test-set noise.",
            _Table(["corruption", "FP clean %", "FP corrupted %", "FP drop", "noise (95%)", "settings scored"], rows)]


def _avg(values: list[float]) -> float:
    return sum(values) / len(values)


def _ratios_by_corruption(lb: Leaderboard, per_table: int = 6) -> list:
    """Per-corruption ratios, corruptions as rows and methods as columns, a few methods per table so
    every table fits the page."""
    rows = [r for r in lb.rows if r.by_corruption]
    corrs = sorted({c for r in rows for c in r.by_corruption})
    if not rows:
        return []
    out: list = ["Per-corruption bounded ratio E[G_fp / G_bi] (— : left out: FP drop within noise, or the "
                 "model at chance):"]
    for i in range(0, len(rows), per_table):
        chunk = rows[i:i + per_table]
        out.append(_Table(["corruption", *(_label(r) for r in chunk)],
                          [[c, *(fmt(r.by_corruption.get(c), 2) for r in chunk)] for c in corrs]
                          + [["**OM_robust**", *(f"**{fmt(r.scores.get('robust'), 2)}**" for r in chunk)]]))
    return out


def _training_section(lb: Leaderboard, plot: list) -> _Section:
    sec = _Section("Training consumption")
    if not lb.track_available("train"):
        sec.blocks.append("Not measured: no epoch times (`epoch_time_s`) and no hyper-parameter grid.")
        return sec
    rank = {(r.method, r.group): i for i, r in enumerate(lb.rows)}
    sec.blocks.append(_Table(["method", "E[T_fp / T_bi]", "E[std_fp / std_bi]", "OM_train [95% CI]"],
                             [[_label(r), fmt(r.time_ratio), fmt(r.std_ratio),
                               fmt_ci(r.scores["train"], r.ci.get("train"))] for r in lb.rows]))
    if lb.sensitivity:
        sec.blocks += [
            "Accuracy over the hyper-parameter grid (standard deviation in points):",
            _Table(["method", "arch", "task", "settings", "mean acc", "std", "fp std", "std_fp / std_bi"],
                   [[_name(s.method, s.precision), s.arch, s.task,
                     str(len(s.hparams)), fmt(sum(s.acc_bi) / len(s.acc_bi), 2), fmt(s.std_bi, 2), fmt(s.std_fp, 2),
                     fmt(s.ratio)]
                    for s in sorted(lb.sensitivity, key=lambda s: (rank.get((s.method, s.precision), 0), s.arch))]),
            *plot,
        ]
    else:
        sec.blocks.append("No hyper-parameter grid (`sensitivity` runs) in these results: the track is the "
                          "training-time part alone.")
    return sec


def _complexity_section(lb: Leaderboard) -> _Section:
    sec = _Section("Theoretical complexity")
    if not lb.track_available("comp"):
        sec.blocks.append("Not measured: no run recorded BOPs/FLOPs and parameter counts.")
        return sec
    sec.blocks.append(_Table(["method", "E[FLOPs_fp / FLOPs_bi]", "E[Params_fp / Params_bi]", "OM_comp"],
                             [[_label(r), fmt(r.flops_ratio, 2), fmt(r.params_ratio, 2), fmt(r.scores["comp"], 2)]
                              for r in lb.rows]))
    return sec


def _inference_section(lb: Leaderboard, plot: list) -> _Section:
    sec = _Section("Hardware inference")
    if lb.deployment:
        sec.blocks += [
            "Each method's inference form on deployment networks at 224x224, batch 1, random weights (latency "
            "and size do not depend on trained values): onebit's packed engine, torch fp32 in its faster "
            "layout (NCHW or channels_last), and Larq Compute Engine where installed, samples interleaved in "
            "one process. Methods whose models do not deploy have no score (—).",
            _Table(["method", "network", "threads", "packed ms", "torch fp32 ms", "LCE ms", "speed-up vs fp32",
                    "file MiB", "fp32 file MiB"],
                   [[_name(d.method, d.precision), d.network, str(d.threads),
                     fmt(d.latency_bi, 2), fmt(d.latency_fp, 2), fmt(d.latency_lce, 2), fmt(d.latency_ratio, 2),
                     fmt(d.file_bi / 2**20 if d.file_bi else None, 2), fmt(d.file_fp / 2**20 if d.file_fp else None, 2)]
                    for d in lb.deployment]),
        ]
    elif not lb.track_available("infer"):
        sec.blocks.append("Not measured: no binarized run was deployable with a recorded latency and file size.")
        return sec
    else:
        sec.blocks.append("Latency of the trained models themselves (the suite lists no deployment networks): "
                          "at these input sizes a batch-1 call is mostly per-call overhead.")
    sec.blocks += [
        _Table(["method", "E[T_fp / T_bi]", "E[S_fp / S_bi]", "OM_infer"],
               [[_label(r), fmt(r.latency_ratio, 2), fmt(r.storage_ratio, 2), fmt(r.scores["infer"], 2)]
                for r in lb.rows]),
        *plot,
    ]
    return sec


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
        _literature_section(lb),
        _baselines_section(lb),
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
