"""Shared fixtures for onebit.data tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep tests from writing into the user's ~/.cache/onebit."""
    cache = tmp_path_factory.getbasetemp() / "onebit-cache"
    monkeypatch.setenv("ONEBIT_CACHE", str(cache))
    return cache


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    """Write ``images`` (N, 3, 32, 32) uint8 as a CIFAR-10 python batch file (R, G, B planes)."""
    data = images.reshape(len(images), 3072)
    batch = {b"batch_label": b"test", b"labels": list(labels), b"data": data,
             b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def make_cifar_dir(root: Path, per_batch: int = 20, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Create a tiny but real-format CIFAR-10 tree; returns the written arrays per file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(root / name, images, labels.tolist())
        written[name] = (images, labels)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2)
    )
    return written
