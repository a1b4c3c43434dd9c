"""FDA before its schedule's first call (seed-59 mutation sample of tools/mutate.py, issue 21: the initial
``α`` 0.1 → 0.15 survived): a freshly built layer trains with ``n = 9`` extra terms and ``α = 0.1``, the
schedule's value before epoch 0 (``0.05·(1 + cos 0)``, BiBench ``fda.py``), and its training-mode forward is
``(sign(x) + α·NA(x))`` for the input and ``(sign(W) + α·NA(W))·mean|W|`` per output channel for the weight,
``NA(t) = fc2(ReLU(fc1(t))) + 0.1·sin t`` (written out here with the layer's own NA weights)."""

from __future__ import annotations

import math

import torch

from onebit.methods.fda import fda_schedule
from onebit.nn import BinaryLinear


def _noise(na, t: torch.Tensor) -> torch.Tensor:
    w1, w2 = na.fc1.weight.detach().double(), na.fc2.weight.detach().double()
    return torch.relu(t @ w1.T) @ w2.T + 0.1 * torch.sin(t)


def _sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


def test_a_new_fda_layer_trains_with_the_schedules_starting_alpha():
    torch.manual_seed(0)
    layer = BinaryLinear(96, 5, bias=False, method="fda").train()
    assert int(layer.fda_terms) == 9
    # cos(0): the schedule's value before epoch 0, as a float32 buffer
    assert layer.fda_alpha.item() == torch.tensor(fda_schedule(-1, 10)[1], dtype=torch.float32).item()
    assert math.isclose(fda_schedule(-1, 10)[1], 0.1)
    x = torch.randn(7, 96)
    w = layer.weight.detach().double()
    alpha = 0.1
    wq = (_sign(w) + alpha * _noise(layer.weight_noise, w)) * w.abs().mean(1, keepdim=True)
    xd = x.double()
    xq = _sign(xd) + alpha * _noise(layer.input_noise, xd)
    want = xq @ wq.T
    got = layer(x).detach().double()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_a_layer_with_one_output_channel():
    """A weight of one row (one output channel: a binary logistic head): the weight's noise adaptation spans
    that row, and the mean-|W| fused value takes it (single-file sample 6003, not honest: ``w[0]`` → ``w[1]``
    survived in both places, since every tested layer had several outputs)."""
    from onebit.methods.fda import noisy_fourier_sign

    torch.manual_seed(1)
    layer = BinaryLinear(12, 1, bias=False, method="fda").train()
    assert layer.weight_noise.fc1.in_features == 12
    x = torch.randn(3, 12, requires_grad=True)
    y = layer(x)
    w = layer.weight.detach().double()
    wq = (_sign(w) + 0.1 * _noise(layer.weight_noise, w)) * w.abs().mean(1, keepdim=True)
    xq = _sign(x.detach().double()) + 0.1 * _noise(layer.input_noise, x.detach().double())
    want = xq @ wq.T
    torch.testing.assert_close(y.detach().double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    y.sum().backward()
    assert layer.weight.grad.shape == (1, 12) and torch.isfinite(layer.weight.grad).all()
    row, h = torch.randn(1, 7), torch.randn(1, 7)
    got = noisy_fourier_sign(row, h, torch.tensor(0.05), 9, 0.1, scale_by_mean_abs=True)
    want = (_sign(row) + 0.05 * (h + 0.1 * torch.sin(row))) * row.abs().mean()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
