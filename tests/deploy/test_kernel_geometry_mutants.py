"""The packed engine's geometry checks pad each axis by its own amount, and a depthwise layer takes a
latent real weight's sign (issue 21: single-file mutation sample 8001 of ``kernels.py``)."""

from __future__ import annotations

import pytest
import torch

from onebit.deploy import kernels as K


def _signs(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).sign()


@pytest.mark.parametrize("hw,padding,out_hw", [((1, 5), (1, 0), (1, 3)), ((5, 1), (0, 1), (3, 1))])
def test_a_kernel_fits_an_input_padded_only_along_its_short_axis(hw, padding, out_hw):
    """A 3x3 kernel over a one-row (one-column) input fits once that axis alone is padded by 1: the fit
    check of ``_Bound.run`` pads the height by ``padding[0]`` and the width by ``padding[1]``."""
    x = _signs(2, 70, *hw, seed=0)
    w = _signs(6, 70, 3, 3, seed=1)
    want = K.reference_binary_conv2d(x, w, padding=padding, pad_value=-1)
    got = K.binary_conv2d(K.pack_activations(x), K.pack_weights(w), padding=padding, pad_value=-1)
    assert tuple(got.shape[2:]) == out_hw
    assert torch.equal(got, want)


@pytest.mark.parametrize("hw,padding", [((1, 5), (0, 1)), ((5, 1), (1, 0))])
def test_padding_the_other_axis_does_not_make_a_kernel_fit(hw, padding):
    x = K.pack_activations(_signs(1, 8, *hw, seed=2))
    with pytest.raises(ValueError, match=r"kernel 3x3 does not fit the padded"):
        K.binary_conv2d(x, K.pack_weights(_signs(4, 8, 3, 3, seed=3)), padding=padding)


@pytest.mark.parametrize("masked", [False, True])
def test_depthwise_weights_pack_the_sign_of_latent_real_values(masked):
    """pack_weights(w, groups=C) takes ``w >= 0`` as +1 for real weights as well as for ±1 ones (the module
    convention): weights in [0, 1) are +1, so the layer equals the oracle on the weights' signs."""
    c = 70
    w = torch.rand(c, 1, 3, 3, generator=torch.Generator().manual_seed(4)) - 0.25  # three quarters in [0, 0.75)
    w[::3, :, 1] = 0.0  # sign(0) = +1
    x = _signs(2, c, 5, 4, seed=5)
    masks = [(torch.rand(c, 1, 3, 3, generator=torch.Generator().manual_seed(6)) > 0.3).float()] if masked else None
    packed = K.pack_weight_planes([w], masks, groups=c)
    assert torch.equal(packed.bits, K.pack_weight_planes([torch.where(w >= 0, 1.0, -1.0)], masks, groups=c).bits)
    want = K.reference_binary_conv2d(x, [w], padding=1, masks=masks, groups=c)
    assert torch.equal(K.binary_conv2d(K.pack_activations(x), packed, padding=1, groups=c), want)
