"""save() is reproducible (its docstring: "the same model always gives the same file"): the same packed
model saved again, or loaded and saved, gives the very same bytes. Until issue 21's tests it did not:
safetensors writes the metadata entries from a hash map, in an order that changed from one call to the
next, so every save wrote another file (and another checksum) for the same model."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from onebit.deploy import export, load, save
from onebit.nn import BinaryConv2d


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_model_always_gives_the_same_file(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                          BinaryConv2d(8, 8, 3, padding=1, method="reactnet"), nn.BatchNorm2d(8), nn.Hardtanh(),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 70)).eval()  # 40320 weights: stored compressed
    packed = export(model)
    paths = [tmp_path / f"m{i}.onebit" for i in range(3)]
    for path in paths:
        save(packed, path)
    assert len({_sha(p) for p in paths}) == 1
    again = tmp_path / "again.onebit"
    save(load(paths[0]), again)
    assert _sha(again) == _sha(paths[0])
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(load(again)(x), packed(x))
