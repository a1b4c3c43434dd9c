"""IR-Net: Libra-PB by hand, the EDE gradient for weights and activations, and the (t, k) schedule."""

import math

import pytest
import torch

import onebit
from onebit.methods.irnet import irnet_tk, libra_pb
from onebit.nn import BinaryConv2d, BinaryLinear


def linear(w):
    layer = BinaryLinear(len(w), 1, bias=False, method="irnet")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w]))
    return layer


@pytest.mark.parametrize("epoch,t,k", [
    (0, 1e-3, 1000.0),  # first epoch: t_min, k = 1/t
    (5, 0.1, 10.0),  # middle: 10^(-3 + 4·5/10)
    (9, 10 ** 0.6, 1.0),  # last epoch: 10^(-3 + 4·9/10) = 3.98 > 1, so k = 1
    (10, 10.0, 1.0),  # after training: t_max
])
def test_schedule_t_and_k(epoch, t, k):
    layer = linear([1.0, 2.0])
    layer.schedule_step(epoch, 10)
    assert layer.ede_t.item() == pytest.approx(t, rel=1e-6)
    assert layer.ede_k.item() == pytest.approx(k, rel=1e-6)
    assert irnet_tk(epoch, 10, 1e-3, 10.0) == (pytest.approx(t), pytest.approx(k))


def test_initial_buffers_are_the_first_epoch_values():
    layer = linear([1.0, 2.0])
    assert (layer.ede_t.item(), layer.ede_k.item()) == (pytest.approx(1e-3), pytest.approx(1000.0))
    assert irnet_tk(0, 10, 1e-2, 10.0) == (pytest.approx(1e-2), pytest.approx(100.0))  # ResNet-34 t_min


def test_libra_pb_forward_by_hand():
    layer = linear([1.0, 2.0, 3.0, 6.0])
    # centred [-2, -1, 0, 3], unbiased std sqrt(14/3); mean|Ŵ| = 6/4/sqrt(14/3) = 0.694 → 2^round(-0.53) = 0.5
    std = math.sqrt(14 / 3)
    assert sum(abs(v) for v in (-2, -1, 0, 3)) / 4 / std == pytest.approx(0.6944, abs=1e-4)
    wq = layer.method.quantize_weight(layer, layer.weight).detach()
    assert wq[0].tolist() == [-0.5, -0.5, 0.5, 0.5]
    y = layer(torch.tensor([[0.3, -0.2, 0.1, 0.9]]))
    assert y.item() == pytest.approx(0.5 * (-1 + 1 + 1 + 1))


def test_scale_is_a_power_of_two_per_channel():
    torch.manual_seed(0)
    conv = BinaryConv2d(4, 6, 3, method="irnet")
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-2, 2, 6).reshape(6, 1, 1, 1)).add_(0.3)
    balanced, scale = libra_pb(conv.weight)
    log2 = torch.log2(scale.flatten())
    assert torch.equal(log2, log2.round())
    assert torch.allclose(balanced.mean(dim=(1, 2, 3)), torch.zeros(6), atol=1e-4)  # balanced
    assert torch.allclose(balanced.reshape(6, -1).std(dim=1), torch.ones(6), atol=1e-5)  # standardized
    wq = conv.method.quantize_weight(conv, conv.weight).detach()
    assert torch.equal(wq, scale * torch.where(balanced >= 0, 1.0, -1.0))  # scale independent of |W|


def test_ede_gradients_for_weights_and_activations():
    w = [1.0, 2.0, 3.0, 6.0]
    layer = linear(w)
    layer.schedule_step(5, 10)  # t = 0.1, k = 10
    t, k = 0.1, 10.0
    x = torch.tensor([[0.3, -0.2, 0.1, 2.5]], requires_grad=True)
    layer(x).sum().backward()
    # activations: ∂y/∂x = s·sign(Ŵ)·k·t·(1 − tanh²(t·x))
    sw = torch.tensor([-0.5, -0.5, 0.5, 0.5])
    ede = [k * t * (1 - math.tanh(t * v) ** 2) for v in (0.3, -0.2, 0.1, 2.5)]
    assert x.grad[0].tolist() == pytest.approx((sw * torch.tensor(ede)).tolist(), rel=1e-5)
    # weights: EDE on Ŵ, chained through the non-detached mean and std; s is detached
    wt = torch.tensor([w], dtype=torch.float64, requires_grad=True)
    centred = wt - wt.mean()
    balanced = centred / centred.std()
    (k * torch.tanh(t * balanced) * 0.5 * torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)).sum().backward()
    assert layer.weight.grad[0].tolist() == pytest.approx(wt.grad[0].tolist(), rel=1e-5, abs=1e-7)


def test_constant_channel_gives_finite_values_and_gradients():
    layer = BinaryLinear(3, 2, bias=False, method="irnet")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.4, 0.4, 0.4], [0.1, -0.2, 0.3]]))
    out = layer(torch.tensor([[0.5, -1.0, 2.0]]))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(layer.weight.grad).all()
    assert out[0, 0].item() == 0.0  # Ŵ = 0 → scale 2^round(log2 0) = 0
    single = BinaryLinear(1, 2, method="irnet")
    assert torch.isfinite(single(torch.randn(3, 1))).all()


def test_option_errors():
    with pytest.raises(ValueError, match="t_max=0.01 must be >= t_min=0.1"):
        onebit.methods.get("irnet", t_min=0.1, t_max=0.01)
    with pytest.raises(ValueError, match=r"t_min=0 is out of range"):
        onebit.methods.get("irnet", t_min=0)
