"""What a new user saw first and read wrong (issue 16, item 9): every method on the accuracy-vs-BOPs plot,
the 0-BOPs strip without a BOP count under it, and a progress line that fits an 80-column terminal.
(The robustness tables' width: tests/bench/test_scores_report.py.)"""

from __future__ import annotations

import io

import pytest

from onebit.bench import report as R
from onebit.bench.db import RunRecord
from onebit.bench.runner import _Display
from onebit.bench.scores import leaderboard

#: four W1A1 methods with the same BOP count, three of them within 0.2 points (their points would
#: coincide), and a weight-only one with 0 BOPs
ACC = {"bnn": 80.0, "dorefa": 80.1, "xnor": 80.2, "recu": 84.0}


def _records(run):
    recs = []
    for seed in range(3):
        recs.append(run("fp", 95.0, seed=seed, bops=0, fp_macs=1e6, params_32bit=1e5))
        recs += [run(m, acc, seed=seed, bits=(1, 1), bops=5e5, fp_macs=1e3, params_1bit=1e5, params_32bit=100)
                 for m, acc in ACC.items()]
        recs.append(run("pcpp-pc", 93.0, seed=seed, bits=(1, 32), bops=0, fp_macs=1e6, params_1bit=1e5,
                        params_32bit=100))
    return recs


@pytest.fixture
def bops_figure(run, monkeypatch):
    """The accuracy-vs-BOPs figure, drawn, as the report renders it."""
    figures = []
    monkeypatch.setattr(R, "_png", lambda fig: figures.append(fig) or b"png")
    lb = leaderboard(_records(run), bootstrap=50)
    assert R._plot_acc_vs_bops(lb) == b"png"
    fig = figures[0]
    fig.canvas.draw()
    return fig, lb


def _points(ax):
    return [tuple(xy) for col in ax.collections for xy in col.get_offsets()]


def test_every_method_is_drawn_zero_bops_left_of_the_line_coinciding_points_apart(bops_figure):
    fig, lb = bops_figure
    ax = fig.axes[0]
    points = _points(ax)
    cells = [c for c in lb.cells if c.acc_bi is not None]
    assert len(points) == len(cells) == 5  # one point per (method, group): the 0-BOPs one included
    boundary = ax.lines[0].get_xdata()[0]  # the dashed line between the 0-BOPs strip and the log axis
    zero = [x for x, y in points if y == pytest.approx(93.0)]
    assert len(zero) == 1 and zero[0] < boundary < min(x for x, y in points if y != pytest.approx(93.0))
    near = sorted(x for x, y in points if 79.9 < y < 80.3)  # bnn, dorefa, xnor: same BOPs, same height
    assert len(near) == 3 and near[0] < near[1] < near[2] and near[2] / near[0] > 1.1  # spread apart


def test_no_bop_count_is_printed_under_the_zero_bops_strip(bops_figure):
    fig, _ = bops_figure
    ax = fig.axes[0]
    boundary = ax.lines[0].get_xdata()[0]
    labels = [(t.get_position()[0], t.get_text()) for minor in (False, True)
              for t in ax.get_xticklabels(minor=minor)]
    left, right = [s for x, s in labels if x < boundary], [s for x, s in labels if x >= boundary]
    assert left and all(s == "" for s in left)  # ticks there, but no number that reads as a BOP count
    assert any(s for s in right)  # the log axis keeps its labels
    assert any(t.get_text() == "0 BOPs" for t in ax.texts)


def _record(method: str, status: str = "done", acc: float | None = 91.25) -> RunRecord:
    metrics = {"acc": acc} if acc is not None else {}
    return RunRecord("r", "s", "main", method, "mlp", "mlp", "digits", 0, {}, status=status, metrics=metrics)


def test_progress_line_fits_80_columns_and_keeps_count_eta_and_result():
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None, legacy_windows=False)
    display = _Display(True, 423, console=console)
    long_label = "pcpp-bnn+ resnet18_imagenet/imagefolder seed 2 sgd 0.01 cosine W1A32"
    display.update(_record("pcpp-bnn+"), long_label)
    display.progress.refresh()  # a frame per result (the live display's own thread redraws at 10 Hz)
    display.update(_record("bnn", status="failed", acc=None), "bnn mlp/digits seed 0")
    display.progress.refresh()
    display.close()
    frames = [line for chunk in out.getvalue().replace("\r", "\n").split("\n")
              if (line := _strip_ansi(chunk)).strip()]
    assert frames
    assert all(len(line) <= 80 for line in frames), max(frames, key=len)
    first = next(line for line in frames if "1/423" in line)
    assert "ETA" in first and "91.2%" in first and "pcpp-bnn+" in first and "…" in first  # cut, not wrapped
    assert any("2/423" in line and "FAILED bnn mlp/digits seed 0" in line for line in frames)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
