"""onebit.summary on a small network whose counts are worked out by hand."""

import torch
from torch import nn

import onebit


def small():
    # conv 3->8 (3x3, pad 1) FP | conv 8->16 (3x3, pad 1, stride 2) binary | linear 16*4*4 -> 10 FP
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                         nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(16), nn.Hardtanh(),
                         nn.Flatten(), nn.Linear(256, 10))


def test_counts_by_hand_bnn():
    model = onebit.binarize(small(), "bnn")
    s = onebit.summary(model, (3, 8, 8))
    first, binary, last = s.layers
    assert first.precision == "32/32" and first.params_32bit == 3 * 8 * 9 + 8
    assert first.macs_fp == 8 * 8 * 8 * (3 * 9)  # 8 channels x 8x8 outputs x 27 taps
    assert binary.precision == "1/1" and binary.params_1bit == 16 * 8 * 9 and binary.params_32bit == 0
    assert binary.macs_binary == 16 * 4 * 4 * (8 * 9) and binary.macs_fp == 0 and binary.extra_fp_ops == 0
    assert last.params_32bit == 256 * 10 + 10 and last.macs_fp == 2560
    t = s.totals
    assert s.other_params == 2 * 8 + 2 * 16  # the two BatchNorms' affine parameters
    assert t["params_1bit"] == 1152 and t["params_32bit"] == 224 + 2570 + 48
    assert t["bops"] == 18432 and t["flops_bibench"] == 18432 / 64 + 13824 + 2560
    assert t["params_bibench"] == 1152 / 32 + 2842
    assert t["memory_bytes"] == 1152 / 8 + 2842 * 4
    assert abs(t["compression_ratio"] - (3994 * 4) / (144 + 11368)) < 1e-9
    table = str(s)
    assert "1/1" in table and "BOPs" in table and "compression" in table
    assert s.as_dict()["totals"]["bops"] == 18432


def test_method_extras_and_weight_only():
    model = onebit.binarize(small(), "xnor")
    binary = onebit.summary(model, (3, 8, 8)).layers[1]
    assert binary.extra_fp_ops == 2 * 8 * 8 * 8  # K: mean |A| and the multiply, per input element
    model = onebit.binarize(small(), "reactnet")
    binary = onebit.summary(model, example_input=torch.zeros(1, 3, 8, 8)).layers[1]
    assert binary.params_32bit == 8 and binary.extra_fp_ops == 8 * 8 * 8  # thresholds
    model = onebit.binarize(small(), "recu")
    binary = onebit.summary(model, (3, 8, 8)).layers[1]
    assert binary.params_32bit == 16 and binary.extra_fp_ops == 16 * 4 * 4  # learnable α per output
    model = onebit.binarize(small(), "pcpp-bnn")  # weights binary, activations real
    binary = onebit.summary(model, (3, 8, 8)).layers[1]
    assert binary.precision == "1/32" and binary.macs_binary == 0 and binary.macs_fp == 18432
