"""HBNN's native weight quantizer (csrc/train_hbnn.cpp): its vector passes (AVX2, AVX-512) against its own
scalar loops, bit for bit (map, approximation, scales, max |x|, top level; floats compared as bit patterns,
so -0.0 is not 0.0), through the compaction's corners: rows of every length 1 to 17 and around multiples
of 8 and 16 (the vector tails), rows where every element stops at a level or none does, distances that tie
the threshold (all stopping: the vector rule; some: the scalar one), exact zeros, -0.0 and ±1, the digits
MLP's and ResNet-20's weight shapes, given bit maps of every level, and one or two threads (several rows
split, and one row of 2^17 or more whose passes split). test_native_hbnn.py checks all of them against
the torch path."""

from __future__ import annotations

import math

import pytest
import torch
from test_native_hbnn import salted as native_salted

from onebit.methods import functional as fx
from onebit.methods import hbnn
from onebit.methods.hbnn import stop_counts

ENGINE = fx._engine
pytestmark = pytest.mark.skipif(not hasattr(ENGINE, "hbnn_vector_isa"),
                                reason="onebit._engine built without hbnn_vector_isa")
VECTOR_ISAS = {"AVX2": 1, "AVX-512": 2}  # train_hbnn.h hbnn_vector_isa's caps (0: the scalar loops)
PAPER, RESIDUAL, GIVEN_MAP = hbnn._KERNEL_MODES["paper"], hbnn._KERNEL_MODES["residual"], hbnn._KERNEL_MODES[None]
MIXES = [((1, 2, 3), (0.7, 0.2, 0.1)), ((1, 2, 3), (0.1, 0.3, 0.6)), ((1,), (1.0,)), ((1, 2, 3), (0.0, 1.0, 0.0)),
         ((1, 2, 3), (0.0, 0.0, 1.0)), ((1, 2, 3, 4, 5, 6, 7, 8), (0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1))]


@pytest.fixture(params=list(VECTOR_ISAS))
def isa(request):
    """The cap that makes the kernel run one vector ISA (skipped where the CPU lacks it)."""
    cap = VECTOR_ISAS[request.param]
    runs = ENGINE.hbnn_vector_isa(cap)
    ENGINE.hbnn_vector_isa(2)
    if runs != cap:
        pytest.skip(f"this CPU has no {request.param}")
    yield cap
    ENGINE.hbnn_vector_isa(2)


def kernel(cap, x, mode, counts=(), bitmap=None, threads=1):
    """The engine's raw outputs under the ISA cap: (top, bit map, approx, scales, max |x|)."""
    x = x.contiguous()
    rows, n = x.shape
    bitmap = torch.zeros(x.shape, dtype=torch.int8) if bitmap is None else bitmap.clone()
    approx = torch.full(x.shape, 7.0)
    scales = torch.zeros(hbnn.MAX_BITS, rows)
    max_abs = torch.full((rows,), -1.0)
    assert ENGINE.hbnn_vector_isa(cap) == cap
    try:
        top = ENGINE.hbnn_binarize(mode, x.data_ptr(), rows, n, list(counts), bitmap.data_ptr(), approx.data_ptr(),
                                   scales.data_ptr(), threads, max_abs.data_ptr())
    finally:
        ENGINE.hbnn_vector_isa(2)
    return top, bitmap, approx, scales, max_abs


def assert_identical(cap, x, mode, counts=(), bitmap=None, threads=1):
    """The vector passes' outputs equal the scalar loops' (one thread) bit for bit; returns them."""
    vector = kernel(cap, x, mode, counts, bitmap, threads)
    scalar = kernel(0, x, mode, counts, bitmap, 1)
    assert vector[0] == scalar[0] > 0
    assert torch.equal(vector[1], scalar[1])
    for got, expected in zip(vector[2:], scalar[2:]):
        assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    return vector


def salted(shape, seed):
    return native_salted(shape, seed, negative_zeros=True)


def quarter_steps(shape, seed):
    """±{0, .25, .5, .75, 1}: ties at every threshold (some stop, some go on: the scalar rule decides)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-4, 5, shape, generator=g) * 0.25).float()


def order_sensitive(rows, n, seed):
    """Rows of ±1, ±2^-24 and two or three tiny ±k 2^-56 (k = 4..7) at random places: |x| sums to just above
    1 + 2^-24, the midpoint between two floats, only where the tiny ones meet before they meet the 1 (each
    alone is under half a double's ulp at 1): the float mean depends on the order of the sum's additions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(rows, n)
    for row in x:
        place = torch.randperm(n, generator=g)
        tiny = int(torch.randint(2, 4, (), generator=g))
        row[place[0]], row[place[1]] = 1.0, 2.0**-24
        row[place[2:2 + tiny]] = torch.randint(4, 8, (tiny,), generator=g).float() * 2.0**-56
    return x * torch.where(torch.rand(rows, n, generator=g) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("n", [40, 75, 531])
def test_sums_in_the_fixed_lane_order(n, isa):
    """abs_sum's 32 partial sums by index mod 32, in index order, added pairwise: the same order on every ISA."""
    x = order_sensitive(64, n, n)
    _, _, _, scales, _ = assert_identical(isa, x, PAPER, stop_counts(n, (1, 2, 3), (0.7, 0.2, 0.1)))
    exact = torch.tensor([math.fsum(row.abs().double().tolist()) for row in x]).float() / n
    assert not torch.equal(scales[0], exact)  # rounding depends on the order here (checks the rows, not the kernel)


LENGTHS = [*range(1, 18), 23, 31, 32, 33, 47, 63, 64, 65, 129]


@pytest.mark.parametrize("n", LENGTHS)
def test_every_row_length_and_mix(n, isa):
    for rows, seed in ((1, n), (3, n + 100)):
        for x in (salted((rows, n), seed), quarter_steps((rows, n), seed)):
            for bits, mix in MIXES:
                counts = stop_counts(n, bits, mix)
                assert_identical(isa, x, PAPER, counts)
                assert_identical(isa, x, RESIDUAL, counts)


def two_magnitudes(n, near, seed):
    """A row of ±1 (`near` of them) and ±3 in a shuffled order: with `near` > n/2 the level's mean lies
    nearer 1, so the `near` elements of |x| = 1 tie at the threshold, all of them stop and the rest go on."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.full((n,), 3.0)
    magnitude[:near] = 1.0
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return (magnitude * signs)[torch.randperm(n, generator=g)].reshape(1, n)


@pytest.mark.parametrize("n", [9, 16, 17, 40, 1000, 9001])
def test_ties_at_the_threshold_that_all_stop(n, isa):
    near = n - n // 3
    x = two_magnitudes(n, near, n)
    for mode in (PAPER, RESIDUAL):
        top, bitmap, *_ = assert_identical(isa, x, mode, [near, n - near])
        assert top == 2 and int((bitmap == 1).sum()) == near and bool((bitmap[x.abs() == 1] == 1).all())


@pytest.mark.parametrize("rows,n", [(512, 64), (512, 512), (10, 512),  # the digits MLP
                                    (16, 27), (16, 144), (32, 144), (32, 288), (64, 288), (64, 576)])  # ResNet-20
@pytest.mark.parametrize("threads", [1, 2])
def test_the_models_weight_shapes(rows, n, threads, isa):
    x = salted((rows, n), rows * n)
    for bits, mix in MIXES[:2]:
        counts = stop_counts(n, bits, mix)
        for mode in (PAPER, RESIDUAL):
            assert_identical(isa, x, mode, counts, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_one_long_row_split_over_threads(threads, isa):
    n = 2 * 2**17 + 13  # 2^17 or more: one row's passes (and its levels' compaction) split into parts
    x = salted((1, n), 3)
    for bits, mix in (MIXES[0], MIXES[5]):
        counts = stop_counts(n, bits, mix)
        for mode in (PAPER, RESIDUAL):
            assert_identical(isa, x, mode, counts, threads=threads)
    assert_identical(isa, x, GIVEN_MAP, bitmap=random_map((1, n), 4), threads=threads)


def random_map(shape, seed):
    """Bit maps of levels 1 to 8, with runs of one level (so whole vectors stop or all go on)."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(1, hbnn.MAX_BITS + 1, shape, generator=g, dtype=torch.int8)
    levels.view(-1)[: levels.numel() // 3] = 1
    levels.view(-1)[levels.numel() // 3: levels.numel() // 2] = 5
    return levels


@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 300])
def test_given_maps(n, isa):
    x = salted((4, n), n)
    odd = torch.randint(-1, 4, x.shape, generator=torch.Generator().manual_seed(n), dtype=torch.int8)  # 0, -1: level 1
    for bitmap in (random_map(x.shape, n), odd, torch.ones(x.shape, dtype=torch.int8),
                   torch.full(x.shape, 8, dtype=torch.int8), torch.full(x.shape, 2, dtype=torch.int8)):
        for threads in (1, 2):
            assert_identical(isa, x, GIVEN_MAP, bitmap=bitmap, threads=threads)
