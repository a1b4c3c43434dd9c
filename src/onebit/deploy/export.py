"""``export``, ``save`` and ``load``: a trained onebit model → a packed 1-bit model → one file.

The file is a safetensors file: the tensors (bit-packed weight planes, scales, the full-precision
layers' weights) plus, in its metadata, a JSON description of the graph with a format version. No
pickle anywhere: loading a file never runs code from it, and a truncated, corrupted or foreign file
raises one :class:`ModelFileError`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from .._io import atomic_write_bytes
from .graph import ExportError, fuse, graph_from_json, graph_to_json, trace

__all__ = ["export", "save", "load", "PackedModel", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "onebit-packed"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A packed-model file is missing, truncated, corrupt, from a newer onebit, or not onebit's."""


class PackedModel(nn.Module):
    """An exported network: binary layers run on the 1-bit engine, the rest in torch. Inference only."""

    def __init__(self, graph_module: fx.GraphModule, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = graph_module.to(memory_format=torch.channels_last)  # 4-D conv weights too
        self.meta = dict(meta or {})
        self.eval()

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # Images run channels_last end to end: the engine's native layout and torch's fastest on CPU.
        args = tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, Tensor) and a.dim() == 4 else a for a in args)
        return self.net(*args, **kwargs)

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


def save(packed: PackedModel, path: str | Path) -> None:
    """Write ``packed`` to ``path`` (atomically: a temporary file renamed into place)."""
    from safetensors.torch import save as st_save

    if not isinstance(packed, PackedModel):
        raise TypeError(f"save() takes the PackedModel returned by export(), got {type(packed).__name__}")
    description, tensors = graph_to_json(packed.net)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "graph": json.dumps(description),
        "meta": json.dumps(packed.meta),
    }
    data = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def load(path: str | Path) -> PackedModel:
    """Read a file written by :func:`save`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist; write one with `onebit export` or onebit.deploy.save")
    try:
        tensors: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise ModelFileError(
                    f"{path} is a safetensors file but not an onebit packed model (no {FORMAT_NAME!r} metadata)"
                )
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    except ModelFileError:
        raise
    except Exception as err:
        raise ModelFileError(
            f"{path} is not a readable onebit packed model (truncated, corrupt or foreign file: "
            f"{type(err).__name__}: {str(err)[:200]})"
        ) from None
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ModelFileError(f"{path} has format version {version}; this onebit reads version {FORMAT_VERSION}")
    try:
        description = json.loads(metadata["graph"])
        meta = json.loads(metadata.get("meta", "{}"))
        gm = graph_from_json(description, tensors)
    except ExportError as err:
        raise ModelFileError(f"{path}: {err}") from None
    except Exception as err:
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        raise ModelFileError(f"{path}: the graph description is invalid ({reason})") from None
    return PackedModel(gm, meta)
