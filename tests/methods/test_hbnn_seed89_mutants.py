"""HBNN's native-kernel guard on row length (seed-89 honest mutation sample).

The kernel indexes a row with 32-bit positions, so ``_native_binarization`` must hand a row of 2^31 or
more elements to the torch path (return None) before it allocates anything; the number of rows does not
matter. A stride-0 view gives such a row without its 8 GiB, and an address-space limit makes any copy
of it fail at once instead of filling the machine."""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch

from onebit.methods import hbnn

pytestmark = pytest.mark.skipif(not hbnn._HBNN_KERNEL, reason="the engine has no HBNN kernel")

resource = pytest.importorskip("resource")


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * 4096


@contextlib.contextmanager
def _at_most_one_more_gib():
    """New allocations beyond the current address space plus 1 GiB fail for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + (1 << 30), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("selection", ["paper", "residual"])
def test_a_row_of_2_to_the_31_elements_takes_the_torch_path_without_copying(selection):
    long_row = torch.ones(1).expand(1, 2**31)  # one row, 2^31 elements, 4 bytes of storage
    with _at_most_one_more_gib():
        assert hbnn._native_binarization(long_row, [2**31], selection) is None


def test_many_short_rows_still_run_natively():
    rows = torch.randn(3, 7)
    out = hbnn._native_binarization(rows, [5, 2], "paper")
    assert out is not None and out.approx.shape == (3, 7)
