"""scikit-learn's 8x8 handwritten digits (1797 real images, shipped with sklearn)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from onebit.data._bundle import DataBundle, InMemoryDataset
from onebit.data._registry import DatasetSpec, Option, is_int
from onebit.data._util import require

__all__ = ["load_digits"]


def _is_fraction(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and 0.0 < float(v) < 1.0


def load_digits(
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    size: int | None = None,
    test_fraction: float = 0.2,
) -> DataBundle:
    """Load sklearn's digits as (1, 8, 8) float images, split by ``seed``.

    Pixels are scaled from 0..16 to [0, 1], optionally resized to ``size`` x ``size`` by
    bilinear interpolation, then normalized with the train split's mean and std.  The split
    is stratified, so every class keeps its share of the ``test_fraction`` test set.
    ``root`` is unused (the data ships with scikit-learn).
    """
    datasets = require("sklearn.datasets", "scikit-learn", "digits")
    model_selection = require("sklearn.model_selection", "scikit-learn", "digits")
    raw = datasets.load_digits()
    images = torch.from_numpy(np.asarray(raw.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(raw.target, dtype=np.int64))
    if size is not None and size != images.shape[-1]:
        # antialias only matters when shrinking; it keeps small sizes from aliasing strokes away.
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=size < images.shape[-1])
    train_idx, test_idx = model_selection.train_test_split(
        np.arange(len(labels)), test_size=float(test_fraction), random_state=seed, stratify=labels.numpy()
    )
    train_idx = torch.from_numpy(np.sort(train_idx))
    test_idx = torch.from_numpy(np.sort(test_idx))
    train_x = images[train_idx]
    mean = float(train_x.mean())
    std = float(train_x.std())
    side = int(images.shape[-1])
    return DataBundle(
        name="digits",
        train=InMemoryDataset((train_x - mean) / std, labels[train_idx]),
        test=InMemoryDataset((images[test_idx] - mean) / std, labels[test_idx]),
        num_classes=10,
        input_shape=(1, side, side),
        mean=(mean,),
        std=(std,),
        classes=tuple(str(d) for d in range(10)),
        seed=seed,
    )


SPEC = DatasetSpec(
    name="digits",
    builder=lambda root, seed, **opts: load_digits(root, seed, **opts),
    options={
        "size": Option(None, lambda v: v is None or is_int(1, 1024)(v), "None or an int in 1..1024, e.g. 16 or 32"),
        "test_fraction": Option(0.2, _is_fraction, "a number strictly between 0 and 1"),
    },
    summary="sklearn's 8x8 digits: 1797 images, 10 classes, no download.",
)
