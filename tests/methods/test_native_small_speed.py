"""Weight-quantizer kernels on small weights run on the calling thread alone (functional.kernel_threads):
below torch's element-wise grain a 2-thread region costs as much as the work. Checked with the engine's
region profile (how many threads the last parallel region had), and the values are the same bits as
with the thread count torch was given."""

from __future__ import annotations

import pytest
import torch

from onebit.methods import functional

engine = functional._engine
pytestmark = pytest.mark.skipif(
    engine is None or not hasattr(engine, "last_region_profile") or not functional.NATIVE_KERNELS,
    reason="needs the engine's native training kernels",
)


def _region_threads(run) -> int:
    """The number of threads of the last parallel region that ``run()`` opened (with 2 threads given)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    engine.set_region_profiling(True)
    try:
        run()
        return len(engine.last_region_profile()[1])
    finally:
        engine.set_region_profiling(False)
        torch.set_num_threads(before)


def _layer(method: str, out_channels: int, in_channels: int, **options):
    from onebit.nn import BinaryConv2d

    torch.manual_seed(0)
    return BinaryConv2d(in_channels, out_channels, 3, padding=1, bias=False, method=method, **options)


def _forward(layer):
    return lambda: layer.method.quantize_weight(layer, layer.weight)


def _backward(layer):
    def run():
        wq = layer.method.quantize_weight(layer, layer.weight)
        wq.backward(torch.ones_like(wq))

    return run


CASES = [("pcpp-pc", {}), ("pcpp-bnn", {}), ("bnn++", {}), ("pcpp-bnn+", {}), ("biper", {"stage": 2}),
         ("irnet", {}), ("recu", {})]


@pytest.mark.parametrize(("method", "options"), CASES)
def test_a_small_weight_runs_on_one_thread_and_a_large_one_on_two(method, options):
    small = _layer(method, 16, 16, **options)  # 2,304 weights: ResNet-20's first stage
    large = _layer(method, 64, 64, **options)  # 36,864: above SERIAL_BELOW
    assert small.weight.numel() < functional.SERIAL_BELOW <= large.weight.numel()
    assert _region_threads(_forward(small)) == 1
    assert _region_threads(_backward(small)) == 1
    assert _region_threads(_forward(large)) == 2
    assert _region_threads(_backward(large)) == 2


@pytest.mark.parametrize(("method", "options"), CASES)
def test_the_values_do_not_depend_on_the_thread_count(method, options):
    results = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for channels in (16, 64):
                layer = _layer(method, channels, channels, **options)
                wq = layer.method.quantize_weight(layer, layer.weight)
                wq.backward(torch.linspace(-1, 1, wq.numel()).reshape(wq.shape))
                results.append((wq.detach(), layer.weight.grad))
        finally:
            torch.set_num_threads(before)
    for (a, ga), (b, gb) in zip(results[:2], results[2:]):
        assert torch.equal(a, b) and torch.equal(ga, gb)


def test_kernel_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert functional.kernel_threads(0) == 1
        assert functional.kernel_threads(functional.SERIAL_BELOW - 1) == 1
        assert functional.kernel_threads(functional.SERIAL_BELOW) == 2
    finally:
        torch.set_num_threads(before)
