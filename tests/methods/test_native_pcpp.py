"""ProxConnect++'s native weight quantizer (csrc/train_pcpp.cpp) against the formulas written out and the
torch path (``functional.NATIVE_KERNELS = False``), the oracle: with α given, every value and gradient bit
for bit (exact zeros, |w/α| = 1, |w/α| > 1, α = 0); with α computed natively (summed in double) within
1e-6 relative; every preset, scale and μ through the layer; odd sizes, conv weights, one vs two threads,
and what falls back to the torch path."""

from __future__ import annotations

import pytest
import torch
from native_switch import run

from onebit.methods import functional as fx
from onebit.methods import proxconnect as pc
from onebit.methods.functional import sign
from onebit.nn import BinaryConv2d, BinaryLinear

pytestmark = pytest.mark.skipif(not pc._PCPP_KERNEL, reason="onebit._engine built without pcpp_weight")

ENGINE = fx._engine
PRESETS = ("pcpp-bc", "pcpp-pc", "pcpp-bnn", "pcpp-bnn+", "bnn++")
ABOVE_ONE = 1.0 + torch.finfo(torch.float32).eps


ALPHAS = torch.tensor([1.0, 0.3, 2.5, 0.0, 0.7])  # row scales given to the kernel (0: u = ±inf or NaN)


def edge_rows(n: int, seed: int) -> torch.Tensor:
    """Five rows of Gaussian values at 1.5x their row's α with exact zeros and ±α (u = w/α = ±1 exactly)
    salted in; one row with α = 0."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(len(ALPHAS), n, generator=g) * ALPHAS[:, None] * 1.5
    pick = torch.rand(w.shape, generator=g)
    w[pick < 0.15] = 0.0
    w = torch.where(pick > 0.85, torch.where(pick > 0.925, 1.0, -1.0) * ALPHAS[:, None].expand_as(w), w)
    w[3, : n // 2] = 1.0
    return w


def native_value(kind, w, alpha, mu, given=True):
    out = torch.empty_like(w)
    ENGINE.pcpp_weight(kind, w.data_ptr(), w.shape[0], w.shape[1], 0 if alpha is None else alpha.data_ptr(),
                       given and alpha is not None, mu, out.data_ptr(), torch.get_num_threads())
    return out


def native_grad(kind, g, w, alpha):
    out = torch.empty_like(w)
    ENGINE.pcpp_weight_backward(kind, g.data_ptr(), w.data_ptr(), w.shape[0], w.shape[1],
                                0 if alpha is None else alpha.data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def formula_value(kind, w, alpha, mu):
    """F = P∘B written out in torch's float32 ops: u = w/α, sign(u) or clamp(u + μ·sign(u), ±1), times α."""
    u = w if alpha is None else w / alpha[:, None]
    v = sign(u) if kind == pc._SIGN else (u + torch.tensor(mu) * sign(u)).clamp(-1.0, 1.0)
    return v if alpha is None else v * alpha[:, None]


def formula_grad(kind, g, w, alpha):
    """B'(u)·(g·α)/α: identity, or the clip mask 1{|u| ≤ 1} (hardtanh_backward's, NaN passes)."""
    ga = g if alpha is None else g * alpha[:, None]
    if kind == pc._CLIP_GRAD:
        u = w if alpha is None else w / alpha[:, None]
        ga = torch.where((u <= -ABOVE_ONE) | (u >= ABOVE_ONE), torch.zeros_like(ga), ga)
    return ga if alpha is None else ga / alpha[:, None]


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 63, 300, 1027])
@pytest.mark.parametrize("kind,mu", [(pc._SIGN, 0.0), (pc._PROX, 0.0), (pc._PROX, 0.3), (pc._PROX, 1.0),
                                     (pc._PROX, 1.7)])
@pytest.mark.parametrize("scaled", [True, False])
def test_values_and_gradients_with_alpha_given_are_the_formulas_bit_for_bit(n, kind, mu, scaled):
    w = edge_rows(n, n)
    alpha = ALPHAS.clone() if scaled else None
    torch.testing.assert_close(native_value(kind, w, alpha, mu), formula_value(kind, w, alpha, mu), rtol=0, atol=0,
                               equal_nan=True)
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(n)) * 3
    for grad_kind in (pc._IDENTITY_GRAD, pc._CLIP_GRAD):
        torch.testing.assert_close(native_grad(grad_kind, g, w, alpha), formula_grad(grad_kind, g, w, alpha), rtol=0,
                                   atol=0, equal_nan=True)


def test_the_clip_gradient_stops_exactly_beyond_one():
    w = torch.tensor([[-2.0, -ABOVE_ONE, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, ABOVE_ONE, 2.0, float("nan")]])
    g = torch.arange(1.0, 12.0)[None]
    got = native_grad(pc._CLIP_GRAD, g, w, None)
    assert got[0, :10].tolist() == [0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.0, 0.0] and got[0, 10] == 11.0
    assert native_value(pc._SIGN, w, None, 0.0).tolist() == [[-1.0] * 4 + [1.0] * 7]  # sign(±0) = sign(NaN) = +1
    prox = native_value(pc._PROX, w, None, 0.25)
    assert prox[0, :10].tolist() == [-1.0, -1.0, -1.0, -0.75, 0.25, 0.25, 0.75, 1.0, 1.0, 1.0]
    assert prox[0, 10].isnan()  # torch's clamp keeps NaN


def test_alpha_computed_natively_is_the_mean_abs_within_an_ulp():
    w = torch.randn(64, 2305, generator=torch.Generator().manual_seed(3))
    w[5] = 0.0
    w[6, ::3] = 0.0
    alpha = torch.empty(64)
    ENGINE.pcpp_weight(pc._SIGN, w.data_ptr(), 64, 2305, alpha.data_ptr(), False, 0.0, 0, 1)
    exact = w.double().abs().mean(dim=1).float()  # the double sum rounded once: exactly that
    assert torch.equal(alpha, exact)
    torch.testing.assert_close(alpha, w.abs().mean(dim=1), rtol=1e-6, atol=0)  # torch's float32 sum


def layer_for(preset, scale, conv=False):
    torch.manual_seed(0)  # the same layer on every run
    if conv:
        layer = BinaryConv2d(5, 7, 3, method=preset, scale=scale)
    else:
        layer = BinaryLinear(33, 19, method=preset, scale=scale)
    with torch.no_grad():
        layer.weight.mul_(30.0)  # |w/α| on both sides of 1
        layer.weight.view(layer.weight.shape[0], -1)[0, :4] = 0.0
        layer.weight.view(layer.weight.shape[0], -1)[1] = 0.0  # a dead row: α = 0
    return layer


def quantized_and_grad(layer, native):
    layer.zero_grad()
    q = run(native, layer.method.quantize_weight, layer, layer.weight)
    g = torch.randn(q.shape, generator=torch.Generator().manual_seed(9))
    q.backward(g)
    return q.detach(), layer.weight.grad.clone()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("scale", ["mean_abs", "none"])
@pytest.mark.parametrize("mu,hard", [(0.0, False), (0.4, False), (1.0, False), (0.4, True)])
@pytest.mark.parametrize("conv", [False, True])
def test_every_preset_through_the_layer_equals_the_torch_path(preset, scale, mu, hard, conv):
    layer = layer_for(preset, scale, conv)
    layer.pcpp_mu.fill_(max(mu, 0.5) if preset == "bnn++" else mu)  # (bnn++'s slope is > 0)
    layer.pcpp_hard.fill_(hard)
    (q1, g1), (q0, g0) = quantized_and_grad(layer, True), quantized_and_grad(layer, False)
    swish = preset in ("pcpp-bnn+", "bnn++")  # their own kernel (approximate sigmoid): 1e-4 in the gradient
    exact = scale == "none" and not swish  # no α: the same float ops, bit for bit
    tolerance = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-4 if swish else 1e-6, "atol": 1e-6}
    torch.testing.assert_close(q1, q0, equal_nan=True, **tolerance)
    if swish and not exact:  # α's last bit moves u = w/α, which the steep SignSwish derivative amplifies near its
        # zero crossing: a floor relative to the gradient's scale (measured ≤ 7.1e-7 of max|g| over 25 seeds)
        tolerance["atol"] = 1e-5 * g0.nan_to_num(0.0).abs().max().item()
    torch.testing.assert_close(g1, g0, equal_nan=True, **tolerance)
    if not swish:
        assert torch.equal(q1.sign(), q0.sign()) and torch.equal(g1 == 0, g0 == 0)  # the same signs and masks


def test_the_layer_runs_the_kernel_and_the_switch_turns_it_off(monkeypatch):
    calls = []
    engine = fx._engine

    class Spy:
        def __getattr__(self, name):
            attr = getattr(engine, name)
            return (lambda *a: (calls.append(name), attr(*a))[1]) if name.startswith("pcpp") else attr

    monkeypatch.setattr(fx, "_engine", Spy())
    layer = layer_for("pcpp-pc", "mean_abs")
    layer.pcpp_mu.fill_(0.3)
    quantized_and_grad(layer, True)
    assert calls == ["pcpp_weight", "pcpp_weight_backward"]
    calls.clear()
    quantized_and_grad(layer, False)
    assert calls == []
    quantized_and_grad(layer_for("bnn++", "mean_abs"), True)  # the SignSwish presets: the native α only
    assert calls == ["pcpp_weight"]
    calls.clear()
    layer64 = layer_for("pcpp-bnn", "mean_abs").double()
    q, g = quantized_and_grad(layer64, True)
    assert calls == [] and q.dtype == torch.float64


def test_one_and_two_threads_give_the_same_bits(monkeypatch):
    layer = layer_for("pcpp-pc", "mean_abs", conv=True)
    layer.pcpp_mu.fill_(0.6)
    monkeypatch.setattr(fx, "SERIAL_BELOW", 0)  # a small weight too gets the threads torch was given
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(quantized_and_grad(layer, True))
    finally:
        torch.set_num_threads(before)
    (q1, g1), (q2, g2) = results
    torch.testing.assert_close(q1, q2, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0, equal_nan=True)


def test_a_second_derivative_asks_for_the_torch_path():
    layer = layer_for("pcpp-bc", "mean_abs")
    q = run(True, layer.method.quantize_weight, layer, layer.weight)
    with pytest.raises(RuntimeError, match="NATIVE_KERNELS = False"):
        torch.autograd.grad(q.sum(), layer.weight, create_graph=True)
