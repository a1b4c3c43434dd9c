"""BiBench's optimizer grid as its configs set it (``configs/_base_/schedules/``): SGD + step has no momentum
and weight decay 1e-4, SGD + cosine momentum 0.9 and weight decay 1e-4, Adam no weight decay; the suite's
sensitivity grid and the bibench_* recipes carry these values, and the trainer's optimizer applies them."""

import pytest
import torch
from torch import nn

from onebit.bench.runner import _recipe
from onebit.bench.suite import bibench_regularization, load_suite
from onebit.train import load_recipe
from onebit.train.trainer import make_optimizer

BIBENCH = {("sgd", "step"): (0.0, 1e-4), ("sgd", "cosine"): (0.9, 1e-4), ("adam", "step"): (None, 0.0),
           ("adam", "cosine"): (None, 0.0)}


def test_default_suite_sensitivity_runs_follow_bibench_configs():
    runs = [r for r in load_suite("default").runs() if r.role == "sensitivity"]
    seen = set()
    for run in runs:
        hp = run.hparams
        momentum, weight_decay = BIBENCH[(hp["optimizer"], hp["schedule"])]
        assert hp["weight_decay"] == weight_decay
        if momentum is not None:
            assert hp["momentum"] == momentum
        seen.add((hp["optimizer"], hp["lr"], hp["schedule"]))
    assert len(seen) == 8  # {SGD 0.1, 0.01; Adam 1e-3, 1e-4} x {cosine, step}
    main = [r for r in load_suite("default").runs() if r.role == "main" and r.hparams]
    assert all(r.hparams["weight_decay"] == 0.0 for r in main)  # the main runs keep the suite's [train]


def test_sensitivity_train_overrides_the_bibench_values():
    suite = load_suite("default")
    suite.sensitivity_train = {"epochs": 5, "weight_decay": 5e-4}
    for run in (r for r in suite.runs() if r.role == "sensitivity"):
        assert run.hparams["weight_decay"] == 5e-4
    assert bibench_regularization("adamw", "cosine") == {}


@pytest.mark.parametrize("schedule", ["step", "cosine"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_runs_build_optimizers_with_those_values(optimizer, schedule):
    suite = load_suite("default")
    run = next(r for r in suite.runs() if r.role == "sensitivity" and r.hparams["optimizer"] == optimizer
               and r.hparams["schedule"] == schedule)
    opt = make_optimizer(nn.Linear(3, 2), _recipe(run).stages[0].optimizer)
    momentum, weight_decay = BIBENCH[(optimizer, schedule)]
    assert isinstance(opt, torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)
    assert [g["weight_decay"] for g in opt.param_groups] == [weight_decay]
    if momentum is not None:
        assert opt.param_groups[0]["momentum"] == momentum


def test_sgd_step_really_applies_weight_decay_without_momentum():
    """Two steps of the trainer's optimizer for SGD + step: p ← p − lr·(g + wd·p), no momentum buffer."""
    run = next(r for r in load_suite("default").runs() if r.role == "sensitivity"
               and r.hparams["optimizer"] == "sgd" and r.hparams["schedule"] == "step" and r.hparams["lr"] == 0.1)
    layer = nn.Linear(4, 1, bias=False)
    opt = make_optimizer(layer, _recipe(run).stages[0].optimizer)
    x = torch.ones(1, 4)
    for _ in range(2):
        before = layer.weight.detach().clone()
        opt.zero_grad()
        layer(x).sum().backward()  # gradient 1 for every weight
        opt.step()
        assert torch.allclose(layer.weight.detach(), before - 0.1 * (1.0 + 1e-4 * before), atol=1e-7)


@pytest.mark.parametrize("name,optimizer,momentum,weight_decay", [
    ("bibench_cifar10_sgd", torch.optim.SGD, 0.9, 1e-4),
    ("bibench_cifar10_adam", torch.optim.Adam, None, 0.0),
])
def test_bibench_recipes_follow_the_acc_cifar10_configs(name, optimizer, momentum, weight_decay):
    recipe = load_recipe(name)
    stage = recipe.stages[-1]  # the binary stage (sgd_1e-1_cosinelr_400e / adam_1e-3_cosinelr_400e)
    assert stage.epochs == 400 and stage.lr_schedule.name == "cosine"
    opt = make_optimizer(nn.Linear(3, 2), stage.optimizer)
    assert isinstance(opt, optimizer) and [g["weight_decay"] for g in opt.param_groups] == [weight_decay]
    if momentum is not None:
        assert opt.param_groups[0]["momentum"] == momentum
