"""Method details that a single-file mutation sample found untested (tools/mutate.py ``--file base.py
--file recu.py --file biper.py --file xnorpp.py --file irnet.py --file proxconnect.py --sample 14 --seed 4005``;
not an honest sample): ReCU's unbiased variance over two features (the smallest count where it differs from
the biased one), the per-sample standardisation built on it, its τ options' ranges, and XNOR-Net++'s
inference output scale (a detached outer product)."""

from __future__ import annotations

import math

import pytest
import torch

from onebit.methods.recu import EPS, standardize_per_sample, unbiased_var


@pytest.mark.parametrize(("values", "var"), [([[1.0, 3.0]], 2.0), ([[1.0, 2.0, 6.0]], 7.0), ([[5.0]], 0.0),
                                             ([[2.0, 2.0]], 0.0)])
def test_unbiased_variance_by_hand(values, var):
    """Σ(x − mean)² / (count − 1): [1, 3] → 2 (the biased value would be 1); [1, 2, 6] → 14/2; one
    element → 0 (the biased value; torch's unbiased one would be NaN)."""
    x = torch.tensor(values)
    assert unbiased_var(x, (1,)).tolist() == [[var]]


def test_standardizing_two_features_uses_the_unbiased_variance():
    x = torch.tensor([[1.0, 3.0], [-2.0, 2.0]])  # variances 2 and 8 (biased: 1 and 4)
    expected = x / torch.tensor([[math.sqrt(2.0 + EPS)], [math.sqrt(8.0 + EPS)]])
    torch.testing.assert_close(standardize_per_sample(x, (1,)), expected, rtol=1e-6, atol=0)
    conv = torch.tensor([[[[1.0]], [[3.0]]]])  # (1, 2, 1, 1): two features over C, H, W
    torch.testing.assert_close(unbiased_var(conv, (1, 2, 3)), torch.tensor([[[[2.0]]]]))


@pytest.mark.parametrize("name", ["tau_min", "tau_max"])
def test_recu_tau_bounds_are_half_closed_at_one_half_and_open_at_one(name):
    """τ ∈ [0.5, 1): Q_τ = −mean|W1|·ln(2 − 2τ) is infinite at τ = 1 (no clamp at all) and τ < 0.5 would
    clamp inside the mean magnitude; the defaults are BiBench's 0.85 → 0.99."""
    from onebit.nn import BinaryLinear

    other = {"tau_min": 0.5} if name == "tau_max" else {"tau_max": 0.9999}
    for value in (0.5, 0.99, 0.9999):
        layer = BinaryLinear(4, 4, method="recu", **{name: value}, **other)
        assert getattr(layer.method, name) == value
    for value in (1.0, 0.49, 1.2):
        with pytest.raises(ValueError, match=rf"{name}={value} is out of range; allowed: a number in \[0\.5, 1\)"):
            BinaryLinear(4, 4, method="recu", **{name: value}, **other)
    default = BinaryLinear(4, 4, method="recu").method
    assert (default.tau_min, default.tau_max) == (0.85, 0.99)


def test_xnorpp_inference_output_scale_is_the_detached_outer_product():
    """XNOR-Net++'s Γ = o ⊗ h ⊗ w handed to the exporters as a constant (sample-4005 survivor: the
    spatial factors' ``.detach()`` dropped): no gradient, the product of the three factors, and a copy."""
    from onebit.nn import BinaryConv2d

    layer = BinaryConv2d(2, 3, 3, padding=1, method="xnorpp", output_size=(4, 5))
    with torch.no_grad():
        layer.gamma_o.copy_(torch.tensor([1.0, 2.0, -0.5]))
        layer.gamma_h.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
        layer.gamma_w.copy_(torch.tensor([1.0, -1.0, 0.25, 3.0, 2.0]))
    scale = layer.method.output_scale_tensor(layer)
    assert all(p.requires_grad for p in (layer.gamma_o, layer.gamma_h, layer.gamma_w))
    assert not scale.requires_grad and scale.grad_fn is None
    expected = layer.gamma_o.detach()[:, None, None] * layer.gamma_h.detach()[None, :, None] \
        * layer.gamma_w.detach()[None, None, :]
    assert torch.equal(scale, expected)
    scale.mul_(0.0)
    assert layer.gamma_h.detach().tolist() == [0.5, 1.0, 1.5, 2.0]
