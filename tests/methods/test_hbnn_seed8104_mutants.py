"""HBNN's bit-map selection off the CPU (issue 21, single-file mutation sample ``--seed 8104`` of hbnn.py, not
an honest sample): the tie-breaking of ``_with_first_ties`` hands a non-CPU tensor to its torch form, and
``_with_first_ties_torch(threshold, distance, …)`` with its arguments swapped survived because every test ran
on CPU, where the numpy form runs. A tensor that reports another device (its data stays on the CPU) takes
the torch form here; both must equal the first ``count`` of a stable ascending sort (HBNN's Algorithm 1
picks the ``count`` elements nearest the level, ties toward the lower index)."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import hbnn


class _ReportsAnotherDevice(torch.Tensor):
    """A CPU tensor whose ``device`` says ``meta``: the code's device test takes its non-CPU branch."""

    @property
    def device(self):
        return torch.device("meta")


def _first_of_stable_sort(distance: torch.Tensor, count: int) -> torch.Tensor:
    order = torch.sort(distance, dim=1, stable=True).indices[:, :count]
    return torch.zeros_like(distance).scatter_(1, order, 1.0)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_the_torch_tie_breaking_taken_off_the_cpu_keeps_the_first_ties_by_index(count):
    distance = torch.tensor([[0.3, 0.1, 0.1, 0.1, 0.5, 0.1],
                             [0.2, 0.2, 0.0, 0.2, 0.2, 0.7],
                             [0.4, 0.0, 0.4, 0.0, 0.4, 0.4]])
    threshold = torch.kthvalue(distance, count, dim=1, keepdim=True).values
    expected = _first_of_stable_sort(distance, count)
    on_cpu = hbnn._with_first_ties(distance, threshold, count)
    elsewhere = hbnn._with_first_ties(distance.as_subclass(_ReportsAnotherDevice),
                                      threshold.as_subclass(_ReportsAnotherDevice), count)
    assert type(elsewhere) is _ReportsAnotherDevice  # the torch form ran
    assert torch.equal(on_cpu, expected)
    assert torch.equal(elsewhere.as_subclass(torch.Tensor), expected)
