"""ImageNet-style folders with tiny PNG/JPEG files written by Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import onebit.data as D
from onebit.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, decode_image


def _write(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)


def _tree(root: Path) -> None:
    # Classes deliberately created out of alphabetical order.
    _write(root / "train" / "zebra" / "a.png", (255, 0, 0))
    _write(root / "train" / "zebra" / "b.jpg", (250, 5, 5), fmt="JPEG")
    _write(root / "train" / "ant" / "a.png", (0, 255, 0), size=(20, 50))
    _write(root / "train" / "moth" / "x.PNG", (0, 0, 255))
    (root / "train" / "moth" / "notes.txt").write_text("not an image")
    _write(root / "val" / "ant" / "v.png", (0, 255, 0))
    _write(root / "val" / "zebra" / "v.jpeg", (255, 0, 0), fmt="JPEG")


def test_classes_labels_and_shapes(tmp_path: Path) -> None:
    _tree(tmp_path)
    b = D.load("imagefolder", tmp_path, size=16)
    assert b.classes == ("ant", "moth", "zebra") and b.num_classes == 3
    assert b.input_shape == (3, 16, 16)
    assert [label for _, label in b.train.samples] == [0, 1, 2, 2]
    assert [label for _, label in b.test.samples] == [0, 2]
    for ds in (b.train, b.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    # A solid green image stays solid green through resize/crop and normalization.
    x, _ = b.test[0]
    expected = (torch.tensor([0.0, 1.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-5)


def test_decode_is_rgb_channels_first(tmp_path: Path) -> None:
    arr = np.zeros((3, 4, 3), np.uint8)
    arr[..., 0] = 7
    arr[1, 2] = (1, 2, 3)
    Image.fromarray(arr).save(tmp_path / "i.png")
    Image.fromarray(arr[..., 0], mode="L").save(tmp_path / "g.png")
    x = decode_image(tmp_path / "i.png")
    assert x.shape == (3, 3, 4) and x.dtype == torch.uint8
    assert x[:, 1, 2].tolist() == [1, 2, 3] and int(x[0, 0, 0]) == 7
    assert decode_image(tmp_path / "g.png").shape == (3, 3, 4)  # grayscale converted to RGB


def test_val_transform_resizes_shorter_side_then_center_crops(tmp_path: Path) -> None:
    _tree(tmp_path)
    # 32x16 (w x h), left half black, right half white: upscaled to 64x32 (shorter side
    # 28 * 256 / 224 = 32), then the central 28x28 keeps both halves.
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, 16:] = 255
    Image.fromarray(img).save(tmp_path / "val" / "ant" / "v.png")
    b = D.load("imagefolder", tmp_path, size=28)
    x, _ = b.test[0]
    assert x.shape == (3, 28, 28)
    raw = x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert float(raw[:, 0].max()) < 0.05 and float(raw[:, -1].min()) > 0.95
    # Columns 18..45 of the 64-wide image: the black/white edge (at 32) lands at column 14.
    assert float(raw[:, 12].max()) < 0.05 and float(raw[:, 16].min()) > 0.95


def test_train_augmentation_seeded(tmp_path: Path) -> None:
    _tree(tmp_path)
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "train" / "ant" / "a.png")
    a = D.load("imagefolder", tmp_path, seed=1, size=16)
    c = D.load("imagefolder", tmp_path, seed=1, size=16)
    seq_a = [a.train[0][0] for _ in range(5)]
    seq_c = [c.train[0][0] for _ in range(5)]
    assert all(torch.equal(u, v) for u, v in zip(seq_a, seq_c))
    assert any(not torch.equal(seq_a[0], v) for v in seq_a[1:])
    plain = D.load("imagefolder", tmp_path, size=16, augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_errors_name_the_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*<root>/train/<class_a>"):
        D.load("imagefolder", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"(?s)train does not exist.*expected layout"):
        D.load("imagefolder", tmp_path)
    _tree(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"(?s)empty contains no image files.*expected layout"):
        D.load("imagefolder", tmp_path)
    (tmp_path / "train" / "empty").rmdir()
    _write(tmp_path / "val" / "unknown" / "u.png", (1, 2, 3))
    with pytest.raises(ValueError, match="not among the train classes"):
        D.load("imagefolder", tmp_path)


def test_corrupt_image_error(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "train" / "ant" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    b = D.load("imagefolder", tmp_path, size=16)
    with pytest.raises(ValueError, match=r"cannot decode image .*a\.png"):
        b.train[0]
