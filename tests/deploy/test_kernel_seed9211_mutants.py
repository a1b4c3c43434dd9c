"""Packing and input checks of the engine's Python side (``deploy/kernels.py``; issue 21: single-file
sample 9211, hunting, not an honest sample, on the fast kernel tests): a packed input whose channel
count disagrees with the ``in_channels`` given is refused (mutant: the fast path taken exactly when
``in_channels`` is given, skipping the check), and a ``None`` entry among the planes' scales means the
documented default 1 on the depthwise pack as on the dense one (mutant: 1.5 there)."""

from __future__ import annotations

import pytest
import torch

from onebit.deploy import kernels as K


def _signs(*shape: int, seed: int) -> torch.Tensor:
    return torch.where(torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.5, -1.0, 1.0)


def test_in_channels_that_disagree_with_the_packed_input_are_refused():
    x = K.pack_activations(_signs(1, 8, 4, 4, seed=0))
    w = K.pack_weights(_signs(4, 8, 3, 3, seed=1))
    with pytest.raises(ValueError, match="in_channels=16 but the packed input has 8"):
        K.binary_conv2d(x, w, in_channels=16, padding=1)
    assert torch.equal(K.binary_conv2d(x, w, in_channels=8, padding=1), K.binary_conv2d(x, w, padding=1))


@pytest.mark.parametrize("groups", [1, 6])
def test_a_none_scale_is_the_default_one(groups):
    planes = [_signs(6, 6 // groups, 3, 3, seed=2), _signs(6, 6 // groups, 3, 3, seed=3)]
    with_none = K.pack_weight_planes(planes, scales=[None, 0.5], groups=groups)
    with_one = K.pack_weight_planes(planes, scales=[1.0, 0.5], groups=groups)
    assert torch.equal(with_none.scales, with_one.scales)
    assert with_none.scales[0].tolist() == [1.0] * 6


@pytest.mark.parametrize("threshold", [0.75, "per-channel"])
def test_also_bits_packs_the_float_output_through_its_threshold(threshold):
    """The second output of ``also_bits`` is the next layer's packed input, bit = (y + t) < 0."""
    x = K.pack_activations(_signs(2, 8, 5, 5, seed=4))
    w = K.pack_weights(_signs(6, 8, 3, 3, seed=5))
    t = torch.linspace(-3.0, 3.0, 6) if threshold == "per-channel" else threshold
    y, bits = K.binary_conv2d(x, w, padding=1, also_bits=True, bits_threshold=t)
    want = K.pack_activations(y.contiguous(), torch.as_tensor(t, dtype=torch.float32).expand(6).contiguous())
    assert torch.equal(K.unpack_activations(bits), K.unpack_activations(want))
