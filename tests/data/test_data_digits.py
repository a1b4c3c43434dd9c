"""sklearn digits through the onebit.data registry."""

from __future__ import annotations

import pytest
import torch

import onebit.data as D


def _stack(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def test_sizes_shapes_and_labels() -> None:
    b = D.load("digits")
    assert b.name == "digits" and b.num_classes == 10 and b.input_shape == (1, 8, 8)
    assert len(b.train) + len(b.test) == 1797
    assert len(b.test) == 360
    x, y = b.train[0]
    assert isinstance(y, int) and x.shape == (1, 8, 8) and x.dtype == torch.float32
    _, ytr = _stack(b.train)
    _, yte = _stack(b.test)
    assert ytr.min() == 0 and ytr.max() == 9 and set(yte.tolist()) == set(range(10))
    # Stratified: every class keeps ~20% of its images in the test split.
    counts = torch.bincount(yte, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38


def test_split_is_determined_by_seed_and_disjoint() -> None:
    a, b, c = D.load("digits", seed=1), D.load("digits", seed=1), D.load("digits", seed=2)
    xa, _ = _stack(a.test)
    xb, _ = _stack(b.test)
    xc, _ = _stack(c.test)
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    # Train and test partition the dataset: together they are exactly sklearn's 1797
    # images (as a multiset), so no image was dropped or used twice.
    from sklearn.datasets import load_digits

    xtr, _ = _stack(a.train)
    both = torch.cat([xtr, xa]).flatten(1) * a.std[0] + a.mean[0]
    ours = sorted(tuple(r) for r in (both * 16).round().to(torch.int64).tolist())
    ref = sorted(tuple(r) for r in torch.from_numpy(load_digits().data).to(torch.int64).tolist())
    assert ours == ref


def test_indices_partition_the_dataset() -> None:
    b = D.load("digits", seed=3, test_fraction=0.5)
    assert len(b.test) == 899 and len(b.train) == 898


def test_normalization_stats() -> None:
    b = D.load("digits")
    xtr, _ = _stack(b.train)
    assert abs(float(xtr.mean())) < 1e-4
    assert abs(float(xtr.std()) - 1.0) < 1e-3
    assert 0.2 < b.mean[0] < 0.4 and 0.2 < b.std[0] < 0.5
    # Reversing the normalization recovers pixels in [0, 1].
    raw = xtr * b.std[0] + b.mean[0]
    assert float(raw.min()) > -1e-5 and float(raw.max()) < 1 + 1e-5


def test_resize_option() -> None:
    b = D.load("digits", size=16)
    assert b.input_shape == (1, 16, 16)
    assert b.train[0][0].shape == (1, 16, 16)
    small = D.load("digits", size=8)
    assert torch.equal(small.train[0][0], D.load("digits").train[0][0])


@pytest.mark.parametrize(("opts", "match"), [
    ({"size": 0}, "size=0"),
    ({"size": "16"}, "size='16'"),
    ({"test_fraction": 1.0}, "test_fraction=1.0"),
    ({"colour": True}, "unknown option 'colour'.*size.*test_fraction"),
])
def test_bad_options(opts: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        D.load("digits", **opts)
