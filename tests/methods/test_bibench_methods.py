"""Hand-checked forward values and gradients of BiBench's eight methods on tiny tensors.

The fixture is one BinaryLinear with out_features=1: y = scale · Σ_i a_i w_i, so every gradient can be
written down by hand from the paper's formula."""

import math

import pytest
import torch
from method_probe import run as probe

from onebit.nn import BinaryConv2d, BinaryLinear

W = [0.5, -2.0, 0.0]  # 0 binarizes to +1 (onebit's sign); |w| > 1 is outside the clip-STE window
X = [0.3, -0.7, 1.5]
MEAN_ABS_W = 2.5 / 3
MEAN_ABS_X = 2.5 / 3


def linear(method, w=W, **options):
    layer = BinaryLinear(len(w), 1, bias=False, method=method, **options)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w]))
    return layer


def run(layer, x=X):
    return probe(layer, x)


def close(a, b, tol=1e-6):
    assert a == pytest.approx(b, abs=tol), (a, b)


def test_bnn():
    y, gx, gw = run(linear("bnn"))
    close(y, 3.0)  # (+1)(+1) + (-1)(-1) + (+1)(+1)
    close(gx, [1.0, -1.0, 0.0])  # sign(w) · 1{|x| <= 1}
    close(gw, [1.0, 0.0, 1.0])  # sign(x) · 1{|w| <= 1}


def test_xnor():
    y, gx, gw = run(linear("xnor"))
    close(y, MEAN_ABS_X * MEAN_ABS_W * 3)
    close(gx, [MEAN_ABS_W, -MEAN_ABS_W, 0.0])  # α sign(w) · clip'(x): K is detached
    close(gw, [MEAN_ABS_X, 0.0, MEAN_ABS_X])  # K sign(x) · clip'(w): α detached, not multiplied


def test_dorefa():
    y, gx, gw = run(linear("dorefa"))
    close(y, MEAN_ABS_W * 3)
    close(gx, [MEAN_ABS_W, -MEAN_ABS_W, 0.0])
    close(gw, [1.0, 0.0, 1.0])


def test_bireal():
    y, gx, gw = run(linear("bireal"))
    close(y, MEAN_ABS_W * 3)
    # ApproxSign: 2 - 2|x| → 1.4, 0.6, 0 (|x| >= 1)
    close(gx, [MEAN_ABS_W * 1.4, -MEAN_ABS_W * 0.6, 0.0])
    close(gw, [1.0, 0.0, 1.0])


def test_reactnet_threshold_used_in_linear_forward():
    layer = linear("reactnet")
    with torch.no_grad():
        layer.rsign_bias.copy_(torch.tensor([0.1, 0.2, -2.0]))
    y, gx, gw = run(layer)
    # x + b = [0.4, -0.5, -0.5] → signs [+1, -1, -1]; BiBench's ReActLinear would ignore b and give 3α
    close(y, MEAN_ABS_W * (1 + 1 - 1))
    close(gx, [MEAN_ABS_W * 1.2, -MEAN_ABS_W * 1.0, MEAN_ABS_W * 1.0])
    close(layer.rsign_bias.grad.tolist(), gx)
    close(gw, [1.0, 0.0, -1.0])


def test_xnorpp_linear_and_conv_scales():
    layer = linear("xnorpp")
    with torch.no_grad():
        layer.gamma_o.fill_(0.5)
    y, gx, gw = run(layer)
    close(y, 1.5)
    close(gx, [0.5, -0.5, 0.0])
    close(layer.gamma_o.grad.tolist(), [3.0])

    conv = BinaryConv2d(1, 2, 1, bias=False, method="xnorpp")
    assert isinstance(conv.gamma_h, torch.nn.UninitializedParameter)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)  # made before Γ is sized: it must still train it
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]]))
    x = torch.ones(1, 1, 3, 5)
    out = conv(x)
    assert conv.gamma_h.shape == (3,) and conv.gamma_w.shape == (5,)
    with torch.no_grad():
        conv.gamma_h.copy_(torch.tensor([1.0, 2.0, 3.0]))
        conv.gamma_w.copy_(torch.tensor([1.0, 10.0, 1.0, 1.0, 1.0]))
    out = conv(x)
    assert out[0, 0, 2, 1].item() == pytest.approx(30.0)
    assert out[0, 1, 1, 0].item() == pytest.approx(-2.0)
    out[:, 0].sum().backward()  # channel 1 alone: the two channels' sums would cancel
    before = conv.gamma_h.detach().clone()
    opt.step()
    assert not torch.equal(before, conv.gamma_h.detach())
    with pytest.raises(ValueError, match="output size"):
        conv(torch.ones(1, 1, 4, 5))


def test_xnorpp_output_size_option_and_state_dict_materialization():
    conv = BinaryConv2d(1, 2, 3, padding=1, method="xnorpp", output_size=(4, 6))
    assert conv.gamma_h.shape == (4,) and conv.gamma_w.shape == (6,)
    lazy = BinaryConv2d(1, 2, 3, padding=1, method="xnorpp")
    lazy.load_state_dict(conv.state_dict())
    x = torch.randn(2, 1, 4, 6)
    assert torch.equal(lazy(x), conv(x))
    with pytest.raises(ValueError, match="output_size"):
        BinaryConv2d(1, 2, 3, method="xnorpp", output_size=(4, -1))


def test_recu_weights_hand_computed():
    layer = linear("recu", w=[1.0, 2.0, 3.0, 6.0])
    with torch.no_grad():
        layer.alpha.fill_(0.5)
    # w0 = [-2,-1,0,3], unbiased var 14/3; w1 = w0 · 2√2 / sqrt(14/3 + 1e-5)
    factor = 2 * math.sqrt(2) / math.sqrt(14 / 3 + 1e-5)
    w1 = [v * factor for v in (-2.0, -1.0, 0.0, 3.0)]
    q_tau = -sum(abs(v) for v in w1) / 4 * math.log(2 - 2 * 0.85)
    assert q_tau < abs(w1[0]) and q_tau < w1[3] and q_tau > abs(w1[1])  # two weights are clamped
    wq = layer.method.quantize_weight(layer, layer.weight)
    assert wq[0].tolist() == [-1.0, -1.0, 1.0, 1.0]

    # Identity STE through the sign: the weight gradient is the autograd of clamp(standardize(W)).
    x = torch.tensor([[0.3, -0.2, 0.1, 0.9]])
    layer.train()
    y = layer(x)
    assert y.item() == pytest.approx(0.5 * (-1 + 1 + 1 + 1))
    y.backward()
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0]], requires_grad=True, dtype=torch.float64)
    w0 = w - w.mean()
    w1t = w0 / (torch.sqrt(w0.var() + 1e-5) / (2 * math.sqrt(2)))
    ga = layer.alpha.item() * torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)  # ∂y/∂w_b = α·a_b
    (w1t.clamp(-q_tau, q_tau) * ga).sum().backward()
    assert layer.weight.grad[0].tolist() == pytest.approx(w.grad[0].tolist(), abs=1e-5)
    close(layer.alpha.grad.tolist(), [2.0])  # Σ sign(a)·sign(w)


def test_recu_activation_std_normalisation_only_in_training():
    layer = linear("recu", w=[1.0, -1.0, 1.0])
    with torch.no_grad():
        layer.alpha.fill_(1.0)
    x = torch.tensor([[0.2, -0.4, 0.6]], requires_grad=True)
    layer.train()
    layer(x).sum().backward()
    std = torch.tensor([0.2, -0.4, 0.6]).var().add(1e-5).sqrt().item()
    a0 = [v / std for v in (0.2, -0.4, 0.6)]
    # ∂y/∂x through sign surrogate max(0, 2 - 2|a0|) and the (non-detached) std: compare to autograd
    xt = torch.tensor([[0.2, -0.4, 0.6]], requires_grad=True, dtype=torch.float64)
    a = xt / torch.sqrt(xt.var() + 1e-5)
    surrogate = 2 * a.clamp(-1, 1) - a.clamp(-1, 1) * a.clamp(-1, 1).abs()
    wb = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    (surrogate * wb).sum().backward()
    assert x.grad[0].tolist() == pytest.approx(xt.grad[0].tolist(), abs=1e-5)
    assert abs(a0[0]) < 1  # the window widened: without normalisation 0.2 has derivative 1.6
    layer.eval()
    x2 = torch.tensor([[0.2, -0.4, 0.6]], requires_grad=True)
    layer(x2).sum().backward()
    close(x2.grad[0].tolist(), [1.6, -1.2, 0.8], tol=1e-6)


def test_fda_gradient_and_noise_only_in_training():
    layer = linear("fda", noise_adaptation=False)
    x = torch.tensor([[0.0, 0.5, 1.5]], requires_grad=True)
    layer(x).sum().backward()
    omega, n = 0.1, 9
    def d(v):
        if abs(v) > 1:
            return 0.0
        return 4 * omega / math.pi * sum(math.cos((2 * i + 1) * omega * v) for i in range(n + 1))
    expected = [MEAN_ABS_W * s * d(v) for s, v in zip((1, -1, 1), (0.0, 0.5, 1.5))]
    close(x.grad[0].tolist(), expected, tol=1e-5)
    close(d(0.0), 4 * 0.1 / math.pi * 10)

    noisy = BinaryLinear(3, 2, method="fda")
    assert any(n.startswith("input_noise") for n, _ in noisy.named_parameters())
    noisy.train()
    xin = torch.randn(4, 3)
    out_train = noisy(xin)
    noisy.eval()
    out_eval = noisy(xin)
    assert not torch.allclose(out_train, out_eval)  # α·NA added in training only
    wq = noisy.method.quantize_weight(noisy, noisy.weight)
    assert torch.equal(wq.abs(), noisy.weight.abs().mean(1, keepdim=True).expand_as(wq))


@pytest.mark.parametrize(
    "epoch,terms,alpha",
    [(0, 9, 0.05 * (1 + math.cos(math.pi * 0.1))), (5, 13, 0.05 * (1 + math.cos(0.6 * math.pi))), (9, 17, 0.0)],
)
def test_fda_schedule(epoch, terms, alpha):
    layer = linear("fda")
    layer.schedule_step(epoch, 10)
    assert int(layer.fda_terms) == terms
    assert layer.fda_alpha.item() == pytest.approx(alpha, abs=1e-7)


@pytest.mark.parametrize("epoch,tau", [(0, 0.85), (5, 0.9028558), (10, 0.99)])
def test_recu_schedule(epoch, tau):
    layer = linear("recu")
    layer.schedule_step(epoch, 10)
    assert layer.tau.item() == pytest.approx(tau, abs=1e-6)
