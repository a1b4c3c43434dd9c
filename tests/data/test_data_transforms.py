"""Exact-value tests of the tensor transforms."""

from __future__ import annotations

import pytest
import torch

from onebit.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomShift1d,
    Resize,
    ToFloat,
)


def _img(c: int = 2, h: int = 4, w: int = 5) -> torch.Tensor:
    return torch.arange(c * h * w, dtype=torch.float32).reshape(c, h, w)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_without_padding_is_a_window_of_the_input() -> None:
    x = _img()
    g = _gen(1)
    for _ in range(20):
        out = RandomCrop((2, 3))(x, g)
        assert out.shape == (2, 2, 3)
        # The top-left value identifies the window; the whole window must match it.
        top, left = divmod(int(out[0, 0, 0].item()), 5)
        assert torch.equal(out, x[:, top : top + 2, left : left + 3])


def test_random_crop_padding_is_zero_and_covers_all_offsets() -> None:
    x = torch.ones(1, 3, 3)
    crop = RandomCrop(3, padding=1)
    g = _gen(0)
    sums = set()
    for _ in range(200):
        out = crop(x, g)
        assert out.shape == (1, 3, 3)
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        sums.add(int(out.sum().item()))
    # Offsets (1,1) -> 9 ones, edge shifts -> 6, corner shifts -> 4.
    assert sums == {4, 6, 9}


def test_random_crop_too_large_raises() -> None:
    with pytest.raises(ValueError, match="larger than"):
        RandomCrop(6)(_img(), _gen())


def test_flip_p1_and_p0_exact() -> None:
    x = _img()
    assert torch.equal(RandomHorizontalFlip(1.0)(x, _gen()), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x, _gen()), x)
    sig = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.equal(RandomHorizontalFlip(1.0)(sig), torch.tensor([[3.0, 2.0, 1.0]]))


def test_flip_half_the_time() -> None:
    g = _gen(3)
    x = torch.tensor([[[0.0, 1.0]]])
    flips = sum(bool(RandomHorizontalFlip(0.5)(x, g)[0, 0, 0] == 1.0) for _ in range(400))
    assert 150 < flips < 250


def test_normalize_exact_values() -> None:
    x = torch.tensor([[[1.0, 3.0]], [[2.0, 6.0]]])
    out = Normalize((1.0, 2.0), (2.0, 4.0))(x)
    assert torch.allclose(out, torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    # 1-D signals (C, L) broadcast the same way.
    assert torch.allclose(Normalize((1.0,), (0.5,))(torch.tensor([[1.0, 2.0]])), torch.tensor([[0.0, 2.0]]))


def test_normalize_errors() -> None:
    with pytest.raises(ValueError, match="std > 0"):
        Normalize((0.0,), (0.0,))
    with pytest.raises(ValueError, match="3 channel statistics but the input has 2"):
        Normalize((0.0,) * 3, (1.0,) * 3)(_img())
    with pytest.raises(TypeError, match="ToFloat"):
        Normalize((0.0,), (1.0,))(torch.zeros(1, 2, 2, dtype=torch.uint8))


def test_to_float_uint8() -> None:
    x = torch.tensor([[[0, 255, 51]]], dtype=torch.uint8)
    assert torch.allclose(ToFloat()(x), torch.tensor([[[0.0, 1.0, 0.2]]]))


def test_resize_shorter_side_and_exact() -> None:
    x = torch.rand(3, 10, 20)
    assert Resize(5)(x).shape == (3, 5, 10)
    assert Resize(5)(x.transpose(1, 2)).shape == (3, 10, 5)
    assert Resize((7, 3))(x).shape == (3, 7, 3)
    const = torch.full((1, 4, 4), 0.25)
    assert torch.allclose(Resize(9)(const), torch.full((1, 9, 9), 0.25))
    u8 = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    out = Resize(4)(u8)
    assert out.dtype == torch.uint8 and bool((out == 200).all())


def test_center_crop_exact_and_padding() -> None:
    x = _img(1, 4, 4)
    assert torch.equal(CenterCrop(2)(x), x[:, 1:3, 1:3])
    padded = CenterCrop(6)(torch.ones(1, 4, 4))
    assert padded.shape == (1, 6, 6)
    assert padded.sum().item() == 16 and padded[0, 0, 0].item() == 0


def test_random_resized_crop_shape_and_params_in_bounds() -> None:
    rrc = RandomResizedCrop(8)
    g = _gen(5)
    for _ in range(50):
        top, left, h, w = rrc.get_params(30, 50, g)
        assert top >= 0 and top + h <= 30 and left >= 0 and left + w <= 50 and h > 0 and w > 0
    assert rrc(torch.rand(3, 30, 50), g).shape == (3, 8, 8)
    # A full-area crop of a constant image resizes to the same constant.
    full = RandomResizedCrop(4, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(full(torch.full((1, 6, 6), 0.5), g), torch.full((1, 4, 4), 0.5))


def test_random_shift1d_exact() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    g = _gen(0)
    seen = set()
    for _ in range(100):
        out = RandomShift1d(1)(x, g)
        seen.add(tuple(out[0].tolist()))
    assert seen == {(1.0, 2.0, 3.0, 4.0), (0.0, 1.0, 2.0, 3.0), (2.0, 3.0, 4.0, 0.0)}
    circ = {tuple(RandomShift1d(1, mode="circular")(x, g)[0].tolist()) for _ in range(100)}
    assert (4.0, 1.0, 2.0, 3.0) in circ and (2.0, 3.0, 4.0, 1.0) in circ


def test_compose_determinism_with_seeded_generator() -> None:
    pipeline = Compose([RandomCrop(4, padding=2), RandomHorizontalFlip(), Normalize((0.5,), (0.25,))])
    x = torch.rand(1, 4, 4, generator=_gen(9))
    a = [pipeline(x, _gen(42)) for _ in range(3)]
    assert all(torch.equal(a[0], t) for t in a)
    g1, g2 = _gen(7), _gen(7)
    seq1 = [pipeline(x, g1) for _ in range(10)]
    seq2 = [pipeline(x, g2) for _ in range(10)]
    assert all(torch.equal(s, t) for s, t in zip(seq1, seq2))
    assert any(not torch.equal(seq1[0], s) for s in seq1[1:])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="shape \\(C, H, W\\)"):
        RandomCrop(2)(torch.zeros(4, 4))
