"""VGG-Small for CIFAR, full precision or binary.

References:
    Zhang et al., "LQ-Nets", ECCV 2018 (VGG-Small: 128-128-M-256-256-M-512-512-M, one linear layer);
    Qin et al., IR-Net, CVPR 2020 and Vargas et al., BiPer, CVPR 2024 (the binary ``vgg_small_1w1a``:
    conv -> max-pool -> BN -> Hardtanh, first conv and the classifier in full precision).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._layers import (
    ACTIVATIONS,
    LayerFactory,
    ZooModel,
    check_input_shape,
    make_activation,
    resolve_activation,
)
from ._registry import ModelSpec, Option, is_choice, is_int, register

__all__ = ["VGGSmall"]

#: (out_channels, max-pool after this conv) for the six convs of VGG-Small.
_CONFIG = ((128, False), (128, True), (256, False), (256, True), (512, False), (512, True))


class VGGSmall(ZooModel):
    """VGG-Small (LQ-Nets; binary form as IR-Net/BiPer ``vgg_small_1w1a``).

    Six 3x3 convs; after convs 2, 4 and 6 a 2x2 max-pool comes *before* the BN, as in IR-Net, so that
    the BN's shift (the effective threshold of the next layer's sign) is fitted to the pooled tensor
    that the next layer actually binarizes.
    The first conv and the linear classifier are full precision; the five other convs are binary.
    """

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, activation: str | None,
        input_size: int,
    ) -> None:
        super().__init__()
        act = resolve_activation(activation, layers.binary)
        feats: list[nn.Module] = []
        prev = in_channels
        for i, (width, pool) in enumerate(_CONFIG):
            conv = nn.Conv2d(prev, width, 3, 1, 1, bias=False) if i == 0 else layers.conv2d(prev, width, 3, 1, 1)
            feats.append(conv)
            if pool:
                feats.append(nn.MaxPool2d(2, 2))
            feats += [nn.BatchNorm2d(width), make_activation(act, width)]
            prev = width
        self.features = nn.Sequential(*feats)
        side = input_size // 8
        self.fc = nn.Linear(prev * side * side, num_classes)
        self._record((in_channels, input_size, input_size), num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        check_input_shape("VGGSmall", x, self.input_shape, 2,
                          f"its classifier flattens the feature map: build it with input_size={x.shape[-1]}")
        return self.fc(self.features(x).flatten(1))


register(ModelSpec(
    name="vgg_small", builder=VGGSmall,
    options={
        "activation": Option(
            None, is_choice(None, *ACTIVATIONS),
            "None (hardtanh when binary, relu when full precision) or one of " + ", ".join(map(repr, ACTIVATIONS)),
            "activation after every BN",
        ),
        "input_size": Option(32, is_int(8), "an int >= 8 (the input is input_size x input_size)",
                             "side of the square input; the classifier flattens a (input_size // 8)^2 map"),
    },
    input_shape=(3, 32, 32), num_classes=10, size_option="input_size",
    paper="Zhang et al., LQ-Nets, ECCV 2018; binary form: Qin et al., IR-Net, CVPR 2020 (vgg_small_1w1a)",
    summary="VGG-Small: 128-128-M-256-256-M-512-512-M convs with BN + Hardtanh, one linear layer (4.66M params)",
))
