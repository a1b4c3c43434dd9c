"""CIFAR-10 from tiny files written in the real python-batch format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cifar_dir, write_cifar_batch

import onebit.data as D
from onebit.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, read_batch


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_pixels_labels_and_channel_order_exact(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    written = make_cifar_dir(root)
    b = D.load("cifar10", root, augment=False)
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.test)) == (100, 20)
    assert b.classes[0] == "airplane" and b.classes[9] == "truck"
    # Train = batches 1..5 in order; the 21st image is the first of data_batch_2.
    img2, lab2 = written["data_batch_2"]
    x, y = b.train[20]
    assert y == int(lab2[0]) and x.dtype == torch.float32
    assert torch.equal(_unnormalize(x), torch.from_numpy(img2[0]))
    xt, yt = b.test[7]
    assert yt == int(written["test_batch"][1][7])
    assert torch.equal(_unnormalize(xt), torch.from_numpy(written["test_batch"][0][7]))


def test_plane_layout_r_then_g_then_b(tmp_path: Path) -> None:
    # Build one row by hand: 1024 bytes of R, then G, then B, each row-major 32x32.
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": row[None], b"labels": [3]}, protocol=2))
    images, labels = read_batch(path)
    assert labels.tolist() == [3]
    assert images.shape == (1, 3, 32, 32)
    assert (images[0, 0] == 10).all() and (images[0, 1] == 20).all()
    assert images[0, 2, 0, 5] == 5 and images[0, 2, 1, 0] == 32  # row-major within the plane


def test_parent_directory_form_and_meta_optional(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    b = D.load("cifar10", tmp_path)
    assert len(b.train) == 100 and b.classes[3] == "cat"


def test_augmentation_shapes_and_seeded_randomness(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path)
    a = D.load("cifar10", tmp_path, seed=4)
    c = D.load("cifar10", tmp_path, seed=4)
    ref = D.load("cifar10", tmp_path, augment=False)
    outs_a = [a.train[0][0] for _ in range(10)]
    outs_c = [c.train[0][0] for _ in range(10)]
    assert all(o.shape == (3, 32, 32) for o in outs_a)
    assert all(torch.equal(u, v) for u, v in zip(outs_a, outs_c))
    assert any(not torch.equal(o, ref.train[0][0]) for o in outs_a)
    # Test images are never augmented.
    assert torch.equal(a.test[0][0], ref.test[0][0])
    # A crop-and-flip of the clean image: each output row, unflipped if needed, is a
    # shifted window of the clean image padded with the normalized value of black.
    black = (-torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)).view(3, 1, 1)
    clean = torch.nn.functional.pad(ref.train[0][0] - black, (4, 4, 4, 4)) + black
    for o in outs_a:
        windows = [clean[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
        assert any(torch.allclose(o, w, atol=1e-5) or torch.allclose(o.flip(-1), w, atol=1e-5) for w in windows)


def test_malicious_pickle_is_rejected_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    make_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(D.UnsafePickleError, match=r"data_batch_3.*(posix|os|nt)\.system"):
        D.load("cifar10", tmp_path)
    assert not marker.exists()


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match=r"(?s)test_batch is corrupt.*expected layout"):
        D.load("cifar10", tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"bad b'data' \(uint8 array of shape \(2, 100\)\)"):
        D.load("cifar10", tmp_path)
    write_cifar_batch(tmp_path / "test_batch", np.zeros((2, 3, 32, 32), np.uint8), [0, 10])
    with pytest.raises(ValueError, match="bad b'labels'"):
        D.load("cifar10", tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="holds a list"):
        D.load("cifar10", tmp_path)


def test_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*data_batch_1 \.\.\. data_batch_5"):
        D.load("cifar10", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="(?s)no CIFAR-10 batch files.*expected layout"):
        D.load("cifar10", tmp_path)
    make_cifar_dir(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks CIFAR-10 file.*data_batch_4"):
        D.load("cifar10", tmp_path)
    with pytest.raises(ValueError, match="pass root="):
        D.load("cifar10")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_are_accepted(tmp_path: Path, protocol: int) -> None:
    images = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3, 32, 32).astype(np.uint8)
    write_cifar_batch(tmp_path / "b", images, [1, 2], protocol=protocol)
    got, labels = read_batch(tmp_path / "b")
    assert np.array_equal(got, images) and labels.tolist() == [1, 2]


def _py2_str(b: bytes) -> bytes:
    # Python 2's str opcode (BINSTRING), which encoding="bytes" turns into bytes.
    return b"T" + len(b).to_bytes(4, "little") + b


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The bytes Python 2 + numpy 1.x write for a CIFAR batch (as in the official archive)."""
    n, width = data.shape
    ints = b"".join(b"K" + bytes([v]) for v in labels)
    return (
        b"\x80\x02}q\x00(" + _py2_str(b"data")
        + b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85" + _py2_str(b"b")
        + b"\x87Rq\x03(K\x01M" + n.to_bytes(2, "little") + b"M" + width.to_bytes(2, "little") + b"\x86"
        + b"cnumpy\ndtype\nq\x04" + _py2_str(b"u1") + b"K\x00K\x01\x87Rq\x05(K\x03" + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2_str(data.tobytes()) + b"tb"
        + _py2_str(b"labels") + b"]q\x06(" + ints + b"eu."
    )


def test_python2_numpy1_pickles_as_in_the_official_archive(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "b").write_bytes(_py2_batch(data, [9, 0, 4]))
    images, labels = read_batch(tmp_path / "b")
    assert labels.tolist() == [9, 0, 4]
    assert np.array_equal(images.reshape(3, 3072), data)
