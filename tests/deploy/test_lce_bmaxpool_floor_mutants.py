"""LCE's bit-packed max-pool (``LceBMaxPool2d``) recognised where the pool's window does not tile its
input (issue 21: seed-83 survivor, ``_lce_nodes.py``'s ``(H - k) // s + 1`` written with ``/``): the pool's
VALID output size is a floor, so a 3-window at stride 2 over 8 pixels, or a 2-window at stride 2 over 9,
still runs on the bits. With true division those pools fell back to the float max-pool, which computes the
same numbers: only the operator the file chooses tells them apart, so the test reads it from the file."""

from __future__ import annotations

import pytest
import torch
from test_lce_bmaxpool_mutants import _model
from torch import nn

from onebit.deploy import lce

tflite = pytest.importorskip("tflite")
pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _op_names(buf: bytes) -> list[str]:
    """Each operator of the file's main graph by name: a custom op's code, a builtin's enum name."""
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    builtin = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        custom = code.CustomCode()
        names.append(custom.decode() if custom else builtin[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return names


@pytest.mark.parametrize(("kernel", "stride", "size"), [(3, 2, 8), (2, 2, 9), (3, 3, 8)])
def test_a_pool_that_does_not_tile_its_input_runs_on_the_bits(kernel, stride, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    model = _model(nn.MaxPool2d(kernel, stride=stride), x)
    buf = lce.to_lce_bytes(model, x)
    names = _op_names(buf)
    assert names.count("LceBMaxPool2d") == 1 and "MAX_POOL_2D" not in names, names
    with torch.no_grad():
        want = model(x)
    got = torch.from_numpy(lce.interpreter(buf).predict(x.permute(0, 2, 3, 1).numpy())[0])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
