"""Scoring details found by single-file mutation samples of src/onebit/bench/scores.py (tools/mutate.py
--file src/onebit/bench/scores.py --sample 15 --seed 2001; issue 21): each test fails on a plausible
one-line bug that every earlier test let through."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from onebit.bench import metrics as M
from onebit.bench.scores import Cell, leaderboard, print_leaderboard


def _seeded(run, method_accs: dict[str, float], seeds: int = 2, **kw):
    return [run(m, a, seed=s, **kw) for s in range(seeds) for m, a in {"fp": 95.0, **method_accs}.items()]


def test_a_setting_does_not_depend_on_the_order_of_its_hyper_parameters():
    """scores.py:160: a setting is (arch, task, hyper-parameters as a set of names and values): the same
    hyper-parameters written in another order are the same setting (its FP bootstrap draws are shared)."""
    a = Cell("bnn", "mlp", "mlp", "digits", {"lr": 0.1, "epochs": 2}, [0])
    b = Cell("xnor", "mlp", "mlp", "digits", {"epochs": 2, "lr": 0.1}, [0])
    c = Cell("xnor", "mlp", "mlp", "digits", {"epochs": 3, "lr": 0.1}, [0])
    assert a.setting_key == b.setting_key
    assert a.setting_key != c.setting_key


def test_flops_and_params_are_derived_from_their_parts_when_missing(run):
    """scores.py:359: a record without ``flops_bibench`` gets BiBench's FLOPs from its own ``bops`` and
    ``fp_macs`` (BOPs / 64 + FP MACs), and params from ``params_1bit`` and ``params_32bit``; an FP record
    without ``bops`` has 0 binary operations."""
    recs = []
    for seed in (0, 1):
        recs.append(run("fp", 95.0, seed=seed, fp_macs=6400.0, params_32bit=320.0))
        recs.append(run("bnn", 80.0, seed=seed, bops=6400.0, fp_macs=100.0, params_1bit=3200.0,
                        params_32bit=10.0))
    cell = next(c for c in leaderboard(recs, bootstrap=20).cells if c.method == "bnn")
    assert cell.flops_bi == pytest.approx(M.bibench_flops(6400.0, 100.0)) == pytest.approx(200.0)
    assert cell.flops_fp == pytest.approx(6400.0)
    assert cell.flops_ratio == pytest.approx(6400.0 / 200.0)
    assert cell.params_bi == pytest.approx(110.0) and cell.params_fp == pytest.approx(320.0)
    assert cell.params_ratio == pytest.approx(320.0 / 110.0)


def test_the_printed_rank_has_two_decimals(run):
    """scores.py:931: the rank column shows the overall mean rank with two decimals, as the caption's
    other columns (three for ratios)."""
    lb = leaderboard(_seeded(run, {"bnn": 80.0, "xnor": 85.0}), bootstrap=50)
    buf = io.StringIO()
    print_leaderboard(lb, console=Console(file=buf, width=200))
    lines = {row.method: next(ln for ln in buf.getvalue().splitlines() if f" {row.method} " in f" {ln} ")
             for row in lb.group_rows(lb.groups[0])}
    for method, line in lines.items():
        overall = lb.row(method).overall
        assert line.split()[-1].rstrip("≈") == f"{overall:.2f}"
        assert f"{overall:.3f}" not in line.split()[-1]


def test_a_track_is_available_when_any_method_has_a_score_on_it(run):
    """scores.py Leaderboard.track_available: one method with training times is enough for the training
    track (another without them has no score there); a track nobody has is not available."""
    recs = _seeded(run, {"bnn": 80.0, "xnor": 85.0})
    for r in recs:
        if r.method == "xnor":
            del r.metrics["epoch_time_s"]
    lb = leaderboard(recs, bootstrap=50)
    assert lb.row("bnn").scores.get("train") is not None and lb.row("xnor").scores.get("train") is None
    assert lb.track_available("train") and lb.track_available("task")
    assert not lb.track_available("no-such-track")


def test_the_printed_table_has_no_edge_padding(run):
    """scores.py print_leaderboard: pad_edge=False, so a line starts with the box's one-space edge and the
    right-justified "#" column, with no padding column beside it (which keeps the table within 80
    columns); with edge padding every line would start one space further right."""
    lb = leaderboard(_seeded(run, {"bnn": 80.0, "xnor": 85.0, "dorefa": 70.0}), bootstrap=50)
    buf = io.StringIO()
    print_leaderboard(lb, console=Console(file=buf, width=80))
    lines = buf.getvalue().splitlines()
    rows = lb.group_rows(lb.groups[0])
    ranks = {r.method: str(r.rank) + ("≈" if r.tied_best.get("overall") and r.rank != 1 else "") for r in rows}
    width = max(len("#"), *(len(v) for v in ranks.values()))
    header = next(ln for ln in lines if " method " in ln)
    assert header.startswith(" " + "#".rjust(width) + "  method")
    for method, rank in ranks.items():
        line = next(ln for ln in lines if f" {method} " in f" {ln} ")
        assert line.startswith(" " + rank.rjust(width) + "  " + method), line
