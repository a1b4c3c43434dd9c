"""The trainer clears gradients to None between steps (issue 21: ``zero_grad(set_to_none=True)`` →
``False`` in trainer.py's step survived the stop-23 sample of train/trainer.py). The two differ only for a
parameter that had a gradient and gets none in a later step of the same stage: with zeroed gradients SGD
still applies its momentum and weight decay to it, with None it leaves the parameter alone (torch's
default since 2.0, and what a branch that did not run should get)."""

from __future__ import annotations

import torch
from torch import nn

import onebit.models
from onebit.train import train


class _FirstStepBranch(nn.Module):
    """A head plus a branch that only the first training forward uses; records the branch's weight as
    the second training forward sees it (after the optimizer's first step, the last one that has its
    gradient)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(features, num_classes)
        self.branch = nn.Linear(features, num_classes)
        self.training_calls = 0
        self.branch_at_start = self.branch.weight.detach().clone()
        self.branch_after_its_step: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        out = self.head(x)
        if not self.training:
            return out
        self.training_calls += 1
        if self.training_calls == 1:
            return out + self.branch(x)
        if self.training_calls == 2:
            self.branch_after_its_step = self.branch.weight.detach().clone()
        return out


def test_a_parameter_without_a_gradient_in_later_steps_stays_where_its_last_step_left_it(tmp_path, monkeypatch):
    built = []

    def create(name, num_classes=None, method=None, in_channels=None, **options):
        built.append(_FirstStepBranch(64, num_classes))
        return built[-1]

    monkeypatch.setattr(onebit.models, "create", create)
    stage = {"name": "main", "epochs": 1, "lr_schedule": {"name": "constant"},
             "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01,
                           "weight_decay_groups": "all"}}
    recipe = {"name": "branch", "seed": 3, "data": {"name": "digits", "batch_size": 256},
              "model": {"name": "mlp"}, "stage": [stage]}
    result = train(recipe, tmp_path / "run", progress=False)
    model = built[0]
    assert result.model is model and model.training_calls > 2  # several steps after the branch's last one
    assert not torch.equal(model.branch_after_its_step, model.branch_at_start)  # its one step moved it
    assert torch.equal(model.branch.weight, model.branch_after_its_step)  # and nothing after it

