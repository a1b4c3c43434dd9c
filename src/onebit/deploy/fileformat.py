"""The packed-model file: :func:`save`, :func:`load` and the :func:`content_digest` that guards it.

The file is a safetensors file: the tensors (bit-packed weight planes, scales, the full-precision
layers' weights) plus, in its metadata, a JSON description of the graph with a format version. No
pickle anywhere: loading a file never runs code from it, and a truncated, corrupted or foreign file
raises one :class:`ModelFileError`.

Format version 2 may store a tensor losslessly compressed (byte shuffle + zlib, see
:mod:`onebit.deploy._codec`): it is then a 1-D ``uint8`` tensor under its own name, and the metadata
entry ``"encoding"`` (a JSON object, empty when nothing is compressed) maps that name to the codec,
dtype and shape that restore it bit for bit. Version 1 files (no ``"encoding"`` entry) still load.

Format version 3 adds the metadata entry ``"sha256"``: a SHA-256 digest over every other metadata
entry and every stored tensor (name, dtype, shape and bytes; see :func:`content_digest`), checked
by :func:`load`, so a flipped bit anywhere in the file (a raw weight plane included, where nothing
else would notice) raises :class:`ModelFileError` instead of loading a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, fx

from .._io import atomic_write_bytes
from ..errors import OnebitError
from . import _codec
from ._finite import check_policy
from .graph import ExportError, graph_from_json, graph_to_json

if TYPE_CHECKING:
    from .export import PackedModel

__all__ = ["save", "load", "content_digest", "ModelFileError", "FORMAT_NAME", "FORMAT_VERSION",
           "READABLE_VERSIONS", "DIGEST_KEY"]

FORMAT_NAME = "onebit-packed"
FORMAT_VERSION = 3
# version 1: no "encoding" entry, every tensor stored raw; version 2: no "sha256" entry
READABLE_VERSIONS = ("1", "2", "3")
DIGEST_KEY = "sha256"

COMPRESS_MIN_NUMEL = 4096  # smaller tensors are always stored raw
COMPRESS_MAX_FRACTION = 0.98  # a tensor is stored compressed only if that saves at least 2%


class ModelFileError(OnebitError, ValueError):
    """A packed-model file is missing, truncated, corrupt, from a newer onebit, or not onebit's."""


def save(packed: PackedModel, path: str | Path, *, compress: bool = True) -> None:
    """Write ``packed`` to ``path`` (atomically: a temporary file renamed into place).

    With ``compress`` (the default), each tensor of at least 4096 elements is stored losslessly
    compressed (byte shuffle + zlib) when that makes it at least 2% smaller, raw otherwise: the
    full-precision weights shrink, the random bits of the binary weight planes stay raw. The choice
    depends only on the tensors, so the same model always gives the same file. ``compress=False``
    stores every tensor raw. Either way :func:`load` restores the tensors bit for bit.
    """
    from safetensors.torch import save as st_save

    from .export import PackedModel

    if not isinstance(packed, PackedModel):
        raise TypeError(f"save() takes the PackedModel returned by export(), got {type(packed).__name__}")
    if not isinstance(packed.net, fx.GraphModule):
        raise ExportError("this model was captured with torch.export (export(..., example_input=...)); the onebit "
                          "file format stores torch.fx graphs of allow-listed operations, not torch.export's ATen "
                          "graph, so it cannot be saved; make the forward traceable by torch.fx to save it")
    description, tensors = graph_to_json(packed.net)
    stored, encoding = _encode_tensors(tensors, compress)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "graph": json.dumps(description),
        "meta": json.dumps(packed.meta),
        "encoding": json.dumps(encoding, sort_keys=True),
    }
    metadata[DIGEST_KEY] = content_digest(metadata, stored)
    atomic_write_bytes(path, _metadata_sorted(st_save(stored, metadata=metadata)))


def _metadata_sorted(data: bytes) -> bytes:
    """``data``, a safetensors file, with its ``__metadata__`` entries in sorted order. safetensors writes
    them from a hash map, in an order that changes from one call to the next: without this, saving the
    same model twice gave two different files. The tensors' entries and bytes stay as written."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the tensor data stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + data[8 + size:]


def _encode_tensors(tensors: dict[str, Tensor], compress: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors as stored (each compressed where that saves 2%) and the "encoding" entry."""
    stored: dict[str, Tensor] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        if compress and tensor.numel() >= COMPRESS_MIN_NUMEL and _codec.supports(tensor.dtype):
            encoded, info = _codec.encode(tensor)
            if encoded.numel() <= COMPRESS_MAX_FRACTION * tensor.numel() * tensor.element_size():
                stored[name], encoding[name] = encoded, info
                continue
        stored[name] = tensor
    return stored, encoding


def content_digest(metadata: dict[str, str], stored: dict[str, Tensor]) -> str:
    """SHA-256 (hex) over the metadata entries other than ``"sha256"`` and the tensors as stored.

    Entries and tensors are taken in sorted name order, each field length-prefixed (so no two
    different contents serialize alike); a tensor contributes its name, dtype, shape and raw bytes.
    """
    digest = hashlib.sha256()

    def field(data: Any) -> None:  # bytes, or a 1-D uint8 array (no copy)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    for key in sorted(metadata):
        if key != DIGEST_KEY:
            field(key.encode())
            field(metadata[key].encode())
    for name in sorted(stored):
        tensor = stored[name].contiguous()
        field(name.encode())
        field(f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}".encode())
        field(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load(path: str | Path, *, nonfinite: str = "raise") -> PackedModel:
    """Read a file written by :func:`save` (format version 1, 2 or 3).

    Version 3 files are checked against their SHA-256 digest first; compressed tensors are restored.
    ``nonfinite``: the model's policy for NaN/inf inputs (see :class:`PackedModel`).
    """
    from .export import PackedModel

    check_policy(nonfinite)
    path = Path(path)
    metadata, tensors = _read_safetensors(path)
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(f"{path} has format version {version}; this onebit reads versions "
                             f"{', '.join(READABLE_VERSIONS[:-1])} and {READABLE_VERSIONS[-1]}")
    if version not in ("1", "2"):
        _check_digest(path, version, metadata, tensors)
    if version != "1":
        try:
            _decode_tensors(metadata, tensors)
        except Exception as err:
            raise ModelFileError(
                f"{path} is not a readable onebit packed model (corrupt compressed tensor data: "
                f"{type(err).__name__}: {str(err)[:200]})"
            ) from None
    try:
        description = json.loads(metadata["graph"])
        meta = json.loads(metadata.get("meta", "{}"))
        gm = graph_from_json(description, tensors)
    except ExportError as err:
        raise ModelFileError(f"{path}: {err}") from None
    except Exception as err:
        reason = f"{type(err).__name__}: {str(err)[:200]}"
        raise ModelFileError(f"{path}: the graph description is invalid ({reason})") from None
    return PackedModel(gm, meta, nonfinite=nonfinite)


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """The metadata and the tensors as stored of an onebit safetensors file; ModelFileError otherwise."""
    from safetensors import safe_open

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
    return metadata, tensors


def _check_digest(path: Path, version: str, metadata: dict[str, str], tensors: dict[str, Tensor]) -> None:
    if DIGEST_KEY not in metadata:
        raise ModelFileError(f"{path} is not a readable onebit packed model (format version {version} "
                             f"without its {DIGEST_KEY!r} entry: truncated, corrupt or foreign file)")
    if content_digest(metadata, tensors) != metadata[DIGEST_KEY]:
        raise ModelFileError(
            f"{path} is corrupt: its content does not match the SHA-256 digest it was saved with "
            "(damaged in storage or transfer?); copy it again or re-export it with `onebit export`"
        )


def _decode_tensors(metadata: dict[str, str], tensors: dict[str, Tensor]) -> None:
    """Replace, in ``tensors``, each compressed tensor named in the "encoding" entry by its decoding."""
    if "encoding" not in metadata:
        raise ValueError("the format-version-2 metadata has no 'encoding' entry")
    encoding = json.loads(metadata["encoding"])
    if not isinstance(encoding, dict):
        raise ValueError(f"the 'encoding' entry is a {type(encoding).__name__}, not an object")
    for name, info in encoding.items():
        if name not in tensors:
            raise ValueError(f"the 'encoding' entry names a tensor {name!r} that the file does not hold")
        try:
            tensors[name] = _codec.decode(tensors[name], info)
        except ValueError as err:
            raise ValueError(f"tensor {name!r}: {err}") from None
