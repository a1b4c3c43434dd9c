"""Binary layers, the blocks binary architectures need, and model conversion."""

from .blocks import LearnableBias, RPReLU, RSign
from .convert import binarize, binary_layers, convertible_layers, extra_loss, finalize, schedule_step
from .layers import PAD_VALUES, BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear

__all__ = [
    "PAD_VALUES",
    "BinaryConv1d",
    "BinaryConv2d",
    "BinaryLayer",
    "BinaryLinear",
    "LearnableBias",
    "RPReLU",
    "RSign",
    "binarize",
    "binary_layers",
    "convertible_layers",
    "extra_loss",
    "finalize",
    "schedule_step",
]
