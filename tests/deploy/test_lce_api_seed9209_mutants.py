"""LCE's interpreter loader on machines unlike this one (``deploy/lce.py``; issue 21: single-file sample
9209, hunting, not an honest sample, on a fast subset of the mapped tests): without the
larq-compute-engine package ``find_spec`` returns None and LCE is simply unavailable (mutant: ``or`` →
``and`` read ``None.submodule_search_locations``), and the NumPy-2 item-size shim works from the major
version (mutant: the minor one, so NumPy 2.0 and 2.1 ran the wheel unbridged)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from onebit.deploy import lce


def test_without_the_package_lce_is_unavailable(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "larq_compute_engine" else real(name, *a))
    assert lce._wrapper_path() is None and not lce.lce_available()


@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2, reason="the shim bridges NumPy 2's dtype layout only")
@pytest.mark.parametrize(("version", "bridged"), [("2.0.2", True), ("2.1.3", True), ("1.26.4", False)])
def test_the_numpy2_shim_goes_by_the_major_version(monkeypatch, version, bridged):
    float32 = np.dtype(np.float32)
    flags = float32.flags
    monkeypatch.setattr(np, "__version__", version)
    shim = lce._numpy2_itemsize_shim()
    shim.__enter__()
    try:
        assert bool(shim._saved) is bridged
    finally:
        shim.__exit__(None, None, None)
    assert float32.flags == flags  # restored
