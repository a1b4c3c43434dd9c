"""Per-layer benchmark of the packed 1-bit engine against torch fp32 in the same process.

For each layer shape (batch 1) and thread count, times:
  * torch fp32 ``conv2d`` in NCHW and in channels_last (the faster one is the baseline),
    or ``F.linear`` for linear layers;
  * ``binary_conv2d`` / ``binary_linear`` on each kernel path, packed input -> fused
    BatchNorm (scale, bias) + sign -> packed output (the layer as it runs inside a BNN).
The binary layer is timed as an exported model runs it: a ``PreparedConv2d`` (arguments bound
once).  The samples of torch (both layouts) and of every kernel path alternate, round by round, so
a shared machine's drift reaches all of them alike.  Reports medians over repeats: latency,
speedup vs torch, G binary-MAC/s, and the fraction
of the register-only xor+popcount peak of the same path (``_engine.popcount_peak``) measured in
the same run (peak x threads for multi-threaded rows). Then the multi-thread speedup of each 3x3
layer with 1- and 2-thread calls alternated (the ratio free of the machine's drift) beside the
same ratio for the register-only probe in the same blocks (the ceiling the hardware allowed), the
cost of packing float activations, and the fixed cost of one call.

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


def timeit_interleaved(fns: dict, repeats: int, min_time: float = 0.02) -> dict:
    """Medians like :func:`timeit` for several variants whose samples alternate (round r times every
    variant once), so that drift of a shared machine reaches all of them alike.  ``fns`` maps a
    name to ``(setup, fn)``: ``setup()`` runs untimed before each sample (e.g. selecting a kernel)."""
    inner = {}
    for name, (setup, fn) in fns.items():
        setup()
        fn()
        t0 = time.perf_counter()
        fn()
        inner[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (setup, fn) in fns.items():
            setup()
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner[name])
    return {name: statistics.median(v) for name, v in samples.items()}


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
        rows = []  # (name, MACs, torch variants, binary layer call)
        for name, (cin, h, w), cout, k, s, p in CONV_LAYERS:
            x = torch.randn(1, cin, h, w)
            wt = torch.randn(cout, cin, k, k)
            xc, wc = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
            torch_fns = {"nchw": lambda x=x, wt=wt, s=s, p=p: F.conv2d(x, wt, stride=s, padding=p),
                         "channels_last": lambda x=xc, wt=wc, s=s, p=p: F.conv2d(x, wt, stride=s, padding=p)}
            xp, wp = K.pack_activations(x), K.pack_weights(wt)
            tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout), output="bits")
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            macs = oh * ow * cout * cin * k * k
            layer = K.PreparedConv2d(wp, stride=s, padding=p, pad_value=0, transform=tr)
            rows.append((name, macs, torch_fns, lambda xp=xp, layer=layer: layer(xp)))
        for name, cin, cout in LINEAR_LAYERS:
            x = torch.randn(1, cin)
            wt = torch.randn(cout, cin)
            xp, wp = K.pack_activations(x), K.pack_weights(wt)
            tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout))
            rows.append((name, cin * cout, {"linear": lambda x=x, wt=wt: F.linear(x, wt)},
                         lambda xp=xp, wp=wp, tr=tr: K.binary_linear(xp, wp, transform=tr)))
        for name, macs, torch_fns, fn in rows:
            # torch in both layouts and every kernel path, samples alternated
            variants = {f"torch {v}": (lambda: K.set_kernel(None), f) for v, f in torch_fns.items()}
            variants.update({kern: (lambda kern=kern: K.set_kernel(kern), fn) for kern in kernels})
            med = timeit_interleaved(variants, repeats)
            t_torch = min(med[f"torch {v}"] for v in torch_fns)
            for kern in kernels:
                tb = med[kern]
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


def per_call_samples(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def scaling_table(kernels: list[str], repeats: int, threads: int) -> None:
    """Multi-thread speedup of each 3x3 layer, where its time goes, and the hardware's own speedup.

    Per row, blocks alternate: 10 calls of the layer on 1 thread, 10 on `threads` threads, one
    profiled call on each (``_engine.set_region_profiling``), then the register-only probe
    (``popcount_peak``) on 1 thread and on `threads` threads of the same team.  The drift of a
    shared machine's speed between blocks then enters no ratio; each latency is the median of
    single calls (a call that finds the second vCPU taken stalls as a whole: an outlier, not a
    shift of the statistic).  The columns split the multi-thread call into
      * the probe's speedup in the same seconds: a register-only loop with no memory traffic, no
        synchronisation and no serial part (the most the cores gave any code);
      * busy: the threads' time inside work items as a share of threads x the parallel region
        (100%: perfect balance, no waiting);
      * work x: the threads' total time inside work items over the single thread's (1.00: the
        items ran as fast on each core as on one alone; more: the cores slowed each other);
      * outside: the profiled call's time outside its parallel region (Python, allocation,
        dispatch), median.
    """
    from onebit import _engine

    torch.set_num_threads(threads)  # torch's OpenMP team (which the engine uses) at full size
    print()
    print(f"| {threads} threads vs 1 (median single call, blocks alternated) | kernel | 1 thread ms | "
          f"{threads} threads ms | speedup | probe speedup, same blocks | busy | work x | "
          f"outside region µs (1 / {threads} thr) |")
    print("|---|---|---|---|---|---|---|---|---|")
    probe_iters = {}  # ~1 ms per probe thread
    for kern in kernels:
        t_million = timeit(lambda kern=kern: K.popcount_peak(kern, 1_000_000), 3, min_time=0.01)
        probe_iters[kern] = max(1000, int(1e6 * 1e-3 / t_million))
    for name, (cin, h, w), cout, k, s, p in CONV_LAYERS:
        if k != 3:
            continue
        xp, wp = K.pack_activations(torch.randn(1, cin, h, w)), K.pack_weights(torch.randn(cout, cin, k, k))
        tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout), output="bits")
        layer = K.PreparedConv2d(wp, stride=s, padding=p, pad_value=0, transform=tr)
        for kern in kernels:
            K.set_kernel(kern)
            ts = (1, threads)
            calls: dict[int, list[float]] = {t: [] for t in ts}
            probe: dict[int, list[float]] = {t: [] for t in ts}
            wall: dict[int, list[float]] = {t: [] for t in ts}
            busy: dict[int, list[float]] = {t: [] for t in ts}
            outside: dict[int, list[float]] = {t: [] for t in ts}
            one_call = timeit(lambda: layer(xp), 1, min_time=0.005)
            blocks = min(60, max(4 * repeats, int(0.1 / (10 * one_call))))
            for _ in range(blocks):
                for t in ts:
                    K.set_num_threads(t)
                    calls[t].extend(per_call_samples(lambda: layer(xp), 10))
                    _engine.set_region_profiling(True)
                    t0 = time.perf_counter()
                    layer(xp)
                    call = time.perf_counter() - t0
                    _engine.set_region_profiling(False)
                    region, per_thread, _, _ = _engine.last_region_profile()
                    wall[t].append(region)
                    busy[t].append(sum(per_thread))
                    outside[t].append(call - region)
                for t in ts:
                    probe[t].append(K.popcount_peak(kern, probe_iters[kern], threads=t))
            med = {key: {t: statistics.median(v[t]) for t in ts} for key, v in
                   (("calls", calls), ("probe", probe), ("wall", wall), ("busy", busy), ("outside", outside))}  # fmt: skip
            t1, tn = med["calls"][1], med["calls"][threads]
            print(f"| {name} | {kern} | {t1 * 1e3:.3f} | {tn * 1e3:.3f} | {t1 / tn:.2f}x | "
                  f"{med['probe'][threads] / med['probe'][1]:.2f}x | "
                  f"{med['busy'][threads] / (threads * med['wall'][threads]):.0%} | "
                  f"{med['busy'][threads] / med['busy'][1]:.2f} | "
                  f"{med['outside'][1] * 1e6:.1f} / {med['outside'][threads] * 1e6:.1f} |", flush=True)
    K.set_kernel(None)
    K.set_num_threads(1)


if __name__ == "__main__":
    main()
