"""A saved model file restores the graph exactly, including what the other round-trip tests' models
never contain (found by tools/mutate.py): tensor-method calls (``x.clamp``, ``x.flatten``), a
non-finite constant argument (stored as ``{"float": "-inf"}`` in the JSON graph) and a binary conv with
different padding along height and width."""

import math

import torch
from deploy_probe import randomize_norms
from torch import nn

from onebit.deploy import export, load, save
from onebit.nn import BinaryConv2d


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d(3, 8, 3, padding=(1, 2), method="reactnet")
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 6 * 9, 4)

    def forward(self, x):
        y = self.bn(self.conv(x)).clamp(-math.inf, 0.5)
        return self.head(y.flatten(1))


def test_saved_graph_restores_methods_infinite_constants_and_unequal_padding(tmp_path):
    torch.manual_seed(0)
    model = Net()
    randomize_norms(model)
    model.eval()
    x = torch.randn(2, 3, 6, 7)
    with torch.no_grad():
        want = model(x)
    packed = export(model)
    save(packed, tmp_path / "net.onebit")
    restored = load(tmp_path / "net.onebit")
    scale = want.abs().max().item()
    torch.testing.assert_close(packed(x), want, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(restored(x), want, rtol=1e-4, atol=1e-4 * scale)
