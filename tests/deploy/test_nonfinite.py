"""NaN/inf inputs (issue 18 item 2): every place onebit runs a deployed model — the packed engine,
onnxruntime, QONNX's executor, LCE's interpreter, ``onebit infer`` — refuses them with one clear error
by default, or with ``nonfinite="propagate"`` returns NaN for exactly those samples; never the
confident class a binarized layer's sign of NaN would give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onebit import OnebitError, models
from onebit.deploy import NonFiniteInputError, PackedModel, export, kernels, load, save

BAD_ROWS = [1, 3]
GOOD_ROWS = [0, 2]


def model(name: str, method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        net = models.create("mlp", num_classes=10, method=method, in_channels=1, input_shape=(1, 8, 8),
                            hidden=[32, 32])
    else:
        net = models.create(name, num_classes=10, method=method)
    return net.eval()


def batch(net: torch.nn.Module, bad: str = "nan") -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(4, *net.input_shape)
    x.view(4, -1)[1, 5] = float(bad)
    x.view(4, -1)[3, -1] = -float("inf") if bad == "nan" else float("nan")
    return x


NETS = [("mlp", "bnn"), ("mlp", "xnor"), ("resnet20", "reactnet")]


def test_the_engine_sign_of_nan_is_plus_one():
    """Where the silent answer came from: bit = (x + t) < 0 is false for NaN."""
    x = torch.tensor([[float("nan"), -1.0, float("inf"), -float("inf")]])
    assert kernels.unpack_activations(kernels.pack_activations(x)).tolist() == [[1.0, -1.0, 1.0, -1.0]]


@pytest.mark.parametrize("name,method,bad", [*((n, m, "nan") for n, m in NETS), ("mlp", "bnn", "inf")])
def test_packed_model_refuses_nan_and_inf_by_default(name, method, bad):
    net = model(name, method)
    packed = export(net)
    with pytest.raises(NonFiniteInputError, match=r"2 NaN/inf values in samples 1, 3.*nonfinite='propagate'") as info:
        packed(batch(net, bad))
    assert isinstance(info.value, OnebitError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name,method", NETS)
def test_propagate_gives_nan_for_those_samples_and_leaves_the_others(name, method):
    net = model(name, method)
    packed = export(net)
    packed.nonfinite = "propagate"
    x = batch(net)
    out = packed(x)
    assert torch.isnan(out[BAD_ROWS]).all()  # every logit of a NaN/inf sample, not a class
    assert torch.isfinite(out[GOOD_ROWS]).all()
    torch.testing.assert_close(out[GOOD_ROWS], packed(x[GOOD_ROWS]), rtol=1e-5, atol=1e-5)
    assert torch.isnan(x[1]).any()  # the caller's input is not modified


def test_huge_finite_inputs_pass():
    """The check's fast path is a sum; a sum that overflows on finite values must not be taken for NaN."""
    net = model("mlp", "bnn")
    packed = export(net)
    x = torch.full((2, *net.input_shape), 3e38)
    x[1] = -3e38
    assert torch.isfinite(packed(x)).all()  # no error: every value is finite (the sum is not)


def test_policy_is_validated_and_travels_with_load(tmp_path):
    net = model("mlp", "bnn")
    path = tmp_path / "m.onebit"
    save(export(net), path)
    assert load(path).nonfinite == "raise"
    propagated = load(path, nonfinite="propagate")
    assert torch.isnan(propagated(batch(net))[BAD_ROWS]).all()
    with pytest.raises(ValueError, match="nonfinite must be one of 'raise', 'propagate'"):
        load(path, nonfinite="zero")
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        PackedModel(export(net).net, nonfinite="ignore")


# --------------------------------------------------------------------------------------------------
# The exporters' runtimes, as onebit runs them
# --------------------------------------------------------------------------------------------------
def onnx_runner(tmp_path, net, x, flavor):
    pytest.importorskip("onnxruntime" if flavor == "float" else "qonnx")
    from onebit.deploy.onnx_export import _run_file, run_onnx, to_onnx

    path = tmp_path / f"m-{flavor}.onnx"
    to_onnx(net, x, path, flavor)
    return (lambda inp, **kw: run_onnx(path, inp, **kw)[0]), (lambda inp: _run_file(path, [inp.numpy()], None)[0])


def lce_runner(tmp_path, net, x):
    from onebit.deploy import lce

    if not lce.LCE_PLATFORM:
        pytest.skip("larq-compute-engine ships its interpreter for x86-64 Linux only")
    path = tmp_path / "m.tflite"
    lce.to_lce(net, x, path)
    interp = lce.interpreter(path)

    def nhwc(inp):
        return np.ascontiguousarray(inp.permute(0, 2, 3, 1).numpy())

    def raw(inp):  # the interpreter itself, without onebit's check
        with lce._numpy2_itemsize_shim():
            return np.array(interp._raw.predict([nhwc(inp)])[0])

    return (lambda inp, **kw: interp.predict(nhwc(inp), **kw)[0]), raw


@pytest.mark.parametrize("runtime", ["onnx", "qonnx", "lce"])
def test_exported_runtimes_apply_the_same_policy(tmp_path, runtime):
    net = model("mlp", "bnn")
    x = batch(net)
    if runtime == "lce":
        run, raw = lce_runner(tmp_path, net, x)
    else:
        run, raw = onnx_runner(tmp_path, net, x, "float" if runtime == "onnx" else "qonnx")
    # What the runtime itself does: a finite, confident answer for a NaN/inf sample.
    assert np.isfinite(np.asarray(raw(x))).all()
    with pytest.raises(NonFiniteInputError, match="samples 1, 3"):
        run(x)
    out = run(x, nonfinite="propagate")
    assert np.isnan(out[BAD_ROWS]).all() and np.isfinite(out[GOOD_ROWS]).all()
    clean = np.asarray(run(torch.nan_to_num(x, posinf=0.0, neginf=0.0)))
    np.testing.assert_array_equal(out[GOOD_ROWS], clean[GOOD_ROWS])


# --------------------------------------------------------------------------------------------------
# onebit infer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_infer_on_a_nan_or_inf_input_is_one_clear_line(tmp_path, capsys, bad):
    from onebit.cli import main

    net = model("mlp", "bnn")
    path = tmp_path / "m.onebit"
    save(export(net), path)
    np.save(tmp_path / "x.npy", batch(net, bad).numpy())
    rc = main(["infer", str(path), str(tmp_path / "x.npy")])
    captured = capsys.readouterr()
    assert rc != 0 and "sample 0:" not in captured.out  # no prediction printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "NaN/inf" in lines[0] and "Traceback" not in captured.err
