"""FDA's fused training quantizer with its noise adaptation (csrc/train_fda.cpp,
``onebit.methods.fda.fused_noisy_sign``) against the torch path it replaces (``nn.Linear`` layers and
:func:`noisy_fourier_sign` with ``functional.NATIVE_KERNELS = False``, the oracle): the value and the
gradients to x, fc1.weight and fc2.weight within 1e-6 relative (floor 1e-6·max|ref|) on random and
hand-built tensors (exact zeros, |x| = 1, |x| > 1, units whose pre-activation is exactly 0, d < 64 and
odd d), the same bits on 1 and 2 threads, torch's NaN where a gradient is not finite, and the fallbacks
(float64, non-contiguous, hooks) taking the torch path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.methods import fda
from onebit.methods import functional as fx
from onebit.methods.fda import NoiseAdaptation, fused_noisy_sign, noisy_fourier_sign

pytestmark = pytest.mark.skipif(not fda._NA_KERNELS, reason="onebit._engine built before the fused FDA NA kernels")

TERMS, OMEGA, ALPHA = 11, 0.1, 0.07


@pytest.fixture(autouse=True)
def _threads_as_asked(monkeypatch):
    """Every kernel call gets the thread count asked (small tensors too), so that the 1 vs 2 thread
    comparisons below run the kernels on two threads; test_fused_noise_adaptation_small_tensors_run_serially
    checks the serial default."""
    monkeypatch.setattr(fx, "SERIAL_BELOW", 0)


def _inputs(rows, d, seed, scale=0.5):
    """x salted with exact zeros, ±1 and values just outside ±1; a NoiseAdaptation with fresh weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d, generator=g) * scale
    flat = x.view(-1)
    pick = torch.randperm(flat.numel(), generator=g)
    tenth = max(1, flat.numel() // 10)
    flat[pick[:tenth]] = 0.0
    flat[pick[tenth:2 * tenth]] = torch.where(torch.rand(tenth, generator=g) < 0.5, 1.0, -1.0)
    flat[pick[-1]] = 1.0000001
    torch.manual_seed(seed)
    return x, NoiseAdaptation(d), torch.randn(rows, d, generator=g)


def _run(na, x, grad, weight, native, threads=1, alpha=ALPHA):
    """(value, grad x, grad fc1.weight, grad fc2.weight) of noisy_fourier_sign(x, NA(x)) natively
    (the fused function) or by the torch path."""
    saved, before = fx.NATIVE_KERNELS, torch.get_num_threads()
    torch.set_num_threads(threads)
    xl = x.clone().requires_grad_(True)
    na.zero_grad(set_to_none=True)
    try:
        if native:
            assert fda._fused_na(na, xl, TERMS, OMEGA)
            out = fused_noisy_sign(na, xl, torch.tensor(alpha), TERMS, OMEGA, weight)
        else:
            fx.NATIVE_KERNELS = False
            h = na.learned(xl)
            out = noisy_fourier_sign(xl, h, torch.tensor(alpha), TERMS, OMEGA, scale_by_mean_abs=weight)
        out.backward(grad)
    finally:
        fx.NATIVE_KERNELS = saved
        torch.set_num_threads(before)
    return out.detach(), xl.grad, na.fc1.weight.grad, na.fc2.weight.grad


def assert_close(got, want, what, rel=1e-6):
    finite = want[want.isfinite()]
    floor = rel * finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rel, atol=floor, equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_all_close(native, torch_path):
    for got, want, what in zip(native, torch_path, ("value", "grad x", "grad fc1.weight", "grad fc2.weight")):
        assert_close(got, want, what)


# (rows, d): d = 512 (8 hidden units), 576 (a 64x3x3 kernel, 9), odd sizes, d < 64 (one hidden unit),
# and more rows than one backward sweep takes per unit (8 units of 67 rows: 64 + 3).
SHAPES = [(96, 512), (64, 576), (33, 130), (7, 37), (5, 1), (1, 200), (530, 70)]


@pytest.mark.parametrize("weight", [True, False], ids=["weight", "activation"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_noise_adaptation_equals_torch_path(shape, weight):
    x, na, grad = _inputs(*shape, seed=shape[0] + shape[1])
    native = _run(na, x, grad, weight, native=True)
    assert_all_close(native, _run(na, x, grad, weight, native=False))
    two = _run(na, x, grad, weight, native=True, threads=2)
    assert all(torch.equal(a, b) for a, b in zip(native, two)), "1 and 2 threads differ"


def test_fused_noise_adaptation_by_hand():
    """d = 3, one hidden unit: x = [0, 1, -2] (sign(0) = +1, |x| = 1 inside the window, -2 outside),
    W1 = [[0.5, 0.25, 0.125]] (pre = 0.25 - 0.25 = 0: the unit is off, so h = 0 and no gradient reaches
    W1 or W2), then W1 = [[0.5, 0.5, 0]] (pre = 0.5: h = 0.5·W2)."""
    x = torch.tensor([[0.0, 1.0, -2.0]])
    na = NoiseAdaptation(3)
    grad = torch.ones(1, 3)
    with torch.no_grad():
        na.fc2.weight.copy_(torch.tensor([[1.0], [-2.0], [4.0]]))
        na.fc1.weight.copy_(torch.tensor([[0.5, 0.25, 0.125]]))
    value, gx, g1, g2 = _run(na, x, grad, weight=False, native=True, alpha=0.1)
    sine = torch.sin(torch.tensor([[0.0, 1.0, -2.0]]))
    want = torch.tensor([[1.0, 1.0, -1.0]]) + 0.1 * 0.1 * sine
    torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7)
    assert torch.equal(g1, torch.zeros(1, 3)) and torch.equal(g2, torch.zeros(3, 1))
    assert_all_close((value, gx, g1, g2), _run(na, x, grad, weight=False, native=False, alpha=0.1))
    with torch.no_grad():
        na.fc1.weight.copy_(torch.tensor([[0.5, 0.5, 0.0]]))
    value, gx, g1, g2 = _run(na, x, grad, weight=False, native=True, alpha=0.1)
    h = 0.5 * torch.tensor([1.0, -2.0, 4.0])
    torch.testing.assert_close(value[0, 1], 1 + 0.1 * (h[1] + 0.1 * torch.sin(torch.tensor(1.0))), rtol=1e-6, atol=0)
    # gh = g·α = 0.1 everywhere; dW2 = gh ⊗ u = 0.1·0.5; gpre = W2ᵀ·gh = 0.3; dW1 = gpre·x
    torch.testing.assert_close(g2, torch.full((3, 1), 0.05), rtol=1e-6, atol=0)
    torch.testing.assert_close(g1, torch.tensor([[0.0, 0.3, -0.6]]), rtol=1e-6, atol=1e-7)
    assert_all_close((value, gx, g1, g2), _run(na, x, grad, weight=False, native=False, alpha=0.1))


def test_fused_noise_adaptation_units_exactly_off():
    """A zero row of W1 (pre exactly 0 on every row) and an all-zero row of x: the gate is off as in
    torch (relu's gradient at 0 is 0), so that unit's W1 and W2 gradients are exactly 0."""
    x, na, grad = _inputs(40, 128, seed=9)
    x[3] = 0.0
    with torch.no_grad():
        na.fc1.weight[1] = 0.0
    native = _run(na, x, grad, weight=True, native=True)
    assert torch.count_nonzero(native[2][1]) == 0 and torch.count_nonzero(native[3][:, 1]) == 0
    assert_all_close(native, _run(na, x, grad, weight=True, native=False))


@pytest.mark.parametrize("where", ["grad", "fc1", "fc2"])
def test_fused_noise_adaptation_propagates_non_finite_values_as_torch(where):
    """An infinite incoming gradient, or an infinite entry of W1 or W2: NaN and inf land where torch's
    have them (the kernel skips the products of switched-off units only where the weights are finite,
    and never in dW1, dW2)."""
    x, na, grad = _inputs(24, 100, seed=4)
    with torch.no_grad():
        if where == "grad":
            grad[5, 7] = float("inf")
        else:
            (na.fc1.weight if where == "fc1" else na.fc2.weight)[0, 0] = float("inf")
    native = _run(na, x, grad, weight=True, native=True)
    reference = _run(na, x, grad, weight=True, native=False)
    for got, want in zip(native, reference):
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    assert_all_close(native, reference)


def _forbid_fused(monkeypatch):
    def refuse(*args):
        raise AssertionError("the fused function ran")

    monkeypatch.setattr(fda._FusedNoiseAdaptationSign, "apply", refuse)


def _fda_layer(seed=0, in_features=70):
    from onebit.nn import BinaryLinear

    torch.manual_seed(seed)
    layer = BinaryLinear(in_features, 9, method="fda")
    layer.fda_alpha.fill_(ALPHA)
    layer.fda_terms.fill_(TERMS)
    return layer


@pytest.mark.parametrize("case", ["float64", "non-contiguous", "hooked", "autocast", "native off"])
def test_fused_noise_adaptation_fallbacks_take_the_torch_path(case, monkeypatch):
    """float64, a non-contiguous weight or input, a hook on fc1 (the kernel would not call it), autocast
    (the layers would run in bfloat16) and NATIVE_KERNELS off take the torch formula; a hook still fires."""
    layer = _fda_layer()
    x = torch.randn(4, 70)
    expected = None
    if case == "float64":
        layer, x = layer.double(), x.double()
    elif case == "non-contiguous":
        x = torch.randn(70, 4).t()
        layer.weight = nn.Parameter(layer.weight.detach().t().contiguous().t())
    elif case == "hooked":
        fired = []
        layer.weight_noise.fc1.register_forward_hook(lambda *args: fired.append(1))
        layer.input_noise.fc1.register_forward_hook(lambda *args: fired.append(1))
        expected = 2
    elif case == "native off":
        monkeypatch.setattr(fx, "NATIVE_KERNELS", False)
    _forbid_fused(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        out = layer(x)
    out.float().sum().backward()
    if expected is not None:
        assert len(fired) == expected
    assert layer.weight.grad is not None and layer.weight_noise.fc1.weight.grad is not None


def test_fused_noise_adaptation_layer_runs_it_and_alpha_gets_no_grad(monkeypatch):
    """A training BinaryLinear takes the fused function for its weight and its input; α and the
    layer's buffers get no gradient."""
    layer = _fda_layer()
    calls = []
    apply = fda._FusedNoiseAdaptationSign.apply
    monkeypatch.setattr(fda._FusedNoiseAdaptationSign, "apply", lambda *a: calls.append(a[4]) or apply(*a))
    layer(torch.randn(4, 70, requires_grad=True)).sum().backward()
    assert sorted(calls) == [False, True]
    assert layer.fda_alpha.grad is None and not layer.fda_alpha.requires_grad


def test_fused_noise_adaptation_training_matches_torch_path():
    """Five SGD steps (momentum, weight decay) of a two-layer FDA MLP, native vs the torch path: every
    parameter, NA's included, agrees to 1e-5 relative."""
    from onebit.nn import BinaryLinear

    def train(native):
        torch.manual_seed(1)
        net = nn.Sequential(BinaryLinear(96, 130, method="fda"), nn.BatchNorm1d(130),
                            BinaryLinear(130, 10, method="fda"))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        g = torch.Generator().manual_seed(2)
        data = [(torch.randn(16, 96, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(5)]
        saved, fx.NATIVE_KERNELS = fx.NATIVE_KERNELS, native
        try:
            for x, y in data:
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        finally:
            fx.NATIVE_KERNELS = saved
        return dict(net.named_parameters())

    native, reference = train(True), train(False)
    assert any("weight_noise.fc1" in name for name in native)
    for name, p in reference.items():
        assert_close(native[name].detach(), p.detach(), name, rel=1e-5)


@pytest.mark.parametrize("frozen", ["x", "fc1", "fc2"])
def test_fused_noise_adaptation_frozen_tensors_get_no_gradient(frozen):
    """A tensor that needs no gradient gets none (the kernel skips it); the others equal the torch path's."""

    def run(native):
        x, na, grad = _inputs(40, 130, seed=6)
        tensors = {"x": x.requires_grad_(frozen != "x"), "fc1": na.fc1.weight, "fc2": na.fc2.weight}
        tensors[frozen].requires_grad_(False)
        saved, fx.NATIVE_KERNELS = fx.NATIVE_KERNELS, native
        try:
            if native:
                out = fused_noisy_sign(na, x, torch.tensor(ALPHA), TERMS, OMEGA, True)
            else:
                out = noisy_fourier_sign(x, na.learned(x), torch.tensor(ALPHA), TERMS, OMEGA, scale_by_mean_abs=True)
            out.backward(grad)
        finally:
            fx.NATIVE_KERNELS = saved
        return {name: t.grad for name, t in tensors.items()}

    native, reference = run(True), run(False)
    assert native[frozen] is None and reference[frozen] is None
    for name in native.keys() - {frozen}:
        assert_close(native[name], reference[name], name)



def _rows_by_path(d, seed):
    """Rows that take each of the kernels' element-wise paths (csrc/train_fda_kernels.h; with ω = 0.05
    and 11 terms the ratio's argument is (min(|x|, 1)·0.05)·24, at most 1.2): weight-like rows (every
    argument small), a row with x = ±0, ±1 and ±(1 + ε) (the ratio's limit at t = 0 and the clip
    window's edges), a row in 1 < |x| < 1.5 (no surrogate gradient passes: grad x is the NA's cos term
    and W1ᵀ·gpre alone) and one in 1.5 <= |x| < 3.1 (the same, by the reduced sine and cosine), rows
    with |x| up to ~1 (ω = 0.1: the ratio's sine reduced), each guard's two sides (max |x| = 1.5 - ulp
    and 1.5), and |x| = 8193 (the sine and cosine by libm)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(d, generator=g) * 0.05, torch.randn(d, generator=g) * 0.3]
    edge = torch.randn(d, generator=g) * 0.05
    edge[:6] = torch.tensor([0.0, -0.0, 1.0, -1.0, 1.0000001, -1.0000001])
    sign = torch.where(torch.rand(d, generator=g) < 0.5, 1.0, -1.0)
    rows += [edge, torch.empty(d).uniform_(1.0001, 1.49, generator=g) * sign,
             torch.empty(d).uniform_(1.5, 3.1, generator=g) * sign]
    below, at, big = rows[0].clone(), rows[0].clone(), rows[0].clone()
    below[1] = torch.nextafter(torch.tensor(1.5), torch.tensor(0.0))
    at[1] = -1.5
    big[2] = 8193.0
    return torch.stack(rows + [below, at, big])


@pytest.mark.parametrize(("terms", "omega"), [(11, 0.05), (11, 0.1), (11, 2.0), (0, 0.7), (3, 0.18)], ids=str)
@pytest.mark.parametrize("weight", [True, False], ids=["weight", "activation"])
def test_fused_noise_adaptation_small_argument_paths_equal_torch_path(weight, terms, omega, monkeypatch):
    """Rows that take each element-wise path of the kernels (the small-argument sine and cosine without
    the reduction's float-int round trip; the Fourier ratio without a division where its argument is
    small and 2(n+1) >= 8, else the quotient, its numerator reduced or not; ω ≥ 1.5: none small; n = 0
    with ω = 0.7: small arguments but 2(n+1) = 2, where the division-free series would be off by 1e-5;
    n = 3: 2(n+1) = 8, the series' edge) agree with the torch path in the value and every gradient; 1 and
    2 threads give the same bits. A row with a NaN (no small path) gives NaN where torch does, the
    other rows unchanged."""
    monkeypatch.setitem(globals(), "OMEGA", omega)
    monkeypatch.setitem(globals(), "TERMS", terms)
    x = _rows_by_path(130, seed=int(omega * 100))
    _, na, _ = _inputs(*x.shape, seed=3)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    native = _run(na, x, grad, weight, native=True, alpha=0.6)
    assert_all_close(native, _run(na, x, grad, weight, native=False, alpha=0.6))
    two = _run(na, x, grad, weight, native=True, threads=2, alpha=0.6)
    assert all(torch.equal(a, b) for a, b in zip(native, two)), "1 and 2 threads differ"
    x[2, 7] = float("nan")
    native = _run(na, x, grad, weight, native=True, alpha=0.6)
    reference = _run(na, x, grad, weight, native=False, alpha=0.6)
    for got, want, what in zip(native, reference, ("value", "grad x", "grad fc1.weight", "grad fc2.weight")):
        assert torch.equal(got.isnan(), want.isnan()), what
    keep = torch.arange(x.shape[0]) != 2
    for got, want, what in zip(native[:2], reference[:2], ("value", "grad x")):
        assert_close(got[keep], want[keep], what)


@pytest.mark.parametrize(("rows", "threads"), [(32, 1), (512, 2)])
def test_fused_noise_adaptation_small_tensors_run_serially(rows, threads, monkeypatch):
    """Below functional.SERIAL_BELOW elements (a batch-32 MLP's 32 x 512 input) both kernels run on the
    calling thread; a 512 x 512 weight gets torch's thread count."""
    monkeypatch.setattr(fx, "SERIAL_BELOW", 32768)
    engine, seen = fx._engine, []

    class Recording:
        def __getattr__(self, name):
            kernel = getattr(engine, name)
            if not name.startswith("fda_na_"):
                return kernel
            return lambda *args: seen.append((name, args[-1])) or kernel(*args)

    monkeypatch.setattr(fx, "_engine", Recording())
    x, na, grad = _inputs(rows, 512, seed=1)
    _run(na, x, grad, weight=rows == 512, native=True, threads=2)
    assert seen == [("fda_na_forward", threads), ("fda_na_backward", threads)]
