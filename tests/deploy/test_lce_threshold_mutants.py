"""LCE's bit-packed output thresholds at their edges (issue 21: ``_bit_thresholds`` in ``_lce_nodes.py``
had survivors of a seed-3001 single-file mutation sample, e.g. ``k_taps = kernel[1] * kernel[1] * c_in``).

A binary conv whose output feeds only another binary conv's sign writes sign bits: bit ``c`` set iff
``popcount > floor((K + b/m)/2)``, clipped to ``[-1, K]``; a zero multiplier leaves the sign of the bias
alone (``-1``: always set, ``K``: never), a negative one flips the filter. Here the producer has a
non-square kernel (1x3: ``K = 1·3·C_in``, not ``3·3·C_in``, ``1·1·C_in`` or ``(1/3)·C_in``) and only two input
channels (``K = 6``: popcounts of 0 and of K occur at many positions, so a threshold moved by one at
either end of the clip shows), and its BatchNorm gives channels every edge: zero scale with a
negative, zero or positive bias, biases beyond ``±K·m`` (thresholds clipped), negative scales, and
scales below and above 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")

# (BatchNorm weight, bias) per channel of the producer; running mean 0, variance 1 - eps: scale = weight.
EDGES = [
    (0.0, -0.3), (0.0, 0.0), (0.0, 0.4),    # zero multiplier: the bias's sign alone (0 -> +1)
    (0.5, -50.0), (0.5, 50.0),              # |b/m| > K: thresholds clipped to -1 and K
    (-0.7, 0.9), (-1.6, -2.1), (-0.3, 0.0),  # negative multipliers: the filter flipped
    (0.3, 0.7), (0.8, -0.5), (1.7, 1.1), (2.5, -3.9), (0.45, 0.2),  # |m| below and above 1
]


def _model(method: str) -> nn.Sequential:
    c = len(EDGES)
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1),
        BinaryConv2d(2, c, (1, 3), 1, (0, 1), method=method, pad_value=1.0), nn.BatchNorm2d(c), nn.Hardtanh(),
        BinaryConv2d(c, 5, (3, 1), 1, (1, 0), method="bnn", pad_value=1.0),
        nn.Flatten(), nn.Linear(5 * 7 * 6, 3),
    ).eval()
    bn = model[2]
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.copy_(torch.tensor([w for w, _ in EDGES]))
        bn.bias.copy_(torch.tensor([b for _, b in EDGES]))
    return model


def _bits(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's signs at the consumer's input: the producer's sign bits (+1 / -1)."""
    with torch.no_grad():
        y = model[:4](x)
    return torch.where(y >= 0, 1.0, -1.0)


@pytest.mark.parametrize("method", ["bnn", "bireal"])
def test_bit_thresholds_at_their_edges_match_pytorch(method):
    torch.manual_seed(0)
    model = _model(method)
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(1))
    buf = lce.to_lce_bytes(model, x)
    from tflite.Model import Model

    tfl = Model.GetRootAs(buf, 0)
    graph = tfl.Subgraphs(0)
    customs = [tfl.OperatorCodes(graph.Operators(i).OpcodeIndex()).CustomCode() for i in range(graph.OperatorsLength())]
    assert customs.count(b"LceQuantize") == 1, "the producer writes bits: only the first binary conv quantizes"
    signs = _bits(model, x)
    # every edge is reached: channels always set, never set, and mixed
    per_channel = (signs < 0).float().mean(dim=(0, 2, 3))
    assert per_channel[0] == 1 and per_channel[2] == 0 and per_channel[3] == 1 and per_channel[4] == 0
    assert per_channel[1] == 0  # y = 0 exactly: sign(0) = +1
    assert ((per_channel > 0) & (per_channel < 1)).sum() >= 4
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
