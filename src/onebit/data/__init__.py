"""Datasets that need no network at run time, behind one registry.

>>> import onebit.data as D
>>> D.available()
['cifar10', 'digits', 'imagefolder', 'mnist1d']
>>> bundle = D.load("digits", seed=0, size=16)      # doctest: +SKIP
>>> train, test = bundle.loaders(64)                # doctest: +SKIP

Optional dependencies are imported only by the dataset that needs them: scikit-learn
(``digits``), mnist1d (``mnist1d``), Pillow (``imagefolder``).
"""

from __future__ import annotations

from onebit.data import cifar10 as _cifar10
from onebit.data import digits as _digits
from onebit.data import imagefolder as _imagefolder
from onebit.data import mnist1d as _mnist1d
from onebit.data import transforms
from onebit.data._bundle import DataBundle, InMemoryDataset, Loaders
from onebit.data._registry import DatasetSpec, Option, available, load, register
from onebit.data.cifar10 import RestrictedUnpickler, UnsafePickleError, load_cifar10
from onebit.data.digits import load_digits
from onebit.data.imagefolder import ImageFolderDataset, load_imagefolder
from onebit.data.mnist1d import load_mnist1d

for _spec in (_cifar10.SPEC, _digits.SPEC, _imagefolder.SPEC, _mnist1d.SPEC):
    register(_spec)
del _spec

__all__ = [
    "DataBundle",
    "DatasetSpec",
    "ImageFolderDataset",
    "InMemoryDataset",
    "Loaders",
    "Option",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "available",
    "load",
    "load_cifar10",
    "load_digits",
    "load_imagefolder",
    "load_mnist1d",
    "register",
    "transforms",
]
