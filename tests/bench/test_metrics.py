"""BiBench's track metrics on hand-computed numbers, and the leaderboard of a hand-built results database."""

import math

import pytest

from onebit.bench import metrics as M
from onebit.bench.db import ResultsDB, RunRecord
from onebit.bench.scores import MissingBaselineError, fmt, leaderboard, print_leaderboard

# ---------------------------------------------------------------------------------------------------
# metric formulas


def test_means():
    assert M.mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert M.quadratic_mean([3.0, 4.0]) == pytest.approx(math.sqrt(12.5))  # sqrt((9 + 16) / 2)
    assert M.quadratic_mean([2.0]) == pytest.approx(2.0)
    assert M.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    for f in (M.mean, M.quadratic_mean, M.geometric_mean):
        with pytest.raises(ValueError, match="no values"):
            f([])
        with pytest.raises(ValueError, match="finite"):
            f([1.0, float("nan")])
    with pytest.raises(ValueError, match="positive"):
        M.geometric_mean([1.0, 0.0])


def test_task_and_arch_scores():
    assert M.accuracy_ratio(45.0, 90.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="full-precision accuracy"):
        M.accuracy_ratio(50.0, 0.0)
    # E[a] = (0.9 + 0.7) / 2 = 0.8, E[b] = 0.6: sqrt((0.64 + 0.36) / 2) = sqrt(0.5)
    assert M.task_score({"a": [0.9, 0.7], "b": 0.6}) == pytest.approx(math.sqrt(0.5))
    # three families: sqrt((1 + 0.25 + 0.49) / 3)
    assert M.arch_score({"cnn": 1.0, "mlp": [0.4, 0.6], "transformer": 0.7}) == pytest.approx(math.sqrt(1.74 / 3))
    with pytest.raises(ValueError, match="non-empty"):
        M.task_score({})


def test_robustness():
    assert M.corruption_gap(90.0, 85.5) == pytest.approx(4.5)
    assert M.corruption_gap(80.0, 81.0) == pytest.approx(-1.0)
    assert M.robustness_ratio(6.0, 3.0) == pytest.approx(2.0)  # binarized loses half as much: 2x as robust
    # a binarized model that gains accuracy under corruption: its gap is floored at eps
    assert M.robustness_ratio(2.0, -0.5) == pytest.approx(20.0)
    assert M.robustness_ratio(2.0, 0.0, eps=0.5) == pytest.approx(4.0)
    assert M.robustness_ratio(-1.0, 4.0) == pytest.approx(0.1 / 4.0)
    with pytest.raises(ValueError, match="eps"):
        M.robustness_ratio(1.0, 1.0, eps=0.0)
    # E = 2 and (1 + 3) / 2 = 2... then sqrt((4 + 16) / 2)
    assert M.robustness_score({"noise": [1.0, 3.0], "blur": 4.0}) == pytest.approx(math.sqrt(10.0))


def test_training_score():
    assert M.training_score(0.5, 2.0) == pytest.approx(math.sqrt((0.25 + 4.0) / 2))
    assert M.training_score([0.4, 0.6], [1.0, 3.0]) == pytest.approx(math.sqrt((0.25 + 4.0) / 2))
    assert M.training_score([0.4, 0.6], None) == pytest.approx(0.5)  # no grid: the time part alone
    assert M.training_score(None, [3.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="training"):
        M.training_score(None, None)


def test_complexity_and_inference():
    assert M.bibench_flops(6400, 100) == pytest.approx(200.0)  # 6400 / 64 + 100
    assert M.bibench_params(3200, 50) == pytest.approx(150.0)  # 3200 / 32 + 50
    # r_c = 64000 / (60000/64 + 4000) = 12.962..., r_s = 10000 / (9600/32 + 400) = 14.2857...
    r_c = 64000 / M.bibench_flops(60000, 4000)
    r_s = 10000 / M.bibench_params(9600, 400)
    assert r_c == pytest.approx(12.9620253)
    assert r_s == pytest.approx(14.2857143)
    assert M.complexity_score(r_c, r_s) == pytest.approx(13.6399363)
    assert M.inference_score([2.0, 4.0], 10.0) == pytest.approx(math.sqrt((9 + 100) / 2))


def test_overall_score():
    scores = {"task": 1.0, "comp": 4.0, "infer": None}
    assert M.overall_score(scores) == pytest.approx(2.0)
    assert M.overall_score(scores, "quadratic") == pytest.approx(math.sqrt(8.5))
    assert M.overall_score(scores, "arithmetic") == pytest.approx(2.5)
    assert M.overall_score({"task": None}) is None
    with pytest.raises(ValueError, match="geometric"):
        M.overall_score(scores, "median")


# ---------------------------------------------------------------------------------------------------
# the leaderboard of a hand-built database: bnn and xnor + fp, tasks digits and mnist1d, archs mlp
# (family mlp) and conv1d (family cnn), two seeds, corruptions on digits/mlp, a 3-point lr grid

HP = {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "epochs": 2}
FAMILY = {"mlp": "mlp", "conv1d": "cnn"}
# clean accuracy per (method, task, arch) and seed
ACC = {
    ("fp", "digits", "mlp"): (97.0, 99.0),
    ("fp", "digits", "conv1d"): (96.0, 96.0),
    ("fp", "mnist1d", "mlp"): (80.0, 80.0),
    ("fp", "mnist1d", "conv1d"): (90.0, 90.0),
    ("bnn", "digits", "mlp"): (87.2, 89.2),  # mean 88.2 = 0.9 x 98
    ("bnn", "digits", "conv1d"): (86.4, 86.4),  # 0.9
    ("bnn", "mnist1d", "mlp"): (64.0, 64.0),  # 0.8
    ("bnn", "mnist1d", "conv1d"): (81.0, 81.0),  # 0.9
    ("xnor", "digits", "mlp"): (93.1, 93.1),  # 0.95 everywhere
    ("xnor", "digits", "conv1d"): (91.2, 91.2),
    ("xnor", "mnist1d", "mlp"): (76.0, 76.0),
    ("xnor", "mnist1d", "conv1d"): (85.5, 85.5),
}
# corrupted accuracy on digits/mlp: (gaussian_noise severity 1, severity 2, brightness severity 1)
CORRUPT = {"fp": (90.0, 80.0, 96.0), "bnn": (82.2, 75.2, 88.7), "xnor": (87.1, 80.1, 92.1)}
COST = {  # epoch_time_s, params_1bit, params_32bit, bops, fp_macs, deployable, latency_ms, file_bytes
    "fp": (1.0, 0, 10000, 0, 64000, 1, 2.0, 40000),
    "bnn": (2.0, 9600, 400, 60000, 4000, 1, 0.5, 2000),
    "xnor": (1.25, 9600, 500, 60000, 5000, 0, None, None),
}
GRID = {"fp": (90.0, 94.0, 98.0), "bnn": (80.0, 88.0, 96.0), "xnor": (92.0, 93.0, 94.0)}


def _records(*, drop=None, corruptions=True, grid=True):
    out = []
    for (method, task, arch), accs in ACC.items():
        for seed, acc in enumerate(accs):
            t, p1, p32, bops, fpm, dep, lat, size = COST[method]
            m = {
                "acc": acc,
                "epoch_time_s": t,
                "params_1bit": p1,
                "params_32bit": p32,
                "bops": bops,
                "fp_macs": fpm,
                "params_bibench": p1 / 32 + p32,
                "flops_bibench": bops / 64 + fpm,
                "deployable": dep,
            }
            if lat is not None:
                m.update(latency_ms=lat, file_bytes=size)
            if corruptions and (task, arch) == ("digits", "mlp"):
                g1, g2, b1 = CORRUPT[method]
                m.update({"corrupt/gaussian_noise/1": g1, "corrupt/gaussian_noise/2": g2, "corrupt/brightness/1": b1})
            run_id = f"main-{method}-{task}-{arch}-{seed}"
            if run_id != drop:
                out.append(
                    RunRecord(
                        run_id,
                        "unit",
                        "main",
                        method,
                        arch,
                        FAMILY[arch],
                        task,
                        seed,
                        {"hparams": HP},
                        code_version="abc123",
                        machine="test-box",
                        started=1.0e9 + len(out),
                        finished=1.0e9 + len(out) + 1,
                        metrics=m,
                    )
                )
    if grid:
        for method, accs in GRID.items():
            for lr, acc in zip((0.1, 0.01, 0.001), accs):
                hp = dict(HP, lr=lr)
                out.append(
                    RunRecord(
                        f"sens-{method}-{lr}",
                        "unit",
                        "sensitivity",
                        method,
                        "mlp",
                        "mlp",
                        "digits",
                        0,
                        {"hparams": hp},
                        metrics={"acc": acc, "epoch_time_s": COST[method][0]},
                    )
                )
    return out


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "results.sqlite"
    with ResultsDB(path) as db:
        for r in _records():
            db.write_run(r)
    return path


def test_leaderboard_numbers(results_db):
    lb = leaderboard(results_db.parent)
    bnn, xnor = lb.row("bnn"), lb.row("xnor")
    assert {r.method for r in lb.rows} == {"bnn", "xnor"}  # fp is the reference, not a row

    # learning task: digits E = 0.9, mnist1d E = (0.8 + 0.9) / 2 = 0.85
    assert bnn.by_task == pytest.approx({"digits": 0.9, "mnist1d": 0.85})
    assert bnn.scores["task"] == pytest.approx(math.sqrt((0.81 + 0.7225) / 2))
    # architecture: mlp (0.9 + 0.8) / 2 = 0.85, cnn 0.9
    assert bnn.by_family == pytest.approx({"mlp": 0.85, "cnn": 0.9})
    assert bnn.scores["arch"] == pytest.approx(math.sqrt((0.7225 + 0.81) / 2))
    assert xnor.scores["task"] == pytest.approx(0.95)
    assert xnor.scores["arch"] == pytest.approx(0.95)

    # robustness (digits/mlp): fp gaps 98 - 85 = 13 (noise), 98 - 96 = 2 (brightness);
    # bnn 88.2 - 78.7 = 9.5 and 88.2 - 88.7 = -0.5 -> floored at 0.1 (no test-set size recorded), so
    # 2 / 0.1 = 20, clipped at ROBUST_CLIP = 4; xnor 93.1 - 83.6 = 9.5 and 1.0
    assert bnn.by_corruption == pytest.approx({"gaussian_noise": 13 / 9.5, "brightness": 4.0})
    assert bnn.scores["robust"] == pytest.approx(math.sqrt(((13 / 9.5) ** 2 + 16) / 2))
    assert xnor.scores["robust"] == pytest.approx(math.sqrt(((13 / 9.5) ** 2 + 4) / 2))
    cell = next(c for c in lb.cells if (c.method, c.task, c.arch) == ("bnn", "digits", "mlp"))
    assert cell.seeds == [0, 1]
    assert cell.acc_bi == pytest.approx(88.2) and cell.acc_fp == pytest.approx(98.0)
    assert cell.corruption["gaussian_noise"]["gap_fp"] == pytest.approx(13.0)

    # training: time ratios 1/2 and 1/1.25; grid std: fp sqrt(32/3), bnn sqrt(128/3), xnor sqrt(2/3)
    sens = {s.method: s for s in lb.sensitivity}
    assert sens["bnn"].std_fp == pytest.approx(math.sqrt(32 / 3))
    assert sens["bnn"].ratio == pytest.approx(0.5)
    assert sens["xnor"].ratio == pytest.approx(4.0)
    assert bnn.scores["train"] == pytest.approx(0.5)
    assert xnor.scores["train"] == pytest.approx(math.sqrt((0.64 + 16) / 2))

    # complexity: bnn r_c = 64000 / 4937.5, r_s = 10000 / 700; xnor r_c = 64000 / 5937.5, r_s = 10000 / 800
    assert bnn.flops_ratio == pytest.approx(64000 / 4937.5)
    assert bnn.params_ratio == pytest.approx(10000 / 700)
    assert bnn.scores["comp"] == pytest.approx(13.6399363)
    assert xnor.scores["comp"] == pytest.approx(math.sqrt(((64000 / 5937.5) ** 2 + 12.5**2) / 2))

    # inference: bnn latency 2.0 / 0.5 = 4, storage 40000 / 2000 = 20; xnor is not deployable
    assert bnn.scores["infer"] == pytest.approx(math.sqrt(208.0))
    assert xnor.scores["infer"] is None
    assert fmt(xnor.scores["infer"]) == "—"

    # overall: the mean of per-track ranks (xnor leads task, arch, train; bnn robust, comp; infer: bnn alone)
    assert bnn.track_ranks == {"task": 2, "arch": 2, "robust": 1, "train": 2, "comp": 1, "infer": 1}
    assert xnor.track_ranks == {"task": 1, "arch": 1, "robust": 2, "train": 1, "comp": 2}
    assert bnn.overall == pytest.approx(9 / 6) and xnor.overall == pytest.approx(7 / 5)
    assert [r.method for r in lb.rows] == ["xnor", "bnn"] and [r.rank for r in lb.rows] == [1, 2]
    assert all(r.group == "W1A1" for r in lb.rows)

    meta = lb.meta
    assert meta["n_runs"] == 24 + 9 and meta["n_runs_by_role"] == {"main": 24, "sensitivity": 9}
    assert meta["suites"] == ["unit"] and meta["machines"] == ["test-box"]
    d = lb.as_dict()
    assert d["rows"][0]["method"] == lb.rows[0].method and len(d["cells"]) == 8


def test_records_and_database_agree(results_db):
    from_db = leaderboard(results_db)
    from_records = leaderboard(_records())
    for a, b in zip(from_db.rows, from_records.rows):
        assert a.method == b.method
        assert a.scores == pytest.approx(b.scores)


def test_missing_baseline_names_what_to_add():
    with pytest.raises(MissingBaselineError, match=r"arch=conv1d, task=mnist1d, seed=1") as info:
        leaderboard(_records(drop="main-fp-mnist1d-conv1d-1"))
    assert "Add 'fp' to the suite's methods" in str(info.value)
    assert "2 full-precision baseline run(s) missing" in str(info.value)  # bnn and xnor both lack it


def test_missing_tracks_are_none_not_zero():
    recs = [r for r in _records(corruptions=False, grid=False) if r.method != "bnn"]
    lb = leaderboard(recs)
    (row,) = lb.rows
    assert row.scores["robust"] is None and row.scores["infer"] is None
    assert row.scores["train"] == pytest.approx(0.8)  # time part alone
    assert not lb.track_available("robust") and lb.track_available("comp")


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="onebit bench"):
        leaderboard(tmp_path)
    with pytest.raises(ValueError, match="no finished runs"):
        leaderboard([])


def test_print_leaderboard(results_db):
    from rich.console import Console

    lb = leaderboard(results_db)
    console = Console(record=True, width=80)
    print_leaderboard(lb, console=console)
    text = console.export_text()
    assert "bnn" in text and "xnor" in text and "infer" in text
    assert "—" in text  # xnor's missing inference score
    assert fmt(lb.row("bnn").scores["comp"]) in text  # numbers are not truncated at 80 columns


def test_paired_fp32_latency_is_preferred():
    recs = _records(corruptions=False, grid=False)
    for r in recs:
        if r.method == "bnn":
            r.metrics["latency_fp32_ms"] = 1.0  # timed next to the packed model: 1.0 / 0.5 = 2
    bnn = leaderboard(recs).row("bnn")
    assert bnn.latency_ratio == pytest.approx(2.0)
    assert bnn.scores["infer"] == pytest.approx(math.sqrt((4 + 400) / 2))


def test_settings_with_other_model_options_need_their_own_baseline():
    recs = _records(corruptions=False, grid=False)
    for r in recs:
        if (r.method, r.task, r.arch) == ("xnor", "digits", "mlp"):
            r.config = dict(r.config, setting={"model_options": {"hidden": [64]}})
    with pytest.raises(MissingBaselineError, match=r'model_options=\{"hidden": \[64\]\}'):
        leaderboard(recs)
    # without strict, the unmatched runs are left out and listed
    lb = leaderboard(recs, strict=False)
    assert len(lb.meta["missing_baselines"]) == 2  # two seeds
    assert lb.row("xnor").by_task == pytest.approx({"digits": 0.95, "mnist1d": 0.95})
    assert not any(c.method == "xnor" and (c.task, c.arch) == ("digits", "mlp") for c in lb.cells)
