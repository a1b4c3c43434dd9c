"""Per-layer benchmark of the packed 1-bit engine against torch fp32 in the same process.

For each layer shape (batch 1) and thread count, times:
  * torch fp32 ``conv2d`` in NCHW and in channels_last (the faster one is the baseline),
    or ``F.linear`` for linear layers;
  * ``binary_conv2d`` / ``binary_linear`` on each kernel path, packed input -> fused
    BatchNorm (scale, bias) + sign -> packed output (the layer as it runs inside a BNN).
The binary layer is timed as an exported model runs it: a ``PreparedConv2d`` (arguments bound
once).  Reports medians over repeats: latency, speedup vs torch, G binary-MAC/s, and the fraction
of the register-only xor+popcount peak of the same path (``_engine.popcount_peak``) measured in
the same run (peak x threads for multi-threaded rows). Then the multi-thread speedup of each 3x3
layer with 1- and 2-thread calls alternated (the ratio free of the machine's drift) beside the
same ratio for the register-only probe (the hardware's ceiling), the cost of packing float
activations, and the fixed cost of one call.

    .venv/bin/python benchmarks/kernels.py            # full table (a few minutes)
    .venv/bin/python benchmarks/kernels.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from onebit.deploy import kernels as K

# name, (Cin, H, W), Cout, kernel, stride, padding
CONV_LAYERS = [
    ("conv3x3 56x56x64", (64, 56, 56), 64, 3, 1, 1),
    ("conv3x3 28x28x128", (128, 28, 28), 128, 3, 1, 1),
    ("conv3x3 14x14x256", (256, 14, 14), 256, 3, 1, 1),
    ("conv3x3 7x7x512", (512, 7, 7), 512, 3, 1, 1),
    ("conv3x3/s2 56->28 x128", (64, 56, 56), 128, 3, 2, 1),
    ("conv1x1 28x28 256->256", (256, 28, 28), 256, 1, 1, 0),
]
LINEAR_LAYERS = [("linear 512->1000", 512, 1000), ("linear 4096->4096", 4096, 4096)]


def timeit(fn, repeats: int, min_time: float = 0.02) -> float:
    """Median over `repeats` samples of the mean time of a call (each sample >= min_time s)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--kernels", default=None, help="comma-separated kernel paths (default: all the CPU has)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    threads = [int(t) for t in args.threads.split(",")]
    kernels = args.kernels.split(",") if args.kernels else K.available_kernels()

    torch.manual_seed(0)
    print(f"# onebit packed-kernel benchmark: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, kernels {kernels}, median of {repeats}")
    peaks = {}
    for k in kernels:
        peaks[k] = statistics.median(K.popcount_peak(k, 20_000_000) for _ in range(3))
        print(f"# register-only xor+popcount peak, 1 thread, {k}: {peaks[k] / 1e9:.0f} G binary-op/s")
    print()
    print("| layer | threads | torch fp32 ms | kernel | binary ms | speedup | G bMAC/s | % peak |")
    print("|---|---|---|---|---|---|---|---|")

    for t in threads:
        torch.set_num_threads(t)
        K.set_num_threads(t)
        rows = []
        for name, (cin, h, w), cout, k, s, p in CONV_LAYERS:
            x = torch.randn(1, cin, h, w)
            wt = torch.randn(cout, cin, k, k)
            t_nchw = timeit(lambda: F.conv2d(x, wt, stride=s, padding=p), repeats)
            xc, wc = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
            t_cl = timeit(lambda: F.conv2d(xc, wc, stride=s, padding=p), repeats)
            t_torch = min(t_nchw, t_cl)
            xp, wp = K.pack_activations(x), K.pack_weights(wt)
            tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout), output="bits")
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            macs = oh * ow * cout * cin * k * k
            layer = K.PreparedConv2d(wp, stride=s, padding=p, pad_value=0, transform=tr)
            rows.append((name, t_torch, macs, lambda xp=xp, layer=layer: layer(xp)))
        for name, cin, cout in LINEAR_LAYERS:
            x = torch.randn(1, cin)
            wt = torch.randn(cout, cin)
            t_torch = timeit(lambda: F.linear(x, wt), repeats)
            xp, wp = K.pack_activations(x), K.pack_weights(wt)
            tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout))
            rows.append((name, t_torch, cin * cout,
                         lambda xp=xp, wp=wp, tr=tr: K.binary_linear(xp, wp, transform=tr)))
        for name, t_torch, macs, fn in rows:
            for kern in kernels:
                K.set_kernel(kern)
                tb = timeit(fn, repeats)
                gops = macs / tb
                print(f"| {name} | {t} | {t_torch * 1e3:.3f} | {kern} | {tb * 1e3:.3f} | "
                      f"{t_torch / tb:.1f}x | {gops / 1e9:.0f} | {100 * gops / (peaks[kern] * t):.0f}% |",
                      flush=True)
        K.set_kernel(None)

    if max(threads) > 1:
        scaling_table(kernels, repeats, max(threads))

    # Packing the float input of a binary layer into sign bits (the step between FP and binary layers).
    torch.set_num_threads(1)
    K.set_num_threads(1)
    print()
    print("| pack activations (1 thread) | kernel | µs |")
    print("|---|---|---|")
    for name, (cin, h, w), *_ in CONV_LAYERS:
        x = torch.randn(1, cin, h, w).contiguous(memory_format=torch.channels_last)
        for kern in kernels:
            K.set_kernel(kern)
            us = timeit(lambda: K.pack_activations(x), repeats) * 1e6
            print(f"| {name} input {h}x{w}x{cin} | {kern} | {us:.0f} |", flush=True)
    K.set_kernel(None)

    # The fixed cost of one call (Python checks, output allocation, engine dispatch): a layer with
    # almost no arithmetic, a 1x1 conv on one pixel of 64 channels, bits in and out.
    print()
    print("| per-call overhead (1 thread): 1x1 conv, 1 pixel, 64 -> 64 channels, bits out | kernel | µs |")
    print("|---|---|---|")
    xp = K.pack_activations(torch.randn(1, 64, 1, 1))
    wp = K.pack_weights(torch.randn(64, 64, 1, 1))
    tr = K.OutputTransform(scale=torch.rand(64) + 0.5, bias=torch.randn(64), output="bits")
    layer = K.PreparedConv2d(wp, transform=tr)
    for kern in kernels:
        K.set_kernel(kern)
        us = timeit(lambda: K.binary_conv2d(xp, wp, transform=tr), repeats) * 1e6
        print(f"| binary_conv2d(x, w, ...) | {kern} | {us:.1f} |", flush=True)
        us = timeit(lambda: layer(xp), repeats) * 1e6
        print(f"| PreparedConv2d(w, ...)(x) | {kern} | {us:.1f} |", flush=True)
    K.set_kernel(None)


def steal_ticks() -> int | None:
    """CPU time the hypervisor gave to other guests (Linux /proc/stat 'steal', in clock ticks)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return None


def per_call_samples(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def scaling_table(kernels: list[str], repeats: int, threads: int) -> None:
    """Multi-thread speedup of each 3x3 layer, measured side by side: blocks of 10 calls on 1 and
    on `threads` threads alternate, so the drift of a shared machine's speed does not enter the
    ratio, and each column is the median latency of single calls, so a call that finds a vCPU
    taken by the hypervisor (which stalls the whole parallel call) is an outlier, not a shift of
    the statistic.  The first row is the hardware's own ceiling: the register-only probe on 1 and
    on `threads` concurrent threads, alternated the same way."""
    import threading

    torch.set_num_threads(threads)  # torch's OpenMP team (which the engine uses) at full size
    steal0, t_start = steal_ticks(), time.perf_counter()
    print()
    print(f"| {threads} threads vs 1, median single call, blocks alternated | kernel | 1 thread ms | "
          f"{threads} threads ms | speedup |")
    print("|---|---|---|---|---|")
    for kern in kernels:
        iters = 4_000_000

        def probe(n: int, kern: str = kern) -> float:
            workers = [threading.Thread(target=K.popcount_peak, args=(kern, iters)) for _ in range(n)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            return (time.perf_counter() - t0) / n  # time per thread's worth of work

        pr: dict[int, list[float]] = {1: [], threads: []}
        for _ in range(3 * repeats):
            for t in (1, threads):
                pr[t].append(probe(t))
        p1, pn = statistics.median(pr[1]), statistics.median(pr[threads])
        print(f"| register-only probe (ceiling) | {kern} | {p1 * 1e3:.3f} | {pn * 1e3:.3f} | {p1 / pn:.2f}x |",
              flush=True)
    for name, (cin, h, w), cout, k, s, p in CONV_LAYERS:
        if k != 3:
            continue
        xp, wp = K.pack_activations(torch.randn(1, cin, h, w)), K.pack_weights(torch.randn(cout, cin, k, k))
        tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout), output="bits")
        layer = K.PreparedConv2d(wp, stride=s, padding=p, pad_value=0, transform=tr)
        for kern in kernels:
            K.set_kernel(kern)
            samples: dict[int, list[float]] = {1: [], threads: []}
            layer(xp)
            blocks = max(repeats, int(0.05 / max(timeit(lambda: layer(xp), 1, min_time=0.005), 1e-6) / 10))
            for _ in range(min(blocks, 40)):
                for t in (1, threads):
                    K.set_num_threads(t)
                    samples[t].extend(per_call_samples(lambda: layer(xp), 10))
            t1, tn = statistics.median(samples[1]), statistics.median(samples[threads])
            print(f"| {name} | {kern} | {t1 * 1e3:.3f} | {tn * 1e3:.3f} | {t1 / tn:.2f}x |", flush=True)
    K.set_kernel(None)
    K.set_num_threads(1)
    steal1 = steal_ticks()
    if steal0 is not None and steal1 is not None:
        import os

        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        wall = time.perf_counter() - t_start
        print(f"\n# hypervisor steal during this table: {(steal1 - steal0) / hz:.2f} s of CPU time "
              f"over {wall:.1f} s of wall time ({os.cpu_count()} vCPUs)")


if __name__ == "__main__":
    main()
