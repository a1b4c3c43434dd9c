"""Dataset registry with declarative, validated options."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onebit._registry import Option, Registry, describe_options, is_bool, is_int
from onebit.data._bundle import DataBundle

__all__ = ["DatasetSpec", "Option", "available", "is_bool", "is_int", "load", "register"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one dataset: ``builder(root, seed, **options) -> DataBundle``."""

    name: str
    builder: Callable[..., DataBundle]
    options: dict[str, Option]
    summary: str
    needs_root: bool = False


_DATASETS: Registry[DatasetSpec] = Registry(duplicate="dataset {name!r} is already registered",
                                            unknown="unknown dataset {name!r}; valid names: {names}", casefold=True)
_REGISTRY = _DATASETS.entries  # lower-case name → spec


def register(spec: DatasetSpec) -> None:
    """Add a dataset to the registry (names are case-insensitive)."""
    _DATASETS.add(spec.name, spec)


def available() -> list[str]:
    """Names accepted by :func:`load`, sorted."""
    return _DATASETS.names()


def load(name: str, root: str | os.PathLike[str] | None = None, *, seed: int = 0, **options: Any) -> DataBundle:
    """Load a registered dataset.

    Args:
        name: one of :func:`available` (case-insensitive).
        root: local data directory for datasets read from disk (``cifar10``,
            ``imagefolder``); the cache directory for ``mnist1d``; ignored by ``digits``.
        seed: fixes everything random about the data: the train/test split where the
            dataset makes one, the augmentation stream, and the default loader order.
        **options: dataset-specific options; an unknown option or bad value raises
            ``ValueError`` listing what is allowed.

    Returns:
        A :class:`DataBundle`.
    """
    spec = _DATASETS.get(name)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        opt = spec.options.get(key)
        if opt is None:
            raise ValueError(
                f"unknown option {key!r} for dataset {spec.name!r}; valid options: {describe_options(spec.options)}"
            )
        if not opt.check(value):
            raise ValueError(
                f"invalid value {key}={value!r} for dataset {spec.name!r}; allowed: {opt.allowed}"
            )
        resolved[key] = value
    for key, opt in spec.options.items():
        resolved.setdefault(key, opt.default)
    if spec.needs_root and root is None:
        raise ValueError(
            f"dataset {spec.name!r} is read from local files: pass root=<directory>, "
            f"e.g. onebit.data.load({spec.name!r}, root='/data/{spec.name}'). {spec.summary}"
        )
    return spec.builder(root, seed, **resolved)
