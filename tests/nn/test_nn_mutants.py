"""nn behaviour that no other test reached (survivors of tools/mutate.py's fresh samples)."""

from __future__ import annotations

from torch import nn

import onebit
from onebit.nn import BinaryLinear


def test_summary_reads_the_models_own_input_shape():
    """summary(model) without input_shape uses the model's ``input_shape`` attribute (the zoo sets it)."""
    net = nn.Sequential(BinaryLinear(4, 3, method="bnn"), nn.ReLU(), nn.Linear(3, 2))
    net.input_shape = (4,)
    assert onebit.summary(net).totals == onebit.summary(net, (4,)).totals
    assert onebit.summary(net).totals["params_1bit"] == 12


def test_rsign_thresholds_each_channel_of_an_image_by_default():
    """blocks.py `features_last: bool = False` in RSign (mutant: `True`, seed-37 sample): ReActNet's RSign
    on an (N, C, H, W) image adds each channel's threshold along dim 1, so ``sign(x + b_c)``; its
    gradient is ApproxSign ``max(0, 2 − 2|x + b_c|)`` (Eq. 2), summed per channel for b. W = C = 3, so a
    threshold spread over the width would not even fail on the shape."""
    import torch

    from onebit.nn import RSign

    block = RSign(3)
    with torch.no_grad():
        block.shift.bias.copy_(torch.tensor([-0.5, 0.1, 0.7]))
    x = torch.randn(2, 3, 4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g = torch.randn(2, 3, 4, 3, generator=torch.Generator().manual_seed(1))
    y = block(x)
    shifted = x.detach() + block.shift.bias.detach().view(1, 3, 1, 1)
    assert torch.equal(y, torch.where(shifted >= 0, 1.0, -1.0))
    y.backward(g)
    approx = g * (2 - 2 * shifted.abs()).clamp(min=0)
    torch.testing.assert_close(x.grad, approx, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(block.shift.bias.grad, approx.sum((0, 2, 3)), rtol=1e-6, atol=1e-6)


def test_same_padding_uneven_in_height_only_is_padded_explicitly():
    """layers.py `left, right = pads[0::2], pads[1::2]` (mutant: `pads[0::3]`, seed-37 sample): a 4x3
    kernel with padding="same" pads the height unevenly (1 above, 2 below) and the width evenly, so the
    layer must pad explicitly; the output keeps the input's size and equals torch's "same" convolution
    of the binary input and weights."""
    import torch
    import torch.nn.functional as F

    from onebit.nn import BinaryConv2d

    layer = BinaryConv2d(2, 3, (4, 3), padding="same", method="bnn")
    x = torch.randn(2, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0)  # noqa: E731
    want = F.conv2d(F.pad(sign(x), (1, 1, 1, 2)), sign(layer.weight.detach()), layer.bias)  # torch's "same"
    with torch.no_grad():
        got = layer(x)
    assert got.shape == (2, 3, 5, 6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_layers_repr_names_only_the_settings_that_differ_from_the_default():
    """layers.py extra_repr `pad_value != 0.0` (mutant: `== 0.0`, seed-41 sample): printing a model shows a
    layer's ±1 padding and its full-precision weights/activations, and nothing for the defaults."""
    from onebit.nn import BinaryConv2d, BinaryLinear

    assert repr(BinaryConv2d(3, 4, 3, padding=1, method="bnn")).endswith("padding=(1, 1), method=bnn())")
    assert repr(BinaryConv2d(3, 4, 3, padding=1, method="bnn", pad_value=1.0)).endswith("method=bnn(), pad_value=1)")
    assert repr(BinaryConv2d(3, 4, 3, padding=1, method="bnn", pad_value=-1.0)).endswith("pad_value=-1)")
    assert repr(BinaryLinear(3, 4, method="xnor")).endswith("bias=True, method=xnor())")
    assert repr(BinaryLinear(3, 4, method="xnor", binarize_weights=False, binarize_activations=False)).endswith(
        "method=xnor(), binarize_weights=False, binarize_activations=False)")
    assert "binarize_weights" not in repr(BinaryLinear(3, 4, method="xnor", binarize_activations=False))
