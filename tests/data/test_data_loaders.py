"""Registry and DataBundle.loaders()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import onebit.data as D
from onebit.data import DataBundle, InMemoryDataset
from onebit.data.transforms import RandomCrop


def _bundle(n_train: int = 50, n_test: int = 13, transform: object = None, seed: int = 0) -> DataBundle:
    data = torch.arange(n_train, dtype=torch.float32).view(n_train, 1, 1, 1).expand(n_train, 1, 4, 4).clone()
    test = torch.arange(n_test, dtype=torch.float32).view(n_test, 1, 1, 1).expand(n_test, 1, 4, 4).clone()
    return DataBundle(
        name="toy", train=InMemoryDataset(data, torch.arange(n_train) % 3, transform, aug_seed=seed),
        test=InMemoryDataset(test, torch.arange(n_test) % 3), num_classes=3, input_shape=(1, 4, 4),
        mean=(0.0,), std=(1.0,), seed=seed,
    )


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(v) for x, _ in loader for v in x[:, 0, 0, 0]]


def test_registry_names_and_unknown_name() -> None:
    assert D.available() == ["cifar10", "digits", "imagefolder", "mnist1d"]
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid names: cifar10, digits, imagefolder, mnist1d"):
        D.load("mnist")
    with pytest.raises(ValueError, match="seed must be"):
        D.load("digits", seed=-1)


def test_batch_shapes_and_types() -> None:
    train, test = _bundle().loaders(8)
    x, y = next(iter(train))
    assert x.shape == (8, 1, 4, 4) and y.shape == (8,) and y.dtype == torch.int64
    assert len(train) == 7 and len(test) == 2
    assert [x.shape[0] for x, _ in test] == [8, 5]
    assert len(_bundle().loaders(8, drop_last=True).train) == 6
    assert [x.shape[0] for x, _ in _bundle().loaders(8, test_batch_size=100).test] == [13]


def test_shuffle_is_deterministic_per_seed_and_changes_per_epoch() -> None:
    b = _bundle()
    first = b.loaders(10, seed=3).train
    again = b.loaders(10, seed=3).train
    epoch1, epoch2 = _order(first), _order(first)
    assert epoch1 == _order(again) and epoch2 == _order(again)
    assert epoch1 != epoch2 and sorted(epoch1) == list(range(50))
    assert _order(b.loaders(10, seed=4).train) != epoch1
    assert _order(b.loaders(10, shuffle_train=False).train) == list(range(50))
    assert _order(b.loaders(10).test) == list(range(13))


def test_default_seed_comes_from_the_bundle() -> None:
    assert _order(_bundle(seed=9).loaders(10).train) == _order(_bundle(seed=0).loaders(10, seed=9).train)


def test_workers_give_the_same_batches_as_each_other() -> None:
    b = _bundle(transform=RandomCrop(4, padding=2), seed=1)
    runs = [[x for x, _ in b.loaders(10, num_workers=2, seed=5).train] for _ in range(2)]
    assert all(torch.equal(u, v) for u, v in zip(*runs))


def test_bad_loader_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        _bundle().loaders(0)
    with pytest.raises(ValueError, match="num_workers"):
        _bundle().loaders(4, num_workers=-1)
    with pytest.raises(RuntimeError, match="init_process_group"):
        _bundle().loaders(4, distributed=True)


def test_distributed_sampler(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, test = _bundle().loaders(10, distributed=True, seed=2)
        assert isinstance(train.sampler, torch.utils.data.DistributedSampler)
        assert isinstance(test.sampler, torch.utils.data.DistributedSampler)
        e0 = _order(train)
        assert e0 == _order(_bundle().loaders(10, distributed=True, seed=2).train)
        train.sampler.set_epoch(1)
        e1 = _order(train)
        assert e0 != e1 and sorted(e1) == list(range(50))
        assert _order(test) == list(range(13))
    finally:
        dist.destroy_process_group()
