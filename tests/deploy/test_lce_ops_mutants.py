"""LCE export of the full-precision operators next to the binary layers, run in LCE's interpreter and
compared with PyTorch (issue 21: single-file mutation samples of ``_lce_graph.py``/``_lce_nodes.py``
found one-line bugs in these translations that no test model reached).

Each model reaches the branches one test model alone would miss: every activation of the module table
(and the clamps that have a builtin of their own next to the ones that do not), convolutions whose
height and width differ in stride, padding and dilation, a depthwise convolution with a depth
multiplier, numbers on either side of ``-`` and ``/``, ``F.pad`` and ``torch.cat`` on each layout, an
adaptive pool to a divisor size, BatchNorm without affine parameters. Sizes differ on every axis
(batch, channels, height, width), so a value moved to the wrong axis cannot pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit.deploy import lce

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _run(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(PyTorch's output, LCE's output in torch's layout) of ``net`` on ``x``."""
    net.eval()
    with torch.no_grad():
        want = net(x)
    xin = x.permute(0, 2, 3, 1) if x.dim() == 4 else x
    got = torch.from_numpy(lce.interpreter(lce.to_lce_bytes(net, x)).predict(xin.numpy())[0])
    return want, got.permute(0, 3, 1, 2) if got.dim() == 4 else got  # an image output stays NHWC


def _check(net: nn.Module, x: torch.Tensor, rtol: float = 1e-5) -> None:
    want, got = _run(net, x)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= rtol * max(1.0, want.abs().max().item()), f"max abs diff {err:.3g}"


def _image(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class Activations(nn.Module):
    """One conv, then each activation on its own copy (scaled so every clamp's bounds are crossed),
    concatenated along channels."""

    def __init__(self, acts: list[nn.Module]):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.acts = nn.ModuleList(acts)

    def forward(self, x):
        y = self.conv(x) * 4.0
        return torch.cat([act(y) for act in self.acts], dim=1)


ACTIVATIONS = {
    "relu-family": [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(), nn.Hardtanh(0.0, 3.0), nn.Hardtanh(-2.0, 6.0),
                    nn.Hardtanh(-1.0, 2.0), nn.Hardtanh(-3.0, 1.0)],
    "smooth": [nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh")],
    "slopes": [nn.LeakyReLU(0.2), nn.LeakyReLU(0.05), nn.PReLU(5, init=0.3), nn.PReLU(init=0.1)],
}


@pytest.mark.parametrize("family", sorted(ACTIVATIONS))
def test_each_activation_matches_pytorch(family):
    """Hardtanh(0, 3) and (−2, 6) are neither ReLU6 nor RELU_N1_TO_1 (a clamp that tests one bound
    only would take them for one); LeakyReLU keeps its slope; GELU its approximation."""
    torch.manual_seed(0)
    net = Activations(ACTIVATIONS[family])
    with torch.no_grad():
        for m in net.acts:
            if isinstance(m, nn.PReLU) and m.weight.numel() > 1:
                m.weight.copy_(torch.linspace(0.05, 0.6, m.weight.numel()))
    _check(net, _image(2, 3, 5, 4))


class Functional(nn.Module):
    """The functional spellings: F.relu, F.hardtanh (positional and keyword bounds), torch.relu, and the
    aten hardtanh with positional bounds (none, one or both)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x) * 3.0
        # (fx records F.hardtanh's bounds as keywords; the aten function keeps them positional)
        return torch.cat([F.relu(y), F.hardtanh(y, -0.5, 2.0), F.hardtanh(y, min_val=-2.0, max_val=0.5),
                          F.hardtanh(y), torch.relu(y - 1.0), torch._C._nn.hardtanh(y, -0.5, 2.0),
                          torch._C._nn.hardtanh(y, -3.0),
                          torch._C._nn.hardtanh(y)], dim=1)


def test_functional_clamps_match_pytorch():
    torch.manual_seed(0)
    _check(Functional(), _image(2, 3, 4, 6))


@pytest.mark.parametrize("conv", [
    dict(stride=(2, 1), padding=(1, 2)),
    dict(stride=(1, 2), padding=(2, 0), dilation=(1, 2)),
    dict(stride=1, padding=(0, 1), dilation=(2, 1), bias=False),
    dict(kernel_size=(3, 1), stride=(1, 2), padding=(1, 0)),
])
def test_float_convolution_geometry_matches_pytorch(conv):
    """Stride, padding and dilation that differ between height and width, each read off its own axis."""
    torch.manual_seed(0)
    conv = {"kernel_size": 3, **conv}
    net = nn.Sequential(nn.Conv2d(3, 5, **conv), nn.Flatten(1), nn.LazyLinear(3))
    x = _image(2, 3, 7, 9)
    net(x)
    _check(net, x)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_convolution_matches_pytorch(multiplier):
    """groups = in_channels with 1 or 2 filters per channel (TFLite's depth multiplier), strided."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3 * multiplier, 3, stride=(1, 2), padding=1, groups=3),
                        nn.BatchNorm2d(3 * multiplier), nn.PReLU(3 * multiplier))
    with torch.no_grad():
        net[2].running_mean.uniform_(-1, 1)
        net[2].running_var.uniform_(0.5, 2)
        net[2].weight.uniform_(0.5, 1.5)
        net[2].bias.uniform_(-0.5, 0.5)
        net[3].weight.uniform_(0.05, 0.5)
    _check(net, _image(2, 2, 5, 6))


class Arithmetic(nn.Module):
    """Numbers on either side of each operator, a one-element constant tensor, tensor-tensor
    operators and broadcasting between images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("three", torch.tensor(3.0))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.conv(x)
        pos = self.sigmoid(y) + 0.5
        a = 1.5 - y
        b = 2.0 / pos
        c = 2.0 * y + 1.0
        d = y / 4.0 - 0.25
        e = y * self.three
        f = (y - a) * (b + c) / pos
        g = y + y.mean(dim=(2, 3), keepdim=True)
        return torch.cat([a, b, c, d, e, f, g], dim=1)


def test_number_and_tensor_arithmetic_matches_pytorch():
    """``1.5 - y`` is not ``y - 1.5`` and ``2 / y`` not ``y / 2``: the operand order of SUB and DIV."""
    torch.manual_seed(0)
    _check(Arithmetic(), _image(2, 3, 4, 5))


class PadsAndCats(nn.Module):
    """F.pad of an image (each side different, value positional or keyword) and of a vector; torch.cat
    along height, width (negative dim) and a vector's last dim."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 10, 6)

    def forward(self, x):
        y = self.conv(x)  # (N, 4, 4, 5)
        a = F.pad(y, (1, 2, 0, 1), "constant", 0.5)  # (N, 4, 5, 8)
        b = F.pad(y, (0, 3, 1, 0), value=-1.0)  # (N, 4, 5, 8)
        c = torch.cat([a, b], dim=2)  # (N, 4, 10, 8)
        d = torch.cat([c, F.pad(c, (0, 0, 0, 0))[:, :, :, :2]], dim=-1)  # (N, 4, 10, 10)
        d = d[:, :, :8]
        v = self.fc(d.flatten(1))
        return torch.cat([F.pad(v, (2, 1)), v], -1)


def test_pads_and_concatenations_match_pytorch():
    torch.manual_seed(0)
    _check(PadsAndCats(), _image(2, 3, 4, 5))


@pytest.mark.parametrize("size,hw", [((2, 3), (4, 9)), (1, (5, 3)), ((5, 3), (5, 3))])
def test_adaptive_average_pool_matches_pytorch(size, hw):
    """To a divisor size (an AVERAGE_POOL_2D whose window differs in height and width), to 1x1 (a
    MEAN) and to the input's own size (nothing)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(size), nn.Flatten(1), nn.LazyLinear(2))
    x = _image(2, 3, *hw)
    net(x)
    _check(net, x)


def test_batchnorm_without_affine_and_on_vectors_matches_pytorch():
    """BatchNorm2d without affine parameters (scale rsqrt(var + eps) alone) and BatchNorm1d on
    (N, F) vectors, both with trained-looking statistics and a non-default eps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False, eps=0.1), nn.Flatten(1),
                        nn.Linear(4 * 3 * 5, 6), nn.BatchNorm1d(6, eps=0.01))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.05, 0.5)
        net[4].weight.uniform_(0.5, 1.5)
        net[4].bias.uniform_(-0.5, 0.5)
    _check(net, _image(2, 3, 3, 5))


class Tokens(nn.Module):
    """(N, T, F) tokens: Linear, LayerNorm-free softmax over the last dim (positional -1 and dim=2),
    mean over tokens, and a vector Softmax."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.soft = nn.Softmax(dim=-1)
        self.soft2 = nn.Softmax(dim=2)
        self.head = nn.Linear(5, 4)
        self.soft1 = nn.Softmax(dim=1)

    def forward(self, x):
        y = self.fc(x) * 2.0
        z = self.soft(y) + self.soft2(y * 0.5)
        return self.soft1(self.head(z.mean(1)))


def test_softmax_and_token_means_match_pytorch():
    torch.manual_seed(0)
    _check(Tokens(), _image(2, 3, 6))
