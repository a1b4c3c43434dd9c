"""HBNN: residual binarization by hand, middle-out bit selection toward the target mix, bit planes and
the inference form, the STE, per-sample activations and option validation."""

import copy
import io

import pytest
import torch
from torch import nn

import onebit
from onebit.methods.functional import sign
from onebit.methods.hbnn import average_bits, bit_planes, model_average_bits, residual_binarize, stop_counts
from onebit.nn import BinaryConv2d, BinaryLinear


def linear_with(weight, **options):
    layer = BinaryLinear(weight.shape[1], weight.shape[0], bias=False, method="hbnn", **options)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def big_layer(**options):
    torch.manual_seed(0)
    return linear_with(torch.randn(100, 100) * 0.1, **options)  # 10 000 weights


def test_residual_binarization_by_hand():
    x = torch.tensor([[3.0, -1.0, 0.5, -0.1]])
    r = residual_binarize(x, (1, 2), (0.5, 0.5))
    # bit 1: μ1 = mean|x| = 1.15 over all four; |x| closest to 1.15: -1.0 (0.15) and 0.5 (0.65) stop
    # bit 2: residuals 3 - 1.15 = 1.85 and -0.1 + 1.15 = 1.05, μ2 = 1.45
    assert r.scales[0].item() == pytest.approx(1.15) and r.scales[1].item() == pytest.approx(1.45)
    assert r.bitmap.tolist() == [[2, 1, 1, 2]]
    assert r.approx[0].tolist() == pytest.approx([2.6, -1.15, 1.15, -1.15 + 1.45])
    assert r.planes[1][0, [0, 3]].tolist() == [1.0, 1.0]
    assert r.masks[1].tolist() == [[True, False, False, True]]


def test_stop_counts_round_cumulatively():
    assert stop_counts(10, (1, 2, 3), (0.6, 0.4, 0.0)) == [6, 4]  # unused top level dropped
    assert stop_counts(7, (1, 2, 3), (1 / 3, 1 / 3, 1 / 3)) == [2, 3, 2]
    assert stop_counts(5, (1, 3), (0.4, 0.6)) == [2, 0, 3]  # nobody stops at 2 bits
    assert sum(stop_counts(9999, (1, 2, 3), (0.55, 0.3, 0.15))) == 9999


@pytest.mark.parametrize("options,target", [
    ({"average_bits": 1.0}, 1.0), ({"average_bits": 1.4}, 1.4), ({"average_bits": 2.0}, 2.0),
    ({"average_bits": 2.7}, 2.7), ({"mix": (0.5, 0.3, 0.2)}, 1.7), ({}, 1.4),
])
def test_realized_average_bits_on_a_10k_tensor(options, target):
    layer = big_layer(**options)
    assert layer.method.target_average == pytest.approx(target)
    assert abs(average_bits(layer) - target) < 0.05
    assert abs(average_bits(layer) - target) < 1e-3  # cumulative rounding: within 1/n in fact


def test_one_bit_case_is_xnor_style_mean_abs_sign():
    layer = big_layer(bits=(1,), mix=(1.0,))
    w = layer.weight.detach()
    wq = layer.method.quantize_weight(layer, layer.weight).detach()
    assert torch.allclose(wq, w.abs().mean() * sign(w), rtol=1e-6, atol=0)
    assert average_bits(layer) == 1.0 and len(bit_planes(layer)) == 1


def test_more_bits_give_strictly_smaller_error():
    errors = {}
    for bits in (1.0, 1.2, 1.4, 2.0, 2.5, 3.0):
        layer = big_layer(average_bits=bits)
        wq = layer.method.quantize_weight(layer, layer.weight).detach()
        errors[bits] = (wq - layer.weight.detach()).norm().item()
    assert all(errors[b] < errors[1.0] for b in errors if b > 1.0)
    assert errors[1.0] > errors[1.2] > errors[1.4]  # more 2-bit weights, less error
    assert errors[1.0] > errors[2.0] > errors[3.0]  # homogeneous 1, 2, 3 bits
    assert errors[2.0] < 0.7 * errors[1.0]
    # Not monotone in the average across mixes: middle-out 1.4 bits (μ2 fitted to the 40 % of weights
    # far from μ1) reconstructs a Gaussian tensor better than homogeneous 2 bits (one μ2 for all).
    assert errors[1.4] < errors[2.0]


def test_middle_out_beats_a_random_bit_map_at_the_same_mix():
    layer = big_layer(average_bits=1.4)
    w = layer.weight.detach().reshape(1, -1)
    mo = (residual_binarize(w, (1, 2), (0.6, 0.4)).approx - w).norm()
    # same 60/40 mix, bit map drawn at random: masked residual binarization as BinOps' multibit op
    torch.manual_seed(3)
    two_bit = torch.randperm(w.numel())[: 4000]
    approx = w.abs().mean() * sign(w)
    residual = w - approx
    extra = residual[0, two_bit]
    approx[0, two_bit] += extra.abs().mean() * sign(extra)
    assert mo < (approx - w).norm()


def test_bit_planes_masks_and_inference_form():
    layer = big_layer(mix=(0.5, 0.3, 0.2))
    planes = bit_planes(layer)
    wq = layer.method.quantize_weight(layer, layer.weight).detach()
    total = sum(scale * mask * plane for plane, scale, mask in planes)
    assert torch.allclose(total, wq, atol=1e-7)
    assert len(planes) == 3 and all(((p == 1) | (p == -1)).all() for p, _, _ in planes)
    assert planes[0][2].all() and planes[1][2].sum() == 5000 and planes[2][2].sum() == 2000
    assert (planes[2][2] <= planes[1][2]).all()  # the masks are nested
    assert all(s.dim() == 0 and s > 0 for _, s, _ in planes)
    form = layer.inference_form()
    assert len(form.weight_planes) == 3 and form.plane_masks[0] is None
    assert all(s.shape == (100,) for s in form.plane_scales)
    assert torch.allclose(form.effective_weight(), wq, atol=1e-7)
    assert form.input_bits is None and form.binary_input is True


def test_ste_gradient_and_binary_activations():
    layer = linear_with(torch.tensor([[0.5, -2.0, 0.1, 1.5]]), bits=(1, 2), mix=(0.5, 0.5))
    x = torch.tensor([[0.3, -0.7, 1.5, 0.2]], requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert layer.weight.grad[0].tolist() == [1.0, 0.0, 1.0, 0.0]  # sign(x)·1{|W| <= 1}
    wq = layer.method.quantize_weight(layer, layer.weight).detach()[0]
    assert x.grad[0].tolist() == pytest.approx((wq * torch.tensor([1.0, 1.0, 0.0, 1.0])).tolist())
    assert y.item() == pytest.approx((sign(x.detach())[0] * wq).sum().item())


def test_heterogeneous_activations_are_per_sample():
    torch.manual_seed(0)
    layer = BinaryConv2d(3, 4, 3, padding=1, method="hbnn", activations="hetero", average_bits=2.0)
    x = torch.randn(2, 3, 5, 5)
    xq = layer.method.quantize_input(layer, x)
    alone = residual_binarize(x[1].reshape(1, -1), (1, 2, 3), (0.0, 1.0, 0.0)).approx.reshape(x[1].shape)
    assert torch.allclose(xq[1], alone)
    x2 = x.clone()
    x2[0] *= 10  # another sample in the batch does not change this one
    assert torch.equal(layer(x2)[1], layer(x)[1])
    assert len(torch.unique(xq[1].abs())) == 2  # two bits each: |μ1 ± μ2|
    form = layer.inference_form()
    assert form.binary_input is False and form.input_bits == (1, 2, 3) and form.input_mix == (0.0, 1.0, 0.0)


def test_model_average_bits_weighted_by_element_count():
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 30), nn.Linear(30, 5), nn.Linear(5, 2))
    onebit.binarize(model, "hbnn", average_bits=2.0)
    model[2].method = onebit.methods.get("hbnn", average_bits=1.0)
    expected = (average_bits(model[1]) * 600 + average_bits(model[2]) * 150) / 750
    assert model_average_bits(model) == pytest.approx(expected)
    assert expected == pytest.approx((2.0 * 600 + 1.0 * 150) / 750)
    with pytest.raises(ValueError, match="no hbnn layers"):
        model_average_bits(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="not an hbnn layer"):
        average_bits(BinaryLinear(2, 2, method="bnn"))


@pytest.mark.parametrize("options,message", [
    ({"mix": (0.5, 0.6, 0.0)}, r"mix=\(0.5, 0.6, 0.0\) is summing to 1.1, not 1"),
    ({"mix": (1.2, -0.2, 0.0)}, "negative somewhere"),
    ({"mix": (0.5, 0.5)}, r"has 2 fractions but bits=\(1, 2, 3\) has 3"),
    ({"average_bits": 3.5}, r"needs bitwidths 3 and 4 in bits=\(1, 2, 3\)"),
    ({"average_bits": 0.5}, r"average_bits=0.5 is not a number in \[1, 8\]"),
    ({"mix": (0.6, 0.4, 0.0), "average_bits": 2.0}, "averages 1.4 bits but average_bits=2; give only one"),
    ({"bits": (2, 1)}, "not strictly increasing"),
    ({"bits": (1, 9)}, r"not a tuple of integers in \[1, 8\]"),
    ({"activations": "ternary"}, "activations='ternary' is not allowed"),
])
def test_option_errors(options, message):
    with pytest.raises(ValueError, match=message):
        onebit.methods.get("hbnn", **options)


def test_consistent_mix_and_average_are_accepted():
    m = onebit.methods.get("hbnn", mix=(0.6, 0.4, 0.0), average_bits=1.4)
    assert m.target_mix == (0.6, 0.4, 0.0)
    assert onebit.methods.get("hbnn").with_options(average_bits=2.5).target_mix == (0.0, 0.5, 0.5)


# --------------------------------------------------------------------------------------------------
# Bit selection: Algorithm 1 ("paper") and the residual variant; the order-statistic selection
# --------------------------------------------------------------------------------------------------
def reference_bitmap(x, counts, selection):
    """The straightforward implementation: at each level a full stable argsort of the middle-out
    distances over the eligible elements, the first ``count`` stop (the rule of Fromm et al.'s
    Algorithm 1 for "paper"; over the level's residuals for "residual")."""
    x = x.detach()
    magnitude, residual = x.abs(), x.clone()
    remaining = torch.ones_like(x, dtype=torch.bool)
    bitmap = torch.zeros_like(x, dtype=torch.int64)
    for level, count in enumerate(counts, start=1):
        values = magnitude if selection == "paper" else residual.abs()
        kept = torch.where(remaining, values, torch.zeros_like(values))
        center = kept.sum(dim=1, keepdim=True) / remaining.sum(dim=1, keepdim=True).clamp(min=1)
        if count:
            distance = (values - center).abs().masked_fill(~remaining, float("inf"))
            chosen = distance.argsort(dim=1, stable=True)[:, :count]
            stop = torch.zeros_like(remaining).scatter_(1, chosen, True)
            bitmap[stop] = level
        else:
            stop = torch.zeros_like(remaining)
        if selection == "residual":
            residual = residual - torch.where(remaining, center * sign(residual), torch.zeros_like(residual))
        remaining = remaining & ~stop
    return bitmap


def test_paper_and_residual_maps_differ_at_level_two_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 12.0]])
    mix = (1 / 3, 1 / 3, 1 / 3)  # two elements per bitwidth
    # level 1 (both rules): mean|x| = 4.5, distances 3.5 2.5 1.5 0.5 0.5 7.5 -> 4 and 5 stop at 1 bit.
    # paper, level 2: mean of the remaining |x| (1, 2, 3, 12) = 4.5, distances 3.5 2.5 1.5 7.5 -> 3, 2.
    # residual, level 2: residuals -3.5 -2.5 -1.5 7.5, μ2 = 3.75, distances .25 1.25 2.25 3.75 -> 1, 2.
    paper = residual_binarize(x, (1, 2, 3), mix, "paper")
    residual = residual_binarize(x, (1, 2, 3), mix, "residual")
    assert paper.bitmap.tolist() == [[3, 2, 2, 1, 1, 3]]
    assert residual.bitmap.tolist() == [[2, 2, 3, 1, 1, 3]]
    # both share μ1 = 4.5 and μ2 = 3.75 (the same four elements reach level 2); level 3 differs:
    # paper: residuals .25 (of 1) and 3.75 (of 12), μ3 = 2; residual rule: 2.25 (of 3) and 3.75, μ3 = 3
    assert paper.approx[0].tolist() == pytest.approx([2.75, 0.75, 0.75, 4.5, 4.5, 10.25])
    assert residual.approx[0].tolist() == pytest.approx([0.75, 0.75, 3.75, 4.5, 4.5, 11.25])
    assert [s.item() for s in paper.scales] == pytest.approx([4.5, 3.75, 2.0])
    assert [s.item() for s in residual.scales] == pytest.approx([4.5, 3.75, 3.0])


def test_the_method_option_picks_the_rule():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 12.0]])
    for selection, expected in (("paper", [3, 2, 2, 1, 1, 3]), ("residual", [2, 2, 3, 1, 1, 3])):
        layer = linear_with(x, mix=(1 / 3, 1 / 3, 1 / 3), selection=selection)
        assert bit_planes(layer)[2][2][0].int().tolist() == [int(b == 3) for b in expected]
    assert onebit.methods.get("hbnn").selection == "paper"
    with pytest.raises(ValueError, match="selection='sorted' is not allowed"):
        onebit.methods.get("hbnn", selection="sorted")


def test_rules_agree_at_level_one_and_differ_on_gaussian_three_bit_maps():
    torch.manual_seed(5)
    w = torch.randn(1, 20000)
    for mix in ((0.7, 0.2, 0.1), (0.5, 0.3, 0.2)):
        paper = residual_binarize(w, (1, 2, 3), mix, "paper").bitmap
        residual = residual_binarize(w, (1, 2, 3), mix, "residual").bitmap
        assert torch.equal(paper == 1, residual == 1)
        assert 0.08 < (paper != residual).double().mean().item() < 0.3
    two_bits = (0.6, 0.4, 0.0)  # two bitwidths: level 2 takes everyone left, the maps are equal
    assert torch.equal(residual_binarize(w, (1, 2, 3), two_bits, "paper").bitmap,
                       residual_binarize(w, (1, 2, 3), two_bits, "residual").bitmap)


@pytest.mark.parametrize("selection", ["paper", "residual"])
@pytest.mark.parametrize("mix", [(0.7, 0.2, 0.1), (0.8, 0.0, 0.2), (0.0, 0.5, 0.5), (0.3, 0.3, 0.4)])
def test_order_statistic_selection_equals_full_sorts(selection, mix):
    counts = stop_counts(3001, (1, 2, 3), mix)
    gen = torch.Generator().manual_seed(7)
    random = torch.randn(3, 3001, generator=gen, dtype=torch.float64)
    ties = torch.randint(-4, 5, (3, 3001), generator=gen).float() / 4  # 9 values: ties everywhere
    for x in (random, ties):
        got = residual_binarize(x, (1, 2, 3), mix, selection).bitmap
        assert torch.equal(got.long(), reference_bitmap(x, counts, selection))
        assert [int((got == b).sum()) for b in (1, 2, 3)] == [3 * c for c in counts] + [0] * (3 - len(counts))


def test_ties_go_to_the_lower_index():
    x = torch.tensor([[2.0, -2.0, 2.0, 0.0, 4.0, -2.0]])  # mean|x| = 2: four elements at distance 0
    assert residual_binarize(x, (1, 2), (0.5, 0.5)).bitmap.tolist() == [[1, 1, 1, 2, 2, 2]]


# --------------------------------------------------------------------------------------------------
# The default mix and when the bit map is recomputed
# --------------------------------------------------------------------------------------------------
def test_default_is_the_papers_70_20_10_setting():
    method = onebit.methods.get("hbnn")
    assert method.target_bits == (1, 2, 3) and method.target_mix == (0.7, 0.2, 0.1)
    layer = big_layer()
    masks = [mask for _, _, mask in bit_planes(layer)]
    assert [int(m.sum()) for m in masks] == [10000, 3000, 1000]
    assert average_bits(layer) == pytest.approx(1.4)
    with pytest.raises(ValueError, match=r"needs bitwidths 1, 2 and 3 in bits=\(1, 2\)"):
        onebit.methods.get("hbnn", bits=(1, 2))
    assert onebit.methods.get("hbnn", bits=(1, 2), average_bits=1.4).target_mix == pytest.approx((0.6, 0.4))


def test_bit_map_recomputed_every_training_forward_and_kept_in_eval(monkeypatch):
    import onebit.methods.hbnn as hbnn

    calls = []  # bit maps selected (natively or by middle_out_bitmap): residual_binarize's calls
    original = hbnn.residual_binarize
    monkeypatch.setattr(hbnn, "residual_binarize", lambda *a: calls.append(1) or original(*a))
    layer = big_layer()
    x = torch.randn(4, 100)
    layer(x), layer(x)
    assert len(calls) == 2  # training: every forward
    layer.eval()
    first = layer(x)
    assert torch.equal(layer(x), first) and len(calls) == 3  # eval, weights unchanged: once
    bit_planes(layer), average_bits(layer), layer.inference_form()
    assert len(calls) == 3
    with torch.no_grad():
        layer.weight.mul_(-1)  # an in-place update: torch's version counter moves
    assert torch.equal(layer(x), -first) and len(calls) == 4
    layer.weight.data.mul_(-1)  # invisible to the version counter: forget the map by hand
    hbnn.forget_bit_maps(layer)
    assert torch.equal(layer(x), first) and len(calls) == 5
    torch.save(layer, io.BytesIO())  # the kept maps live outside the layer: it still pickles
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.copy_(layer.weight * 2)
    assert torch.equal(twin(x), 2 * first) and torch.equal(layer(x), first)
