"""A binary conv feeding only another binary conv writes sign bits in the LCE file only when its fused
activation keeps the sign of ``y`` (issue 21: ``_sign_preserving_epilogue`` in ``_lce_nodes.py`` with
``(prelu > 0).any()`` for ``.all()`` survived the seed-47 sample).

A PReLU slope that is zero or negative changes the sign: ``prelu(y) = a·y`` is 0 (sign +1) or positive for
``y < 0``; so does a clamp whose range does not hold 0 with room below it (ReLU: negatives become 0). With
one such channel among positive ones the producer must write floats and the consumer quantize them (two
``LceQuantize``); with every slope positive, or a clamp ``lo < 0 <= hi``, the producer writes bits (one).
Either way the LCE interpreter's output equals PyTorch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")

C = 6
MIXED = [0.25, -0.5, 0.0, 1.5, 0.75, -2.0]  # positive, negative and zero slopes
ZERO = [0.25, 0.5, 0.0, 1.5, 0.75, 2.0]  # one zero slope: prelu(y) = 0 for y < 0, sign +1
POSITIVE = [0.25, 0.5, 0.1, 1.5, 0.75, 2.0]


def _prelu(slopes: list[float]) -> nn.PReLU:
    act = nn.PReLU(C)
    with torch.no_grad():
        act.weight.copy_(torch.tensor(slopes))
    return act


# (the producer's activation, the LceQuantize ops in the file: 1 = the producer writes bits)
ACTIVATIONS = {
    "prelu-mixed": (lambda: _prelu(MIXED), 2),
    "prelu-zero": (lambda: _prelu(ZERO), 2),
    "prelu-positive": (lambda: _prelu(POSITIVE), 1),
    "hardtanh": (nn.Hardtanh, 1),  # clamp(-1, 1) keeps every sign
    "hardtanh-low-top": (lambda: nn.Hardtanh(-1.0, 0.5), 1),  # clamp(-1, 0.5): still around 0
    "relu": (nn.ReLU, 2),  # clamp(0, inf): negatives become 0, sign +1
    "hardtanh-above-zero": (lambda: nn.Hardtanh(0.25, 2.0), 2),  # every output positive
}


def _model(act: nn.Module) -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        BinaryConv2d(4, C, 3, 1, 1, method="bnn", pad_value=1.0), nn.BatchNorm2d(C), act,
        BinaryConv2d(C, 5, 3, 1, 1, method="bnn", pad_value=1.0),
        nn.Flatten(), nn.Linear(5 * 6 * 5, 3),
    ).eval()
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.5, 0.5)
        model[2].running_var.uniform_(0.5, 2.0)
    return model


def _quantize_ops(buf: bytes) -> int:
    from tflite.Model import Model

    tfl = Model.GetRootAs(buf, 0)
    graph = tfl.Subgraphs(0)
    codes = [tfl.OperatorCodes(graph.Operators(i).OpcodeIndex()).CustomCode() for i in range(graph.OperatorsLength())]
    return codes.count(b"LceQuantize")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_the_activation_decides_whether_the_producer_writes_bits(name):
    make, quantizes = ACTIVATIONS[name]
    torch.manual_seed(0)
    model = _model(make())
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    buf = lce.to_lce_bytes(model, x)
    assert _quantize_ops(buf) == quantizes
    with torch.no_grad():
        y = model[:3](x)
        want = model(x)
    assert (y < 0).any(dim=(0, 2, 3)).all()  # every channel has negative pre-activations
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
