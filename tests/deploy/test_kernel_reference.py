"""Every kernel path against the engine's reference path (``ONEBIT_KERNEL=reference``,
csrc/isa_reference.cpp): the value-by-value definition of the binary convolution, with no blocking,
zero-padding prefix sums, sign intervals, depthwise tables or bit-sliced bounds.  Every path must
give the same float32 values and bits, conv and depthwise, over a grid of layer shapes and
epilogue features (LCE keeps its reference kernel as a selectable op in the same way).

The float64 torch oracle (``reference_binary_conv2d``) checks the reference path itself."""

from __future__ import annotations

import itertools

import pytest
import torch

from onebit import _engine
from onebit.deploy import kernels as K

PATHS = K.available_kernels()


def _signs(*shape, gen):
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0)


def _transform(cout: int, output: str, prelu: bool, clamp: bool, gen) -> K.OutputTransform:
    # bias spread wide enough that y changes sign across channels; some slopes 0 and negative
    return K.OutputTransform(
        scale=torch.randn(cout, generator=gen), bias=4 * torch.randn(cout, generator=gen),
        prelu=torch.randn(cout, generator=gen) if prelu else None,
        clamp_min=-3.0 if clamp else None, clamp_max=5.0 if clamp else None, output=output,
        threshold=torch.randn(cout, generator=gen) if output == "bits" else None,
    )  # fmt: skip


def _on_every_path(run):
    """run() on the reference path, then on every other path: each result must be identical."""
    K.set_kernel(K.REFERENCE_KERNEL)
    try:
        want = run()
        for path in PATHS:
            K.set_kernel(path)
            got = run()
            _assert_identical(got, want, path)
    finally:
        K.set_kernel(None)
    return want


def _assert_identical(got, want, path: str) -> None:
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            _assert_identical(g, w, path)
    elif isinstance(want, K.PackedActivations):
        assert torch.equal(got.data, want.data), f"{path}: bits differ from the reference path"
    else:  # bit patterns, so -0 / +0 and NaN payloads count too
        assert torch.equal(got.contiguous().view(torch.int32), want.contiguous().view(torch.int32)), (
            f"{path}: floats differ from the reference path")


CONV_GRID = list(itertools.product(
    [(3, 3, 1, 1), (1, 1, 1, 0), (5, 5, 2, 2), (3, 1, 1, 1)],  # kh, kw, stride, padding
    [-1, 0, 1],                                               # pad_value
    [1, 2],                                                   # weight planes (2: masked)
    ["float", "bits"],
))  # fmt: skip


@pytest.mark.parametrize("geometry,pad_value,planes,output", CONV_GRID)
def test_conv_paths_match_the_reference_path(geometry, pad_value, planes, output):
    kh, kw, stride, padding = geometry
    gen = torch.Generator().manual_seed(hash((geometry, pad_value, planes, output)) % 2**31)
    cin, cout = 67, 45  # a tail word and a partial channel block
    x = K.pack_activations(torch.randn(2, cin, 9, 11, generator=gen))
    ws = [_signs(cout, cin, kh, kw, gen=gen) for _ in range(planes)]
    masks = None if planes == 1 else [(torch.rand(cout, cin, kh, kw, generator=gen) < 0.75).float() for _ in ws]
    scales = None if planes == 1 else [torch.rand(cout, generator=gen) + 0.5, 0.25]
    w = K.pack_weight_planes(ws, masks, scales)
    t = _transform(cout, output, prelu=pad_value != 0, clamp=planes == 2, gen=gen)
    layer = K.PreparedConv2d(w, stride=stride, padding=padding, pad_value=pad_value, transform=t)
    want = _on_every_path(lambda: layer(x))
    ref = K.reference_binary_conv2d(K.unpack_activations(x), ws, stride, padding, pad_value, t, masks=masks,
                                    scales=scales)  # fmt: skip
    got = K.unpack_activations(want) if output == "bits" else want
    assert torch.equal(got, ref), "the reference path differs from the float64 oracle"


@pytest.mark.parametrize("in_place", [False, True])
def test_conv_residual_and_bits_output_match_the_reference_path(in_place):
    gen = torch.Generator().manual_seed(7)
    cin, cout = 130, 96
    x = K.pack_activations(torch.randn(1, cin, 8, 8, generator=gen))
    w = K.pack_weights(_signs(cout, cin, 3, 3, gen=gen))
    t = _transform(cout, "float", prelu=True, clamp=True, gen=gen)
    layer = K.PreparedConv2d(w, padding=1, transform=t, also_bits=True,
                             bits_threshold=torch.randn(cout, generator=gen))  # fmt: skip
    shortcut = torch.randn(1, cout, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)

    def run():
        r = shortcut.clone()
        return layer(x, residual=r, out=r if in_place else None)

    _on_every_path(run)


@pytest.mark.parametrize("k,stride,pad_value,masked,output", list(itertools.product(
    [3, 5], [1, 2], [-1, 0, 1], [False, True], ["float", "bits"])))  # fmt: skip
def test_depthwise_paths_match_the_reference_path(k, stride, pad_value, masked, output):
    gen = torch.Generator().manual_seed(hash((k, stride, pad_value, masked, output)) % 2**31)
    c = 130  # three words, the last partial
    x = K.pack_activations(torch.randn(2, c, 7, 21, generator=gen))  # 21 columns: eight-pixel interior runs
    planes = [_signs(c, 1, k, k, gen=gen)]
    masks = [(torch.rand(c, 1, k, k, generator=gen) < 0.8).float()] if masked else None
    w = K.pack_weight_planes(planes, masks, [torch.rand(c, generator=gen) + 0.5], groups=c)
    t = _transform(c, output, prelu=True, clamp=stride == 1, gen=gen)
    layer = K.PreparedConv2d(w, stride=stride, padding=k // 2, pad_value=pad_value, transform=t, groups=c)
    want = _on_every_path(lambda: layer(x))
    ref = K.reference_binary_conv2d(K.unpack_activations(x), planes, stride, k // 2, pad_value, t, masks=masks,
                                    scales=[w.scales[0]], groups=c)  # fmt: skip
    got = K.unpack_activations(want) if output == "bits" else want
    assert torch.equal(got, ref), "the reference path differs from the float64 oracle"


@pytest.mark.parametrize("output", ["float", "bits"])
def test_depthwise_multi_plane_matches_the_reference_path(output):
    gen = torch.Generator().manual_seed(11)
    c = 70
    x = K.pack_activations(torch.randn(1, c, 9, 9, generator=gen))
    planes = [_signs(c, 1, 3, 3, gen=gen) for _ in range(3)]
    masks = [(torch.rand(c, 1, 3, 3, generator=gen) < 0.7).float() for _ in planes]
    w = K.pack_weight_planes(planes, masks, [1.0, 0.5, torch.rand(c, generator=gen)], groups=c)
    t = _transform(c, output, prelu=False, clamp=True, gen=gen)
    layer = K.PreparedConv2d(w, padding=1, pad_value=0, transform=t, groups=c)
    _on_every_path(lambda: layer(x))


def test_reference_path_is_selectable_but_never_automatic(monkeypatch):
    assert K.REFERENCE_KERNEL == "reference" and K.REFERENCE_KERNEL not in K.KERNELS
    assert K.REFERENCE_KERNEL not in K.available_kernels()
    monkeypatch.setenv("ONEBIT_KERNEL", "reference")
    assert K.active_kernel() == "reference"
    monkeypatch.delenv("ONEBIT_KERNEL")
    assert K.active_kernel() == K.available_kernels()[-1]
    K.set_kernel("Reference")
    try:
        assert K.active_kernel() == "reference"
    finally:
        K.set_kernel(None)
    assert _engine.KERNEL_NAMES == K.KERNELS  # the names come from the engine, defined once there


def test_reference_packing_matches_every_path():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 130, 3, 4, generator=gen).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, 0] = -0.0
    thr = torch.randn(130, generator=gen)
    _on_every_path(lambda: K.pack_activations(x, thr))
    _on_every_path(lambda: K.pack_activations(x[:, :, 0, 0].contiguous()))
