"""onebit.summary reads each method's bits and extra FP work from Method hooks (weight_bits,
activation_bits, extra_fp_ops); the old import path bench.summary still works."""

import torch
from torch import nn

import onebit
from onebit.methods import Method


class _HalfPrecisionish(Method):
    """A made-up method (not registered): 4-bit weights, 2-bit activations, 7 extra FP ops per call."""

    name = "test-hooks"

    def weight_bits(self, layer):
        return 4.0

    def activation_bits(self, layer):
        return 2.0

    def extra_fp_ops(self, layer, inputs, outputs):
        return 7


def small():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False),
                         nn.Flatten(), nn.Linear(256, 10))


def test_summary_reads_the_method_hooks():
    model = onebit.binarize(small(), _HalfPrecisionish())
    layer = onebit.summary(model, (3, 8, 8)).layers[1]
    assert layer.precision == "4/2" and layer.extra_fp_ops == 7
    assert layer.params_1bit == 4 * 16 * 8 * 9 and layer.macs_binary == 4 * 16 * 4 * 4 * 8 * 9


def test_default_hooks_follow_the_inference_form():
    base = Method()
    layer = onebit.binarize(small(), "reactnet")[1]
    assert (base.weight_bits(layer), base.activation_bits(layer)) == (1.0, 1.0)
    assert layer.method.extra_fp_ops(layer, 100, 10) == 100  # a threshold per input element
    assert onebit.methods.get("xnor").extra_fp_ops(layer, 100, 10) == 200  # K: mean |A| and the multiply
    layer.binarize_activations = False
    assert layer.method.extra_fp_ops(layer, 100, 10) == 0  # real activations: no threshold


def test_hbnn_weight_bits_is_its_average_bitwidth():
    model = onebit.binarize(small(), "hbnn")
    layer = model[1]
    layer(torch.randn(1, 8, 8, 8))
    assert layer.method.weight_bits(layer) == onebit.methods.hbnn.average_bits(layer) > 1
    assert onebit.summary(model, (3, 8, 8)).layers[1].precision == f"{onebit.methods.hbnn.average_bits(layer):g}/1"


def test_old_import_path():
    from onebit.bench import summary as bench_summary
    from onebit.bench.summary import Summary
    from onebit.nn.summary import Summary as NnSummary
    from onebit.nn.summary import summary

    assert bench_summary is summary and Summary is NnSummary
