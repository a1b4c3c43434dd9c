"""onebit.models' registry: names, declared input shapes, and clear errors for every bad argument."""

import pytest

import onebit.models as M

EXPECTED = {
    "conv1d": ((1, 40), 10),
    "mlp": ((1, 28, 28), 10),
    "reactnet_a": ((3, 224, 224), 1000),
    "resnet18": ((3, 32, 32), 10),
    "resnet18_imagenet": ((3, 224, 224), 1000),
    "resnet20": ((3, 32, 32), 10),
    "resnet34": ((3, 32, 32), 10),
    "vgg_small": ((3, 32, 32), 10),
    "vit": ((3, 224, 224), 1000),
}


def test_available_lists_every_model_sorted():
    assert M.available() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_declares_input_shape_and_classes(name):
    spec = M.spec(name)
    assert (spec.input_shape, spec.num_classes) == EXPECTED[name]
    assert spec.paper and spec.summary
    assert spec.size_option is None or spec.size_option in spec.options


@pytest.mark.parametrize("name", ["conv1d", "mlp", "resnet20", "vgg_small"])
def test_created_model_records_its_input_shape(name):
    model = M.create(name)
    assert isinstance(model, M.ZooModel)
    assert model.input_shape == M.spec(name).input_shape
    assert model.num_classes == M.spec(name).num_classes
    assert model.method is None


def test_size_options_set_the_input_shape():
    assert M.create("vgg_small", input_size=16).input_shape == (3, 16, 16)
    assert M.create("reactnet_a", width=0.0625, input_size=32, in_channels=1).input_shape == (1, 32, 32)
    assert M.create("vit", img_size=32, patch_size=8, dim=8, depth=1, heads=2).input_shape == (3, 32, 32)
    assert M.create("conv1d", length=64).input_shape == (1, 64)
    assert M.create("mlp", input_shape=(3, 8, 8), hidden=(8,)).input_shape == (3, 8, 8)
    assert M.create("mlp", input_shape=(3, 8, 8), hidden=(8,), in_channels=2).input_shape == (2, 8, 8)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18.*vit"):
        M.create("resnet19")
    with pytest.raises(ValueError, match="available models"):
        M.spec(None)


def test_unknown_method_lists_valid_methods():
    with pytest.raises(ValueError, match="unknown binarization method 'sgn'.*bnn"):
        M.create("resnet20", method="sgn")


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("resnet20", {"activation": "tanh"}, r"activation='tanh'.*'hardtanh', 'prelu', 'rprelu', 'relu', 'identity'"),
        ("resnet20", {"shortcut": "C"}, r"shortcut='C'.*'A'.*'B'"),
        ("resnet18", {"bireal": 1}, r"bireal=1.*True or False"),
        ("resnet18_imagenet", {"activation": 3}, r"activation=3"),
        ("reactnet_a", {"width": 0}, r"width=0.*> 0"),
        ("reactnet_a", {"input_size": 4}, r"input_size=4.*>= 8"),
        ("vgg_small", {"input_size": 7.5}, r"input_size=7.5"),
        ("vit", {"heads": 0}, r"heads=0.*positive int"),
        ("vit", {"mlp_ratio": -1}, r"mlp_ratio=-1.*> 0"),
        ("mlp", {"hidden": (16, 0)}, r"hidden=\(16, 0\).*positive ints"),
        ("mlp", {"hidden": ()}, r"hidden=\(\)"),
        ("conv1d", {"length": 4}, r"length=4.*>= 8"),
    ],
)
def test_bad_option_values_name_the_option_and_what_is_allowed(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        M.create(name, **options)


def test_inconsistent_vit_shape_options():
    with pytest.raises(ValueError, match="img_size=30 must be a multiple of patch_size=16"):
        M.create("vit", img_size=30)
    with pytest.raises(ValueError, match="dim=10 must be a multiple of heads=3"):
        M.create("vit", dim=10)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option 'depth'.*model options: activation, shortcut, bireal"):
        M.create("resnet20", depth=3)
    with pytest.raises(ValueError, match=r"unknown option 'omega'.*recu options: tau_min, tau_max.*pad_value"):
        M.create("resnet20", method="recu", omega=0.1)


def test_binary_only_options_need_a_method():
    with pytest.raises(ValueError, match="'tau_min' configures binary layers.*method=None"):
        M.create("resnet20", tau_min=0.9)
    with pytest.raises(ValueError, match="'pad_value' configures binary layers"):
        M.create("resnet20", pad_value=1)


def test_method_option_values_are_validated_by_the_method():
    with pytest.raises(ValueError, match="tau_min=2"):
        M.create("resnet20", method="recu", tau_min=2)
    with pytest.raises(ValueError, match="pad_value=0.5"):
        M.create("resnet20", method="bnn", pad_value=0.5)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_classes": 2.0}, {"in_channels": True},
                                    {"in_channels": -1}])
def test_num_classes_and_in_channels_must_be_positive_ints(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{key}="):
        M.create("resnet20", **kwargs)


def test_list_options_are_accepted_as_tuples():
    model = M.create("mlp", hidden=[8, 4], input_shape=[1, 4, 4])
    assert model.input_shape == (1, 4, 4)
    assert model.net[-1].in_features == 4
