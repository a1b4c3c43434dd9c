"""Scoring details that the seed-59 mutation sample (tools/mutate.py, issue 21) found untested: a cell
built by hand is not deployable until a deployment says so, and the inference track of trained models
takes a cell's latency and storage ratios only together (a cell missing one of them gives neither)."""

from __future__ import annotations

import pytest

from onebit.bench.scores import Cell, leaderboard


def test_a_cell_is_not_deployable_until_measured():
    """scores.py:145: a Cell made without deployment measurements (as a report or a test builds one)
    has no deployed model, hence no latency or storage to compare."""
    cell = Cell("bnn", "mlp", "mlp", "digits", {"lr": 0.1}, [0])
    assert cell.deployable is False
    assert (cell.latency_ratio, cell.storage_ratio) == (None, None)


def _setting(run, arch: str, fp: dict, bnn: dict) -> list:
    return [rec for seed in (0, 1) for rec in (run("fp", 95.0, arch=arch, seed=seed, **fp),
                                               run("bnn", 85.0, arch=arch, seed=seed, deployable=1, **bnn))]


def test_inference_track_takes_only_cells_with_both_ratios(run):
    """scores.py:704: the mlp cell has both ratios (latency 2.0/0.5 = 4, storage 40000/2000 = 20); the
    conv1d cell has a latency ratio (2) but no file sizes, the resnet20 cell a storage ratio (10) but no
    latency. Only the mlp cell counts, for latency and storage alike."""
    recs = _setting(run, "mlp", {"latency_ms": 2.0, "file_bytes": 40000},
                    {"latency_ms": 0.5, "latency_fp32_ms": 2.0, "file_bytes": 2000})
    recs += _setting(run, "conv1d", {"latency_ms": 2.0}, {"latency_ms": 1.0, "latency_fp32_ms": 2.0})
    recs += _setting(run, "resnet20", {"file_bytes": 40000}, {"file_bytes": 4000})
    lb = leaderboard(recs, bootstrap=20)
    by_arch = {c.arch: c for c in lb.cells if c.method == "bnn"}
    assert all(c.deployable for c in by_arch.values())
    assert (by_arch["conv1d"].latency_ratio, by_arch["conv1d"].storage_ratio) == (pytest.approx(2.0), None)
    assert (by_arch["resnet20"].latency_ratio, by_arch["resnet20"].storage_ratio) == (None, pytest.approx(10.0))
    row = lb.row("bnn")
    assert row.latency_ratio == pytest.approx(4.0)
    assert row.storage_ratio == pytest.approx(20.0)
    assert row.scores["infer"] == pytest.approx(((4.0**2 + 20.0**2) / 2) ** 0.5)
