"""Train every method on scikit-learn's digits with the fast default recipe, plus the full-precision
baseline, and print a table: method, test accuracy, time per epoch relative to full precision.

    python benchmarks/train_digits.py [--epochs 10] [--seeds 0 1 2] [--out runs/train_digits]

Each run is the shipped ``fast`` recipe with its method swapped (``onebit train fast --method NAME``).
Time per epoch is the median over epochs after the first (which pays one-off costs), measured in one
process, one run after another, so the ratios compare like with like on this machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import onebit
from onebit.train import load_recipe, train


def run(method: str | None, epochs: int, seed: int, out: Path, options: dict | None = None) -> tuple[float, float]:
    recipe = load_recipe("fast").to_dict()
    recipe["seed"] = seed
    stage = recipe["stage"][0]
    stage["method"] = method
    stage["method_options"] = dict(options or {})
    stage["epochs"] = epochs
    tag = "-".join(f"{k}{v}" for k, v in sorted((options or {}).items()))
    run_dir = out / f"{method or 'fp'}{tag}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = train(recipe, run_dir, progress=False, device="cpu")
    times = [row["epoch_time"] for row in result.history[1:]] or [result.history[0]["epoch_time"]]
    return result.test_accuracy, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--out", type=Path, default=Path("runs/train_digits"))
    parser.add_argument("--hbnn-bits", type=float, nargs="+", default=None,
                        help="instead: hbnn at these average bitwidths (the paper's 1.4 bits ≈ 2 bits claim)")
    args = parser.parse_args()
    if args.hbnn_bits:
        return hbnn_mix(args)
    methods = args.methods or onebit.methods.available()
    start = time.perf_counter()
    rows = []
    for method in [None, *methods]:
        accs, times = [], []
        for seed in args.seeds:
            acc, epoch_time = run(method, args.epochs, seed, args.out)
            accs.append(acc)
            times.append(epoch_time)
        rows.append((method or "full precision", accs, statistics.median(times)))
        print(f"  {rows[-1][0]:<16} {statistics.mean(accs):6.2f}%  {rows[-1][2] * 1000:7.1f} ms/epoch",
              file=sys.stderr, flush=True)
    fp_time = rows[0][2]
    fp_acc = statistics.mean(rows[0][1])
    print(f"digits (fast recipe: MLP 512x3, {args.epochs} epochs, seeds {args.seeds}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, total {time.perf_counter() - start:.0f} s\n")
    print("| method | test accuracy (mean ± std over seeds) | Δ vs FP | time / epoch vs FP |")
    print("|---|---|---|---|")
    for name, accs, epoch_time in sorted(rows, key=lambda r: -statistics.mean(r[1])):
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {mean:.2f} ± {std:.2f} | {mean - fp_acc:+.2f} | {epoch_time / fp_time:.2f}x |")
    return 0


def hbnn_mix(args: argparse.Namespace) -> int:
    """HBNN at several average bitwidths (1-bit = XNOR-style residual binarization of one plane)."""
    print(f"hbnn on digits (fast recipe, {args.epochs} epochs, seeds {args.seeds})\n")
    print("| average bits | test accuracy (mean ± std) |")
    print("|---|---|")
    for bits in args.hbnn_bits:
        accs = [run("hbnn", args.epochs, seed, args.out, {"average_bits": bits})[0] for seed in args.seeds]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {bits:g} | {statistics.mean(accs):.2f} ± {std:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
