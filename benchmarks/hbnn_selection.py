"""HBNN's bit-map selection: one order statistic per level (``torch.kthvalue``, onebit's implementation)
against the straightforward full stable sort per level (the implementation before), on the weight
shapes of the digits MLP and of ResNet 3x3 convs, 1 thread, samples interleaved. The residual rule is
timed as the whole binarization (selection and planes, as the implementation before computed them
together); Algorithm 1 as the bit map alone (``middle_out_bitmap``).

    python benchmarks/hbnn_selection.py [--repeats 30]

Both give the same bit maps (checked here on every shape, and in tests/methods/test_hbnn.py with ties).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from onebit.methods.functional import sign
from onebit.methods.hbnn import middle_out_bitmap, residual_binarize, stop_counts

SHAPES = {"MLP 512x512": (512, 512), "conv 256x256x3x3": (256, 256, 3, 3), "conv 64x64x3x3": (64, 64, 3, 3)}
MIX = (0.7, 0.2, 0.1)


def sorted_residual_binarize(x: torch.Tensor, bits: tuple[int, ...], mix: tuple[float, ...]) -> torch.Tensor:
    """onebit's implementation before (selection="residual", a full stable argsort per level); the bit map."""
    residual = x.clone()
    active = torch.ones_like(residual, dtype=torch.bool)
    bitmap = torch.zeros_like(residual, dtype=torch.int64)
    approx = torch.zeros_like(residual)
    for level, count in enumerate(stop_counts(x.shape[1], bits, mix), start=1):
        magnitude = residual.abs()
        n_active = active.sum(dim=1, keepdim=True)
        mu = torch.where(active, magnitude, torch.zeros_like(magnitude)).sum(dim=1, keepdim=True)
        mu = mu / n_active.clamp(min=1).to(mu.dtype)
        step = torch.where(active, mu * sign(residual), torch.zeros_like(residual))
        approx = approx + step
        if count > 0:
            distance = (magnitude - mu).abs().masked_fill(~active, math.inf)
            chosen = distance.argsort(dim=1, stable=True)[:, :count]
            stop = torch.zeros_like(active).scatter_(1, chosen, True)
            bitmap[stop] = level
            active = active & ~stop
        residual = residual - step
    return bitmap


def sorted_paper_bitmap(x: torch.Tensor, bits: tuple[int, ...], mix: tuple[float, ...]) -> torch.Tensor:
    """Algorithm 1 with a full stable argsort per level."""
    magnitude = x.abs()
    remaining = torch.ones_like(x, dtype=torch.bool)
    bitmap = torch.zeros_like(x, dtype=torch.int64)
    for level, count in enumerate(stop_counts(x.shape[1], bits, mix), start=1):
        if count == 0:
            continue
        mean = torch.where(remaining, magnitude, torch.zeros_like(magnitude)).sum(dim=1, keepdim=True)
        mean = mean / remaining.sum(dim=1, keepdim=True)
        distance = (magnitude - mean).abs().masked_fill(~remaining, math.inf)
        chosen = distance.argsort(dim=1, stable=True)[:, :count]
        stop = torch.zeros_like(remaining).scatter_(1, chosen, True)
        bitmap[stop] = level
        remaining = remaining & ~stop
    return bitmap


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def time_once(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"{cpu_name()}, torch {torch.__version__}, 1 thread, mix 70/20/10, "
          f"median of {args.repeats} interleaved samples (ms)\n")
    print("| weight | sorted, residual rule | kthvalue, residual rule | speed-up | sorted, Algorithm 1 | "
          "kthvalue, Algorithm 1 | speed-up |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for name, shape in SHAPES.items():
            x = torch.randn(shape).reshape(1, -1)
            candidates = {
                "sorted residual": lambda v: sorted_residual_binarize(v, (1, 2, 3), MIX),
                "kth residual": lambda v: residual_binarize(v, (1, 2, 3), MIX, "residual").bitmap,
                "sorted paper": lambda v: sorted_paper_bitmap(v, (1, 2, 3), MIX),
                "kth paper": lambda v: middle_out_bitmap(v, stop_counts(v.shape[1], (1, 2, 3), MIX)),
            }
            maps = {k: fn(x).long() for k, fn in candidates.items()}
            assert torch.equal(maps["sorted residual"], maps["kth residual"]), name
            assert torch.equal(maps["sorted paper"], maps["kth paper"]), name
            samples: dict[str, list[float]] = {k: [] for k in candidates}
            for _ in range(args.repeats):
                for k, fn in candidates.items():
                    samples[k].append(time_once(fn, x))
            ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
            print(f"| {name} | {ms['sorted residual']:.2f} | {ms['kth residual']:.2f} | "
                  f"{ms['sorted residual'] / ms['kth residual']:.1f}x | {ms['sorted paper']:.2f} | "
                  f"{ms['kth paper']:.2f} | {ms['sorted paper'] / ms['kth paper']:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
