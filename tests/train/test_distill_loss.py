"""The distillation stage's loss (a mutation survivor of tools/mutate.py): ``loss = "kl"`` is the
distribution loss alone (ReActNet), ``"kl+ce"`` is ``alpha·KL + (1 − alpha)·CE``; without a teacher
the loss is the cross-entropy."""

import pytest
import torch
import torch.nn.functional as F

from onebit.train import load_recipe
from onebit.train.trainer import _batch_loss, distillation_loss


def stage(loss, alpha):
    recipe = load_recipe({"name": "r", "data": {"name": "digits"}, "stage": [
        {"name": "fp", "method": None, "epochs": 1},
        {"name": "bin", "method": "bnn", "epochs": 1, "distill": {"teacher": "fp", "loss": loss, "alpha": alpha}},
    ]})
    return recipe.stages[1]


def test_distillation_loss_kinds():
    gen = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(4, 10, generator=gen), torch.randn(4, 10, generator=gen)
    y = torch.tensor([1, 2, 3, 4])
    ce, kd = F.cross_entropy(logits, y), distillation_loss(logits, teacher, 1.0)
    assert kd.item() > 0 and abs(kd.item() - ce.item()) > 1e-3  # the two kinds cannot agree by accident
    assert _batch_loss(logits, y, stage("kl", 1.0), teacher).item() == pytest.approx(kd.item())
    mixed = _batch_loss(logits, y, stage("kl+ce", 0.3), teacher)
    assert mixed.item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item())
    assert _batch_loss(logits, y, stage("kl+ce", 0.3), None).item() == pytest.approx(ce.item())
