"""The Fourier surrogate's gradient (FDA, Xu et al., NeurIPS 2021, Eq. 5's derivative
``g·(4ω/π)·Σ_{i=0..n} cos((2i+1)ωx)`` on ``|x| ≤ 1``) is right on both sides of the native kernel's range
(ω < π and 2(n+1)ω ≤ 8192; beyond it the kernel's closed form loses accuracy, so the torch formula runs):
checked against the sum written out in float64 (issue 21, found by a single-file mutation sample of
functional.py, seed 4002: the guard's ``terms + 1`` → ``terms - 1`` survived)."""

from __future__ import annotations

import math

import pytest
import torch

from onebit.methods.fda import noisy_fourier_sign
from onebit.methods.functional import sign_fourier

#: (ω, n): inside the range, at its edges (2·1365·3 = 8190 ≤ 8192 = 2·1366·ω < 8192.25 < 8196 = 2·1366·3;
#: ω = π), outside it. (The kernel is off by ~2e-3 relative from 2(n+1)ω = 8192.25 on.)
CASES = [(1.0, 5), (3.0, 1364), (8192 / 2732, 1365), (8192.25 / 2732, 1365), (3.0, 1365), (3.0, 1366),
         (math.pi, 10), (3.5, 4)]


def _reference(x: torch.Tensor, grad: torch.Tensor, terms: int, omega: float) -> torch.Tensor:
    xd = x.double()
    total = torch.zeros_like(xd)
    for i in range(terms + 1):
        total += torch.cos((2 * i + 1) * omega * xd)
    return grad.double() * total * (4 * omega / math.pi) * (xd.abs() <= 1)


def _input():
    x = torch.cat([torch.linspace(-1.0, 1.0, 801), torch.tensor([-1.5, 1.25, 0.0])])
    grad = torch.linspace(0.5, 1.5, x.numel())
    return x, grad


def _assert_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize(("omega", "terms"), CASES)
def test_sign_fourier_gradient_on_both_sides_of_the_native_range(omega, terms):
    x, grad = _input()
    leaf = x.clone().requires_grad_(True)
    out = sign_fourier(leaf, terms, omega)
    assert torch.equal(out.detach(), torch.where(x >= 0, 1.0, -1.0))
    out.backward(grad)
    _assert_matches(leaf.grad, _reference(x, grad, terms, omega))


@pytest.mark.parametrize(("omega", "terms"), CASES)
def test_fda_noisy_fourier_sign_gradient_on_both_sides_of_the_native_range(omega, terms):
    """With α = 0 the noise adaptation adds nothing: the input's gradient is the Fourier surrogate's."""
    x, grad = _input()
    x, grad = x.reshape(4, -1)[:, :200].contiguous(), grad.reshape(4, -1)[:, :200].contiguous()
    leaf = x.clone().requires_grad_(True)
    h = torch.zeros_like(x, requires_grad=True)
    out = noisy_fourier_sign(leaf, h, torch.tensor(0.0), terms, omega)
    out.backward(grad)
    _assert_matches(leaf.grad, _reference(x, grad, terms, omega))
