"""A ±1-padded XNOR-Net convolution on a batch of three (issue 21, single-file mutation sample 9105 of
nn/layers.py, helper M): the padded border, scaled by each sample's activation scale K, broadcast from a
one-sample template (``xq[:1, :1]`` → ``xq[:2, :1]`` survived: every tested batch had at most two samples)."""

from __future__ import annotations

import pytest
import torch

from onebit.nn import BinaryConv1d, BinaryConv2d


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
@pytest.mark.parametrize("conv", [BinaryConv1d, BinaryConv2d])
def test_a_scaled_padded_batch_equals_its_samples_one_at_a_time(conv, pad_value):
    torch.manual_seed(0)
    layer = conv(3, 4, 3, padding=1, method="xnor", pad_value=pad_value)
    x = torch.randn((3, 3, 6, 5) if conv is BinaryConv2d else (3, 3, 7))
    x[1] *= 4.0  # the samples' scales K differ, so each border must take its own
    assert layer.method.input_pad_scale(layer, x) is not None  # the scaled border's path
    batch = layer(x)
    one_at_a_time = torch.cat([layer(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, one_at_a_time, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("binary", "torch_layer"), [(BinaryConv1d, torch.nn.Conv1d), (BinaryConv2d, torch.nn.Conv2d),
                                                     ("BinaryLinear", torch.nn.Linear)])
def test_binary_layers_default_to_their_torch_layers_defaults(binary, torch_layer):
    """A drop-in replacement: every argument the binary layer shares with torch's layer has torch's
    default (BinaryConv1d's ``bias=True`` → ``False`` survived the sample: no test built one without
    passing ``bias``), and a layer built with the defaults has a bias like torch's."""
    import inspect

    import onebit.nn

    binary = getattr(onebit.nn, binary) if isinstance(binary, str) else binary
    ours, theirs = inspect.signature(binary.__init__).parameters, inspect.signature(torch_layer.__init__).parameters
    shared = [name for name in theirs if name in ours and name != "self"]
    assert len(shared) >= 5
    assert {n: ours[n].default for n in shared} == {n: theirs[n].default for n in shared}
    args = (3, 4) if torch_layer is torch.nn.Linear else (3, 4, 3)
    assert binary(*args).bias is not None
