"""Like for like: a run's weight/activation bit widths are part of its identity, and a W1A32 run never
enters a W1A1 ranking (issue 16, item 1)."""

from __future__ import annotations

import pytest

from onebit.bench.precision import declared_bits, model_bits, precision_label
from onebit.bench.scores import leaderboard
from onebit.bench.suite import load_suite


def _w1a1(run):
    recs = []
    for seed in range(3):
        recs += [run("fp", 95.0, seed=seed, bits=(32, 32)), run("bnn", 80.0 + seed, seed=seed, bits=(1, 1)),
                 run("xnor", 85.0 + seed, seed=seed, bits=(1, 1))]
    return recs


def test_a_w1a32_run_never_enters_the_w1a1_ranking(run):
    base = leaderboard(_w1a1(run), bootstrap=200)
    # a weight-only run that beats every W1A1 method by far, from the same suite and baseline
    weight_only = [run("pcpp-pc", 94.0, seed=s, bits=(1, 32)) for s in range(3)]
    lb = leaderboard(_w1a1(run) + weight_only, bootstrap=200)

    assert lb.groups == ["W1A1", "W1A32"]
    assert [r.method for r in lb.group_rows("W1A1")] == ["xnor", "bnn"]
    (wo,) = lb.group_rows("W1A32")
    assert wo.method == "pcpp-pc" and wo.rank == 1 and wo.group == "W1A32"
    # the W1A1 ranking, scores and intervals are exactly those without the W1A32 run
    for r, b in zip(lb.group_rows("W1A1"), base.group_rows("W1A1")):
        assert (r.method, r.rank, r.track_ranks) == (b.method, b.rank, b.track_ranks)
        assert r.scores == pytest.approx(b.scores) and r.ci == b.ci
    assert all(c.precision == "W1A32" for c in lb.cells if c.method == "pcpp-pc")


def test_same_method_in_two_settings_is_two_rows(run):
    recs = _w1a1(run) + [run("pcpp-pc", 90.0, seed=s, bits=(1, 1)) for s in range(3)]
    recs += [run("pcpp-pc", 94.0, seed=s, bits=(1, 32)) for s in range(3)]
    lb = leaderboard(recs, bootstrap=200)
    assert lb.row("pcpp-pc", "W1A1").scores["task"] == pytest.approx(90 / 95)
    assert lb.row("pcpp-pc", "W1A32").scores["task"] == pytest.approx(94 / 95)
    assert {r.method for r in lb.group_rows("W1A1")} == {"bnn", "xnor", "pcpp-pc"}


def test_hbnn_average_bits_is_its_own_group(run):
    recs = _w1a1(run) + [run("hbnn", 90.0, seed=s, bits=(1.4012, 1)) for s in range(3)]
    lb = leaderboard(recs, bootstrap=200)
    assert lb.groups == ["W1A1", "W1.4A1"]
    assert lb.row("hbnn").group == "W1.4A1"


def test_results_without_measured_bits_use_the_declared_ones(run):
    """Runs recorded before the runner measured w_bits/a_bits: the method's default and its options."""
    recs = [run("fp", 95.0), run("pcpp-pc", 94.0), run("bnn++", 90.0, layer_options={"binarize_activations": True}),
            run("bnn", 80.0)]
    lb = leaderboard(recs, bootstrap=50)
    assert lb.row("pcpp-pc").group == "W1A32"  # PC++ keeps activations real by default
    assert lb.row("bnn++").group == "W1A1" and lb.row("bnn").group == "W1A1"
    assert declared_bits("hbnn") == pytest.approx((1.4, 1.0)) and declared_bits("fp") == (32.0, 32.0)


def test_biper_stage_1_is_never_ranked_as_w1a1_even_when_recorded_so(run):
    """BiPer's stage 1 computes with real sin(ωW) weights; results recorded before the runner knew this
    stored it as W1A1 (the 2026-12-06 default rerun), where it took first place with real weights."""
    recs = _w1a1(run) + [run("biper", 99.0, seed=s, bits=(1, 1)) for s in range(3)]
    recs += [run("biper", 81.0, seed=s, bits=(1, 1), layer_options={"stage": 2}) for s in range(3)]
    lb = leaderboard(recs, bootstrap=50)
    assert lb.groups == ["W1A1", "W32A1"]
    assert lb.row("biper", "W32A1").scores["task"] == pytest.approx(99 / 95)
    assert [r.method for r in lb.group_rows("W1A1")] == ["xnor", "biper", "bnn"]  # stage 2 stays W1A1
    assert declared_bits("biper") == (32.0, 1.0) and declared_bits("biper", {"stage": 2}) == (1.0, 1.0)


def test_model_bits_of_built_models():
    import onebit.models

    def bits(method, **options):
        net = onebit.models.create("mlp", num_classes=10, method=method, input_shape=(16,), hidden=[8, 8], **options)
        return precision_label(*model_bits(net))

    assert bits("bnn") == "W1A1"
    assert bits("pcpp-pc") == "W1A32" and bits("pcpp-pc", binarize_activations=True) == "W1A1"
    assert bits("hbnn").startswith("W1.") and bits("hbnn").endswith("A1")
    assert precision_label(*model_bits(onebit.models.create("mlp", num_classes=10, input_shape=(16,)))) == "W32A32"
    # BiPer's stage 1 computes with the real weights sin(ωW): not W1, so never ranked against W1A1 runs
    assert bits("biper") == "W32A1" and bits("biper", stage=2) == "W1A1"


def test_suites_run_w1a1_and_label_weight_only_runs():
    default = load_suite("default")
    assert default.activations == "binary" and len(default.seeds) >= 3
    # every method of the shipped suite is W1A1 (no layer keeps real activations)
    assert all(r.layer_options in ({}, {"binarize_activations": True}) for r in default.runs())
    every = load_suite({"methods": "all", "seeds": [0], "tracks": ["accuracy"],
                        "setting": [{"task": "digits", "arch": "mlp"}]})
    main = [r for r in every.runs() if r.role == "main"]
    for method in ("pcpp-pc", "pcpp-bnn", "bnn++"):
        cells = [r for r in main if r.method == method]
        assert cells and all(r.layer_options == {"binarize_activations": True} for r in cells)
    assert all(r.layer_options == {} for r in main if r.method in ("bnn", "fp"))

    suite = load_suite({"methods": ["bnn", "pcpp-pc"], "weight_only": ["pcpp-pc"], "seeds": [0],
                        "tracks": ["accuracy"], "setting": [{"task": "digits", "arch": "mlp"}]})
    runs = suite.runs()
    pcpp = [r for r in runs if r.method == "pcpp-pc"]
    assert sorted(str(r.layer_options) for r in pcpp) == ["{'binarize_activations': False}",
                                                          "{'binarize_activations': True}"]
    assert len({r.run_id for r in pcpp}) == 2 and any(r.label.endswith("W1A32") for r in pcpp)
    # the method's own setting, when a suite asks for it
    own = load_suite({"methods": ["pcpp-pc"], "activations": "method", "tracks": ["accuracy"],
                      "setting": [{"task": "digits", "arch": "mlp"}]})
    assert all(r.layer_options == {} for r in own.runs())


def test_sensitivity_grid_seeds():
    suite = load_suite({"methods": ["bnn"], "seeds": [0, 1, 2], "tracks": ["accuracy", "sensitivity"],
                        "setting": [{"task": "digits", "arch": "mlp"}], "sensitivity": {"seeds": [0]}})
    assert {r.seed for r in suite.runs() if r.role == "sensitivity"} == {0}
    assert {r.seed for r in suite.runs() if r.role == "main"} == {0, 1, 2}
    with pytest.raises(ValueError, match="sensitivity.seeds"):
        load_suite({"methods": ["bnn"], "setting": [{"task": "digits", "arch": "mlp"}], "sensitivity": {"seeds": []}})
