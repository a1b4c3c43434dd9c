"""A method that overrides ``scale_output`` below the class that defines ``output_scale_factors`` (issue 21,
single-file mutation sample ``--seed 8105`` of nn/layers.py, not an honest sample): the layer must then call
the override instead of fusing the parent's factors, whose product would silently drop it.
``_fused_scales``' ``issubclass`` test with its two classes swapped survived, since no test had such a
subclass (ReCU's per-channel α, Xu et al., ICCV 2021, with an extra gain on top)."""

from __future__ import annotations

import pytest
import torch

from onebit.methods.recu import ReCU
from onebit.nn import BinaryConv2d, BinaryLinear


class _HalvedReCU(ReCU):
    name = "test-recu-halved"

    def scale_output(self, layer, y):
        return super().scale_output(layer, y) * 0.5


def _pair(make):
    torch.manual_seed(0)
    plain, halved = make(ReCU()), make(_HalvedReCU())
    with torch.no_grad():
        plain.alpha.copy_(torch.rand_like(plain.alpha) + 0.5)
    halved.load_state_dict(plain.state_dict())
    return plain, halved


@pytest.mark.parametrize(("make", "shape"), [
    (lambda method: BinaryLinear(6, 4, bias=False, method=method), (3, 6)),
    (lambda method: BinaryConv2d(3, 4, 3, padding=1, bias=False, method=method), (2, 3, 5, 5)),
])
def test_a_scale_output_override_below_the_factors_class_is_applied(make, shape):
    plain, halved = _pair(make)
    x = torch.randn(*shape)
    expected = plain(x).detach()
    assert expected.abs().max() > 0
    torch.testing.assert_close(halved(x).detach(), 0.5 * expected, rtol=1e-6, atol=1e-6)

