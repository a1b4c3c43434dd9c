"""MNIST-1D: generated offline, cached, never downloaded."""

from __future__ import annotations

import random
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import onebit.data as D
from onebit.data import mnist1d as m1d


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("onebit.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    try:
        import requests

        monkeypatch.setattr(requests, "get", refuse)
        monkeypatch.setattr(requests.Session, "request", refuse)
    except ImportError:
        pass


def test_default_dataset_shape_classes_no_network(no_network: None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # mnist1d's get_dataset would drop a pickle into the cwd
    m1d.clear_memory_cache()
    b = D.load("mnist1d")
    assert b.name == "mnist1d" and b.num_classes == 10 and b.input_shape == (1, 40)
    assert (len(b.train), len(b.test)) == (4000, 1000)
    x, y = b.train[0]
    assert x.shape == (1, 40) and x.dtype == torch.float32 and isinstance(y, int)
    labels = torch.tensor([b.train[i][1] for i in range(len(b.train))])
    assert set(labels.tolist()) == set(range(10))
    assert list(tmp_path.iterdir()) == []


def test_deterministic_generation_and_global_rng_untouched(tmp_path: Path) -> None:
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    m1d.clear_memory_cache()
    a = D.load("mnist1d", tmp_path / "a", num_samples=200, cache=False)
    m1d.clear_memory_cache()
    b = D.load("mnist1d", tmp_path / "b", num_samples=200, cache=False)
    assert (random.random(), np.random.rand()) == before  # make_dataset reseeds; we restore
    assert torch.equal(a.train.data, b.train.data) and torch.equal(a.test.labels, b.test.labels)
    m1d.clear_memory_cache()
    c = D.load("mnist1d", num_samples=200, data_seed=7, cache=False)
    assert not torch.equal(a.train.data, c.train.data)
    assert (len(a.train), len(a.test)) == (160, 40)


def test_disk_cache_is_written_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path))
    m1d.clear_memory_cache()
    first = D.load("mnist1d", num_samples=100)
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    import mnist1d.data

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated despite the disk cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    m1d.clear_memory_cache()
    second = D.load("mnist1d", num_samples=100)
    assert torch.equal(first.train.data, second.train.data)

    # A corrupt cache file is regenerated instead of failing.
    monkeypatch.undo()
    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path))
    files[0].write_bytes(b"not an npz")
    m1d.clear_memory_cache()
    third = D.load("mnist1d", num_samples=100)
    assert torch.equal(first.train.data, third.train.data)


def test_dataset_tensors_do_not_alias_the_cache() -> None:
    a = D.load("mnist1d", num_samples=100, cache=False)
    a.train.data.zero_()
    b = D.load("mnist1d", num_samples=100, cache=False)
    assert float(b.train.data.abs().sum()) > 0


def test_shift_augmentation_is_off_by_default_and_seeded() -> None:
    plain = D.load("mnist1d", num_samples=100, cache=False)
    assert plain.train.transform is None
    assert torch.equal(plain.train[0][0], plain.train[0][0])
    s1 = D.load("mnist1d", seed=5, num_samples=100, shift=3, cache=False)
    s2 = D.load("mnist1d", seed=5, num_samples=100, shift=3, cache=False)
    seq1 = [s1.train[0][0] for _ in range(8)]
    seq2 = [s2.train[0][0] for _ in range(8)]
    assert all(torch.equal(u, v) for u, v in zip(seq1, seq2))
    assert any(not torch.equal(seq1[0], v) for v in seq1[1:])


def test_bad_option() -> None:
    with pytest.raises(ValueError, match="shift=-1.*0..40"):
        D.load("mnist1d", shift=-1)


def test_train_split_moves_samples_to_the_test_set() -> None:
    """The benchmark's MNIST-1D is 24,000 signals split 50/50: a large test set (small binomial noise)
    without a longer training epoch. The split is the generator's own, so the samples are the same ones
    and only the cut moves."""
    m1d.clear_memory_cache()
    default = D.load("mnist1d", num_samples=200, cache=False)
    half = D.load("mnist1d", num_samples=200, train_split=0.5, cache=False)
    assert (len(half.train), len(half.test)) == (100, 100)
    assert torch.equal(half.train.data, default.train.data[:100])
    assert torch.equal(half.test.data[-40:], default.test.data)
    with pytest.raises(ValueError, match="train_split=1.*strictly between 0 and 1"):
        D.load("mnist1d", num_samples=200, train_split=1, cache=False)
    with pytest.raises(ValueError, match="train_split must be in"):
        m1d.load_mnist1d(num_samples=200, train_split=0.0, cache=False)
