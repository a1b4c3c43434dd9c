"""ReActNet-A (Liu et al., "ReActNet: Towards Precise Binary Neural Network with Generalized
Activation Functions", ECCV 2020, Sec. 3.1 and Fig. 2-3), full precision or binary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import RPReLU
from ._layers import LayerFactory, ZooModel
from ._registry import ModelSpec, Option, is_int, is_positive_number, register

__all__ = ["ReActBlock", "ReActNetA", "reactnet_a_channels"]

#: Output channels of the stem and the 13 blocks, in units of the stem width (32 at width 1.0):
#: MobileNet-V1's layout, 32-64-128-128-256-256-512x6-1024-1024.
_UNITS = (1, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32)
#: Above this input side the stem has the paper's stride 2 (224 -> 7x7 before pooling); at CIFAR scale
#: a stride-1 stem keeps the last map at 2x2 instead of 1x1.
_STRIDE2_STEM_ABOVE = 64


def reactnet_a_channels(width: float) -> tuple[int, ...]:
    """Channels of the stem and the 13 blocks at a width multiplier. The stem width is rounded and the
    rest are exact multiples of it, so every transition still doubles (the duplicate trick needs it)."""
    base = max(1, round(32 * width))
    return tuple(base * u for u in _UNITS)


class ReActBlock(nn.Module):
    """One ReActNet-A block (Liu et al., Fig. 3).

    ``x -> [sign] -> 3x3 conv -> BN -> + shortcut(x) -> RPReLU -> h``, then
    ``h -> [sign] -> 1x1 conv(s) -> BN -> + h -> RPReLU``. The 3x3 conv replaces MobileNet's depthwise
    conv with a full one, as the paper does. The shortcut of a stride-2 block is a 2x2 average pool.
    Where the channels double, two 1x1 convs of ``C -> C`` each see the same input and their outputs
    (each plus ``h``) are concatenated: a ``C -> 2C`` shortcut needs no real-valued conv this way.

    The sign with a learnable threshold (RSign) is not a module here: with the ``reactnet`` method it
    is the binary conv's own input quantizer (its ``rsign_bias``), with other methods the method's
    quantizer, and the full-precision network has none. (The reference shares one threshold between the
    two 1x1 convs of a doubling block; here each conv has its own.)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, layers: LayerFactory) -> None:
        super().__init__()
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(
                f"ReActBlock keeps or doubles the channels; got {in_channels} -> {out_channels}"
            )
        self.conv3x3 = layers.conv2d(in_channels, in_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.shortcut = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.act1 = RPReLU(in_channels)
        copies = out_channels // in_channels
        self.pointwise = nn.ModuleList([layers.conv2d(in_channels, in_channels, 1) for _ in range(copies)])
        self.bn2 = nn.ModuleList([nn.BatchNorm2d(in_channels) for _ in range(copies)])
        self.act2 = RPReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.bn1(self.conv3x3(x)) + self.shortcut(x))
        out = torch.cat([bn(conv(h)) + h for conv, bn in zip(self.pointwise, self.bn2)], dim=1)
        return self.act2(out)


class ReActNetA(ZooModel):
    """ReActNet-A: a full-precision 3x3 stem conv + BN, 13 :class:`ReActBlock` on MobileNet-V1's channel
    layout, global average pool and a full-precision linear head.

    Blocks whose channels double have stride 2, except the first (32 -> 64), as in MobileNet-V1.
    ``width`` scales every channel count; ``input_size`` above 64 gets the paper's stride-2 stem
    (ImageNet, 224), otherwise a stride-1 stem (CIFAR, 32).
    """

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, width: float, input_size: int
    ) -> None:
        super().__init__()
        channels = reactnet_a_channels(width)
        stem_stride = 2 if input_size > _STRIDE2_STEM_ABOVE else 1
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(channels[0])
        )
        blocks = []
        for i in range(1, len(channels)):
            stride = 2 if channels[i] != channels[i - 1] and i > 1 else 1
            blocks.append(ReActBlock(channels[i - 1], channels[i], stride, layers))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)
        self._record((in_channels, input_size, input_size), num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


register(ModelSpec(
    name="reactnet_a", builder=ReActNetA,
    options={
        "width": Option(1.0, is_positive_number, "a number > 0",
                        "channel multiplier; 1.0 is the paper's 32-1024 channels"),
        "input_size": Option(224, is_int(8), "an int >= 8",
                             "side of the square input; > 64 gives the stride-2 ImageNet stem"),
    },
    input_shape=(3, 224, 224), num_classes=1000, size_option="input_size",
    paper="Liu et al., ReActNet, ECCV 2020 (ReActNet-A)",
    summary="ReActNet-A: MobileNet-V1 layout with full 3x3 convs, RPReLU, per-conv shortcuts, channel doubling",
))
