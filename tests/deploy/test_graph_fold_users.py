"""Export folds a BatchNorm (and then an activation) into a binary layer's epilogue only when it is the
*only* reader of that layer's output. A residual branch that reads the pre-BN value (or the pre-
activation value) must still get it: folding there would hand it the folded value instead."""

from __future__ import annotations

import pytest
import torch
from deploy_probe import randomize_norms
from torch import nn

from onebit.deploy import export
from onebit.nn import BinaryConv2d


class PreNormBranch(nn.Module):
    """conv → BN → Hardtanh, plus a branch that reads the conv's output before BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d(4, 4, 3, padding=1, method="xnor")
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Hardtanh()

    def forward(self, x):
        y = self.conv(x)
        return self.act(self.bn(y)) + 0.5 * y


class PreActivationBranch(nn.Module):
    """conv → BN → PReLU, plus a branch that reads the BN's output before the activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d(4, 4, 3, padding=1, method="reactnet")
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.PReLU(4)

    def forward(self, x):
        z = self.bn(self.conv(x))
        return self.act(z) - z


class SingleUser(nn.Module):
    """The plain chain, where BN and the activation must be folded (the positive control)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d(4, 4, 3, padding=1, method="xnor")
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Hardtanh()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def exported(model):
    torch.manual_seed(0)
    randomize_norms(model)
    model.eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        want = model(x)
    packed = export(model)
    return packed, packed(x), want


@pytest.mark.parametrize("model", [PreNormBranch, PreActivationBranch])
def test_a_value_with_several_readers_is_not_folded(model):
    packed, got, want = exported(model())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    kept = {type(m) for m in packed.net.modules()}
    # the branch's reader keeps its module: the BN (pre-BN branch) or the activation (pre-activation)
    assert (nn.BatchNorm2d if model is PreNormBranch else nn.PReLU) in kept


def test_a_single_reader_is_folded():
    packed, got, want = exported(SingleUser())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    kept = {type(m) for m in packed.net.modules()}
    assert nn.BatchNorm2d not in kept and nn.Hardtanh not in kept
