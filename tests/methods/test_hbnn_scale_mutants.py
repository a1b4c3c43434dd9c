"""HBNN's middle-out bit selection does not depend on the weights' scale (issue 21; seed-47 mutation
survivor ``hbnn.py`` ``remaining.reciprocal().sub_(1.0)`` → ``sub_(1.5)``): Eq. 6's distance
``| |t| − mean_R |t| |`` scales with the weights, so a power-of-two scale (exact in float arithmetic)
must give the same bit map. Small weights are where an offset added to every eligible distance would
round close distances into ties and pick by index instead of by distance."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import hbnn

MIXES = [(0.5, 0.3, 0.2), (0.7, 0.2, 0.1), (0.2, 0.3, 0.5)]


def _reference_bitmap(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Algorithm 1 (Fromm et al., 2018) in float64 with a stable sort: for b = 1, 2, …, the
    ``counts[b−1]`` remaining elements closest to the mean magnitude of those remaining get b bits."""
    out = torch.zeros_like(x, dtype=torch.int8)
    for row in range(x.shape[0]):
        magnitude = x[row].abs().double()
        remaining = list(range(x.shape[1]))
        for level, count in enumerate(counts, start=1):
            mean = magnitude[remaining].mean()
            order = sorted(remaining, key=lambda i: (abs(magnitude[i] - mean).item(), i))
            for i in order[:count]:
                out[row, i] = level
            remaining = [i for i in remaining if i not in set(order[:count])]
        for i in remaining:
            out[row, i] = len(counts)
    return out


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("scale", [2.0**-30, 2.0**-12, 2.0**10])
def test_the_middle_out_bit_map_does_not_depend_on_the_weights_scale(mix, scale):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 48, generator=g)
    counts = hbnn.stop_counts(x.shape[1], (1, 2, 3), mix)
    unit = hbnn.middle_out_bitmap(x, counts)
    assert torch.equal(unit, _reference_bitmap(x, counts))
    assert torch.equal(hbnn.middle_out_bitmap(x * scale, counts), unit)


def test_tiny_weights_by_hand():
    """Magnitudes (·2⁻³⁰) 1, 4, 2.4, 2.5, 3, 2: the mean 2.483 makes 2.5 the closest (1 bit), then of
    the rest (mean 2.48, distances 1.48, 1.52, 0.08, 0.52, 0.48) 2.4 and 2 (2 bits), and 1, 4, 3 keep
    3 bits — the same as at scale 1."""
    x = torch.tensor([[1.0, -4.0, 2.4, 2.5, -3.0, 2.0]])
    for scale in (1.0, 2.0**-30):
        assert hbnn.middle_out_bitmap(x * scale, [1, 2, 3]).tolist() == [[3, 3, 2, 1, 3, 2]]
