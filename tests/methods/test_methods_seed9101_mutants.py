"""Method code whose one-line bugs no earlier test noticed (issue 21; seed-83 honest sample and the
single-file hunting samples of seeds 9101 and up, helper M). Each test names the line it guards."""

from __future__ import annotations

import pytest
import torch

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
