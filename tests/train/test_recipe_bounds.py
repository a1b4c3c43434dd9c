"""A recipe's batch sizes (a mutation survivor of tools/mutate.py): 1 is accepted for both the
training and the evaluation batch; 0 and fractions are refused with the field's name."""

import pytest

from onebit.train import load_recipe
from onebit.train.recipe import RecipeError


def recipe(**data):
    return {"name": "r", "data": {"name": "digits", **data}, "stage": [{"name": "main", "method": "bnn"}]}


def test_batch_sizes_of_one_are_accepted():
    r = load_recipe(recipe(batch_size=1, eval_batch_size=1))
    assert (r.data.batch_size, r.data.eval_batch_size) == (1, 1)


@pytest.mark.parametrize("value", [0, 2.5])
@pytest.mark.parametrize("field", ["batch_size", "eval_batch_size"])
def test_batch_sizes_below_one_or_fractional_are_refused(field, value):
    with pytest.raises(RecipeError, match=f"data.{field}"):
        load_recipe(recipe(**{field: value}))
