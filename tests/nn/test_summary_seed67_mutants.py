"""The summary's full-precision memory figure (seed-67 mutation sample, issue 21: ``fp32_memory_bytes``'s
``* 4`` turned into ``/ 4`` or ``* 5`` and no test saw it, though the printed table shows it)."""

from __future__ import annotations

from torch import nn

import onebit


def test_fp32_memory_is_four_bytes_per_parameter_of_the_full_precision_twin():
    # conv 3->8 (3x3, bias) 224 | binary conv 8->16 (3x3) 1152 | two BatchNorms 48 | linear 256->10 2570
    model = onebit.binarize(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(16), nn.Hardtanh(),
        nn.Flatten(), nn.Linear(256, 10)), "bnn")
    s = onebit.summary(model, (3, 8, 8))
    params = 224 + 1152 + 48 + 2570
    assert params == sum(p.numel() for p in model.parameters())
    assert s.totals["fp32_memory_bytes"] == params * 4
    assert s.totals["compression_ratio"] == s.totals["fp32_memory_bytes"] / s.totals["memory_bytes"]
    assert f"fp32 equivalent {params * 4 / 2**20:.3f} MiB" in str(s)
