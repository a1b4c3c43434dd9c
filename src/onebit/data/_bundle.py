"""DataBundle, the in-memory dataset, and the seeded-augmentation machinery they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["DataBundle", "InMemoryDataset", "Loaders", "derive_seed"]

TransformFn = Callable[..., torch.Tensor]


def derive_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for an independent random stream ``stream`` of the run seeded by ``seed``.

    SeedSequence mixing keeps e.g. the shuffle stream of seed 0 unrelated to the
    augmentation stream of seed 1, which ``seed + k`` offsets would not.
    """
    state = np.random.SeedSequence([int(seed), *stream]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _dist_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class _SeededAugmentation:
    """Gives a dataset a per-process augmentation generator derived from a seed.

    In DataLoader workers the global torch RNG is already seeded from the loader's
    generator (``base_seed + worker_id``), so it is used there; in the main process a
    private generator, seeded from ``aug_seed`` and the distributed rank, makes
    augmentation reproducible without touching global RNG state.
    """

    aug_seed: int | None
    _generator: torch.Generator | None

    def _init_rng(self, aug_seed: int | None) -> None:
        self.aug_seed = aug_seed
        self._epoch = 0
        self._generator = None

    def set_epoch(self, epoch: int) -> None:
        """Restart the augmentation stream at ``epoch``'s own seed, so epoch ``e`` draws the same
        augmentations whether or not the run was interrupted and resumed before it."""
        self._epoch = int(epoch)
        self._generator = None

    def _rng(self) -> torch.Generator | None:
        if self.aug_seed is None or torch.utils.data.get_worker_info() is not None:
            return None
        if self._generator is None:
            # Created lazily so that each process (and each distributed rank) gets its own stream.
            self._generator = torch.Generator().manual_seed(
                derive_seed(self.aug_seed, 1, _dist_rank(), getattr(self, "_epoch", 0))
            )
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        # Generators do not travel to worker processes; workers use their seeded global RNG.
        state = self.__dict__.copy()
        state["_generator"] = None
        return state


class InMemoryDataset(_SeededAugmentation, Dataset):
    """Samples held in one tensor ``data`` of shape (N, ...) with integer ``labels`` (N,).

    ``transform`` (a :mod:`onebit.data.transforms` callable) is applied per item; random
    transforms draw from a generator seeded by ``aug_seed`` (see ``_SeededAugmentation``).
    """

    def __init__(
        self,
        data: torch.Tensor,
        labels: torch.Tensor,
        transform: TransformFn | None = None,
        *,
        aug_seed: int | None = None,
    ) -> None:
        if data.shape[0] != labels.shape[0]:
            raise ValueError(f"data has {data.shape[0]} samples but labels has {labels.shape[0]}")
        self.data = data
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self._init_rng(aug_seed)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.data[index]
        if self.transform is not None:
            x = self.transform(x, self._rng())
        return x, int(self.labels[index])


class Loaders(NamedTuple):
    """Train and test DataLoaders; unpacks as ``train, test = bundle.loaders(...)``."""

    train: DataLoader
    test: DataLoader


@dataclass(frozen=True)
class DataBundle:
    """A dataset ready for training: splits, shapes, and the normalization it applied.

    Attributes:
        name: registry name of the dataset.
        train, test: ``Dataset``s yielding ``(float tensor, int label)``.
        num_classes: number of labels (labels are ``0 .. num_classes - 1``).
        input_shape: shape of one sample, ``(C, H, W)`` or ``(C, L)``.
        mean, std: per-channel normalization applied to every sample.
        classes: human-readable class names, index = label.
        seed: the seed given to :func:`onebit.data.load`; default for :meth:`loaders`.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    seed: int = 0

    def loaders(
        self,
        batch_size: int,
        *,
        shuffle_train: bool = True,
        num_workers: int = 0,
        seed: int | None = None,
        distributed: bool = False,
        drop_last: bool = False,
        pin_memory: bool = False,
        test_batch_size: int | None = None,
    ) -> Loaders:
        """Build train/test DataLoaders with reproducible shuffling.

        Args:
            batch_size: samples per training batch (and per test batch unless
                ``test_batch_size`` is given).
            shuffle_train: shuffle the training set each epoch; the test set is never shuffled.
            num_workers: DataLoader worker processes (0 loads in the main process).
            seed: seed of the shuffle order and of worker RNGs; defaults to ``self.seed``.
            distributed: shard both splits over the ranks of the initialized default
                process group with ``DistributedSampler``.  Call
                ``loaders.train.sampler.set_epoch(epoch)`` every epoch so that the order
                changes; the test sampler pads the last shard by repeating a few samples.
            drop_last: drop the last incomplete training batch.
            pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.
            test_batch_size: batch size of the test loader (default ``batch_size``).

        Returns:
            ``Loaders(train, test)``.
        """
        for arg, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"loaders(): {arg} must be an int >= {low}, got {value!r}")
        if test_batch_size is None:
            test_batch_size = batch_size
        elif not isinstance(test_batch_size, int) or isinstance(test_batch_size, bool) or test_batch_size < 1:
            raise ValueError(f"loaders(): test_batch_size must be an int >= 1, got {test_batch_size!r}")
        seed = self.seed if seed is None else seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"loaders(): seed must be an int >= 0, got {seed!r}")

        common: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
        if num_workers > 0:
            common["persistent_workers"] = False
        if distributed:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise RuntimeError(
                    "loaders(distributed=True) needs an initialized process group: call "
                    "torch.distributed.init_process_group(...) first, or pass distributed=False"
                )
            from torch.utils.data.distributed import DistributedSampler

            train_sampler = DistributedSampler(
                self.train, shuffle=shuffle_train, seed=derive_seed(seed, 0), drop_last=drop_last
            )
            test_sampler = DistributedSampler(self.test, shuffle=False)
            # The sampler already agrees on the order across ranks; the generator only seeds workers.
            gen = torch.Generator().manual_seed(derive_seed(seed, 2, _dist_rank()))
            train = DataLoader(
                self.train, batch_size=batch_size, sampler=train_sampler, drop_last=drop_last,
                generator=gen, **common,
            )
            test = DataLoader(self.test, batch_size=test_batch_size, sampler=test_sampler, **common)
            return Loaders(train, test)

        gen = torch.Generator().manual_seed(derive_seed(seed, 0))
        train = DataLoader(
            self.train, batch_size=batch_size, shuffle=shuffle_train, drop_last=drop_last,
            generator=gen, **common,
        )
        test_gen = torch.Generator().manual_seed(derive_seed(seed, 3))
        test = DataLoader(self.test, batch_size=test_batch_size, shuffle=False, generator=test_gen, **common)
        return Loaders(train, test)
