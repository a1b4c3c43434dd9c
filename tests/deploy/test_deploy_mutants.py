"""Deployment behaviour that one-line mutants of src/onebit/deploy/ changed without a test failing
(tools/mutate.py, the seed-31 and seed-37 samples; see README's Development section)."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from onebit.deploy.onnx_export import run_onnx, to_onnx
from onebit.nn import BinaryLinear


class TwoInputs(nn.Module):
    """``binary(x) + y``: a model fed two tensors."""

    def __init__(self):
        super().__init__()
        self.binary = BinaryLinear(12, 5, method="xnor")

    def forward(self, x, y):
        return self.binary(x) + y


def test_every_input_of_an_onnx_file_is_named_and_takes_any_batch(tmp_path):
    """onnx_export.py `range(1, len(inputs))` (mutant: `range(len(inputs), 1)`, seed-31 sample): the
    second input is named ``input_1`` and, like the first, has a symbolic batch dimension, so the file
    runs on a batch size other than the example's."""
    torch.manual_seed(0)
    model = TwoInputs().eval()
    path = to_onnx(model, (torch.randn(2, 12), torch.randn(2, 5)), tmp_path / "two.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "input_1"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in graph.input)
    x, y = torch.randn(7, 12), torch.randn(7, 5)
    with torch.no_grad():
        want = model(x, y)
    (got,) = run_onnx(path, x, y)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5)
