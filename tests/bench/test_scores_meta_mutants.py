"""What the leaderboard says about its runs (``meta``) and its FP baselines, field by field on hand-made
records, so that a one-line bug in their bookkeeping (a count that does not count, a filter turned
round, a wrong constant) fails a test (tools/mutate.py, issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

from onebit.bench import stats as S
from onebit.bench.scores import leaderboard


def _records(run):
    recs = []
    for seed in (0, 1):
        for method, acc in (("fp", 90.0), ("bnn", 72.0), ("xnor", 81.0)):
            r = run(method, acc + seed, seed=seed, n_test=400, n_classes=4)
            r.suite, r.code_version, r.machine = "s1", f"v{seed}", "box-a" if method != "xnor" else "box-b"
            r.started, r.finished = 100.0 + 10 * seed, 105.0 + 10 * seed + (method == "bnn")
            recs.append(r)
    extra = run("bnn", 70.0, seed=0, task="mnist1d", arch="conv1d", role="sensitivity", n_test=400, n_classes=4)
    extra.suite, extra.started, extra.finished = "s2", 0.0, 0.0  # unknown times: left out of the span
    fp_extra = run("fp", 88.0, seed=0, task="mnist1d", arch="conv1d", role="sensitivity", n_test=400, n_classes=4)
    fp_extra.suite = "s2"
    return recs + [extra, fp_extra]


def test_meta_counts_and_lists_every_run(run):
    lb = leaderboard(_records(run), bootstrap=20, eps=0.25)
    meta = lb.meta
    assert meta["suites"] == ["s1", "s2"]
    assert meta["code_versions"] == ["v0", "v1"]  # empty versions (the sensitivity runs) are left out
    assert meta["machines"] == ["box-a", "box-b"]
    assert meta["n_runs"] == 8
    assert meta["n_runs_by_role"] == {"main": 6, "sensitivity": 2}
    assert meta["n_fp_runs"] == 3
    assert meta["tasks"] == ["digits", "mnist1d"] and meta["archs"] == ["conv1d", "mlp"]
    assert meta["families"] == ["cnn", "mlp"]
    assert meta["started"] == 100.0 and meta["finished"] == 116.0
    assert (meta["overall"], meta["eps"], meta["bootstrap"]) == ("rank", 0.25, 20)
    assert meta["missing_baselines"] == []
    assert meta["infer_source"] == "trained models"


def test_meta_leaves_out_failed_runs_and_inference_tasks(run):
    recs = _records(run)
    failed = run("bnn", 10.0, seed=5)
    failed.status = "failed"
    infer = run("bnn", 0.0, task="timing-only", arch="vit", role="inference")
    infer.started, infer.finished = 50.0, 200.0
    lb = leaderboard(recs + [failed, infer], bootstrap=20)
    assert lb.meta["n_runs"] == 9 and lb.meta["n_runs_by_role"] == {"inference": 1, "main": 6, "sensitivity": 2}
    assert "timing-only" not in lb.meta["tasks"] and "vit" not in lb.meta["archs"]
    assert "transformer" in lb.meta["families"]  # families list every finished run's
    assert (lb.meta["started"], lb.meta["finished"]) == (50.0, 200.0)


def test_baselines_carry_chance_noise_and_seeds(run):
    lb = leaderboard(_records(run), bootstrap=20)
    base = next(b for b in lb.baselines if (b.task, b.arch) == ("digits", "mlp"))
    assert base.seeds == [0, 1] and base.family == "mlp"
    assert base.acc_fp == pytest.approx(90.5)
    assert (base.n_test, base.n_classes) == (400, 4)
    assert base.chance == pytest.approx(25.0)  # 100 / 4 classes
    assert base.flag is None
    assert base.resolvable == pytest.approx(S.resolvable_difference(90.5, 400, 2))
    assert [(b.task, b.arch) for b in lb.baselines] == [("digits", "mlp")]  # sensitivity runs: no baseline row


def test_a_baseline_without_a_class_count_has_no_chance_level(run):
    recs = [run("fp", 90.0, n_classes=None), run("bnn", 70.0, n_classes=None)]
    base = leaderboard(recs, bootstrap=20).baselines[0]
    assert base.chance is None and base.n_classes is None


def test_bootstrap_redraws_a_corrupted_accuracy_from_all_its_severities_samples(run, monkeypatch):
    """scores.py `n = cell.n_test * entry["severities"]` (mutant: `/`, seed-1002 sample of scores.py): a
    corruption's accuracy averages its severities, each measured on the n test samples, so its bootstrap
    copies are redrawn from n·severities samples (the clean accuracies from n)."""
    from onebit.bench import scores

    seen = []
    real = S.binomial_draws

    def spy(rng, acc, n, size):
        seen.append((tuple(np.round(np.asarray(acc, dtype=float), 3)), n))
        return real(rng, acc, n, size)

    monkeypatch.setattr(scores.S, "binomial_draws", spy)
    corrupt = {f"corrupt/gaussian_noise/{s}": 60.0 for s in (1, 2, 3)}
    recs = [run(m, a, seed=s, n_test=400, **corrupt) for s in (0, 1) for m, a in (("fp", 95.0), ("bnn", 80.0))]
    leaderboard(recs, bootstrap=20)
    assert sorted(set(seen)) == [((60.0, 60.0), 1200), ((80.0, 80.0), 400), ((95.0, 95.0), 400)]
