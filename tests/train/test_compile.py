"""``compile = true`` (``onebit train --compile``): torch.compile gives the eager numbers.

Both runs start from the same weights and batches; after a few SGD steps the losses, the weights and
every method parameter agree within float tolerance (the compiled kernels may reorder arithmetic).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import onebit
from onebit.train.recipe import RecipeError, load_recipe


def tiny(method: str) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(),
        onebit.nn.BinaryConv2d(4, 4, 3, padding=1, method=method), nn.BatchNorm2d(4), nn.Hardtanh(),
        nn.Flatten(), onebit.nn.BinaryLinear(4 * 6 * 6, 8, method=method), nn.BatchNorm1d(8), nn.Linear(8, 3),
    )


def train_steps(net: nn.Module, params: nn.Module, steps: int = 3) -> list[float]:
    opt = torch.optim.SGD(params.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 1, 6, 6, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_compiled_and_eager_training_steps_agree():
    # One method (inductor's first compile costs tens of seconds on 2 cores); reactnet exercises a
    # fused quantizer with a learnable parameter in front of it and the clip STE on the weights.
    eager = tiny("reactnet")
    compiled_model = copy.deepcopy(eager)
    eager_losses = train_steps(eager, eager)
    compiled_losses = train_steps(torch.compile(compiled_model), compiled_model)
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(eager.state_dict().items(), compiled_model.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_the_recipe_key_is_a_boolean():
    recipe = load_recipe("fast").to_dict()
    assert recipe["compile"] is False
    recipe["compile"] = True
    assert load_recipe(recipe).compile is True
    recipe["compile"] = "yes"
    with pytest.raises(RecipeError, match="compile"):
        load_recipe(recipe)


def test_the_cli_flag_sets_the_key():
    from onebit.cli import _recipe_from_args, build_parser

    args = build_parser().parse_args(["train", "fast", "--compile"])
    assert _recipe_from_args(args).compile is True
    args = build_parser().parse_args(["train", "fast"])
    assert _recipe_from_args(args).compile is False


def test_the_trainer_compiles_the_network(tmp_path, monkeypatch):
    compiled = []
    real = torch.compile

    def spy(model, **kwargs):  # the eager backend: dynamo traces the training, no C++ build
        compiled.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", spy)
    recipe = load_recipe("fast").to_dict()
    recipe["compile"] = True
    recipe["model"]["options"] = {"hidden": [32, 32]}
    recipe["stage"][0]["epochs"] = 1
    result = onebit.train.train(recipe, tmp_path / "run", progress=False, device="cpu")
    assert len(compiled) == 1 and isinstance(compiled[0], nn.Module)
    assert result.test_accuracy > 20  # it trained (10 classes: chance is 10%)
