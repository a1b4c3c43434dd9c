"""XNOR-Net++'s native spatial-scale kernels (csrc/train_activations.cpp) on the layouts the fused
product's tests do not reach: an output plane large enough that spatial_scale_backward splits its
channels into several accumulator blocks (a partial last one too), and spatial_scale writing over the
product itself when its int16 copy is what backward keeps. The torch formulas are the oracle:
g·(h ⊗ w) and ((y·c)·h)·w bit for bit, Σ_n g·y (float products summed in double) within 1e-6."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import functional as fx

pytestmark = pytest.mark.skipif(not hasattr(fx._activation_engine, "spatial_scale_backward"),
                                reason="an engine built without the spatial-scale kernels")

# 5 channels of 100 x 100 = 10,000 positions: 3 channels per accumulator block (32,768 doubles), so
# blocks of 3 and 2 channels on one thread, and one block per thread on two.
SHAPE = (3, 5, 100, 100)


def _factors(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, generator=g).add_(0.5) for n in (SHAPE[1], SHAPE[2], SHAPE[3]))


def _integer_product(seed: int) -> torch.Tensor:
    """A product of ±1 terms: integers, as the int16-kept product is."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-300, 301, SHAPE, generator=g).float()


def _with_threads(threads: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kept", ["int16", "float"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_backward_over_several_channel_blocks_matches_torch(kept, threads):
    grad = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    prod = _integer_product(4) if kept == "int16" else torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    _, h, w = _factors(5)
    y = prod.to(torch.int16) if kept == "int16" else prod
    out, per_sample = _with_threads(threads, lambda: fx._native_spatial_grad(grad, y, h, w))
    torch.testing.assert_close(out, grad * (h.unsqueeze(1) * w), rtol=0, atol=0)
    expected = (grad * prod).double().sum(0).float()  # float products summed in double, as the kernel
    torch.testing.assert_close(per_sample, expected, rtol=1e-6, atol=0)


def test_the_forward_scales_the_product_in_place_when_its_int16_copy_is_kept():
    prod = _integer_product(6)
    c, h, w = _factors(7)
    expected = ((prod * c.reshape(-1, 1, 1)) * h.unsqueeze(1)) * w
    y = prod.clone()
    out, code = fx._native_spatial_scale("conv2d", y, c, h, w, True)
    assert torch.equal(code, prod.to(torch.int16))  # the copy taken before the scale
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if getattr(fx._activation_engine, "spatial_scale_in_place", False):
        assert out.data_ptr() == y.data_ptr()  # no second output-sized tensor


def test_the_forward_keeps_the_float_product_unscaled():
    prod = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    c, h, w = _factors(9)
    y = prod.clone()
    out, kept = fx._native_spatial_scale("conv2d", y, c, h, w, False)
    assert kept is y and torch.equal(y, prod)  # backward's y, untouched
    torch.testing.assert_close(out, ((prod * c.reshape(-1, 1, 1)) * h.unsqueeze(1)) * w, rtol=0, atol=0)
