"""Long reductions on every kernel path (portable included), with *worst-case* sign patterns.

Random ±1 data almost never fills a popcount accumulator: a byte counter of the portable kernel's
SWAR path overflows only if all 8 bits of one byte mismatch at every one of 32 steps (probability
2^-256 on random data). So the operands here make some output channels mismatch (or match) at every
bit of every step: the weight row of channel 0 is the negated input pattern, channel 1 the input
pattern itself; the others are random. Then every counter reaches its bound, and a flush that comes a
step late, a 16-bit segment a word too long or a carry-save group counted once too often changes the
output. Reductions cover every length around the SWAR / carry-save switch (3..72 words per output)
and the largest layers the model zoo builds (ResNet-18's 512-channel 3x3, ReActNet's 1024-channel
1x1, ViT-size 3072/4096-feature linears).
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

from onebit import _engine
from onebit.deploy import kernels as K


def _kernel_params():
    return [
        pytest.param(name, id=name, marks=[] if _engine.cpu_supports(i) else
                     [pytest.mark.skip(reason=f"this CPU lacks the ISA of the {name} kernel")])
        for i, name in enumerate(K.KERNELS)
    ]


@pytest.fixture(params=_kernel_params())
def kernel(request):
    K.set_kernel(request.param)
    yield request.param
    K.set_kernel(None)


def signs(*shape, gen):
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0)


def adversarial_rows(pattern, cout, gen):
    """Weight rows: −pattern (every bit mismatches), +pattern (every bit matches), then random."""
    rest = signs(cout - 2, *pattern.shape, gen=gen)
    return torch.cat([-pattern[None], pattern[None], rest])


LENGTHS = list(range(28, 50)) + [64, 72, 120, 121, 4096, 4097]


@cache
def linear_case(words):
    """Operands (packed once, shared by every kernel path) and the float64 reference."""
    g = torch.Generator().manual_seed(words)
    x = signs(2, 64 * words, gen=g)
    w = adversarial_rows(x[0], 3, g)
    return K.pack_activations(x), K.pack_weights(w), K.reference_binary_linear(x, w)


def test_linear_worst_case_every_length(kernel):
    """Linear layers: one step per 64-bit word, so every reduction length from 28 to 49 steps (all
    flush points of the byte counters, both sides of the SWAR / carry-save switch at 48), the
    ViT-size 3072 / 4096 features (48 / 64 words) and the 16-bit segment boundary at 4095 words."""
    for words in LENGTHS:
        x, w, ref = linear_case(words)
        y = K.binary_linear(x, w)
        assert torch.equal(y, ref), f"{words} words"
        assert y[0, 0].item() == -64 * words and y[0, 1].item() == 64 * words  # the extremes were reached


@pytest.mark.parametrize("cin,k,planes", [
    (128, 4, 1), (128, 4, 2),  # 4x4 taps x 2 words: 32 steps, one past the SWAR counters' 31
    (256, 3, 1), (320, 3, 1),  # 3x3 x 4 / 5 words: 36 / 45 steps (SWAR)
    (512, 3, 1), (512, 3, 2),  # ResNet-18 / VGG-small's largest: 3x3 x 8 words = 72 steps (carry-save)
    (1024, 1, 1),  # ReActNet-A's widest 1x1: 16 steps
    (192, 7, 1),  # 7x7 x 3 words = 147 steps: every carry-save group size and several flushes
])
def test_conv_worst_case_largest_shapes(kernel, cin, k, planes):
    """Convolutions whose input is one sign pattern per channel at every position, so the adversarial
    channels mismatch (or match) at every tap of every interior output; one plane, or two masked planes
    (the masked kernel variant, masks all-active on the first plane)."""
    x, w, ref, extreme = conv_case(cin, k, planes)
    y = K.binary_conv2d(x, w)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    assert bool((y[0, 0] == -extreme).all()) and bool((y[0, 1] == extreme).all())


@cache
def conv_case(cin, k, planes):
    g = torch.Generator().manual_seed(cin * 10 + k)
    pattern = signs(cin, gen=g)
    x = pattern.reshape(1, cin, 1, 1).expand(2, cin, k + 2, k + 1).clone()
    x[1] = signs(cin, k + 2, k + 1, gen=g)  # a second, random sample
    w = adversarial_rows(pattern.reshape(cin, 1, 1).expand(cin, k, k), 5, g)
    if planes == 1:
        return K.pack_activations(x), K.pack_weights(w), K.reference_binary_conv2d(x, w), cin * k * k
    ps = [w, signs(*w.shape, gen=g)]
    ms = [torch.ones_like(w), (torch.rand(*w.shape, generator=g) < 0.5).float()]
    ms[1][:2] = 1.0  # the adversarial channels count every bit on both planes
    ps[1][:2] = w[:2]
    sc = [torch.ones(w.shape[0]), torch.ones(w.shape[0])]
    ref = K.reference_binary_conv2d(x, ps, masks=ms, scales=sc)
    return K.pack_activations(x), K.pack_weight_planes(ps, ms, sc), ref, 2 * cin * k * k


def test_popcount_peak_checks_the_kernel_it_is_given():
    """popcount_peak(kernel=...) validates that name (not the active kernel's); None means the active one."""
    with pytest.raises(ValueError, match="nope"):
        K.popcount_peak(iterations=1000, kernel="nope")
    assert K.popcount_peak(iterations=1000) > 0
