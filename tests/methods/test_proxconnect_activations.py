"""ProxConnect++'s BinaryConnect preset with the optional binary activations (a mutation survivor of
tools/mutate.py): ``sign`` forward and its backward quantizer B — the identity for BC — as surrogate,
so the input gradient passes unclipped, also where |x| > 1."""

import torch
import torch.nn.functional as F

from onebit.methods.functional import sign
from onebit.nn import BinaryLinear


def test_binary_connect_activations_sign_forward_identity_backward():
    torch.manual_seed(0)
    layer = BinaryLinear(5, 3, bias=False, method="pcpp-bc", scale="none", binarize_activations=True)
    x = torch.tensor([[0.5, -1.5, 0.0, -0.3, 2.0]], requires_grad=True)
    out = layer(x)
    w = sign(layer.weight.detach())
    assert torch.equal(out.detach(), F.linear(sign(x.detach()), w))
    out.sum().backward()
    assert torch.equal(x.grad, w.sum(0, keepdim=True))
