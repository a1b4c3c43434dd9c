"""Details that the seed-53 mutation sample (tools/mutate.py) found untested: the summary's FP operation
total adds each method's extra FP operations (XNOR-Net's K, counted by hand), and the lean Hardtanh's
int8 code turns back into a bfloat16 gradient (the cast back was numpy's for float32/float64 only when this
was written; it is torch's for every dtype now)."""

from __future__ import annotations

import torch
from torch import nn

import onebit
from onebit.nn.lean import MIN_NUMEL, keep_int8_for_backward


def _small() -> nn.Module:
    # conv 3->8 (3x3, pad 1) FP | conv 8->16 (3x3, pad 1, stride 2) binary | linear 16*4*4 -> 10 FP
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                         nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(16), nn.Hardtanh(),
                         nn.Flatten(), nn.Linear(256, 10))


def test_the_fp_operation_total_adds_the_methods_extra_operations():
    totals = onebit.summary(onebit.binarize(_small(), "xnor"), (3, 8, 8)).totals
    convs_and_linear = 8 * 8 * 8 * 27 + 2560  # the FP first conv and last linear's MACs
    k_factor = 2 * 8 * 8 * 8  # XNOR-Net's K: mean |A| and the multiply, per input element of the binary conv
    assert totals["fp_macs"] == convs_and_linear + k_factor
    assert totals["flops_bibench"] == totals["bops"] / 64 + convs_and_linear + k_factor


def test_the_lean_hardtanh_gives_the_plain_gradient_in_bfloat16():
    torch.manual_seed(0)
    x = (torch.randn(MIN_NUMEL + 17) * 1.5).to(torch.bfloat16)
    x[:4] = torch.tensor([1.0, -1.0, 0.0, 0.5])
    lean, plain = keep_int8_for_backward(nn.Hardtanh()), nn.Hardtanh()
    grads = []
    for module in (lean, plain):
        xi = x.clone().requires_grad_(True)
        (module(xi) * torch.arange(xi.numel()).to(torch.bfloat16)).sum().backward()
        grads.append(xi.grad)
    assert grads[0].dtype == torch.bfloat16
    assert torch.equal(grads[0], grads[1])
