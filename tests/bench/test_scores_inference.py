"""The inference track: deployment networks at 224x224 (issue 16, item 6), and a cell counts as
deployable only when EVERY seed's model deployed (issue 21, mutant 6)."""

from __future__ import annotations

import pytest

from onebit.bench.deployment import NETWORKS, measure, timed_side_by_side
from onebit.bench.scores import leaderboard


def test_a_cell_is_deployable_only_if_every_seed_deployed(run):
    """Seed 0's model deployed, seed 1's did not: the latency would describe half the cell, so the cell
    is not deployable and the method has no inference score. ("any seed" would score it.)"""
    recs = []
    for seed, deployed in ((0, True), (1, False)):
        recs.append(run("fp", 95.0, seed=seed, deployable=1, latency_ms=2.0, file_bytes=40000))
        extra = {"latency_ms": 0.5, "latency_fp32_ms": 2.0, "file_bytes": 2000} if deployed else {}
        recs.append(run("bnn", 85.0, seed=seed, deployable=1.0 if deployed else 0.0, **extra))
        recs.append(run("xnor", 85.0, seed=seed, deployable=1, latency_ms=1.0, latency_fp32_ms=2.0,
                        file_bytes=2000))
    lb = leaderboard(recs, bootstrap=50)
    bnn = next(c for c in lb.cells if c.method == "bnn")
    assert not bnn.deployable and bnn.latency_ratio is None
    assert lb.row("bnn").scores["infer"] is None
    assert lb.row("xnor").scores["infer"] == pytest.approx(((2.0**2 + 20.0**2) / 2) ** 0.5)


def test_deployment_records_decide_the_inference_track(run):
    """Runs of role "inference" (deployment networks) replace the trained models' latency."""
    recs = [run("fp", 95.0), run("bnn", 85.0, deployable=1, latency_ms=1.0, latency_fp32_ms=1.1, file_bytes=10)]
    for net in NETWORKS:
        recs.append(run("bnn", 0.0, role="inference", arch=net, task="random224", bits=(1, 1), deployable=1,
                        file_bytes=1e6, file_fp32_bytes=2e7, **{"latency_ms/t1": 10.0, "latency_fp32_ms/t1": 40.0,
                                                                "latency_ms/t2": 6.0, "latency_fp32_ms/t2": 24.0}))
    lb = leaderboard(recs, bootstrap=50)
    assert lb.meta["infer_source"] == "deployment networks"
    assert len(lb.deployment) == 4 and {d.threads for d in lb.deployment} == {1, 2}
    row = lb.row("bnn")
    assert row.latency_ratio == pytest.approx(4.0) and row.storage_ratio == pytest.approx(20.0)
    assert row.scores["infer"] == pytest.approx(((16 + 400) / 2) ** 0.5)
    assert "random224" not in lb.meta["tasks"]


def test_timed_side_by_side_alternates_samples():
    calls = []
    ms = timed_side_by_side({"a": (calls.append, "a"), "b": (calls.append, "b")}, threads=1, repeats=2)
    assert calls == ["a", "b"] * 5 and set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())


def test_inference_track_on_a_deployment_size_network():
    """Bi-Real ResNet-18 at 224x224, batch 1, 1 thread, one timed call (no assertion on time)."""
    m = measure("bnn", "bireal18", threads=(1,), repeats=1, lce=False)
    assert m["deployable"] == 1.0 and (m["w_bits"], m["a_bits"]) == (1.0, 1.0)
    for key in ("latency_ms/t1", "latency_fp32_ms/t1", "latency_fp32_nchw_ms/t1", "latency_fp32_cl_ms/t1"):
        assert m[key] > 0
    assert m["latency_fp32_ms/t1"] == min(m["latency_fp32_nchw_ms/t1"], m["latency_fp32_cl_ms/t1"])
    # 1-bit 3x3 convs, fp32 stem/downsample/classifier: the packed file is several times smaller
    assert m["file_fp32_bytes"] > 5 * m["file_bytes"] > 0
    assert "latency_lce_ms/t1" not in m


def test_unknown_network_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown deployment network 'vgg'; available: bireal18, reactnet_a"):
        measure("bnn", "vgg", threads=(1,), repeats=1)


@pytest.mark.parametrize(("method", "options"), [("pcpp-pc", {"binarize_activations": True}), ("biper", {})])
def test_deployed_form_is_the_end_of_training(method, options):
    """Random-weight networks are put in their deployed state: PC++'s schedule finished (hard sign),
    BiPer's stage-2 binary weights — both export to the packed engine."""
    from onebit.bench.deployment import deployment_models
    from onebit.deploy import export

    _, binary = deployment_models("bireal18", method, size=64, layer_options=options)
    export(binary)  # raises NotDeployableError for a model still in a training-only state
