"""Train every method on scikit-learn's digits with the fast default recipe, plus the full-precision
baseline, and print a table: method, test accuracy, time per epoch relative to full precision.

    python benchmarks/train_digits.py [--epochs 10] [--seeds 0 1 2] [--out runs/train_digits]

Each run is the shipped ``fast`` recipe with its method swapped (``onebit train fast --method NAME``).
Time per epoch is the median over epochs after the first (which pays one-off costs). The runs go in
rounds, one per seed: full precision, every method, full precision again; a method's ratio in a round is
its time over the mean of that round's two full-precision runs, and the table gives the median ratio over
the rounds and its range (samples interleaved, as ``train_step.py`` does).

    python benchmarks/train_digits.py --hbnn-bits [MIX ...] [--data digits mnist1d] [--threads 1]

instead trains HBNN at bit mixes written as percentages at 1/2/3 bits (default: 100/0/0, the paper's
1.4-bit 70/20/10, its alternative 80/0/20, and 0/100/0) next to full precision, on each dataset (MNIST-1D
with the benchmark suite's MLP, 256x3), and prints test accuracy as mean ± std and the 95 % confidence
interval over seeds (Student t), plus the per-seed paired difference 2 bits − each mix.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import onebit
from onebit.train import load_recipe, train

#: The mixes compared by ``--hbnn-bits`` (percent of weights at 1/2/3 bits): homogeneous 1 bit, the paper's
#: 1.4-bit setting and its 80/0/20 alternative (Fromm et al. 2018, Sec. 4.3), homogeneous 2 bits.
HBNN_MIXES = ("100/0/0", "70/20/10", "80/0/20", "0/100/0")
#: The MLP widths per dataset: digits as the fast recipe, MNIST-1D as the benchmark suite's setting.
HIDDEN = {"digits": [512, 512, 512], "mnist1d": [256, 256, 256]}


def run(method: str | None, epochs: int, seed: int, out: Path, options: dict | None = None,
        data: str = "digits") -> tuple[float, float]:
    recipe = load_recipe("fast").to_dict()
    recipe["seed"] = seed
    recipe["data"]["name"] = data
    recipe["model"]["options"]["hidden"] = HIDDEN[data]
    stage = recipe["stage"][0]
    stage["method"] = method
    stage["method_options"] = dict(options or {})
    stage["epochs"] = epochs
    tag = "-".join(f"{k}{v}" for k, v in sorted((options or {}).items()))
    run_dir = out / data / f"{method or 'fp'}{tag}-seed{seed}".replace(" ", "").replace(",", "_")
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
    parser.add_argument("--hbnn-bits", nargs="*", default=None, metavar="MIX",
                        help="instead: hbnn at these mixes, percent at 1/2/3 bits (default: "
                             f"{' '.join(HBNN_MIXES)}; the paper's 1.4 bits ≈ 2 bits claim)")
    parser.add_argument("--data", nargs="+", default=["digits"], choices=sorted(HIDDEN),
                        help="datasets for --hbnn-bits (default: digits)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 is far faster on a loaded shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hbnn_bits is not None:
        return hbnn_mix(args, [parse_mix(text) for text in args.hbnn_bits or HBNN_MIXES])
    methods = args.methods or onebit.methods.available()
    start = time.perf_counter()
    names = ["full precision", *methods]
    accs: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    # Seeds outer, methods inner: each round times every method beside full precision (run at the round's
    # start and end), so a slow spell of a shared machine moves one round's ratios, not one method's row.
    for seed in args.seeds:
        fp_acc, fp_start = run(None, args.epochs, seed, args.out)
        round_times = {name: run(name, args.epochs, seed, args.out) for name in methods}
        fp_time = (fp_start + run(None, args.epochs, seed, args.out)[1]) / 2
        accs["full precision"].append(fp_acc)
        ratios["full precision"].append(1.0)
        for name, (acc, epoch_time) in round_times.items():
            accs[name].append(acc)
            ratios[name].append(epoch_time / fp_time)
        print(f"  seed {seed}: full precision {fp_time * 1000:.1f} ms/epoch, "
              + ", ".join(f"{n} {r[-1]:.2f}x" for n, r in ratios.items() if n != "full precision"),
              file=sys.stderr, flush=True)
    print_table(args, accs, ratios, time.perf_counter() - start)
    return 0


def print_table(args: argparse.Namespace, accs: dict[str, list[float]], ratios: dict[str, list[float]],
                seconds: float) -> None:
    fp_acc = statistics.mean(accs["full precision"])
    print(f"digits (fast recipe: MLP 512x3, {args.epochs} epochs, seeds {args.seeds}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, total {seconds:.0f} s\n")
    print("| method | test accuracy (mean ± std over seeds) | Δ vs FP | "
          "time / epoch vs FP (median over seeds, range) |")
    print("|---|---|---|---|")
    for name in sorted(accs, key=lambda n: -statistics.mean(accs[n])):
        mean = statistics.mean(accs[name])
        std = statistics.stdev(accs[name]) if len(accs[name]) > 1 else 0.0
        spread = f" ({min(ratios[name]):.2f}-{max(ratios[name]):.2f})" if name != "full precision" else ""
        print(f"| {name} | {mean:.2f} ± {std:.2f} | {mean - fp_acc:+.2f} | "
              f"{statistics.median(ratios[name]):.2f}x{spread} |")


def parse_mix(text: str) -> tuple[float, float, float]:
    """``"70/20/10"`` → (0.7, 0.2, 0.1): percent of weights at 1, 2 and 3 bits."""
    parts = text.split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 100) > 1e-6:
        raise SystemExit(f"--hbnn-bits: {text!r} is not three percentages at 1/2/3 bits summing to 100, "
                         "e.g. 70/20/10")
    return tuple(v / 100 for v in values)


def average_of(label: str) -> float:
    """The average bitwidth of a ``"70/20/10"`` label."""
    return sum(bits * float(percent) for bits, percent in enumerate(label.split("/"), start=1)) / 100


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95 % Student-t confidence interval of the mean."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0, math.nan
    std = statistics.stdev(values)
    return mean, std, stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))


def hbnn_mix(args: argparse.Namespace, mixes: list[tuple[float, float, float]]) -> int:
    """HBNN at several bit mixes on each dataset, full precision alongside, one table per dataset."""
    start = time.perf_counter()
    for data in args.data:
        results = {"full precision": [run(None, args.epochs, seed, args.out, data=data)[0] for seed in args.seeds]}
        for mix in mixes:
            options = {"bits": (1, 2, 3), "mix": mix}
            label = "/".join(f"{100 * f:g}" for f in mix)
            results[label] = [run("hbnn", args.epochs, seed, args.out, options, data)[0] for seed in args.seeds]
            print(f"  {data} {label}: {results[label]}", file=sys.stderr, flush=True)
        two_bits = results.get("0/100/0")
        print(f"\nhbnn on {data} (fast recipe: MLP {'x'.join(map(str, HIDDEN[data]))}, {args.epochs} epochs, "
              f"seeds {args.seeds}, binary activations), torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads, {time.perf_counter() - start:.0f} s so far\n")
        print("| % weights at 1/2/3 bits | average bits | test accuracy % (mean ± std) | 95 % CI of the mean | "
              "2 bits − this, paired by seed (mean [95 % CI]) |")
        print("|---|---|---|---|---|")
        for label, accs in results.items():
            mean, std, half = mean_ci(accs)
            bits = "32" if label == "full precision" else f"{average_of(label):g}"
            paired = "—"
            if two_bits is not None and label not in ("full precision", "0/100/0"):
                d_mean, _, d_half = mean_ci([b - a for a, b in zip(accs, two_bits)])
                paired = f"{d_mean:+.2f} [{d_mean - d_half:+.2f}, {d_mean + d_half:+.2f}]"
            interval = f"[{mean - half:.2f}, {mean + half:.2f}]"
            print(f"| {label} | {bits} | {mean:.2f} ± {std:.2f} | {interval} | {paired} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
