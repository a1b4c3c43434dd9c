"""The TFLite graph that the LCE export writes (``onebit.deploy._lce_graph``), read back with the ``tflite``
schema package and run in LCE's interpreter (issue 21: single-file mutation sample 8002 of
``_lce_graph.py``): TFLite's SAME output size decides which padded layers LCE pads by itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d
from onebit.nn.blocks import RPReLU

tflite = pytest.importorskip("tflite")
pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _op_names(buf: bytes) -> list[object]:
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    names = []
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        names.append(code.CustomCode().decode() if code.CustomCode() else code.BuiltinCode())
    return names


def _matches_torch(net: nn.Module, x: torch.Tensor, buf: bytes) -> None:
    with torch.no_grad():
        want = net(x)
    fed = x.permute(0, 2, 3, 1) if x.dim() == 4 else x  # the interpreter takes images as NHWC
    got = torch.from_numpy(lce.interpreter(buf).predict(fed.numpy())[0])
    got = got.permute(0, 3, 1, 2) if got.dim() == 4 else got
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("hw", [(6, 6), (5, 8)])
def test_stride_one_same_padding_is_tflites_same(hw):
    """At stride 1, TFLite's SAME output is the input size: a 3x3 binary conv padded by 1 with +1 is one
    LceBconv2d that pads by itself (no PAD op), and a 3x3 average pool padded by 1 without the padded taps
    (count_include_pad=False) is TFLite's SAME average; both give PyTorch's values."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), BinaryConv2d(8, 6, 3, 1, 1, method="bnn", pad_value=1.0),
                        nn.AvgPool2d(3, 1, 1, count_include_pad=False)).eval()
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    buf = lce.to_lce_bytes(net, x)
    names = _op_names(buf)
    assert names.count("LceBconv2d") == 1
    assert not {tflite.BuiltinOperator.PAD, tflite.BuiltinOperator.PADV2} & set(names)
    _matches_torch(net, x, buf)


def test_an_even_kernel_at_stride_two_is_tflites_same():
    """A 4x4 window at stride 2 padded by 1 on an 8x8 (then 4x4) map is TFLite's SAME padding too (output
    ceil(size / 2), one padded row and column on each side): LCE pads the binary conv itself (no PAD op) and
    the average pool without its padded taps is TFLite's SAME average."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), BinaryConv2d(8, 6, 4, 2, 1, method="bnn", pad_value=1.0),
                        nn.AvgPool2d(4, 2, 1, count_include_pad=False)).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    buf = lce.to_lce_bytes(net, x)
    names = _op_names(buf)
    assert names.count("LceBconv2d") == 1
    assert not {tflite.BuiltinOperator.PAD, tflite.BuiltinOperator.PADV2} & set(names)
    _matches_torch(net, x, buf)


@pytest.mark.parametrize("shape,first", [((2, 3, 4), nn.Linear(4, 1)), ((2, 3, 5, 5), nn.Conv2d(3, 4, (3, 5)))])
def test_one_feature_rprelu_on_the_last_axis(shape, first):
    """RPReLU(1, features_last=True) has one slope for the last axis, of size 1 (tokens of one feature, or a
    feature map one column wide): the PReLU's slope vector has that axis's size, not dim 1's (3 tokens, 4
    channels)."""
    torch.manual_seed(0)
    net = nn.Sequential(first, RPReLU(1, features_last=True), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    net(x)
    with torch.no_grad():
        net[1].prelu.weight.fill_(-0.5)
        net[1].shift_in.bias.fill_(0.25)
    _matches_torch(net.eval(), x, lce.to_lce_bytes(net.eval(), x))


@pytest.mark.parametrize("shape,first", [((2, 4, 5), nn.Identity()), ((2, 3, 5, 6), nn.Conv2d(3, 4, 3))])
def test_one_slope_prelu_spans_dim_one(shape, first):
    """nn.PReLU() (one slope) on a (N, 4, 5) sequence or a (N, 4, 3, 4) feature map: its slope vector has the
    size of torch's dim 1 (4 channels), not of another axis."""
    net = nn.Sequential(first, nn.PReLU(init=-0.5), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    net(x)
    _matches_torch(net.eval(), x, lce.to_lce_bytes(net.eval(), x))


def test_an_average_pool_with_a_divisor_override_is_refused():
    """TFLite's average pool divides by the window's size: AvgPool2d(divisor_override=3) is refused, a max
    pool (which has no divisor) exports."""
    from onebit.deploy import ExportError

    x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ExportError, match=r"layer '1' \(AvgPool2d\): divisor_override has no TFLite builtin"):
        lce.to_lce_bytes(nn.Sequential(nn.Conv2d(3, 4, 1), nn.AvgPool2d(2, divisor_override=3)).eval(), x)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2)).eval()
    _matches_torch(net, x, lce.to_lce_bytes(net, x))
