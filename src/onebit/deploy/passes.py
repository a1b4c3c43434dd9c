"""The execution plan: an exported graph rewritten for speed by a sequence of small named passes.

:func:`optimize_for_inference` copies the graph and runs :data:`PASSES` over the copy, in order:

1. :func:`drop_identities`: an ``nn.Identity`` (a plain shortcut) is read through;
2. :func:`chain_bits`: a packed binary conv read only by another packed binary conv of the same kind
   emits that reader's input sign bits from its epilogue, bit = (y + t) < 0, the float32 operations
   the reader would apply (:class:`ChainedBinary`);
3. :func:`fuse_residual_blocks`: a packed binary conv2d read only by an addition ``y + r`` (a residual
   block's shortcut), and that addition's Hardtanh/ReLU/ReLU6 if it is its only reader, run as one
   engine pass whose epilogue adds ``r`` and clamps (:class:`ResidualBinary`);
4. :func:`bits_for_next_reader`: a fused block read by a packed binary conv2d (the next block's first
   conv) also writes that conv's packed input signs in the same pass;
5. :func:`in_place_ops`: additions and clamps whose input is a temporary nobody else reads run in place;
6. :func:`write_over_shortcut`: a fused block whose shortcut is such a temporary writes over it.

Each pass applies a rewrite only where it cannot change what any other node sees, and says why in
its docstring. A plan wrapper is built whole: a pass that changes a decision installs a new wrapper
under the node's name (:meth:`_Plan.replace`); no pass changes another's wrapper in place.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

from .packed import PackedBinary

__all__ = ["optimize_for_inference", "PASSES", "ChainedBinary", "ResidualBinary", "drop_identities", "chain_bits",
           "fuse_residual_blocks", "bits_for_next_reader", "in_place_ops", "write_over_shortcut"]

Clamp = tuple[float, float | None]


class ChainedBinary(nn.Module):
    """A packed binary layer inside a chain: takes packed bits and/or emits the next layer's bits."""

    def __init__(self, layer: PackedBinary, consumer: PackedBinary | None, bits_in: bool) -> None:
        super().__init__()
        self.layer, self.bits_in = layer, bits_in
        self._consumer = (consumer,)  # a tuple: the consumer is not a submodule of this wrapper

    @property
    def consumer(self) -> PackedBinary | None:
        """The packed layer whose input bits this one's epilogue emits (``None``: emits floats)."""
        return self._consumer[0]

    def forward(self, x: Any) -> Any:
        consumer = self._consumer[0]
        if consumer is not None:
            return self.layer.forward_bits(x, consumer)
        return self.layer.forward_packed(x) if self.bits_in else self.layer(x)


class ResidualBinary(nn.Module):
    """``act(layer(x) + residual)`` for a packed binary conv whose float output is read only by that
    addition (``act``: the clamp of a Hardtanh/ReLU/ReLU6 after it, or none): one engine pass whose
    epilogue adds the residual and clamps, with the float32 operations of the unfused graph. A
    residual the engine cannot read in place (another dtype, layout or a broadcast shape) takes the
    unfused path.

    ``bits_for``: a packed binary layer that reads this output's signs; then forward returns
    ``(y, that layer's packed input)``, both written by the engine's pass. ``overwrite_residual``:
    the residual is a temporary read by nothing else, and ``y`` overwrites it.
    """

    def __init__(self, layer: PackedBinary, bits_in: bool, clamp: Clamp | None, *,
                 bits_for: PackedBinary | None = None, overwrite_residual: bool = False) -> None:
        super().__init__()
        self.layer, self.bits_in, self.clamp = layer, bits_in, clamp
        self._bits_for = (bits_for,)  # a tuple: the reader is not a submodule of this wrapper
        self.overwrite_residual = overwrite_residual

    @property
    def bits_for(self) -> PackedBinary | None:
        return self._bits_for[0]

    def but(self, **changes: Any) -> ResidualBinary:
        """A new wrapper with the same decisions except ``changes`` (``bits_in``, ``bits_for``, ...)."""
        decisions = {"bits_in": self.bits_in, "clamp": self.clamp, "bits_for": self.bits_for,
                     "overwrite_residual": self.overwrite_residual, **changes}
        return ResidualBinary(self.layer, decisions.pop("bits_in"), decisions.pop("clamp"), **decisions)

    def forward(self, x: Any, residual: Any) -> Any:
        layer, bits_for = self.layer, self._bits_for[0]
        if self.bits_in:
            n, h, w = x.data.shape[:3]
        else:
            n, h, w = x.shape[0], x.shape[2], x.shape[3]
        if (isinstance(residual, Tensor) and residual.dtype == torch.float32 and residual.is_cpu
                and residual.shape == (n, layer.out_channels, *layer.output_hw(h, w))
                and residual.is_contiguous(memory_format=torch.channels_last)):
            return layer.forward_residual(x, residual, layer.residual_transform(self.clamp), bits_for,
                                          self.overwrite_residual)  # fmt: skip
        y = (layer.forward_packed(x) if self.bits_in else layer(x)) + residual
        if self.clamp is not None:
            y = y.clamp_(*self.clamp)
        return y if bits_for is None else (y, bits_for._pack_input(y))


def _add_(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` written into ``a`` (a temporary nobody else reads) when the result has a's shape."""
    if isinstance(a, Tensor) and isinstance(b, (Tensor, int, float)) and a.dtype.is_floating_point and (
            not isinstance(b, Tensor) or (b.dtype == a.dtype and b.shape == a.shape)):
        return a.add_(b)
    return a + b


def _clamp_(x: Tensor, lo: float | None, hi: float | None) -> Tensor:
    """Hardtanh/ReLU/ReLU6 on a temporary, in place."""
    return x.clamp_(lo, hi)


# Modules whose output is always a new tensor (never a view of the input or of a parameter).
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.MaxPool1d, nn.MaxPool2d,
                  nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_ADDITIONS = (operator.add, torch.add)


class _Plan:
    """The plan under construction: a copy of the exported graph, its modules, and the questions the
    passes ask about a node (which module it calls, who reads it, whether its output is a temporary)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.graph = fx.Graph()
        self.graph.output(self.graph.graph_copy(gm.graph, {}))
        self.gm = fx.GraphModule(gm, self.graph, "OnebitPlan")
        self.modules = dict(self.gm.named_modules())
        self._installed = 0

    def module(self, node: Any) -> nn.Module | None:
        return self.modules.get(node.target) if isinstance(node, fx.Node) and node.op == "call_module" else None

    def install(self, module: nn.Module) -> str:
        """Add a plan wrapper under a new name (``_onebit_plan_<n>``) and return the name."""
        self._installed += 1
        name = f"_onebit_plan_{self._installed}"
        self.gm.add_submodule(name, module)
        self.modules[name] = module
        return name

    def replace(self, node: fx.Node, module: nn.Module) -> None:
        """Put ``module`` in place of the wrapper ``node`` calls, under the same name."""
        self.gm.add_submodule(node.target, module)
        self.modules[node.target] = module

    def packed_emitting_floats(self, node: Any) -> tuple[PackedBinary, bool] | None:
        """(layer, bits_in) of a packed binary layer (bare or chained) whose output is floats."""
        m = self.module(node)
        if isinstance(m, ChainedBinary) and m.consumer is None:
            return m.layer, m.bits_in
        return (m, False) if isinstance(m, PackedBinary) else None

    def fresh(self, node: Any) -> bool:
        """``node``'s output is a new tensor (never a view of an input or a parameter) read by one node."""
        if not isinstance(node, fx.Node) or sole_user(node) is None:
            return False
        if node.op == "call_function" and node.target in (*_ADDITIONS, _add_, _clamp_):
            return True  # (_clamp_ runs only on a temporary, and returns it)
        m = self.module(node)
        return isinstance(m, (*_FRESH_MODULES, ResidualBinary)) or (
            isinstance(m, PackedBinary) and m.kind != "linear") or (
            isinstance(m, ChainedBinary) and m.consumer is None)


def sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _only_arg(node: fx.Node, arg: Any) -> bool:
    """``node`` is called with ``arg`` alone."""
    return node.args == (arg,) and not node.kwargs


def clamp_of(module: nn.Module | None, node: fx.Node | None) -> Clamp | None:
    """(lo, hi) of a Hardtanh/ReLU/ReLU6 called on one argument, else ``None``."""
    if type(module) not in (nn.Hardtanh, nn.ReLU, nn.ReLU6) or len(node.args) != 1 or node.kwargs:
        return None
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    return 0.0, (6.0 if isinstance(module, nn.ReLU6) else None)


# --------------------------------------------------------------------------------------------------
# The passes
# --------------------------------------------------------------------------------------------------
def drop_identities(plan: _Plan) -> None:
    """``nn.Identity`` (a residual block's plain shortcut) returns its input: its readers read that."""
    for node in list(plan.graph.nodes):
        if type(plan.module(node)) is nn.Identity and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            plan.graph.erase_node(node)


def chain_bits(plan: _Plan) -> None:
    """A packed binary layer whose only reader is a packed binary layer of the same kind taking its
    output alone hands that reader packed sign bits: no one else sees the floats it no longer makes."""
    consumer_of: dict[fx.Node, fx.Node] = {}
    for node in plan.graph.nodes:
        a = plan.module(node)
        if not isinstance(a, PackedBinary) or not a.emits_bits():
            continue
        user = sole_user(node)
        b = plan.module(user)
        if isinstance(b, PackedBinary) and b.kind == a.kind and b.accepts_bits() and _only_arg(user, node):
            consumer_of[node] = user
    bits_in = set(consumer_of.values())
    for node in list(plan.graph.nodes):
        if node in consumer_of or node in bits_in:
            consumer = plan.module(consumer_of[node]) if node in consumer_of else None
            node.target = plan.install(ChainedBinary(plan.module(node), consumer, node in bits_in))


def fuse_residual_blocks(plan: _Plan) -> None:
    """``conv(x) + r`` (either order), and a clamp after it if the sum is its only reader, become one
    :class:`ResidualBinary` node, where the addition is the conv's only reader (so nobody misses its
    float output) and the engine can fuse it (``residual_transform``)."""
    graph = plan.graph
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target in _ADDITIONS and len(node.args) == 2
                and not node.kwargs):
            continue
        for conv, other in (node.args, node.args[::-1]):
            found = plan.packed_emitting_floats(conv)
            if (found is None or conv is other or not isinstance(other, fx.Node) or sole_user(conv) is not node
                    or len(conv.args) != 1 or conv.kwargs or found[0].residual_transform(None) is None):
                continue
            layer, bits_in = found
            act = sole_user(node)
            clamp = clamp_of(plan.module(act), act) if act is not None else None
            if clamp is not None and layer.residual_transform(clamp) is None:
                clamp = None
            last = act if clamp is not None else node
            with graph.inserting_before(node):
                fused = graph.call_module(plan.install(ResidualBinary(layer, bits_in, clamp)), (conv.args[0], other))
            last.replace_all_uses_with(fused)
            for dead in ((act, node, conv) if clamp is not None else (node, conv)):
                graph.erase_node(dead)
            break


def _bit_reader(plan: _Plan, fused: fx.Node, user: fx.Node) -> PackedBinary | None:
    """The packed binary conv2d that ``user`` runs on ``fused``'s output alone, if it can take bits."""
    m = plan.module(user)
    if isinstance(m, ChainedBinary) and not m.bits_in and _only_arg(user, fused):
        reader = m.layer
    elif isinstance(m, PackedBinary) and _only_arg(user, fused):
        reader = m
    elif isinstance(m, ResidualBinary) and not m.bits_in and user.args[0] is fused:
        reader = m.layer  # a fused next block: its conv reads `fused`, its shortcut may too
    else:
        return None
    return reader if reader.kind == "conv2d" and reader.accepts_bits() else None


def bits_for_next_reader(plan: _Plan) -> None:
    """A fused block's output read by a packed binary conv2d (the next block's first conv) is also
    written as that conv's packed input signs by the same engine pass: the block's node then yields
    (floats, bits), every other reader takes the floats, and the conv takes the bits."""
    graph = plan.graph
    for fused in [n for n in graph.nodes if isinstance(plan.module(n), ResidualBinary)]:
        for user in list(fused.users):
            reader = _bit_reader(plan, fused, user)
            if reader is None:
                continue
            plan.replace(fused, plan.module(fused).but(bits_for=reader))
            with graph.inserting_after(fused):
                bits = graph.call_function(operator.getitem, (fused, 1))
            with graph.inserting_after(fused):
                floats = graph.call_function(operator.getitem, (fused, 0))
            fused.replace_all_uses_with(floats, delete_user_cb=lambda n, keep=(floats, bits): n not in keep)
            user.args = (bits, *user.args[1:])
            m = plan.module(user)
            if isinstance(m, ResidualBinary):
                plan.replace(user, m.but(bits_in=True))
            elif isinstance(m, PackedBinary):  # (a chain's first layer takes bits as they are)
                user.target = plan.install(ChainedBinary(m, None, True))
            break


def in_place_ops(plan: _Plan) -> None:
    """``a + b`` and Hardtanh/ReLU/ReLU6 whose input is a temporary read by no one else (see
    :meth:`_Plan.fresh`) write their result into that temporary."""
    graph = plan.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _ADDITIONS and len(node.args) == 2 and not node.kwargs:
            a, b = node.args
            if plan.fresh(a):
                node.target = _add_
            elif plan.fresh(b) and isinstance(a, fx.Node):
                node.target, node.args = _add_, (b, a)
    for node in list(graph.nodes):
        clamp = clamp_of(plan.module(node), node)
        if clamp is not None and plan.fresh(node.args[0]):
            with graph.inserting_before(node):
                new = graph.call_function(_clamp_, (node.args[0], *clamp))
            node.replace_all_uses_with(new)
            graph.erase_node(node)


def write_over_shortcut(plan: _Plan) -> None:
    """A fused block whose shortcut is a temporary read by it alone (or the float output of the fused
    block before it) writes its output over that shortcut. (Its conv may read the shortcut too: it
    packs its input before the engine writes.)"""
    for node in list(plan.graph.nodes):
        m = plan.module(node)
        if not isinstance(m, ResidualBinary):
            continue
        residual = node.args[1]
        previous_block = (isinstance(residual, fx.Node) and sole_user(residual) is node
                          and residual.op == "call_function" and residual.target is operator.getitem
                          and residual.args[1] == 0 and isinstance(plan.module(residual.args[0]), ResidualBinary))
        if plan.fresh(residual) or previous_block:
            plan.replace(node, m.but(overwrite_residual=True))


#: The passes :func:`optimize_for_inference` runs, in order.
PASSES: tuple[Callable[[_Plan], None], ...] = (
    drop_identities, chain_bits, fuse_residual_blocks, bits_for_next_reader, in_place_ops, write_over_shortcut)


def optimize_for_inference(gm: fx.GraphModule, *, fuse_residuals: bool = True,
                           overwrite_residuals: bool = True) -> fx.GraphModule:
    """A faster GraphModule computing what ``gm`` (an exported graph) computes; shares its modules.

    Runs :data:`PASSES` (see the module docstring). ``fuse_residuals=False`` leaves out the residual
    fusion (and so the bits a fused block writes), ``overwrite_residuals=False`` the writing over the
    shortcut, for measuring what they save.
    """
    skipped = set()
    if not fuse_residuals:
        skipped |= {fuse_residual_blocks, bits_for_next_reader}
    if not overwrite_residuals:
        skipped.add(write_over_shortcut)
    plan = _Plan(gm)
    for run_pass in PASSES:
        if run_pass not in skipped:
            run_pass(plan)
    plan.graph.eliminate_dead_code()
    plan.gm.recompile()
    plan.gm.eval()
    return plan.gm
