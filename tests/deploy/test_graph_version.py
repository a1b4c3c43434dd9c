"""The saved graph's format version is a compatibility contract: a description written by onebit's
model-file format 1 (by hand here, as an older onebit wrote it) keeps loading, and a description from
another version is refused with a message naming both versions (seed-67 mutation sample, issue 21:
``GRAPH_VERSION = 1 -> 0`` wrote and read version 0, so old files would stop loading and no test saw it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy.graph import graph_from_json, graph_to_json

# A version-1 description of x -> ReLU(x), as graph_to_json writes it.
VERSION_1 = {
    "version": 1,
    "nodes": [
        {"name": "input_1", "op": "placeholder", "args": {"tuple": []}, "kwargs": {"dict": {}}},
        {"name": "_0", "op": "call_module", "target": "0", "args": {"tuple": [{"node": "input_1"}]},
         "kwargs": {"dict": {}}},
        {"name": "output", "op": "output", "args": {"tuple": [{"node": "_0"}]}, "kwargs": {"dict": {}}},
    ],
    "modules": {"0": {"type": "ReLU", "config": {}}},
}


def test_a_version_1_description_loads_and_runs():
    gm = graph_from_json(VERSION_1, {})
    x = torch.tensor([-1.5, 0.0, 2.0])
    assert torch.equal(gm(x), torch.relu(x))


def test_descriptions_are_written_as_version_1():
    description, _ = graph_to_json(torch.fx.symbolic_trace(nn.Sequential(nn.ReLU())))
    assert description == VERSION_1


@pytest.mark.parametrize("version", [0, 2, None])
def test_another_version_is_refused_by_name(version):
    description = dict(VERSION_1, version=version)
    with pytest.raises(ValueError, match=rf"graph version {version!r}; this onebit reads version 1"):
        graph_from_json(description, {})
