"""A detail that the seed-53 mutation sample (tools/mutate.py) found untested: every process of a
multi-process run (two included) waits at the trainer's barrier; a single process has no group to wait on."""

from __future__ import annotations

import pytest
import torch

from onebit.train import trainer


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_process_of_a_multi_process_run_waits_at_the_barrier(monkeypatch, world):
    calls: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    # a process group that already exists (torchrun's), recorded instead of joined
    monkeypatch.setattr(trainer.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(trainer.dist, "barrier", lambda: calls.append("barrier"))
    procs = trainer._Processes(torch.device("cpu"))
    procs.barrier()
    assert calls == (["barrier"] if world > 1 else [])
    assert not procs.owns_group
