"""ONNX/QONNX export of the binary-layer paths the other ONNX tests do not reach, run by onnxruntime and
QONNX's executor and compared with the eval-mode PyTorch model (issue 21: tests that bite for the
deploy area). The inference form (``onnx_export._BinaryInference``) branches on: tokens (XNOR's K over
the last dim, a threshold along features), asymmetric padding (``padding='same'`` with an even kernel:
an explicit ``Pad`` with the pad value, never the convolution's own symmetric padding), padding modes of
a 2-D binary conv (reflect/replicate as one ``Pad`` node, circular through torch), a one-slope PReLU
fused into a layer, strides and paddings that differ between height and width."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deploy_probe import finish_training, randomize_norms
from test_onnx_export import _one_thread  # noqa: F401  (autouse: small graphs on one thread)
from torch import nn

import onebit
from onebit.deploy.onnx_export import run_onnx, to_onnx
from onebit.nn import BinaryConv2d, BinaryLinear

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")




def _compare(model: nn.Module, x: torch.Tensor, tmp_path, flavors=("float", "qonnx")) -> None:
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(want).max() > 0
    for flavor in flavors:
        got = run_onnx(to_onnx(model, x, tmp_path / f"m-{flavor}.onnx", flavor), x)[0]
        assert got.shape == want.shape, flavor
        err = float(np.abs(got - want).max())
        assert err <= 1e-4 * float(np.abs(want).max()), f"{flavor}: max abs diff {err:.3g}"


def _randomize(model: nn.Module) -> None:
    randomize_norms(model)
    with torch.no_grad():
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                if name == "rsign_bias" or (name == "bias" and isinstance(m, (BinaryConv2d, BinaryLinear))):
                    p.uniform_(-0.5, 0.5)
                elif name == "alpha" or name.startswith("gamma"):
                    p.uniform_(0.5, 1.5)


class Tokens(nn.Module):
    """(N, T, F) tokens through binary linear layers (the method's threshold and scales along F), a
    one-slope PReLU after one of them."""

    def __init__(self, method: str):
        super().__init__()
        self.a = BinaryLinear(6, 5, method=method)
        self.act = nn.PReLU(init=0.2)
        self.b = BinaryLinear(5, 7, method=method)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.b(self.act(self.a(x * 2.0 - 0.3))))


@pytest.mark.parametrize("method", ["xnor", "reactnet", "xnorpp"])
def test_binary_linear_layers_on_tokens(method, tmp_path):
    """XNOR's K is the mean |x| of each token (its last dim), not of the whole sample; ReActNet's
    threshold and XNOR-Net++'s scales lie along the features (T = 4 and F differ)."""
    torch.manual_seed(0)
    model = Tokens(method)
    finish_training(model, method)
    _randomize(model)
    _compare(model, torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1)), tmp_path)


@pytest.mark.parametrize("method,pad_value", [("bnn", 0.0), ("bireal", 1.0), ("xnor", -1.0), ("reactnet", 1.0)])
def test_asymmetric_same_padding(method, pad_value, tmp_path):
    """padding='same' with a 2x4 kernel pads 0 rows above and 1 below, 1 column left and 2 right: the
    binarized input is padded explicitly with the layer's pad value (also 0, where a symmetric layer
    would use the convolution's own padding)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5),
                          nn.Conv2d(5, 6, (2, 4), padding="same", bias=False), nn.BatchNorm2d(6), nn.Hardtanh(),
                          nn.Flatten(1), nn.Linear(6 * 5 * 7, 3))
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    onebit.binarize(model, method, example_input=x, pad_value=pad_value)
    finish_training(model, method)
    _randomize(model)
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_of_a_binary_conv2d(mode, tmp_path):
    """A 2-D binary conv padded (2, 1) with a padding mode: the real input is padded before the sign
    (height and width by their own amounts), the conv itself is then unpadded; stride (1, 2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1),
                          BinaryConv2d(5, 6, 3, stride=(1, 2), padding=(2, 1), padding_mode=mode, method="reactnet"),
                          nn.BatchNorm2d(6), nn.Flatten(1), nn.LazyLinear(3))
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    model(x)
    _randomize(model)
    _compare(model, x, tmp_path, flavors=("float",) if mode == "circular" else ("float", "qonnx"))


def geometry_per_axis(method: str) -> tuple[nn.Module, torch.Tensor]:
    """A conv net whose binary layers' strides, paddings and kernel sizes differ between height and
    width, and an input of 3 samples of different magnitudes (XNOR's K differs per sample); the lazy
    layer is sized by one forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1),
                          BinaryConv2d(5, 7, (3, 1), stride=(2, 1), padding=(1, 0), method=method, pad_value=1.0),
                          nn.BatchNorm2d(7), nn.PReLU(7),
                          BinaryConv2d(7, 4, (1, 3), stride=(1, 2), padding=(0, 2), method=method, pad_value=-1.0),
                          nn.Flatten(1), nn.LazyLinear(3))
    x = torch.randn(3, 3, 7, 6, generator=torch.Generator().manual_seed(1))
    x[1] *= 4.0  # samples of different magnitudes: K differs per sample
    model(x)
    return model, x


@pytest.mark.parametrize("method", ["xnor", "bnn"])
def test_binary_conv_geometry_per_axis(method, tmp_path):
    """Strides, paddings and kernel sizes that differ between height and width, with XNOR's per-sample
    K over every axis but the batch (N = 3, each sample its own K)."""
    model, x = geometry_per_axis(method)
    _randomize(model)
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("bits", [1.4, 2.6])
def test_qonnx_inference_module_of_masked_planes_computes_the_layer(bits):
    """The QONNX form's torch side (what ``inference_module(model, "qonnx")`` runs and inspects): HBNN's
    masked planes pass through the ternary Quant's forward, which must give ``{-1, 0, +1}·μ_j`` (levels
    -1 + narrow .. 1 for 2 signed bits), so the module computes the layer."""
    from onebit.deploy.onnx_export import inference_module

    torch.manual_seed(8)
    layer = BinaryConv2d(5, 7, 3, padding=1, method="hbnn", average_bits=bits).eval()
    x = torch.randn(2, 5, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = layer(x)
        got = inference_module(layer, "qonnx")(x)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


@pytest.mark.parametrize("method", ["bireal", "xnor"])
def test_unbatched_inputs(method, tmp_path):
    """A binary conv2d on one (C, H, W) image and a conv1d on one (C, L) sequence, as torch's layers take
    them: the inference form adds the batch axis in front and removes it after (XNOR's K of the one
    sample)."""
    from onebit.nn import BinaryConv1d

    torch.manual_seed(0)
    for layer, x in ((BinaryConv2d(5, 7, 3, padding=1, method=method), torch.randn(5, 4, 6)),
                     (BinaryConv1d(5, 7, 3, padding=1, method=method), torch.randn(5, 9))):
        finish_training(layer, method)
        _randomize(layer)
        _compare(layer, x, tmp_path, flavors=("float",))


def test_qonnx_quantizer_parameters_are_initializers(tmp_path):
    """QONNX reads a quantizer's scale, zero point and bit width with ``get_initializer``: in a QONNX file
    of several binary layers (equal buffers shared, small ones that torch writes as Constant nodes) every
    quantizer input after the first is an initializer of its own; a float file has no QONNX nodes."""
    import onnx

    from onebit.deploy.onnx_export import QONNX_DOMAIN

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1),
                          BinaryConv2d(5, 6, 3, padding=1, method="hbnn", average_bits=1.4), nn.BatchNorm2d(6),
                          BinaryConv2d(6, 6, 3, padding=1, method="bnn"), nn.BatchNorm2d(6),
                          BinaryConv2d(6, 4, 3, padding=1, method="hbnn", average_bits=1.4),
                          nn.Flatten(1), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    _randomize(model)
    _compare(model, x, tmp_path)
    graph = onnx.load(str(tmp_path / "m-qonnx.onnx")).graph
    initializers = {t.name for t in graph.initializer}
    quant = [n for n in graph.node if n.domain == QONNX_DOMAIN]
    assert {n.op_type for n in quant} == {"BipolarQuant", "Quant"}
    assert all(i in initializers for n in quant for i in n.input[1:])
    assert not [n for n in onnx.load(str(tmp_path / "m-float.onnx")).graph.node if n.domain == QONNX_DOMAIN]


def test_the_default_opset_writes_layer_norm_as_one_node(tmp_path):
    """Opset 17 (the default) has LayerNormalization as one node, the form the ViT's layers export in."""
    import onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), BinaryLinear(8, 5, method="bnn"))
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    _compare(model, x, tmp_path, flavors=("float",))
    proto = onnx.load(str(tmp_path / "m-float.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [n.op_type for n in proto.graph.node].count("LayerNormalization") == 1


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("signed,narrow", [(1, 1), (1, 0), (0, 0), (0, 1)])
def test_the_torch_quant_is_qonnx_quant(bits, signed, narrow):
    """The torch side of the exported ``Quant`` node (what the traced QONNX module computes) is QONNX's own
    ``quant`` (``qonnx.custom_op.general.quant``, the function its executor runs), for every bit width,
    signedness, narrow range, a zero point and a scale, on values beyond both clip bounds and on ties."""
    from qonnx.custom_op.general.quant import quant

    from onebit.deploy.onnx_export import _QuantFn

    x = torch.cat([torch.linspace(-20.0, 20.0, 161), torch.randn(64, generator=torch.Generator().manual_seed(0)) * 9])
    for scale, zeropt in ((1.0, 0.0), (0.37, 0.0), (0.5, 1.0), (2.0, -1.0)):
        want = quant(x.numpy(), np.array(scale, np.float32), np.array(zeropt, np.float32), np.array(float(bits)),
                     signed, narrow, "ROUND")
        got = _QuantFn.apply(x, torch.tensor(scale), torch.tensor(zeropt), torch.tensor(float(bits)), signed, narrow)
        assert np.allclose(got.numpy(), want, rtol=0, atol=1e-6), (scale, zeropt)
