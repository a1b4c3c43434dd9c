"""The execution plan's passes (onebit.deploy.passes): each on its own, and all of them together
against the plans recorded from the single-function optimize_for_inference they replaced."""

import json
import operator

import pytest
import torch
from deploy_probe import randomize_norms
from plan_probe import RECORD, cases, describe, exported_net
from torch import nn

import onebit
from onebit.deploy import export, passes
from onebit.deploy.packed import PackedBinary
from onebit.deploy.passes import ChainedBinary, ResidualBinary, _add_, _clamp_

RECORDED = json.loads(RECORD.read_text())


@pytest.mark.parametrize("name,build,option", cases(), ids=[c[0] for c in cases()])
def test_passes_build_the_recorded_plans(name, build, option):
    """Same nodes in the same order, same wrapped layers, bit hand-overs and in-place decisions as
    the plan the single-function optimize_for_inference built (recorded by plan_probe.py)."""
    plan = passes.optimize_for_inference(exported_net(build), **option)
    assert describe(plan) == RECORDED[name]


class Block(nn.Module):
    """Binary conv + BN added to the block input, then Hardtanh (Bi-Real's block)."""

    def __init__(self, c, shortcut=nn.Identity):
        super().__init__()
        self.conv, self.bn, self.act, self.shortcut = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), \
            nn.Hardtanh(), shortcut()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class Twice(nn.Module):
    """A binary conv output read twice: by the next binary conv and by an addition."""

    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y


def _net(*body, c=16):
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.Hardtanh(), *body,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))


def _plan(model, method="bireal", channels=3):
    """The exported graph of ``model`` as a fresh plan, before any pass, and an input. With
    ``channels`` other than 3 (a model without stem), its first layer is binary too."""
    torch.manual_seed(5)
    x = torch.randn(2, channels, 8, 8)
    keep = {} if channels == 3 else {"keep_full_precision": ("last",)}
    onebit.binarize(model, method, example_input=x, **keep)
    randomize_norms(model)
    packed = export(model.eval())
    return passes._Plan(packed.net), packed, x


def _run(plan, *steps):
    for step in steps:
        step(plan)


def _wrappers(plan, cls):
    return [plan.module(n) for n in plan.graph.nodes if isinstance(plan.module(n), cls)]


def _check_same_output(plan, packed, x):
    plan.graph.eliminate_dead_code()
    plan.gm.recompile()
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(plan.gm(x.clone()), packed.net(x))


def test_drop_identities_reads_through():
    plan, packed, x = _plan(_net(Block(16)))
    assert any(type(plan.module(n)) is nn.Identity for n in plan.graph.nodes)
    passes.drop_identities(plan)
    assert not any(type(plan.module(n)) is nn.Identity for n in plan.graph.nodes)
    _check_same_output(plan, packed, x)


def test_chain_bits_only_where_the_reader_is_the_only_one():
    chain = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardtanh())
    plan, packed, x = _plan(_net(chain, Twice(16)))
    _run(plan, passes.drop_identities, passes.chain_bits)
    chained = _wrappers(plan, ChainedBinary)
    # conv → conv → Twice's `a`, which hands no bits on: the addition reads its floats too
    assert [(m.consumer is not None, m.bits_in) for m in chained] == [(True, False), (True, True), (False, True)]
    assert chained[0].consumer is chained[1].layer and chained[1].consumer is chained[2].layer
    assert "consumer" not in dict(chained[0].named_children())  # not a submodule of the wrapper
    _check_same_output(plan, packed, x)


def test_xnor_layers_never_chain():
    """XNOR-Net scales its input by mean|x|: the reader needs the floats."""
    chain = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1))
    plan, packed, x = _plan(_net(chain), "xnor")
    _run(plan, passes.drop_identities, passes.chain_bits)
    assert not _wrappers(plan, ChainedBinary)


def test_fuse_residual_blocks_takes_the_clamp_and_leaves_a_conv_read_twice():
    plan, packed, x = _plan(_net(Block(16), Twice(16)))
    _run(plan, passes.drop_identities, passes.chain_bits, passes.fuse_residual_blocks)
    fused = _wrappers(plan, ResidualBinary)
    # Block: conv + shortcut, then its Hardtanh; Twice: b(y) + y (nothing after it to clamp)
    assert [(m.clamp, m.bits_in, m.bits_for, m.overwrite_residual) for m in fused] == \
        [((-1.0, 1.0), False, None, False), (None, False, None, False)]
    # Twice's `a` stays as it was: the fused b(y) + y reads its floats twice, as conv input and shortcut
    (a,) = [n for n in plan.graph.nodes if isinstance(plan.module(n), PackedBinary)]
    assert [n.args for n in a.users] == [(a, a)]
    _check_same_output(plan, packed, x)


def test_bits_for_next_reader_links_two_blocks():
    plan, packed, x = _plan(_net(Block(16), Block(16)))
    _run(plan, passes.drop_identities, passes.chain_bits, passes.fuse_residual_blocks)
    first, second = _wrappers(plan, ResidualBinary)
    passes.bits_for_next_reader(plan)
    new_first, new_second = _wrappers(plan, ResidualBinary)
    assert new_first.bits_for is new_second.layer and new_second.bits_in and new_second.bits_for is None
    # built anew, never changed in place
    assert new_first is not first and first.bits_for is None and not second.bits_in
    getitems = [n for n in plan.graph.nodes if n.op == "call_function" and n.target is operator.getitem]
    assert [n.args[1] for n in getitems] == [0, 1]
    _check_same_output(plan, packed, x)


def test_in_place_ops_only_on_temporaries():
    plan, packed, x = _plan(_net(Twice(16)))
    _run(plan, passes.drop_identities, passes.chain_bits, passes.in_place_ops)
    functions = [n.target for n in plan.graph.nodes if n.op == "call_function"]
    # Twice's addition: b(y) is a temporary, y is read twice (by b and the addition) and comes second;
    # the stem's Hardtanh clamps a BatchNorm output read by it alone
    assert functions.count(_add_) == 1 and functions.count(_clamp_) == 1
    add = next(n for n in plan.graph.nodes if n.target is _add_)
    assert isinstance(plan.module(add.args[0]), PackedBinary) and len(add.args[0].users) == 1
    _check_same_output(plan, packed, x)


class InputFirst(Block):
    """Block with the shortcut (the model's input) as the addition's first argument."""

    def forward(self, x):
        return self.act(x + self.bn(self.conv(x)))


def test_in_place_ops_leave_a_shared_input_alone():
    plan, packed, x = _plan(nn.Sequential(InputFirst(16), nn.Flatten(), nn.Linear(16 * 64, 4)), channels=16)
    _run(plan, passes.drop_identities, passes.in_place_ops)  # no fusion: the addition reads the model input
    add = next(n for n in plan.graph.nodes if n.op == "call_function" and n.target in (operator.add, _add_))
    # written into the conv's output (the arguments swapped), never into the caller's input
    assert add.target is _add_ and add.args[1].op == "placeholder" and isinstance(plan.module(add.args[0]),
                                                                                  PackedBinary)
    x_before = x.clone()
    _check_same_output(plan, packed, x)
    assert torch.equal(x, x_before)


def test_write_over_shortcut_never_the_callers_input():
    plan, packed, x = _plan(nn.Sequential(Block(16), Block(16), nn.Flatten(), nn.Linear(16 * 64, 4)), channels=16)
    _run(plan, *passes.PASSES[:-1])
    assert [m.overwrite_residual for m in _wrappers(plan, ResidualBinary)] == [False, False]
    passes.write_over_shortcut(plan)
    # the first block's shortcut is the model's input; the second's the first block's float output
    assert [m.overwrite_residual for m in _wrappers(plan, ResidualBinary)] == [False, True]
    x_before = x.clone()
    _check_same_output(plan, packed, x)
    assert torch.equal(x, x_before)


def test_residual_binary_but_copies_every_decision():
    plan, _, _ = _plan(_net(Block(16)))
    _run(plan, *passes.PASSES[:3])
    (m,) = _wrappers(plan, ResidualBinary)
    other = m.but(overwrite_residual=True)
    assert (other.layer, other.bits_in, other.clamp, other.bits_for) == (m.layer, m.bits_in, m.clamp, m.bits_for)
    assert other.overwrite_residual and not m.overwrite_residual


def test_optimize_for_inference_options_leave_passes_out():
    packed = _plan(_net(Block(16), Block(16)))[1]
    unfused = passes.optimize_for_inference(packed.net, fuse_residuals=False)
    assert not any(isinstance(m, ResidualBinary) for m in unfused.modules())
    kept = passes.optimize_for_inference(packed.net, overwrite_residuals=False)
    assert [m.overwrite_residual for m in kept.modules() if isinstance(m, ResidualBinary)] == [False, False]


def test_bits_for_next_reader_hands_bits_to_a_lone_conv():
    """A fused block read by a binary conv that chains nothing (its PReLU output feeds the pool): the
    block writes that conv's input bits, and the conv, wrapped as the first layer of a chain, runs on
    them as they are (issue 21: seed-59 mutant of passes.py's ChainedBinary(m, None, True) survived)."""
    lone = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.PReLU(16))
    model = _net(Block(16), lone)
    plan, packed, x = _plan(model)
    _run(plan, *passes.PASSES)
    (fused,) = _wrappers(plan, ResidualBinary)
    (chained,) = _wrappers(plan, ChainedBinary)
    assert fused.bits_for is chained.layer and chained.bits_in and chained.consumer is None
    with torch.no_grad():
        want = model(x)
        got = packed(x)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    _check_same_output(plan, packed, x)
