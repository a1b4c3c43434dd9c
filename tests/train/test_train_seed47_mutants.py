"""The data order is a random stream of its own (issue 21; seed-47 mutation survivor ``trainer.py``
``derive_seed(recipe.seed, stage_index, 1 << 20)`` → ``0 << 20``): the trainer seeds torch's global
generator with ``derive_seed(seed, stage)`` before building a stage's model and ``derive_seed(seed, stage,
epoch)`` before each epoch (dropout, noise, augmentation draw from it), so the sampler's shuffle must not
come from one of those seeds — with salt 0 its epoch-0 generator would be seeded exactly as the global
generator of that epoch, and the first epoch's data order would be the same draw as the model's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from onebit.train import load_recipe
from onebit.train.trainer import _loaders, derive_seed

N = 40


def _recipe(seed: int):
    return load_recipe({"name": "tiny", "seed": seed, "data": {"name": "digits", "batch_size": 4},
                        "model": {"name": "mlp"},
                        "stage": [{"name": "a", "epochs": 3, "optimizer": {"name": "sgd", "lr": 0.1}},
                                  {"name": "b", "epochs": 3, "optimizer": {"name": "sgd", "lr": 0.1}}]})


def _global_draws(seed: int) -> list[list[int]]:
    """The permutation of N that torch's global generator draws first after each seed the trainer sets."""
    out = []
    for stage in range(2):
        for parts in [(seed, stage)] + [(seed, stage, epoch) for epoch in range(3)]:
            torch.manual_seed(derive_seed(*parts))
            out.append(torch.randperm(N).tolist())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_data_order_is_not_drawn_from_the_models_random_stream(seed):
    data = TensorDataset(torch.arange(N).float()[:, None], torch.zeros(N, dtype=torch.long))
    bundle = SimpleNamespace(train=data, test=data)
    recipe = _recipe(seed)
    global_draws = _global_draws(seed)
    orders = []
    for stage in range(2):
        train_loader, sampler, _ = _loaders(bundle, recipe, SimpleNamespace(world=1, rank=0), 0, stage)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            order = [int(i) for x, _ in train_loader for i in x[:, 0]]
            assert sorted(order) == list(range(N))  # every sample once
            assert order not in global_draws, (stage, epoch)
            orders.append(order)
    assert len({tuple(o) for o in orders}) == len(orders)  # a new order every epoch and stage
