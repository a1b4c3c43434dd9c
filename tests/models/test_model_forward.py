"""Every zoo model, full precision and with every binarization method, trains: forward, a finite loss,
and a backward pass that reaches every trainable parameter."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import onebit
import onebit.models as M
from onebit.nn import BinaryLayer

METHODS = onebit.methods.available()

#: Tiny configurations, so that the full method grid stays fast on two CPU cores. ReActNet-A is kept
#: at 4 stem channels: at 1 channel its 1x1 convs have a fan-in of one, where per-channel weight
#: statistics (ReCU's std) are undefined.
SMALL = {
    "resnet20": {},
    "vgg_small": {"input_size": 8},
    "reactnet_a": {"width": 0.125, "input_size": 8},
    "vit": {"img_size": 8, "patch_size": 4, "dim": 16, "depth": 2, "heads": 2},
    "mlp": {"hidden": (16, 16, 16), "input_shape": (1, 8, 8)},
    "conv1d": {"channels": 8},
}
#: The big models run on small inputs (they are fully convolutional with global pooling), with a
#: few methods: a plain sign (bnn), a learnable threshold (reactnet), a learnable scale (recu).
BIG_INPUT = {"resnet18": (3, 8, 8), "resnet34": (3, 8, 8), "resnet18_imagenet": (3, 32, 32)}
BIG = [("resnet18", None), ("resnet18", "recu"), ("resnet34", "bnn"), ("resnet18_imagenet", "reactnet")]
#: Four samples: BatchNorm over two samples maps any pair to about (-1, +1), which leaves the layers
#: before it with (almost) no gradient.
BATCH = 4


def _train_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    out = model(x)
    target = torch.arange(x.shape[0]) % out.shape[1]
    loss = F.cross_entropy(out, target) + onebit.extra_loss(model)
    loss.backward()
    return loss


def _check_gradients(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    # A gradient can be exactly zero where a clipped surrogate masks it (tiny nets, saturated inputs), but
    # the layers that carry the signal must always learn: the stem, the head and every binary weight.
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
             and not _inside_binary_helper(model, m)]
    for m in [convs[0], convs[-1]] + [m for m in model.modules() if isinstance(m, BinaryLayer)]:
        assert m.weight.grad.abs().sum() > 0, f"{type(m).__name__} weight got a zero gradient"


def _inside_binary_helper(model: nn.Module, module: nn.Module) -> bool:
    """Method-owned helper layers inside a binary layer (FDA's noise adaptation) are not model layers."""
    for m in model.modules():
        if isinstance(m, BinaryLayer) and any(sub is module for sub in m.modules() if sub is not m):
            return True
    return False


@pytest.mark.parametrize("method", [None] + METHODS)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_models_train_with_every_method(name, method):
    torch.manual_seed(0)
    model = M.create(name, method=method, **SMALL[name])
    loss = _train_step(model, torch.randn(BATCH, *model.input_shape))
    assert torch.isfinite(loss)
    _check_gradients(model)
    binary = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    if method is None:
        assert binary == []
    else:
        assert binary and all(m.method.name == method for m in binary)


@pytest.mark.parametrize("name, method", BIG)
def test_big_models_train(name, method):
    torch.manual_seed(0)
    model = M.create(name, method=method)
    loss = _train_step(model, torch.randn(BATCH, *BIG_INPUT[name]))
    assert torch.isfinite(loss)
    _check_gradients(model)


def test_bireal18_trains():
    torch.manual_seed(0)
    model = M.create("resnet18_imagenet", method="bireal", bireal=True)
    assert torch.isfinite(_train_step(model, torch.randn(BATCH, 3, 32, 32)))
    _check_gradients(model)


@pytest.mark.parametrize(
    "name, options, batch_shape, out_shape",
    [
        ("resnet20", {}, (3, 3, 32, 32), (3, 10)),
        ("resnet18", {}, (2, 3, 16, 16), (2, 10)),
        ("resnet18_imagenet", {"bireal": True}, (1, 3, 64, 64), (1, 1000)),
        ("vgg_small", {}, (2, 3, 32, 32), (2, 10)),
        ("reactnet_a", {"width": 0.125, "input_size": 32}, (2, 3, 32, 32), (2, 1000)),
        ("vit", {"img_size": 32, "patch_size": 8, "dim": 24, "depth": 1, "heads": 3}, (2, 3, 32, 32), (2, 1000)),
        ("mlp", {"hidden": (32,)}, (4, 1, 28, 28), (4, 10)),
        ("conv1d", {}, (5, 1, 40), (5, 10)),
    ],
)
def test_output_shapes(name, options, batch_shape, out_shape):
    model = M.create(name, method="bnn", **options).eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(*batch_shape)).shape) == out_shape


def test_num_classes_and_in_channels_reach_the_network():
    model = M.create("resnet20", num_classes=7, in_channels=1).eval()
    assert model.conv1.in_channels == 1 and model.input_shape == (1, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 12, 12)).shape == (2, 7)
    model = M.create("conv1d", num_classes=4, in_channels=2, length=64).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 2, 64)).shape == (3, 4)
