"""The model zoo: binary-network architectures from the papers, full precision or binary.

    import onebit.models as M
    M.available()                                  # model names
    net = M.create("resnet18")                     # full-precision CIFAR ResNet-18
    bnn = M.create("resnet18", method="recu")      # the same network with ReCU binary convs
    vit = M.create("vit", method="bnn", img_size=32, patch_size=4, depth=6)
    net.input_shape                                # (3, 32, 32): the shape of one sample

With a method, the layers the papers binarize are built as ``onebit.nn`` binary layers; the first and
last layers (and downsample convs) stay full precision. ``spec(name)`` describes a model's options,
default input shape and number of classes.
"""

from __future__ import annotations

# Importing an architecture module registers its models.
from . import mlp, reactnet, resnet, vgg, vit  # noqa: F401
from ._layers import ACTIVATIONS, LAYER_OPTIONS, LayerFactory, ZooModel
from ._registry import ModelSpec, Option, available, create, register, spec
from .mlp import MLP, Conv1dNet
from .reactnet import ReActNetA
from .resnet import CifarResNet, ImageNetResNet
from .vgg import VGGSmall
from .vit import ViT

__all__ = [
    "ACTIVATIONS",
    "LAYER_OPTIONS",
    "MLP",
    "CifarResNet",
    "Conv1dNet",
    "ImageNetResNet",
    "LayerFactory",
    "ModelSpec",
    "Option",
    "ReActNetA",
    "VGGSmall",
    "ViT",
    "ZooModel",
    "available",
    "create",
    "register",
    "spec",
]
