"""Method.finalize / onebit.finalize: the step from a trained model to its deployable state."""

import pytest
import torch
from torch import nn

import onebit
from onebit.methods import NotDeployableError


def small(method, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4))
    return onebit.binarize(model, onebit.methods.get(method, **options))


def binary_layer(model):
    return model[1]


@pytest.mark.parametrize("method", ["biper", "pcpp-pc", "bnn++"])
def test_finalize_makes_a_trained_model_deployable(method):
    model = small(method)
    with pytest.raises(NotDeployableError):
        binary_layer(model).inference_form()
    assert onebit.finalize(model) is model
    form = binary_layer(model).inference_form()
    assert all(((p == 1) | (p == -1)).all() for p in form.weight_planes)


def test_biper_finalize_is_to_stage2_and_keeps_tau():
    model, other = small("biper", tau=0.01), small("biper", tau=0.01)
    onebit.finalize(model)
    onebit.methods.biper.to_stage2(other)
    assert binary_layer(model).method.config == binary_layer(other).method.config == {
        "omega": 20.0, "tau": 0.01, "stage": 2}
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), other.eval()(x))


@pytest.mark.parametrize("method", ["pcpp-pc", "bnn++", "pcpp-bnn"])
def test_proxconnect_finalize_is_the_end_of_its_schedule(method):
    model, other = small(method), small(method)
    onebit.schedule_step(model, 3, 10)
    onebit.finalize(model)
    onebit.schedule_step(other, 10, 10)
    layer = binary_layer(model)
    assert bool(layer.pcpp_hard) and torch.equal(layer.pcpp_mu, binary_layer(other).pcpp_mu)


@pytest.mark.parametrize("method", sorted(set(onebit.methods.available()) - {"biper", "pcpp-pc", "bnn++", "pcpp-bc",
                                                                            "pcpp-bnn", "pcpp-bnn+"}))
def test_finalize_leaves_other_methods_as_they_trained(method):
    model = small(method)
    model(torch.randn(1, 3, 6, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = binary_layer(model).method.config
    onebit.finalize(model)
    assert binary_layer(model).method.config == config
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_finalize_with_an_example_input_sizes_lazy_state():
    model = small("xnorpp")
    assert isinstance(binary_layer(model).gamma_h, nn.UninitializedParameter)
    model.train()
    onebit.finalize(model, example_input=torch.randn(1, 3, 6, 6))
    assert binary_layer(model).gamma_h.shape == (6,) and model.training  # the mode is kept
    binary_layer(model).inference_form()  # Γ is readable now
