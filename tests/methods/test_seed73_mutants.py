"""Survivors of the honest mutation sample of seed 73 (issue 21), each killed here:

* ``functional.py``: IR-Net's native backward with the standardisation's degrees of freedom floored at 2
  instead of 1 (``max(n - 1, 2)``): only a row of two weights tells, where the unbiased standardisation
  maps any two distinct weights to ±1/√2, so the gradient through it is exactly zero;
* ``proxconnect.py``: a 1-D weight sent to the native kernel, which scales per output channel (each
  element its own row, α = |w|) where the formula scales the whole tensor by mean |w|."""

from __future__ import annotations

import math

import pytest
import torch
from native_switch import run

from onebit.methods import functional as fx
from onebit.nn import BinaryLinear


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("k,t", [(1 / 0.7, 0.7), (1.0, 10.0), (1000.0, 1e-3)])
def test_irnet_rows_of_two_weights_standardise_to_constants_so_their_gradient_is_zero(native, k, t):
    torch.manual_seed(0)
    w = torch.randn(6, 2).requires_grad_(True)
    out = run(native, fx.libra_ede, w, torch.tensor(k), torch.tensor(t))
    run(native, out.backward, torch.randn(6, 2))
    balanced = (w - w.mean(dim=1, keepdim=True)) / w.std(dim=1, keepdim=True)
    assert torch.allclose(balanced.abs(), torch.full_like(balanced, 1 / math.sqrt(2)))
    # k·t·(1 − tanh²) is up to k·t and 1/std up to ~10 here: a gradient that did not cancel would be O(1)
    assert w.grad.abs().max() < 1e-5


@pytest.mark.parametrize("preset", ["pcpp-bc", "pcpp-pc", "pcpp-bnn"])
def test_proxconnect_scales_a_1d_weight_by_its_mean_magnitude(preset):
    torch.manual_seed(1)
    layer = BinaryLinear(4, 3, method=preset)
    w = torch.randn(5)
    alpha = w.abs().mean()
    formula = layer.method.scaled_weight(w, alpha, layer.pcpp_mu, False)  # the preset's definition, α = mean|w|
    for native in (True, False):
        assert torch.equal(run(native, layer.method.quantize_weight, layer, w), formula)
    if preset != "pcpp-pc":  # the sign presets: α·sign(w); PC's proximal map at μ = 0 keeps |w/α| < 1
        assert torch.equal(formula, fx.sign(w) * alpha)
