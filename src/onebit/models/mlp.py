"""Small networks for small data: a binary MLP and a 1-D conv net for sequences such as MNIST-1D.

References:
    Courbariaux, Bengio, David, "BinaryConnect", NeurIPS 2015 (the MNIST MLP: 3 hidden layers of 1024);
    Hubara, Courbariaux, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks", NeurIPS 2016 (BN and
    Hardtanh between binary Linear layers);
    Greydanus, "Scaling down Deep Learning" (MNIST-1D), 2020 (the ConvBase net: three convs of 25 channels,
    kernels 5-3-3, stride 2, padding 1, then a linear layer).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ._layers import (
    ACTIVATIONS,
    LayerFactory,
    ZooModel,
    check_input_shape,
    make_activation,
    resolve_activation,
)
from ._registry import ModelSpec, Option, is_choice, is_int, is_int_tuple, register

__all__ = ["MLP", "Conv1dNet"]


class MLP(ZooModel):
    """Flatten -> Linear -> BN -> act, repeated for every hidden size -> Linear head.

    The first Linear (input -> ``hidden[0]``) and the head are full precision, the Linears between
    hidden layers binary; so ``len(hidden) - 1`` binary layers.
    """

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, hidden: tuple[int, ...],
        input_shape: tuple[int, ...], activation: str | None,
    ) -> None:
        super().__init__()
        act = resolve_activation(activation, layers.binary)
        shape = (in_channels,) + tuple(input_shape[1:])
        mods: list[nn.Module] = [nn.Flatten()]
        prev = math.prod(shape)
        for i, width in enumerate(hidden):
            mods.append(nn.Linear(prev, width) if i == 0 else layers.linear(prev, width))
            mods += [nn.BatchNorm1d(width), make_activation(act, width)]
            prev = width
        mods.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*mods)
        self._record(shape, num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        check_input_shape("MLP", x, self.input_shape, len(self.input_shape), "build it with input_shape=...")
        return self.net(x)


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class Conv1dNet(ZooModel):
    """MNIST-1D's ConvBase (Greydanus 2020) with BN after every conv: ``Conv1d(k5, s2, p1)`` then two
    ``Conv1d(k3, s2, p1)``, each -> BN -> act, flatten, Linear. Length 40 shrinks to 19, 10, 5.

    The first conv and the Linear head are full precision, the other two convs binary.
    """

    _KERNELS = (5, 3, 3)

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, channels: int, length: int,
        activation: str | None,
    ) -> None:
        super().__init__()
        act = resolve_activation(activation, layers.binary)
        mods: list[nn.Module] = []
        prev, size = in_channels, length
        for i, k in enumerate(self._KERNELS):
            size = _conv_out(size, k, 2, 1)
            if size < 1:
                raise ValueError(f"conv1d: length={length} is too short for three stride-2 convs; use length >= 8")
            conv = nn.Conv1d(prev, channels, k, 2, 1, bias=False) if i == 0 else layers.conv1d(prev, channels, k, 2, 1)
            mods += [conv, nn.BatchNorm1d(channels), make_activation(act, channels)]
            prev = channels
        self.features = nn.Sequential(*mods)
        self.fc = nn.Linear(channels * size, num_classes)
        self._record((in_channels, length), num_classes, layers)

    def forward(self, x: Tensor) -> Tensor:
        check_input_shape("Conv1dNet", x, self.input_shape, 2, "build it with length=... and in_channels=...")
        return self.fc(self.features(x).flatten(1))


_ACTIVATION = Option(
    None, is_choice(None, *ACTIVATIONS),
    "None (hardtanh when binary, relu when full precision) or one of " + ", ".join(map(repr, ACTIVATIONS)),
    "activation after every BN",
)

register(ModelSpec(
    name="mlp", builder=MLP,
    options={
        "hidden": Option((1024, 1024, 1024), is_int_tuple(1), "a tuple of positive ints", "hidden layer sizes"),
        "input_shape": Option((1, 28, 28), is_int_tuple(1), "a tuple of positive ints",
                              "shape of one sample (flattened); in_channels replaces its first entry"),
        "activation": _ACTIVATION,
    },
    input_shape=(1, 28, 28), num_classes=10, size_option="input_shape",
    paper="Courbariaux et al., BinaryConnect, NeurIPS 2015; Hubara et al., BNN, NeurIPS 2016",
    summary="MLP: FP Linear, binary Linears between hidden layers (BN + Hardtanh), FP head; MNIST by default",
))
register(ModelSpec(
    name="conv1d", builder=Conv1dNet,
    options={
        "channels": Option(25, is_int(1), "a positive int", "channels of every conv (ConvBase uses 25)"),
        "length": Option(40, is_int(8), "an int >= 8", "sequence length (MNIST-1D: 40)"),
        "activation": _ACTIVATION,
    },
    input_shape=(1, 40), num_classes=10, size_option="length",
    paper="Greydanus, MNIST-1D (Scaling down Deep Learning), 2020",
    summary="1-D conv net for sequences (MNIST-1D ConvBase + BN): FP first conv and head, two binary convs",
))
