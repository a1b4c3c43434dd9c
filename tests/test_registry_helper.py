"""onebit._registry: the one name table and option helper behind methods, models and datasets."""

import pytest

import onebit
import onebit.data
import onebit.models
from onebit import _registry
from onebit._registry import Option, Registry, describe_options, is_int


def test_registry_names_errors_and_case():
    table = Registry(duplicate="{name!r} taken", unknown="no {name!r}; have: {names}", casefold=True)
    first, second = object(), object()
    assert table.add("Beta", first) is first and table.add("alpha", second) is second
    assert table.names() == ["alpha", "beta"] and list(table) == [second, first]
    assert table.get("BETA") is first and "ALPHA" in table and 3 not in table
    with pytest.raises(ValueError, match="^'beta' taken$"):
        table.add("beta", first)  # not even the same entry, without same_again
    with pytest.raises(ValueError, match="^no 'gamma'; have: alpha, beta$"):
        table.get("gamma")
    with pytest.raises(ValueError, match="^no None; have"):
        table.get(None)


def test_same_again_allows_only_the_same_entry():
    table = Registry(duplicate="{name} taken", unknown="{name}", same_again=True)
    entry = object()
    table.add("x", entry)
    table.add("x", entry)
    with pytest.raises(ValueError, match="x taken"):
        table.add("x", object())
    with pytest.raises(ValueError, match="X"):  # case-sensitive by default
        table.get("X")


def test_options_are_shared():
    assert onebit.models.Option is onebit.data.Option is Option
    assert onebit.models._registry.is_int is onebit.data._registry.is_int is is_int
    assert describe_options({}) == "(none)"
    assert describe_options({"n": Option(3, is_int(1), "an int >= 1")}) == "n (an int >= 1; default 3)"
    assert is_int(0, 2)(2) and not is_int(0, 2)(3) and not is_int()(True)


def test_the_three_registries_use_it():
    assert onebit.methods.base._METHODS.entries is onebit.methods.base._REGISTRY
    assert isinstance(onebit.models._registry._MODELS, _registry.Registry)
    assert onebit.data._registry._DATASETS.names() == onebit.data.available()
    with pytest.raises(ValueError, match="unknown dataset 'nope'; valid names: cifar10"):
        onebit.data.load("nope")
    with pytest.raises(ValueError, match="unknown model 'nope'; available models: conv1d"):
        onebit.models.spec("nope")
    with pytest.raises(ValueError, match="unknown binarization method 'nope'; available: biper"):
        onebit.methods.get("nope")
