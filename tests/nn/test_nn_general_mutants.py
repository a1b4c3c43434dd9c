"""nn code that the tests mapped to src/onebit/nn did not execute: ReActNet's shifts and RPReLU with the
features on the last dimension (a transformer's tokens, a channels-last map), and a binary layer's
feature counts (issue 21: found with line coverage of the mapped tests; each test fails on a one-line
bug of the lines it names)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onebit.nn import BinaryConv1d, BinaryConv2d, BinaryLinear
from onebit.nn.blocks import LearnableBias, RPReLU, RSign


def _filled(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (2, 5)])
def test_learnable_bias_with_features_last_adds_along_the_last_dim(shape):
    bias = _filled(LearnableBias(5, features_last=True))
    x = torch.randn(shape)
    torch.testing.assert_close(bias(x), x + bias.bias.detach(), rtol=0, atol=0)


def test_learnable_bias_adds_per_channel_on_a_vector_and_a_channels_first_map():
    bias = _filled(LearnableBias(3))
    v, x = torch.randn(4, 3), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(bias(v), v + bias.bias.detach(), rtol=0, atol=0)
    torch.testing.assert_close(bias(x), x + bias.bias.detach().reshape(1, 3, 1, 1), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (2, 5)])
def test_rprelu_with_features_last_is_per_feature_prelu_of_the_shifted_input(shape):
    """RPReLU(x) = PReLU_c(x + γ_c) + ζ_c with c the last dim: each feature its own slope (the slope
    of channel c applied to feature c whatever the rank), values and the input gradient."""
    act = _filled(RPReLU(5, features_last=True))
    x = torch.randn(shape, requires_grad=True)
    gamma, slope, zeta = act.shift_in.bias.detach(), act.prelu.weight.detach(), act.shift_out.bias.detach()
    u = x.detach() + gamma
    expected = torch.where(u >= 0, u, slope * u) + zeta
    out = act(x)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    g = torch.randn(shape)
    out.backward(g)
    torch.testing.assert_close(x.grad, torch.where(u >= 0, g, slope * g), rtol=1e-6, atol=1e-6)


def test_rsign_with_features_last_thresholds_each_feature():
    sign = _filled(RSign(5, features_last=True))
    x = torch.randn(2, 3, 5)
    b = sign.shift.bias.detach()
    torch.testing.assert_close(sign(x), torch.where(x + b >= 0, 1.0, -1.0), rtol=0, atol=0)


def test_channels_first_rprelu_matches_torch_prelu():
    act = _filled(RPReLU(3))
    x = torch.randn(2, 3, 4, 4)
    expected = F.prelu(x + act.shift_in.bias.detach().reshape(1, 3, 1, 1), act.prelu.weight.detach()) \
        + act.shift_out.bias.detach().reshape(1, 3, 1, 1)
    torch.testing.assert_close(act(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("layer", "counts"), [
    (lambda: BinaryLinear(5, 3), (5, 3)),
    (lambda: BinaryConv2d(4, 6, 3, groups=2), (4, 6)),
    (lambda: BinaryConv1d(6, 9, 3, groups=3), (6, 9)),
    (lambda: BinaryConv2d(2, 7, (1, 3)), (2, 7)),
])
def test_a_binary_layer_counts_its_input_and_output_features(layer, counts):
    m = layer()
    assert (m.in_features_count, m.out_features_count) == counts


def test_the_summary_table_aligns_every_column_to_its_widest_entry():
    """summary.py Summary.__str__: each column is as wide as its widest entry (header or value), so every
    line of the table has the same length and each value starts under its header."""
    from onebit.nn.summary import summary

    model = torch.nn.Sequential(BinaryConv2d(3, 16, 3, padding=1), torch.nn.Flatten(),
                                BinaryLinear(16 * 8 * 8, 10, binarize_activations=False))
    text = str(summary(model, (3, 8, 8)))
    lines = text.splitlines()
    table = lines[:2 + 2]  # header, dashes, one row per layer
    dashes = table[1].split("  ")
    assert all(set(d) == {"-"} for d in dashes) and len(dashes) == 9
    assert len({len(line) for line in table}) == 1
    rows = [table[0], *table[2:]]
    starts = [0]
    for d in dashes[:-1]:
        starts.append(starts[-1] + len(d) + 2)
    for i, width in enumerate(len(d) for d in dashes):
        cells = [row[starts[i]:starts[i] + width].strip() for row in rows]
        assert width == max(len(c) for c in cells)
    assert rows[1].split()[:3] == ["0", "BinaryConv2d", "1/1"]
    assert rows[2].split()[:3] == ["2", "BinaryLinear", "1/32"]


def test_a_layer_with_real_weights_and_binary_activations_has_no_1bit_params():
    """summary.py: a binary layer that keeps real weights (binarize_weights=False) stores them as 32-bit
    parameters, none as 1-bit, and computes real MACs (no BOPs)."""
    from onebit.nn.summary import summary

    layer = BinaryConv2d(3, 4, 3, padding=1, method="bnn", binarize_weights=False)
    row = summary(torch.nn.Sequential(layer), (3, 5, 5)).layers[0]
    assert row.precision == "32/1"
    assert (row.params_1bit, row.params_32bit) == (0, 4 * 3 * 9 + 4)
    assert (row.macs_binary, row.macs_fp) == (0, 4 * 5 * 5 * 3 * 9)
    assert row.memory_bytes == (4 * 3 * 9 + 4) * 4


@pytest.mark.parametrize("conv", ["1d", "2d"])
def test_a_binary_conv_pads_with_zeros_by_default(conv):
    """layers.py: ``pad_value`` defaults to 0 — the binary input is zero-padded, as torch pads the real
    one (BNN's and XNOR-Net's reference convs) — for Conv1d as for Conv2d."""
    torch.manual_seed(0)
    if conv == "1d":
        layer, x, f = BinaryConv1d(3, 4, 3, padding=1, bias=False), torch.randn(2, 3, 7), F.conv1d
    else:
        layer, x, f = BinaryConv2d(3, 4, 3, padding=1, bias=False), torch.randn(2, 3, 5, 5), F.conv2d
    assert layer.pad_value == 0.0
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0)  # noqa: E731
    expected = f(sign(x), sign(layer.weight.detach()), padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-5)
