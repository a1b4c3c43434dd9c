"""The suite's accuracy ranking beside the published one, with rank correlations and the evidence for
each disagreement, generated from the leaderboard's numbers.

Published numbers: ImageNet top-1 (%) of a binarized ResNet-18 (W1A1), as collected in the project's
notes (``shared/research/algorithms.md`` §3.1): IR-Net 58.1, ReCU 61.0, BiPer 61.4 and ReActNet 65.9
(Bi-Real-ResNet-18-based) from the methods' READMEs; BNN 42.2, XNOR-Net 51.2 and Bi-Real 56.4 from the
ReCU/BiPer papers' tables (recalled, marked [paper-mem] there). BiBench's own tables (which retrain the
methods under one recipe) could not be read (§3.2), so these are each paper's own recipes — longer
training, two-stage schedules and distillation for ReActNet — on a 1000-class task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import stats as S
from .precision import PRIMARY
from .scores import Leaderboard, LeaderboardRow, fmt

__all__ = ["IMAGENET_RESNET18", "SOURCE", "Comparison", "compare"]

#: method -> published ImageNet ResNet-18 top-1 (%), W1A1.
IMAGENET_RESNET18: dict[str, float] = {
    "bnn": 42.2,
    "xnor": 51.2,
    "bireal": 56.4,
    "irnet": 58.1,
    "recu": 61.0,
    "biper": 61.4,
    "reactnet": 65.9,
}
SOURCE = (
    "ImageNet ResNet-18 top-1, W1A1, each paper's own recipe (shared/research/algorithms.md §3.1: IR-Net, "
    "ReCU, BiPer, ReActNet READMEs; BNN, XNOR-Net, Bi-Real from the ReCU/BiPer tables)"
)
#: A suite rank this many places from the published one counts as a disagreement to explain.
DISAGREEMENT = 2
#: What produced each published number, as far as the project's notes record it
#: (``shared/research/algorithms.md`` §3.1, §3.4): the conditions a suite's from-scratch runs do not share.
PUBLISHED_RECIPE: dict[str, str] = {
    "reactnet": "ReActNet's own network and recipe (RSign/RPReLU on a Bi-Real ResNet-18, two training steps, "
                "distillation from a real-valued teacher)",
    "biper": "BiPer's two-stage training (real periodic sin(ωW) weights, then their sign; on CIFAR-10 600 + "
             "300 SGD epochs)",
    "recu": "ReCU's recipe (SGD 0.1, cosine decay, weight decay 5e-4, τ annealed 0.85→0.99; on CIFAR-10 600 "
            "epochs)",
    "irnet": "IR-Net's recipe (SGD 0.1, cosine decay, weight decay 1e-4; on CIFAR-10 400 epochs)",
    "bireal": "a number recalled from the ReCU/BiPer tables ([paper-mem]), Bi-Real's own training",
    "xnor": "a number recalled from the ReCU/BiPer tables ([paper-mem]), XNOR-Net's own training",
    "bnn": "a number recalled from the ReCU/BiPer tables ([paper-mem]), BNN's own training",
}


@dataclass
class Comparison:
    """Both rankings of the methods the two share (1 = best), their correlations, and one sentence of
    evidence per disagreement."""

    methods: list[str]
    suite_rank: dict[str, float]
    published_rank: dict[str, float]
    suite_score: dict[str, float]
    spearman: float | None
    kendall: float | None
    notes: list[str] = field(default_factory=list)


def _evidence(row: LeaderboardRow, rows: list[LeaderboardRow], lb: Leaderboard, published: int, here: float) -> str:
    """Why ``row``'s suite rank differs from its published one, from the numbers."""
    parts = [f"**{row.method}**: published rank {published}, here {here:g}"]
    tied = [r.method for r in rows if r is not row and _overlap(r, row)]
    if tied:
        parts.append(f"its learning-task interval overlaps {', '.join(tied)}'s, so this suite does not resolve "
                     "their order")
    if row.by_family:
        fam, ratio = min(row.by_family.items(), key=lambda kv: kv[1])
        best = max((r.by_family.get(fam) for r in rows if r.by_family.get(fam) is not None), default=None)
        if best is not None and best - ratio > 0.02:
            parts.append(f"its weakest family is {fam} (A_bi/A_fp {fmt(ratio)} vs best {fmt(best)})")
    cells = [c for c in lb.cells if c.method == row.method and c.precision == row.group and c.excluded is None]
    if cells:
        runs = ", ".join(f"{c.arch}/{c.task} {c.hparams.get('epochs', '?')} epochs (A_bi/A_fp {fmt(c.acc_ratio)})"
                         for c in sorted(cells, key=lambda c: (c.task, c.arch)))
        parts.append(f"trained here {_start(cells)}: {runs}")
    if row.method in PUBLISHED_RECIPE:
        parts.append(f"published with {PUBLISHED_RECIPE[row.method]}")
    return "; ".join(parts) + "."


def _start(cells: list[Any]) -> str:
    """Where the binarized runs of these cells started: their FP model's weights (``init = "fp"``) or scratch."""
    inits = {c.hparams.get("init", "scratch") for c in cells}
    if inits == {"fp"}:
        return "from the FP model's weights"
    return "from scratch" if inits <= {"scratch"} else "from scratch or from the FP model's weights"


def _overlap(a: LeaderboardRow, b: LeaderboardRow) -> bool:
    ca, cb = a.ci.get("task"), b.ci.get("task")
    return bool(ca and cb and ca[0] <= cb[1] and cb[0] <= ca[1])


def compare(lb: Leaderboard, group: str = PRIMARY) -> Comparison | None:
    """The comparison for ``group``'s learning-task ranking; None with fewer than three shared methods."""
    rows = [r for r in lb.group_rows(group) if r.method in IMAGENET_RESNET18 and r.scores.get("task") is not None]
    if len(rows) < 3:
        return None
    scores = {r.method: r.scores["task"] for r in rows}
    published = {m: IMAGENET_RESNET18[m] for m in scores}
    suite_rank, pub_rank = S.ranks(scores), S.ranks(published)
    methods = sorted(scores, key=lambda m: pub_rank[m])
    xs, ys = [published[m] for m in methods], [scores[m] for m in methods]
    comp = Comparison(methods, suite_rank, pub_rank, scores, S.spearman_rho(xs, ys), S.kendall_tau(xs, ys))
    for r in sorted(rows, key=lambda r: pub_rank[r.method]):
        if abs(suite_rank[r.method] - pub_rank[r.method]) >= DISAGREEMENT:
            comp.notes.append(_evidence(r, rows, lb, int(pub_rank[r.method]), suite_rank[r.method]))
    return comp


def conditions(lb: Leaderboard, group: str = PRIMARY) -> str:
    """What differs between the published ranking's conditions and this suite's, from the suite's cells."""
    cells = [c for c in lb.cells if c.precision == group and c.excluded is None and c.acc_ratio is not None]
    settings = sorted({(c.task, c.arch) for c in cells})
    described = []
    for task, arch in settings:
        here = [c for c in cells if (c.task, c.arch) == (task, arch)]
        epochs = sorted({c.hparams.get("epochs") for c in here if c.hparams.get("epochs")})
        ratios = [c.acc_ratio for c in here]
        n_test = here[0].n_test
        described.append(
            f"{task} × {arch}: {'/'.join(map(str, epochs))} epochs, {n_test or '?'} test samples, FP "
            f"{fmt(here[0].acc_fp, 2)}%, A_bi/A_fp {fmt(min(ratios))}–{fmt(max(ratios))} across methods")
    here_text = "; ".join(described) if described else "no scored setting"
    return ("What differs between the two rankings' conditions: the published numbers are ImageNet (1.28M "
            "training images, 1000 classes, 224x224) ResNet-18s, each trained with its paper's recipe "
            "(hundreds of epochs, often from a full-precision checkpoint, two stages or distillation); this "
            f"suite trains small networks {_start(cells)} with one shared recipe — {here_text}. A rank here is "
            "the accuracy a method reaches within that budget; compare the differences with each task's "
            "resolvable difference under Full-precision baselines.")


def summary_line(comp: Comparison | None) -> str:
    """One sentence for the report and README."""
    if comp is None:
        return "Fewer than three methods with a published ImageNet ResNet-18 number: no comparison."
    return (f"Rank correlation with the published ImageNet ResNet-18 ranking over {len(comp.methods)} methods: "
            f"Spearman ρ = {fmt(comp.spearman, 2)}, Kendall τ = {fmt(comp.kendall, 2)}.")


def as_rows(comp: Comparison) -> list[list[Any]]:
    """Table rows: method, published top-1, published rank, suite task score, suite rank."""
    return [[m, f"{IMAGENET_RESNET18[m]:.1f}", f"{comp.published_rank[m]:g}", fmt(comp.suite_score[m]),
             f"{comp.suite_rank[m]:g}"] for m in comp.methods]
