"""Method code whose one-line bugs no earlier test noticed (issue 21; seed-83 honest sample and the
single-file hunting samples of seeds 9101 and up, helper M). Each test names the line it guards."""

from __future__ import annotations

import pytest
import torch

import onebit.methods
import onebit.methods.functional as fx

needs_kernels = pytest.mark.skipif(not fx.NATIVE_KERNELS, reason="needs the compiled engine's weight kernels")


class _CountingEngine:
    """The real engine, recording the names of the SignSwish kernels called through it."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def __getattr__(self, name):
        kernel = getattr(self.engine, name)
        if not name.startswith("swish_weight"):
            return kernel

        def counted(*args):
            self.calls.append(name)
            return kernel(*args)
        return counted


# -- functional.py: scaled_sign_swish takes the native kernel for a per-output-channel α --------------
@needs_kernels
@pytest.mark.parametrize("alpha_shape", [None, (4, 1), (4, 1, 1, 1)])
def test_scaled_sign_swish_runs_the_kernel_for_no_alpha_or_one_alpha_per_output_channel(monkeypatch, alpha_shape):
    """The torch path gives the same values within rounding, so only the calls tell that the kernel ran
    (its guard ``alpha.numel() == w.shape[0]`` turned into ``!=`` would send every real α to torch)."""
    engine = _CountingEngine(fx._engine)
    monkeypatch.setattr(fx, "_engine", engine)
    torch.manual_seed(0)
    w = torch.randn(4, 3, 2, 2) if alpha_shape and len(alpha_shape) == 4 else torch.randn(4, 6)
    w.requires_grad_(True)
    alpha = None if alpha_shape is None else w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    fx.scaled_sign_swish(w, alpha, 5.0, "swish").sum().backward()
    assert engine.calls == ["swish_weight", "swish_weight_backward"]


@needs_kernels
@pytest.mark.parametrize(("w_shape", "alpha_shape"), [((4, 6), (1, 6)), ((5,), None), ((5,), (5,))])
def test_scaled_sign_swish_leaves_a_mis_sized_alpha_or_a_1d_weight_to_torch(monkeypatch, w_shape, alpha_shape):
    """An α that is not one per output channel (here a per-input-column row) broadcasts in torch's
    formula, and a 1-D weight has no rows: the kernel reads one scale per row, so it takes neither."""
    engine = _CountingEngine(fx._engine)
    monkeypatch.setattr(fx, "_engine", engine)
    torch.manual_seed(0)
    w = torch.randn(w_shape)
    alpha = None if alpha_shape is None else torch.rand(alpha_shape) + 0.5
    u = w if alpha is None else w / alpha
    expected = fx.sign_swish_ste(u, 5.0, "swish") * (1.0 if alpha is None else alpha)
    torch.testing.assert_close(fx.scaled_sign_swish(w, alpha, 5.0, "swish"), expected)
    assert engine.calls == []


# -- hbnn.py: a mix and an average_bits that disagree by more than 1e-6 bits are refused ---------------
@pytest.mark.parametrize(("offset", "refused"), [(1.2e-6, True), (-1.2e-6, True), (0.8e-6, False), (-0.8e-6, False)])
def test_hbnn_mix_and_average_bits_agree_within_a_millionth_of_a_bit(offset, refused):
    """bits (1, 2) with the mix (½, ½) average 1.5 bits: an average_bits 1.2e-6 away is a second, different
    request (a one-line bug loosening the 1e-6 tolerance by half would accept it), 0.8e-6 is the same one."""
    def configure():
        return onebit.methods.get("hbnn", bits=(1, 2), mix=(0.5, 0.5), average_bits=1.5 + offset)
    if refused:
        with pytest.raises(ValueError, match="averages 1.5 bits but average_bits=1.5; give only one"):
            configure()
    else:
        assert configure().average_bits == 1.5 + offset


# -- functional.py: a shift with more dims than x, or an empty one, takes torch's formula ---------------
@pytest.mark.parametrize(("x_shape", "shift_shape"), [((3, 4), (1, 1, 4)), ((2, 3, 4), (1, 1, 3, 1)), ((3, 0), (0,))])
def test_reactnet_sign_with_a_shift_of_more_dims_or_none_left_is_torchs_broadcast(x_shape, shift_shape):
    """``sign(x + b)`` broadcasts to b's rank when b has more dims than x (the kernels' layout
    (outer, channels, inner) is x's, so they must not take it), and an empty b gives an empty result."""
    torch.manual_seed(0)
    x = torch.randn(x_shape)
    shift = torch.randn(shift_shape) * 0.5
    assert fx.native_sign(x, shift) is None
    out = fx.QuantizerCall(x, fx.ShiftedApproxSTE, (shift,)).apply()
    assert torch.equal(out, torch.where(x + shift >= 0, 1.0, -1.0))


# -- hbnn.py: a training forward does not build the bit planes it never reads ----------------------------
@pytest.mark.parametrize("conv", [False, True])
def test_hbnn_training_forward_skips_the_planes_of_weights_and_hetero_activations(monkeypatch, conv):
    """The quantizer reads a binarization's approximation (and ``within_one``) only; the planes
    ``sign(R_j)`` cost a pass per level and an int8-sized tensor each, so the native path is asked not to
    make them (``planes=False``) for the weight and the activations alike."""
    import onebit.methods.hbnn as hbnn
    from onebit.nn import BinaryConv2d, BinaryLinear

    if not hbnn._HBNN_KERNEL:
        pytest.skip("needs the compiled engine's HBNN kernel (the torch path makes the planes anyway)")

    def no_planes(*args):
        raise AssertionError("the planes were built for a training forward")
    monkeypatch.setattr(hbnn, "_planes_from_scales", no_planes)
    torch.manual_seed(0)
    options = {"method": "hbnn", "activations": "hetero", "average_bits": 2.0}
    layer = BinaryConv2d(3, 4, 3, padding=1, **options) if conv else BinaryLinear(12, 4, **options)
    x = torch.randn(2, 3, 5, 5) if conv else torch.randn(2, 12)
    layer(x.requires_grad_(True)).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    monkeypatch.undo()
    assert hbnn.HBNN(bits=(1, 2, 3), average_bits=2.0).binarize_tensor(x.detach().reshape(2, -1)).planes


# -- proxconnect.py: one annealing epoch is the last one, at μ_end ---------------------------------------
@pytest.mark.parametrize(("epochs", "hard_epochs"), [(1, 0), (3, 2)])
def test_pcpp_mu_with_a_single_annealing_epoch_is_mu_end(epochs, hard_epochs):
    """μ reaches ``mu_end`` at the last annealing epoch ``epochs − hard_epochs − 1``; with one annealing
    epoch that is epoch 0 itself (no division by ``annealing − 1 = 0``), the hard epochs after it."""
    from onebit.methods.proxconnect import pcpp_mu

    assert pcpp_mu(0, epochs, 0.2, 1.0, hard_epochs) == (1.0, False)
    assert [pcpp_mu(e, epochs, 0.2, 1.0, hard_epochs) for e in range(1, epochs + 1)] == [(1.0, True)] * epochs


# -- fda.py: the fused noise adaptation takes bias-free plain Linear layers and non-empty inputs only ------
def _fda_layer_output_and_grads(layer, x):
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.sum().backward()
    return out.detach(), x.grad, layer.weight.grad, layer.weight_noise.fc1.weight.grad


@pytest.mark.parametrize("where", ["weight", "input"])
def test_fda_noise_adaptation_with_a_biased_linear_keeps_its_bias(monkeypatch, where):
    """The fused kernel computes ``fc2(ReLU(fc1(t)))`` without biases; a NoiseAdaptation whose fc1 a user
    swapped for a biased Linear must take torch's path, which adds the bias (a large one here, so that
    dropping it would change the values, not only rounding)."""
    import onebit.methods.fda as fda
    from onebit.nn import BinaryLinear

    torch.manual_seed(2)
    layer = BinaryLinear(96, 5, bias=False, method="fda").train()
    na = layer.weight_noise if where == "weight" else layer.input_noise
    biased = torch.nn.Linear(96, na.fc1.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(na.fc1.weight)
        biased.bias.fill_(3.0)
    na.fc1 = biased
    x = torch.randn(7, 96)
    fused = _fda_layer_output_and_grads(layer, x)
    monkeypatch.setattr(fda, "_NA_KERNELS", False)
    torch_path = _fda_layer_output_and_grads(layer, x)
    for got, want in zip(fused, torch_path):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("method", onebit.methods.available())
def test_every_method_trains_on_an_empty_batch(method, conv):
    """An empty batch (a sharded or filtered loader's last one) gives an empty output and gradients of
    the input's shape; the kernels refuse an empty tensor (no data address), so the native paths must
    pass it to torch's formulas (FDA's fused value and the Fourier and EDE surrogate gradients did not)."""
    from onebit.nn import BinaryConv2d, BinaryLinear

    torch.manual_seed(3)
    layer = (BinaryConv2d(3, 4, 3, padding=1, method=method) if conv else BinaryLinear(12, 5, method=method)).train()
    x = torch.randn((0, 3, 5, 5) if conv else (0, 12), requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == ((0, 4, 5, 5) if conv else (0, 5)) and x.grad.shape == x.shape
