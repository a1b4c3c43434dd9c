"""Shared fixtures of the model-zoo tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """The zoo tests run many tiny forward/backward passes. With several intra-op threads on a busy
    machine, each small op waits on thread hand-offs (10-50x slower here); one thread avoids that. The
    previous setting is restored for the rest of the session."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
