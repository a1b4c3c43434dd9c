"""Every registered method's forward value and *all* its gradients (input, latent weight, every learnable
parameter: bias, α, RSign's threshold, XNOR-Net++'s Γ, FDA's noise-adaptation MLPs) against the method's
formula written out here, independently of ``onebit.methods`` (own sign, own surrogate derivatives, own
schedule formulas), in float64 at 1e-6 relative.

Which factors are detached is part of each formula: XNOR-Net's K and α, Bi-Real/ReActNet/DoReFa/FDA's
α, ReCU's Q_τ (the reference takes it with ``.item()``), IR-Net's power-of-two scale and PC++'s α get no
gradient; ReCU's and IR-Net's standardisations do. A method whose gradient differs from its reference
(one missing ``.detach()``, a clip window ``<`` for ``<=``) fails here even when every forward value agrees.
The tests use only the public layer API, so they hold for any implementation of the quantizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from onebit.methods import available
from onebit.nn import BinaryConv2d, BinaryLinear

DT = torch.float64
RTOL = 1e-6
ATOL = 1e-10  # exact zeros on one side (outside a clip window) against ~1e-17 rounding on the other


# -- the building blocks, written out -------------------------------------------------------------------
def sgn(x: torch.Tensor) -> torch.Tensor:
    """onebit's sign: +1 at 0 (a 1-bit kernel has no 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class Surrogate(torch.autograd.Function):
    """Forward ``value`` (a function of ``x`` computed outside), backward ``g · derivative(x)``."""

    @staticmethod
    def forward(ctx, x, value, derivative):
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return value.detach().clone()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.derivative(x), None, None


def quant(x, value, derivative):
    return Surrogate.apply(x, value, derivative)


def clip_d(x):  # BNN's clip STE, 1{|x| <= 1} (Hubara et al. Eq. 4; inclusive, as hardtanh)
    return (x.abs() <= 1).to(x.dtype)


def approx_sign_d(x):  # Bi-Real's ApproxSign derivative max(0, 2 - 2|x|)
    return (2 - 2 * x.abs()).clamp(min=0)


def identity_d(x):
    return torch.ones_like(x)


def fourier_d(terms, omega):  # FDA: (4ω/π) Σ_{i=0..n} cos((2i+1)ωx) on |x| <= 1, 0 outside
    def d(x):
        total = sum(torch.cos((2 * i + 1) * omega * x) for i in range(terms + 1))
        return 4 * omega / math.pi * total * (x.abs() <= 1).to(x.dtype)
    return d


def ede_d(k, t):  # IR-Net's EDE: k·t·(1 − tanh²(t·x))
    return lambda x: k * t * (1 - torch.tanh(t * x) ** 2)


def sign_swish(x, beta):  # BNN+'s SignSwish: 2σ(βx)[1 + βx(1 − σ(βx))] − 1
    s = torch.sigmoid(beta * x)
    return 2 * s * (1 + beta * x * (1 - s)) - 1


def sign_swish_d(beta):  # its derivative β[2 − βx·tanh(βx/2)] / [1 + cosh(βx)] (Darabi et al. Eq. 4)
    return lambda x: beta * (2 - beta * x * torch.tanh(beta * x / 2)) / (1 + torch.cosh(beta * x))


def out_channel_mean_abs(w):  # per-output-channel mean |W|, detached (XNOR-Net Eq. 6)
    return w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


# -- schedules, written out from the papers ---------------------------------------------------------------
def recu_tau(e, E, lo=0.85, hi=0.99):  # τ(e) = A·exp(e/E) + B, A = (τmax − τmin)/(ℯ − 1), B = τmin − A
    a = (hi - lo) / (math.e - 1)
    return a * math.exp(e / E) + lo - a


def irnet_t_k(e, E, t_min=1e-3, t_max=10.0):  # t = 10^(log t_min + (log t_max − log t_min)·e/E), k = max(1/t, 1)
    t = 10 ** (math.log10(t_min) + (math.log10(t_max) - math.log10(t_min)) * e / E)
    return t, max(1 / t, 1.0)


def fda_n_alpha(e, E):  # n = 9 + ⌊9e/E⌋, α = 0.05(1 + cos(π(e+1)/E))
    return 9 + math.floor(9 * e / E), 0.05 * (1 + math.cos(math.pi * (e + 1) / E))


def pcpp_mu(e, E, start, end, hard_epochs=1):  # linear from start (e=0) to end (e=E−hard−1), then sign
    annealing = E - hard_epochs
    if e >= annealing:
        return end, True
    return start + (end - start) * e / (annealing - 1), False


EPOCH, EPOCHS = 2, 5  # the schedule point every scheduled method is tested at (not its initial state)


# -- the layer under test and the reference's operator ---------------------------------------------------
def make_layer(kind, method, epoch=EPOCH, **options):
    torch.manual_seed(0)
    if kind == "conv":
        layer = BinaryConv2d(3, 4, 3, padding=1, dtype=DT, method=method, **options)
        x = torch.randn(2, 3, 5, 5, dtype=DT)
    else:
        layer = BinaryLinear(6, 4, dtype=DT, method=method, **options)
        x = torch.randn(2, 3, 6, dtype=DT)
    layer(x)  # materialises XNOR-Net++'s lazily sized Γ
    with torch.no_grad():
        w = layer.weight
        w.copy_(torch.randn_like(w) * 0.7)
        # clip-window boundaries and sign(0) on both operands
        w.view(-1)[:4] = torch.tensor([1.0, -1.0, 0.0, 0.5], dtype=DT)
        x.view(-1)[:4] = torch.tensor([1.0, -1.0, 0.0, -0.5], dtype=DT)
        for name, p in layer.named_parameters():
            if name != "weight" and "noise" not in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.startswith(("alpha", "gamma")) else 0.0))
    layer.schedule_step(epoch, EPOCHS)
    layer.test_epoch = epoch  # the schedule point the reference formulas are evaluated at
    return layer, x


def features_dims(layer, x):
    return (x.dim() - 1,) if isinstance(layer, BinaryLinear) else tuple(range(1, x.dim()))


def channel(layer, v, ndim):
    return v if isinstance(layer, BinaryLinear) else v.reshape((1, -1) + (1,) * (ndim - 2))


def operator(layer, xq, wq):
    return F.linear(xq, wq) if isinstance(layer, BinaryLinear) else F.conv2d(xq, wq, padding=1)


def with_bias(layer, y):
    return y + channel(layer, layer.bias, y.dim())


def per_sample_std(layer, x):  # ReCU/BiPer's training-time a / sqrt(var + 1e-5), unbiased variance
    return x / torch.sqrt(x.var(dim=features_dims(layer, x), keepdim=True, unbiased=True) + 1e-5)


# -- the reference formula of every method ---------------------------------------------------------------
def ref_bnn(layer, x):
    return with_bias(layer, operator(layer, quant(x, sgn(x), clip_d), quant(layer.weight, sgn(layer.weight), clip_d)))


def scaled_clip_weight(w):  # α·sign(W), α detached, clip-STE not multiplied by α
    return quant(w, out_channel_mean_abs(w) * sgn(w), clip_d)


def ref_xnor(layer, x):
    k = x.detach().abs().mean(dim=features_dims(layer, x), keepdim=True)
    return with_bias(layer, operator(layer, quant(x, k * sgn(x), clip_d), scaled_clip_weight(layer.weight)))


def ref_dorefa(layer, x):
    return with_bias(layer, operator(layer, quant(x, sgn(x), clip_d), scaled_clip_weight(layer.weight)))


def ref_bireal(layer, x):
    return with_bias(layer, operator(layer, quant(x, sgn(x), approx_sign_d), scaled_clip_weight(layer.weight)))


def ref_reactnet(layer, x):
    shifted = x + channel(layer, layer.rsign_bias, x.dim())
    xq = quant(shifted, sgn(shifted), approx_sign_d)
    return with_bias(layer, operator(layer, xq, scaled_clip_weight(layer.weight)))


def ref_xnorpp(layer, x):
    w = layer.weight
    y = operator(layer, quant(x, sgn(x), clip_d), quant(w, sgn(w), clip_d)) * channel(layer, layer.gamma_o, 4)
    if not isinstance(layer, BinaryLinear):
        y = y * layer.gamma_h.reshape(1, 1, -1, 1) * layer.gamma_w.reshape(1, 1, 1, -1)
    return with_bias(layer, y)


def recu_activation(layer, x):
    a0 = per_sample_std(layer, x) if layer.training else x
    return quant(a0, sgn(a0), approx_sign_d)


def ref_recu(layer, x):
    w = layer.weight
    dims = tuple(range(1, w.dim()))
    w0 = w - w.mean(dim=dims, keepdim=True)
    w1 = w0 / (torch.sqrt(w0.var(dim=dims, keepdim=True, unbiased=True) + 1e-5) / (2 * math.sqrt(2)))
    q_tau = (-w1.abs().mean() * math.log(2 - 2 * recu_tau(layer.test_epoch, EPOCHS))).item()  # the reference's .item()
    w2 = torch.clamp(w1, -q_tau, q_tau)
    y = operator(layer, recu_activation(layer, x), quant(w2, sgn(w2), identity_d))
    return with_bias(layer, y * channel(layer, layer.alpha, y.dim()))


def ref_biper(layer, x, omega=20.0, tau=0.037):
    wave = torch.sin(omega * layer.weight)
    wq = wave if layer.method.stage == 1 else quant(wave, sgn(wave), identity_d)
    y = operator(layer, recu_activation(layer, x), wq)
    loss = tau * torch.sin(omega * layer.weight).pow(2).mean()  # τ·mean(sin²(ωW)), the reference's loss_reg
    return with_bias(layer, y * channel(layer, layer.alpha, y.dim())), loss


def noise_adaptation(module, v):  # fc2(ReLU(fc1(v))) + 0.1·sin(v) along the last dim
    return F.relu(v @ module.fc1.weight.T) @ module.fc2.weight.T + 0.1 * torch.sin(v)


def ref_fda(layer, x, omega=0.1):
    n, alpha = fda_n_alpha(layer.test_epoch, EPOCHS)
    w = layer.weight
    xq = quant(x, sgn(x), fourier_d(n, omega))
    wq = quant(w, sgn(w), fourier_d(n, omega))
    if layer.training:
        if isinstance(layer, BinaryLinear):
            xq = xq + alpha * noise_adaptation(layer.input_noise, x)
        else:
            xq = xq + alpha * noise_adaptation(layer.input_noise, x.movedim(1, -1)).movedim(-1, 1)
        wq = wq + alpha * noise_adaptation(layer.weight_noise, w.reshape(w.shape[0], -1)).reshape(w.shape)
    return with_bias(layer, operator(layer, xq, wq * out_channel_mean_abs(w)))


def ref_irnet(layer, x):
    t, k = irnet_t_k(layer.test_epoch, EPOCHS)
    w = layer.weight
    rows = w.reshape(w.shape[0], -1)
    centred = rows - rows.mean(dim=1, keepdim=True)
    balanced = centred / centred.std(dim=1, keepdim=True, unbiased=True)
    scale = (2.0 ** torch.round(torch.log2(balanced.detach().abs().mean(dim=1)))).reshape(-1, *[1] * (w.dim() - 1))
    wq = quant(balanced, sgn(balanced), ede_d(k, t)).reshape(w.shape) * scale
    return with_bias(layer, operator(layer, quant(x, sgn(x), ede_d(k, t)), wq))


PCPP = {  # name: (mu range, F(u, μ, hard), B'(μ)) with F = P∘B and the gradient B'(u)
    "pcpp-bc": (None, lambda u, mu: sgn(u), lambda mu: identity_d),
    "pcpp-pc": ((0.0, 1.0), lambda u, mu: (u + mu * sgn(u)).clamp(-1, 1), lambda mu: identity_d),
    "pcpp-bnn": (None, lambda u, mu: sgn(u), lambda mu: clip_d),
    "pcpp-bnn+": (None, lambda u, mu: sgn(u), lambda mu: sign_swish_d(5.0)),
    "bnn++": ((1.0, 20.0), lambda u, mu: sign_swish(u, mu), lambda mu: sign_swish_d(mu)),
}


def ref_pcpp(layer, x):
    mu_range, forward, backward = PCPP[layer.method.name]
    mu, hard = pcpp_mu(layer.test_epoch, EPOCHS, *mu_range) if mu_range else (0.0, False)
    w = layer.weight
    alpha = out_channel_mean_abs(w)
    u = w / alpha
    value = sgn(u) if hard else forward(u.detach(), mu)
    wq = alpha * quant(u, value, backward(mu))  # ∂/∂W = g·B'(W/α): α detached cancels
    xq = quant(x, sgn(x), backward(mu)) if layer.binarize_activations else x
    return with_bias(layer, operator(layer, xq, wq))


def ref_hbnn(layer, x):
    # The forward value is the method's own residual binarization (hand-checked in test_hbnn.py); what is
    # written out here is the STE: no gradient through the scales or the bit map, g·1{|x| <= 1}.
    def hbnn_approx(rows):
        return layer.method.binarize_tensor(rows.detach()).approx

    w = layer.weight
    wq = quant(w, hbnn_approx(w.reshape(1, -1)).reshape(w.shape), clip_d)
    if layer.method.activations == "binary":
        xq = quant(x, sgn(x), clip_d)
    else:
        rows = x.reshape(-1, x.shape[-1]) if isinstance(layer, BinaryLinear) else x.reshape(x.shape[0], -1)
        xq = quant(x, hbnn_approx(rows).reshape(x.shape), clip_d)
    return with_bias(layer, operator(layer, xq, wq))


REFERENCES: dict[str, Callable] = {
    "bnn": ref_bnn, "xnor": ref_xnor, "dorefa": ref_dorefa, "bireal": ref_bireal, "reactnet": ref_reactnet,
    "xnorpp": ref_xnorpp, "recu": ref_recu, "biper": ref_biper, "fda": ref_fda, "irnet": ref_irnet,
    "hbnn": ref_hbnn, **{name: ref_pcpp for name in PCPP},
}


# -- the comparison --------------------------------------------------------------------------------------
def objective(y, loss):
    torch.manual_seed(1)
    g = torch.randn_like(y)  # a random upstream gradient, so every output position matters
    return (y * g).sum() + (0.0 if loss is None else loss)


def gradients(layer, x, forward):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    result = forward(x)
    y, loss = result if isinstance(result, tuple) else (result, None)
    objective(y, loss).backward()
    grads = {"input": x.grad}
    grads.update({name: p.grad for name, p in layer.named_parameters()})
    return y.detach(), grads


def check(layer, x):
    reference = REFERENCES[layer.method.name]
    y, got = gradients(layer, x, lambda v: (layer(v), layer.extra_loss()))
    y_ref, want = gradients(layer, x, lambda v: reference(layer, v))
    torch.testing.assert_close(y, y_ref, rtol=RTOL, atol=ATOL, msg="forward value")
    assert set(got) == set(want)
    for name in want:
        assert (got[name] is None) == (want[name] is None), f"{name}: gradient present in one, absent in the other"
        if want[name] is None:  # eval-mode FDA: the noise modules take no part
            continue
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_every_registered_method_has_a_reference_here():
    assert set(available()) == set(REFERENCES), "add the new method's formula to REFERENCES"


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_value_and_every_gradient_match_the_formula(method, kind):
    layer, x = make_layer(kind, method)
    check(layer, x)


@pytest.mark.parametrize("method", ["recu", "biper", "fda", "irnet", "xnor"])
def test_eval_mode_gradients(method):
    """Eval mode drops ReCU/BiPer's per-sample standardisation and FDA's noise terms."""
    layer, x = make_layer("conv", method)
    layer.eval()
    check(layer, x)


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("options", [
    {"method": "biper", "stage": 2},
    {"method": "hbnn", "activations": "hetero"},
    {"method": "pcpp-bnn+", "binarize_activations": True},
    {"method": "bnn++", "binarize_activations": True},
])
def test_method_variants(options, kind):
    options = dict(options)
    layer, x = make_layer(kind, options.pop("method"), **options)
    check(layer, x)


@pytest.mark.parametrize("method", ["bnn++", "pcpp-pc"])
def test_pcpp_hard_sign_at_the_end_of_the_schedule(method):
    layer, x = make_layer("conv", method, epoch=EPOCHS - 1)
    check(layer, x)


def test_recu_clamp_is_active_so_the_detached_bound_matters():
    """The fixture clamps some weights (otherwise Q_τ's detach would be untested)."""
    layer, _ = make_layer("conv", "recu")
    w = layer.weight.detach()
    dims = (1, 2, 3)
    w0 = w - w.mean(dim=dims, keepdim=True)
    w1 = w0 / (torch.sqrt(w0.var(dim=dims, keepdim=True) + 1e-5) / (2 * math.sqrt(2)))
    q_tau = -w1.abs().mean() * math.log(2 - 2 * recu_tau(layer.test_epoch, EPOCHS))
    assert (w1.abs() > q_tau).sum() >= 3


def test_irnet_scale_rounds_rather_than_floors():
    """mean|Ŵ| ≈ 0.8 for standardized weights: log2 ≈ −0.3 rounds to 0 (scale 1), floors to −1 (0.5)."""
    layer, x = make_layer("linear", "irnet")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.5, -0.5, 0.5, 1.5, 0.2, -0.2]] * 4, dtype=DT))
        layer.bias.zero_()
    balanced = layer.weight[0] - layer.weight[0].mean()
    balanced = balanced / balanced.std()
    assert 0.5 < math.log2(balanced.abs().mean().item()) + 1 < 1  # fractional part above 1/2 → rounds up
    # y = s·Σ sign(Ŵ_i)·sign(x_i) with sign(Ŵ) = (−, −, +, +, +, −) and sign(x) = (+, +, +, +, +, −): 2s, s = 1
    y = layer(torch.tensor([[2.0, 2.0, 2.0, 2.0, 2.0, -2.0]], dtype=DT))
    torch.testing.assert_close(y, torch.full((1, 4), 2.0, dtype=DT))


# -- option boundaries the mutation run found untested (tools/mutate.py survivors) -------------------------
def test_option_boundaries_are_inclusive_or_open_as_documented():
    from onebit.methods import get

    assert get("biper", omega=0.5).omega == 0.5  # ω only has to be > 0
    with pytest.raises(ValueError, match="omega"):
        get("biper", omega=0.0)
    for name in ("bnn++", "pcpp-pc", "pcpp-bc"):
        assert get(name, hard_epochs=0).hard_epochs == 0  # no final hard-sign epochs is allowed
        with pytest.raises(ValueError, match="hard_epochs"):
            get(name, hard_epochs=-1)
