"""Recipe defaults and bounds that one-line mutants of src/onebit/train/ changed without a test failing
(tools/mutate.py, the seed-37 sample; see README's Development section)."""

import pytest
import torch
from torch import nn

from onebit.train import load_recipe
from onebit.train.recipe import RecipeError
from onebit.train.trainer import make_optimizer


def recipe(**stage):
    return {"name": "r", "data": {"name": "digits"}, "stage": [{"name": "main", "method": "bnn", **stage}]}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_an_optimizer_table_without_weight_decay_decays_nothing(name):
    """recipe.py `weight_decay: float = 0.0` (mutant: `1.0`): a recipe that does not ask for weight decay
    gets none, and a parameter with zero gradient is left where it is by a step."""
    stage = load_recipe(recipe(optimizer={"name": name})).stages[0]
    assert stage.optimizer.weight_decay == 0.0
    model = nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(model, stage.optimizer)
    assert all(group["weight_decay"] == 0.0 for group in opt.param_groups)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_step_schedule_with_gamma_zero_is_refused():
    """recipe.py `_number(self.gamma, ..., low=0.0, low_open=True)` (mutant: `low_open=False`): a step
    schedule that multiplies the learning rate by 0 is refused with the field's name; any gamma > 0 is
    accepted."""
    with pytest.raises(RecipeError, match="gamma"):
        load_recipe(recipe(lr_schedule={"name": "step", "milestones": [1], "gamma": 0.0}))
    stage = load_recipe(recipe(lr_schedule={"name": "step", "milestones": [1], "gamma": 1e-6})).stages[0]
    assert stage.lr_schedule.gamma == 1e-6


def test_training_prints_one_line_per_epoch_unless_told_not_to(tmp_path, capsys):
    """trainer.py `progress: bool = True` (mutant: `False`): by default ``train`` prints each epoch's
    line (stage, epoch, loss, accuracies, lr) on stdout; ``progress=False`` prints nothing."""
    from onebit.train import train

    tiny = {"name": "tiny", "seed": 0, "data": {"name": "digits", "batch_size": 256},
            "model": {"name": "mlp", "options": {"hidden": [16]}},
            "stage": [{"name": "main", "method": "bnn", "epochs": 2}]}
    train(tiny, tmp_path / "shown")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[main] epoch")]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"]
    train(tiny, tmp_path / "quiet", progress=False)
    assert "epoch" not in capsys.readouterr().out
