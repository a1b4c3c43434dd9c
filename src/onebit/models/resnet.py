"""ResNets for CIFAR (ResNet-18/34/20) and ImageNet (ResNet-18 and Bi-Real-18), full precision or binary.

References:
    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (the architectures;
    ResNet-20 and its option-A/B shortcuts are its Sec. 4.2).
    Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural Networks" (IR-Net),
    CVPR 2020; Xu et al., ReCU, ICCV 2021; Vargas et al., BiPer, CVPR 2024: the binary CIFAR
    ``resnet*_1w1a`` form (BN after every binary conv, Hardtanh, full-precision stem and head).
    Liu et al., "Bi-Real Net", ECCV 2018: a real-valued shortcut around every binary conv, and the
    AvgPool + 1x1-conv downsample of Bi-Real-18.
    Qin et al., BiBench, ICML 2023: which layers stay full precision (stem, 1x1 downsample convs, head).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import ACTIVATIONS, LayerFactory, ZooModel, make_activation, resolve_activation
from ._registry import ModelSpec, Option, is_bool, is_choice, register

__all__ = ["BasicBlock", "CifarResNet", "ImageNetResNet", "ZeroPadShortcut"]

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut, parameter-free: downsample spatially, then zero-pad the new channels.

    The spatial downsample is a 2x2 average pool as in BiPer's ``resnet20_1w1a`` rather than He et al.'s
    ``x[:, :, ::2, ::2]``: averaging keeps information from every position, which matters when this
    shortcut is the only real-valued path past a binary conv. ``ceil_mode`` makes odd sizes match the
    stride-2 3x3 conv of the residual branch (both give ``ceil(n / 2)``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(self.pool(x), (0, 0, 0, 0, self.pad_front, self.pad_back))


def _shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The identity path of a block. Downsample convs are plain ``nn.Conv2d``: BiBench keeps them full
    precision (``downsample_conv_cfg=None``) and Bi-Real Net does too, they are 1x1 and cheap."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    if kind == "B":
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    if kind == "avgpool":
        # Bi-Real-18: pool first, so the 1x1 conv sees every input position instead of one in four.
        pool: nn.Module = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        return nn.Sequential(
            pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
    raise ValueError(f"shortcut={kind!r} is not allowed; use one of {', '.join(map(repr, SHORTCUTS))}")


class BasicBlock(nn.Module):
    """Two 3x3 convs, each followed by BN (He et al.'s BasicBlock).

    ``bireal=False``: one shortcut around both convs (He et al.; BiBench's binary ResNets).
    ``bireal=True``: a shortcut around *each* conv (Bi-Real Net; IR-Net/ReCU/BiPer ``resnet*_1w1a``):
    ``h = act(BN(conv1(x)) + shortcut(x))``, ``out = act(BN(conv2(h)) + h)``. Binary convs lose most
    of their input's information, so a real-valued path past every one of them carries it on.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, layers: LayerFactory, activation: str,
        shortcut: str, bireal: bool,
    ) -> None:
        super().__init__()
        self.conv1 = layers.conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = make_activation(activation, out_channels)
        self.conv2 = layers.conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = make_activation(activation, out_channels)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride)
        self.bireal = bireal

    def forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x)
        out = self.bn1(self.conv1(x))
        if self.bireal:
            out = out + identity
        out = self.act1(out)
        inner = out
        out = self.bn2(self.conv2(out))
        out = out + (inner if self.bireal else identity)
        return self.act2(out)


def _stage(
    blocks: int, in_channels: int, out_channels: int, stride: int, layers: LayerFactory, activation: str,
    shortcut: str, bireal: bool,
) -> nn.Sequential:
    mods = [BasicBlock(in_channels, out_channels, stride, layers, activation, shortcut, bireal)]
    mods += [
        BasicBlock(out_channels, out_channels, 1, layers, activation, shortcut, bireal) for _ in range(blocks - 1)
    ]
    return nn.Sequential(*mods)


class CifarResNet(ZooModel):
    """CIFAR ResNet (He et al., CVPR 2016): a 3x3 stride-1 stem without max-pool, stages of
    :class:`BasicBlock` (stride 2 from the second stage on), global average pool, linear head.

    Binary form as IR-Net/ReCU/BiPer's ``resnet18_1w1a``/``resnet20_1w1a``: every 3x3 conv of the
    blocks is binary with BN after it; the stem conv, the head and any 1x1 downsample conv stay full
    precision. (The ``_1w1a`` references also put a BatchNorm1d before the head; it is left out so the
    full-precision network is exactly He et al.'s, 11,173,962 parameters for ResNet-18 on CIFAR-10.)
    """

    def __init__(
        self, blocks: tuple[int, ...], widths: tuple[int, ...], *, layers: LayerFactory, num_classes: int,
        in_channels: int, activation: str | None, shortcut: str, bireal: bool,
    ) -> None:
        super().__init__()
        act = resolve_activation(activation, layers.binary)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = make_activation(act, widths[0])
        stages = []
        prev = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stages.append(_stage(n, prev, width, 1 if i == 0 else 2, layers, act, shortcut, bireal))
            prev = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        self._record((in_channels, 32, 32), num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.pool(x).flatten(1))


class ImageNetResNet(ZooModel):
    """ImageNet ResNet-18 (He et al.): 7x7 stride-2 stem + 3x3 max-pool, four stages of two
    :class:`BasicBlock`, 1x1-conv + BN downsample (option B), for 224x224 inputs.

    ``bireal=True`` gives Bi-Real-18 (Liu et al., ECCV 2018): the same 16 3x3 convs, each with its own
    shortcut, and downsample shortcuts of AvgPool(2) + 1x1 conv + BN. Bi-Real Net has no nonlinearity
    besides the sign, so its default binary activation is ``identity``.
    """

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, activation: str | None,
        bireal: bool,
    ) -> None:
        super().__init__()
        if activation is None and bireal and layers.binary:
            activation = "identity"
        act = resolve_activation(activation, layers.binary)
        shortcut = "avgpool" if bireal else "B"
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = make_activation(act, 64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        prev = 64
        for i, width in enumerate(widths):
            stages.append(_stage(2, prev, width, 1 if i == 0 else 2, layers, act, shortcut, bireal))
            prev = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        self._record((in_channels, 224, 224), num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(self.pool(x).flatten(1))


_ACTIVATION_ALLOWED = (
    "None (hardtanh when binary, relu when full precision) or one of " + ", ".join(map(repr, ACTIVATIONS))
)


def _activation_option(default_doc: str = "") -> Option:
    return Option(None, is_choice(None, *ACTIVATIONS), _ACTIVATION_ALLOWED,
                  "activation after every BN-ed residual sum" + default_doc)


def _cifar_options(shortcut: str) -> dict[str, Option]:
    return {
        "activation": _activation_option(),
        "shortcut": Option(shortcut, is_choice(*SHORTCUTS),
                           "'A' (avg-pool + zero channel pad) or 'B' (full-precision 1x1 conv + BN)",
                           "downsample shortcut (He et al. options A/B)"),
        "bireal": Option(False, is_bool, "True or False",
                         "a shortcut around every conv (Bi-Real Net; IR-Net/BiPer resnet*_1w1a)"),
    }


def _cifar_builder(blocks: tuple[int, ...], widths: tuple[int, ...]):
    def build(**kwargs) -> CifarResNet:
        return CifarResNet(blocks, widths, **kwargs)

    return build


_CIFAR_PAPERS = "He et al., CVPR 2016; binary form: Qin et al., IR-Net, CVPR 2020 (resnet*_1w1a)"

register(ModelSpec(
    name="resnet18", builder=_cifar_builder((2, 2, 2, 2), (64, 128, 256, 512)), options=_cifar_options("B"),
    input_shape=(3, 32, 32), num_classes=10, paper=_CIFAR_PAPERS,
    summary="CIFAR ResNet-18: 3x3 stem, no max-pool, 16 3x3 convs in 4 stages (64-512 channels)",
))
register(ModelSpec(
    name="resnet34", builder=_cifar_builder((3, 4, 6, 3), (64, 128, 256, 512)), options=_cifar_options("B"),
    input_shape=(3, 32, 32), num_classes=10, paper=_CIFAR_PAPERS,
    summary="CIFAR ResNet-34: 3x3 stem, no max-pool, 32 3x3 convs in 4 stages (64-512 channels)",
))
register(ModelSpec(
    name="resnet20", builder=_cifar_builder((3, 3, 3), (16, 32, 64)), options=_cifar_options("A"),
    input_shape=(3, 32, 32), num_classes=10, paper=_CIFAR_PAPERS,
    summary="CIFAR ResNet-20 (He et al. Sec. 4.2): 18 3x3 convs in 3 stages of 16/32/64 channels, 0.27M params",
))
register(ModelSpec(
    name="resnet18_imagenet", builder=ImageNetResNet,
    options={
        "activation": Option(None, is_choice(None, *ACTIVATIONS),
                             _ACTIVATION_ALLOWED + "; with bireal=True a binary network defaults to 'identity'",
                             "activation after every BN-ed residual sum"),
        "bireal": Option(False, is_bool, "True or False",
                         "Bi-Real-18: a shortcut around every conv, AvgPool + 1x1 conv downsample"),
    },
    input_shape=(3, 224, 224), num_classes=1000,
    paper="He et al., CVPR 2016; bireal=True: Liu et al., Bi-Real Net, ECCV 2018",
    summary="ImageNet ResNet-18: 7x7 stride-2 stem + max-pool, 16 3x3 convs; bireal=True gives Bi-Real-18",
))
