"""Channel counts at and around one 64-bit word (64, 65, 128) on every path of the depthwise engine, where a
``q < nc`` → ``q <= nc`` bug in a per-word loop would touch one channel past the word only when the word is
full (nc == 64): several weight planes without masks (``planes_word``, no prepared plan), with masks, and one
plane (the prepared plan), float and bit outputs, each exact against the float64 reference (issue 21)."""

from __future__ import annotations

import pytest
import torch

from onebit import _engine
from onebit.deploy import kernels as K


def _kernels():
    return [pytest.param(name, marks=[] if _engine.cpu_supports(i) else
                         [pytest.mark.skip(reason=f"this CPU lacks the ISA of the {name} kernel")])
            for i, name in enumerate(K.KERNELS)]


@pytest.fixture(params=_kernels())
def kernel(request):
    K.set_kernel(request.param)
    yield request.param
    K.set_kernel(None)
    K.set_num_threads(None)


def _signs(*shape, gen):
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0)


def _exact(y, ref):
    if isinstance(y, K.PackedActivations):
        assert torch.equal(K.unpack_activations(y), ref)
        tail = y.channels % 64
        if tail:
            assert not bool((y.data[..., -1] >> tail).any()), "tail bits of the output must be zero"
    else:
        assert y.shape == ref.shape and torch.equal(y, ref)


_CASES: dict[tuple, tuple] = {}


def _case(c, planes, masked, output):
    """Inputs and the float64 reference outputs (one per pad value) of a case, made once for every kernel."""
    key = (c, planes, masked, output)
    if key not in _CASES:
        g = torch.Generator().manual_seed(c + 10 * planes + 100 * masked)
        x = _signs(2, c, 6, 7, gen=g)
        shape = (c, 1, 3, 3)
        ps = [_signs(*shape, gen=g) for _ in range(planes)]
        ms = [(torch.rand(*shape, generator=g) < 0.7).float() for _ in range(planes)] if masked else None
        sc = [torch.rand(c, generator=g) + 0.1 for _ in range(planes)]
        tr = K.OutputTransform(torch.randn(c, generator=g), torch.randn(c, generator=g), output=output,
                               threshold=torch.randn(c, generator=g) if output == "bits" else None)
        refs = {pv: K.reference_binary_conv2d(x, ps, masks=ms, scales=sc, groups=c, stride=1, padding=1,
                                              pad_value=pv, transform=tr) for pv in (-1, 0, 1)}
        _CASES[key] = (x, ps, ms, sc, tr, refs)
    return _CASES[key]


@pytest.mark.parametrize("c", [64, 65, 128])
@pytest.mark.parametrize("planes,masked", [(2, False), (3, False), (2, True), (1, False)])
@pytest.mark.parametrize("output", ["float", "bits"])
def test_depthwise_full_channel_words_exact(kernel, c, planes, masked, output):
    x, ps, ms, sc, tr, refs = _case(c, planes, masked, output)
    wp = K.pack_weight_planes(ps, ms, sc, groups=c)
    for threads in (1, 2):
        K.set_num_threads(threads)
        for pad_value, ref in refs.items():
            y = K.binary_conv2d(K.pack_activations(x), wp, groups=c, stride=1, padding=1, pad_value=pad_value,
                                transform=tr)
            _exact(y, ref)


@pytest.mark.parametrize("shape", [(0, 8, 5, 5), (1, 8, 0, 5), (1, 8, 5, 0)], ids=["no-samples", "no-rows", "no-cols"])
def test_an_empty_input_is_one_clear_error(shape):
    """kernels.py `if N * H * W == 0` (mutant: `(N / H) * W`, seed-1002 sample of kernels.py): an input
    without samples, rows or columns raises the ValueError that names it, never a ZeroDivisionError."""
    w = K.pack_weights(torch.ones(4, 8, 3, 3))
    with pytest.raises(ValueError, match=r"binary_conv2d: empty input of shape"):
        K.binary_conv2d(K.pack_activations(torch.ones(*shape)), w, padding=1)
