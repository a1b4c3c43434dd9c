"""ImageNet-style folders of images: ``root/{train,val}/<class>/<image>``, decoded with Pillow."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from onebit.data._bundle import DataBundle, _SeededAugmentation
from onebit.data._registry import DatasetSpec, Option, is_bool, is_int
from onebit.data._util import require
from onebit.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToFloat,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "ImageFolderDataset", "load_imagefolder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

LAYOUT = """expected layout (one sub-folder per class, class names sorted alphabetically give the labels):
  <root>/train/<class_a>/<image>.jpg
  <root>/train/<class_b>/<image>.png
  <root>/val/<class_a>/<image>.jpg     (val classes must also exist in train)
image extensions: """ + " ".join(IMAGE_EXTENSIONS)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
         and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def scan_split(split_dir: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """List ``(image path, label)`` pairs of one split directory.

    If ``classes`` is None the split defines them (sorted sub-folder names); otherwise
    every sub-folder must be one of ``classes`` and takes its index as label.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(f"image folder split {split_dir} does not exist.\n{LAYOUT}")
    dirs = _visible_dirs(split_dir)
    if not dirs:
        raise FileNotFoundError(f"{split_dir} has no class sub-folders.\n{LAYOUT}")
    if classes is None:
        classes = [d.name for d in dirs]
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[Path, int]] = []
    for d in dirs:
        if d.name not in index:
            raise ValueError(f"class folder {d} is not among the train classes ({', '.join(classes)}).\n{LAYOUT}")
        images = _images_in(d)
        if not images:
            raise ValueError(f"class folder {d} contains no image files.\n{LAYOUT}")
        samples.extend((p, index[d.name]) for p in images)
    return classes, samples


def decode_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an image file to an RGB uint8 tensor of shape (3, H, W)."""
    image_mod = require("PIL.Image", "pillow", "imagefolder")
    try:
        with image_mod.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL reports bad data as any of these
        raise ValueError(
            f"cannot decode image {path} ({type(exc).__name__}: {exc}); replace or delete the file"
        ) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(_SeededAugmentation, Dataset):
    """Lazily decoded images with integer labels; ``transform`` maps uint8 (3,H,W) to the model input."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        aug_seed: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self._init_rng(aug_seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        x = decode_image(path)
        if self.transform is not None:
            x = self.transform(x, self._rng())
        return x, label


def load_imagefolder(
    root: str | os.PathLike[str],
    seed: int = 0,
    *,
    size: int = 224,
    augment: bool = True,
) -> DataBundle:
    """Load ``root/train`` and ``root/val`` as an ImageNet-style classification dataset.

    Train: random-resized-crop to ``size`` + horizontal flip (if ``augment``, seeded by
    ``seed``; else the val transform).  Val: shorter side resized to ``size * 256 / 224``,
    then a ``size`` center crop.  Both are normalized with ImageNet mean/std.
    """
    require("PIL.Image", "pillow", "imagefolder")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"image folder root {base} does not exist.\n{LAYOUT}")
    classes, train_samples = scan_split(base / "train")
    _, val_samples = scan_split(base / "val", classes)

    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    val_tf = Compose([Resize(int(size * 256 / 224)), CenterCrop(size), ToFloat(), normalize])
    train_tf = (
        Compose([RandomResizedCrop(size), RandomHorizontalFlip(0.5), ToFloat(), normalize]) if augment else val_tf
    )
    return DataBundle(
        name="imagefolder",
        train=ImageFolderDataset(train_samples, classes, train_tf, aug_seed=seed),
        test=ImageFolderDataset(val_samples, classes, val_tf),
        num_classes=len(classes),
        input_shape=(3, size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=tuple(classes),
        seed=seed,
    )


SPEC = DatasetSpec(
    name="imagefolder",
    builder=lambda root, seed, **opts: load_imagefolder(root, seed, **opts),
    options={
        "size": Option(224, is_int(8, 4096), "an int in 8..4096, e.g. 224"),
        "augment": Option(True, is_bool, "True or False (random-resized-crop + flip on the train split)"),
    },
    summary=LAYOUT,
    needs_root=True,
)
