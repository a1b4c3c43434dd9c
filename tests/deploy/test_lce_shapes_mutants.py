"""Every tensor an LCE export declares has the shape and type LCE's interpreter computes for it.

TFLite's kernels size their outputs themselves at ``Prepare``, so a wrong shape written into the file
(XNOR's K declared ``(N, 2, 1, 1)``, a bit-packed tensor with the wrong word count, a padded tensor one
row short) runs correctly in LCE's interpreter and no comparison of outputs notices it, while the file
is wrong for every reader that trusts it (delegates that plan memory from the file, converters, graph
viewers). Issue 21: such one-line bugs survived single-file mutation samples of ``_lce_nodes.py`` and
``_lce_graph.py`` (seed 3001: ``self.g.new((plan.n, 1, 1, 1), _NHWC)`` → ``(plan.n, 2, 1, 1)``).

How: while the file is written, every operator's output is also made an output of the graph (the
usual way to inspect a TFLite model's intermediate tensors), so the interpreter returns each one as
computed; its shape and dtype are compared with what the file declares for it. The models reach
every binary-layer path (XNOR's K, HBNN's planes and masks, 0/±1 padding by each route, bit-packed
output through thresholds and LceBMaxPool2d, weight-only layers, linear layers on tokens) and the
full-precision operators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deploy_probe import finish_training, randomize_norms
from torch import nn

import onebit
from onebit.deploy import lce
from onebit.nn import BinaryConv2d, BinaryLinear

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")

def _declared_and_computed(model: nn.Module, x: torch.Tensor, monkeypatch) -> list[tuple[int, tuple, tuple]]:
    """[(tensor index, (declared shape, dtype), (computed shape, dtype))] for every operator output,
    after checking the model's own output against PyTorch."""
    from onebit.deploy._tflite_builder import _DTYPES, ModelBuilder

    names = {v: k for k, v in _DTYPES.items()}
    declared: dict[int, tuple] = {}
    order: list[int] = []
    serialize = ModelBuilder.serialize

    def with_every_output(self):
        produced = [o for op in self.ops for o in op.outputs]
        declared.update({o: (tuple(self.tensors[o].shape), names[self.tensors[o].dtype]) for o in produced})
        self.outputs = list(dict.fromkeys([*self.outputs, *produced]))
        order[:] = self.outputs
        return serialize(self)

    with monkeypatch.context() as patch:
        patch.setattr(ModelBuilder, "serialize", with_every_output)
        buf = lce.to_lce_bytes(model, x)
    xin = x.permute(0, 2, 3, 1) if x.dim() == 4 else x
    computed = lce.interpreter(buf).predict(xin.numpy())
    assert len(computed) == len(order)
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(computed[0])
    got = got.permute(0, 3, 1, 2) if got.dim() == 4 else got  # an image output stays NHWC
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
    return [(i, declared[i], (tuple(a.shape), np.dtype(a.dtype))) for i, a in zip(order, computed)]


def _check(model: nn.Module, x: torch.Tensor, monkeypatch) -> None:
    model.eval()
    wrong = [(i, d, c) for i, d, c in _declared_and_computed(model, x, monkeypatch) if d != c]
    assert not wrong, f"tensors declared (shape, dtype) unlike LCE computes them: {wrong}"


def _cnn() -> nn.Sequential:
    """A stem, a stride-2 binary conv to 33 channels (BN, PReLU), a binary conv (BN, Hardtanh) into a
    max-pool, one more binary conv, a binary linear layer with BN and a float head."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
        nn.Conv2d(8, 33, 3, 2, 1, bias=False), nn.BatchNorm2d(33), nn.PReLU(33),
        nn.Conv2d(33, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.Hardtanh(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.Hardtanh(),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 20), nn.BatchNorm1d(20), nn.Hardtanh(), nn.Linear(20, 4),
    )


# (method, pad_value): XNOR's K, XNOR-Net++'s scales, HBNN's planes, ReActNet's thresholds, weight-only
# ProxConnect++, Bi-Real's bit-packed output; each padding value on the stride-2 layer (8 -> 4: TFLite's
# SAME pads bottom/right only, so 0 and -1 take the explicit routes).
CASES = [("xnor", 0.0), ("xnorpp", 1.0), ("hbnn", 0.0), ("reactnet", -1.0), ("pcpp-bc", 0.0), ("bireal", 1.0),
         ("bnn", -1.0)]


@pytest.mark.parametrize("method,pad_value", CASES)
def test_every_declared_shape_is_the_computed_one(method, pad_value, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = _cnn()
    onebit.binarize(model, method, example_input=x, pad_value=pad_value)
    finish_training(model, method)
    randomize_norms(model)
    _check(model, x, monkeypatch)


class Tokens(nn.Module):
    """Binary linear layers on (N, T, F) tokens and on one unbatched vector, XNOR's per-token K."""

    def __init__(self):
        super().__init__()
        self.a = BinaryLinear(6, 5, method="xnor")
        self.b = BinaryLinear(5, 7, method="bnn")
        self.c = BinaryLinear(7 * 3, 2, method="hbnn")

    def forward(self, x):
        y = self.b(self.a(x))
        return self.c(y.reshape(-1))


def test_binary_linear_shapes_on_tokens(monkeypatch):
    torch.manual_seed(0)
    _check(Tokens(), torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(1)), monkeypatch)


def test_bit_packed_chain_shapes(monkeypatch):
    """Bits through thresholds (odd channel counts: 33 -> 2 words, 37 -> 2), LceBMaxPool2d on bits."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1),
        BinaryConv2d(40, 37, 3, 1, 1, method="bireal", pad_value=1.0), nn.BatchNorm2d(37), nn.Hardtanh(),
        BinaryConv2d(37, 33, (3, 1), (2, 1), (1, 0), method="bireal", pad_value=1.0), nn.BatchNorm2d(33),
        nn.Hardtanh(), nn.MaxPool2d((2, 1)),
        BinaryConv2d(33, 8, 3, 1, 1, method="bnn", pad_value=1.0),
        nn.Flatten(), nn.Linear(8 * 2 * 7, 4),
    )
    randomize_norms(model)
    _check(model, torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(1)), monkeypatch)


def test_full_precision_operator_shapes(monkeypatch):
    """The float operators of test_lce_ops_mutants, each declared as computed."""
    from test_lce_ops_mutants import ACTIVATIONS, Activations, Arithmetic, Functional, PadsAndCats

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    for net in (Activations([m for acts in ACTIVATIONS.values() for m in acts if not isinstance(m, nn.PReLU)]),
                Functional(), Arithmetic(), PadsAndCats()):
        _check(net, x, monkeypatch)
    adaptive = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, stride=(1, 2), padding=1),
                             nn.AdaptiveAvgPool2d((2, 3)), nn.Conv2d(6, 12, 1, groups=6), nn.AvgPool2d((1, 3)),
                             nn.Flatten(1), nn.Linear(24, 3))
    _check(adaptive, torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(2)), monkeypatch)
    for size in (1, (2, 1), (1, 2)):  # a MEAN keeping its dims (1x1), divisor pools of one row or column
        pool = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(size), nn.Conv2d(4, 5, 1),
                             nn.Flatten(1), nn.LazyLinear(3))
        x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(3))
        pool(x)
        _check(pool, x, monkeypatch)


class ViewConvFlatten(nn.Module):
    """(N, F) → Linear → view as (N, C, H, W) → conv to ``c_out`` channels → flatten → Linear: one change
    from torch's order to TFLite's NHWC before the conv and one back after it."""

    def __init__(self, c: int, h: int, w: int, c_out: int, k: int):
        super().__init__()
        self.chw = (c, h, w)
        self.fc = nn.Linear(5, c * h * w)
        self.conv = nn.Conv2d(c, c_out, k, padding=k // 2)
        self.head = nn.Linear(c_out * h * w, 3)

    def forward(self, x):
        return self.head(self.conv(self.fc(x).view(x.shape[0], *self.chw)).flatten(1))


@pytest.mark.parametrize("c,h,w,c_out,k,transposes", [
    (1, 2, 3, 1, 3, 0),  # one channel each way: NCHW and NHWC hold the same bytes, a RESHAPE
    (4, 1, 1, 5, 1, 0),  # one pixel each way: the same
    (1, 2, 3, 4, 3, 1),  # one channel in, four out: only the way back needs a TRANSPOSE
    (2, 2, 3, 3, 3, 2),  # neither: a TRANSPOSE each way
    (2, 3, 3, 3, 3, 2),  # neither, square: H / W = 1 is no reason for a RESHAPE
])
def test_layout_changes_transpose_only_where_the_bytes_move(c, h, w, c_out, k, transposes, monkeypatch):
    """The file reorders axes with TRANSPOSE only where NCHW and NHWC differ in memory; where they hold
    the same bytes (one channel or one pixel) a RESHAPE is enough. Every declared shape is checked too."""
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.Model import Model

    torch.manual_seed(0)
    net = ViewConvFlatten(c, h, w, c_out, k).eval()
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    _check(net, x, monkeypatch)
    model = Model.GetRootAs(lce.to_lce_bytes(net, x), 0)
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    codes = [model.OperatorCodes(op.OpcodeIndex()).BuiltinCode() for op in ops]
    assert codes.count(BuiltinOperator.TRANSPOSE) == transposes
