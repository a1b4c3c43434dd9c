"""``onebit.deploy.lce``'s public functions at their edges (issue 21): a model of two inputs and two
outputs (example inputs as a tuple or a list), and every argument the interpreter refuses, each with
its own message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onebit.deploy import lce
from onebit.nn import BinaryConv2d

pytestmark = pytest.mark.skipif(not lce.LCE_PLATFORM,
                                reason="larq-compute-engine ships its interpreter for x86-64 Linux only")


def _close(got, want) -> None:
    got = torch.from_numpy(got)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


class TwoWays(nn.Module):
    """An image and a vector in; the image's features and their sum with the vector's out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.binary = BinaryConv2d(4, 4, 3, padding=1, method="bnn", pad_value=1.0)
        self.fc = nn.Linear(6, 4 * 2 * 3)

    def forward(self, img, vec):
        feats = self.binary(self.conv(img)).flatten(1)
        return feats, feats + self.fc(vec)


@pytest.mark.parametrize("as_list", [False, True])
def test_two_inputs_and_two_outputs(as_list):
    torch.manual_seed(0)
    net = TwoWays().eval()
    img = torch.randn(2, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    vec = torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    example = [img, vec] if as_list else (img, vec)
    interp = lce.interpreter(lce.to_lce_bytes(net, example))
    assert interp.input_shapes == [(2, 2, 3, 3), (2, 6)] and interp.output_shapes == [(2, 24), (2, 24)]
    with torch.no_grad():
        want = net(img, vec)
    got = interp.predict(img.permute(0, 2, 3, 1).numpy(), vec.numpy())
    assert len(got) == 2
    for g, w in zip(got, want):
        _close(g, w)
    with pytest.raises(ValueError, match=r"the model takes 2 input\(s\), got 1"):
        interp.predict(vec.numpy())
    with pytest.raises(ValueError, match=r"input 1 has shape \(2, 5\); the model was exported for \(2, 6\)"):
        interp.predict(img.permute(0, 2, 3, 1).numpy(), vec[:, :5].numpy())


def test_what_the_interpreter_refuses(tmp_path):
    net = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(2, 4)
    data = lce.to_lce_bytes(net, x)
    assert lce.interpreter(bytearray(data), num_threads=1).output_shapes == [(2, 3)]
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    assert lce.interpreter(str(path)).input_shapes == [(2, 4)]
    with pytest.raises(FileNotFoundError, match="does not exist; write one with onebit.deploy.lce.to_lce"):
        lce.interpreter(tmp_path / "missing.tflite")
    with pytest.raises(TypeError, match="takes a path or the model bytes, got int"):
        lce.interpreter(3)
    for bad in (data[:4] + b"XXXX" + data[8:], b"TFL3", data[:7]):
        with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
            lce.interpreter(bad)
    with pytest.raises(ValueError, match="num_threads=0 must be >= 1"):
        lce.interpreter(data, num_threads=0)
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        lce.to_lce_bytes(net, [x, 1.0])
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        lce.to_lce_bytes(net, x.numpy())


class Indexed(nn.Module):
    def __init__(self, index):
        super().__init__()
        self.index = index
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[self.index]


@pytest.mark.parametrize("index", [(slice(None), 0), (0,), (slice(None), slice(1, 3), 1), (Ellipsis, slice(1, 2))])
def test_indexing_other_than_slices_is_named(index):
    """An integer or an Ellipsis among the indices (even beside slices) is refused with one message."""
    from onebit.deploy import ExportError

    with pytest.raises(ExportError, match=r"is not supported by to_lce \(slices only\)"):
        lce.to_lce_bytes(Indexed(index).eval(), torch.randn(2, 3, 4, 5))
