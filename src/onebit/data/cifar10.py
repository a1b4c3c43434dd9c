"""CIFAR-10 from a local copy of the "CIFAR-10 python version" archive.

The batch files are pickles.  Unpickling runs code named by the file, so they are read
with :class:`RestrictedUnpickler`, which only lets numpy rebuild arrays.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onebit.data._bundle import DataBundle, InMemoryDataset
from onebit.data._registry import DatasetSpec, Option, is_bool
from onebit.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, ToFloat
from onebit.errors import OnebitError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "RestrictedUnpickler", "UnsafePickleError", "load_cifar10", "read_batch"]

# Per-channel statistics of the 50k training images scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

LAYOUT = """expected layout (the "CIFAR-10 python version" archive, cifar-10-python.tar.gz, extracted):
  <root>/cifar-10-batches-py/      (or pass that directory itself as root)
      data_batch_1 ... data_batch_5   pickled dicts: b'data' uint8 (N, 3072), b'labels' list of 0..9
      test_batch                      same format
      batches.meta                    pickled dict: b'label_names'"""


class UnsafePickleError(OnebitError, ValueError):
    """A pickle asked for a global outside the allow-list (it could run arbitrary code)."""


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """Map the (module, name) pairs that numpy array pickles reference to the real objects.

    Old pickles (the real CIFAR files, written by numpy 1.x) say ``numpy.core.multiarray``;
    numpy >= 2 writes ``numpy._core.multiarray``.  Resolving both to the objects taken from
    numpy's own ``__reduce__`` avoids importing the deprecated ``numpy.core`` alias.
    """
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        # Protocol-5 pickles rebuild contiguous arrays with _frombuffer (a frombuffer + reshape).
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    # Python 3 writes bytes into protocol <= 2 pickles as _codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r}) in pickle")
    return text.encode("latin1")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if order not in ("C", "F"):
        raise UnsafePickleError(f"unexpected array order {order!r} in pickle")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that only resolves numpy's array/dtype reconstruction helpers.

    (Plus a latin-1-only ``_codecs.encode``, which protocol-2 pickles use for bytes.)

    Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`UnsafePickleError` before it is called.
    """

    _ALLOWED = _numpy_reconstructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: only numpy array data may appear in this pickle"
            ) from None


def _unpickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read CIFAR-10 file {path}: {exc.strerror or exc}\n{LAYOUT}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(
            f"{path} is not a CIFAR-10 batch file: {exc}. Replace it with the file from the official "
            f"archive.\n{LAYOUT}"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"{path} is corrupt or not a CIFAR-10 batch file ({type(exc).__name__}: {exc}).\n{LAYOUT}"
        ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    # Python-2 pickles have bytes keys; a re-pickled copy may have str keys.
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file into ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    Raises ``ValueError`` naming the file and the expected format if it is not a batch.
    """
    path = Path(path)
    obj = _unpickle(path)
    fmt = "expected a dict with b'data' (uint8 array of shape (N, 3072)) and b'labels' (N ints in 0..9)"
    if not isinstance(obj, dict):
        # ValueError, not TypeError: every kind of bad file is reported as the same error type.
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a CIFAR-10 batch: {fmt}\n{LAYOUT}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else repr(type(data))
        raise ValueError(f"{path}: bad b'data' ({got}); {fmt}\n{LAYOUT}")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        labels_arr = np.empty(0)
    if labels_arr.shape != (data.shape[0],) or (labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() > 9)):
        raise ValueError(f"{path}: bad b'labels' (need {data.shape[0]} ints in 0..9); {fmt}\n{LAYOUT}")
    # Each row is the R plane, then G, then B, each 32x32 row-major: exactly (3, 32, 32).
    return data.reshape(-1, 3, 32, 32), labels_arr


def _read_meta(path: Path) -> tuple[str, ...]:
    obj = _unpickle(path)
    names = _get(obj, "label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{path}: expected a dict with b'label_names' (10 names).\n{LAYOUT}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def find_root(root: str | os.PathLike[str]) -> Path:
    """Resolve ``root`` to the directory holding the batch files (itself or ``cifar-10-batches-py/``)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory {base} does not exist.\n{LAYOUT}")
    for candidate in (base, base / "cifar-10-batches-py"):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    raise FileNotFoundError(f"no CIFAR-10 batch files in {base} or {base / 'cifar-10-batches-py'}.\n{LAYOUT}")


def load_cifar10(
    root: str | os.PathLike[str],
    seed: int = 0,
    *,
    augment: bool = True,
) -> DataBundle:
    """Load CIFAR-10 from local batch files.

    Images are stored as uint8 and converted per item to float in [0, 1], then
    normalized with :data:`CIFAR10_MEAN`/:data:`CIFAR10_STD`.  With ``augment``, training
    images get a random 32x32 crop of the 4-pixel zero-padded image and a random
    horizontal flip (seeded by ``seed``).
    """
    folder = find_root(root)
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks CIFAR-10 file(s): {', '.join(missing)}.\n{LAYOUT}")
    parts = [read_batch(folder / f) for f in TRAIN_FILES]
    train_x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    train_y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    test_np = read_batch(folder / TEST_FILE)
    test_x, test_y = torch.from_numpy(test_np[0]), torch.from_numpy(test_np[1])
    # The meta file only carries class names; fall back to the official ones if it is absent.
    classes = _read_meta(folder / META_FILE) if (folder / META_FILE).exists() else CIFAR10_CLASSES

    normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    eval_tf = Compose([ToFloat(), normalize])
    train_tf = (
        Compose([ToFloat(), RandomCrop(32, padding=4), RandomHorizontalFlip(0.5), normalize]) if augment else eval_tf
    )
    return DataBundle(
        name="cifar10",
        train=InMemoryDataset(train_x, train_y, train_tf, aug_seed=seed),
        test=InMemoryDataset(test_x, test_y, eval_tf),
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        classes=classes,
        seed=seed,
    )


SPEC = DatasetSpec(
    name="cifar10",
    builder=lambda root, seed, **opts: load_cifar10(root, seed, **opts),
    options={"augment": Option(True, is_bool, "True or False (random crop + flip on the train split)")},
    summary=LAYOUT,
    needs_root=True,
)
