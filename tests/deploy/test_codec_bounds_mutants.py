"""The compressed-tensor codec's plausibility bound, at its edge (issue 21: ``MAX_RATIO`` ± 1 in
``_codec.py`` survived the seed-47 sample).

deflate turns at most 2 bits into 258 bytes, so ``L`` compressed bytes never decompress to more than
``1032·L`` bytes (+64 for the zlib header and the shortest streams). A description declaring more is
refused before anything is decompressed or allocated ("cannot come from"); one declaring exactly that
much passes the bound and fails later, on the real decompressed size. The highest-ratio stream zlib
makes (zeros) stays below the bound and decodes."""

from __future__ import annotations

import pytest
import torch

from onebit.deploy import _codec

DEFLATE_MAX_RATIO = 1032
ZLIB_SLACK = 64


def _stream(n: int) -> tuple[torch.Tensor, dict]:
    return _codec.encode(torch.arange(n, dtype=torch.int32))


@pytest.mark.parametrize("n", [1, 50, 3000])
def test_a_declared_size_beyond_deflates_ratio_is_refused_before_decompressing(n):
    data, info = _stream(n)
    limit = DEFLATE_MAX_RATIO * len(data) + ZLIB_SLACK
    with pytest.raises(ValueError, match=f"declared shape \\[{limit + 1}\\] \\({limit + 1} bytes\\) cannot come "
                                         f"from {len(data)} compressed bytes"):
        _codec.decode(data, dict(info, dtype="uint8", shape=[limit + 1]))
    with pytest.raises(ValueError, match=f"decompresses to {4 * n} bytes, the declared uint8 shape \\[{limit}\\]"):
        _codec.decode(data, dict(info, dtype="uint8", shape=[limit]))


def test_an_empty_stream_may_declare_the_slack_only():
    empty = torch.zeros(0, dtype=torch.uint8)
    info = {"codec": _codec.CODEC, "dtype": "uint8", "shape": [ZLIB_SLACK]}
    with pytest.raises(ValueError, match="truncated"):
        _codec.decode(empty, info)
    with pytest.raises(ValueError, match="cannot come from 0 compressed bytes"):
        _codec.decode(empty, dict(info, shape=[ZLIB_SLACK + 1]))


def test_the_densest_zlib_stream_is_within_the_bound():
    zeros = torch.zeros(8_000_000, dtype=torch.uint8)
    data, info = _codec.encode(zeros)
    assert len(zeros) / len(data) > 1000  # close to deflate's limit
    assert torch.equal(_codec.decode(data, info), zeros)
