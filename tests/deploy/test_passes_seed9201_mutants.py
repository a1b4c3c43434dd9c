"""Two execution-plan decisions that change no value, only where it is written (issue 21: single-file
sample 9201 of ``deploy/passes.py``, hunting, not an honest sample): a fused block given a float32,
channels_last, output-shaped shortcut runs in one engine pass and, told to, writes over that shortcut
(mutant: only a non-float32 shortcut went to the engine); and the float output of a chain's last conv,
read by an addition alone, is a temporary the addition may write into (mutant: only a chain link that
hands bits on counted as one)."""

from __future__ import annotations

import operator

import torch
from deploy_probe import randomize_norms
from torch import nn

import onebit
from onebit.deploy import export, passes
from onebit.deploy.passes import ChainedBinary, ResidualBinary, _add_


class Block(nn.Module):
    """Binary conv + BN added to the block input, then Hardtanh (Bi-Real's block)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.Hardtanh()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


class ChainThenAdd(nn.Module):
    """Binary conv ``a`` read only by binary conv ``b`` (a chain), ``b``'s output added to the input."""

    def __init__(self, c: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.bn(self.b(self.a(x))) + x


def _packed(*body: nn.Module, c: int = 16):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.Hardtanh(), *body,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))
    x = torch.randn(2, 3, 8, 8)
    onebit.binarize(model, "bireal", example_input=x)
    randomize_norms(model)
    return export(model.eval()), x


def test_a_fused_block_writes_over_a_float32_channels_last_shortcut():
    packed, _ = _packed(Block(16))
    plan = passes._Plan(packed.net)
    for step in passes.PASSES[:3]:
        step(plan)
    (fused,) = [plan.module(n) for n in plan.graph.nodes if isinstance(plan.module(n), ResidualBinary)]
    fused = fused.but(overwrite_residual=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    shortcut = torch.randn(2, 16, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = (fused.layer(x) + shortcut).clamp(-1, 1)
        got = fused(x, shortcut)
    assert got.data_ptr() == shortcut.data_ptr()  # the engine wrote the block's output over the shortcut
    assert (got - want).abs().max().item() <= 1e-5
    # a float64 shortcut is no engine operand: the block adds it in torch, and leaves it as it was
    wide = torch.randn(2, 16, 8, 8, generator=gen, dtype=torch.float64)
    before = wide.clone()
    with torch.no_grad():
        got = fused(x, wide)
    assert got.dtype == torch.float64 and torch.equal(wide, before)
    assert torch.allclose(got, (fused.layer(x) + before).clamp(-1, 1))


def test_the_float_output_of_a_chains_last_conv_is_a_temporary():
    packed, x = _packed(ChainThenAdd(16))
    plan = passes.optimize_for_inference(packed.net, fuse_residuals=False)
    chained = [m for m in plan.modules() if isinstance(m, ChainedBinary)]
    assert [(m.consumer is not None, m.bits_in) for m in chained] == [(True, False), (False, True)]
    adds = [n for n in plan.graph.nodes if n.op == "call_function" and n.target in (operator.add, _add_)]
    # the addition writes into b's output (read by it alone), never into the stem's (read by a too)
    assert [n.target for n in adds] == [_add_]
    assert isinstance(plan.get_submodule(adds[0].args[0].target), ChainedBinary)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(plan(x.clone()), packed.net(x))
