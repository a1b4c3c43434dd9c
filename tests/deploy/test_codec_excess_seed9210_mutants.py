"""The codec's over-long stream, told apart from a truncated one (issue 21: single-file sample 9210 of
``deploy/fileformat.py`` + ``_codec.py``, hunting, not an honest sample: ``decompress(compressed, size + 1)``
written ``size + 0`` survived). Decompressing one byte past the declared size is what shows a stream
that holds more than its shape needs; capped at the size itself, such a stream stops short of its end
and is reported as truncated, which it is not."""

from __future__ import annotations

import pytest
import torch

from onebit.deploy import _codec


@pytest.mark.parametrize("declared", [1, 7, 11])
def test_a_stream_longer_than_its_shape_is_reported_as_too_long(declared):
    data, info = _codec.encode(torch.arange(12, dtype=torch.uint8))
    with pytest.raises(ValueError, match=f"decompresses to more than the {declared} bytes that the declared "
                                         f"uint8 shape \\[{declared}\\] needs"):
        _codec.decode(data, dict(info, shape=[declared]))
    truncated = data[:-4]
    with pytest.raises(ValueError, match="truncated"):
        _codec.decode(truncated, dict(info, shape=[12]))
