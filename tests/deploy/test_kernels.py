"""Packed 1-bit kernels vs the slow float64 reference, on every kernel path the CPU has."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onebit import _engine
from onebit.deploy import kernels as K

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ODD_CHANNELS = [1, 3, 63, 64, 65, 127, 130]


def _kernel_params():
    out = []
    for i, name in enumerate(K.KERNELS):
        marks = []
        if not _engine.cpu_supports(i):
            marks.append(pytest.mark.skip(reason=f"this CPU lacks the ISA of the {name} kernel"))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(params=_kernel_params())
def kernel(request):
    K.set_kernel(request.param)
    yield request.param
    K.set_kernel(None)


@pytest.fixture(autouse=True)
def _reset():
    yield
    K.set_kernel(None)
    K.set_num_threads(None)


def _signs(*shape, gen):
    return torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0)


def _transform(draw_or_none, cout, gen, output):
    """A random OutputTransform (or None) with every feature toggled by `draw_or_none`."""
    kind = draw_or_none
    if kind == 0:
        return None if output == "float" else K.OutputTransform(output="bits")
    scale = torch.randn(cout, generator=gen)
    bias = torch.randn(cout, generator=gen) * 4
    prelu = torch.rand(cout, generator=gen) if kind >= 2 else None
    cmin, cmax = (-3.0, 5.0) if kind == 3 else (None, None)
    thr = torch.randn(cout, generator=gen) if output == "bits" and kind >= 2 else None
    return K.OutputTransform(scale, bias, prelu, cmin, cmax, output, thr)


def _check(y, ref, transform):
    if isinstance(y, K.PackedActivations):
        assert torch.equal(K.unpack_activations(y), ref)
        tail = y.channels % 64
        if tail:
            assert not bool((y.data[..., -1] >> tail).any()), "tail bits of the output must be zero"
    elif transform is None:
        assert torch.equal(y, ref)  # pure integer accumulations: exact
    else:
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("C", ODD_CHANNELS)
def test_pack_roundtrip_and_tail_bits(C):
    g = torch.Generator().manual_seed(C)
    x = torch.randn(2, C, 3, 5, generator=g)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1
    x[0, 0, 0, 1] = -0.0
    p = K.pack_activations(x)
    assert p.data.shape == (2, 3, 5, (C + 63) // 64) and p.data.dtype == torch.int64
    assert p.shape == (2, C, 3, 5)
    expect = torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(K.unpack_activations(p), expect)
    if C % 64:
        assert not bool((p.data[..., -1] >> (C % 64)).any())
    # channels_last and non-contiguous inputs give the same bits
    assert torch.equal(K.pack_activations(x.to(memory_format=torch.channels_last)).data, p.data)
    big = torch.randn(2, C, 6, 10, generator=g)
    strided = big[:, :, ::2, ::2]
    assert torch.equal(K.pack_activations(strided).data, K.pack_activations(strided.clone()).data)
    # linear activations
    x2 = torch.randn(4, C, generator=g)
    p2 = K.pack_activations(x2)
    assert p2.data.shape == (4, (C + 63) // 64)
    assert torch.equal(K.unpack_activations(p2), torch.where(x2 >= 0, 1.0, -1.0))


def test_pack_threshold():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 70, 4, 4, generator=g)
    t = torch.randn(70, generator=g)
    p = K.pack_activations(x, t)
    assert torch.equal(K.unpack_activations(p), torch.where(x + t.view(1, -1, 1, 1) < 0, -1.0, 1.0))
    p_cl = K.pack_activations(x.to(memory_format=torch.channels_last), t)
    assert torch.equal(p_cl.data, p.data)
    x2 = torch.randn(3, 70, generator=g)
    assert torch.equal(K.unpack_activations(K.pack_activations(x2, t)), torch.where(x2 + t < 0, -1.0, 1.0))


@pytest.mark.parametrize("C", ODD_CHANNELS + [128, 200])
def test_pack_every_kernel_path(kernel, C):
    """Each path's packer (SWAR byte gather, movemask, compare-to-mask) gives the reference bits,
    for full and partial words, signed zeros, infinities and values at the threshold."""
    g = torch.Generator().manual_seed(100 + C)
    x = torch.randn(3, C, 4, 5, generator=g)
    t = torch.randn(C, generator=g)
    flat = x.view(-1)
    flat[:6] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-38, -1e-38])
    x[1, :, 0, 0] = -t  # x + t == 0 exactly: bit 0 (+1)
    for thr in (None, t):
        expect = torch.where(x + (0 if thr is None else thr.view(1, -1, 1, 1)) < 0, -1.0, 1.0)
        for inp in (x, x.to(memory_format=torch.channels_last)):
            p = K.pack_activations(inp, thr)
            assert torch.equal(K.unpack_activations(p), expect)
            if C % 64:
                assert not bool((p.data[..., -1] >> (C % 64)).any())
        rows = x.permute(0, 2, 3, 1).reshape(-1, C)
        expect2 = torch.where(rows + (0 if thr is None else thr) < 0, -1.0, 1.0)
        assert torch.equal(K.unpack_activations(K.pack_activations(rows, thr)), expect2)


def test_pack_threads_split_rows_identically(kernel):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 70, 37, 41, generator=g).to(memory_format=torch.channels_last)  # odd row chunks
    t = torch.randn(70, generator=g)
    outs = []
    for n in (1, 2, 5):
        K.set_num_threads(n)
        outs.append(K.pack_activations(x, t).data)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert torch.equal(K.unpack_activations(K.PackedActivations(outs[0], 70)),
                       torch.where(x + t.view(1, -1, 1, 1) < 0, -1.0, 1.0))


# ------------------------------------------------------------------------------------------
# convolution / linear vs reference
# ------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 2, 3]))
    pad = draw(st.integers(0, k // 2 + 1))
    h = draw(st.integers(max(1, k - 2 * pad), 9))
    w = draw(st.integers(max(1, k - 2 * pad), 9))
    return dict(
        n=draw(st.integers(1, 2)),
        cin=draw(st.sampled_from(ODD_CHANNELS)),
        cout=draw(st.sampled_from([1, 5, 32, 33, 64, 70])),
        h=h, w=w, k=k, stride=stride, pad=pad,
        pad_value=draw(st.sampled_from([-1, 0, 1])),
        output=draw(st.sampled_from(["float", "bits"])),
        tkind=draw(st.integers(0, 3)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


@SETTINGS
@given(case=conv_cases())
def test_conv_matches_reference(kernel, case):
    c = case
    g = torch.Generator().manual_seed(c["seed"])
    x = _signs(c["n"], c["cin"], c["h"], c["w"], gen=g)
    wt = _signs(c["cout"], c["cin"], c["k"], c["k"], gen=g)
    tr = _transform(c["tkind"], c["cout"], g, c["output"])
    kw = dict(stride=c["stride"], padding=c["pad"], pad_value=c["pad_value"], transform=tr)
    y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt), **kw)
    ref = K.reference_binary_conv2d(x, wt, **kw)
    if isinstance(y, torch.Tensor):
        assert y.shape == ref.shape
    _check(y, ref, tr)


@SETTINGS
@given(case=conv_cases(), planes=st.integers(1, 3), masked=st.booleans(), per_channel=st.booleans())
def test_multibit_conv_matches_reference(kernel, case, planes, masked, per_channel):
    c = case
    g = torch.Generator().manual_seed(c["seed"])
    x = _signs(c["n"], c["cin"], c["h"], c["w"], gen=g)
    shape = (c["cout"], c["cin"], c["k"], c["k"])
    ps = [_signs(*shape, gen=g) for _ in range(planes)]
    ms = [(torch.rand(*shape, generator=g) < 0.6).float() for _ in range(planes)] if masked else None
    if masked and planes > 1:
        ms[0] = None  # a None mask means all-active
    sc = [torch.rand(c["cout"], generator=g) if per_channel else 0.5**j for j in range(planes)]
    tr = _transform(c["tkind"], c["cout"], g, c["output"])
    kw = dict(stride=c["stride"], padding=c["pad"], pad_value=c["pad_value"], transform=tr)
    wp = K.pack_weight_planes(ps, ms, sc)
    assert wp.num_planes == planes
    y = K.binary_conv2d(K.pack_activations(x), wp, **kw)
    ref = K.reference_binary_conv2d(x, ps, masks=ms, scales=sc, **kw)
    if isinstance(y, torch.Tensor):
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)
    else:
        _check(y, ref, tr)


@SETTINGS
@given(
    n=st.integers(1, 11),
    cin=st.sampled_from(ODD_CHANNELS + [512]),
    cout=st.sampled_from([1, 7, 32, 65, 100]),
    output=st.sampled_from(["float", "bits"]),
    tkind=st.integers(0, 3),
    planes=st.integers(0, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_matches_reference(kernel, n, cin, cout, output, tkind, planes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, generator=g)
    tr = _transform(tkind, cout, g, output)
    if planes == 0:
        wt = torch.randn(cout, cin, generator=g)  # latent weights: signs are taken
        y = K.binary_linear(K.pack_activations(x), K.pack_weights(wt), transform=tr)
        ref = K.reference_binary_linear(x, wt, transform=tr)
        _check(y, ref, tr)
        if isinstance(y, torch.Tensor):
            assert y.shape == (n, cout)
    else:
        ps = [_signs(cout, cin, gen=g) for _ in range(planes)]
        ms = [(torch.rand(cout, cin, generator=g) < 0.5).float() for _ in range(planes)]
        sc = [torch.rand(cout, generator=g) for _ in range(planes)]
        y = K.binary_linear(K.pack_activations(x), K.pack_weight_planes(ps, ms, sc), transform=tr)
        ref = K.reference_binary_linear(x, ps, masks=ms, scales=sc, transform=tr)
        if isinstance(y, torch.Tensor):
            torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)
        else:
            _check(y, ref, tr)


@pytest.mark.parametrize("cin", ODD_CHANNELS)
@pytest.mark.parametrize("pad_value", [-1, 0, 1])
def test_conv_every_channel_count_exact(kernel, cin, pad_value):
    g = torch.Generator().manual_seed(cin)
    x = _signs(1, cin, 6, 7, gen=g)
    wt = _signs(33, cin, 3, 3, gen=g)
    y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt), cin, (3, 3), 1, 1, pad_value)
    ref = K.reference_binary_conv2d(x, wt, 1, 1, pad_value)
    assert torch.equal(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_chain_bits_into_next_layer(kernel):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 70, 9, 9, generator=g)
    w1, w2 = _signs(96, 70, 3, 3, gen=g), _signs(40, 96, 3, 3, gen=g)
    t1 = K.OutputTransform(torch.rand(96, generator=g), torch.randn(96, generator=g) * 3, output="bits",
                           threshold=torch.randn(96, generator=g))  # fmt: skip
    h = K.binary_conv2d(K.pack_activations(x), K.pack_weights(w1), stride=2, padding=1, transform=t1)
    assert isinstance(h, K.PackedActivations) and h.data.shape == (1, 5, 5, 2)
    y = K.binary_conv2d(h, K.pack_weights(w2), padding=1, pad_value=-1)
    h_ref = K.reference_binary_conv2d(x, w1, stride=2, padding=1, transform=t1)
    assert torch.equal(K.unpack_activations(h), h_ref)
    assert torch.equal(y, K.reference_binary_conv2d(h_ref, w2, padding=1, pad_value=-1))


def test_very_long_reduction_is_exact(kernel):
    """More than 4095 words per output (the portable kernel's 16-bit counter segment) and the
    carry-save groups of 15/7/3 words with every remainder."""
    g = torch.Generator().manual_seed(21)
    for k in (64 * 4100 + 5, 64 * 15 + 64 * 7 + 64 * 3 + 1):
        x, w = _signs(2, k, gen=g), _signs(33, k, gen=g)
        y = K.binary_linear(K.pack_activations(x), K.pack_weights(w))
        assert torch.equal(y, K.reference_binary_linear(x, w))


def test_raw_word_input_with_in_channels(kernel):
    g = torch.Generator().manual_seed(5)
    x = _signs(2, 65, 4, 4, gen=g)
    wt = _signs(8, 65, 3, 3, gen=g)
    p = K.pack_activations(x)
    y = K.binary_conv2d(p.data, K.pack_weights(wt), in_channels=65, kernel_size=3)
    assert torch.equal(y, K.reference_binary_conv2d(x, wt))
    xl = _signs(3, 65, gen=g)
    wl = _signs(9, 65, gen=g)
    yl = K.binary_linear(K.pack_activations(xl).data.to(torch.uint64), K.pack_weights(wl), in_features=65)
    assert torch.equal(yl, K.reference_binary_linear(xl, wl))


@pytest.mark.parametrize("pad_value", [-1, 0, 1])
def test_prepared_conv_matches_binary_conv2d(kernel, pad_value):
    g = torch.Generator().manual_seed(11)
    x = _signs(2, 70, 9, 11, gen=g)
    wt = _signs(40, 70, 3, 3, gen=g)
    for output, stride in (("float", 1), ("bits", 2)):
        tr = _transform(3, 40, g, output)
        kw = dict(stride=stride, padding=1, pad_value=pad_value, transform=tr)
        layer = K.PreparedConv2d(K.pack_weights(wt), **kw)
        assert layer.stride == (stride, stride) and layer.padding == (1, 1) and layer.transform is tr
        ref = K.reference_binary_conv2d(x, wt, **kw)
        for _ in range(2):  # the second call reuses what the first resolved
            y = layer(K.pack_activations(x))
            _check(y, ref, tr)
        y_fn = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt), **kw)
        assert torch.equal(y.data if output == "bits" else y, y_fn.data if output == "bits" else y_fn)


@pytest.mark.parametrize("cout", [5, 33, 64, 70])
@pytest.mark.parametrize("tkind", [1, 2, 3])
def test_conv_residual_matches_reference(kernel, cout, tkind):
    """The residual is added after scale and bias, before PReLU and clamp: the same float32
    operations as the unfused engine output + residual, then the activation."""
    g = torch.Generator().manual_seed(cout * 10 + tkind)
    x = _signs(2, 65, 7, 9, gen=g)
    wt = _signs(cout, 65, 3, 3, gen=g)
    tr = _transform(tkind, cout, g, "float")
    for stride, pad_value in ((1, 0), (2, -1)):
        kw = dict(stride=stride, padding=1, pad_value=pad_value, transform=tr)
        oh, ow = (7 + 2 - 3) // stride + 1, (9 + 2 - 3) // stride + 1
        r = (torch.randn(2, cout, oh, ow, generator=g) * 3).contiguous(memory_format=torch.channels_last)
        y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt), residual=r, **kw)
        ref = K.reference_binary_conv2d(x, wt, residual=r, **kw)
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)
        if tkind == 1:  # no activation: exactly the unfused sum
            y0 = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt), **kw)
            assert torch.equal(y, y0 + r)


@pytest.mark.parametrize("cout", [5, 64, 70, 130])
def test_conv_also_bits_gives_the_packed_float_output(kernel, cout):
    """also_bits: the same pass writes pack_activations(y, threshold) of its float output y."""
    g = torch.Generator().manual_seed(cout)
    x = _signs(2, 65, 6, 7, gen=g)
    wp = K.pack_weights(_signs(cout, 65, 3, 3, gen=g))
    r = torch.randn(2, cout, 6, 7, generator=g).contiguous(memory_format=torch.channels_last)
    for tkind, thr, residual in ((3, torch.randn(cout, generator=g), r), (1, None, None), (2, 0.25, r)):
        tr = _transform(tkind, cout, g, "float")
        kw = dict(padding=1, transform=tr)
        y, bits = K.binary_conv2d(K.pack_activations(x), wp, residual=residual, also_bits=True,
                                  bits_threshold=thr, **kw)  # fmt: skip
        assert torch.equal(y, K.binary_conv2d(K.pack_activations(x), wp, residual=residual, **kw))
        expected = K.pack_activations(y, None if thr is None else torch.full((cout,), thr) if
                                      isinstance(thr, float) else thr)  # fmt: skip
        assert bits.channels == cout and torch.equal(bits.data, expected.data)


def test_residual_and_also_bits_identical_on_every_thread_count(kernel, thread_backend):
    g = torch.Generator().manual_seed(17)
    x = K.pack_activations(torch.randn(2, 130, 21, 19, generator=g))
    wp = K.pack_weights(torch.randn(97, 130, 3, 3, generator=g))
    tr = K.OutputTransform(torch.rand(97, generator=g), torch.randn(97, generator=g), clamp_min=-1.0, clamp_max=1.0)
    r = torch.randn(2, 97, 11, 10, generator=g).contiguous(memory_format=torch.channels_last)
    layer = K.PreparedConv2d(wp, stride=2, padding=1, transform=tr, also_bits=True,
                             bits_threshold=torch.randn(97, generator=g))  # fmt: skip
    outs = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        y, bits = layer(x, residual=r)
        outs.append((y, bits.data))
    for y, bits in outs[1:]:
        assert torch.equal(y, outs[0][0]) and torch.equal(bits, outs[0][1])


@pytest.mark.parametrize("cout", [5, 64, 70])
@pytest.mark.parametrize("planes", [1, 2])
def test_out_and_in_place_residual_give_the_same_output(kernel, thread_backend, cout, planes):
    """out= a fresh buffer, and out= the residual itself (the epilogue reads each value before
    overwriting it): the same floats and bits as a call that allocates, on 1-3 threads, for full and
    partial channel blocks, one and two weight planes (the one-pass and the general epilogue)."""
    g = torch.Generator().manual_seed(cout + 100 * planes)
    x = K.pack_activations(torch.randn(2, 65, 9, 8, generator=g))
    ws = [_signs(cout, 65, 3, 3, gen=g) for _ in range(planes)]
    wp = K.pack_weight_planes(ws, None, [torch.rand(cout, generator=g) for _ in ws])
    for tkind in (1, 2, 3):
        tr = _transform(tkind, cout, g, "float")
        layer = K.PreparedConv2d(wp, padding=1, transform=tr, also_bits=True,
                                 bits_threshold=torch.randn(cout, generator=g))  # fmt: skip
        r = torch.randn(2, cout, 9, 8, generator=g).contiguous(memory_format=torch.channels_last)
        y0, b0 = layer(x, residual=r)
        for n in (1, 2, 3):
            K.set_num_threads(n)
            out = torch.full_like(r, float("nan"))
            y, b = layer(x, residual=r, out=out)
            assert y is out and torch.equal(y, y0) and torch.equal(b.data, b0.data)
            shortcut = r.clone()
            y, b = layer(x, residual=shortcut, out=shortcut)
            assert y is shortcut and torch.equal(y, y0) and torch.equal(b.data, b0.data)
        K.set_num_threads(None)
        out = torch.empty_like(r)
        assert K.binary_conv2d(x, wp, padding=1, transform=tr, out=out) is out
        assert torch.equal(out, K.PreparedConv2d(wp, padding=1, transform=tr)(x))


def test_out_serves_depthwise_layers_too(kernel):
    g = torch.Generator().manual_seed(4)
    x = K.pack_activations(torch.randn(2, 65, 7, 6, generator=g))
    dw = K.pack_weights(torch.randn(65, 1, 3, 3, generator=g), groups=65)
    out = torch.empty(2, 65, 4, 3).contiguous(memory_format=torch.channels_last)
    y = K.binary_conv2d(x, dw, stride=2, padding=1, groups=65, out=out)
    assert y is out and torch.equal(y, K.binary_conv2d(x, dw, stride=2, padding=1, groups=65))


def test_out_bad_arguments_raise_clear_errors():
    g = torch.Generator().manual_seed(3)
    xp, wp = K.pack_activations(_signs(1, 64, 5, 5, gen=g)), K.pack_weights(_signs(8, 64, 3, 3, gen=g))
    layer = K.PreparedConv2d(wp, padding=1)
    cl = torch.channels_last
    with pytest.raises(ValueError, match="out of shape \\(1, 8, 4, 5\\), the output is \\(1, 8, 5, 5\\)"):
        layer(xp, out=torch.empty(1, 8, 4, 5).contiguous(memory_format=cl))
    with pytest.raises(ValueError, match="out must be channels_last"):
        layer(xp, out=torch.empty(1, 8, 5, 5))
    with pytest.raises(TypeError, match="out must be a float32 CPU tensor, got torch.float16"):
        layer(xp, out=torch.empty(1, 8, 5, 5, dtype=torch.float16).contiguous(memory_format=cl))
    with pytest.raises(ValueError, match="out= takes a float output"):
        K.PreparedConv2d(wp, padding=1, transform=K.OutputTransform(output="bits"))(
            xp, out=torch.empty(1, 8, 5, 5).contiguous(memory_format=cl))
    flat = torch.zeros(400)

    def nhwc(offset):  # a channels_last (1, 8, 5, 5) view of flat from `offset`
        return flat[offset:offset + 200].view(1, 5, 5, 8).permute(0, 3, 1, 2)

    with pytest.raises(ValueError, match="out overlaps the residual"):  # shifted by one pixel
        layer(xp, residual=nhwc(0), out=nhwc(8))
    words = flat[:50].view(torch.int64).view(1, 5, 5, 1)
    words.copy_(xp.data)
    with pytest.raises(ValueError, match="out overlaps the input"):
        layer(words, 64, out=nhwc(0))
    assert torch.equal(layer(words, 64, out=nhwc(200)), layer(xp))  # disjoint: fine


def test_conv_residual_bad_inputs_raise_clear_errors():
    g = torch.Generator().manual_seed(2)
    xp, wp = K.pack_activations(_signs(1, 64, 5, 5, gen=g)), K.pack_weights(_signs(8, 64, 3, 3, gen=g))
    good = torch.zeros(1, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    layer = K.PreparedConv2d(wp, padding=1)
    assert torch.equal(layer(xp, residual=good), layer(xp))
    with pytest.raises(ValueError, match="residual of shape \\(1, 8, 3, 3\\), the output is \\(1, 8, 5, 5\\)"):
        layer(xp, residual=torch.zeros(1, 8, 3, 3).contiguous(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="channels_last"):
        layer(xp, residual=torch.zeros(1, 8, 5, 5))
    with pytest.raises(TypeError, match="float32 CPU tensor, got torch.float64"):
        layer(xp, residual=good.double())
    with pytest.raises(ValueError, match="needs float output"):
        K.PreparedConv2d(wp, padding=1, transform=K.OutputTransform(output="bits"))(xp, residual=good)
    with pytest.raises(ValueError, match="also_bits adds a bits output to a float output"):
        K.PreparedConv2d(wp, transform=K.OutputTransform(output="bits"), also_bits=True)
    with pytest.raises(ValueError, match="pass also_bits=True"):
        K.PreparedConv2d(wp, bits_threshold=0.5)
    with pytest.raises(ValueError, match="bits_threshold: expected shape \\(8,\\)"):
        K.PreparedConv2d(wp, also_bits=True, bits_threshold=torch.zeros(7))
    dw = K.pack_weights(_signs(64, 1, 3, 3, gen=g), groups=64)
    with pytest.raises(NotImplementedError, match="depthwise"):
        K.binary_conv2d(xp, dw, padding=1, groups=64,
                        residual=torch.zeros(1, 64, 5, 5).contiguous(memory_format=torch.channels_last))


def test_prepared_conv_checks_its_layer_once_and_its_input_per_call():
    wp = K.pack_weights(_signs(8, 65, 3, 3, gen=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        K.PreparedConv2d(wp, stride=0)
    with pytest.raises(ValueError, match="pad_value must be -1, 0 or \\+1"):
        K.PreparedConv2d(wp, pad_value=2)
    with pytest.raises(TypeError, match="transform must be an OutputTransform"):
        K.PreparedConv2d(wp, transform="bn")
    with pytest.raises(NotImplementedError, match="groups=2"):
        K.PreparedConv2d(wp, groups=2)
    layer = K.PreparedConv2d(wp, padding=1)
    with pytest.raises(ValueError, match="weights expect 65 input channels, input has 64"):
        layer(K.pack_activations(torch.randn(1, 64, 5, 5)))
    with pytest.raises(ValueError, match="pass in_channels"):
        layer(K.pack_activations(torch.randn(1, 65, 5, 5)).data)
    with pytest.raises(ValueError, match="does not fit"):
        K.PreparedConv2d(wp)(K.pack_activations(torch.randn(1, 65, 2, 2)))


def test_padded_border_windows_follow_the_input_between_calls(kernel, thread_backend):
    """Border windows are copied per thread and kept for the channel blocks of a row: a later call
    on the same buffer with new contents (same address, same geometry) must see the new contents."""
    g = torch.Generator().manual_seed(13)
    wt = _signs(96, 130, 3, 3, gen=g)
    wp = K.pack_weights(wt)
    for pad_value in (-1, 0, 1):
        layer = K.PreparedConv2d(wp, padding=1, pad_value=pad_value, transform=K.OutputTransform(output="bits"))
        buf = K.pack_activations(_signs(1, 130, 7, 9, gen=g))
        for threads in (1, 2, 1, 3):
            K.set_num_threads(threads)
            x = _signs(1, 130, 7, 9, gen=g)
            buf.data.copy_(K.pack_activations(x).data)  # new contents, same address
            ref = K.reference_binary_conv2d(x, wt, padding=1, pad_value=pad_value,
                                            transform=K.OutputTransform(output="bits"))  # fmt: skip
            assert torch.equal(K.unpack_activations(layer(buf)), ref)


# ------------------------------------------------------------------------------------------
# threads and kernel selection
# ------------------------------------------------------------------------------------------


@pytest.fixture(params=["openmp", "own"])
def thread_backend(request):
    """Each multi-threading backend of the engine: torch's OpenMP team, or the engine's own pool."""
    before = _engine.thread_backend().split(":")[0]
    if request.param == "openmp" and sys.platform != "linux":
        pytest.skip("the OpenMP backend is looked up on Linux only")
    _engine.set_thread_backend(request.param)
    yield request.param
    _engine.set_thread_backend(before)


def test_threads_give_identical_results(kernel, thread_backend):
    assert _engine.thread_backend().split(":")[0] == thread_backend
    g = torch.Generator().manual_seed(7)
    x = K.pack_activations(torch.randn(2, 130, 11, 9, generator=g))
    wp = K.pack_weights(torch.randn(97, 130, 3, 3, generator=g))
    tr = K.OutputTransform(torch.rand(97, generator=g), torch.randn(97, generator=g))
    trb = K.OutputTransform(torch.rand(97, generator=g), torch.randn(97, generator=g), output="bits")
    outs = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        assert K.get_num_threads() == n
        outs.append((K.binary_conv2d(x, wp, padding=1, transform=tr),
                     K.binary_conv2d(x, wp, stride=2, padding=1, transform=trb).data))  # fmt: skip
    for a, b in outs[1:]:
        assert torch.equal(a, outs[0][0]) and torch.equal(b, outs[0][1])


@pytest.mark.parametrize("n,cin,cout,hw", [(1, 65, 33, 1), (1, 1100, 70, 3), (3, 200, 97, 5)])
def test_threads_more_than_work_and_odd_splits(kernel, n, cin, cout, hw):
    """More threads than rows x channel blocks, chunked hand-out with a remainder, and layers too
    small to be worth waking a worker all give the reference result."""
    g = torch.Generator().manual_seed(cin)
    x, w = _signs(n, cin, hw, hw + 2, gen=g), _signs(cout, cin, 3, 3, gen=g)
    tr = K.OutputTransform(torch.rand(cout, generator=g), torch.randn(cout, generator=g) * 3, output="bits")
    xp, wp = K.pack_activations(x), K.pack_weights(w)
    ref_f = K.reference_binary_conv2d(x, w, padding=1)
    ref_b = K.reference_binary_conv2d(x, w, stride=(1, 2), padding=1, transform=tr)
    for threads in (1, 2, 3, 7):
        K.set_num_threads(threads)
        assert torch.equal(K.binary_conv2d(xp, wp, padding=1), ref_f)
        got = K.binary_conv2d(xp, wp, stride=(1, 2), padding=1, transform=tr)
        assert torch.equal(K.unpack_activations(got), ref_b)


def test_default_threads_follow_torch():
    K.set_num_threads(None)
    assert K.get_num_threads() == max(1, torch.get_num_threads())
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="set_num_threads"):
            K.set_num_threads(bad)


def test_kernel_selection(monkeypatch):
    avail = K.available_kernels()
    assert avail[0] == "portable"
    monkeypatch.delenv("ONEBIT_KERNEL", raising=False)
    assert K.active_kernel() == avail[-1]
    monkeypatch.setenv("ONEBIT_KERNEL", "portable")
    assert K.active_kernel() == "portable"
    K.set_kernel(avail[-1])  # explicit choice wins over the environment
    assert K.active_kernel() == avail[-1]
    K.set_kernel(None)
    monkeypatch.setenv("ONEBIT_KERNEL", "sse9")
    with pytest.raises(ValueError, match="ONEBIT_KERNEL.*unknown kernel 'sse9'"):
        K.active_kernel()
    x = K.pack_activations(torch.randn(1, 3, 3, 3))
    with pytest.raises(ValueError, match="ONEBIT_KERNEL"):
        K.binary_conv2d(x, K.pack_weights(torch.randn(2, 3, 1, 1)))
    with pytest.raises(ValueError, match="unknown kernel"):
        K.set_kernel("neon")
    missing = [k for k in K.KERNELS if k not in avail]
    for name in missing:
        with pytest.raises(K.KernelUnavailableError, match="not supported by this CPU"):
            K.set_kernel(name)
        monkeypatch.setenv("ONEBIT_KERNEL", name)
        with pytest.raises(K.KernelUnavailableError):
            K.active_kernel()


def test_popcount_peak_positive(kernel):
    assert K.popcount_peak(kernel, iterations=10_000) > 0
    assert K.popcount_peak(kernel, iterations=10_000, threads=2) > 0
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        K.popcount_peak(kernel, threads=0)


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(1, 8, 5, 5)
    p = K.pack_activations(x)
    w = K.pack_weights(torch.randn(4, 8, 3, 3))
    with pytest.raises(TypeError, match="float32"):
        K.pack_activations(x.double())
    with pytest.raises(TypeError, match="torch.Tensor"):
        K.pack_activations(x.numpy())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        K.pack_activations(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="threshold"):
        K.pack_activations(x, torch.randn(7))
    with pytest.raises(ValueError, match="input channels"):
        K.binary_conv2d(p, K.pack_weights(torch.randn(4, 9, 3, 3)))
    with pytest.raises(ValueError, match="in_channels"):
        K.binary_conv2d(p.data, w)
    with pytest.raises(TypeError, match="int64"):
        K.binary_conv2d(p.data.float(), w, in_channels=8)
    with pytest.raises(ValueError, match="words"):
        K.binary_conv2d(p.data, w, in_channels=65)
    with pytest.raises(ValueError, match="4-D"):
        K.binary_conv2d(p.data[0], w, in_channels=8)
    with pytest.raises(ValueError, match="pad_value"):
        K.binary_conv2d(p, w, padding=1, pad_value=2)
    with pytest.raises(ValueError, match="stride"):
        K.binary_conv2d(p, w, stride=0)
    with pytest.raises(ValueError, match="does not fit"):
        K.binary_conv2d(K.pack_activations(torch.randn(1, 8, 2, 2)), w)
    with pytest.raises(ValueError, match="kernel_size"):
        K.binary_conv2d(p, w, kernel_size=5)
    with pytest.raises(NotImplementedError, match="depthwise"):
        K.binary_conv2d(p, w, groups=8)
    with pytest.raises(NotImplementedError, match="dilation"):
        K.binary_conv2d(p, w, dilation=2)
    with pytest.raises(TypeError, match="PackedWeights"):
        K.binary_conv2d(p, torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="linear"):
        K.binary_linear(K.pack_activations(torch.randn(1, 8)), w)
    with pytest.raises(ValueError, match="2-D"):
        K.binary_linear(p, K.pack_weights(torch.randn(4, 8)))
    with pytest.raises(ValueError, match="output"):
        K.OutputTransform(output="int8")
    with pytest.raises(ValueError, match="threshold"):
        K.OutputTransform(threshold=1.0)
    with pytest.raises(ValueError, match=r"scale: expected shape \(4,\)"):
        K.binary_conv2d(p, w, padding=1, transform=K.OutputTransform(scale=torch.ones(5)))
    with pytest.raises(ValueError, match="words"):
        K.PackedActivations(torch.zeros(1, 2, 2, 2, dtype=torch.int64), 3)
    with pytest.raises(TypeError, match="int64"):
        K.PackedActivations(torch.zeros(1, 2, 2, 1), 3)
    with pytest.raises(ValueError, match="only 0 and 1"):
        K.pack_weight_planes([torch.ones(2, 3)], [torch.full((2, 3), 2.0)])
    with pytest.raises(ValueError, match="2 planes but 1 masks"):
        K.pack_weight_planes([torch.ones(2, 3)] * 2, [None])
    with pytest.raises(ValueError, match="expected"):
        K.pack_weight_planes([torch.ones(2, 3), torch.ones(2, 4)])
    with pytest.raises(TypeError, match="floating-point"):
        K.pack_weights(torch.ones(2, 3, dtype=torch.int64))


def test_engine_rejects_inconsistent_layers():
    """The private C++ layer re-checks what it is given (no silent out-of-bounds access)."""
    w = K.pack_weights(torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="bits"):
        _engine.Weights(w.bits, None, w.base, w.wsum, w.scales, 70, 4)
    t = K.OutputTransform().resolved(5)["engine"]
    x = K.pack_activations(torch.randn(1, 8, 4, 4)).data
    out = torch.empty(1, 2, 2, 4)
    with pytest.raises(ValueError, match="transform is for 5 channels"):
        _engine.BoundLayer(w.engine_weights(), t, 1, 1, 0, 0, 0).run(x.data_ptr(), 1, 4, 4, out.data_ptr(), 0, 1)


# ------------------------------------------------------------------------------------------
# integer epilogue: a bits-output layer with one weight plane compares its integer dot product
# with per-channel intervals precomputed from the transform; it must give the bits of the float
# epilogue exactly, ties (y == 0 at an attainable dot product) and fallbacks included
# ------------------------------------------------------------------------------------------


def _draw_adversarial_transform(draw) -> dict:
    """Kinds of plane scale and transform that stress an integer form of the epilogue."""
    return dict(
        scale=draw(st.sampled_from(["randn", "negative", "zero", "tiny", "huge"])),
        tie=draw(st.booleans()),  # bias puts y == 0 exactly on an attainable dot product
        prelu=draw(st.sampled_from([None, "positive", "zero", "mixed-sign"])),
        clamp=draw(st.sampled_from([(None, None), (-3.0, 5.0), (0.5, 2.0), (-2.0, -1.0)])),
        thr=draw(st.sampled_from([None, "randn", "nan"])),
        mu=draw(st.sampled_from([None, "per-channel", "negative"])),
    )


def _adversarial_mu(e: dict, c: int, g: torch.Generator) -> torch.Tensor | None:
    """The plane scale of kind e["mu"] (None: unit scale)."""
    return {None: None, "per-channel": torch.rand(c, generator=g) + 0.1,
            "negative": -(torch.rand(c, generator=g) + 0.1)}[e["mu"]]  # fmt: skip


def _adversarial_transforms(e: dict, c: int, mu: torch.Tensor, d0: torch.Tensor, g: torch.Generator):
    """(bits transform, float transform, threshold) of the kinds in e; with e["tie"], y == 0
    exactly at the dot product d0 of each channel (plane scale mu)."""
    scale = {"randn": torch.randn(c, generator=g), "negative": -torch.rand(c, generator=g),
             "zero": torch.zeros(c), "tiny": torch.full((c,), 1e-30),
             "huge": torch.full((c,), 3e37)}[e["scale"]]  # fmt: skip
    bias = -(mu * d0) * scale if e["tie"] else torch.randn(c, generator=g) * 3
    prelu = {None: None, "positive": torch.rand(c, generator=g), "zero": torch.zeros(c),
             "mixed-sign": torch.randn(c, generator=g)}[e["prelu"]]  # fmt: skip
    thr = {None: None, "randn": torch.randn(c, generator=g), "nan": torch.full((c,), float("nan"))}[e["thr"]]
    cmin, cmax = e["clamp"]
    return (K.OutputTransform(scale, bias, prelu, cmin, cmax, "bits", thr),
            K.OutputTransform(scale, bias, prelu, cmin, cmax, "float"), thr)  # fmt: skip


@st.composite
def epilogue_cases(draw):
    return dict(case=draw(conv_cases()), cout=draw(st.sampled_from([1, 5, 33, 64, 70])),
                **_draw_adversarial_transform(draw))  # fmt: skip


@SETTINGS
@given(e=epilogue_cases())
def test_integer_epilogue_gives_the_float_epilogue_bits(kernel, e):
    c = dict(e["case"], cout=e["cout"])
    g = torch.Generator().manual_seed(c["seed"])
    cout = c["cout"]
    x = _signs(c["n"], c["cin"], c["h"], c["w"], gen=g)
    wt = _signs(cout, c["cin"], c["k"], c["k"], gen=g)
    mu = _adversarial_mu(e, cout, g)
    w = K.pack_weights(wt) if mu is None else K.pack_weight_planes([wt], scales=[mu])
    d0 = torch.randint(-3, 4, (cout,), generator=g).float()
    tb, tf, thr = _adversarial_transforms(e, cout, torch.ones(cout) if mu is None else mu, d0, g)
    kw = dict(stride=c["stride"], padding=c["pad"], pad_value=c["pad_value"])
    xp = K.pack_activations(x)
    bits = K.binary_conv2d(xp, w, transform=tb, **kw)
    y = K.binary_conv2d(xp, w, transform=tf, **kw)
    expected = K.pack_activations(y.contiguous(), thr)
    assert torch.equal(bits.data, expected.data)


def test_thread_backend_defaults_to_torchs_openmp_team():
    """With torch loaded (Linux wheels bring libgomp) the engine shares torch's OpenMP threads
    instead of starting its own, unless ONEBIT_THREADS=own; a backend that cannot be used or an
    unknown name is refused with one clear message."""
    code = (
        "import torch, onebit.deploy.kernels as K, onebit._engine as E\n"
        "x = K.pack_activations(torch.randn(1, 64, 8, 8)); w = K.pack_weights(torch.randn(64, 64, 3, 3))\n"
        "K.set_num_threads(2); K.binary_conv2d(x, w, padding=1)\n"
        "print(E.thread_backend())\n"
    )
    env = dict(os.environ)
    env.pop("ONEBIT_THREADS", None)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    if sys.platform == "linux":
        assert default.stdout.strip().startswith("openmp:") and "gomp" in default.stdout
    env["ONEBIT_THREADS"] = "own"
    own = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert own.stdout.strip() == "own"
    with pytest.raises(ValueError, match="unknown thread backend 'fibers'"):
        _engine.set_thread_backend("fibers")


def _conv_in_child(queue):
    # as DataLoader workers do: torch's own parallel ops cannot run in a fork()ed child of a process
    # that used torch's OpenMP team (libgomp's team does not survive fork; plain torch hangs too)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    x = K.pack_activations(torch.randn(1, 130, 12, 12, generator=g))
    w = K.pack_weights(torch.randn(70, 130, 3, 3, generator=g))
    K.set_num_threads(2)
    queue.put((K.binary_conv2d(x, w, padding=1).contiguous().numpy(), _engine.thread_backend()))  # no fd passing


def test_forked_child_runs_multithreaded_layers():
    """A fork()ed child (a DataLoader worker, a fork-based process pool) of a process that has used
    the engine's threads must not hang and must compute the parent's result with 2 engine threads:
    the engine then uses its own pool, since the parent's libgomp team does not survive fork."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    g = torch.Generator().manual_seed(3)
    x = K.pack_activations(torch.randn(1, 130, 12, 12, generator=g))
    w = K.pack_weights(torch.randn(70, 130, 3, 3, generator=g))
    K.set_num_threads(2)
    parent = K.binary_conv2d(x, w, padding=1).contiguous()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_conv_in_child, args=(queue,))
    child.start()
    try:
        result, backend = queue.get(timeout=30)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert torch.equal(torch.from_numpy(result), parent)
    assert backend == "own"


# ------------------------------------------------------------------------------------------
# depthwise convolution (groups == in_channels == out_channels): one portable kernel for every
# path, bit-identical to the grouped float64 reference with the engine's epilogue order
# ------------------------------------------------------------------------------------------


@st.composite
def depthwise_cases(draw):
    k = draw(st.sampled_from([1, 3, 5]))
    pad = draw(st.integers(0, k // 2 + 1))
    return dict(
        n=draw(st.integers(1, 2)),
        c=draw(st.sampled_from(ODD_CHANNELS)),
        h=draw(st.integers(max(1, k - 2 * pad), 9)),
        w=draw(st.integers(max(1, k - 2 * pad), 9)),
        k=k, pad=pad,
        stride=draw(st.sampled_from([1, 2, 3])),
        pad_value=draw(st.sampled_from([-1, 0, 1])),
        output=draw(st.sampled_from(["float", "bits"])),
        tkind=draw(st.integers(0, 3)),
        threads=draw(st.sampled_from([1, 2])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )  # fmt: skip


def _check_exact(y, ref):
    if isinstance(y, K.PackedActivations):
        assert torch.equal(K.unpack_activations(y), ref)
        tail = y.channels % 64
        if tail:
            assert not bool((y.data[..., -1] >> tail).any()), "tail bits of the output must be zero"
    else:
        assert y.shape == ref.shape
        assert torch.equal(y, ref)


@SETTINGS
@given(case=depthwise_cases())
def test_depthwise_conv_matches_reference(kernel, case):
    c = case
    g = torch.Generator().manual_seed(c["seed"])
    x = _signs(c["n"], c["c"], c["h"], c["w"], gen=g)
    wt = _signs(c["c"], 1, c["k"], c["k"], gen=g)
    tr = _transform(c["tkind"], c["c"], g, c["output"])
    kw = dict(stride=c["stride"], padding=c["pad"], pad_value=c["pad_value"], transform=tr)
    K.set_num_threads(c["threads"])
    wp = K.pack_weights(wt, groups=c["c"])
    # (one channel: groups=1, an ordinary convolution)
    assert isinstance(wp, K.PackedDepthwiseWeights if c["c"] > 1 else K.PackedWeights)
    y = K.binary_conv2d(K.pack_activations(x), wp, groups=c["c"], **kw)
    _check_exact(y, K.reference_binary_conv2d(x, wt, groups=c["c"], **kw))


@SETTINGS
@given(case=depthwise_cases(), planes=st.integers(1, 3), masked=st.booleans(), per_channel=st.booleans())
def test_multibit_depthwise_conv_matches_reference(kernel, case, planes, masked, per_channel):
    c = case
    g = torch.Generator().manual_seed(c["seed"])
    x = _signs(c["n"], c["c"], c["h"], c["w"], gen=g)
    shape = (c["c"], 1, c["k"], c["k"])
    ps = [_signs(*shape, gen=g) for _ in range(planes)]
    ms = [(torch.rand(*shape, generator=g) < 0.6).float() for _ in range(planes)] if masked else None
    if masked and planes > 1:
        ms[0] = None
    sc = [torch.rand(c["c"], generator=g) if per_channel else 0.5**j for j in range(planes)]
    tr = _transform(c["tkind"], c["c"], g, c["output"])
    kw = dict(stride=c["stride"], padding=c["pad"], pad_value=c["pad_value"], transform=tr)
    K.set_num_threads(c["threads"])
    wp = K.pack_weight_planes(ps, ms, sc, groups=c["c"])
    assert wp.num_planes == planes
    y = K.binary_conv2d(K.pack_activations(x), wp, groups=c["c"], **kw)
    _check_exact(y, K.reference_binary_conv2d(x, ps, masks=ms, scales=sc, groups=c["c"], **kw))


@pytest.mark.parametrize("c", ODD_CHANNELS)
@pytest.mark.parametrize("pad_value", [-1, 0, 1])
@pytest.mark.parametrize("k,stride", [(3, 1), (5, 2), (3, 3)])
def test_depthwise_every_channel_count_exact(kernel, c, pad_value, k, stride):
    g = torch.Generator().manual_seed(c * 7 + k)
    x = _signs(2, c, 7, 6, gen=g)
    wt = _signs(c, 1, k, k, gen=g)
    kw = dict(stride=stride, padding=k // 2, pad_value=pad_value)
    y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt, groups=c), c, k, groups=c, **kw)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _check_exact(y, K.reference_binary_conv2d(x, wt, groups=c, **kw))
    tr = K.OutputTransform(torch.randn(c, generator=g), torch.randn(c, generator=g), output="bits",
                           threshold=torch.randn(c, generator=g))  # fmt: skip
    yb = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt, groups=c), groups=c, transform=tr, **kw)
    _check_exact(yb, K.reference_binary_conv2d(x, wt, groups=c, transform=tr, **kw))


@pytest.mark.parametrize("k", [15, 16, 17])  # 225 taps: 8 counter planes; 256, 289: 9 (per-channel read-out)
def test_depthwise_large_kernels_exact(kernel, k):
    g = torch.Generator().manual_seed(k)
    x = _signs(2, 65, k + 2, k + 1, gen=g)
    ps = [_signs(65, 1, k, k, gen=g) for _ in range(2)]
    ms = [(torch.rand(65, 1, k, k, generator=g) < 0.9).float(), None]
    sc = [torch.rand(65, generator=g), 0.5]
    tr = K.OutputTransform(torch.randn(65, generator=g), torch.randn(65, generator=g), output="bits")
    for pad_value in (-1, 0, 1):
        kw = dict(stride=(1, 2), padding=(1, 2), pad_value=pad_value)
        y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(ps[0], groups=65), groups=65, **kw)
        _check_exact(y, K.reference_binary_conv2d(x, ps[0], groups=65, **kw))
        wp = K.pack_weight_planes(ps, ms, sc, groups=65)
        yb = K.binary_conv2d(K.pack_activations(x), wp, groups=65, transform=tr, **kw)
        _check_exact(yb, K.reference_binary_conv2d(x, ps, masks=ms, scales=sc, groups=65, transform=tr, **kw))


def test_depthwise_threads_give_identical_results(kernel, thread_backend):
    g = torch.Generator().manual_seed(11)
    x = K.pack_activations(torch.randn(2, 130, 16, 15, generator=g))
    wt = torch.randn(130, 1, 3, 3, generator=g)
    wp = K.pack_weights(wt, groups=130)
    tr = K.OutputTransform(torch.rand(130, generator=g), torch.randn(130, generator=g), prelu=0.25)
    trb = K.OutputTransform(torch.rand(130, generator=g), torch.randn(130, generator=g), output="bits")
    outs = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        outs.append((K.binary_conv2d(x, wp, padding=1, pad_value=-1, transform=tr, groups=130),
                     K.binary_conv2d(x, wp, stride=2, padding=1, transform=trb, groups=130).data))  # fmt: skip
    for a, b in outs[1:]:
        assert torch.equal(a, outs[0][0]) and torch.equal(b, outs[0][1])
    assert torch.equal(outs[0][0], K.reference_binary_conv2d(x, wt, padding=1, pad_value=-1, transform=tr,
                                                             groups=130))  # fmt: skip


def test_depthwise_chains_bits_with_regular_convs(kernel):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 70, 9, 9, generator=g)
    w0, wd, w2 = _signs(65, 70, 1, 1, gen=g), _signs(65, 1, 3, 3, gen=g), _signs(20, 65, 1, 1, gen=g)
    t0 = K.OutputTransform(torch.rand(65, generator=g), torch.randn(65, generator=g) * 3, output="bits")
    td = K.OutputTransform(torch.rand(65, generator=g), torch.randn(65, generator=g), output="bits",
                           threshold=torch.randn(65, generator=g))  # fmt: skip
    h0 = K.binary_conv2d(K.pack_activations(x), K.pack_weights(w0), transform=t0)
    h1 = K.binary_conv2d(h0, K.pack_weights(wd, groups=65), stride=2, padding=1, pad_value=1, transform=td,
                         groups=65)  # fmt: skip
    assert isinstance(h1, K.PackedActivations) and h1.data.shape == (2, 5, 5, 2)
    y = K.binary_conv2d(h1, K.pack_weights(w2))
    r0 = K.reference_binary_conv2d(x, w0, transform=t0)
    r1 = K.reference_binary_conv2d(r0, wd, stride=2, padding=1, pad_value=1, transform=td, groups=65)
    assert torch.equal(K.unpack_activations(h1), r1)
    assert torch.equal(y, K.reference_binary_conv2d(r1, w2))


@st.composite
def depthwise_epilogue_cases(draw):
    k = draw(st.sampled_from([1, 3, 3, 5]))
    pad = draw(st.integers(0, k // 2 + 1))
    c = draw(st.sampled_from([3, 63, 64, 65, 130]))
    return dict(
        n=draw(st.integers(1, 2)), c=c, k=k, pad=pad,
        h=draw(st.integers(max(1, k - 2 * pad), 9)),
        w=draw(st.integers(max(1, k - 2 * pad), 40)),  # rows of 8+ interior pixels: the 8-pixel kernel
        stride=draw(st.sampled_from([1, 2])),
        pad_value=draw(st.sampled_from([-1, 0, 1])),
        masked=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
        **_draw_adversarial_transform(draw),
    )  # fmt: skip


@SETTINGS
@given(e=depthwise_epilogue_cases())
def test_depthwise_bit_sliced_bounds_give_the_float_epilogue_bits(kernel, e):
    """One-plane depthwise layers with bits output compare the bit-sliced mismatch counters with
    per-channel bounds precomputed from the transform (per count of valid taps), and read the
    rest out of per-channel tables: the bits must be those of the float epilogue and of the
    reference exactly, with ties at y == 0, zero / negative / huge scales, PReLU slopes of every
    sign, clamps, NaN thresholds and masks."""
    g = torch.Generator().manual_seed(e["seed"])
    c = e["c"]
    x = _signs(e["n"], c, e["h"], e["w"], gen=g)
    wt = _signs(c, 1, e["k"], e["k"], gen=g)
    mask = (torch.rand(c, 1, e["k"], e["k"], generator=g) < 0.7).float() if e["masked"] else None
    mu = _adversarial_mu(e, c, g)
    mu = torch.ones(c) if mu is None else mu
    wp = K.pack_weight_planes([wt], None if mask is None else [mask], [mu], groups=c)
    assert isinstance(wp, K.PackedDepthwiseWeights) and wp.num_planes == 1
    taps = e["k"] ** 2
    d0 = torch.randint(-taps, taps + 1, (c,), generator=g).float()
    tb, tf, thr = _adversarial_transforms(e, c, mu, d0, g)
    kw = dict(stride=e["stride"], padding=e["pad"], pad_value=e["pad_value"], groups=c)
    xp = K.pack_activations(x)
    bits = K.binary_conv2d(xp, wp, transform=tb, **kw)
    y = K.binary_conv2d(xp, wp, transform=tf, **kw)
    masks = None if mask is None else [mask]
    ref_y = K.reference_binary_conv2d(x, [wt], masks=masks, scales=[mu], transform=tf, **kw)
    assert torch.equal(y.isnan(), ref_y.isnan())  # (huge scale x PReLU 0: inf * 0)
    assert torch.equal(torch.where(y.isnan(), 0.0, y), torch.where(ref_y.isnan(), 0.0, ref_y))
    assert torch.equal(bits.data, K.pack_activations(y.contiguous(), thr).data)
    _check_exact(bits, K.reference_binary_conv2d(x, [wt], masks=masks, scales=[mu], transform=tb, **kw))


@pytest.mark.parametrize("c", [3, 64, 65, 130])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_depthwise_wide_rows_exact(kernel, c, stride, masked):
    """Rows with 8+ interior pixels (the eight-pixel 3x3 kernel, adjacent or strided input words)
    and their remainders and borders, for float and bits output, every padding value."""
    g = torch.Generator().manual_seed(c + 10 * stride + masked)
    x = _signs(1, c, 5, 41, gen=g)
    wt = _signs(c, 1, 3, 3, gen=g)
    ms = [(torch.rand(c, 1, 3, 3, generator=g) < 0.7).float()] if masked else None
    sc = [torch.rand(c, generator=g) + 0.1]
    wp = K.pack_weight_planes([wt], ms, sc, groups=c)
    bias = torch.randn(c, generator=g)
    for tr in (K.OutputTransform(torch.randn(c, generator=g), bias, prelu=0.1, clamp_min=-1.5),
               K.OutputTransform(torch.randn(c, generator=g), bias, output="bits"),
               K.OutputTransform(torch.randn(c, generator=g), bias, prelu=-0.5, output="bits")):  # fmt: skip
        for pad_value in (-1, 0, 1):
            kw = dict(stride=stride, padding=1, pad_value=pad_value, transform=tr, groups=c)
            y = K.binary_conv2d(K.pack_activations(x), wp, **kw)
            _check_exact(y, K.reference_binary_conv2d(x, [wt], masks=ms, scales=sc, **kw))


def test_depthwise_transform_shared_by_layers(kernel):
    """The per-channel tables and bounds a transform caches belong to one set of weights: a
    transform shared by several depthwise layers (and alternated between them) gives each its own
    results."""
    g = torch.Generator().manual_seed(5)
    x = _signs(1, 65, 8, 8, gen=g)
    ws = [_signs(65, 1, 3, 3, gen=g) for _ in range(3)]
    for output in ("bits", "float"):
        tr = K.OutputTransform(torch.randn(65, generator=g), torch.randn(65, generator=g), output=output)
        for _ in range(2):
            for wt in ws:
                y = K.binary_conv2d(K.pack_activations(x), K.pack_weights(wt, groups=65), padding=1, transform=tr,
                                    groups=65)  # fmt: skip
                _check_exact(y, K.reference_binary_conv2d(x, wt, padding=1, transform=tr, groups=65))


def test_depthwise_bad_inputs_raise_clear_errors():
    p = K.pack_activations(torch.randn(1, 8, 5, 5))
    wd = K.pack_weights(torch.randn(8, 1, 3, 3), groups=8)
    with pytest.raises(ValueError, match="need groups=8"):
        K.binary_conv2d(p, wd)
    with pytest.raises(ValueError, match="input channels"):
        K.binary_conv2d(K.pack_activations(torch.randn(1, 9, 5, 5)), wd, groups=8)
    with pytest.raises(NotImplementedError, match="groups=2"):
        K.pack_weights(torch.randn(8, 4, 3, 3), groups=2)
    with pytest.raises(NotImplementedError, match="depthwise"):
        K.pack_weight_planes([torch.randn(16, 1, 3, 3)], groups=8)  # channel multiplier 2
    with pytest.raises(NotImplementedError, match="groups=8"):
        K.binary_conv2d(p, K.pack_weights(torch.randn(8, 1, 3, 3)), groups=8)
    with pytest.raises(ValueError, match="groups must be"):
        K.pack_weights(torch.randn(8, 1, 3, 3), groups=0)
    with pytest.raises(TypeError, match="depthwise"):
        K.binary_linear(K.pack_activations(torch.randn(1, 8)), wd)
    with pytest.raises(ValueError, match=r"scale: expected shape \(8,\)"):
        K.binary_conv2d(p, wd, groups=8, transform=K.OutputTransform(scale=torch.ones(5)))
    with pytest.raises(ValueError, match="kernel_size"):
        K.binary_conv2d(p, wd, kernel_size=5, groups=8)


def test_engine_rejects_inconsistent_depthwise_layers():
    wd = K.pack_weights(torch.randn(8, 1, 3, 3), groups=8)
    with pytest.raises(ValueError, match="bits"):
        _engine.DepthwiseWeights(wd.bits, None, wd.scales, 70, 3, 3)
    with pytest.raises(ValueError, match="bits"):
        _engine.DepthwiseWeights(wd.bits, None, wd.scales, 8, 3, 2)
    with pytest.raises(ValueError, match="masks"):
        _engine.DepthwiseWeights(wd.bits, wd.bits[:, :4], wd.scales, 8, 3, 3)
    with pytest.raises(ValueError, match="scales"):
        _engine.DepthwiseWeights(wd.bits, None, wd.scales[:, :4], 8, 3, 3)
    t = K.OutputTransform().resolved(5)["engine"]
    x = K.pack_activations(torch.randn(1, 8, 4, 4)).data
    out = torch.empty(1, 2, 2, 8)
    with pytest.raises(ValueError, match="transform is for 5 channels"):
        _engine.BoundLayer(wd.engine_weights(), t, 1, 1, 0, 0, 0).run(x.data_ptr(), 1, 4, 4, out.data_ptr(), 0, 1)
    t8 = K.OutputTransform().resolved(8)["engine"]
    with pytest.raises(ValueError, match="does not fit"):
        _engine.BoundLayer(wd.engine_weights(), t8, 1, 1, 0, 0, 0).run(x.data_ptr(), 1, 2, 2, out.data_ptr(), 0, 1)
