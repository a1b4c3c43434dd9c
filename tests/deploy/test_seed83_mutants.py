"""A survivor of the honest mutation sample of seed 83 (issue 21): a weight-only packed layer's float
weight, unpacked once from the stored bits for torch's convolution, is derived state. Registered as a
persistent buffer it would put a 32x larger copy of every such layer into the packed model's state_dict."""

from __future__ import annotations

import torch

from onebit import models
from onebit.deploy import export
from onebit.deploy.packed import PackedBinaryWeightOnly


def test_a_weight_only_layer_keeps_its_unpacked_weight_out_of_the_state_dict():
    torch.manual_seed(0)
    net = models.create("mlp", num_classes=10, method="pcpp-bc", in_channels=1, input_shape=(1, 8, 8),
                        hidden=[32, 32]).eval()
    packed = export(net)
    layers = {name: m for name, m in packed.named_modules() if isinstance(m, PackedBinaryWeightOnly)}
    assert layers, "pcpp-bc's hidden layers pack as weight-only layers"
    state = packed.state_dict()
    for name, layer in layers.items():
        assert layer.weight.shape == layer.weight_shape  # the buffer exists, for the convolution
        assert f"{name}.weight" not in state
