"""The native activation kernels (csrc/train_activations.cpp) against the torch path of the same
quantizers (``functional.NATIVE_ACTIVATIONS = False``): sign bit for bit, ApproxSign's gradient
(plain and with ReActNet's per-channel shift) bit for bit, ReCU/BiPer's standardised ApproxSign's
values bit for bit and its gradient within 1e-6 relative (floor 1e-6·max|grad|: the row sums are
taken in another order), on tensors salted with exact zeros, −0.0, |x| = 1, 1 ± ulp, inf and NaN,
odd sizes, a zero-variance sample, alone and fused with the convolution, and the same bits on 1 and
2 threads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onebit.methods import functional as fx
from onebit.methods import recu

pytestmark = pytest.mark.skipif(not fx.NATIVE_ACTIVATIONS, reason="onebit._engine built without the activation kernels")

ONE_ULP_UP = 1.0 + 2.0**-23
ONE_ULP_DOWN = 1.0 - 2.0**-24
EDGES = [0.0, -0.0, 1.0, -1.0, ONE_ULP_UP, -ONE_ULP_UP, ONE_ULP_DOWN, -ONE_ULP_DOWN, 1e-30, -1e-30, 2.0, -3.5]
SPECIALS = [float("inf"), float("-inf"), float("nan")]
SHAPES = [(3, 5, 7, 7), (2, 16, 32, 32), (1, 1), (5, 17), (4, 3, 11)]


def salted(shape, seed, specials=True, scale=1.0):
    """Random values (about half inside [−1, 1]) with every edge value sprinkled in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    flat = x.view(-1)
    extra = EDGES + (SPECIALS if specials else [])
    pick = torch.randperm(flat.numel(), generator=g)
    for i, v in enumerate(extra):
        flat[pick[i::len(extra) * 4][: max(1, flat.numel() // (len(extra) * 8))]] = v
    return x


def run(fn, tensors, grad, native, threads=1):
    """(output, gradients of ``tensors``) of ``fn(*tensors)`` backpropagating ``grad``."""
    saved, before = fx.NATIVE_ACTIVATIONS, torch.get_num_threads()
    fx.NATIVE_ACTIVATIONS = native
    torch.set_num_threads(threads)
    try:
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        out = fn(*leaves)
        out.backward(grad)
        return out.detach(), [leaf.grad for leaf in leaves]
    finally:
        fx.NATIVE_ACTIVATIONS = saved
        torch.set_num_threads(before)


def assert_same(new, old, what):
    torch.testing.assert_close(new, old, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def assert_close(new, old, what):
    scale = old.abs().max().item() or 1.0
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6 * scale, msg=lambda m: f"{what}: {m}")


def torch_sign(x):
    return torch.sign(x).add_(0.5).sign_()


@pytest.mark.parametrize("shape", SHAPES + [(16385,), (0, 3)])
def test_sign_matches_torch_bit_for_bit(shape):
    x = salted(shape, 1) if 0 not in shape else torch.empty(shape)
    native = fx.native_sign(x)
    if x.numel() == 0:
        assert native is None and fx.sign(x).shape == x.shape
        return
    assert native is not None  # the kernel took it: the comparison below is not torch against itself
    assert_same(native, torch_sign(x), "native_sign")
    assert_same(fx.sign(x), torch_sign(x), "sign")
    assert fx.sign(torch.tensor([-0.0, 0.0, float("nan"), -1e-45])).tolist() == [1.0, 1.0, 1.0, -1.0]


def test_sign_keeps_the_torch_path_where_a_gradient_is_recorded_or_for_other_tensors():
    x = salted((4, 9), 2).requires_grad_(True)
    out = fx.sign(x)
    assert out.grad_fn is not None  # autograd's zero gradient through sign, as before
    assert fx.native_sign(x.double()) is None
    assert fx.native_sign(x.detach().t()) is not None  # non-contiguous: taken contiguous
    assert_same(fx.sign(x.detach().t()), torch_sign(x.detach().t()), "transposed")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_sign_is_recorded_by_the_tracer():
    """Under torch.jit.trace (the ONNX exporter's route) sign stays torch's ops: a native call would
    be invisible to the tracer and the traced graph would return the example's signs for every input."""
    traced = torch.jit.trace(lambda x: fx.sign(x) * 2, torch.randn(3, 4))
    x = salted((3, 4), 18, specials=False)
    assert_same(traced(x), torch_sign(x) * 2, "traced sign")
    assert not fx.native_activations(torch.nn.Parameter(x).detach().as_subclass(_Subclass))


class _Subclass(torch.Tensor):
    pass


@pytest.mark.parametrize("shape", SHAPES)
def test_approx_sign_gradient_matches_torch_bit_for_bit(shape):
    x = salted(shape, 3)
    grad = salted(shape, 4, specials=False)
    new = run(fx.sign_approx_ste, [x], grad, native=True)
    old = run(fx.sign_approx_ste, [x], grad, native=False)
    assert fx.native_approx_grad(grad, x) is not None
    assert_same(new[0], old[0], "value")
    assert_same(new[1][0], old[1][0], "grad x")  # inf inputs give NaN on both paths (0·inf)


needs_clip_kernels = pytest.mark.skipif(not fx._CLIP_CODE_KERNELS, reason="engine built before the clip-STE kernels")


@needs_clip_kernels
@pytest.mark.parametrize("shape", SHAPES + [(16385,)])
def test_clip_ste_code_matches_the_numpy_path_bit_for_bit(shape):
    x = salted(shape, 19)
    saved = fx.NATIVE_ACTIVATIONS
    try:
        fx.NATIVE_ACTIVATIONS = False
        old_code = fx.ClipSTE.pack(x, None)
        old = [fx.ClipSTE.unpack(old_code, torch.float32, None, need_input=n) for n in (False, True)]
        fx.NATIVE_ACTIVATIONS = True
        code = fx.ClipSTE.pack(x, None)
        new = [fx.ClipSTE.unpack(code, torch.float32, None, need_input=n) for n in (False, True)]
    finally:
        fx.NATIVE_ACTIVATIONS = saved
    assert fx._native_code(code)
    assert_same(code, old_code, "code")
    for (xq, mask), (old_xq, old_mask) in zip(new, old):
        assert_same(xq, old_xq, "binary input")
        assert (mask is None) == (old_mask is None)
        if mask is not None:
            assert_same(mask, old_mask, "mask input")
    inside = x.clamp(-1, 1)  # every |x| <= 1: no mask needed
    assert fx.ClipSTE.unpack(fx.ClipSTE.pack(inside, None), torch.float32, None)[1] is None
    for outlier in (-3.0, 3.0):  # one |x| > 1, of either sign: the mask is needed
        one_out = inside.clone()
        one_out.view(-1)[-1] = outlier
        mask = fx.ClipSTE.unpack(fx.ClipSTE.pack(one_out, None), torch.float32, None)[1]
        assert mask is not None and mask.view(-1)[-1] == 2 * outlier / 3


@needs_clip_kernels
@pytest.mark.parametrize("scaled", [False, True])
def test_clip_ste_fused_with_the_convolution_matches_torch_bit_for_bit(scaled):
    x = salted((4, 8, 10, 10), 20, specials=False, scale=1.5)
    w = torch.randn(6, 8, 3, 3, generator=torch.Generator().manual_seed(21)).sign()
    grad = torch.randn(4, 6, 10, 10, generator=torch.Generator().manual_seed(22))
    scale = x.abs().mean(dim=(1, 2, 3), keepdim=True) if scaled else None

    def conv(x, w):
        call = fx.QuantizerCall(x, fx.ClipSTE, (scale,))
        return fx.quantized_product(call, w, "conv2d", ((1, 1), (1, 1), (1, 1), 1))

    new = run(conv, [x, w], grad, native=True)
    old = run(conv, [x, w], grad, native=False)
    for a, b, what in [(new[0], old[0], "value"), (new[1][0], old[1][0], "grad x"), (new[1][1], old[1][1], "grad w")]:
        assert_same(a, b, what)


def reactnet_call(x, shift):
    return fx.QuantizerCall(x, fx.ShiftedApproxSTE, (shift,)).apply()


@pytest.mark.parametrize(("shape", "shift_shape"), [((3, 5, 7, 7), (1, 5, 1, 1)), ((2, 16, 32, 32), (1, 16, 1, 1)),
                                                     ((5, 17), (17,)), ((5, 17), (1, 17)), ((4, 3, 11), (1, 3, 1)),
                                                     ((4, 3, 11), (1, 1, 1)), ((2, 3, 4, 6), (6,))])
def test_shifted_approx_sign_matches_torch_bit_for_bit(shape, shift_shape):
    x = salted(shape, 5)
    shift = torch.randn(shift_shape, generator=torch.Generator().manual_seed(6)) * 0.5
    grad = salted(shape, 7, specials=False)
    assert fx.native_sign(x, shift) is not None and fx.native_approx_grad(grad, x, shift) is not None
    fused_sum = hasattr(fx._activation_engine, "approx_sign_grad_sum")  # (an engine built before: torch's sum)
    assert (fx.native_approx_grad_sum(grad, x, shift) is not None) == fused_sum
    new = run(reactnet_call, [x, shift], grad, native=True)
    old = run(reactnet_call, [x, shift], grad, native=False)
    assert_same(new[0], old[0], "value")
    assert_same(new[1][0], old[1][0], "grad x")
    # The threshold's gradient is summed in double in the same pass: the float64 sum of the torch
    # path's grad x, rounded (within an ulp), and within 1e-6 of torch's float sum_to_size.
    exact = old[1][0].double().sum_to_size(shift.shape)
    if fused_sum:
        torch.testing.assert_close(new[1][1].double(), exact, rtol=1.2e-7, atol=1e-30, equal_nan=True)
    torch.testing.assert_close(new[1][1], old[1][1], rtol=1e-6, atol=1e-6 * old[1][1].nan_to_num(0).abs().max().item(),
                               equal_nan=True)
    learned = shift.clone().requires_grad_(True)
    gx = fx.ShiftedApproxSTE.grad(grad, x, (), learned)
    assert fx.ShiftedApproxSTE.arg_grads(gx, (True,), learned)[0] is not None
    assert fx.SHIFT_GRAD not in gx.__dict__  # taken off again by arg_grads (nothing left on the gradient)


def test_shifted_approx_sign_unsupported_shift_takes_torch():
    x = salted((3, 4, 5), 8)
    assert fx.native_sign(x, torch.ones(3, 4, 1)) is None  # varies along two dims
    assert fx.native_sign(x, torch.ones(2, 1, 1)) is None  # does not broadcast


def standardized(x):
    return recu.standardized_sign_approx(x, tuple(range(1, x.dim())))


def standardized_input(shape, seed):
    """Salted activations (no inf/NaN: one would poison its whole sample's σ on both paths) at
    several scales, with a zero-variance sample and one of all zeros."""
    x = salted(shape, seed, specials=False, scale=2.0)
    x[0] = 0.75
    if shape[0] > 2:
        x[2] = 0.0
    if shape[0] > 1:
        x[1] *= 1e3
    return x


@pytest.mark.parametrize("shape", SHAPES)
def test_standardized_approx_sign_matches_torch(shape):
    x = standardized_input(shape, 9)
    grad = salted(shape, 10, specials=False)
    new = run(standardized, [x], grad, native=True)
    old = run(standardized, [x], grad, native=False)
    assert_same(new[0], old[0], "value")
    assert_close(new[1][0], old[1][0], "grad x")


def test_standardized_gradient_kernel_against_the_formula_with_the_same_statistics():
    """The backward alone, given the torch forward's mean and σ: only the row sum Σ g_a·a is taken
    in another order, so the gradient is torch's within rounding; and the rebuilt binary input and
    the kept statistics of the native forward are torch's."""
    shape, features = (6, 4, 9, 9), 4 * 9 * 9
    x = standardized_input(shape, 11)
    grad = salted(shape, 12, specials=False)
    saved = fx.NATIVE_ACTIVATIONS
    fx.NATIVE_ACTIVATIONS = False
    try:
        xq, kept = recu.StandardizedApproxSTE.value(x, features)
        old = recu.StandardizedApproxSTE.grad(grad, x, kept, features)
    finally:
        fx.NATIVE_ACTIVATIONS = saved
    _, mean, std = kept
    new = recu.StandardizedApproxSTE.grad(grad, x, (None, mean, std), features)
    assert_close(new, old, "grad")
    rebuilt, native_kept = recu.StandardizedApproxSTE.restore(x, (mean, std), features)
    assert native_kept[0] is None
    assert_same(rebuilt, xq, "rebuilt binary input")
    native_xq, (a, native_mean, native_std) = recu.StandardizedApproxSTE.value(x, features)
    assert a is None
    assert_same(native_xq, xq, "forward value")
    assert_close(native_mean, mean, "mean")
    assert_close(native_std, std, "std")


def test_standardized_approx_sign_fused_with_the_convolution():
    x = standardized_input((4, 8, 10, 10), 13)
    w = torch.randn(6, 8, 3, 3, generator=torch.Generator().manual_seed(14)).sign()
    grad = torch.randn(4, 6, 10, 10, generator=torch.Generator().manual_seed(15))

    def conv(x, w):
        call = recu.standardized_call(x, (1, 2, 3))
        return fx.quantized_product(call, w, "conv2d", ((1, 1), (1, 1), (1, 1), 1))

    new = run(conv, [x, w], grad, native=True)
    old = run(conv, [x, w], grad, native=False)
    ref = run(lambda x, w: F.conv2d(standardized(x), w, padding=1), [x, w], grad, native=False)
    assert_same(new[0], old[0], "value")
    assert_same(new[0], ref[0], "value against the unfused oracle")
    assert_close(new[1][0], old[1][0], "grad x")
    assert_same(new[1][1], old[1][1], "grad w")  # the same ±1 binary input


@pytest.mark.parametrize("fn", ["sign", "approx", "shifted", "standardized", "clip"])
def test_one_and_two_threads_give_the_same_bits(fn):
    shape = (8, 16, 24, 24)
    x = standardized_input(shape, 16) if fn == "standardized" else salted(shape, 16)
    grad = salted(shape, 17, specials=False)
    shift = torch.randn(1, 16, 1, 1)
    fns = {"sign": (lambda x: fx.sign_identity_ste(x) * 1.0, [x]), "approx": (fx.sign_approx_ste, [x]),
           "shifted": (reactnet_call, [x, shift]), "standardized": (standardized, [x]),
           "clip": (fx.sign_clip_ste, [x])}
    f, tensors = fns[fn]
    one = run(f, tensors, grad, native=True, threads=1)
    two = run(f, tensors, grad, native=True, threads=2)
    assert_same(two[0], one[0], "value")
    for a, b in zip(two[1], one[1]):
        assert_same(a, b, "grad")


def test_the_engine_refuses_bad_arguments():
    with pytest.raises(ValueError, match="activation_sign"):
        fx._activation_engine.activation_sign(0, 0, 1, 1, 1, 0, 1)
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="standardize_sign_rows"):
        fx._activation_engine.standardize_sign_rows(x.data_ptr(), 1, 4, 3.0, 1e-5, x.data_ptr(), x.data_ptr(),
                                                    x.data_ptr(), 0)


def _xnorpp_step(kind, integer, native, threads=1):
    """XNOR-Net++'s fused product with Γ = o ⊗ h (⊗ w) on odd sizes, ±1 weights (the int16-kept
    product) or real ones (the float-kept product): output, and the gradients of x, W, o, h, w."""
    saved, before = fx.NATIVE_ACTIVATIONS, torch.get_num_threads()
    fx.NATIVE_ACTIVATIONS = native
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(21)
        spatial = (7, 9) if kind == "conv2d" else (11,)
        x = salted((3, 5, *spatial), 22, specials=False).requires_grad_(True)
        w = torch.randn(4, 5, *([3] * len(spatial)), generator=g)
        w = (fx.sign(w) if integer else w).requires_grad_(True)
        factors = [torch.rand(n, generator=g).add_(0.5).requires_grad_(True) for n in (4, *spatial)]
        call = fx.QuantizerCall(x, fx.ClipSTE, (None,))
        conv = ((1,) * len(spatial), (1,) * len(spatial), (1,) * len(spatial), 1)
        y = fx.quantized_product(call, w, kind, conv, tuple(factors))
        y.backward(torch.randn(y.shape, generator=g))
        return y.detach(), [t.grad for t in (x, w, *factors)]
    finally:
        fx.NATIVE_ACTIVATIONS = saved
        torch.set_num_threads(before)


@pytest.mark.parametrize("integer", [True, False], ids=["int16-kept", "float-kept"])
@pytest.mark.parametrize("kind", ["conv2d", "conv1d"])
def test_xnorpp_spatial_scale_native_matches_torch(kind, integer):
    """Γ's products and g·(h ⊗ w) bit for bit (the output, the gradients of x, W and o); the spatial
    factors' gradients (Σ_n g·y summed in double) within 1e-6 of torch's and of the float64 formula
    Σ g·y·o·(w or h) over the other dims; 1 and 2 threads give the same bits."""
    y, grads = _xnorpp_step(kind, integer, native=True)
    y_t, grads_t = _xnorpp_step(kind, integer, native=False)
    assert_same(y, y_t, "output")
    for name, a, b in zip(["x", "W", "o"], grads, grads_t):
        assert_same(a, b, f"grad {name}")
    for name, a, b in zip(["h", "w"], grads[3:], grads_t[3:]):
        assert_close(a, b, f"grad {name}")
    if not hasattr(fx._activation_engine, "spatial_scale_backward"):
        return  # an engine built before the spatial-scale kernels: the torch path above on both sides
    # The kernels alone on 1 and 2 threads (torch's convolution backward may differ between the two).
    spatial = (7, 9) if kind == "conv2d" else (11,)
    prod = salted((3, 4, *spatial), 23, specials=False).round_()
    grad = salted((3, 4, *spatial), 24, specials=False)
    o, h = torch.rand(4) + 0.5, torch.rand(spatial[0]) + 0.5
    w = torch.rand(spatial[1]) + 0.5 if kind == "conv2d" else None
    runs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            # (a clone: with the int16 copy kept, the kernel scales the product in place)
            runs.append((*fx._native_spatial_scale(kind, prod.clone(), o, h, w, integer),
                         *fx._native_spatial_grad(grad, prod.to(torch.int16) if integer else prod, h, w)))
        finally:
            torch.set_num_threads(before)
    for a, b in zip(*runs):
        assert_same(a, b, "1 vs 2 threads")
    if kind == "conv2d":
        # the formula: ∂L/∂h_i = Σ_{n,c,j} g·y·o_c·w_j with y the unscaled product (float64)
        saved = fx.NATIVE_ACTIVATIONS
        try:
            g = torch.Generator().manual_seed(21)
            x = salted((3, 5, 7, 9), 22, specials=False)
            w = torch.randn(4, 5, 3, 3, generator=g)
            w = fx.sign(w) if integer else w
            o, h, ww = (torch.rand(n, generator=g).add_(0.5) for n in (4, 7, 9))
            prod = torch.nn.functional.conv2d(fx.sign(x).double(), w.double(), padding=1)
            grad = torch.randn(prod.shape, generator=g).double()
            s = (grad * prod * o.double().reshape(1, -1, 1, 1)).sum((0, 1))
            torch.testing.assert_close(grads[3].double(), (s * ww.double()).sum(1), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grads[4].double(), (s * h.double().reshape(-1, 1)).sum(0), rtol=1e-5,
                                       atol=1e-5)
        finally:
            fx.NATIVE_ACTIVATIONS = saved
