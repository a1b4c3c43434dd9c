"""``export``: a trained onebit model → a :class:`PackedModel` (binary layers packed for the 1-bit
engine), and the execution plan it runs. The file it is written to is :mod:`onebit.deploy.fileformat`'s
(``save``, ``load`` and ``content_digest`` are re-exported here for older imports).
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import Tensor, fx, nn

from ._finite import NonFiniteInputError, check_policy, guard_inputs, mark_outputs
from .fileformat import (
    COMPRESS_MAX_FRACTION,
    COMPRESS_MIN_NUMEL,
    DIGEST_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    ModelFileError,
    content_digest,
    load,
    save,
)
from .graph import fuse, trace

__all__ = ["export", "save", "load", "PackedModel", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION",
           "optimize_for_inference", "NonFiniteInputError", "content_digest", "DIGEST_KEY", "READABLE_VERSIONS",
           "COMPRESS_MIN_NUMEL", "COMPRESS_MAX_FRACTION"]


class PackedModel(nn.Module):
    """An exported network: binary layers run on the 1-bit engine, the rest in torch. Inference only.

    ``nonfinite`` is what a call does with an input holding NaN or ±inf (which the engine's sign would
    silently turn into +1): ``"raise"`` (default) a :class:`~onebit.deploy.NonFiniteInputError`;
    ``"propagate"``, NaN outputs for those samples, NaN in, NaN out (see
    :mod:`onebit.deploy._finite`). One pass (a sum) over the input; settable at any time.
    """

    def __init__(self, graph_module: fx.GraphModule, meta: dict[str, Any] | None = None, *,
                 nonfinite: str = "raise") -> None:
        super().__init__()
        self.nonfinite = check_policy(nonfinite)
        self.net = graph_module.to(memory_format=torch.channels_last)  # 4-D conv weights too
        self.meta = dict(meta or {})
        # (net, execution plan): built on the first call, outside the module tree so that the
        # state_dict, save() and graph exporters only ever see `net`.
        self._plan: list[Any] = [None, None]
        self.eval()

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Images run channels_last end to end: the engine's native layout and torch's fastest on CPU.
        args = tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, Tensor) and a.dim() == 4 else a for a in args)
        args, bad = guard_inputs(args, self.nonfinite, "packed model")
        out = self.execution_plan()(*args, **kwargs)
        return out if bad is None else mark_outputs(out, bad)

    def execution_plan(self) -> fx.GraphModule:
        """The graph that :meth:`forward` runs: ``net`` rewritten for speed, same results.

        Built once from ``net`` (call :meth:`refresh` after changing ``net``'s modules in place):
        consecutive binary layers pass packed sign bits instead of floats, and additions/clamps
        whose input is a temporary of this graph run in place. See :func:`optimize_for_inference`.
        """
        if self._plan[0] is not self.net:
            self._plan[:] = [self.net, optimize_for_inference(self.net)]
        return self._plan[1]

    def refresh(self) -> None:
        """Drop the cached execution plan (rebuilt from ``net`` on the next call)."""
        self._plan[:] = [None, None]

    def _apply(self, *args: Any, **kwargs: Any) -> PackedModel:
        # .to() / .float() / ... may replace net's modules' tensors: rebuild the plan from them.
        self.refresh()
        return super()._apply(*args, **kwargs)

    def train(self, mode: bool = True) -> PackedModel:
        return super().train(False)

    def packed_layers(self) -> list[str]:
        from .packed import _PackedBase

        return [n for n, m in self.net.named_modules() if isinstance(m, _PackedBase)]


def export(model: nn.Module, *, fold_batchnorm: bool = True, fuse_activations: bool = True,
           meta: dict[str, Any] | None = None) -> PackedModel:
    """Convert a (trained) model with onebit binary layers into a :class:`PackedModel`.

    The model is copied and put in eval mode; each binary layer's inference form is packed (BN that
    follows it is folded into its epilogue, and a PReLU/Hardtanh/ReLU after that too); full-precision
    layers stay torch. A layer that cannot run as 1-bit arithmetic raises one error naming the layer
    and the method (e.g. BiPer in stage 1, BNN++ before its final hard sign, grouped convolutions).
    """
    work = copy.deepcopy(model).cpu().eval()
    gm = trace(work)
    gm = fuse(gm, fold_batchnorm=fold_batchnorm, fuse_activations=fuse_activations)
    gm.eval()
    return PackedModel(gm, meta)


# --------------------------------------------------------------------------------------------------
# Execution plan
# --------------------------------------------------------------------------------------------------
class _ChainedBinary(nn.Module):
    """A packed binary layer inside a chain: takes packed bits and/or emits the next layer's bits."""

    def __init__(self, layer: nn.Module, consumer: nn.Module | None, bits_in: bool) -> None:
        super().__init__()
        self.layer, self.bits_in = layer, bits_in
        self._consumer = [consumer]  # a plain list: not a submodule of this wrapper

    def forward(self, x: Any) -> Any:
        consumer = self._consumer[0]
        if consumer is not None:
            return self.layer.forward_bits(x, consumer)
        return self.layer.forward_packed(x) if self.bits_in else self.layer(x)


class _ResidualBinary(nn.Module):
    """``act(layer(x) + residual)`` for a packed binary conv whose float output is read only by that
    addition (``act``: the clamp of a Hardtanh/ReLU/ReLU6 after it, or none): one engine pass whose
    epilogue adds the residual and clamps, with the float32 operations of the unfused graph. A
    residual the engine cannot read in place (another dtype, layout or a broadcast shape) takes the
    unfused path."""

    def __init__(self, layer: nn.Module, bits_in: bool, clamp: tuple[float, float | None] | None) -> None:
        super().__init__()
        self.layer, self.bits_in, self.clamp = layer, bits_in, clamp
        # A packed binary layer that reads this output's signs (a plain list: not a submodule): when
        # set, forward returns (y, that layer's packed input), both written by the engine's pass.
        self._bits_for: list[nn.Module | None] = [None]
        # Set by the plan when the residual is a temporary read by nothing else: y overwrites it.
        self.overwrite_residual = False

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


def optimize_for_inference(gm: fx.GraphModule, *, fuse_residuals: bool = True,
                           overwrite_residuals: bool = True) -> fx.GraphModule:
    """A faster GraphModule computing what ``gm`` (an exported graph) computes; shares its modules.
    (``fuse_residuals=False`` leaves out the residual rewrite below, ``overwrite_residuals=False``
    its writing over the shortcut, for measuring what they save.)

    Rewrites, each applied only where it cannot change what any other node sees:

    * a packed binary conv whose only consumer is another packed binary conv of the same kind
      emits that consumer's input sign bits from its fused epilogue (bit = (y + t) < 0, the very
      float32 operations the consumer would apply to the float output), so the float tensor, its
      write-out and the consumer's packing pass disappear;
    * a packed binary conv2d whose float output is read only by an addition ``y + r`` (a residual
      block's shortcut), and that addition's Hardtanh/ReLU/ReLU6 if it is its only reader, run as one
      engine pass: the epilogue adds ``r`` and clamps (the same float32 operations); when a packed
      binary conv2d reads the result (the next block's first conv), the same pass also writes its
      packed input signs, bit = (y + t) < 0 as that layer would pack them;
    * ``a + b`` and Hardtanh/ReLU/ReLU6 whose input is a temporary produced by a convolution,
      linear, BatchNorm, packed layer or addition and read by no one else run in place, and so does
      a fused residual block whose shortcut is such a temporary (or the float output of the fused
      block before it): the engine writes its output over the shortcut it has just read.
    """
    from .packed import PackedBinary

    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    plan = fx.GraphModule(gm, graph, "OnebitPlan")
    modules = dict(plan.named_modules())

    def module(node: fx.Node) -> nn.Module | None:
        return modules.get(node.target) if node.op == "call_module" else None

    def sole_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    # 0) nn.Identity (a residual block's plain shortcut) returns its input: read the input directly
    for node in list(graph.nodes):
        if type(module(node)) is nn.Identity and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)

    counter = [0]

    def install(mod: nn.Module) -> str:
        counter[0] += 1
        name = f"_onebit_plan_{counter[0]}"
        plan.add_submodule(name, mod)
        modules[name] = mod
        return name

    # 1) chains of packed binary layers
    consumer_of: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        a = module(node)
        if not isinstance(a, PackedBinary) or not a.emits_bits():
            continue
        user = sole_user(node)
        b = module(user) if user is not None else None
        if (isinstance(b, PackedBinary) and b.kind == a.kind and b.accepts_bits()
                and len(user.args) == 1 and user.args[0] is node and not user.kwargs):
            consumer_of[node] = user
    bits_in = set(consumer_of.values())
    for node in list(graph.nodes):
        if node in consumer_of or node in bits_in:
            layer = module(node)
            consumer = module(consumer_of[node]) if node in consumer_of else None
            node.target = install(_ChainedBinary(layer, consumer, node in bits_in))

    # 2) residual additions (and a clamp after them) fused into the packed conv before them
    def clamp_of(node: fx.Node | None) -> tuple[float, float | None] | None:
        m = module(node) if node is not None else None
        if type(m) not in (nn.Hardtanh, nn.ReLU, nn.ReLU6) or len(node.args) != 1 or node.kwargs:
            return None
        if isinstance(m, nn.Hardtanh):
            return float(m.min_val), float(m.max_val)
        return 0.0, (6.0 if isinstance(m, nn.ReLU6) else None)

    def bits_for_binary_reader(fused: fx.Node) -> None:
        """A packed binary conv2d reading the fused output (a block's output, read by the next
        block's first conv and its shortcut) gets its packed input from the same engine pass."""
        for user in list(fused.users):
            m = module(user)
            reader = m.layer if isinstance(m, _ChainedBinary) and not m.bits_in else m
            if not (isinstance(reader, PackedBinary) and reader.kind == "conv2d" and reader.accepts_bits()
                    and user.args == (fused,) and not user.kwargs):
                continue
            modules[fused.target]._bits_for[0] = reader
            with graph.inserting_after(fused):
                bits = graph.call_function(operator.getitem, (fused, 1))
            with graph.inserting_after(fused):
                floats = graph.call_function(operator.getitem, (fused, 0))
            fused.replace_all_uses_with(floats, delete_user_cb=lambda n: n not in (floats, bits))
            user.args = (bits,)
            if not isinstance(m, _ChainedBinary):  # a chain's first layer takes bits as they are
                user.target = install(_ChainedBinary(reader, None, True))
            return

    for node in list(graph.nodes) if fuse_residuals else ():
        if not (node.op == "call_function" and node.target in (operator.add, torch.add)
                and len(node.args) == 2 and not node.kwargs):
            continue
        for conv, other in (node.args, node.args[::-1]):
            m = module(conv) if isinstance(conv, fx.Node) else None
            if isinstance(m, _ChainedBinary) and m._consumer[0] is None:
                layer, bits = m.layer, m.bits_in
            elif isinstance(m, PackedBinary):
                layer, bits = m, False
            else:
                continue
            if (conv is other or not isinstance(other, fx.Node) or sole_user(conv) is not node
                    or len(conv.args) != 1 or conv.kwargs or layer.residual_transform(None) is None):
                continue
            act = sole_user(node)
            clamp = clamp_of(act)
            if clamp is not None and layer.residual_transform(clamp) is None:
                clamp = None
            last = act if clamp is not None else node
            with graph.inserting_before(node):
                fused = graph.call_module(install(_ResidualBinary(layer, bits, clamp)), (conv.args[0], other))
            last.replace_all_uses_with(fused)
            for dead in ((act, node, conv) if clamp is not None else (node, conv)):
                graph.erase_node(dead)
            bits_for_binary_reader(fused)
            break

    # 3) in-place additions and clamps on temporaries
    def fresh(node: Any) -> bool:
        if not isinstance(node, fx.Node) or sole_user(node) is None:
            return False
        if node.op == "call_function" and node.target in (operator.add, torch.add, _add_, _clamp_):
            return True  # (_clamp_ runs only on a temporary, and returns it)
        m = module(node)
        return isinstance(m, (*_FRESH_MODULES, _ResidualBinary)) or (
            isinstance(m, PackedBinary) and m.kind != "linear") or (
            isinstance(m, _ChainedBinary) and m._consumer[0] is None)

    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2 \
                and not node.kwargs:
            a, b = node.args
            if fresh(a):
                node.target = _add_
            elif fresh(b) and isinstance(a, fx.Node):
                node.target, node.args = _add_, (b, a)
    for node in list(graph.nodes):
        m = module(node)
        if type(m) in (nn.Hardtanh, nn.ReLU, nn.ReLU6) and len(node.args) == 1 and not node.kwargs \
                and fresh(node.args[0]):
            if isinstance(m, nn.Hardtanh):
                lo, hi = m.min_val, m.max_val
            else:
                lo, hi = 0.0, (6.0 if isinstance(m, nn.ReLU6) else None)
            with graph.inserting_before(node):
                new = graph.call_function(_clamp_, (node.args[0], float(lo), None if hi is None else float(hi)))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
    for node in list(graph.nodes) if overwrite_residuals else ():  # (into a shortcut nobody reads after)
        m = module(node)
        if isinstance(m, _ResidualBinary):
            # (the conv may read the shortcut too: it packs its input before the engine writes)
            residual = node.args[1]
            m.overwrite_residual = (fresh(residual) or (
                isinstance(residual, fx.Node) and sole_user(residual) is node
                and residual.op == "call_function" and residual.target is operator.getitem
                and residual.args[1] == 0 and isinstance(module(residual.args[0]), _ResidualBinary)))

    graph.eliminate_dead_code()
    plan.recompile()
    plan.eval()
    return plan
