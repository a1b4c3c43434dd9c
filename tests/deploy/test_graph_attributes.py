"""A saved model file restores tensors the graph reads directly (``get_attr`` of a buffer, stored as
``attr/<name>``) as buffers of the restored module (a mutation survivor of tools/mutate.py)."""

import torch
from torch import nn

from onebit.deploy import export, load, save
from onebit.nn import BinaryConv2d


class Shifted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = BinaryConv2d(3, 4, 3, padding=1, method="bnn")
        self.register_buffer("shift", torch.linspace(-1.0, 1.0, 4).view(4, 1, 1))

    def forward(self, x):
        return self.conv(x) + self.shift


def test_saved_graph_restores_a_buffer_read_by_the_graph(tmp_path):
    torch.manual_seed(0)
    model = Shifted().eval()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        want = model(x)
    save(export(model), tmp_path / "shifted.onebit")
    restored = load(tmp_path / "shifted.onebit")
    assert any(name.endswith("shift") for name, _ in restored.named_buffers())
    torch.testing.assert_close(restored(x), want, rtol=1e-4, atol=1e-4)
