"""ProxConnect++: each preset's (F, B) pair on a grid, the F = P∘B construction, the μ schedule, BNN++'s
convergence to sign, and when inference becomes deployable."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import onebit
from onebit.methods import NotDeployableError
from onebit.methods.functional import sign, sign_swish
from onebit.methods.proxconnect import pcpp_mu, prox_sign
from onebit.nn import BinaryConv2d, BinaryLinear

GRID = torch.tensor([-2.5, -1.5, -1.0, -0.7, -0.3, -0.05, 0.0, 0.02, 0.4, 0.9, 1.0, 1.2, 3.0], dtype=torch.float64)


def sign_swish_derivative(x, beta):
    bx = beta * x
    return beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))


def quantize(method, mu=None, hard=False, x=GRID, **options):
    """Value and gradient of the layer's weight quantizer on a grid (scale="none": F itself)."""
    layer = BinaryLinear(x.numel(), 1, method=method, scale="none", dtype=torch.float64, **options)
    if mu is not None:
        layer.pcpp_mu.fill_(mu)
    layer.pcpp_hard.fill_(hard)
    w = x.clone().requires_grad_()
    f = layer.method.quantize_weight(layer, w)
    f.sum().backward()
    return f.detach(), w.grad


PAIRS = {  # preset → (F on the grid, B' on the grid)
    "pcpp-bc": (lambda x: sign(x), lambda x: torch.ones_like(x)),
    "pcpp-bnn": (lambda x: sign(x), lambda x: (x.abs() <= 1).double()),
    "pcpp-bnn+": (lambda x: sign(x), lambda x: sign_swish_derivative(x, 5.0)),
}


@pytest.mark.parametrize("method", list(PAIRS))
def test_sign_forward_presets_reduce_to_their_pairs(method):
    forward, derivative = PAIRS[method]
    f, g = quantize(method)
    assert torch.equal(f, forward(GRID))
    assert torch.allclose(g, derivative(GRID), atol=1e-12)


def test_bnn_plus_beta_option_sets_the_backward_slope():
    f, g = quantize("pcpp-bnn+", beta=2.0)
    assert torch.equal(f, sign(GRID)) and torch.allclose(g, sign_swish_derivative(GRID, 2.0), atol=1e-12)
    # F = P∘B: the sign of SignSwish is the sign, so forward sign and backward SS satisfy the criterion
    assert torch.equal(sign(sign_swish(GRID, 2.0)), sign(GRID))


@pytest.mark.parametrize("mu", [0.0, 0.3, 0.8, 1.0])
def test_proxconnect_forward_is_the_proximal_map_and_backward_identity(mu):
    f, g = quantize("pcpp-pc", mu=mu)
    assert torch.allclose(f, (GRID + mu * sign(GRID)).clamp(-1, 1))
    assert torch.equal(g, torch.ones_like(GRID))
    if mu == 0.0:  # identity on [-1, 1]
        assert torch.equal(f, GRID.clamp(-1, 1))
    if mu == 1.0:  # the proximal map has reached sign
        assert torch.equal(f, sign(GRID))
    # hand values at mu = 0.3: 0.4 → 0.7, -0.05 → -0.35, 0.9 → 1 (clipped)
    if mu == 0.3:
        assert f[8].item() == pytest.approx(0.7) and f[5].item() == pytest.approx(-0.35) and f[9] == 1


@pytest.mark.parametrize("mu", [0.5, 3.0, 12.0])
def test_bnn_plus_plus_forward_and_backward_are_both_sign_swish(mu):
    f, g = quantize("bnn++", mu=mu)
    assert torch.allclose(f, sign_swish(GRID, mu), atol=1e-12)
    assert torch.allclose(g, sign_swish_derivative(GRID, mu), atol=1e-12)
    f_hard, g_hard = quantize("bnn++", mu=mu, hard=True)  # end of training: F = sign∘SS = sign
    assert torch.equal(f_hard, sign(GRID)) and torch.allclose(g_hard, g)


def test_mean_abs_scale_applies_the_quantizer_to_w_over_alpha():
    torch.manual_seed(0)
    layer = BinaryLinear(6, 3, method="bnn++")
    layer.pcpp_mu.fill_(4.0)
    w = layer.weight.detach().clone().requires_grad_()
    q = layer.method.quantize_weight(layer, w)
    q.sum().backward()
    alpha = w.detach().abs().mean(dim=1, keepdim=True)
    u = w.detach() / alpha
    assert torch.allclose(q, alpha * sign_swish(u, 4.0), atol=1e-6)
    assert torch.allclose(w.grad, sign_swish_derivative(u.double(), 4.0).float(), atol=1e-5)  # B'(w/α)


@pytest.mark.parametrize("epoch,mu,hard", [(0, 1.0, False), (4, 1.0 + 19.0 * 4 / 8, False), (8, 20.0, False),
                                           (9, 20.0, True), (10, 20.0, True)])
def test_bnn_plus_plus_schedule(epoch, mu, hard):
    layer = BinaryLinear(4, 2, method="bnn++")
    layer.schedule_step(epoch, 10)
    assert layer.pcpp_mu.item() == pytest.approx(mu) and bool(layer.pcpp_hard) is hard
    assert pcpp_mu(epoch, 10, 1.0, 20.0, 1) == (pytest.approx(mu), hard)


def test_schedule_hard_epochs_option():
    assert pcpp_mu(6, 10, 0.0, 1.0, 3) == (1.0, False)  # last annealing epoch 10 - 3 - 1 = 6
    assert pcpp_mu(7, 10, 0.0, 1.0, 3) == (1.0, True)
    assert pcpp_mu(3, 10, 0.0, 1.0, 0) == (pytest.approx(1 / 3), False)
    assert pcpp_mu(9, 10, 0.0, 1.0, 0) == (1.0, False) and pcpp_mu(10, 10, 0.0, 1.0, 0)[1]
    assert pcpp_mu(0, 1, 0.0, 1.0, 1) == (1.0, True)
    with pytest.raises(ValueError, match="hard_epochs=-1 is not a non-negative integer"):
        onebit.methods.get("pcpp-pc", hard_epochs=-1)


def test_bnn_plus_plus_forward_approaches_sign_over_the_schedule():
    grid = torch.cat([torch.linspace(-3, -0.5, 60), torch.linspace(0.5, 3, 60)]).double()  # |w/α| >= 0.5
    errors = []
    for epoch in range(10):
        layer = BinaryLinear(grid.numel(), 1, method="bnn++", scale="none", dtype=torch.float64)
        layer.schedule_step(epoch, 10)
        f = layer.method.quantize_weight(layer, grid)
        errors.append((f - sign(grid)).abs().max().item())
    assert errors[0] > 0.1  # μ = 1: far from sign
    assert all(a >= b for a, b in itertools.pairwise(errors))
    assert errors[8] < 1e-3  # μ = 20 at the last annealing epoch
    assert errors[9] == 0.0  # hard sign in the final epoch


@pytest.mark.parametrize("method", ["pcpp-pc", "bnn++"])
def test_inference_not_deployable_before_the_end_of_the_schedule(method):
    model = onebit.binarize(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8),
                                                torch.nn.Linear(8, 2)), method)
    onebit.schedule_step(model, 3, 10)
    with pytest.raises(NotDeployableError, match=r"layer '1'.*not binary before the end of its schedule"):
        model[1].inference_form()
    onebit.schedule_step(model, 9, 10)
    form = model[1].inference_form()
    alpha = model[1].weight.detach().abs().mean(dim=1)
    assert torch.allclose(form.plane_scales[0], alpha)
    assert torch.equal(form.weight_planes[0], sign(model[1].weight.detach()))
    assert form.binary_input is False  # weight-only by default


def test_proxconnect_is_deployable_once_mu_reaches_one():
    layer = BinaryLinear(4, 2, method="pcpp-pc")
    layer.schedule_step(8, 10)  # last annealing epoch: μ = mu_end = 1
    assert layer.pcpp_mu.item() == 1.0 and not bool(layer.pcpp_hard)
    assert layer.inference_form().weight_planes[0].abs().eq(1).all()


def test_weight_only_by_default_and_optional_binary_activations():
    torch.manual_seed(0)
    layer = BinaryLinear(5, 3, bias=False, method="pcpp-bnn", scale="none")
    assert layer.binarize_activations is False
    x = torch.randn(2, 4, 5)  # ViT-style tokens
    assert torch.equal(layer(x), F.linear(x, sign(layer.weight)))
    act = BinaryLinear(5, 3, bias=False, method="pcpp-bnn", scale="none", binarize_activations=True)
    xr = torch.tensor([[0.5, -1.5, 0.2, -0.3, 2.0]], requires_grad=True)
    out = act(xr)
    assert torch.equal(out.detach(), F.linear(sign(xr.detach()), sign(act.weight.detach())))
    out.sum().backward()  # activations: sign forward, the preset's B (clip) as surrogate
    expected = sign(act.weight.detach()).sum(0) * (xr.detach().abs() <= 1)
    assert torch.allclose(xr.grad, expected)


def test_conv_layers_and_option_errors():
    conv = BinaryConv2d(3, 4, 3, padding=1, method="bnn++")
    assert conv(torch.randn(2, 3, 5, 5)).shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match=r"scale='l2' is not allowed; allowed: one of 'mean_abs', 'none'"):
        onebit.methods.get("pcpp-bc", scale="l2")
    with pytest.raises(ValueError, match="mu_end=0.5 must be >= mu_start=2"):
        onebit.methods.get("bnn++", mu_start=2.0, mu_end=0.5)
    with pytest.raises(ValueError, match="unknown option"):
        onebit.methods.get("pcpp-bc", mu_start=0.1)


def test_prox_sign_is_the_proximal_map_of_its_regulariser():
    # P^μ(u) = argmin_z ½(z − u)² + μ(1 − |z|) over z ∈ [−1, 1], checked by brute force on a fine grid
    z = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    for mu in (0.2, 0.6):
        for u in (-1.7, -0.4, 0.1, 0.8, 1.3):
            objective = 0.5 * (z - u) ** 2 + mu * (1 - z.abs())
            best = z[objective.argmin()].item()
            assert prox_sign(torch.tensor(u), mu).item() == pytest.approx(best, abs=1e-4)
    assert math.isclose(prox_sign(torch.tensor(0.0), 0.5).item(), 0.5)  # sign(0) = +1
