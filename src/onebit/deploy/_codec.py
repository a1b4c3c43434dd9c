"""Lossless compression of the tensors in a packed-model file: byte shuffle + zlib.

The full-precision tensors of an exported model (classifier, stem, 1x1 downsample convolutions) are
float32, and float32 bytes compress poorly as they are: each 4-byte value mixes a fairly predictable
sign/exponent byte with three near-random mantissa bytes. *Byte shuffling* — the idea of the
``shuffle`` filter of the Blosc compressor (https://www.blosc.org, "shuffle" and "bitshuffle"
filters) — regroups the bytes by significance (every value's byte 0, then every value's byte 1, ...)
so that the exponent bytes end up in one long, highly redundant run that deflate compresses well.
The transformation is a permutation, so the round trip is exact for every bit pattern (NaN payloads,
infinities, -0.0, subnormals).

The stored layout, for a tensor of ``n`` elements of ``k`` bytes each, is the zlib stream (RFC 1950)
of ``k`` byte planes of ``n`` bytes; plane ``j`` holds byte ``j`` of each element in *little-endian*
order (safetensors' byte order), whatever the host's.

:func:`decode` reads untrusted bytes: it checks every field of the description and never allocates
more than the description declares, which itself must be plausible for the compressed length.
"""

from __future__ import annotations

import math
import sys
import zlib
from typing import Any

import torch
from torch import Tensor

__all__ = ["CODEC", "MAX_RATIO", "decode", "encode", "supports"]

CODEC = "shuffle+zlib"
"""The codec name recorded in a tensor's description."""

MAX_RATIO = 1032
"""deflate's largest possible expansion on decompression (258 bytes from a ~2-bit code, ~1032:1)."""

_SLACK = 64  # bytes: headers and the shortest streams, for which the ratio bound alone is too tight

_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_INFO_KEYS = {"codec", "dtype", "shape"}
_LEVEL = 9


def supports(dtype: torch.dtype) -> bool:
    """Whether :func:`encode` accepts tensors of ``dtype``."""
    return dtype in _NAMES


def encode(tensor: Tensor, *, level: int = _LEVEL) -> tuple[Tensor, dict[str, Any]]:
    """Compress ``tensor`` losslessly.

    Returns the compressed bytes as a 1-D ``uint8`` CPU tensor and the description :func:`decode`
    needs: ``{"codec": "shuffle+zlib", "dtype": "float32", "shape": [...]}`` (JSON-serialisable).
    The shuffle width is the element size. Raises ``ValueError`` for a dtype outside :func:`supports`.
    """
    if tensor.dtype not in _NAMES:
        raise ValueError(f"the {CODEC} codec does not handle {tensor.dtype} tensors")
    data = tensor.detach().cpu().contiguous()
    count, width = data.numel(), data.element_size()
    raw = data.reshape(-1).view(torch.uint8).reshape(count, width)
    planes = raw.t()
    if sys.byteorder == "big":  # plane j must hold the little-endian byte j
        planes = planes.flip(0)
    compressed = zlib.compress(planes.contiguous().numpy().tobytes(), level)
    info = {"codec": CODEC, "dtype": _NAMES[tensor.dtype], "shape": list(data.shape)}
    return torch.frombuffer(bytearray(compressed), dtype=torch.uint8), info


def decode(data: Tensor, info: Any) -> Tensor:
    """The tensor that :func:`encode` turned into ``data`` and ``info``, bit for bit.

    Every input is checked; any inconsistency (unknown codec or dtype, malformed shape, a declared
    size impossible for the compressed length, a corrupt, truncated or over-long zlib stream, a size
    mismatch) raises ``ValueError`` with the reason.
    """
    if not isinstance(info, dict):
        raise ValueError(f"the encoding description is a {type(info).__name__}, not an object")
    if set(info) != _INFO_KEYS:
        raise ValueError(f"the encoding description has keys {sorted(map(str, info))}, expected {sorted(_INFO_KEYS)}")
    codec, dtype_name, shape = info["codec"], info["dtype"], info["shape"]
    if codec != CODEC:
        raise ValueError(f"unknown codec {codec!r} (this onebit knows {CODEC!r})")
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype_name!r} in the encoding description")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"the shape {shape!r} is not a list of non-negative integers")
    if not isinstance(data, Tensor) or data.dtype != torch.uint8 or data.dim() != 1:
        raise ValueError("the encoded data is not a 1-D uint8 tensor")
    dtype = _DTYPES[dtype_name]
    count = math.prod(shape)
    width = torch.empty((), dtype=dtype).element_size()
    size = count * width
    compressed = data.contiguous().numpy().tobytes()
    if size > MAX_RATIO * len(compressed) + _SLACK:
        raise ValueError(f"the declared shape {shape} ({size} bytes) cannot come from {len(compressed)} "
                         "compressed bytes")
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(compressed, size + 1)  # never more than declared (+1 to see an excess)
    except zlib.error as err:
        raise ValueError(f"the compressed data is corrupt ({err})") from None
    if len(raw) > size:
        raise ValueError(f"the data decompresses to more than the {size} bytes that the declared {dtype_name} "
                         f"shape {shape} needs")
    if not stream.eof:
        raise ValueError("the compressed data is truncated")
    if len(raw) != size:
        raise ValueError(f"the data decompresses to {len(raw)} bytes, the declared {dtype_name} shape {shape} "
                         f"needs {size}")
    if stream.unused_data:
        raise ValueError(f"{len(stream.unused_data)} bytes follow the compressed data")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    planes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(width, count)
    if sys.byteorder == "big":
        planes = planes.flip(0)
    flat = planes.t().contiguous().reshape(-1)  # 1-D: view() needs a unit last stride
    if dtype is torch.bool and bool((flat > 1).any()):
        raise ValueError("a bool tensor holds bytes other than 0 and 1")
    return flat.view(dtype).reshape(shape)
