"""The packed-layer description: built once per layer, frozen, read by every target; and each
target's ``supports`` — one place per target, one error type — for what it does not run."""

import dataclasses
import re

import pytest
import torch
from deploy_probe import finish_training, randomize_norms
from torch import nn

import onebit
from onebit.deploy import ExportError, export, lce, load, onnx_export, packed, save
from onebit.deploy.description import (
    Epilogue,
    Geometry,
    InputScale,
    LayerKind,
    PackedLayerDescription,
    WeightPlane,
    describe,
    pack_bits,
)
from onebit.deploy.errors import UnsupportedLayerError
from onebit.methods import NotDeployableError
from onebit.nn import BinaryConv2d, BinaryLayer, BinaryLinear


def small_net(method="reactnet", **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    onebit.binarize(model, method, **options)
    finish_training(model, method)
    randomize_norms(model)
    return model.eval()


def count_inference_forms(monkeypatch):
    calls = []
    original = BinaryLayer.inference_form

    def counted(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(BinaryLayer, "inference_form", counted)
    return calls


@pytest.mark.parametrize("target", ["packed", "onnx", "lce"])
def test_each_target_describes_each_layer_once(target, monkeypatch, tmp_path):
    model = small_net("hbnn")  # (a multi-bit method: LCE's export used to read its forms twice)
    binary = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    calls = count_inference_forms(monkeypatch)
    x = torch.randn(2, 3, 8, 8)
    if target == "packed":
        export(model)
    elif target == "onnx":
        onnx_export.to_onnx(model, x, tmp_path / "m.onnx")
    else:
        lce.to_lce_bytes(model, x)
    assert len(calls) == len(binary)  # no second derivation of a layer's inference form


def test_the_description_is_frozen_and_folding_makes_a_new_one():
    model = small_net()
    layer = model[3]
    d = describe(layer)
    assert isinstance(d, PackedLayerDescription) and d.kind is LayerKind.CONV2D and d.method == "reactnet"
    assert d.weight_shape == (8, 8, 3, 3) and len(d.planes) == 1 and d.input_threshold is not None
    assert d.input_scale is InputScale.NONE and d.geometry.padding == ((1, 1), (1, 1)) and d.pad_value == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.pad_value = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.epilogue.clamp = (0.0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):  # a weight plane too: every target reads the same one
        d.planes[0].scale = d.planes[0].scale * 2
    folded = d.fold_batchnorm(model[4])
    assert folded is not d and d.epilogue.post_scale is None and not d.epilogue.folded_batchnorm
    assert folded.epilogue.folded_batchnorm and folded.epilogue.post_scale.shape == (8,)
    fused = folded.fuse_activation(model[5])
    assert fused.epilogue.prelu is not None and folded.epilogue.prelu is None
    assert fused.fuse_activation(nn.PReLU(8)) is None  # one PReLU per epilogue
    assert fused.fuse_activation(nn.Hardtanh()).epilogue.clamp == (-1.0, 1.0)
    assert fused.fuse_activation(nn.Sigmoid()) is None
    # the packed runtime holds the folded description that export() built
    packed_layer = export(model).net.get_submodule("3")
    held = packed_layer.description
    assert held.epilogue.folded_batchnorm and held.epilogue.prelu is not None
    assert torch.equal(held.epilogue.post_scale, fused.epilogue.post_scale)
    assert torch.equal(held.epilogue.post_bias, fused.epilogue.post_bias)


def test_the_file_form_round_trips_and_old_keys_stay():
    model = small_net("xnor")
    net = export(model).net
    for name in ("3", "6"):
        d = net.get_submodule(name).description
        config, tensors = d.to_file()
        assert config["kind"] == "conv2d" and config["input_scale"] == "mean_abs"
        assert set(tensors) >= {"plane0", "plane_scale0", "post_scale", "post_bias"}
        again = PackedLayerDescription.from_file(config, tensors)
        config2, tensors2 = again.to_file()
        assert config2 == config and tensors2.keys() == tensors.keys()
        assert all(torch.equal(tensors[k], tensors2[k]) for k in tensors)
        assert again.input_scale is InputScale.MEAN_ABS and again.geometry == d.geometry


def test_a_file_loads_into_the_same_description(tmp_path):
    model = small_net("bireal")
    exported = export(model)
    save(exported, tmp_path / "m.onebit")
    again = load(tmp_path / "m.onebit")
    for name in exported.packed_layers():
        a, b = exported.net.get_submodule(name).description, again.net.get_submodule(name).description
        assert a.kind == b.kind and a.geometry == b.geometry and a.weight_shape == b.weight_shape
        assert a.epilogue.clamp == b.epilogue.clamp and a.pad_value == b.pad_value
        assert all(torch.equal(p.bits, q.bits) and torch.equal(p.scale, q.scale) for p, q in zip(a.planes, b.planes))


@pytest.mark.parametrize("method", ["bnn", "xnor", "reactnet", "hbnn"])
def test_runtime_and_onnx_forms_of_one_description_agree(method):
    """One description, two targets' modules: the packed engine's and the ONNX graph's torch form."""
    model = small_net(method)
    x = torch.randn(2, 8, 6, 6)
    for layer in (model[3], model[6]):
        d = describe(layer)
        with torch.no_grad():
            want = layer(x)
            for module in (packed.build_module(d), onnx_export._BinaryInference(d, qonnx=False),
                           onnx_export._BinaryInference(d, qonnx=True)):
                got = module(x)
                assert got.shape == want.shape
                assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), type(module).__name__


# --------------------------------------------------------------------------------------------------
# supports(): what deploys where
# --------------------------------------------------------------------------------------------------
def _one(layer):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), layer, nn.Conv2d(8, 4, 3))


GROUPED = lambda: BinaryConv2d(8, 8, 3, groups=2, method="bnn")  # noqa: E731
DILATED = lambda: BinaryConv2d(8, 8, 3, dilation=2, method="bnn")  # noqa: E731


@pytest.mark.parametrize("build,what", [(GROUPED, "groups=2"), (DILATED, "dilation=(2, 2)")])
def test_every_target_refuses_a_grouped_or_dilated_conv_with_one_error_type(build, what, tmp_path):
    layer = build()
    d = describe(layer)
    assert what in packed.supports(d) and what in lce.supports(d)
    assert onnx_export.supports(d) is None  # ONNX has grouped and dilated convolutions
    model = _one(build()).eval()
    x = torch.randn(1, 3, 12, 12)
    errors = []
    for deploy in (lambda: export(model), lambda: lce.to_lce_bytes(model, x)):
        with pytest.raises(UnsupportedLayerError, match=f"layer '1'.*{re.escape(what)}") as info:
            deploy()
        errors.append(info.value)
    assert all(isinstance(e, (NotDeployableError, ExportError, NotImplementedError)) for e in errors)
    onnx_export.to_onnx(model, x, tmp_path / "m.onnx")  # and exports


def test_the_error_type_keeps_every_older_contract():
    assert issubclass(UnsupportedLayerError, ExportError)
    assert issubclass(UnsupportedLayerError, NotDeployableError)
    assert issubclass(UnsupportedLayerError, NotImplementedError)
    assert issubclass(UnsupportedLayerError, ValueError)  # (NotDeployableError's base)


def test_multibit_activations_are_refused_by_every_target(tmp_path):
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    onebit.binarize(model, "hbnn", activations="hetero")
    d = describe(model[1])
    assert d.input_bits is not None
    reasons = [packed.supports(d), lce.supports(d), onnx_export.supports(d)]
    assert all(r is not None and ("hetero" in r or "multi-bit" in r) for r in reasons)
    x = torch.randn(2, 16)
    for deploy in (lambda: export(model), lambda: lce.to_lce_bytes(model, x),
                   lambda: onnx_export.to_onnx(model, x, tmp_path / "m.onnx")):
        with pytest.raises(UnsupportedLayerError, match="layer '1'"):
            deploy()


def test_lce_refuses_what_the_runtime_runs():
    """Depthwise and conv1d layers run on the packed engine, not in onebit's LCE export."""
    depthwise = describe(BinaryConv2d(8, 8, 3, groups=8, method="bnn"))
    assert packed.supports(depthwise) is None and "depthwise" in lce.supports(depthwise)
    plain = describe(BinaryLinear(8, 4, method="bnn"))
    assert packed.supports(plain) is None and lce.supports(plain) is None and onnx_export.supports(plain) is None


def test_a_description_can_be_written_by_hand():
    """A target needs nothing but the description: here one built without a training layer."""
    signs = torch.ones(4, 6)
    signs[0, :3] = -1
    d = PackedLayerDescription(kind=LayerKind.LINEAR, method="bnn", weight_shape=(4, 6),
                               planes=(WeightPlane(pack_bits(signs), torch.full((4,), 0.5)),),
                               epilogue=Epilogue(post_bias=torch.arange(4.0)))
    x = torch.randn(3, 6)
    want = torch.where(x >= 0, 1.0, -1.0) @ (0.5 * signs).t() + torch.arange(4.0)
    assert torch.allclose(packed.build_module(d)(x), want)
    assert torch.allclose(onnx_export._BinaryInference(d, qonnx=False)(x), want)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_a_hand_written_description_whose_every_plane_is_masked(kind):
    """Σ_j μ_j·(m_j ⊙ B_j) with a mask on every plane (two magnitudes, each active on its own weights,
    some weights on neither): the packed engine and the ONNX module compute that sum, never the
    unmasked planes."""
    g = torch.Generator().manual_seed(0)
    shape = (4, 6) if kind == "linear" else (4, 6, 3, 3)
    signs = [torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0) for _ in range(2)]
    active = torch.rand(shape, generator=g)
    masks = [active < 0.4, (active >= 0.4) & (active < 0.8)]
    scales = [torch.full((4,), 0.75), torch.full((4,), 0.25)]
    planes = tuple(WeightPlane(pack_bits(s), mu, pack_bits(torch.where(m, -1.0, 1.0)))
                   for s, mu, m in zip(signs, scales, masks))
    geometry = Geometry() if kind == "linear" else Geometry(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))
    d = PackedLayerDescription(kind=LayerKind.LINEAR if kind == "linear" else LayerKind.CONV2D, method="hbnn",
                               weight_shape=shape, planes=planes, geometry=geometry)
    weight = sum(mu.reshape((-1,) + (1,) * (len(shape) - 1)) * (m * s) for s, mu, m in zip(signs, scales, masks))
    x = torch.randn((3, 6) if kind == "linear" else (3, 6, 5, 5), generator=g)
    xs = torch.where(x >= 0, 1.0, -1.0)
    want = xs @ weight.t() if kind == "linear" else torch.nn.functional.conv2d(xs, weight)
    assert torch.allclose(packed.build_module(d)(x), want, atol=1e-5)
    assert torch.allclose(onnx_export._BinaryInference(d, qonnx=False)(x), want, atol=1e-5)
