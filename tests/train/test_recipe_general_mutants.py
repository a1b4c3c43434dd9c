"""Recipe parsing that no in-process test of tests/train executed: a stage with a model of its own
(issue 21: found by a single-file mutation sample, tools/mutate.py --file recipe.py --seed 2001)."""

from __future__ import annotations

import pytest

from onebit.train import RecipeError, load_recipe
from onebit.train.recipe import ModelSpec


def _recipe(stage_model):
    return {"name": "t", "data": {"name": "digits", "batch_size": 32}, "model": {"name": "mlp"},
            "stage": [{"name": "a", "method": "bnn", "epochs": 1},
                      {"name": "b", "method": "bnn", "epochs": 1, "model": stage_model}]}


def test_a_stage_model_table_becomes_its_model_spec():
    recipe = load_recipe(_recipe({"name": "mlp", "options": {"hidden": [8]}}))
    assert recipe.stages[0].model is None
    assert recipe.stages[1].model == ModelSpec("mlp", {"hidden": [8]})
    assert load_recipe(recipe.to_dict()).stages[1].model == ModelSpec("mlp", {"hidden": [8]})


def test_a_stage_model_with_an_unknown_key_names_the_stage():
    with pytest.raises(RecipeError, match=r"recipe: stage\[1\]\.model: unknown key\(s\) depth; allowed: name, options"):
        load_recipe(_recipe({"name": "mlp", "depth": 3}))
    with pytest.raises(RecipeError, match=r"recipe: stage\[1\]\.model: expected a table, got str"):
        load_recipe(_recipe("mlp"))
