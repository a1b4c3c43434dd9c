"""In-process A/B of the native training kernels' threads: each network's step with the kernels on (at
torch's thread count), on but forced to 1 thread, and off (the torch formulas), samples interleaved in one
process, as ratios to fp32's step (ResNet-20, CIFAR shape, batch 128).

    python benchmarks/native_threads.py --threads 2 --methods bnn dorefa reactnet recu pcpp-bc --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402

from onebit.methods import functional  # noqa: E402

MODES = {"native": (True, None), "native-1-thread": (True, 1), "torch": (False, None)}
_THREADS = torch.get_num_threads


def set_mode(mode: str) -> None:
    """The switches the kernels read at each call: on/off, and the thread count they are handed."""
    on, threads = MODES[mode]
    functional.NATIVE_KERNELS = on and hasattr(functional._engine, "standardize_rows")
    functional.NATIVE_ACTIVATIONS = on and hasattr(functional._activation_engine, "activation_sign")
    torch.get_num_threads = (lambda: threads) if threads else _THREADS  # only onebit's kernels read it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["bnn", "dorefa", "reactnet", "recu", "pcpp-bc"])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("fp32", "native")] + [(m, mode) for m in args.methods for mode in MODES]
    steps = {}
    for row in rows:
        steps[row] = train_step.make_step(*train_step.build("resnet20", row[0], "cpu"))
        set_mode(row[1])
        steps[row]()  # warm-up
    times: dict = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row in rows:
            set_mode(row[1])
            start = time.perf_counter()
            steps[row]()
            times[row].append(time.perf_counter() - start)
    base = statistics.median(times[rows[0]])
    print(f"threads {args.threads}, fp32 step {base * 1e3:.1f} ms")
    for row in rows[1:]:
        print(f"| {row[0]} | {row[1]} | {statistics.median(times[row]) / base:.2f}x |")


if __name__ == "__main__":
    main()
