import math

import pytest
import torch

import onebit
from onebit.methods import Method, Option, functional, register


def test_available_lists_bibench_methods():
    assert {"bnn", "xnor", "dorefa", "bireal", "xnorpp", "reactnet", "recu", "fda"} <= set(
        onebit.methods.available()
    )


def test_get_returns_configured_method_and_validates():
    m = onebit.methods.get("recu", tau_min=0.8)
    assert m.tau_min == 0.8 and m.tau_max == 0.99
    assert onebit.methods.get(m) is m
    assert onebit.methods.get(m, tau_max=0.95).tau_max == 0.95
    with pytest.raises(ValueError, match="unknown binarization method 'xnor2'; available: .*bireal, bnn"):
        onebit.methods.get("xnor2")
    with pytest.raises(ValueError, match="omega=nan is not a number"):
        onebit.methods.get("fda", omega=float("nan"))
    with pytest.raises(ValueError, match="noise_adaptation='yes' is not allowed; allowed: one of True, False"):
        onebit.methods.get("fda", noise_adaptation="yes")


def test_register_a_new_method_in_one_class():
    @register
    class HalfSign(Method):
        name = "test-halfsign"
        options = {"gain": Option(0.5, "output gain", low=0.0, low_open=True)}

        def quantize_weight(self, layer, w):
            return functional.ste(functional.sign(w), functional.clip(w))

        def scale_output(self, layer, y):
            return y * self.gain

    try:
        layer = onebit.nn.BinaryLinear(2, 1, bias=False, method="test-halfsign", binarize_activations=False)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[0.2, -0.3]]))
        assert layer(torch.tensor([[1.0, 2.0]])).item() == pytest.approx(0.5 * (1 - 2))
        with pytest.raises(ValueError, match="gain=0"):
            layer.method.with_options(gain=0)
    finally:
        onebit.methods.base._REGISTRY.pop("test-halfsign")


@pytest.mark.parametrize("fn", [
    functional.approx_sign,
    functional.clip,
    lambda x: functional.sign_swish(x, 3.0),
])
def test_surrogates_pass_gradcheck_on_smooth_parts(fn):
    # Points away from the kinks at 0 and ±1, where the surrogates are differentiable.
    x = torch.tensor([-1.7, -0.6, -0.2, 0.15, 0.55, 0.9, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_fourier_sign_gradcheck_and_derivative():
    from onebit.methods.fda import fourier_sign

    x = torch.tensor([-0.7, -0.1, 0.3, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fourier_sign(t, 9, 0.1), (x,))


def test_sign_maps_zero_to_plus_one_and_ste_passes_surrogate_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = functional.ste(functional.sign(x), functional.approx_sign(x))
    assert y.tolist() == [-1, -1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 1.0, 0.0]


def test_sign_swish_derivative_matches_closed_form():
    beta = 2.5
    x = torch.linspace(-2, 2, 9, dtype=torch.float64, requires_grad=True)
    functional.sign_swish(x, beta).sum().backward()
    bx = beta * x.detach()
    closed = beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))
    assert torch.allclose(x.grad, closed)
    assert functional.log_linear(1e-3, 10, 0.5) == pytest.approx(math.sqrt(1e-3 * 10))
