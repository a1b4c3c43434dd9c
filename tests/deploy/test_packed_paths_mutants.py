"""The packed runtime (``onebit.deploy.export``, ``packed.py``) on the layer paths test_export.py does not
reach, against the eval-mode PyTorch model, and the same models through a saved file (issue 21):
binary and weight-only linear layers on (N, T, F) tokens (XNOR's K per token, the leading dims restored),
padding modes of 2-D binary and weight-only convs (the real input padded by its own amounts per axis),
a 1-D conv with XNOR's per-sample K, and geometry that differs between height and width."""

from __future__ import annotations

import pytest
import torch
from deploy_probe import finish_training
from test_onnx_paths_mutants import Tokens, _randomize, geometry_per_axis
from torch import nn

from onebit.deploy import export, load, save
from onebit.nn import BinaryConv1d, BinaryConv2d, BinaryLinear


def _compare(model: nn.Module, x: torch.Tensor, tmp_path) -> None:
    model.eval()
    with torch.no_grad():
        want = model(x)
    packed = export(model)
    assert packed.packed_layers()
    path = tmp_path / "m.onebit"
    save(packed, path)
    scale = want.abs().max().item()
    assert scale > 0
    for runtime in (packed, load(path)):
        with torch.no_grad():
            got = runtime(x)
        assert got.shape == want.shape
        err = (got - want).abs().max().item()
        assert err <= 1e-4 * scale, f"max abs diff {err:.3g}"


@pytest.mark.parametrize("method", ["xnor", "reactnet", "xnorpp", "pcpp-bc"])
def test_linear_layers_on_tokens(method, tmp_path):
    torch.manual_seed(0)
    model = Tokens(method)
    finish_training(model, method)
    _randomize(model)
    _compare(model, torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1)), tmp_path)


@pytest.mark.parametrize("method", ["reactnet", "pcpp-bc", "xnor", "bnn"])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_of_2d_convs(method, mode, tmp_path):
    """A padded binary conv whose output feeds only another binary conv: the execution plan may chain
    them (the first writes the second's sign bits), but the first must still pad its real input with
    its padding mode (a bug until issue 21's tests: the chained layer padded with its pad value)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1),
                          BinaryConv2d(5, 6, 3, stride=(1, 2), padding=(2, 1), padding_mode=mode, method=method),
                          nn.BatchNorm2d(6), nn.Hardtanh(),
                          BinaryConv2d(6, 4, 3, padding=1, method=method),  # may read the layer before as bits
                          nn.Flatten(1), nn.LazyLinear(3))
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    model(x)
    finish_training(model, method)
    _randomize(model)
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("method", ["xnor", "pcpp-bc", "bireal"])
def test_conv1d_with_a_padding_mode_and_stride(method, tmp_path):
    """The same for a 1-D conv (circular, stride 2) chained into another (padded with +1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 5, 3, padding=1),
                          BinaryConv1d(5, 7, 3, stride=2, padding=2, padding_mode="circular", method=method),
                          nn.BatchNorm1d(7), nn.PReLU(7),
                          BinaryConv1d(7, 4, 5, padding=1, method=method, pad_value=1.0 if method != "xnor" else 0.0),
                          nn.Flatten(1), nn.LazyLinear(3))
    x = torch.randn(3, 2, 13, generator=torch.Generator().manual_seed(1))
    x[1] *= 4.0
    model(x)
    finish_training(model, method)
    _randomize(model)
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("method", ["xnor", "bnn", "pcpp-bc"])
def test_geometry_per_axis(method, tmp_path):
    model, x = geometry_per_axis(method)
    finish_training(model, method)
    _randomize(model)
    _compare(model, x, tmp_path)


class Typed(nn.Module):
    """Graph arguments the model file stores: dtypes (of a softmax and of a sum), a non-finite float, a
    negative dim, keyword arguments."""

    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(3, 6, 3, padding=1, method="bnn")

    def forward(self, x):
        y = torch.clamp(self.conv(x), min=float("-inf"), max=2.0)
        s = torch.softmax(y, dim=-1, dtype=torch.float32) + y.sum(dim=1, keepdim=True, dtype=torch.float64).float()
        return s.permute(0, 2, 3, 1).flatten(-2)


def test_a_saved_graph_keeps_dtypes_and_special_floats(tmp_path):
    torch.manual_seed(0)
    packed = export(Typed().eval())
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    save(packed, tmp_path / "typed.onebit")
    want = packed(x)
    assert want.shape == (2, 4, 30)
    assert want.dtype == torch.float32
    torch.testing.assert_close(load(tmp_path / "typed.onebit")(x), want, rtol=0, atol=0)


class ChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = BinaryConv2d(3, 6, 3, padding=1, method="bnn")

    def forward(self, x):
        return self.conv(x).contiguous(memory_format=torch.channels_last)


def test_a_graph_argument_the_file_cannot_store_is_named(tmp_path):
    """A memory format (or any other value the file has no encoding for) is refused at save with one
    ExportError naming the value and its type."""
    from onebit.deploy import ExportError

    packed = export(ChannelsLast().eval())
    with pytest.raises(ExportError, match="argument torch.channels_last of type memory_format cannot be exported"):
        save(packed, tmp_path / "cl.onebit")
    assert not (tmp_path / "cl.onebit").exists()


class BroadcastResidual(nn.Module):
    """``act(bn(conv(y)) + r)`` where the residual ``r`` is a pooled (broadcast) form of ``y``: one row,
    one column or one pixel, as squeeze-and-excitation style blocks add; the fused residual pass must
    only take residuals of the conv's full output shape."""

    def __init__(self, stride, pool, kernel=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh())
        padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
        self.conv = BinaryConv2d(8, 8, kernel, stride=stride, padding=padding, method="bnn", pad_value=1.0)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.act = nn.Hardtanh()

    def forward(self, x):
        y = self.stem(x)
        return self.act(self.bn(self.conv(y)) + self.pool(y))


@pytest.mark.parametrize("hw,stride,pool", [
    ((3, 4), 2, (2, 1)), ((4, 3), 2, (1, 2)), ((3, 3), 2, (1, 1)), ((2, 4), (1, 2), (2, 1)),
    ((4, 2), (2, 1), (1, 2)), ((5, 4), (2, 1), (1, 4)), ((4, 5), (1, 2), (4, 1)), ((3, 2), 1, (3, 2)),
    ((4, 3), 2, (2, 1)), ((3, 4), 2, (1, 2)), ((5, 3), (4, 1), (2, 1)), ((3, 5), (1, 4), (1, 2)),
])
def test_residuals_that_broadcast(hw, stride, pool, tmp_path):
    torch.manual_seed(0)
    model = BroadcastResidual(stride, pool)
    _randomize(model)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("kernel,hw,pool", [(1, (3, 4), (3, 4)), (1, (3, 4), (3, 1)), (5, (4, 6), (1, 6)),
                                         ((3, 1), (3, 4), (1, 4)), ((1, 3), (4, 3), (4, 1)),
                                         (3, (6, 5), (1, 5)), ((3, 1), (4, 3), (4, 1)), ((1, 3), (3, 4), (1, 4))])
def test_residual_blocks_of_unpadded_and_wide_kernels(kernel, hw, pool, tmp_path):
    """A 1x1 (unpadded), a 5x5 (padded 2), a 3x1 and a 1x3 (padded in one axis only) binary conv in a
    residual block, full-shaped and broadcast residuals. In the last three, the broadcast residual has
    the shape an output size computed from the wrong weight axis would have (the 8 input channels as
    the kernel height; a 3x1 kernel's height as its width, or a 1x3's width as its height): only the
    true output shape may take the fused residual pass."""
    torch.manual_seed(0)
    model = BroadcastResidual(1, pool, kernel)
    _randomize(model)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    _compare(model, x, tmp_path)


@pytest.mark.parametrize("method", ["recu", "biper", "xnorpp"])
def test_weight_only_layers_with_a_learned_output_scale(method, tmp_path):
    """Binary weights on real activations (``binarize_activations=False``) with the method's learned
    per-channel output scale (ReCU's and BiPer's α, XNOR-Net++'s Γ of a linear layer; a conv's Γ also
    varies over positions): the packed weight-only layer folds a per-channel scale into its weight."""
    torch.manual_seed(0)
    model = nn.Sequential(BinaryConv2d(3, 6, 3, padding=1, method=method, binarize_activations=False),
                          nn.Hardtanh(), nn.Flatten(1),
                          BinaryLinear(6 * 5 * 4, 5, method=method, binarize_activations=False))
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    model(x)
    finish_training(model, method)
    _randomize(model)
    _compare(model, x, tmp_path)
