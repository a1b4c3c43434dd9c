"""Method code that the tests mapped to src/onebit/methods (tests/methods, tests/nn/test_layers.py,
tests/nn/test_binarize.py) did not execute, or executed without checking its values: a two-stage
method's epoch split, BiPer's final stage, the quantizers only reachable through their public names, the
SignSwish presets' unfused weight quantizer, and the bits a method declares (issue 21, found with
coverage of the mapped tests; each test fails on a one-line bug of the lines it names)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from onebit.methods import method_class
from onebit.methods.base import FinalStage
from onebit.methods.biper import TAU_STAGE2
from onebit.methods.functional import clamp_ste, sample_dims
from onebit.methods.irnet import ede
from onebit.nn import BinaryConv2d, BinaryLinear
from onebit.nn.summary import summary


# -- base.py: FinalStage.epochs -------------------------------------------------------------------
@pytest.mark.parametrize(("total", "split"), [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (4, (3, 1)), (5, (3, 2)),
                                              (6, (4, 2)), (9, (6, 3)), (10, (7, 3)), (300, (200, 100))])
def test_final_stage_epochs_round_the_share_and_keep_one_epoch_each(total, split):
    """(first, final) = (max(1, E − last), last) with last = max(1, round(share·E)): a share of 1/3 of
    5 epochs rounds to 2 (not floor's 1), and a run too short for two stages still trains each one."""
    assert FinalStage({}, epoch_share=1 / 3, lr_factor=0.1).epochs(total) == split


def test_final_stage_epochs_at_other_shares():
    assert FinalStage({}, epoch_share=0.5, lr_factor=1.0).epochs(8) == (4, 4)
    assert FinalStage({}, epoch_share=0.75, lr_factor=1.0).epochs(8) == (2, 6)
    assert FinalStage({}, epoch_share=0.95, lr_factor=1.0).epochs(4) == (1, 4)  # the first stage keeps 1


# -- biper.py: the final stage of a stage-1 run ------------------------------------------------------
def test_biper_final_stage_is_stage_2_at_a_tenth_of_the_lr_for_a_third_of_the_epochs():
    biper = method_class("biper")
    for options in ({}, {"stage": 1}, {"stage": 1, "binarize_activations": False}):
        stage = biper.final_stage(options)
        assert stage is not None
        assert stage.options == {"stage": 2, "tau": TAU_STAGE2}
        assert stage.epoch_share == pytest.approx(1 / 3) and stage.lr_factor == pytest.approx(0.1)
        assert stage.epochs(9) == (6, 3)
    assert biper.final_stage({"stage": 2}) is None
    assert biper.final_stage({"stage": 2, "tau": 0.1}) is None


# -- functional.py: sample_dims, clamp_ste -----------------------------------------------------------
def test_sample_dims_are_the_features_of_one_sample():
    x = torch.zeros(2, 3, 4, 5)
    assert sample_dims(x, channels_last=False) == (1, 2, 3)
    assert sample_dims(x, channels_last=True) == (3,)
    assert sample_dims(torch.zeros(2, 7), channels_last=True) == (1,)
    assert sample_dims(torch.zeros(2, 7), channels_last=False) == (1,)
    assert sample_dims(torch.zeros(2, 3, 7), channels_last=True) == (2,)


def test_clamp_ste_is_sign_with_the_closed_clamp_gradient():
    """ReCU's weight quantizer: sign(clamp(x, −q, q)) = sign(x) (q > 0, sign(0) = +1), gradient
    g·1{−q ≤ x ≤ q} — the closed interval: x = ±q passes the gradient."""
    q = torch.tensor(0.5)
    x = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75], requires_grad=True)
    out = clamp_ste(x, q)
    assert torch.equal(out, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    g = torch.arange(1.0, 8.0)
    out.backward(g)
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]))


def test_clamp_ste_keeps_no_graph_through_its_bound():
    """The bound is detached (the reference takes Q_τ with ``.item()``): an output depends on the
    weights only, so with a learnable bound and constant input there is nothing to differentiate."""
    q = torch.tensor(0.5, requires_grad=True)
    out = clamp_ste(torch.tensor([-1.0, 0.2, 2.0]), q)
    assert not out.requires_grad
    x = torch.tensor([-1.0, 0.2, 2.0], requires_grad=True)
    clamp_ste(x, q * 2).sum().backward()
    assert q.grad is None and torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0]))


# -- irnet.py: ede ------------------------------------------------------------------------------------
def test_ede_is_sign_with_k_t_tanh_derivative():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.1, 1.5], dtype=torch.float64, requires_grad=True)
    k, t = 1.7, 2.5
    out = ede(x, k, t)
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    out.backward(g)
    expected = [gi * k * t * (1 - math.tanh(t * xi) ** 2) for gi, xi in zip(g.tolist(), x.detach().tolist())]
    assert x.grad.tolist() == pytest.approx(expected, rel=1e-6)


# -- proxconnect.py: the SignSwish presets' fused_weight agrees with their scaled_weight -------------
@pytest.mark.parametrize(("name", "hard"), [("pcpp-bnn+", False), ("pcpp-bnn+", True),
                                            ("bnn++", False), ("bnn++", True)])
def test_signswish_fused_weight_is_the_scaled_weight_without_a_scale(name, hard):
    """ProxConnect++'s weight quantizer is ``fused_weight(w/α)·α``; the SignSwish presets compute all
    of it at once (``scaled_weight``), and their ``fused_weight`` must be that quantizer at α = 1:
    the same values and the same gradient with respect to the weight."""
    method = method_class(name)()
    mu = torch.tensor(3.0)
    torch.manual_seed(0)
    w0 = torch.randn(4, 6) * 0.8
    w1, w2 = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    g = torch.randn(4, 6)
    a = method.fused_weight(w1, mu, hard)
    b = method.scaled_weight(w2, None, mu, hard)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)
    # the formulas in float64 (the float32 quantizers are within float rounding of them)
    beta = mu.double() if name == "bnn++" else torch.tensor(method.beta, dtype=torch.float64)
    bx = beta * w0.double()
    s = torch.sigmoid(bx)
    swish = 2 * s * (1 + bx * (1 - s)) - 1
    value = torch.where(swish >= 0, 1.0, -1.0).double() if (hard or name == "pcpp-bnn+") else swish
    torch.testing.assert_close(a.detach().double(), value, rtol=1e-5, atol=1e-6)
    deriv = beta * (2 - bx * torch.tanh(bx / 2)) / (1 + torch.cosh(bx))
    torch.testing.assert_close(w1.grad.double(), g.double() * deriv, rtol=1e-5, atol=1e-5)


# -- base.py: the bits of a one-plane method -----------------------------------------------------------
@pytest.mark.parametrize("name", ["bnn", "xnor", "irnet", "recu", "fda", "bireal"])
def test_a_one_plane_method_declares_one_bit_weights_and_activations(name):
    """Method.weight_bits/activation_bits: 1 bit per weight and per activation; the summary's precision,
    1-bit parameters and BOPs follow from them (BOPs = MACs · planes)."""
    layer = BinaryConv2d(3, 4, 3, padding=1, bias=False, method=name)
    assert layer.method.weight_bits(layer) == 1.0 and layer.method.activation_bits(layer) == 1.0
    row = summary(torch.nn.Sequential(layer), (3, 5, 5)).layers[0]
    assert row.precision == "1/1"
    assert row.params_1bit == 4 * 3 * 9
    assert row.macs_binary == 4 * 5 * 5 * 3 * 9
    lin = BinaryLinear(6, 2, method=name, binarize_activations=False)
    row = summary(torch.nn.Sequential(lin), (6,)).layers[0]
    assert row.precision == "1/32" and row.params_1bit == 12 and row.macs_binary == 0


# -- base.py: Option.allowed, the range an error message states ----------------------------------------
def test_an_option_error_states_its_range_with_one_bound_or_two():
    from onebit.methods.base import Option

    assert Option(1.0, "slope", low=0.0, low_open=True).allowed() == "a number in (0, inf]"
    assert Option(0.5, "share", high=1.0).allowed() == "a number in [-inf, 1]"
    assert Option(0.5, "share", low=0.0, high=1.0, high_open=True).allowed() == "a number in [0, 1)"
    assert Option("a", "kind", choices=("a", "b")).allowed() == "one of 'a', 'b'"
    assert Option(None, "free text").allowed() == "free text"
    with pytest.raises(ValueError, match=r"option beta=0 is out of range; allowed: a number in \(0, inf\]"):
        method_class("pcpp-bnn+")(beta=0)


# -- functional.py: which native kernels an engine offers --------------------------------------------------
_FLAGS = ("NATIVE_ACTIVATIONS", "_CLIP_CODE_KERNELS", "NATIVE_KERNELS", "_EDE_KERNEL")


def _functional_with(monkeypatch, engine):
    """A fresh copy of functional.py imported against ``engine`` as ``onebit._engine``."""
    import importlib.util

    import onebit
    import onebit.methods.functional as real

    monkeypatch.setattr(onebit, "_engine", engine, raising=False)
    spec = importlib.util.spec_from_file_location("onebit.methods._functional_probe", real.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return {flag: bool(getattr(module, flag)) for flag in _FLAGS}


@pytest.mark.parametrize(("features", "on"), [
    (None, set()),
    ((), set()),
    (("activation_sign",), {"NATIVE_ACTIVATIONS"}),
    (("clip_pack",), set()),  # the clip-STE code kernels count only with the activation kernels
    (("activation_sign", "clip_pack"), {"NATIVE_ACTIVATIONS", "_CLIP_CODE_KERNELS"}),
    (("standardize_rows",), {"NATIVE_KERNELS"}),
    (("ede_grad",), set()),  # likewise EDE's kernel with the row kernels
    (("standardize_rows", "ede_grad"), {"NATIVE_KERNELS", "_EDE_KERNEL"}),
])
def test_native_paths_follow_the_kernels_an_engine_has(monkeypatch, features, on):
    """An engine built before some kernels (or none: a source tree) keeps the torch path for the
    missing ones: each flag is set only when the engine has its kernels."""
    from types import SimpleNamespace

    engine = None if features is None else SimpleNamespace(**{name: object() for name in features})
    assert _functional_with(monkeypatch, engine) == {flag: flag in on for flag in _FLAGS}


def test_the_installed_engine_has_every_native_path(monkeypatch):
    import onebit._engine as engine

    assert _functional_with(monkeypatch, engine) == dict.fromkeys(_FLAGS, True)


# -- biper.py / recu.py: the inference output scale is a detached copy ----------------------------------
@pytest.mark.parametrize("name", ["biper", "recu"])
def test_the_inference_output_scale_is_a_detached_copy_of_alpha(name):
    """``output_scale_tensor`` hands the exporters the learned α as a constant: no gradient, and a copy
    (changing it does not change the layer)."""
    layer = BinaryConv2d(3, 4, 3, method=name)
    with torch.no_grad():
        layer.alpha.fill_(0.75)
    scale = layer.method.output_scale_tensor(layer)
    assert layer.alpha.requires_grad and not scale.requires_grad
    assert torch.equal(scale, layer.alpha.detach())
    scale.add_(1.0)
    assert torch.all(layer.alpha == 0.75)
