"""A packed binary conv's plan entry points take any float input, as its ``forward`` does (issue 21:
single-file sample 9203 of ``deploy/packed.py``, hunting, not an honest sample: ``_pack_input``'s
``x.dtype != torch.float32`` written ``==`` survived, since the packed model converts its own input to
float32 first). ``forward_bits`` and ``forward_residual`` read what the layer before them wrote, which a
full-precision module may leave in float64 or bfloat16: they binarize it as its float32 copy."""

from __future__ import annotations

import pytest
import torch
from deploy_probe import randomize_norms
from torch import nn

import onebit
from onebit.deploy import export
from onebit.deploy import kernels as K
from onebit.deploy.packed import PackedBinary


def _two_packed_convs() -> tuple[PackedBinary, PackedBinary]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),  # (no activation to fold)
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 4))
    onebit.binarize(model, "reactnet")
    randomize_norms(model)
    first, second = [m for m in export(model.eval()).modules() if isinstance(m, PackedBinary)]
    return first, second


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_forward_bits_and_forward_residual_take_other_floats(dtype):
    first, second = _two_packed_convs()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    x32 = x.float().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        bits = first.forward_bits(x, second)
        assert torch.equal(K.unpack_activations(bits), K.unpack_activations(first.forward_bits(x32, second)))
        transform = first.residual_transform((-1.0, 1.0))
        assert transform is not None
        shortcut = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
        got = first.forward_residual(x, shortcut, transform)
        assert torch.equal(got, first.forward_residual(x32, shortcut, transform))
