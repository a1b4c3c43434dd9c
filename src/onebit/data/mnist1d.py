"""MNIST-1D, generated offline with the ``mnist1d`` package (never downloaded).

Generation takes a few seconds, so the arrays are cached in memory per process and,
unless ``cache=False``, as an ``.npz`` file in the cache directory (``root`` if given,
else ``$ONEBIT_CACHE``, else ``~/.cache/onebit``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from onebit.data._bundle import DataBundle, InMemoryDataset
from onebit.data._registry import DatasetSpec, Option, is_bool, is_int
from onebit.data._util import require
from onebit.data.transforms import RandomShift1d

__all__ = ["cache_dir", "clear_memory_cache", "load_mnist1d"]

_FORMAT_VERSION = 1
_ARRAYS = ("x", "y", "x_test", "y_test")
_MEMORY: dict[str, dict[str, np.ndarray]] = {}
# make_dataset reseeds numpy's and Python's global RNGs; the lock keeps concurrent
# generations from interleaving their draws (which would break determinism).
_LOCK = threading.Lock()


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The on-disk cache directory: ``root``, else ``$ONEBIT_CACHE``, else ``~/.cache/onebit``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("ONEBIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "onebit"


def clear_memory_cache() -> None:
    """Forget the arrays generated in this process (the disk cache is kept)."""
    _MEMORY.clear()


def _generation_args(num_samples: int, data_seed: int, train_split: float = 0.8) -> dict[str, object]:
    mnist1d_data = require("mnist1d.data", "mnist1d", "mnist1d")
    args = dict(mnist1d_data.get_dataset_args(as_dict=True))
    args["num_samples"] = num_samples
    args["seed"] = data_seed
    args["train_split"] = float(train_split)
    return args


def _cache_key(args: dict[str, object]) -> str:
    # The URL is only used for downloading, which we never do; it must not change the key.
    payload = {k: v for k, v in args.items() if k != "url"}
    payload["_format"] = _FORMAT_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _generate(args: dict[str, object]) -> dict[str, np.ndarray]:
    mnist1d_data = require("mnist1d.data", "mnist1d", "mnist1d")
    mnist1d_utils = require("mnist1d.utils", "mnist1d", "mnist1d")
    with _LOCK:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            # make_dataset, not get_dataset: the latter may download and writes a pickle into the cwd.
            raw = mnist1d_data.make_dataset(mnist1d_utils.ObjectView(dict(args)))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    return {
        "x": np.ascontiguousarray(raw["x"], dtype=np.float32),
        "y": np.ascontiguousarray(raw["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(raw["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(raw["y_test"], dtype=np.int64),
    }


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing, truncated or foreign: regenerate and overwrite
    if arrays["x"].shape[0] != arrays["y"].shape[0] or arrays["x_test"].shape[0] != arrays["y_test"].shape[0]:
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename) so concurrent readers never see half a file."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        warnings.warn(
            f"could not write the MNIST-1D cache {path} ({exc}); the data is still generated in memory. "
            "Set ONEBIT_CACHE to a writable directory or pass cache=False.",
            RuntimeWarning,
            stacklevel=3,
        )
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _arrays(args: dict[str, object], root: str | os.PathLike[str] | None, use_disk: bool) -> dict[str, np.ndarray]:
    key = _cache_key(args)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir(root) / f"mnist1d-{key}.npz"
    arrays = _read_cache(path) if use_disk else None
    if arrays is None:
        arrays = _generate(args)
        if use_disk:
            _write_cache(path, arrays)
    _MEMORY[key] = arrays
    return arrays


def load_mnist1d(
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    num_samples: int = 5000,
    data_seed: int = 42,
    shift: int = 0,
    cache: bool = True,
    train_split: float = 0.8,
) -> DataBundle:
    """Load MNIST-1D: (1, 40) float signals, 10 classes, by default an 80/20 train/test split.

    Args:
        root: cache directory override (see module docstring).
        seed: seeds the optional shift augmentation and the default loader order.  The
            data itself is fixed by ``data_seed`` so that the default is the canonical
            MNIST-1D (``get_dataset_args()``: 5000 samples, seed 42).
        num_samples: total samples generated (split 80/20).
        data_seed: seed of the generator itself.
        shift: if > 0, training signals are randomly shifted by up to this many
            positions (zero-filled); off by default.
        cache: also cache the generated arrays on disk.
        train_split: the fraction of the samples used for training (the generator's own ``train_split``);
            the rest is the test set. A benchmark that needs a large test set (small binomial noise)
            without a longer training epoch lowers it, e.g. 0.5.
    """
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"load_mnist1d: train_split must be in (0, 1), got {train_split!r}")
    args = _generation_args(num_samples, data_seed, train_split)
    arrays = _arrays(args, root, cache)
    # Copies, so that editing a dataset's tensors cannot corrupt the process-wide cache.
    x = torch.tensor(arrays["x"]).unsqueeze(1)
    x_test = torch.tensor(arrays["x_test"]).unsqueeze(1)
    transform = RandomShift1d(shift) if shift > 0 else None
    length = int(x.shape[-1])
    return DataBundle(
        name="mnist1d",
        train=InMemoryDataset(x, torch.tensor(arrays["y"]), transform, aug_seed=seed),
        test=InMemoryDataset(x_test, torch.tensor(arrays["y_test"])),
        num_classes=10,
        input_shape=(1, length),
        # make_dataset already standardizes the whole set to zero mean, unit std.
        mean=(0.0,),
        std=(1.0,),
        classes=tuple(str(d) for d in range(10)),
        seed=seed,
    )


def _is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < float(value) < 1.0


SPEC = DatasetSpec(
    name="mnist1d",
    builder=lambda root, seed, **opts: load_mnist1d(root, seed, **opts),
    options={
        "num_samples": Option(5000, is_int(10, 10_000_000), "an int >= 10 (10 classes share it equally)"),
        "data_seed": Option(42, is_int(0, 2**32 - 1), "an int in [0, 2**32)"),
        "shift": Option(0, is_int(0, 40), "an int in 0..40 (0 = no shift augmentation)"),
        "cache": Option(True, is_bool, "True or False"),
        "train_split": Option(0.8, _is_fraction, "a number strictly between 0 and 1 (the training fraction)"),
    },
    summary="MNIST-1D generated locally: 4000 train / 1000 test signals of length 40.",
)
