"""Small helpers shared by the dataset modules."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, pip_name: str, dataset: str) -> ModuleType:
    """Import an optional dependency, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"dataset {dataset!r} needs the {pip_name!r} package, which is not installed; "
            f"install it with: pip install {pip_name}"
        ) from None
