"""``export``: a trained onebit model → a :class:`PackedModel` (binary layers packed for the 1-bit
engine), and the execution plan it runs. The file it is written to is :mod:`onebit.deploy.fileformat`'s
(``save``, ``load`` and ``content_digest`` are re-exported here for older imports).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, fx, nn

from ._finite import NonFiniteInputError, check_policy, guard_inputs, map_outputs, mark_outputs, refuse_complex
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
from .graph import ExportError, capture, fuse, trace
from .passes import ChainedBinary as _ChainedBinary  # noqa: F401  (the names older code imports)
from .passes import ResidualBinary as _ResidualBinary  # noqa: F401
from .passes import optimize_for_inference

__all__ = ["export", "save", "load", "PackedModel", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION",
           "optimize_for_inference", "NonFiniteInputError", "content_digest", "DIGEST_KEY", "READABLE_VERSIONS",
           "COMPRESS_MIN_NUMEL", "COMPRESS_MAX_FRACTION"]


def _as_float32(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The engine computes in float32: other floating dtypes are converted (as ``run_onnx`` and LCE's
    ``predict`` do); a complex tensor is refused with the fix, not failed on deep inside. Integer and
    bool tensors pass unchanged (a graph may take indices or masks)."""
    refuse_complex(args, "packed model")
    return tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def _empty_batch(x: Any) -> bool:
    return isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == 0


def _one_zero_sample(x: Any) -> Any:
    return x.new_zeros((1, *x.shape[1:])) if _empty_batch(x) else x


def _no_rows(out: Any) -> Any:
    """``out`` (a tensor, or a list/tuple/dict of them) with none of its rows: an empty batch's output."""
    return map_outputs(out, lambda o: o[:0] if isinstance(o, Tensor) and o.dim() > 0 else o)


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
        args = _as_float32(args)
        # Images run channels_last end to end: the engine's native layout and torch's fastest on CPU.
        args = tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, Tensor) and a.dim() == 4 else a for a in args)
        if any(_empty_batch(a) for a in args):
            # The engine's kernels need at least one row; torch answers an empty batch with an empty output,
            # so run one zero sample and keep none of its rows (the output's shapes and dtypes stay right).
            return _no_rows(self.forward(*(_one_zero_sample(a) for a in args), **kwargs))
        args, bad = guard_inputs(args, self.nonfinite, "packed model")
        out = self.execution_plan()(*args, **kwargs)
        return out if bad is None else mark_outputs(out, bad)

    def execution_plan(self) -> fx.GraphModule:
        """The graph that :meth:`forward` runs: ``net`` rewritten for speed, same results.

        Built once from ``net`` (call :meth:`refresh` after changing ``net``'s modules in place):
        consecutive binary layers pass packed sign bits instead of floats, and additions/clamps
        whose input is a temporary of this graph run in place. See :func:`optimize_for_inference`.
        """
        if self._plan[0] is not self.net:  # (a torch.export capture runs as it is)
            plan = optimize_for_inference(self.net) if isinstance(self.net, fx.GraphModule) else self.net
            self._plan[:] = [self.net, plan]
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
           meta: dict[str, Any] | None = None, example_input: Any = None) -> PackedModel:
    """Convert a (trained) model with onebit binary layers into a :class:`PackedModel`.

    The model is copied and put in eval mode; each binary layer's inference form is packed (BN that
    follows it is folded into its epilogue, and a PReLU/Hardtanh/ReLU after that too); full-precision
    layers stay torch. A layer that cannot run as 1-bit arithmetic raises one error naming the layer
    and the method (e.g. BiPer in stage 1, BNN++ before its final hard sign, grouped convolutions).

    A forward torch.fx cannot trace (a Hugging Face model, Python control flow on shapes) is captured
    with ``torch.export`` when ``example_input`` (a tensor, a tuple of positional arguments or a dict of
    keyword arguments) is given: see :func:`onebit.deploy.graph.capture` for what that path leaves out.
    """
    work = copy.deepcopy(model).cpu().eval()
    try:
        gm = trace(work)
    except ExportError:
        if example_input is None:
            raise
        return PackedModel(capture(work, example_input), meta)
    gm = fuse(gm, fold_batchnorm=fold_batchnorm, fuse_activations=fuse_activations)
    gm.eval()
    return PackedModel(gm, meta)
