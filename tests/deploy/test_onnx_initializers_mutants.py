"""A QONNX file's quantizer parameters are initializers (issue 21: single-file sample 7002 of
``onnx_export.py`` — not an honest sample — found ``_constants_to_initializers`` unchecked where QONNX
itself is not installed, which its own cleanup test needs).

QONNX reads a ``BipolarQuant``/``Quant`` node's scale, zero point and bit width with
``ModelWrapper.get_initializer``: a parameter that is the output of a ``Constant`` or ``Identity`` node
reads as None (a binary activation is then typed FLOAT32, not BIPOLAR). Checked here with ``onnx``
alone: every such input of every quantizer is an initializer of the graph, made by no node, and the
binary activations' scale is one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from test_onnx_export import conv_net, prepare

from onebit.deploy.onnx_export import QONNX_DOMAIN, to_onnx
from onebit.nn import BinaryConv2d


@pytest.mark.parametrize("method", ["bireal", "xnor"])
def test_every_quantizer_parameter_is_an_initializer(method, tmp_path):
    torch.manual_seed(10)
    x = torch.randn(2, 3, 8, 6)
    model = prepare(conv_net(), x, method)
    graph = onnx.load(str(to_onnx(model, x, tmp_path / "q.onnx", "qonnx"))).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    made_by_nodes = {out for node in graph.node for out in node.output}
    quantizers = [n for n in graph.node if n.domain == QONNX_DOMAIN]
    binary = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    assert binary and len([n for n in quantizers if n.op_type == "BipolarQuant"]) >= binary  # weights at least
    for node in quantizers:
        for name in node.input[1:]:
            assert name in initializers and name not in made_by_nodes, (node.op_type, name)
            assert np.all(np.isfinite(initializers[name]))
    # bipolar activations: scale one (BipolarQuant's second input), as QONNX needs to type them BIPOLAR
    acts = [n for n in quantizers if n.op_type == "BipolarQuant" and n.input[0] not in initializers]
    assert acts and all(float(initializers[n.input[1]]) == 1.0 for n in acts)
