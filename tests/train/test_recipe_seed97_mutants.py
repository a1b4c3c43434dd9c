"""A stage's default length (seed-97 honest mutation sample: ``epochs: int = 10`` → ``9`` survived).

README's Training section documents it: a stage that names no ``epochs`` trains 10, and so does the one
stage of a recipe that lists none; ``--epochs`` or the key overrides it."""

from onebit.train import load_recipe
from onebit.train.recipe import Recipe, Stage


def _recipe(**stage):
    return {"name": "r", "data": {"name": "digits"}, "stage": [{"name": "main", "method": "bnn", **stage}]}


def test_a_stage_without_epochs_trains_ten():
    assert load_recipe(_recipe()).stages[0].epochs == 10
    assert Stage().epochs == 10
    assert [s.epochs for s in Recipe().stages] == [10]


def test_a_stage_that_names_its_epochs_keeps_them():
    assert load_recipe(_recipe(epochs=3)).stages[0].epochs == 3
