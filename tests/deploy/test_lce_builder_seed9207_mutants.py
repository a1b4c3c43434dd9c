"""The TFLite writer's tensor names (issue 21: single-file sample 9207 of ``deploy/_tflite_builder.py``,
hunting, not an honest sample: ``const``'s ``name or f"c{i}"`` written ``name and f"c{i}"`` survived).
A constant given a name keeps it in the file, where tools such as a model viewer show it; an unnamed
constant is ``c<index>``, an unnamed activation ``t<index>``: no two tensors share a name."""

from __future__ import annotations

import numpy as np
import pytest

tflite = pytest.importorskip("tflite")


def test_constants_keep_their_names_in_the_file():
    from onebit.deploy._tflite_builder import ModelBuilder

    b = ModelBuilder()
    inp, out = b.tensor((1, 3)), b.tensor((1, 3), name="sum")
    bias = b.const(np.ones((1, 3), np.float32), name="bias")
    b.op("ADD", [inp, bias], [out], "AddOptions")
    b.op("MUL", [out, b.const(np.full((1, 3), 2.0, np.float32))], [b.tensor((1, 3))], "MulOptions")
    b.inputs, b.outputs = [inp], [len(b.tensors) - 1]
    graph = tflite.Model.GetRootAsModel(b.serialize(), 0).Subgraphs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    assert names == ["t0", "sum", "bias", "c3", "t4"]
