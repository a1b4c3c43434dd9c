"""A three-plane HBNN model (the paper's default 1.4-bit setting: 70 % 1-bit, 20 % 2-bit, 10 % 3-bit
weights, and 80/0/20, whose 2nd and 3rd planes share one mask) through every deploy target: the packed
engine, ONNX (float and QONNX) and Larq Compute Engine, each within the tolerance its own tests use,
and ``onebit.summary``'s bit count."""

import onnx
import pytest
import torch
from test_export import _check
from test_export import conv_net as packed_conv_net
from test_export import linear_net as packed_linear_net
from test_lce import binarized_cnn
from test_lce import check as check_lce
from test_onnx_export import conv_net, export_and_compare, linear_net, prepare

import onebit
from onebit.deploy import lce
from onebit.deploy.onnx_export import QONNX_DOMAIN
from onebit.nn import BinaryLayer

MIXES = [{}, {"mix": (0.8, 0.0, 0.2)}]


def hbnn_layers(model):
    return [m for m in model.modules() if isinstance(m, BinaryLayer) and m.binarize_weights]


def assert_three_planes(model, mix):
    """Every binary layer has three weight planes: the first unmasked, the 2nd/3rd masked with the mix's
    shares (nested masks), so an exporter that dropped or merged a plane could not match."""
    layers = hbnn_layers(model)
    assert layers
    for layer in layers:
        form = layer.inference_form()
        assert len(form.weight_planes) == 3 and form.plane_masks[0] is None
        second, third = form.plane_masks[1], form.plane_masks[2]
        n = layer.weight.numel()
        assert abs(second.sum().item() - (1 - mix[0]) * n) <= 1 and abs(third.sum().item() - mix[2] * n) <= 1
        assert not (third & ~second).any()
        assert torch.allclose(form.effective_weight(), layer.method.quantize_weight(layer, layer.weight).detach(),
                              atol=1e-6)


@pytest.mark.parametrize("options", MIXES)
def test_packed_engine(options):
    mix = options.get("mix", (0.7, 0.2, 0.1))
    torch.manual_seed(21)
    model = packed_conv_net(2)
    _check(model, torch.randn(2, 3, 10, 6), "hbnn", **options)  # binarizes the model in place
    assert_three_planes(model, mix)
    torch.manual_seed(22)
    model = packed_linear_net()
    _check(model, torch.randn(5, 3, 8, 8), "hbnn", **options)
    assert_three_planes(model, mix)


@pytest.mark.parametrize("options", MIXES)
def test_onnx_and_qonnx(options, tmp_path):
    torch.manual_seed(23)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, "hbnn", **options)
    assert_three_planes(model, options.get("mix", (0.7, 0.2, 0.1)))
    paths = export_and_compare(model, x, tmp_path)
    quant = [n for n in onnx.load(str(paths["qonnx"])).graph.node if n.domain == QONNX_DOMAIN]
    initializers = {t.name for t in onnx.load(str(paths["qonnx"])).graph.initializer}
    weight_nodes = [n.op_type for n in quant if n.input[0] in initializers]
    layers = len(hbnn_layers(model))
    # per binary weight: the full plane as BipolarQuant, the two masked planes as ternary Quant nodes
    assert weight_nodes.count("BipolarQuant") == layers and weight_nodes.count("Quant") == 2 * layers
    torch.manual_seed(24)
    x = torch.randn(4, 3, 4, 4)
    export_and_compare(prepare(linear_net(), x, "hbnn", **options), x, tmp_path)


@pytest.mark.skipif(not lce.LCE_PLATFORM, reason="larq-compute-engine ships its interpreter for x86-64 Linux only")
@pytest.mark.parametrize("options", MIXES)
def test_lce(options):
    torch.manual_seed(25)
    x = torch.randn(2, 3, 9, 9)
    model = binarized_cnn("hbnn", x, **options)
    assert_three_planes(model.eval(), options.get("mix", (0.7, 0.2, 0.1)))
    check_lce(model, x)


def test_summary_counts_the_realized_bits():
    torch.manual_seed(26)
    model = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.Linear(100, 50), torch.nn.Linear(50, 10))
    onebit.binarize(model, "hbnn")
    report = onebit.summary(model, (64,))
    binary = [layer for layer in report.layers if layer.params_1bit]
    assert [layer.precision for layer in binary] == ["1.4/1"]
    assert binary[0].params_1bit == 7000 and binary[0].macs_binary == 7000  # 5000 weights × 1.4 bits
