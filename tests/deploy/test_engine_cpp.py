"""The engine's C++ checker (tests/cpp/engine_check.cpp): conv2d against a naive reference without
Python or torch in the loop, built from the engine's sources with the system's C++ compiler (the
one that built the extension) and run on every kernel path this CPU has."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_engine_matches_the_naive_reference_in_cpp(tmp_path):
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.fail("no C++ compiler found (the extension's build needs one too); set CXX")
    done = subprocess.run(["bash", str(ROOT / "tests/cpp/check.sh"), "60"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "CXX": compiler, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "engine_check: 0 of" in done.stdout and "runs failed" in done.stdout
    assert "warning" not in done.stderr, done.stderr[-3000:]
