"""The native row kernels of the weight quantizers (csrc/train_quantizers.cpp) against the torch path
of the same autograd Functions (``functional.NATIVE_KERNELS = False``) and the oracle formulas:
forward values bit for bit, gradients within 1e-6 relative (floor 1e-6·max|grad|), on hand-checked
rows and on salted random weights (exact zeros, ±1, zero-variance rows, one column, sizes that are
not multiples of the vector width), and the same bits on 1 and 2 threads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import onebit
from onebit.methods import biper, fda
from onebit.methods import functional as fx
from onebit.methods.fda import fourier_sign, noisy_fourier_sign
from onebit.methods.irnet import libra_pb
from onebit.methods.recu import EPS

pytestmark = pytest.mark.skipif(not fx.NATIVE_KERNELS, reason="onebit._engine built without the training kernels")

SHAPES = [(7, 37), (5, 512), (3, 1), (4, 145), (16, 4, 3, 3)]


@pytest.fixture(autouse=True)
def _threads_as_asked(monkeypatch):
    """Every kernel call gets the thread count asked, small tensors too (functional.kernel_threads runs
    those on one thread by default), so that the 1 vs 2 thread comparisons below really split the rows;
    tests/methods/test_native_small_speed.py checks the serial default."""
    monkeypatch.setattr(fx, "SERIAL_BELOW", 0)


def salted_weight(shape, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.3
    flat = w.view(-1)
    pick = torch.randperm(flat.numel(), generator=g)
    tenth = flat.numel() // 10
    flat[pick[:tenth]] = 0.0
    flat[pick[tenth:2 * tenth]] = torch.where(torch.rand(tenth, generator=g) < 0.5, 1.0, -1.0)
    rows = w.view(shape[0], -1)
    rows[1 % shape[0]] = 0.25  # a zero-variance row
    if shape[0] > 2:
        rows[2] = 0.0
    return w


def call(fn, w, grad, native, threads=1):
    saved, before = fx.NATIVE_KERNELS, torch.get_num_threads()
    fx.NATIVE_KERNELS = native
    torch.set_num_threads(threads)
    try:
        leaf = w.clone().requires_grad_(True)
        out = fn(leaf)
        out.backward(grad)
        return out.detach(), leaf.grad
    finally:
        fx.NATIVE_KERNELS = saved
        torch.set_num_threads(before)


def assert_close(new, old, what):
    """Within 1e-6 relative, floor 1e-6·max|old|; NaN where the oracle has NaN (a zero row's 0/0 scale)."""
    scale = old.nan_to_num(0.0).abs().max().item() or 1.0
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6 * scale, equal_nan=True, msg=lambda m: f"{what}: {m}")


def libra(k, t):
    return lambda w: fx.libra_ede(w, torch.tensor(k), torch.tensor(t))


def recu(tau):
    return lambda w: fx.recu_weight(w, torch.tensor(tau), EPS)


def old_libra(k, t):
    def fn(w):
        balanced, scale = libra_pb(w)
        surrogate = k * torch.tanh(t * balanced)
        return ((fx.sign(balanced) - surrogate).detach() + surrogate) * scale
    return fn


QUANTIZERS = [("irnet-soft", libra(1.0 / 0.7, 0.7), old_libra(1.0 / 0.7, 0.7)),
              ("irnet-hard", libra(1.0, 10.0), old_libra(1.0, 10.0)),
              ("irnet-start", libra(1000.0, 1e-3), old_libra(1000.0, 1e-3)),
              ("recu", recu(0.93), None), ("recu-q0", recu(0.5), None), ("recu-qneg", recu(0.3), None)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name,fn,oracle", QUANTIZERS, ids=[q[0] for q in QUANTIZERS])
def test_native_equals_the_torch_path_and_the_formulas(name, fn, oracle, shape):
    w = salted_weight(shape, 11)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    value, gw = call(fn, w, grad, native=True)
    value_torch, gw_torch = call(fn, w, grad, native=False)
    assert torch.equal(value, value_torch), f"{name}: values differ"
    assert torch.isfinite(gw).all()
    assert_close(gw, gw_torch, f"{name} weight grad vs the torch path")
    if oracle is not None:
        value_oracle, gw_oracle = call(oracle, w, grad, native=True)
        assert torch.equal(value, value_oracle)
        assert_close(gw, gw_oracle, f"{name} weight grad vs the formulas")


@pytest.mark.parametrize("name,fn,oracle", QUANTIZERS, ids=[q[0] for q in QUANTIZERS])
def test_two_threads_give_the_same_bits_as_one(name, fn, oracle):
    w = salted_weight((64, 150), 3)
    grad = torch.randn(w.shape, generator=torch.Generator().manual_seed(8))
    one = call(fn, w, grad, native=True, threads=1)
    two = call(fn, w, grad, native=True, threads=2)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_libra_by_hand():
    """Row (1, 2, 3, 4): mean 2.5, unbiased var 5/3, Ŵ = (−1.5, −.5, .5, 1.5)/√(5/3), mean|Ŵ| = 0.775 → s = 2⁰;
    ∂Ŵ_i/∂W_j = (δ_ij − 1/4 − Ŵ_i·Ŵ_j/3)/std, so with d = k·t·(1 − tanh²(t·Ŵ)) the gradient is
    (g·d − Ŵ·Σ(g·d·Ŵ)/3 − mean(g·d))/std. A constant row: Ŵ = 0, s = 2^round(log2 0) = 0, gradient 0."""
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    g = torch.tensor([[1.0, 0.0, -2.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    k, t = 2.0, 0.8
    value, gw = call(libra(k, t), w, g, native=True)
    assert value.tolist() == [[-1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    std = math.sqrt(5 / 3)
    z = [c / std for c in (-1.5, -0.5, 0.5, 1.5)]
    gd = [gi * k * t * (1 - math.tanh(t * zi) ** 2) for gi, zi in zip(g[0].tolist(), z)]
    coef = sum(a * b for a, b in zip(gd, z)) / 3
    expected = [(gd[i] - z[i] * coef - sum(gd) / 4) / std for i in range(4)]
    torch.testing.assert_close(gw[0], torch.tensor(expected), rtol=2e-6, atol=1e-7)
    assert gw[1].tolist() == [0.0] * 4


def test_recu_by_hand():
    """Row (1, 2, 3, 4) with ε: W1 = c/σ, σ = sqrt(5/3 + ε)/(2√2); Q_τ = −mean|W1|·ln(0.14) = 4.31 at τ = 0.93
    exceeds every |W1| (max 3.29), so the window passes the whole gradient, and ∂W1_i/∂W_j =
    (δ_ij − 1/4 − W1_i·W1_j/24)/σ (24 = 8·dof) gives (g − W1·Σ(g·W1)/24 − mean g)/σ."""
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    g = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    value, gw = call(recu(0.93), w, g, native=True)
    assert value.tolist() == [[-1.0, -1.0, 1.0, 1.0]]
    sigma = math.sqrt(5 / 3 + EPS) / (2 * math.sqrt(2))
    w1 = [c / sigma for c in (-1.5, -0.5, 0.5, 1.5)]
    coef = w1[1] / 24
    expected = [((1.0 if i == 1 else 0.0) - w1[i] * coef - 0.25) / sigma for i in range(4)]
    torch.testing.assert_close(gw[0], torch.tensor(expected), rtol=2e-6, atol=1e-7)


def test_other_dtypes_take_the_torch_path():
    w = salted_weight((5, 9), 2).double()
    assert not fx._native(w) and fx._native(w.float())
    value, gw = call(libra(1.0, 0.5), w, torch.ones_like(w), native=True)
    value_torch, gw_torch = call(libra(1.0, 0.5), w, torch.ones_like(w), native=False)
    assert value.dtype == gw.dtype == torch.float64
    assert torch.equal(value, value_torch) and torch.equal(gw, gw_torch)


def _ulp_error(x: np.ndarray) -> tuple[float, np.ndarray]:
    out = np.empty_like(x)
    fx._engine.tanh_rows(x.ctypes.data, x.size, out.ctypes.data, 1)
    with np.errstate(invalid="ignore"):  # NaN payloads
        exact = np.tanh(x.astype(np.float64))
    finite = ~np.isnan(x)
    ulp = np.maximum(np.spacing(np.abs(exact[finite].astype(np.float32))).astype(np.float64),
                     float(np.finfo(np.float32).smallest_subnormal))
    return float((np.abs(out[finite] - exact[finite]) / ulp).max()), out


def test_tanh_within_two_ulp_over_the_float_range():
    """The kernels' tanh on every 4099th float32 bit pattern (all signs and exponents, subnormals,
    ±inf, NaNs) and densely around its branch point 0.625 and where tanh rounds to 1: at most 2 ulp
    from the correctly rounded value (measured 1.33), NaN for NaN, ±1 at ±inf, the sign of ±0 kept."""
    patterns = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = np.concatenate([np.arange(np.float32(x).view(np.uint32), np.float32(x).view(np.uint32) + 20000,
                                      dtype=np.uint32) for x in (0.6, 0.62, 8.9, 9.0)]).view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 20.0, -20.0], np.float32)
    x = np.concatenate([patterns, dense, -dense, specials])
    worst, out = _ulp_error(x)
    assert worst <= 2.0
    assert np.isnan(out[np.isnan(x)]).all()
    tail = out[-len(specials):]
    assert tail[2] == 1.0 and tail[3] == -1.0 and tail[7] == 1.0 and tail[8] == -1.0
    assert not np.signbit(tail[0]) and np.signbit(tail[1])


def run_quantizer(fn, x, grad, native, threads=1):
    return call(fn, x, grad, native, threads)


SURROGATES = [
    ("swish-grad", lambda x: fx.sign_swish_ste(x, 5.0)),
    ("swish-grad-tensor-beta", lambda x: fx.sign_swish_ste(x, torch.tensor(2.5), value="sign_swish")),
    ("fourier", lambda x: fx.sign_fourier(x, 13, 0.1)),
    ("fourier-wide", lambda x: fx.sign_fourier(x, 4, 2.5)),
    ("ede", lambda x: fx.sign_ede(x, 1.0, 0.5)),
    ("ede-steep", lambda x: fx.sign_ede(x, torch.tensor(0.1), torch.tensor(10.0))),
    ("wave", lambda x: fx.sine_wave(x, 20.0, False)),
    ("square-wave", lambda x: fx.sine_wave(x, 20.0, True)),
    ("wave-beyond-8192", lambda x: fx.sine_wave(x * 4000.0, 20.0, False)),
    ("scaled-swish", lambda x: fx.scaled_sign_swish(x, x.detach().abs().mean(1, keepdim=True), 4.0, "swish")),
    ("scaled-sign-swish", lambda x: fx.scaled_sign_swish(x, x.detach().abs().mean(1, keepdim=True), 4.0,
                                                         "sign_swish")),
    ("scaled-sign", lambda x: fx.scaled_sign_swish(x, x.detach().abs().mean(1, keepdim=True), 4.0, "sign")),
    ("unscaled-swish", lambda x: fx.scaled_sign_swish(x, None, 20.0, "swish")),
]


@pytest.mark.parametrize("shape", [(7, 37), (3, 1), (33, 145)], ids=str)
@pytest.mark.parametrize("name,fn", SURROGATES, ids=[s[0] for s in SURROGATES])
def test_native_surrogates_equal_the_torch_path(name, fn, shape):
    """Values bit for bit (sign, the torch-computed waves, the scale), the SignSwish value itself and
    every gradient within 1e-6 relative of the torch path, on salted weights with |x| = 1 entries."""
    x = salted_weight(shape, 4) * 3
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    value, gx = call(fn, x, grad, native=True)
    value_torch, gx_torch = call(fn, x, grad, native=False)
    if name.endswith("-swish") and "sign" not in name:
        assert_close(value, value_torch, f"{name} value")
    else:
        assert torch.equal(value.nan_to_num(7.0), value_torch.nan_to_num(7.0)), f"{name}: values differ"
    assert_close(gx, gx_torch, f"{name} grad")
    assert torch.equal(gx.nan_to_num(7.0), call(fn, x, grad, native=True, threads=2)[1].nan_to_num(7.0))


def test_scaled_sign_swish_refuses_an_unknown_value():
    with pytest.raises(ValueError, match="value="):
        fx.scaled_sign_swish(torch.ones(2, 3), None, 1.0, "hard")


def _math(kind: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    fx._engine.math_rows(kind, x.ctypes.data, x.size, out.ctypes.data, 1)
    return out


@pytest.mark.parametrize("kind,exact", [(0, np.sin), (1, np.cos)], ids=["sin", "cos"])
def test_sine_and_cosine_within_a_few_ulp(kind, exact):
    """sin/cos of the kernels on every 4099th float32 with |x| ≤ 8192 (and densely on [−10, 10]): at most
    3 ulp of the correctly rounded value (measured 2.2) and 1.5e-7 absolute; beyond 8192 libm's
    value; NaN for ±inf and NaN."""
    patterns = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([patterns[np.abs(patterns) <= 8192], np.linspace(-10, 10, 200001, dtype=np.float32)])
    got = _math(kind, x).astype(np.float64)
    want = exact(x.astype(np.float64))
    ulp = np.maximum(np.spacing(np.abs(want).astype(np.float32)).astype(np.float64), 1e-45)
    assert (np.abs(got - want) / ulp).max() <= 3.0
    assert np.abs(got - want).max() <= 1.5e-7
    big = np.array([8192.5, -1e6, 3e38, 12345.678], np.float32)
    big_want = exact(big.astype(np.float64))  # libm's float sin/cos: within an ulp of the exact value
    assert (np.abs(_math(kind, big) - big_want) <= np.spacing(np.abs(big_want).astype(np.float32))).all()
    assert np.isnan(_math(kind, np.array([np.inf, -np.inf, np.nan], np.float32))).all()


def test_sigmoid_within_a_few_ulp():
    """The kernels' sigmoid: at most 3 ulp (measured 2.3) above −87, 2e-38 absolute below (exp is
    clamped at e^−87 there, where torch gives subnormals), NaN for NaN, exactly 0.5 at ±0, 1 at +inf."""
    patterns = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = patterns[np.isfinite(patterns)]
    with np.errstate(over="ignore"):
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = _math(2, x).astype(np.float64)
    normal = x > -87
    ulp = np.spacing(want[normal].astype(np.float32)).astype(np.float64)
    assert (np.abs(got[normal] - want[normal]) / ulp).max() <= 3.0
    assert np.abs(got[~normal] - want[~normal]).max() <= 2e-38
    special = _math(2, np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32))
    assert special[:3].tolist() == [0.5, 0.5, 1.0] and 0 <= special[3] <= 2e-38 and np.isnan(special[4])


def test_a_second_derivative_through_a_native_kernel_is_refused_not_wrong():
    """The kernels build no graph: under create_graph the weight quantizers raise (naming the switch)
    and the element-wise surrogates take the torch formulas, whose second derivative matches the
    torch path's."""
    w = salted_weight((4, 9), 1).requires_grad_(True)
    out = fx.libra_ede(w, torch.tensor(1.0), torch.tensor(0.5))
    with pytest.raises(RuntimeError, match="NATIVE_KERNELS"):
        torch.autograd.grad(out.sum(), w, create_graph=True)
    x = (torch.randn(5, 7) * 0.5).requires_grad_(True)
    seconds = []
    for native in (True, False):
        fx.NATIVE_KERNELS, saved = native, fx.NATIVE_KERNELS
        try:
            (gx,) = torch.autograd.grad(fx.sign_swish_ste(x, 3.0).sum(), x, create_graph=True)
            seconds.append(torch.autograd.grad(gx.sum(), x)[0])
        finally:
            fx.NATIVE_KERNELS = saved
    assert torch.equal(seconds[0], seconds[1]) and seconds[0].abs().sum() > 0


def test_kernels_step_aside_for_tracers_compilers_and_tensor_subclasses(monkeypatch):
    """A tracer, an exporter or a compiler would see no op in a native call, and a fake tensor has no
    data: there, and on tensor subclasses, the quantizers take torch's formulas."""
    w = salted_weight((6, 10), 1)
    assert fx._native(w)

    class Sub(torch.Tensor):
        pass

    assert not fx._native(w.as_subclass(Sub))
    for flag in ("torch.jit.is_tracing", "torch.onnx.is_in_onnx_export", "torch.compiler.is_compiling"):
        with monkeypatch.context() as m:
            m.setattr(flag, lambda: True)
            assert not fx._native(w), flag
    value, gw = call(libra(1.0, 0.5), w.as_subclass(Sub), torch.ones(6, 10), native=True)
    value_torch, gw_torch = call(libra(1.0, 0.5), w, torch.ones(6, 10), native=False)
    assert torch.equal(value.as_subclass(torch.Tensor), value_torch)
    assert torch.equal(gw.as_subclass(torch.Tensor), gw_torch)


# --- FDA: the fused (sign(x) + α·(h + 0.1·sin x))·s of onebit.methods.fda.noisy_fourier_sign ---------

def _fda_inputs(shape, seed, weight):
    """x salted with 0, ±1, values just outside ±1 and, for activations, |x| beyond 8192 (libm's
    sin/cos there); h random; the per-row scale mean|x| for a weight (None for an activation)."""
    x = salted_weight(shape, seed) * 3
    flat = x.view(-1)
    flat[3 % flat.numel()] = 1.0000001
    flat[5 % flat.numel()] = -1.0000001
    if not weight and flat.numel() > 8:
        flat[7], flat[8] = 9000.5, -1e5
    h = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    scale = x.abs().mean(dim=tuple(range(1, x.dim())), keepdim=True) if weight else None
    return x, h, scale


def _fda_call(x, h, scale, grad, alpha, terms, omega, native, threads=1):
    saved, before = fx.NATIVE_KERNELS, torch.get_num_threads()
    fx.NATIVE_KERNELS = native
    torch.set_num_threads(threads)
    try:
        xl, hl = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
        out = noisy_fourier_sign(xl, hl, torch.tensor(alpha), terms, omega, scale)
        out.backward(grad)
        return out.detach(), xl.grad, hl.grad
    finally:
        fx.NATIVE_KERNELS = saved
        torch.set_num_threads(before)


def _fda_formula(x, h, scale, grad, alpha, terms, omega, sine):
    """The value with the given sine, and the gradients written out in float64: to h g·s·α, to x
    g·s·[(4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)·1{|x| ≤ 1} + α·0.1·cos x]."""
    s = torch.ones(()) if scale is None else scale
    value = (fx.sign(x) + torch.tensor(alpha) * (h + 0.1 * sine)) * s
    x64, gs = x.double(), grad.double() * s.double()
    series = sum(torch.cos((2 * i + 1) * omega * x64) for i in range(terms + 1))
    fourier = torch.where(x64.abs() <= 1, series * (4 * omega / math.pi), torch.zeros_like(x64))
    return value, gs * (fourier + alpha * 0.1 * torch.cos(x64)), gs * alpha


needs_fused_fda = pytest.mark.skipif(not fda._FUSED_KERNELS, reason="onebit._engine built before the fused FDA kernels")

FDA_CASES = [((7, 37), True), ((5, 512), True), ((3, 1), True), ((16, 4, 3, 3), True), ((2, 9, 5), False),
             ((33, 17), False), ((1,), False)]


@needs_fused_fda
@pytest.mark.parametrize("terms,omega,alpha", [(9, 0.1, 0.1), (17, 0.1, 0.0123), (4, 2.5, 0.07)], ids=str)
@pytest.mark.parametrize("shape,weight", FDA_CASES, ids=str)
def test_fda_noisy_sign_native_equals_torch_path_and_formula(shape, weight, terms, omega, alpha):
    """Native vs the torch path vs the written-out formula: the value bit for bit where the sines
    agree (the torch formula fed the kernels' sine: no FMA contraction, torch's order), within 1e-6 of
    the torch path's; the gradients to x and h within 1e-6 relative of the torch path's and 1e-5 of the
    float64 formula; 1 and 2 threads give the same bits."""
    x, h, scale = _fda_inputs(shape, 11 + len(shape), weight)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    value, gx, gh = _fda_call(x, h, scale, grad, alpha, terms, omega, native=True)
    value_t, gx_t, gh_t = _fda_call(x, h, scale, grad, alpha, terms, omega, native=False)
    kernel_sine = torch.from_numpy(_math(0, x.numpy().ravel().copy()).reshape(shape))
    want, gx_f, gh_f = _fda_formula(x, h, scale, grad, alpha, terms, omega, kernel_sine)
    assert torch.equal(value, want), "value differs from the formula with the kernels' sine"
    assert_close(value, value_t, "value")
    assert_close(gx, gx_t, "grad x")
    assert torch.equal(gh, gh_t), "grad h"  # (g·s)·α both ways
    torch.testing.assert_close(gx.double(), gx_f, rtol=1e-5, atol=1e-5 * gx_f.abs().max().item())
    torch.testing.assert_close(gh.double(), gh_f, rtol=1e-6, atol=0)
    two = _fda_call(x, h, scale, grad, alpha, terms, omega, native=True, threads=2)
    assert all(torch.equal(a, b) for a, b in zip((value, gx, gh), two))


def test_fda_noisy_sign_by_hand():
    """x = [0, 1, −2] (sign(0) = +1; |x| = 1 inside the window, −2 outside), h = [0.5, −1, 2], α = 0.1,
    s = 2, n = 0, ω = 0.5: value (sign + α(h + 0.1 sin x))·s; grad x g·s·[(4ω/π)cos(ωx)·1{|x|≤1} + α·0.1·cos x]."""
    x = torch.tensor([[0.0, 1.0, -2.0]])
    h = torch.tensor([[0.5, -1.0, 2.0]])
    s = torch.tensor([[2.0]])
    for native in (True, False):
        value, gx, gh = _fda_call(x, h, s, torch.ones(1, 3), 0.1, 0, 0.5, native)
        want = [(1 + 0.1 * 0.5) * 2, (1 + 0.1 * (-1 + 0.1 * math.sin(1.0))) * 2,
                (-1 + 0.1 * (2 + 0.1 * math.sin(-2.0))) * 2]
        torch.testing.assert_close(value, torch.tensor([want]), rtol=1e-6, atol=1e-7)
        want_gx = [2 * (2 / math.pi + 0.01), 2 * (2 / math.pi * math.cos(0.5) + 0.01 * math.cos(1.0)),
                   2 * 0.01 * math.cos(2.0)]
        torch.testing.assert_close(gx, torch.tensor([want_gx]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(gh, torch.full((1, 3), 0.2), rtol=1e-7, atol=0)


def test_fda_noisy_sign_gradients_are_the_smooth_surrogates_gradcheck():
    """Float64, the torch path: gradcheck passes on the surrogate (fourier_sign(x) + α(h + 0.1 sin x))·s,
    and the straight-through function's gradients equal that surrogate's autograd gradients."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(4, 6, generator=g, dtype=torch.float64) * 2.6 - 1.3).requires_grad_(True)
    x.data[(x.data.abs() - 1).abs() < 0.05] = 0.5  # no sample at the window's kink
    h = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.5
    alpha = torch.tensor(0.08, dtype=torch.float64)

    def surrogate(x, h):
        return (fourier_sign(x, 7, 0.3) + alpha * (h + 0.1 * torch.sin(x))) * s

    assert torch.autograd.gradcheck(surrogate, (x, h))
    grad = torch.randn(4, 6, generator=g, dtype=torch.float64)
    want = torch.autograd.grad(surrogate(x, h), (x, h), grad)
    got = torch.autograd.grad(noisy_fourier_sign(x, h, alpha, 7, 0.3, s), (x, h), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_fda_layer_native_equals_torch_path(conv):
    """A training FDA layer (NA on weights and activations): output and the gradients of the input,
    the weight, the bias and all four NA matrices within 1e-6 of the torch path; eval mode bit-equal."""
    from onebit.nn import BinaryConv2d, BinaryLinear

    def run(native):
        torch.manual_seed(0)
        layer = BinaryConv2d(6, 5, 3, padding=1, method="fda") if conv else BinaryLinear(70, 9, method="fda")
        layer.fda_alpha.fill_(0.07)
        layer.fda_terms.fill_(11)
        x = (torch.randn(3, 6, 5, 4) if conv else torch.randn(4, 70)).requires_grad_(True)
        saved, fx.NATIVE_KERNELS = fx.NATIVE_KERNELS, native
        try:
            out = layer(x)
            out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
            layer.eval()
            frozen = layer(x.detach())
        finally:
            fx.NATIVE_KERNELS = saved
        grads = {n: p.grad for n, p in layer.named_parameters()}
        return out.detach(), x.grad, grads, frozen

    out, gx, grads, frozen = run(True)
    out_t, gx_t, grads_t, frozen_t = run(False)
    assert {n for n, g in grads.items() if g is not None} >= {"weight", "weight_noise.fc1.weight",
                                                              "weight_noise.fc2.weight", "input_noise.fc1.weight",
                                                              "input_noise.fc2.weight"}
    assert_close(out, out_t, "output")
    assert_close(gx, gx_t, "input grad")
    for name in grads_t:
        assert_close(grads[name], grads_t[name], name)
    assert torch.equal(frozen, frozen_t)


# --- BiPer: the wave sin(ωW) (or its sign) and the loss term τ·mean(sin²(ωW)) from one native pass -----

needs_fused_biper = pytest.mark.skipif(not biper._FUSED_KERNELS,
                                       reason="onebit._engine built before the fused BiPer kernels")


def _biper_layer(shape, stage, tau, seed):
    from onebit.nn import BinaryConv2d, BinaryLinear

    layer = (BinaryConv2d(shape[1], shape[0], shape[2], method="biper", stage=stage, tau=tau, bias=False)
             if len(shape) == 4 else BinaryLinear(shape[1], shape[0], method="biper", stage=stage, tau=tau, bias=False))
    w = salted_weight(shape, seed)
    if w.numel() > 9:
        w.view(-1)[4], w.view(-1)[9] = 500.0, -421.3  # ω|w| beyond 8192: libm's sine and cosine there
    with torch.no_grad():
        layer.weight.copy_(w)
    return layer


def _biper_step(layer, native, threads=1, separate=False):
    """The wave of a training forward, the layer's loss term and the weight's gradient of
    Σ wave·g + 3·loss (one backward, or the two parts in two backward calls)."""
    saved, before = fx.NATIVE_KERNELS, torch.get_num_threads()
    fx.NATIVE_KERNELS = native
    torch.set_num_threads(threads)
    try:
        layer.weight.grad = None
        wave = layer.method.quantize_weight(layer, layer.weight)
        loss = layer.extra_loss()
        grad = torch.randn(wave.shape, generator=torch.Generator().manual_seed(8))
        if separate:
            (wave * grad).sum().backward()
            (3 * loss).backward()
        else:
            ((wave * grad).sum() + 3 * loss).backward()
        return wave.detach(), loss.detach(), layer.weight.grad.clone(), grad
    finally:
        fx.NATIVE_KERNELS = saved
        torch.set_num_threads(before)


@needs_fused_biper
@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("shape", [(7, 37), (5, 512), (3, 1), (6, 4, 3, 3)], ids=str)
def test_biper_wave_and_loss_native_equals_torch_path_and_formula(shape, stage):
    """Native vs the torch path vs the written-out formula: the wave bit for bit (stage 2: the torch
    path's; stage 1: sin(ωW) by the kernels' sine) and within 1e-6 of the torch path's; the loss and
    the gradient (the wave's and the loss term's together) within 1e-6 relative of the torch path's and
    of float64 ``τ·mean sin²(ωW)`` and ``g·ω·cos(ωW) + 3·τ·ω·sin(2ωW)/N``; the same with the two gradients
    in separate backward calls; 1 and 2 threads give the same bits."""
    layer = _biper_layer(shape, stage, 0.037, 3)
    wave, loss, gw, grad = _biper_step(layer, native=True)
    wave_t, loss_t, gw_t, _ = _biper_step(layer, native=False)
    w = layer.weight.detach()
    kernel_wave = torch.from_numpy(_math(0, (20.0 * w).numpy().ravel().copy()).reshape(w.shape))
    assert torch.equal(wave, fx.sign(kernel_wave) if stage == 2 else kernel_wave)
    if stage == 2:
        assert torch.equal(wave, wave_t)
    assert_close(wave, wave_t, "wave")
    a64 = (20.0 * w).double()  # ωW rounded to float, as both paths take it
    torch.testing.assert_close(loss.double(), 0.037 * torch.sin(a64).square().mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(loss, loss_t, rtol=1e-6, atol=0)
    want = grad.double() * 20 * torch.cos(a64) + 3 * 0.037 * 20 * torch.sin(2 * a64) / w.numel()
    torch.testing.assert_close(gw.double(), want, rtol=1e-5, atol=1e-6 * want.abs().max().item())
    assert_close(gw, gw_t, "weight grad")
    assert_close(_biper_step(layer, native=True, separate=True)[2], gw, "two backward calls")
    two = _biper_step(layer, native=True, threads=2)
    assert all(torch.equal(a, b) for a, b in zip((wave, loss, gw), two))


@needs_fused_biper
def test_biper_loss_term_is_recomputed_when_the_forward_is_stale():
    """The loss term comes from the forward's pass only while the weight is the one that forward saw:
    after an in-place update (an optimizer step), without a forward, or with grad mode off at the
    forward, loss() computes it from the current weight; a backward after such an update raises."""
    layer = _biper_layer((4, 9), 1, 0.05, 5)
    w = layer.weight
    wave = layer.method.quantize_weight(layer, w)
    with torch.no_grad():
        w.add_(0.01)
    fresh = layer.extra_loss()
    want = 0.05 * torch.sin((20.0 * w.detach()).double()).square().mean().item()
    assert fresh.item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(RuntimeError, match="modified in place"):
        wave.sum().backward()
    assert layer.extra_loss().item() == fresh.item()  # no forward: computed again, same value
    with torch.no_grad():
        layer.method.quantize_weight(layer, w)
    assert layer.extra_loss().requires_grad  # a no-grad forward leaves nothing to reuse


@needs_fused_biper
def test_biper_model_copies_and_trains_after_a_fused_forward():
    """Nothing of the fused forward lives on the layer: the model deep-copies between forward and
    backward, and a training step's gradients equal the torch path's (stage 2) within 1e-6."""
    import copy

    from onebit.nn import BinaryLinear

    grads = []
    for native in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(BinaryLinear(12, 7, method="biper", stage=2), nn.BatchNorm1d(7))
        saved, fx.NATIVE_KERNELS = fx.NATIVE_KERNELS, native
        try:
            loss = model(torch.randn(5, 12)).square().mean() + onebit.extra_loss(model)
            copy.deepcopy(model)
            loss.backward()
        finally:
            fx.NATIVE_KERNELS = saved
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[1]:
        assert_close(grads[0][name], grads[1][name], name)


def test_biper_torch_path_gradchecks():
    """Float64 (the torch path, the native kernels' oracle): gradcheck of the wave sin(ωW) and of the
    loss term τ·mean(½ − ½cos 2ωW)."""
    w = (torch.randn(3, 5, dtype=torch.float64) * 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: fx.sine_wave(v, 7.0, False), (w,))
    assert torch.autograd.gradcheck(lambda v: biper._SineSquaredMean.apply(v, 7.0, 0.3), (w,))


@pytest.mark.skipif(not fx._EDE_KERNEL, reason="onebit._engine built before the EDE activation kernel")
@pytest.mark.parametrize("k,t", [(1.0, 0.5), (0.1, 10.0), (3.0, 0.1)])
def test_native_ede_gradient_against_the_formula(k, t):
    """IR-Net's EDE on activations, natively: g·k·t·(1 − tanh²(t·x)) of the float64 formula within
    1e-5 relative (2e-6 of the largest), on odd sizes with 0, ±1, large |x|, ±inf; 1e-6 of the torch
    path; 1 and 2 threads give the same bits."""
    x = salted_weight((13, 77), 9) * 4
    x.view(-1)[:4] = torch.tensor([float("inf"), float("-inf"), 1e30, -50.0])
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(10))
    value, gx = call(lambda v: fx.sign_ede(v, k, t), x, grad, native=True)
    _, gx_torch = call(lambda v: fx.sign_ede(v, k, t), x, grad, native=False)
    want = grad.double() * k * t * (1 - torch.tanh(t * x.double()) ** 2)
    torch.testing.assert_close(gx.double(), want, rtol=1e-5, atol=2e-6 * want.abs().max().item())
    assert gx[0, :4].tolist() == [0.0, 0.0, 0.0, 0.0] or t < 1  # saturated: exactly 0
    assert_close(gx, gx_torch, "grad")
    assert torch.equal(gx, call(lambda v: fx.sign_ede(v, k, t), x, grad, native=True, threads=2)[1])


@pytest.mark.skipif(not fda._MEAN_ABS_KERNEL, reason="onebit._engine built before the fused FDA scale kernel")
@pytest.mark.parametrize("shape", [(7, 37), (5, 512), (3, 1), (16, 4, 3, 3), (2, 5000)], ids=str)
def test_fda_noisy_sign_takes_the_mean_abs_scale_in_its_pass(shape):
    """``scale_by_mean_abs``: the per-row mean |x| taken in the value's native pass (double sum) gives
    the value of the formula with that scale within an ulp and the torch path's (float mean) within
    1e-6; the gradients within 1e-6 of the torch path's (the scale detached); 1 and 2 threads alike."""
    x, h, _ = _fda_inputs(shape, 31, True)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(4))

    def run(native, threads=1):
        saved, before = fx.NATIVE_KERNELS, torch.get_num_threads()
        fx.NATIVE_KERNELS = native
        torch.set_num_threads(threads)
        try:
            xl, hl = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
            out = noisy_fourier_sign(xl, hl, torch.tensor(0.08), 9, 0.1, scale_by_mean_abs=True)
            assert (type(out.grad_fn).__name__ == "_NoisyFourierSignBackward") == native  # the fused path ran
            out.backward(grad)
            return out.detach(), xl.grad, hl.grad
        finally:
            fx.NATIVE_KERNELS = saved
            torch.set_num_threads(before)

    native, torch_path = run(True), run(False)
    s = x.double().abs().mean(dim=tuple(range(1, x.dim())), keepdim=True).float()
    kernel_sine = torch.from_numpy(_math(0, x.numpy().ravel().copy()).reshape(shape))
    want = _fda_formula(x, h, s, grad, 0.08, 9, 0.1, kernel_sine)[0]
    torch.testing.assert_close(native[0], want, rtol=2.5e-7, atol=0)
    for a, b, what in zip(native, torch_path, ("value", "grad x", "grad h")):
        assert_close(a, b, what)
    assert all(torch.equal(a, b) for a, b in zip(native, run(True, threads=2)))
