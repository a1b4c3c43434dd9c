"""ONNX ("float") and QONNX export: the files, run by onnxruntime and by QONNX's own executor, compute
what the eval-mode PyTorch model computes, for every method, layer kind, padding value and the zoo
models; the graphs use the nodes each flavor promises; what cannot be exported fails with one error."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from deploy_probe import Residual, finish_training, randomize_norms
from onnx import numpy_helper
from torch import nn

import onebit
import onebit.models
from onebit.deploy import ExportError
from onebit.deploy.onnx_export import QONNX_DOMAIN, inference_module, run_onnx, to_onnx
from onebit.nn import BinaryConv1d, BinaryConv2d, BinaryLinear

METHODS = onebit.methods.available()
FLAVORS = ("float", "qonnx")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # QONNX's executor on symbolic shapes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small graphs: torch's and onnxruntime's thread pools only add overhead on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




def randomize(model):
    """BN statistics, PReLU slopes, thresholds and learnable scales away from their identity inits, so
    that a file which dropped any of them would not match."""
    randomize_norms(model)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if name == "rsign_bias":
                    p.uniform_(-0.3, 0.3)
                elif name == "alpha" or name.startswith("gamma"):
                    p.uniform_(0.5, 1.5)
                elif name == "bias" and isinstance(m, (BinaryConv1d, BinaryConv2d, BinaryLinear)):
                    p.uniform_(-0.5, 0.5)



def conv_net():
    """Binary convs of stride 1 (3x3, in a residual block) and 2 (3x3) and a 1x1, 3/33/65 channels, a
    residual add, BN, PReLU; the first and last layers stay full precision under binarize()."""
    return nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
        Residual(65, 1),
        nn.Conv2d(65, 33, 3, padding=1, stride=2), nn.BatchNorm2d(33), nn.PReLU(33),
        nn.Conv2d(33, 3, 1, bias=True), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Flatten(), nn.LazyLinear(10),
    )


def linear_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 65), nn.BatchNorm1d(65), nn.Hardtanh(),
                         nn.Linear(65, 33), nn.BatchNorm1d(33), nn.PReLU(), nn.Linear(33, 10))


def prepare(model, x, method, **options):
    model(x)  # materialise lazy layers
    onebit.binarize(model, method, example_input=x, **options)
    finish_training(model, method)
    randomize(model)
    return model.eval()


def expected_output(model, x):
    with torch.no_grad():
        return model(x).numpy()


def assert_matches(got, expected):
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= 1e-4 * scale


def export_and_compare(model, x, tmp_path, flavors=FLAVORS):
    expected = expected_output(model, x)
    paths = {}
    for flavor in flavors:
        path = to_onnx(model, x, tmp_path / f"model-{flavor}.onnx", flavor)
        assert_matches(run_onnx(path, x)[0], expected)
        paths[flavor] = path
    return paths


def nodes(path):
    return list(onnx.load(str(path)).graph.node)


# --------------------------------------------------------------------------------------------------
# Fidelity
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_conv_net_every_method(method, tmp_path):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, method)
    paths = export_and_compare(model, x, tmp_path)
    # the float file is standard ONNX only; the QONNX file binarizes every binary layer's activations
    # and weights with QONNX nodes (PC++ presets keep real activations by default: weights only)
    float_nodes, q_nodes = nodes(paths["float"]), nodes(paths["qonnx"])
    assert all(n.domain in ("", "ai.onnx") for n in float_nodes)
    quant = [n for n in q_nodes if n.domain == QONNX_DOMAIN]
    binary_convs = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    activation_sites = binary_convs if model[3].conv.binarize_activations else 0
    weight_nodes = len(quant) - activation_sites
    assert binary_convs >= 3 and weight_nodes >= binary_convs
    assert {n.op_type for n in quant} <= {"BipolarQuant", "Quant"}


@pytest.mark.parametrize("method", ["xnor", "reactnet", "recu", "xnorpp", "hbnn", "pcpp-bc"])
def test_linear_net(method, tmp_path):
    """Features-last layers: K over the feature dim, thresholds and scales on the last dim, planes,
    real activations."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, 4, 4)
    export_and_compare(prepare(linear_net(), x, method), x, tmp_path)


@pytest.mark.parametrize("method,pad_value", [
    ("xnor", 1.0), ("xnor", -1.0), ("reactnet", -1.0), ("hbnn", 1.0), ("bnn", -1.0),
])
def test_padding_values(method, pad_value, tmp_path):
    """±1 padding after binarization (0 is every method's default, tested above); XNOR-Net pads K·±1."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, method, pad_value=pad_value)
    export_and_compare(model, x, tmp_path)


def test_padding_value_changes_the_output(tmp_path):
    """The padding comparisons above can fail: the same weights with another pad value give another
    output, and the file follows the model's own value."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, "bnn", pad_value=1.0)
    plus = expected_output(model, x)
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.pad_value = -1.0
    minus = expected_output(model, x)
    assert float(np.abs(plus - minus).max()) > 1e-2 * float(np.abs(plus).max())
    got = run_onnx(to_onnx(model, x, tmp_path / "m.onnx"), x)[0]
    assert_matches(got, minus)


def test_conv1d_groups_dilation_and_padding_modes(tmp_path):
    """Layers the packed engine refuses (groups, dilation) and real-input padding modes."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv1d(1, 33, 5, padding=2), nn.BatchNorm1d(33), nn.Hardtanh(),
        BinaryConv1d(33, 66, 3, padding=2, dilation=2, groups=3, method="xnor", pad_value=-1.0),
        nn.BatchNorm1d(66), nn.Hardtanh(),
        BinaryConv1d(66, 65, 3, padding=1, stride=2, padding_mode="reflect", method="reactnet"),
        nn.BatchNorm1d(65), nn.Hardtanh(),
        BinaryConv1d(65, 65, 3, padding=1, padding_mode="replicate", method="recu"), nn.BatchNorm1d(65),
        nn.Flatten(), nn.Linear(65 * 20, 10),
    )
    randomize(model)
    export_and_compare(model.eval(), torch.randn(3, 1, 40), tmp_path)


def test_xnorpp_spatial_scale_and_dynamic_batch(tmp_path):
    torch.manual_seed(6)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, "xnorpp")
    path = to_onnx(model, x, tmp_path / "m.onnx")
    bigger = torch.randn(5, 3, 8, 6)  # the float file's batch dimension is symbolic
    assert_matches(run_onnx(path, bigger)[0], expected_output(model, bigger))


@pytest.mark.parametrize("name,shape,method,options", [
    ("resnet20", (3, 8, 8), "reactnet", {"pad_value": 1.0}),
    ("mlp", (1, 8, 8), "xnor", {"input_shape": (1, 8, 8), "hidden": (33, 65)}),
    ("conv1d", (1, 40), "recu", {}),
    ("vit", (3, 8, 8), "reactnet", {"img_size": 8, "patch_size": 4, "dim": 32, "depth": 1, "heads": 2}),
])
def test_zoo_models(name, shape, method, options, tmp_path):
    torch.manual_seed(7)
    model = onebit.models.create(name, num_classes=10, method=method, in_channels=shape[0], **options)
    x = torch.randn(2, *shape)
    model.eval()(x)
    finish_training(model, method)
    randomize(model)
    export_and_compare(model.eval(), x, tmp_path)


def test_hbnn_planes_are_bipolar_and_ternary_quant_nodes(tmp_path):
    """HBNN's residual planes: the first (every weight) a BipolarQuant, masked ones ternary Quant nodes
    of 2 signed narrow bits whose scale is the plane's μ; the QONNX file reproduces the weight."""
    torch.manual_seed(8)
    layer = BinaryConv2d(5, 7, 3, padding=1, method="hbnn", average_bits=1.4)
    x = torch.randn(2, 5, 6, 6)
    path = to_onnx(layer.eval(), x, tmp_path / "h.onnx", "qonnx")
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quant = [n for n in graph.node if n.domain == QONNX_DOMAIN]
    weights = [n for n in quant if n.input[0] in init]
    assert [n.op_type for n in weights] == ["BipolarQuant", "Quant"]  # 1.4 bits: two levels
    ternary = weights[1]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ternary.attribute}
    assert attrs["signed"] == 1 and attrs["narrow"] == 1 and float(init[ternary.input[3]]) == 2
    form = layer.inference_form()
    assert np.allclose(init[ternary.input[1]].reshape(-1), form.plane_scales[1].numpy())
    assert np.array_equal(init[weights[0].input[0]], form.weight_planes[0].numpy())
    assert_matches(run_onnx(path, x)[0], expected_output(layer, x))


def test_float_weights_are_materialised_binary(tmp_path):
    """The float file stores each binary layer's weight as ±α per output channel (two values per row)."""
    torch.manual_seed(9)
    layer = BinaryLinear(33, 5, method="xnor").eval()
    path = to_onnx(layer, torch.randn(3, 33), tmp_path / "l.onnx")
    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    weights = [a if a.shape == (5, 33) else a.T for a in arrays if a.shape in ((5, 33), (33, 5))]
    assert len(weights) == 1  # MatMul takes it transposed
    alpha = layer.weight.detach().abs().mean(dim=1).numpy()
    assert np.allclose(np.abs(weights[0]), alpha[:, None], rtol=1e-6)
    assert np.array_equal(np.sign(weights[0]), np.where(layer.weight.detach().numpy() >= 0, 1.0, -1.0))


def test_qonnx_file_survives_qonnx_cleanup(tmp_path):
    """QONNX's cleanup (the first step of FINN's flow) keeps the quantizers and the outputs."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.util.cleanup import cleanup_model

    torch.manual_seed(10)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, "bireal")
    path = to_onnx(model, x, tmp_path / "q.onnx", "qonnx")
    clean = cleanup_model(ModelWrapper(str(path))).transform(InferDataTypes())
    ops = [n.op_type for n in clean.graph.node]
    assert ops.count("BipolarQuant") == 2 * sum(isinstance(m, BinaryConv2d) for m in model.modules())
    act = [n for n in clean.graph.node if n.op_type == "BipolarQuant" and clean.get_initializer(n.input[0]) is None]
    assert len(act) == ops.count("BipolarQuant") // 2
    assert all(clean.get_tensor_datatype(n.output[0]).name == "BIPOLAR" for n in act)
    out = execute_onnx(clean, {clean.graph.input[0].name: x.numpy()})[clean.graph.output[0].name]
    assert_matches(out, expected_output(model, x))


def test_inference_module_matches_and_leaves_the_model_alone():
    torch.manual_seed(11)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, "reactnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for flavor in FLAVORS:
        with torch.no_grad():
            assert_matches(inference_module(model, flavor)(x).numpy(), expected_output(model, x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def _conv_model(method, **options):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardtanh(),
                         BinaryConv2d(8, 8, 3, method=method, **options), nn.Flatten())


@pytest.mark.parametrize("build,expect", [
    (lambda: _conv_model("biper"), "to_stage2"),
    (lambda: _conv_model("pcpp-pc"), "not binary before the end"),
    (lambda: _conv_model("bnn", binarize_weights=False), "binarize_weights=False"),
    (lambda: _conv_model("hbnn", activations="hetero"), "activations='hetero'"),
])
@pytest.mark.parametrize("flavor", FLAVORS)
def test_layers_that_cannot_be_exported(build, expect, flavor, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=expect) as info:
        to_onnx(build().eval(), torch.randn(1, 3, 8, 8), path, flavor)
    assert "'3'" in str(info.value) or "layer" in str(info.value)
    assert not path.exists() and not list(tmp_path.iterdir())


class _NoOnnxForm(nn.Module):
    def forward(self, x):
        return torch.special.i0(x)


def test_unsupported_operator_and_bad_arguments(tmp_path):
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportError, match="aten::i0"):
            to_onnx(nn.Sequential(nn.Linear(3, 3), _NoOnnxForm()), torch.randn(2, 3), path)
    assert not list(tmp_path.iterdir())
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="flavor='tflite'"):
        to_onnx(model, torch.randn(2, 3), path, "tflite")
    with pytest.raises(ValueError, match="opset=9"):
        to_onnx(model, torch.randn(2, 3), path, opset=9)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_onnx(model, torch.randn(2, 3), tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="example_input"):
        to_onnx(model, [[1.0, 2.0, 3.0]], path)
    with pytest.raises(ExportError, match="does not run on example_input"):
        to_onnx(model, torch.randn(2, 4), path)
    assert not list(tmp_path.iterdir())
    qonnx_file = to_onnx(model, torch.randn(2, 3), path, "qonnx")  # fixed batch of 2
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(5, 3\)"):
        run_onnx(qonnx_file, torch.randn(5, 3))

