"""The compressed-tensor codec's stream, rebuilt here from its module docstring (issue 21: a mutation run
of ``_codec.py`` found its compression level and its big-endian branches unchecked): for ``n`` elements of
``k`` bytes, the zlib stream of the ``k`` byte planes, plane ``j`` holding byte ``j`` of every element in
little-endian order, at zlib's best compression (level 9) — so the same tensor always gives the same
bytes, and so the same model the same file; a big-endian host (emulated) writes the same stream. Any
tensor is accepted, a trained Parameter included."""

from __future__ import annotations

import sys
import zlib

import pytest
import torch
from torch import nn

from onebit.deploy import _codec


def _planes(t: torch.Tensor) -> bytes:
    """The documented layout, built independently: byte j of element i at j * n + i (little-endian)."""
    n, k = t.numel(), t.element_size()
    raw = bytearray(t.contiguous().view(torch.uint8).numpy().tobytes())
    out = bytearray(n * k)
    for i in range(n):
        element = raw[i * k:(i + 1) * k]
        if sys.byteorder == "big":
            element = element[::-1]
        for j in range(k):
            out[j * n + i] = element[j]
    return bytes(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.uint8])
def test_the_stream_is_zlib_level_9_of_the_little_endian_byte_planes(dtype):
    g = torch.Generator().manual_seed(0)
    # 2 bits of entropy per byte over 20000 bytes (for float32, zlib's level 8 gives another stream than 9)
    values = torch.randint(0, 4, (20000 // torch.empty((), dtype=dtype).element_size(),), generator=g)
    t = values.to(dtype)
    data, info = _codec.encode(t)
    assert info == {"codec": "shuffle+zlib", "dtype": str(dtype).split(".")[-1], "shape": [t.numel()]}
    planes = _planes(t)
    assert zlib.decompress(data.numpy().tobytes()) == planes
    assert data.numpy().tobytes() == zlib.compress(planes, 9)


def test_a_parameter_that_requires_grad_is_encoded_like_its_values():
    torch.manual_seed(0)
    weight = nn.Linear(64, 80).weight  # requires grad, as a trained model's parameters do
    data, info = _codec.encode(weight)
    assert torch.equal(data, _codec.encode(weight.detach().clone())[0])
    assert torch.equal(_codec.decode(data, info), weight.detach())


def _byteswapped(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as a big-endian host holds them in memory (each element's bytes reversed)."""
    k = t.element_size()
    return t.contiguous().view(torch.uint8).reshape(-1, k).flip(1).contiguous().view(t.dtype).reshape(t.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.float64])
def test_a_big_endian_host_writes_and_reads_the_same_little_endian_stream(dtype, monkeypatch):
    """Emulated: the codec told that the host is big-endian, given the big-endian memory of a tensor,
    writes the very stream a little-endian host writes for those values, and decodes it back to that
    big-endian memory (plane j is byte j of the little-endian form on every host)."""
    t = torch.arange(-300, 300, 7).to(dtype).reshape(2, -1)
    if dtype.is_floating_point:
        t = t / 3
    want, info = _codec.encode(t)
    assert data_equal(want, zlib.compress(_planes(t), 9))
    monkeypatch.setattr(_codec, "sys", type("BigEndianHost", (), {"byteorder": "big"}))
    data, big_info = _codec.encode(_byteswapped(t))
    assert big_info == info and torch.equal(data, want)
    back = _codec.decode(data, info)
    assert back.shape == t.shape and torch.equal(back.view(torch.uint8), _byteswapped(t).view(torch.uint8))


def data_equal(data: torch.Tensor, stream: bytes) -> bool:
    return data.numpy().tobytes() == stream


def test_a_bool_tensor_holding_one_byte_other_than_0_and_1_is_refused():
    """A stream declared bool must hold only 0 and 1 bytes: a single 2 among them is refused."""
    bytes_ = torch.tensor([0, 1, 1, 0, 2, 1], dtype=torch.uint8)
    data, info = _codec.encode(bytes_)
    with pytest.raises(ValueError, match="a bool tensor holds bytes other than 0 and 1"):
        _codec.decode(data, dict(info, dtype="bool"))
    ok, _ = _codec.encode(torch.tensor([0, 1, 1, 0, 0, 1], dtype=torch.uint8))
    assert _codec.decode(ok, dict(info, dtype="bool")).tolist() == [False, True, True, False, False, True]
