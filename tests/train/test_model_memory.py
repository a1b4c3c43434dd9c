"""A recipe whose model no memory can hold fails with one RecipeError naming the model, the stage and
the options (a mutation survivor of tools/mutate.py: nothing reached that message); any other error
from building the model passes through unchanged."""

import pytest

import onebit.models
from onebit.train import build_model, load_recipe
from onebit.train.recipe import RecipeError


def recipe(hidden):
    return load_recipe({"name": "huge", "data": {"name": "digits"},
                        "model": {"name": "mlp", "options": {"hidden": hidden}},
                        "stage": [{"name": "main", "method": "bnn", "epochs": 1}]})


def build(r):
    return build_model(r, r.stages[0], 10, (1, 8, 8))


def test_a_model_too_large_for_any_memory_is_one_recipe_error():
    # 2^31 x 2^31 weights: torch refuses at once ("Storage size calculation overflowed"), nothing allocated
    with pytest.raises(RecipeError, match=r"model 'mlp' \(stage 'main'\) does not fit in memory with options "
                                          r"\{'hidden': \[2147483648, 2147483648\]\}; make it smaller"):
        build(recipe([2**31, 2**31]))


@pytest.mark.parametrize("error", [
    MemoryError(),  # Python's own, with no message
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
], ids=["MemoryError", "cpu-allocator", "cuda"])
def test_out_of_memory_errors_become_a_recipe_error(monkeypatch, error):
    def create(*args, **kwargs):
        raise error

    monkeypatch.setattr(onebit.models, "create", create)
    with pytest.raises(RecipeError, match="does not fit in memory"):
        build(recipe([64]))


def test_other_runtime_errors_pass_through(monkeypatch):
    def create(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(onebit.models, "create", create)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as info:
        build(recipe([64]))
    assert not isinstance(info.value, RecipeError)
