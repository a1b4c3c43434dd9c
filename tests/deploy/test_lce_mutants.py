"""The LCE export's written file, read back with the ``tflite`` schema package, and a model that reads its
own shape (``y.size(0)``): details that LCE's interpreter tolerates or that no other test model has, so a
one-line bug there (tools/mutate.py, issue 21) went unnoticed: an absent optional input must be -1 (the
TFLite schema's marker), an unpadded pool must say VALID, and ``size(dim)`` must be that one size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d, BinaryLinear

tflite = pytest.importorskip("tflite")
pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


class ConvPools(nn.Module):
    """binary conv → max pool → average pool (both unpadded) → flatten by ``y.size(0)`` → linear."""

    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(3, 8, 3, padding=1, method="xnor")
        self.pool, self.avg = nn.MaxPool2d(2), nn.AvgPool2d(2)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        y = self.avg(self.pool(self.conv(x)))
        return self.fc(y.reshape(y.size(0), -1))


def _ops(buf: bytes):
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = code.CustomCode().decode() if code.CustomCode() else code.BuiltinCode()
        yield name, op


def _pool_padding(op) -> int:
    options = tflite.Pool2DOptions()
    table = op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return options.Padding()


def test_lce_file_marks_absent_inputs_and_unpadded_pools_as_the_schema_says():
    torch.manual_seed(0)
    net = ConvPools().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    buf = lce.to_lce_bytes(net, x)
    ops = list(_ops(buf))
    bconvs = [op for name, op in ops if name == "LceBconv2d"]
    assert len(bconvs) == 1
    # the bconv writes floats: its fifth input (the output thresholds) is absent, written as -1
    assert list(bconvs[0].InputsAsNumpy())[4] == -1
    pools = [op for name, op in ops if name in (tflite.BuiltinOperator.MAX_POOL_2D,
                                                 tflite.BuiltinOperator.AVERAGE_POOL_2D)]
    assert len(pools) == 2
    assert all(_pool_padding(op) == tflite.Padding.VALID for op in pools)
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape == (2, 2)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


class SizeReader(nn.Module):
    """Reads one size (``x.size(1)``), the whole shape (``x.size()``, ``x.shape``) of its input and of a
    parameter (``self.fc.weight.size(1)``, a constant of the graph: evaluated at export) and computes
    with them."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        n, c = x.size(0), x.size(1)
        flat = x.reshape(n, c * x.size()[2])
        rows = flat.reshape(x.shape[0], self.fc.weight.size(1))
        return self.fc(rows.reshape(-1, self.fc.weight.size()[1]))


def test_lce_reads_one_size_or_the_whole_shape():
    """_lce_nodes.py `_python_value`'s `node.args[0]` (mutant: `args[1]`, seed-41 sample): the size of a
    parameter is read off the node it is called on."""
    torch.manual_seed(0)
    net = SizeReader().eval()
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_lce_file_declares_the_bit_packed_shapes():
    """Every bit-packed tensor the file declares (a bconv writing sign bits through thresholds, the bit
    max-pool after it, LceQuantize) has ceil(C/32) int32 words per pixel: 33 channels are two words, 32
    one and 64 two. LCE's interpreter sizes its tensors itself, so only the file can show a wrong count."""
    from onebit.nn import BinaryConv2d

    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        BinaryConv2d(8, 33, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(33), nn.Hardtanh(),
        BinaryConv2d(33, 32, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(32), nn.Hardtanh(),
        nn.MaxPool2d(2),
        BinaryConv2d(32, 64, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(64), nn.Hardtanh(),
        BinaryConv2d(64, 8, 3, 1, 1, method="bnn", pad_value=1.0),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 4),
    ).eval()
    with torch.no_grad():
        for bn in (model[2], model[5], model[9]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    buf = lce.to_lce_bytes(model, x)
    tfl = tflite.Model.GetRootAsModel(buf, 0)
    graph = tfl.Subgraphs(0)
    seen = {}
    for name, op in _ops(buf):
        if name not in ("LceBconv2d", "LceQuantize", "LceBMaxPool2d"):
            continue
        out = graph.Tensors(int(op.OutputsAsNumpy()[0]))
        if out.Type() != tflite.TensorType.INT32:
            continue  # a float output
        if name == "LceBconv2d":
            channels = int(graph.Tensors(int(op.InputsAsNumpy()[1])).ShapeAsNumpy()[0])  # OHWI filter: O
        elif name == "LceQuantize":
            channels = int(graph.Tensors(int(op.InputsAsNumpy()[0])).ShapeAsNumpy()[-1])  # NHWC float input
        else:
            channels = seen["LceBconv2d"][-1][0]  # the bits of the bconv before it
        words = int(out.ShapeAsNumpy()[-1])
        seen.setdefault(name, []).append((channels, words))
    assert seen["LceBconv2d"] == [(33, 2), (32, 1), (64, 2)]
    assert seen["LceQuantize"] == [(8, 1)] and seen["LceBMaxPool2d"] == [(32, 1)]
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("padding", [(1, 0), (0, 1), (2, 1)])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_lce_pools_padded_unevenly_in_height_and_width(pool, padding):
    """_lce_graph.py's padded max-pool `pad(x, (p[0], p[0], p[1], p[1]), lowest)` (mutant: `(p[0], p[1], p[1],
    p[1])`, seed-41 sample): a pool padded differently in height and width matches PyTorch."""
    torch.manual_seed(0)
    k = (3, 3) if padding != (2, 1) else (5, 3)
    layer = nn.MaxPool2d(k, stride=(1, 2), padding=padding) if pool == "max" else \
        nn.AvgPool2d(k, stride=(1, 2), padding=padding)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), layer, nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net(x)
        want = net.eval()(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


class Means(nn.Module):
    """Means over spatial axes written every way torch allows: positional dims and keepdim, a negative
    dim, keyword arguments."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 + 4 + 4 * 5 + 4, 3)

    def forward(self, x):
        y = self.conv(x)
        a = y.mean((2, 3), True).flatten(1)  # positional dims and keepdim
        b = torch.mean(y, dim=[-1, -2])  # keywords, negative dims
        c = y.mean(-1, True).flatten(1)  # one negative positional dim, kept: (N, C, H, 1)
        d = y.mean((2, 3))  # positional dims alone
        return self.fc(torch.cat([a, b, c, d], 1))


def test_lce_means_with_positional_and_keyword_dims():
    """_lce_graph.py mean `args[1] if len(args) > 1` (mutant: `args[2]`, seed-1001 sample of the LCE files):
    the reduced axes given positionally, by keyword or negative all match PyTorch."""
    torch.manual_seed(0)
    net = Means().eval()
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


class Slices(nn.Module):
    """Slices of an image-shaped value along channels, height and width (each range different), and of
    a vector."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 3, 5)

    def forward(self, x):
        y = self.conv(x)[:, 1:3, 2:, ::2]  # (N, 2, 4, 3) of (N, 6, 6, 5)
        return self.fc(y.flatten(1))[:, 1:4]


def test_lce_slices_each_axis_of_a_channels_last_value():
    """_lce_graph.py slice `perm = [0, 2, 3, 1]` (mutant: `[0, 1, 3, 1]`, seed-1001 sample of the LCE files):
    a slice of an NHWC-stored value moves each of torch's (N, C, H, W) ranges to its stored axis."""
    torch.manual_seed(0)
    net = Slices().eval()
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape == (2, 3)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


class Unbatched(nn.Module):
    """A binary linear layer applied to one unbatched vector (``x.reshape(-1)``: no leading dims)."""

    def __init__(self, method):
        super().__init__()
        self.binary = BinaryLinear(12, 5, method=method)

    def forward(self, x):
        return self.binary(x.reshape(-1))


@pytest.mark.parametrize("method", ["bnn", "xnor"])
def test_lce_binary_linear_on_an_unbatched_vector(method):
    """_lce_nodes.py `int(np.prod(lead)) if lead else 1` (mutant: `else 2`, seed-1001 sample of the LCE
    files): a vector without leading dims runs as one 1x1 pixel, and its output keeps torch's shape."""
    torch.manual_seed(0)
    net = Unbatched(method).eval()
    x = torch.randn(1, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(x.numpy())[0])
    assert got.shape == want.shape == (5,)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
