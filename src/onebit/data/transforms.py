"""Tensor-only data transforms (a small, dependency-free subset of torchvision's).

Every transform is a callable ``t(x, generator=None) -> Tensor`` that works on a single
unbatched sample: ``(C, H, W)`` for images, ``(C, L)`` for 1-D signals.  Random
transforms draw their parameters from ``generator`` when one is given and from torch's
global RNG otherwise, so a seeded ``torch.Generator`` makes a pipeline reproducible.
Deterministic transforms accept and ignore ``generator`` so that :class:`Compose` can
forward it uniformly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CenterCrop",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomShift1d",
    "Resize",
    "ToFloat",
    "Transform",
]


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """Turn ``size`` (int or (h, w)) into a validated (h, w) pair."""
    if isinstance(size, int) and not isinstance(size, bool):
        h = w = size
    elif isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) for s in size
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"{what} must be an int or a pair of ints (height, width), got {size!r}")
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return h, w


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (inclusive) from ``generator`` or the global RNG."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator).item())


def _check_image(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} expects one image tensor of shape (C, H, W), got {shape}")


class Transform:
    """Base class: subclasses implement ``__call__(x, generator=None)``."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, forwarding the same generator to each of them."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose expects callables, got {t!r}")
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(t) for t in self.transforms)
        return f"Compose([\n    {inner}\n])"


class ToFloat(Transform):
    """Convert an integer tensor to float32 in [0, 1] (``x / 255`` for uint8); floats pass through."""

    def __init__(self, scale: float | None = None) -> None:
        self.scale = scale

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.is_floating_point():
            return x if self.scale is None else x * self.scale
        scale = self.scale
        if scale is None:
            if x.dtype != torch.uint8:
                raise TypeError(
                    f"ToFloat() without scale only knows uint8 (0..255) inputs, got {x.dtype}; "
                    "pass ToFloat(scale=1/max_value)"
                )
            scale = 1.0 / 255.0
        return x.to(torch.float32) * scale


class Normalize(Transform):
    """Per-channel ``(x - mean) / std`` on a float tensor whose first dim is the channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise ValueError(
                f"Normalize needs mean and std of the same non-zero length, got {list(mean)} and {list(std)}"
            )
        if bool((std_t <= 0).any()):
            raise ValueError(f"Normalize needs every std > 0, got {list(std)}")
        self.mean = tuple(float(m) for m in mean_t)
        self.std = tuple(float(s) for s in std_t)
        self._mean = mean_t
        self._inv_std = 1.0 / std_t

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"Normalize expects a float tensor, got {x.dtype}; apply ToFloat() first")
        c = x.shape[0] if x.dim() > 0 else 0
        if self._mean.numel() not in (1, c):
            raise ValueError(
                f"Normalize has {self._mean.numel()} channel statistics but the input has {c} channels "
                f"(shape {tuple(x.shape)}; the channel must be the first dim)"
            )
        shape = (-1,) + (1,) * (x.dim() - 1)
        mean = self._mean.to(x.dtype).view(shape)
        inv_std = self._inv_std.to(x.dtype).view(shape)
        return (x - mean) * inv_std


class RandomCrop(Transform):
    """Zero-pad ``padding`` pixels on every side, then crop a random ``size`` window."""

    def __init__(self, size: int | Sequence[int], padding: int = 0, fill: float = 0.0) -> None:
        self.size = _pair(size, "RandomCrop size")
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"RandomCrop padding must be an int >= 0, got {padding!r}")
        self.padding = padding
        self.fill = fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "RandomCrop")
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        h, w = x.shape[-2:]
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(
                f"RandomCrop size {self.size} is larger than the (padded) image {(h, w)}; "
                "use a smaller size or more padding"
            )
        top = _randint(0, h - th, generator)
        left = _randint(0, w - tw, generator)
        return x[..., top : top + th, left : left + tw]


class RandomHorizontalFlip(Transform):
    """Reverse the last dim with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        # Always draw, even for p in {0, 1}, so that the RNG stream does not depend on p.
        if float(torch.rand(1, generator=generator).item()) < self.p:
            return x.flip(-1)
        return x


def _resize_exact(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bilinear resize of a (C, H, W) tensor to ``size``; integer inputs round-trip through float."""
    if tuple(x.shape[-2:]) == size:
        return x
    src = x if x.is_floating_point() else x.to(torch.float32)
    out = F.interpolate(src[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]
    if x.is_floating_point():
        return out.to(x.dtype)
    info = torch.iinfo(x.dtype)
    return out.round_().clamp_(info.min, info.max).to(x.dtype)


class Resize(Transform):
    """Bilinear resize: an int resizes the shorter side keeping the aspect ratio, a pair is exact."""

    def __init__(self, size: int | Sequence[int], antialias: bool = True) -> None:
        self.size: int | tuple[int, int]
        if isinstance(size, int) and not isinstance(size, bool):
            if size <= 0:
                raise ValueError(f"Resize size must be positive, got {size!r}")
            self.size = size
        else:
            self.size = _pair(size, "Resize size")
        self.antialias = antialias

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "Resize")
        h, w = x.shape[-2:]
        if isinstance(self.size, int):
            short, long = (h, w) if h <= w else (w, h)
            new_long = max(1, int(self.size * long / short))
            target = (self.size, new_long) if h <= w else (new_long, self.size)
        else:
            target = self.size
        return _resize_exact(x, target, self.antialias)


class CenterCrop(Transform):
    """Crop the central ``size`` window, zero-padding first if the image is smaller."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "CenterCrop size")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "CenterCrop")
        th, tw = self.size
        h, w = x.shape[-2:]
        if th > h or tw > w:
            ph, pw = max(th - h, 0), max(tw - w, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="constant", value=0.0)
            h, w = x.shape[-2:]
        top = round((h - th) / 2.0)
        left = round((w - tw) / 2.0)
        return x[..., top : top + th, left : left + tw]


class RandomResizedCrop(Transform):
    """Crop a random area/aspect-ratio window and resize it to ``size`` (Inception-style).

    Follows torchvision's sampling: up to 10 tries of an area fraction from ``scale`` and
    a log-uniform aspect ratio from ``ratio``; if none fits, a central crop clamped to
    ``ratio`` is used.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        antialias: bool = True,
    ) -> None:
        self.size = _pair(size, "RandomResizedCrop size")
        if not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"RandomResizedCrop scale must satisfy 0 < min <= max <= 1, got {scale!r}")
        if not (0.0 < ratio[0] <= ratio[1]):
            raise ValueError(f"RandomResizedCrop ratio must satisfy 0 < min <= max, got {ratio!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.antialias = antialias

    def get_params(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, ...]:
        """Sample the crop window ``(top, left, h, w)`` for an image of the given size."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_image(x, "RandomResizedCrop")
        top, left, h, w = self.get_params(x.shape[-2], x.shape[-1], generator)
        return _resize_exact(x[..., top : top + h, left : left + w], self.size, self.antialias)


class RandomShift1d(Transform):
    """Shift a (C, L) signal by a random integer in ``[-max_shift, max_shift]``.

    ``mode="zeros"`` fills the vacated positions with ``fill``; ``mode="circular"`` wraps
    the signal around.  Meant as a light augmentation for MNIST-1D.
    """

    def __init__(self, max_shift: int, mode: str = "zeros", fill: float = 0.0) -> None:
        if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
            raise ValueError(f"RandomShift1d max_shift must be an int >= 0, got {max_shift!r}")
        if mode not in ("zeros", "circular"):
            raise ValueError(f"RandomShift1d mode must be 'zeros' or 'circular', got {mode!r}")
        self.max_shift = max_shift
        self.mode = mode
        self.fill = fill

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"RandomShift1d expects one signal of shape (C, L), got {tuple(x.shape)}")
        shift = _randint(-self.max_shift, self.max_shift, generator)
        if shift == 0:
            return x
        if self.mode == "circular":
            return torch.roll(x, shift, dims=-1)
        length = x.shape[-1]
        out = torch.full_like(x, self.fill)
        if abs(shift) >= length:
            return out
        if shift > 0:
            out[:, shift:] = x[:, : length - shift]
        else:
            out[:, : length + shift] = x[:, -shift:]
        return out
