"""The PReLU of the fused epilogue at y = 0 exactly (issue 21: ``kernels.epilogue_torch``'s ``y < 0`` written
``y <= 0``, never sampled as a survivor but never killed either). The engine (csrc/epilogue.h) takes the
slope only for y < 0, so a +0 stays +0 whatever the slope; ``y <= 0`` would give ``0 * slope``: -0 for a
negative slope, NaN for an infinite one. A binary layer with an even number of inputs per output sums to 0
often, and the torch copy of the epilogue (the oracle, and the packed runtime's fallback) must then
agree with the engine bit for bit, the sign of zero included."""

from __future__ import annotations

import math

import pytest
import torch

from onebit import _engine
from onebit.deploy import kernels as K


@pytest.fixture(params=[pytest.param(name, marks=[] if _engine.cpu_supports(i) else
                                     [pytest.mark.skip(reason=f"this CPU lacks the ISA of the {name} kernel")])
                        for i, name in enumerate(K.KERNELS)])
def kernel(request):
    K.set_kernel(request.param)
    yield request.param
    K.set_kernel(None)


def _signs(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("slope", [-0.25, math.inf])
def test_a_zero_sum_keeps_its_value_through_the_prelu_on_every_path(kernel, slope):
    gen = torch.Generator().manual_seed(0)
    x, w = _signs(2, 4, 5, 5, gen=gen), _signs(3, 4, 1, 1, gen=gen)  # 4 inputs per output: sums -4..4, often 0
    transform = K.OutputTransform(prelu=slope)
    got = K.binary_conv2d(K.pack_activations(x), K.pack_weights(w), transform=transform)
    want = K.reference_binary_conv2d(x, w, transform=transform)
    zeros = got == 0
    assert zeros.sum() > 0 and not got.isnan().any()
    assert not got[zeros].signbit().any()  # +0 in, +0 out: the slope is not applied
    assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())


def test_the_torch_epilogue_applies_the_slope_below_zero_only():
    y = torch.tensor([0.0, -0.0, 2.0, -2.0])
    got = K.epilogue_torch(y, prelu=torch.tensor(-0.5))
    assert got.tolist() == [0.0, 0.0, 2.0, 1.0]
    assert got.signbit().tolist() == [False, True, False, False]  # each zero keeps its sign
    assert K.epilogue_torch(torch.zeros(3), prelu=torch.tensor(math.inf)).tolist() == [0.0, 0.0, 0.0]
