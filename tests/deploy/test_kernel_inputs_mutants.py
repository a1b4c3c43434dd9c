"""The packed engine's Python front (``onebit.deploy.kernels``) refuses each malformed argument with its
own message and accepts the edge cases that are valid (issue 21: a dropped or loosened check in these
validations — ``min(w.shape) < 0`` for ``< 1``, a bool taken for an int — survived a seed-3001
single-file mutation sample; test_kernels.py covers the others)."""

from __future__ import annotations

import pytest
import torch

from onebit.deploy import kernels as K


@pytest.mark.parametrize("shape", [(0, 3, 3, 3), (4, 0, 3, 3), (4, 3, 0, 3), (4, 3, 3, 0), (4, 0), (0, 4),
                                   (4, 3, 3), (2, 4, 3, 3, 1), (4,)])
def test_weights_of_no_elements_or_the_wrong_rank_are_refused(shape):
    with pytest.raises(ValueError, match=r"expected \(Cout, Cin, kh, kw\) or \(Cout, Cin\), got shape"):
        K.pack_weights(torch.ones(shape))
    with pytest.raises(ValueError, match=r"planes\[0\]: expected \(Cout, Cin, kh, kw\)"):
        K.pack_weight_planes([torch.ones(shape)])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 1), (1, 2, 1, 3)])
def test_the_smallest_weights_pack(shape):
    """Sizes of 1 on any axis are valid (1x1 kernels, one channel)."""
    w = torch.ones(shape)
    packed = K.pack_weights(w)
    assert packed.out_channels == shape[0] and packed.in_channels == shape[1]
    assert packed.kernel_size == (tuple(shape[2:]) or (1, 1))


@pytest.mark.parametrize("groups", [0, -2, True, 1.0, "1"])
def test_groups_must_be_a_positive_int(groups):
    with pytest.raises(ValueError, match="groups must be an int >= 1"):
        K.pack_weight_planes([torch.ones(4, 1, 3, 3)], groups=groups)


def test_plane_lists_are_checked():
    w = torch.ones(4, 3, 3, 3)
    for planes in ([], w):
        with pytest.raises(ValueError, match="planes must be a non-empty sequence of tensors"):
            K.pack_weight_planes(planes)
    with pytest.raises(ValueError, match="2 planes but 1 scales"):
        K.pack_weight_planes([w, w], scales=[1.0])
    with pytest.raises(TypeError, match=r"masks\[1\] must be a tensor or None"):
        K.pack_weight_planes([w, w], masks=[None, [[1]]])
    with pytest.raises(ValueError, match=r"masks\[0\] has shape \(4, 3, 3\), expected \(4, 3, 3, 3\)"):
        K.pack_weight_planes([w], masks=[torch.ones(4, 3, 3)])
    with pytest.raises(ValueError, match=r"scales\[1\] must be a number or shape \(4,\)"):
        K.pack_weight_planes([w, w], scales=[1.0, torch.ones(3)])
    with pytest.raises(ValueError, match=r"scales\[0\] must be a number or shape \(5,\)"):
        K.pack_weight_planes([torch.ones(5, 1, 3, 3)], scales=[torch.ones(4)], groups=5)
    with pytest.raises(NotImplementedError, match="groups=2 with weights"):
        K.pack_weight_planes([torch.ones(4, 2, 3, 3)], groups=2)


def test_a_linear_mask_of_two_dims_equals_its_four_dim_form():
    w = torch.randn(5, 70, generator=torch.Generator().manual_seed(0))
    m = (torch.rand(5, 70, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    a = K.pack_weight_planes([w], masks=[m])
    b = K.pack_weight_planes([w[:, :, None, None]], masks=[m[:, :, None, None]])
    assert torch.equal(a.masks, b.masks) and torch.equal(a.base, b.base) and torch.equal(a.wsum, b.wsum)
    assert a.base.tolist() == [m.sum(1).int().tolist()]


@pytest.mark.parametrize("value,error,match", [
    (True, TypeError, "scale: expected None, a number or a tensor, got bool"),
    ("1", TypeError, "scale: expected None, a number or a tensor, got str"),
    (torch.ones(4, dtype=torch.int32), TypeError, "scale: expected a floating-point tensor, got torch.int32"),
    (torch.ones(4, 1), ValueError, r"scale: expected shape \(4,\), got \(4, 1\)"),
    (torch.ones(3), ValueError, r"scale: expected shape \(4,\), got \(3,\)"),
])
def test_transform_vectors_are_checked(value, error, match):
    with pytest.raises(error, match=match):
        K.OutputTransform(scale=value).resolved(4)


def test_transform_vectors_broadcast_numbers_and_one_element_tensors():
    r = K.OutputTransform(scale=2, bias=torch.tensor([0.5]), prelu=torch.tensor(0.25)).resolved(3)
    assert r["scale"].tolist() == [2.0] * 3 and r["bias"].tolist() == [0.5] * 3 and r["prelu"].tolist() == [0.25] * 3
    assert r["threshold"] is None and r["clamp_min"] == float("-inf") and r["clamp_max"] == float("inf")
    bits = K.OutputTransform(output="bits", threshold=-1.5, clamp_min=0, clamp_max=1).resolved(2)
    assert bits["threshold"].tolist() == [-1.5, -1.5] and (bits["clamp_min"], bits["clamp_max"]) == (0.0, 1.0)


@pytest.mark.parametrize("name", ["clamp_min", "clamp_max"])
@pytest.mark.parametrize("value", [float("nan"), "0", torch.tensor(0.0)])
def test_clamp_bounds_must_be_numbers(name, value):
    with pytest.raises(ValueError, match=f"OutputTransform.{name} must be a number"):
        K.OutputTransform(**{name: value})


@pytest.mark.parametrize("n", [0, -1, True, 2.0, "2"])
def test_thread_counts_must_be_positive_ints(n):
    before = K.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads: expected an int >= 1 or None"):
        K.set_num_threads(n)
    assert K.get_num_threads() == before
    if n is not True:  # (popcount_peak takes a bool as 1 thread)
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            K.popcount_peak(iterations=10, threads=n)


def test_one_thread_is_valid():
    try:
        K.set_num_threads(1)
        assert K.get_num_threads() == 1
    finally:
        K.set_num_threads(None)
    assert K.get_num_threads() == max(1, torch.get_num_threads())


@pytest.mark.parametrize("data,channels,error,match", [
    ([[1]], 3, TypeError, "must be a torch.Tensor, got list"),
    (torch.zeros(1, 1, 1, dtype=torch.int64), 3, ValueError, r"must be 2-D or 4-D, got shape \(1, 1, 1\)"),
    (torch.zeros(1, 1, dtype=torch.int64), 0, ValueError, "channels must be an int >= 1, got 0"),
    (torch.zeros(1, 1, dtype=torch.int64), 2.0, ValueError, "channels must be an int >= 1, got 2.0"),
    (torch.zeros(1, 2, dtype=torch.int64), 64, ValueError, "64 channels need 1 words, data has 2"),
    (torch.zeros(1, 1, dtype=torch.int64), 65, ValueError, "65 channels need 2 words, data has 1"),
])
def test_packed_activations_are_checked(data, channels, error, match):
    with pytest.raises(error, match=match):
        K.PackedActivations(data, channels)


def test_packed_activations_at_their_limits():
    """1 and 64 channels in one word, 65 in two; uint64 data; the logical shape of each layout."""
    assert K.PackedActivations(torch.zeros(2, 1, dtype=torch.int64), 1).shape == (2, 1)
    assert K.PackedActivations(torch.zeros(2, 3, 4, 1, dtype=torch.uint64), 64).shape == (2, 64, 3, 4)
    assert K.PackedActivations(torch.zeros(1, 2, dtype=torch.int64), 65).shape == (1, 65)
    with pytest.raises(TypeError, match="unpack_activations: expected PackedActivations, got Tensor"):
        K.unpack_activations(torch.zeros(1, 1, dtype=torch.int64))


def test_activations_without_channels_or_samples():
    with pytest.raises(ValueError, match="need at least one channel"):
        K.pack_activations(torch.zeros(2, 0, 3, 3))
    empty = K.pack_activations(torch.zeros(0, 70, 3, 2))
    assert empty.data.shape == (0, 3, 2, 2) and empty.shape == (0, 70, 3, 2)
    rows = K.pack_activations(torch.zeros(0, 70))
    assert rows.data.shape == (0, 2)


@pytest.mark.parametrize("stride", [(1,), (1, 2, 3), (1, True), True, 1.0, "1"])
def test_geometry_arguments_are_an_int_or_a_pair_of_ints(stride):
    p = K.pack_activations(torch.randn(1, 8, 5, 5))
    w = K.pack_weights(torch.randn(4, 8, 3, 3))
    with pytest.raises(TypeError, match="expected an int or a pair of ints"):
        K.binary_conv2d(p, w, stride=stride)


def test_defaults_are_zero_padding_stride_one_and_no_groups():
    """binary_conv2d, PreparedConv2d and the reference oracle all default to pad_value 0, stride 1 and
    groups 1; the explicit arguments give the same result (padding 1: the pad value shows at the border)."""
    x = torch.randn(2, 70, 5, 4, generator=torch.Generator().manual_seed(0))
    w_signs = torch.randn(6, 70, 3, 3, generator=torch.Generator().manual_seed(1)).sign()
    p, w = K.pack_activations(x), K.pack_weights(w_signs)
    want = K.reference_binary_conv2d(x, w_signs, 1, 1, 0, None, groups=1)
    assert torch.equal(K.reference_binary_conv2d(x, w_signs, padding=1), want)
    assert not torch.equal(K.reference_binary_conv2d(x, w_signs, padding=1, pad_value=1), want)
    assert torch.equal(K.binary_conv2d(p, w, padding=1), want)
    assert torch.equal(K.PreparedConv2d(w, padding=1)(p), want)
    assert torch.equal(K.PreparedConv2d(w, stride=1, padding=1, pad_value=0, groups=1)(p), want)


def test_a_transform_shows_its_fields_not_its_cache():
    """OutputTransform's repr shows the fields a caller set, before and after its first use; the cache of
    resolved vectors that use fills is not an argument of the constructor."""
    t = K.OutputTransform(scale=2.0, clamp_min=-1.0)
    before = repr(t)
    t.resolved(3)
    assert repr(t) == before == ("OutputTransform(scale=2.0, bias=None, prelu=None, clamp_min=-1.0, clamp_max=None, "
                                 "output='float', threshold=None)")
    with pytest.raises(TypeError):
        K.OutputTransform(None, None, None, None, None, "float", None, {})
