import math

import pytest

from onebit.train import RecipeError, ScheduleSpec, builtin_recipes, load_recipe, lr_at

MINIMAL = {
    "name": "t",
    "data": {"name": "digits", "batch_size": 32},
    "model": {"name": "mlp"},
    "stage": [{"name": "a", "method": "bnn", "epochs": 2}],
}


def test_shipped_recipes_parse():
    names = builtin_recipes()
    for expected in ("fast", "biper_cifar10", "reactnet_imagenet", "recu_cifar10", "irnet_cifar10",
                     "bibench_cifar10_sgd", "bibench_cifar10_adam", "pcpp_finetune", "pcpp_e2e"):
        assert expected in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.stages and recipe.description
    biper = load_recipe("biper_cifar10")
    assert [s.method_options["stage"] for s in biper.stages] == [1, 2]
    assert biper.stages[1].init == "previous" and biper.stages[0].optimizer.lr == 0.021
    react = load_recipe("reactnet_imagenet")
    assert react.stages[0].method_options == {"binarize_weights": False}
    assert react.stages[1].distill.loss == "kl"


def test_toml_and_yaml_files_and_round_trip(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        'name = "x"\n[data]\nname = "digits"\n[model]\nname = "mlp"\n'
        '[[stage]]\nname = "one"\nmethod = "xnor"\nepochs = 3\n'
        'optimizer = { name = "sgd", lr = 0.05 }\nlr_schedule = { name = "step", milestones = [1, 2] }\n'
    )
    recipe = load_recipe(path)
    assert recipe.stages[0].optimizer.name == "sgd" and recipe.stages[0].lr_schedule.milestones == [1, 2]
    assert load_recipe(recipe.to_dict()).to_dict() == recipe.to_dict()
    import yaml  # a test dependency; PyYAML stays optional for users, who get a clear error without it
    ypath = tmp_path / "r.yaml"
    ypath.write_text(yaml.safe_dump(recipe.to_dict()))
    assert load_recipe(ypath).to_dict() == recipe.to_dict()


@pytest.mark.parametrize("change,message", [
    (lambda r: r["stage"][0].update(epochs=0), r"stage\[0\] \(a\)\.epochs: 0 is not an integer >= 1"),
    (lambda r: r["stage"][0].update(method="nope"), "unknown binarization method 'nope'"),
    (lambda r: r["stage"][0].update(optimizer={"name": "lbfgs"}), "optimizer.name: 'lbfgs' is not one of sgd"),
    (lambda r: r["stage"][0].update(optimizr={"name": "sgd"}), "unknown key.*optimizr"),
    (lambda r: r["stage"][0].update(init="previous"), "'previous' needs an earlier stage"),
    (lambda r: r["stage"][0].update(distill={"teacher": "a"}), "'a' is not an earlier stage"),
    (lambda r: r["data"].update(batch_size=-1), "data.batch_size"),
    (lambda r: r.update(stage=[]), "at least one"),
    (lambda r: r.update(stage=[r["stage"][0], dict(r["stage"][0])]), "unique"),
    (lambda r: r["stage"][0].update(lr_schedule={"name": "cosine", "warmup_epochs": -1}), "warmup_epochs"),
])
def test_bad_recipes_give_clear_errors(change, message):
    import copy

    recipe = copy.deepcopy(MINIMAL)
    change(recipe)
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="neither a file nor a shipped recipe; shipped: .*fast"):
        load_recipe("no-such-recipe")
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\nname=")
    with pytest.raises(RecipeError, match="not valid toml"):
        load_recipe(broken)


def test_lr_schedules():
    cos = ScheduleSpec(name="cosine", warmup_epochs=2)
    assert lr_at(cos, 0.1, 12, 1.0) == pytest.approx(0.05)  # halfway through warm-up
    assert lr_at(cos, 0.1, 12, 2.0) == pytest.approx(0.1)
    assert lr_at(cos, 0.1, 12, 7.0) == pytest.approx(0.05)  # halfway through the decay
    assert lr_at(cos, 0.1, 12, 12.0) == pytest.approx(0.0)
    lin = ScheduleSpec(name="linear")
    assert lr_at(lin, 1e-3, 10, 2.5) == pytest.approx(0.75e-3)
    step = ScheduleSpec(name="step", milestones=[100, 150], gamma=0.1)
    assert [lr_at(step, 0.1, 200, e) for e in (99, 100, 149.5, 150)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    biper = ScheduleSpec(name="cosine", warmup_epochs=5, decay_epochs=596)
    assert lr_at(biper, 0.021, 600, 5 + 298) == pytest.approx(0.0105)
    assert lr_at(ScheduleSpec(name="constant"), 0.3, 5, 4.9) == 0.3
    assert math.isclose(lr_at(cos, 0.1, 12, 0.0), 0.1 * 1e-3)
