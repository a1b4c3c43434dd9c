"""Deployment behaviour that one-line mutants of src/onebit/deploy/ changed without a test failing
(tools/mutate.py, the seed-31 and seed-37 samples; see README's Development section)."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.deploy.onnx_export import run_onnx, to_onnx
from onebit.nn import BinaryConv2d, BinaryLinear


class TwoInputs(nn.Module):
    """``binary(x) + y``: a model fed two tensors."""

    def __init__(self):
        super().__init__()
        self.binary = BinaryLinear(12, 5, method="xnor")

    def forward(self, x, y):
        return self.binary(x) + y


def test_every_input_of_an_onnx_file_is_named_and_takes_any_batch(tmp_path):
    """onnx_export.py `range(1, len(inputs))` (mutant: `range(len(inputs), 1)`, seed-31 sample): the
    second input is named ``input_1`` and, like the first, has a symbolic batch dimension, so the file
    runs on a batch size other than the example's."""
    torch.manual_seed(0)
    model = TwoInputs().eval()
    path = to_onnx(model, (torch.randn(2, 12), torch.randn(2, 5)), tmp_path / "two.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "input_1"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in graph.input)
    x, y = torch.randn(7, 12), torch.randn(7, 5)
    with torch.no_grad():
        want = model(x, y)
    (got,) = run_onnx(path, x, y)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5)


class TwoOutputs(nn.Module):
    """``(binary(x), binary(x) * 2 + 1)``: a model answering with two tensors."""

    def __init__(self):
        super().__init__()
        self.binary = BinaryLinear(12, 5, method="xnor")

    def forward(self, x):
        y = self.binary(x)
        return y, y * 2 + 1


def test_every_output_of_an_onnx_file_is_named_and_takes_any_batch(tmp_path):
    """onnx_export.py `range(1, n_outputs)` (mutant: `range(n_outputs, 1)`, single-file sample 7002): the
    second output is named ``output_1``, and both answer a batch size other than the example's."""
    torch.manual_seed(0)
    model = TwoOutputs().eval()
    path = to_onnx(model, torch.randn(2, 12), tmp_path / "two_out.onnx")
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["output", "output_1"]
    x = torch.randn(7, 12)
    with torch.no_grad():
        want = model(x)
    got = run_onnx(path, x)
    assert len(got) == 2 and all(torch.allclose(torch.from_numpy(g), w, atol=1e-5) for g, w in zip(got, want))


class PooledActivation(nn.Module):
    """conv → average pool → ``act`` → flatten → linear: the activation follows a pool, so it cannot fuse
    into the convolution and is exported as an op of its own."""

    def __init__(self, act):
        super().__init__()
        self.conv, self.pool, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2), act
        self.head = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.head(self.act(self.pool(self.conv(x))).flatten(1))


class FunctionalRelu(PooledActivation):
    def __init__(self):
        super().__init__(nn.Identity())

    def forward(self, x):
        return self.head(torch.relu(self.pool(self.conv(x))).flatten(1))


@pytest.mark.skipif(not lce.LCE_PLATFORM, reason="larq-compute-engine ships its interpreter for x86-64 Linux only")
@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(), nn.Hardtanh(-0.2, 0.3), nn.Hardtanh(0.0, 1.0),
                                 nn.Hardtanh(-2.0, 6.0), None],
                         ids=["relu", "relu6", "hardtanh", "hardtanh_-0.2_0.3", "hardtanh_0_1", "hardtanh_-2_6",
                              "torch.relu"])
def test_a_standalone_activation_in_lce_matches_pytorch(act):
    """_lce_graph.py `self.unary("RELU", x)` (mutant: arguments swapped) and `lo == 0 and hi == 6` (mutant:
    `or`; seed-37 sample): a ReLU, ReLU6 or Hardtanh that no layer absorbs becomes TFLite's RELU / RELU6 /
    RELU_N1_TO_1 only for exactly those bounds, else MINIMUM + MAXIMUM, and LCE's interpreter computes what
    PyTorch does. The conv's outputs straddle every clamp bound."""
    torch.manual_seed(0)
    net = (FunctionalRelu() if act is None else PooledActivation(act)).eval()
    x = 3 * torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


@pytest.mark.skipif(not lce.LCE_PLATFORM, reason="larq-compute-engine ships its interpreter for x86-64 Linux only")
def test_a_channel_shift_of_a_sequence_in_lce_matches_pytorch():
    """_lce_graph.py `arr.reshape((-1,) + (1,) * (len(x.shape) - 2))` (mutant: `(1,)`, seed-31 sample): a
    per-channel vector on an (N, C, L) tensor, kept in torch's order, is shaped (C, 1) to broadcast over
    the channel axis."""
    from onebit.nn.blocks import LearnableBias

    torch.manual_seed(0)
    net = nn.Sequential(LearnableBias(3), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()


class Sliced(nn.Module):
    """A binary conv whose output is sliced (``y[:, :4, ..., 1:]``: a slice and an Ellipsis in the graph)."""

    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(3, 8, 3, padding=1, method="xnor")

    def forward(self, x):
        return self.conv(x)[:, :4, ..., 1:].float()


def test_a_saved_graph_keeps_slices_and_ellipsis(tmp_path):
    """graph.py `isinstance(value, slice)` (mutant: arguments swapped, seed-37 sample): indexing with
    slices, an Ellipsis and a dtype method survives save/load and gives the same outputs."""
    from onebit.deploy import export, load, save

    torch.manual_seed(0)
    packed = export(Sliced().eval())
    x = torch.randn(2, 3, 5, 6)
    save(packed, tmp_path / "sliced.onebit")
    restored = load(tmp_path / "sliced.onebit")
    want = packed(x)
    assert want.shape == (2, 4, 5, 5)
    torch.testing.assert_close(restored(x), want, rtol=0, atol=0)


def test_only_floating_point_arrays_are_checked_for_nan():
    """_finite.py `isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and x.size` (mutant:
    `or`, seed-41 sample): arguments that are not floating-point arrays or tensors (numbers, strings,
    lists, integer arrays, empty arrays) pass through the NaN guard untouched under every policy, and
    float arrays are still checked per sample."""
    import numpy as np

    from onebit.deploy._finite import NonFiniteInputError, guard_inputs

    plain = (3, "text", [float("nan")], None, np.arange(4), np.zeros((0, 3)), torch.arange(3))
    for policy in ("raise", "propagate"):
        out, bad = guard_inputs(plain, policy, "test")
        assert out is plain and bad is None
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]], dtype=np.float32)
    with pytest.raises(NonFiniteInputError, match="2 NaN/inf values in samples 1, 2"):
        guard_inputs((x, 7), "raise", "test")
    (clean, seven), bad = guard_inputs((x, 7), "propagate", "test")
    assert seven == 7 and bad.tolist() == [False, True, True]
    assert clean.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 1.0]]


def test_reference_kernels_return_plain_tensors():
    """kernels.py's oracles (`residual.detach()`; mutant: dropped, seed-41 sample): like the engine, the
    float64 reference returns data without an autograd graph, even for a residual that requires grad,
    and the same values as the engine."""
    from onebit.deploy import kernels as K

    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(2, 8, 5, 5, generator=g) < 0.5, -1.0, 1.0)
    w = torch.where(torch.rand(6, 8, 3, 3, generator=g) < 0.5, -1.0, 1.0)
    residual = torch.randn(2, 6, 5, 5, generator=g, requires_grad=True)
    tr = K.OutputTransform(torch.rand(6, generator=g), torch.randn(6, generator=g))
    ref = K.reference_binary_conv2d(x, w, padding=1, transform=tr, residual=residual)
    assert not ref.requires_grad and ref.grad_fn is None
    got = K.binary_conv2d(K.pack_activations(x), K.pack_weights(w), padding=1, transform=tr,
                          residual=residual.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
    assert torch.allclose(got, ref, atol=1e-5)


def test_a_custom_method_with_a_channel_scale_and_a_runtime_input_scale_deploys():
    """packed.py's unfused epilogue `scale.reshape((1,) + scale.shape + (1,) * ...)` (mutant: `(0,)`, seed-41
    sample): no shipped method has both a per-channel output scale and XNOR-Net's runtime input scale K,
    which keeps the scale out of the engine's fused epilogue; a method of one's own (a subclass, as the
    methods registry allows) that has both deploys to the same outputs as PyTorch, for conv2d and conv1d."""
    from onebit.deploy import export
    from onebit.methods.xnor import XNOR
    from onebit.nn import BinaryConv1d

    class XnorGamma(XNOR):
        name = "xnor-gamma-test"

        def init_layer(self, layer):
            super().init_layer(layer)
            layer.gamma_o = nn.Parameter(torch.rand(layer.weight.shape[0]) + 0.5)

        def scale_output(self, layer, y):
            return y * layer.channel_view(layer.gamma_o, y.dim())

        def output_scale_factors(self, layer, spatial_size):
            return (layer.gamma_o,)

        def output_scale_tensor(self, layer):
            return layer.gamma_o.detach().clone()

    torch.manual_seed(0)
    for cls, x in ((BinaryConv2d, torch.randn(2, 3, 6, 6)), (BinaryConv1d, torch.randn(2, 3, 7))):
        net = nn.Sequential(cls(3, 4, 3, padding=1, method=XnorGamma())).eval()
        with torch.no_grad():
            want = net(x)
        packed = export(net)
        (description,) = [m.description for m in packed.modules() if hasattr(m, "description")]
        assert description.output_scale.shape == (4,)
        torch.testing.assert_close(packed(x), want, rtol=1e-5, atol=1e-5)


def test_onnx_files_import_only_the_opsets_they_use(tmp_path):
    """onnx_export.py `custom_opsets={QONNX_DOMAIN: 1} if flavor == "qonnx" else None` (mutant: `!=`, seed-1001
    sample of the export files): a float file imports the standard opset alone (any ONNX runtime loads it
    without QONNX installed); a QONNX file also imports QONNX's domain at version 1, which its nodes use."""
    from onebit.deploy.onnx_export import QONNX_DOMAIN

    net = nn.Sequential(BinaryLinear(12, 5, method="xnor")).eval()
    found = {}
    for flavor in ("float", "qonnx"):
        model = onnx.load(str(to_onnx(net, torch.randn(2, 12), tmp_path / f"{flavor}.onnx", flavor=flavor)))
        found[flavor] = ({o.domain: o.version for o in model.opset_import}, {n.domain for n in model.graph.node})
    (float_opsets, float_domains), (qonnx_opsets, qonnx_domains) = found["float"], found["qonnx"]
    assert list(float_opsets) == [""] and float_domains == {""}
    assert qonnx_opsets[QONNX_DOMAIN] == 1 and QONNX_DOMAIN in qonnx_domains
    assert qonnx_opsets[""] == float_opsets[""]
