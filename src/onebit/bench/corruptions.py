"""Corrupted test sets for the corruption-robustness track (BiBench, Qin et al., ICML 2023, arXiv 2301.11233).

Images follow CIFAR-10-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019): the 15 benchmark corruptions (:data:`IMAGE_CORRUPTIONS`) and
the 4 held-out ones (:data:`EXTRA_IMAGE_CORRUPTIONS`), each at severities 1..5, with the **CIFAR**
constants of ``hendrycks/robustness`` ``ImageNet-C/create_c/make_cifar_c.py``.  1-D data (MNIST-1D)
gets :data:`SIGNAL_CORRUPTIONS` (noise, time shifts, amplitude scale, time stretch, dropout).

Why not call ``imagecorruptions.corrupt`` directly: that package (1.1.2) hard-codes the **ImageNet-C**
constants (224-pixel images: e.g. Gaussian noise sigma 0.08..0.38 against CIFAR's 0.04..0.10, defocus
radius 3..10 px against 0.3..1.5 px), rejects images under 32 px, and three of its corruptions no
longer run on current libraries (``glass_blur``/``gaussian_blur`` pass skimage's removed
``multichannel``; ``fog`` uses numpy 2's removed ``np.float_``).  So every corruption is written here,
batched over the whole test set, with the CIFAR-10-C constants; the package is used where it fits
without patching: its ``disk`` defocus kernel, its numpy ``_motion_blur`` (a port of ImageMagick's
``MotionBlurImage``, which make_cifar_c.py calls through Wand) and its frost textures.

Conventions (each a deliberate choice, also listed in the function docstrings):

* **Pixel domain.** A corruption sees the un-normalised image as uint8 ``H x W x 3`` in 0..255
  (``x * std + mean``, clipped to [0, 1], rounded).  Its output is rounded to uint8 — the reference
  truncates with ``np.uint8``; rounding avoids a systematic -0.5/255 bias — and normalised again.
* **Grayscale.** A 1-channel image is replicated to 3 channels, corrupted, and the 3 channels are
  averaged back.  The per-pixel noises (gaussian, shot, impulse, speckle) draw one value per pixel for
  a grayscale image, so that the gray result carries the stated noise level rather than 1/sqrt(3) of it.
  ``saturate`` is the identity on gray images at severities 1-3 (saturation 0 times a factor stays 0).
* **Image size.** The CIFAR constants are in pixels of a 32x32 image.  The *spatial* corruptions
  (blurs, weather, elastic, pixelate, JPEG, spatter) therefore run on a 32x32 working copy of smaller
  images (8x8 and 16x16 digits: nearest-neighbour replication, so the round trip of an unchanged image
  is exact; other sizes: bilinear) and are area-averaged back, so a blur covers the same fraction of a
  digit as of a CIFAR object.  For scikit-learn's digits this is also the physical analogue: their 8x8
  images are counts of 4x4 blocks of 32x32 bitmaps (UCI "Optical Recognition of Handwritten Digits"),
  so the working copy stands for the scanned bitmap.  Per-pixel corruptions (noises, brightness,
  contrast, saturate) run at the native size.  ``work_size=None`` corrupts at the native size instead
  (relatively 4x stronger spatial corruptions on 8x8 digits).  Images larger than 32 px are corrupted
  at their own size with the CIFAR constants (milder than ImageNet-C; for 224-px data use the
  ImageNet-C definitions).
* **Randomness.** Each call draws from its own ``numpy.random.Generator`` seeded by
  ``(seed, crc32(name), severity, chunk)`` (chunks of 1000 images); numpy's global state is neither used
  nor changed.  The draws cover a chunk at once, so a sample's corruption depends on ``seed`` and on its
  position in the set.
* **Caching.** :func:`corrupt_dataset` keeps each corrupted test set in an in-memory LRU cache (and,
  with ``cache_dir``, in an ``.npz`` file) keyed by a fingerprint of the clean data, the normalisation,
  the corruption, the severity and the seed, so a benchmark suite computes it once, not once per model.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import tempfile
import threading
import warnings
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ALL_IMAGE_CORRUPTIONS",
    "EXTRA_IMAGE_CORRUPTIONS",
    "IMAGE_CORRUPTIONS",
    "SEVERITIES",
    "SIGNAL_CORRUPTIONS",
    "available",
    "cache_info",
    "clear_cache",
    "corrupt_dataset",
    "corrupt_images",
    "corrupt_signals",
    "corrupt_tensor",
    "corruptions_for",
    "set_cache_limit",
]

IMAGE_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 CIFAR-10-C benchmark corruptions, in the paper's order (noise, blur, weather, digital)."""

EXTRA_IMAGE_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out ("validation") corruptions of CIFAR-10-C."""

ALL_IMAGE_CORRUPTIONS: tuple[str, ...] = IMAGE_CORRUPTIONS + EXTRA_IMAGE_CORRUPTIONS

SIGNAL_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shift",
    "circular_shift",
    "scale",
    "time_stretch",
    "dropout",
)
"""Corruptions of 1-D signals ``(C, L)``; parameters in :data:`SIGNAL_PARAMETERS`."""

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Corruptions whose constants are lengths in pixels of a 32x32 image (run on a 32x32 working copy).
_SPATIAL = frozenset(
    {
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
        "gaussian_blur",
        "spatter",
    }
)
# Per-pixel noises: one draw per pixel for grayscale images (see the module docstring).
_PIXEL_NOISE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})

# CIFAR-10-C constants, copied value for value from make_cifar_c.py (hendrycks/robustness).
_CIFAR: dict[str, Sequence[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],
    # (sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    # (disk radius, alias blur)
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    # zoom factors, as np.arange(1, stop, 0.01) -- float rounding makes `stop` itself included, as in the reference
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],
    # (fog strength, plasma wibble decay)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    # (image weight, frost weight)
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    # (loc, scale, zoom, threshold, blur radius, blur sigma, image blend)
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    # (loc, scale, sigma, threshold, intensity / mud sigma, 0 = water else mud)
    "spatter": [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    # (saturation factor, saturation offset)
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    # (alpha, sigma, affine max shift) as fractions of the image side (IMSIZE * ... in the reference)
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
}

SIGNAL_PARAMETERS: dict[str, tuple[float, ...]] = {
    # noise std as a fraction of each signal's own std (SNR ~ 20, 14, 9, 6, 3 dB)
    "gaussian_noise": (0.1, 0.2, 0.35, 0.5, 0.7),
    # shift as a fraction of the length L (MNIST-1D, L = 40: 2, 4, 6, 8, 10 samples), random direction
    "shift": (0.05, 0.1, 0.15, 0.2, 0.25),
    "circular_shift": (0.05, 0.1, 0.15, 0.2, 0.25),
    # amplitude factor a, applied as a or 1/a (random per sample); MNIST-1D itself varies amplitude by +-20%
    "scale": (1.25, 1.5, 2.0, 2.5, 3.0),
    # time-axis factor r about the centre, applied as r or 1/r (random per sample)
    "time_stretch": (1.1, 1.2, 1.3, 1.4, 1.5),
    # fraction of time steps set to 0 (all channels)
    "dropout": (0.05, 0.1, 0.2, 0.3, 0.4),
}
"""Severity 1..5 parameter of each signal corruption (see :func:`corrupt_signals`)."""


# --------------------------------------------------------------------------------------------
# validation and optional dependencies
# --------------------------------------------------------------------------------------------


def available(kind: str = "image") -> tuple[str, ...]:
    """Corruption names of ``kind``: ``"image"`` (the 15 CIFAR-10-C benchmark corruptions),
    ``"image_extra"`` (the 4 held-out ones), ``"image_all"`` (all 19) or ``"signal"`` (1-D data)."""
    kinds = {
        "image": IMAGE_CORRUPTIONS,
        "image_extra": EXTRA_IMAGE_CORRUPTIONS,
        "image_all": ALL_IMAGE_CORRUPTIONS,
        "signal": SIGNAL_CORRUPTIONS,
    }
    if kind not in kinds:
        raise ValueError(f"unknown corruption kind {kind!r}; valid kinds: {', '.join(kinds)}")
    return kinds[kind]


def corruptions_for(input_shape: Sequence[int], *, extra: bool = True) -> tuple[str, ...]:
    """The corruptions that apply to samples of ``input_shape``: ``(C, H, W)`` images with C = 1 or 3 get
    the image set (all 19 with ``extra``, else the 15 benchmark ones), ``(C, L)`` signals the signal set."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return ALL_IMAGE_CORRUPTIONS if extra else IMAGE_CORRUPTIONS
    if len(shape) == 2:
        return SIGNAL_CORRUPTIONS
    raise ValueError(
        f"no corruption set for input shape {shape}: expected (C, H, W) images with C = 1 or 3, or (C, L) signals"
    )


def _check_severity(severity: object) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be an int in 1..5 (one of {list(SEVERITIES)}), got {severity!r}")
    return int(severity)


def _check_name(name: object, valid: tuple[str, ...], kind: str) -> str:
    if not isinstance(name, str) or name not in valid:
        other = SIGNAL_CORRUPTIONS if kind == "image" else ALL_IMAGE_CORRUPTIONS
        hint = ""
        if isinstance(name, str) and name in other:
            hint = f" ({name!r} is {'a signal' if kind == 'image' else 'an image'} corruption, for other data)"
        raise ValueError(f"unknown {kind} corruption {name!r}{hint}; valid {kind} corruptions: {', '.join(valid)}")
    return name


def _check_work_size(work_size: object) -> int | None:
    if work_size is None:
        return None
    if isinstance(work_size, bool) or not isinstance(work_size, int | np.integer) or not 8 <= int(work_size) <= 4096:
        raise ValueError(f"work_size must be None or an int in 8..4096 (32 = CIFAR's size), got {work_size!r}")
    return int(work_size)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or int(seed) < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _rng(seed: int, name: str, severity: int, chunk: int = 0) -> np.random.Generator:
    # crc32 (not hash()) is stable across processes; the name keeps corruptions' streams independent.
    return np.random.default_rng([seed, zlib.crc32(name.encode()), severity, chunk])


def _require(module: str, pip_name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"image corruptions need {pip_name} (import of {module!r} failed: {exc}); pip install '{pip_name}'"
        ) from None


def _imagecorruptions() -> ModuleType:
    """``imagecorruptions.corruptions`` (for its defocus disk, motion blur and frost textures)."""
    try:
        with warnings.catch_warnings():
            # importing pkg_resources warns that it is deprecated; that is the package's business, not the user's
            warnings.simplefilter("ignore")
            return importlib.import_module("imagecorruptions.corruptions")
    except ModuleNotFoundError as exc:
        if exc.name == "pkg_resources":
            raise ImportError(
                "imagecorruptions 1.1.2 imports pkg_resources, which setuptools >= 81 no longer ships: "
                "pip install 'setuptools<81'"
            ) from None
        if exc.name == "imagecorruptions":
            raise ImportError(
                "image corruptions need the imagecorruptions package: "
                "pip install 'imagecorruptions==1.1.2' 'setuptools<81'"
            ) from None
        raise ImportError(
            f"imagecorruptions could not be imported ({exc}); "
            "pip install 'imagecorruptions==1.1.2' 'setuptools<81' scikit-image opencv-python"
        ) from None


# --------------------------------------------------------------------------------------------
# helpers shared by the image corruptions; x is float64 (N, H, W, 3) in [0, 1]
# --------------------------------------------------------------------------------------------


def _gaussian(x: np.ndarray, sigma: float, *, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian over the two spatial axes of (N, H, W[, C]) (its defaults: mode
    "nearest", truncate 4; what ``multichannel=True`` meant), batched."""
    ndimage = _require("scipy.ndimage", "scipy")
    sig = (0.0, sigma, sigma) + (0.0,) * (x.ndim - 3)
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """make_cifar_c.py's ``clipped_zoom`` over a batch (N, H, W, C): crop the centre 1/factor, zoom it back
    with linear interpolation, trim to H x W.  Rows and columns are handled separately (the reference
    assumes square images).

    ``scipy.ndimage.zoom(order=1)`` maps output pixel o to input (in - 1) / (out - 1) * o, which is
    torch's bilinear interpolation with ``align_corners=True`` (equal to float precision, and batched).
    """
    h, w = x.shape[1:3]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = torch.from_numpy(np.ascontiguousarray(x[:, top : top + ch, left : left + cw])).permute(0, 3, 1, 2)
    size = (round(ch * factor), round(cw * factor))  # scipy's output shape rule
    out = F.interpolate(crop, size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1).numpy()
    trim_top, trim_left = (out.shape[1] - h) // 2, (out.shape[2] - w) // 2
    return out[:, trim_top : trim_top + h, trim_left : trim_left + w]


def _plasma_fractal(rng: np.random.Generator, n: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height maps in [0, 1], shape (n, mapsize, mapsize) — make_cifar_c.py's
    ``plasma_fractal`` (after FLHerne/mapgen) for a batch, with float64 instead of numpy 2's removed
    ``np.float_`` and our generator instead of numpy's global one."""
    m = np.zeros((n, mapsize, mapsize), dtype=np.float64)
    step = mapsize
    wibble = 100.0

    def wibbled_mean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        # squares: the centre of each square of corners `step` apart
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        acc = corners + np.roll(corners, -1, axis=1)
        acc = acc + np.roll(acc, -1, axis=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(acc)
        # diamonds: the edge midpoints, from the two centres and two corners around each
        centres = m[:, half:mapsize:step, half:mapsize:step]
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)
        tt = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.min(axis=(1, 2), keepdims=True)
    top = m.max(axis=(1, 2), keepdims=True)
    return m / np.where(top > 0, top, 1.0)


def _rgb2hsv(x: np.ndarray) -> np.ndarray:
    return _require("skimage.color", "scikit-image").rgb2hsv(x)


def _hsv2rgb(x: np.ndarray) -> np.ndarray:
    return _require("skimage.color", "scikit-image").hsv2rgb(x)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
_FROST: dict[tuple[int, int], list[np.ndarray]] = {}
_FROST_LOCK = threading.Lock()


def _frost_textures(h: int, w: int) -> list[np.ndarray]:
    """The frost photographs (RGB float [0, 1]) scaled by 0.2 as make_cifar_c.py does, and further up if
    an image of h x w would not fit inside with room for a random crop.  Only the first five files are
    used: the reference draws ``np.random.randint(5)`` over its list of six."""
    key = (h, w)
    with _FROST_LOCK:
        if key not in _FROST:
            ic = _imagecorruptions()
            cv2 = _require("cv2", "opencv-python")
            folder = Path(ic.__file__).parent / "frost"
            textures = []
            for name in _FROST_FILES:
                bgr = cv2.imread(str(folder / name))
                if bgr is None:
                    raise FileNotFoundError(
                        f"frost texture {folder / name} is missing or unreadable; "
                        "pip install --force-reinstall imagecorruptions==1.1.2"
                    )
                fx = 0.2
                # the crop needs at least one spare row/column (randint's exclusive upper bound)
                fx = max(fx, (h + 1) / bgr.shape[0], (w + 1) / bgr.shape[1])
                small = cv2.resize(bgr, (0, 0), fx=fx, fy=fx)
                textures.append(small[..., ::-1].astype(np.float64) / 255.0)
            _FROST[key] = textures
        return _FROST[key]


# --------------------------------------------------------------------------------------------
# the 19 image corruptions (CIFAR-10-C definitions); each maps float (N, H, W, 3) in [0, 1] to the same
# --------------------------------------------------------------------------------------------


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(size=x.shape, scale=c)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(x * c) / float(c)


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    # skimage.util.random_noise(mode="s&p", amount=c, salt_vs_pepper=0.5), drawn from our generator
    out = x.copy()
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def _speckle_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + x * rng.normal(size=x.shape, scale=c)


def _gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return _gaussian(x, c)


def _glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    """Blur, then swap each pixel with a random neighbour at most ``max_delta`` away, bottom-right to
    top-left, ``iterations`` times, then blur again.  The swaps are sequential within an image (a pixel
    may move several times), so they loop over positions but run for the whole batch at once."""
    sigma, delta, iterations = c
    n, h, w = x.shape[:3]
    img = (_gaussian(x, sigma) * 255).astype(np.uint8)  # the reference truncates here with np.uint8
    rows = range(h - delta, delta, -1)
    cols = range(w - delta, delta, -1)
    # randint(-delta, delta) per position, as the reference (upper bound exclusive)
    offsets = rng.integers(-delta, delta, size=(iterations, len(rows), len(cols), n, 2))
    batch = np.arange(n)
    for it in range(iterations):
        for i, hh in enumerate(rows):
            for j, ww in enumerate(cols):
                dx, dy = offsets[it, i, j, :, 0], offsets[it, i, j, :, 1]
                hp, wp = hh + dy, ww + dx
                here = img[:, hh, ww].copy()
                img[:, hh, ww] = img[batch, hp, wp]
                img[batch, hp, wp] = here
    return _gaussian(img / 255.0, sigma)


def _defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    ndimage = _require("scipy.ndimage", "scipy")
    kernel = _imagecorruptions().disk(radius=c[0], alias_blur=c[1]).astype(np.float64)
    # The 17x17 kernel is zero outside a small centre; cropping it changes nothing but the cost.
    nz_r, nz_c = np.nonzero(kernel)
    r = max(abs(nz_r - kernel.shape[0] // 2).max(), abs(nz_c - kernel.shape[1] // 2).max())
    mid = kernel.shape[0] // 2
    kernel = kernel[mid - r : mid + r + 1, mid - r : mid + r + 1]
    # cv2.filter2D correlates with BORDER_REFLECT_101, which is scipy's "mirror"
    return ndimage.correlate(x, kernel[None, :, :, None], mode="mirror")


def _motion_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    ic = _imagecorruptions()
    angles = rng.uniform(-45, 45, size=x.shape[0])
    return np.stack([ic._motion_blur(img, radius=c[0], sigma=c[1], angle=a) for img, a in zip(x, angles)])


def _zoom_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    factors = np.arange(1, c, 0.01)
    out = np.zeros_like(x)
    for z in factors:
        out += _clipped_zoom(x, float(z))
    return (x + out) / (len(factors) + 1)


def _snow(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    ic = _imagecorruptions()
    loc, scale, zoom, threshold, radius, sigma, blend = c
    n, h, w = x.shape[:3]
    layer = rng.normal(size=(n, h, w, 1), loc=loc, scale=scale)
    layer = _clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0
    # the reference passes the layer through an 8-bit PNG before and after ImageMagick's motion blur
    layer8 = (np.clip(layer[..., 0], 0, 1) * 255).astype(np.uint8).astype(np.float64)
    angles = rng.uniform(-135, -45, size=n)
    blurred = np.stack([ic._motion_blur(lay, radius=radius, sigma=sigma, angle=a) for lay, a in zip(layer8, angles)])
    snow = (np.clip(np.rint(blurred), 0, 255) / 255.0)[..., None]
    gray = x @ np.array([0.299, 0.587, 0.114])  # cv2's RGB2GRAY weights
    x = blend * x + (1 - blend) * np.maximum(x, gray[..., None] * 1.5 + 0.5)
    return x + snow + snow[:, ::-1, ::-1]


def _frost(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    n, h, w = x.shape[:3]
    textures = _frost_textures(h, w)
    which = rng.integers(0, len(textures), size=n)
    out = np.empty_like(x)
    for k in range(n):
        tex = textures[which[k]]
        top = rng.integers(0, tex.shape[0] - h)
        left = rng.integers(0, tex.shape[1] - w)
        out[k] = c[0] * x[k] + c[1] * tex[top : top + h, left : left + w]
    return out


def _fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """x + strength * plasma, rescaled by max / (max + strength) per image (make_cifar_c.py's ``fog``)."""
    n, h, w = x.shape[:3]
    mapsize = 1 << (max(h, w, 2) - 1).bit_length()  # the next power of two >= the larger side
    plasma = _plasma_fractal(rng, n, mapsize, c[1])[:, :h, :w, None]
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + c[0] * plasma) * max_val / (max_val + c[0])


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    hsv = _rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _hsv2rgb(hsv)


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def _saturate(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    hsv = _rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return _hsv2rgb(hsv)


def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    image_mod = _require("PIL.Image", "pillow")
    out = np.empty_like(x)
    for k, img in enumerate(_to_uint8(x)):
        buf = io.BytesIO()
        image_mod.fromarray(img).save(buf, "JPEG", quality=int(c))
        buf.seek(0)
        with image_mod.open(buf) as decoded:
            out[k] = np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0
    return out


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    image_mod = _require("PIL.Image", "pillow")
    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    out = np.empty_like(x)
    for k, img in enumerate(_to_uint8(x)):
        # CIFAR-10-C resizes down and back up with BOX filters (ImageNet-C uses NEAREST upward)
        pil = image_mod.fromarray(img).resize(small, image_mod.BOX).resize((w, h), image_mod.BOX)
        out[k] = np.asarray(pil, dtype=np.float64) / 255.0
    return out


def _elastic_transform(x: np.ndarray, c: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (three points moved by up to ``c[2]``) followed by a smooth random
    displacement field (uniform noise blurred by ``c[1]``, scaled by ``c[0]``), all as fractions of the
    image side (make_cifar_c.py uses IMSIZE = 32; here the image's own height)."""
    cv2 = _require("cv2", "opencv-python")
    ndimage = _require("scipy.ndimage", "scipy")
    n, h, w, ch = x.shape
    alpha, sigma, shift = (v * h for v in c)
    centre = np.float32([h, w]) // 2
    half = min(h, w) // 3
    pts1 = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    warped = np.empty(x.shape, dtype=np.float32)
    for k in range(n):
        pts2 = pts1 + rng.uniform(-shift, shift, size=pts1.shape).astype(np.float32)
        m = cv2.getAffineTransform(pts1, pts2)
        warped[k] = cv2.warpAffine(x[k].astype(np.float32), m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    fields = rng.uniform(-1, 1, size=(2, n, h, w))
    dx = (_gaussian(fields[0], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_gaussian(fields[1], sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    nn_, yy, xx, cc = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), np.arange(ch), indexing="ij")
    coords = np.stack([nn_, yy + dy[..., None], xx + dx[..., None], cc]).reshape(4, -1)
    out = ndimage.map_coordinates(warped, coords, order=1, mode="reflect")
    return out.reshape(x.shape).astype(np.float64)


def _spatter(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Water drops (severities 1-3: a turquoise layer shaded by an edge-distance map) or mud (4-5: brown
    blobs replacing the image).  A layer left empty by the threshold — common on small images —
    adds nothing, where the reference divides 0 by 0 and writes NaN."""
    cv2 = _require("cv2", "opencv-python")
    loc, scale, sigma, threshold, intensity, mud = c
    n, h, w = x.shape[:3]
    liquid = _gaussian(rng.normal(size=(n, h, w), loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if mud == 0:
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
        colour = np.array([175, 238, 238]) / 255.0  # pale turquoise
        out = np.empty_like(x)
        for k in range(n):
            layer = (liquid[k] * 255).astype(np.uint8)
            dist = 255 - cv2.Canny(layer, 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            dist = cv2.blur(dist, (3, 3)).astype(np.float32)
            m = layer.astype(np.float64) * dist
            peak = m.max()
            m = m / peak * intensity if peak > 0 else m
            out[k] = x[k] + m[..., None] * colour
        return out
    mask = _gaussian((liquid > threshold).astype(np.float64), intensity)
    mask[mask < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0  # mud brown
    return x * (1 - mask[..., None]) + mask[..., None] * colour


_IMAGE_FUNCS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "glass_blur": _glass_blur,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturate": _saturate,
    "jpeg_compression": _jpeg_compression,
    "pixelate": _pixelate,
    "elastic_transform": _elastic_transform,
    "spatter": _spatter,
}


def _resize(x: np.ndarray, size: tuple[int, int], *, down: bool) -> np.ndarray:
    """Resize float (N, H, W, 3) images: area averaging down, nearest-neighbour replication up by an
    integer factor (exact round trip), bilinear up otherwise."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    h, w = x.shape[1:3]
    if down:
        t = F.adaptive_avg_pool2d(t, size)
    elif size[0] % h == 0 and size[1] % w == 0:
        t = F.interpolate(t, size=size, mode="nearest")
    else:
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t.numpy().transpose(0, 2, 3, 1)


def corrupt_images(
    images: np.ndarray, corruption: str, severity: int, *, seed: int = 0, work_size: int | None = 32,
) -> np.ndarray:
    """Corrupt a batch of uint8 images with one CIFAR-10-C corruption.

    Args:
        images: uint8 array ``(N, H, W, 3)`` (RGB) or ``(N, H, W)`` / ``(N, H, W, 1)`` (grayscale), 0..255.
        corruption: a name from :data:`ALL_IMAGE_CORRUPTIONS`.
        severity: 1..5.
        seed: seeds the corruption's private generator (see the module docstring).
        work_size: the spatial corruptions of images smaller than this run on a ``work_size`` square
            working copy (default 32, the size the CIFAR constants are in pixels of); ``None`` corrupts
            every image at its own size, which makes them relatively stronger on small images.

    Returns:
        uint8 array of the input's shape.  Grayscale images are replicated to RGB, corrupted and
        averaged back (per-pixel noises draw one value per pixel instead).
    """
    name = _check_name(corruption, ALL_IMAGE_CORRUPTIONS, "image")
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    work_size = _check_work_size(work_size)
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(
            f"corrupt_images() takes uint8 images (0..255), got dtype {arr.dtype}; "
            "convert with np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)"
        )
    shape = arr.shape
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.shape[0] == 0 or min(arr.shape[1:3]) < 1:
        raise ValueError(
            f"corrupt_images() takes images of shape (N, H, W, 3) or (N, H, W[, 1]) with N >= 1, got {shape}"
        )
    # Fixed-size chunks bound the memory of the batched corruptions (elastic_transform's coordinate grids
    # take ~100 bytes per pixel) on large test sets; each chunk has its own stream, so results do not
    # depend on anything but the seed and the image's position.
    chunks = [_corrupt_chunk(arr[i:i + _CHUNK], name, severity, _rng(seed, name, severity, i // _CHUNK), work_size)
              for i in range(0, arr.shape[0], _CHUNK)]
    return np.concatenate(chunks).reshape(shape)


_CHUNK = 1000


def _corrupt_chunk(
    arr: np.ndarray, name: str, severity: int, rng: np.random.Generator, work_size: int | None,
) -> np.ndarray:
    """Corrupt uint8 (n, H, W, 1 or 3) images; see :func:`corrupt_images`."""
    gray = arr.shape[-1] == 1
    x = arr.astype(np.float64) / 255.0
    h, w = x.shape[1:3]
    param = _CIFAR[name][severity - 1]
    func = _IMAGE_FUNCS[name]
    if name in _PIXEL_NOISE:
        # per-pixel noise: a gray image keeps its single channel, so the noise is one draw per pixel
        return _to_uint8(np.clip(func(x, param, rng), 0, 1))
    rgb = np.repeat(x, 3, axis=-1) if gray else x
    small = name in _SPATIAL and work_size is not None and max(h, w) < work_size
    if small:
        rgb = _resize(rgb, (work_size, work_size), down=False)
    out = np.clip(func(rgb, param, rng), 0, 1)
    out8 = _to_uint8(out).astype(np.float64) / 255.0  # the reference stores uint8 at the working size
    if small:
        out8 = _resize(out8, (h, w), down=True)
    if gray:
        out8 = out8.mean(axis=-1, keepdims=True)
    return _to_uint8(out8)


# --------------------------------------------------------------------------------------------
# 1-D signals
# --------------------------------------------------------------------------------------------


def corrupt_signals(signals: np.ndarray, corruption: str, severity: int, *, seed: int = 0) -> np.ndarray:
    """Corrupt a batch of un-normalised 1-D signals ``(N, C, L)``; returns float32 of the same shape.

    Parameters per severity are in :data:`SIGNAL_PARAMETERS`, chosen against MNIST-1D's own
    variability (Greydanus, 2020: amplitude +-20%, time dilation up to ~1.5x from random padding,
    correlated noise 0.25 and i.i.d. noise 0.02 of the template scale, circular translation):

    * ``gaussian_noise``: add N(0, (p * s)^2), s = the signal's own std over channels and time.
    * ``shift``: move by k = round(p * L) samples (at least 1) left or right (random per sample),
      filling the vacated samples with 0.
    * ``circular_shift``: the same k, rolled around (MNIST-1D's generator translates circularly before
      its shear, so this tests the shear-broken part of that invariance).
    * ``scale``: multiply by p or 1/p (random per sample).
    * ``time_stretch``: resample the time axis about its centre by p or 1/p (random per sample), linear
      interpolation, edge values held beyond the ends.
    * ``dropout``: set a random fraction p of the time steps (all channels) to 0.
    """
    name = _check_name(corruption, SIGNAL_CORRUPTIONS, "signal")
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    x = np.asarray(signals)
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] < 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"corrupt_signals() takes float signals of shape (N, C, L) with N >= 1 and L >= 2, "
            f"got shape {x.shape} and dtype {x.dtype}"
        )
    x = x.astype(np.float64)
    n, _, length = x.shape
    p = SIGNAL_PARAMETERS[name][severity - 1]
    rng = _rng(seed, name, severity)
    if name == "gaussian_noise":
        s = x.reshape(n, -1).std(axis=1)[:, None, None]
        out = x + rng.normal(size=x.shape) * p * s
    elif name in ("shift", "circular_shift"):
        k = max(1, round(p * length))
        signs = rng.choice(np.array([-1, 1]), size=n)
        out = np.empty_like(x)
        for i in range(n):
            out[i] = np.roll(x[i], int(signs[i] * k), axis=-1)
            if name == "shift":
                if signs[i] > 0:
                    out[i, :, :k] = 0.0
                else:
                    out[i, :, length - k :] = 0.0
    elif name == "scale":
        factors = np.where(rng.random(n) < 0.5, p, 1.0 / p)
        out = x * factors[:, None, None]
    elif name == "time_stretch":
        factors = np.where(rng.random(n) < 0.5, p, 1.0 / p)
        centre = (length - 1) / 2.0
        t = np.arange(length, dtype=np.float64)
        out = np.empty_like(x)
        for i in range(n):
            # output sample t reads the input at centre + (t - centre) / factor: factor > 1 stretches
            src = np.clip(centre + (t - centre) / factors[i], 0, length - 1)
            for ch in range(x.shape[1]):
                out[i, ch] = np.interp(src, t, x[i, ch])
    else:  # dropout
        drop = rng.random((n, 1, length)) < p
        out = np.where(drop, 0.0, x)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# tensors, datasets and the cache
# --------------------------------------------------------------------------------------------


def _stats(values: Sequence[float] | float, channels: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels or not torch.isfinite(t).all() or (what == "std" and (t <= 0).any()):
        raise ValueError(
            f"{what} must be one finite{' positive' if what == 'std' else ''} number per channel "
            f"({channels}), got {values!r}"
        )
    return t


def _kind(shape: Sequence[int]) -> str:
    if len(shape) == 4 and shape[1] in (1, 3):
        return "image"
    if len(shape) == 3:
        return "signal"
    raise ValueError(
        f"expected a batch of images (N, C, H, W) with C = 1 or 3 or of signals (N, C, L), got shape {tuple(shape)}"
    )


def corrupt_tensor(
    x: torch.Tensor,
    corruption: str,
    severity: int,
    *,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    seed: int = 0,
    work_size: int | None = 32,
) -> torch.Tensor:
    """Corrupt a batch of samples as a model sees them.

    Args:
        x: normalised float ``(N, C, H, W)`` images (C = 1 or 3) or ``(N, C, L)`` signals — un-normalised
            as ``x * std + mean`` (images must then lie in [0, 1]) and normalised again after the
            corruption; or raw uint8 ``(N, C, H, W)`` images in 0..255 (mean/std unused), returned as uint8.
        corruption: an image corruption (:data:`ALL_IMAGE_CORRUPTIONS`) for images, a signal corruption
            (:data:`SIGNAL_CORRUPTIONS`) for signals.
        severity: 1..5.
        mean, std: per-channel normalisation of ``x`` (a bundle's ``mean``/``std``).
        seed: seeds the corruption (deterministic for a given seed).
        work_size: working size of the spatial image corruptions (see :func:`corrupt_images`).

    Returns:
        A new tensor of ``x``'s shape and dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"corrupt_tensor() takes a torch.Tensor, got {type(x).__name__}")
    kind = _kind(x.shape)
    if kind == "image":
        _check_name(corruption, ALL_IMAGE_CORRUPTIONS, "image")
    else:
        _check_name(corruption, SIGNAL_CORRUPTIONS, "signal")
    if x.shape[0] == 0:
        raise ValueError("corrupt_tensor() got an empty batch (N = 0)")
    channels = int(x.shape[1])
    if x.dtype == torch.uint8:
        if kind != "image":
            raise ValueError("uint8 input is only understood for images (N, C, H, W); signals must be float")
        out = corrupt_images(x.detach().cpu().permute(0, 2, 3, 1).numpy(), corruption, severity, seed=seed,
                             work_size=work_size)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2))).to(x.device)
    if not x.is_floating_point():
        raise ValueError(f"corrupt_tensor() takes float (normalised) or uint8 tensors, got {x.dtype}")
    m = _stats(mean, channels, "mean")
    s = _stats(std, channels, "std")
    view = (1, channels) + (1,) * (x.dim() - 2)
    raw = x.detach().cpu().to(torch.float64) * s.view(view) + m.view(view)
    if kind == "signal":
        out_raw = torch.from_numpy(corrupt_signals(raw.numpy(), corruption, severity, seed=seed)).to(torch.float64)
    else:
        lo, hi = float(raw.min()), float(raw.max())
        # a little slack for float rounding and bilinear resizing; beyond it mean/std are wrong
        if lo < -0.02 or hi > 1.02:
            raise ValueError(
                f"un-normalised images (x * std + mean) span [{lo:.3g}, {hi:.3g}], not [0, 1]: pass the mean "
                "and std the data was normalised with (bundle.mean, bundle.std)"
            )
        u8 = np.rint(raw.clamp(0, 1).numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        out = corrupt_images(u8, corruption, severity, seed=seed, work_size=work_size)
        out_raw = torch.from_numpy(out.transpose(0, 3, 1, 2).astype(np.float64) / 255.0)
    return ((out_raw - m.view(view)) / s.view(view)).to(device=x.device, dtype=x.dtype)


class _Cache:
    """A byte-bounded LRU of corrupted tensors, shared by the process.

    Sets are handed out without a copy (a suite asks for each one once per model); an entry whose tensor
    was modified in place since it was stored (torch bumps ``_version``) counts as missing and is rebuilt.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, tuple[torch.Tensor, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.lock = threading.Lock()

    def get(self, key: str) -> torch.Tensor | None:
        with self.lock:
            entry = self.items.get(key)
            if entry is not None and entry[0]._version != entry[1]:
                self._drop(key)
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self.items.move_to_end(key)
            return entry[0]

    def put(self, key: str, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        with self.lock:
            if key in self.items:
                self._drop(key)
            if size > self.max_bytes:
                return
            self.items[key] = (t, t._version)
            self.bytes += size
            self._evict()

    def _drop(self, key: str) -> None:
        t, _ = self.items.pop(key)
        self.bytes -= t.numel() * t.element_size()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self.items:
            self._drop(next(iter(self.items)))

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.bytes = self.hits = self.misses = 0


_CACHE = _Cache(2 << 30)
# id(tensor) -> (weak reference, data pointer, version, digest); tensors compare element-wise, so they cannot
# be keys of a WeakKeyDictionary.  The weak reference's callback drops the entry when the tensor dies.
_FINGERPRINTS: dict[int, tuple[weakref.ref[torch.Tensor], int, int, str]] = {}


def clear_cache() -> None:
    """Forget every corrupted set held in memory (files under a ``cache_dir`` are kept)."""
    _CACHE.clear()


def set_cache_limit(max_bytes: int) -> None:
    """Bound the in-memory cache (default 2 GiB); least recently used sets are dropped first."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with _CACHE.lock:
        _CACHE.max_bytes = max_bytes
        _CACHE._evict()


def cache_info() -> dict[str, int]:
    """``{"entries", "bytes", "max_bytes", "hits", "misses"}`` of the in-memory cache."""
    with _CACHE.lock:
        return {
            "entries": len(_CACHE.items),
            "bytes": _CACHE.bytes,
            "max_bytes": _CACHE.max_bytes,
            "hits": _CACHE.hits,
            "misses": _CACHE.misses,
        }


def _fingerprint(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes, remembered per tensor object until it is modified
    in place (torch bumps ``_version``), so a suite's thousands of look-ups hash the test set once."""
    stamp = (t.data_ptr(), t._version)
    known = _FINGERPRINTS.get(id(t))
    if known is not None and known[0]() is t and known[1:3] == stamp:
        return known[3]
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    key = id(t)
    _FINGERPRINTS[key] = (weakref.ref(t, lambda _, key=key: _FINGERPRINTS.pop(key, None)), *stamp, digest)
    return digest


def _read_npz(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arr = f["data"]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing, truncated or foreign: recompute and overwrite
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t if tuple(t.shape) == shape and t.dtype == dtype else None


def _write_npz(path: Path, t: torch.Tensor) -> None:
    """Atomic write (temp file + rename): concurrent suites never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, data=t.numpy())
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def corrupt_dataset(
    data: Any,
    corruption: str,
    severity: int,
    *,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    seed: int = 0,
    work_size: int | None = 32,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """A corrupted copy of a test set, computed once per (data, corruption, severity, seed).

    Args:
        data: a :class:`onebit.data.DataBundle` (its ``test`` split is used, with its ``mean``/``std``)
            or an :class:`onebit.data.InMemoryDataset` (pass ``mean`` and ``std``).  Its ``.data`` is either
            normalised float ``(N, C, H, W)`` / ``(N, C, L)`` samples, or raw uint8 images that the
            dataset's transform normalises per item (CIFAR-10); the transform is kept.
        corruption: a name from :func:`corruptions_for` of the data's sample shape.
        severity: 1..5.
        mean, std: the normalisation of ``.data`` (default: the bundle's).
        seed: seeds the corruption.
        work_size: working size of the spatial image corruptions (see :func:`corrupt_images`).
        cache: reuse a set computed earlier in this process (and store a new one).
        cache_dir: also keep sets as ``.npz`` files in this directory (survives the process).

    Returns:
        An :class:`onebit.data.InMemoryDataset` with the corrupted samples, the same labels and transform.
        Its ``.data`` is the cached tensor itself (no copy per model): treat it as read-only.  An in-place
        torch edit is detected and the set rebuilt on the next call; an edit through a numpy view is not.
    """
    from onebit.data import DataBundle, InMemoryDataset  # noqa: PLC0415 - keeps onebit.bench importable alone

    if isinstance(data, DataBundle):
        dataset = data.test
        mean = data.mean if mean is None else mean
        std = data.std if std is None else std
    else:
        dataset = data
    if not (hasattr(dataset, "data") and hasattr(dataset, "labels") and isinstance(dataset.data, torch.Tensor)):
        raise ValueError(
            f"corrupt_dataset() takes a DataBundle or an InMemoryDataset (with .data and .labels "
            f"tensors), got {type(dataset).__name__}"
        )
    x: torch.Tensor = dataset.data
    kind = _kind(x.shape)
    _check_name(corruption, ALL_IMAGE_CORRUPTIONS if kind == "image" else SIGNAL_CORRUPTIONS, kind)
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    work_size = _check_work_size(work_size)
    if x.dtype == torch.uint8:
        mean, std = 0.0, 1.0  # raw pixels: the dataset's transform normalises them
    elif mean is None or std is None:
        raise ValueError(
            "corrupt_dataset() needs mean= and std= (the normalisation of the dataset's .data) "
            "when given a dataset rather than a DataBundle"
        )
    m = _stats(mean, int(x.shape[1]), "mean")
    s = _stats(std, int(x.shape[1]), "std")
    key_src = f"{_fingerprint(x)}|{m.tolist()}|{s.tolist()}|{corruption}|{severity}|{seed}|{work_size}|v1"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:32]

    out = _CACHE.get(key) if cache else None
    path = Path(cache_dir) / f"corrupt-{corruption}-{severity}-{key}.npz" if cache_dir is not None else None
    if out is None:
        if path is not None:
            out = _read_npz(path, tuple(x.shape), x.dtype)
        if out is None:
            out = corrupt_tensor(x, corruption, severity, mean=m.tolist(), std=s.tolist(), seed=seed,
                                 work_size=work_size)
            if path is not None:
                _write_npz(path, out)
        if cache:
            _CACHE.put(key, out)
    # Shared with the cache, not copied: an in-place edit of the returned data is detected by the cache
    # (see _Cache), but edits through a numpy view are not -- copy the data before editing it.
    return InMemoryDataset(out, dataset.labels, getattr(dataset, "transform", None))
