"""BiPer: hand-checked forward values, gradients, the two stages, the loss term and the QE measure."""

import math

import pytest
import torch
from method_probe import run as probe
from torch import nn

import onebit
from onebit.methods import NotDeployableError
from onebit.methods.biper import TAU_STAGE2, quantization_error, to_stage2
from onebit.nn import BinaryConv2d, BinaryLinear

OMEGA = 20.0
W = [0.05, -0.1, 0.2]  # ωW = 1, -2, 4: sin = 0.841, -0.909, -0.757 → square wave +1, -1, -1
X = [0.3, -0.7, 1.5]  # signs +1, -1, +1
ALPHA = 0.5


def linear(stage, w=W, alpha=ALPHA, **options):
    layer = BinaryLinear(len(w), 1, bias=False, method="biper", stage=stage, **options)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w]))
        layer.alpha.fill_(alpha)
    return layer


def run(layer, x=X):
    return probe(layer, x)


def test_stage2_forward_is_exactly_plus_minus_alpha_and_weight_gradient_is_sine_derivative():
    layer = linear(2).eval()
    wq = layer.method.quantize_weight(layer, layer.weight).detach()
    assert wq[0].tolist() == [1.0, -1.0, -1.0]  # w = 0.2 > 0 binarizes to -1: a square wave, not sign(W)
    y, gx, gw = run(layer)
    assert y == ALPHA * (1 * 1 + (-1) * (-1) + 1 * (-1))  # exactly α·(±1 sums)
    # ∂y/∂w_i = α·sign(x_i)·ω·cos(ω w_i)
    expected = [ALPHA * s * OMEGA * math.cos(OMEGA * w) for s, w in zip((1, -1, 1), W)]
    assert gw == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx([5.4030, 4.1615, -6.5364], abs=1e-4)
    # eval mode: no std normalisation, ApproxSign derivative 2 - 2|x| → 1.4, 0.6, 0
    assert gx == pytest.approx([ALPHA * 1.4, ALPHA * -1 * 0.6, 0.0], abs=1e-6)
    assert layer.alpha.grad.tolist() == [1.0]


def test_stage1_uses_the_real_sine_weights():
    layer = linear(1).eval()
    y, _, gw = run(layer)
    sines = [math.sin(OMEGA * w) for w in W]
    assert y == pytest.approx(ALPHA * (sines[0] - sines[1] + sines[2]), abs=1e-6)
    assert gw == pytest.approx([ALPHA * s * OMEGA * math.cos(OMEGA * w) for s, w in zip((1, -1, 1), W)],
                               abs=1e-5)


def test_training_activations_are_divided_by_the_per_sample_std():
    layer = linear(2).train()
    x = torch.tensor([[0.2, -0.4, 0.6]], requires_grad=True)
    layer(x).sum().backward()
    xt = x.detach().double().requires_grad_()
    a = xt / torch.sqrt(xt.var() + 1e-5)
    ac = a.clamp(-1, 1)
    ((2 * ac - ac * ac.abs()) * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64) * ALPHA).sum().backward()
    assert x.grad[0].tolist() == pytest.approx(xt.grad[0].tolist(), abs=1e-5)
    assert abs(x.grad[0, 0].item() - ALPHA * 1.6) > 0.1  # the eval-mode window would give α·1.6


def test_loss_term_value_and_extra_loss_sums_layers():
    layer = linear(1)
    expected = 0.037 * sum(math.sin(OMEGA * w) ** 2 for w in W) / 3
    assert layer.extra_loss().item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.037 * (0.70807 + 0.82682 + 0.57275) / 3, rel=1e-4)
    other = linear(1, w=[0.01, 0.3], tau=0.1)
    model = nn.Sequential(layer, nn.Flatten(0), other)
    total = expected + 0.1 * (math.sin(0.2) ** 2 + math.sin(6.0) ** 2) / 2
    assert onebit.extra_loss(model).item() == pytest.approx(total, rel=1e-5)
    # the term pulls the effective weight sin(ωW) toward 0: its gradient is τ·ω·sin(2ωW)/n
    layer.weight.grad = None
    layer.extra_loss().backward()
    assert layer.weight.grad[0].tolist() == pytest.approx(
        [0.037 * OMEGA * math.sin(2 * OMEGA * w) / 3 for w in W], abs=1e-6)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Hardtanh(),
        nn.Flatten(), nn.Linear(6 * 16, 10), nn.Linear(10, 3),
    )


def test_to_stage2_keeps_the_stage1_state_and_binarizes():
    model = onebit.binarize(small_model(), "biper", keep_full_precision=["0"])
    x = torch.randn(5, 1, 4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(x).square().mean() + onebit.extra_loss(model)).backward()
    opt.step()  # a stage-1 step, so the state is not the initial one
    layers = onebit.nn.binary_layers(model)
    assert len(layers) == 3 and all(layer.method.stage == 1 for _, layer in layers)
    with pytest.raises(NotDeployableError, match=r"layer '3'.*to_stage2"):
        layers[0][1].inference_form()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    assert to_stage2(model, tau=TAU_STAGE2) is model
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, alpha, bias, BN state
    for _, layer in layers:
        assert layer.method.stage == 2 and layer.method.omega == OMEGA and layer.method.tau == TAU_STAGE2
        wq = layer.method.quantize_weight(layer, layer.weight)
        assert torch.equal(wq, torch.where(torch.sin(OMEGA * layer.weight) >= 0, 1.0, -1.0))
        assert layer.inference_form().weight_planes[0].abs().eq(1).all()
    to_stage2(model)  # idempotent; tau=None keeps each layer's τ
    assert all(layer.method.stage == 2 and layer.method.tau == TAU_STAGE2 for _, layer in layers)


def test_to_stage2_needs_biper_layers():
    with pytest.raises(ValueError, match="no BiPer layers.*binarize"):
        to_stage2(onebit.binarize(small_model(), "bnn"))


def test_quantization_error_as_the_reference_defines_it():
    w = torch.tensor([0.05, -0.1])
    expected = ((1 - math.sin(1.0)) + (1 - math.sin(2.0))) / 2  # |sin(ωw) − sign(sin(ωw))|
    assert quantization_error(w, OMEGA) == pytest.approx(expected, rel=1e-6)  # w is float32
    w2 = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    both = quantization_error([w, w2], OMEGA)
    assert both == pytest.approx(quantization_error(w, OMEGA) + quantization_error(w2, OMEGA), rel=1e-12)
    assert quantization_error(torch.tensor([math.pi / 2 / OMEGA]), OMEGA) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="omega"):
        quantization_error(w, 0)
    with pytest.raises(ValueError, match="no weight tensors"):
        quantization_error([], 20)


def test_options_and_alpha_init():
    torch.manual_seed(1)
    conv = BinaryConv2d(8, 64, 3, method="biper")
    assert conv.alpha.shape == (64,) and (conv.alpha >= 0).all() and (conv.alpha < 1).all()
    assert conv.alpha.std() > 0.1  # U[0, 1], not a constant
    m = onebit.methods.get("biper")
    assert (m.omega, m.tau, m.stage) == (20.0, 0.037, 1)
    with pytest.raises(ValueError, match=r"omega=0 is out of range"):
        onebit.methods.get("biper", omega=0)
    with pytest.raises(ValueError, match=r"stage=3 is not allowed; allowed: one of 1, 2"):
        onebit.methods.get("biper", stage=3)
    with pytest.raises(ValueError, match=r"tau=-1"):
        onebit.methods.get("biper", tau=-1)
