"""onebit's packed engine vs Larq Compute Engine on the same binarized ResNet-18 (ImageNet shape 224x224,
batch 1): median latency at 1 and 2 threads, LCE with each of its x86 options.

    python benchmarks/lce.py [--method bireal] [--bireal-net] [--repeats 10] [--rounds 3]

The network is ``onebit.models.create("resnet18_imagenet", num_classes=1000, method=...)`` (the same one
``benchmarks/e2e.py`` times; ``--bireal-net`` gives Bi-Real-18's per-conv shortcuts instead), with
BatchNorm statistics set as in a trained network. onebit runs ``onebit.deploy.export(model)``; LCE runs
the flatbuffer of ``onebit.deploy.lce.to_lce`` in LCE's own interpreter with ``use_indirect_bgemm``
and ``use_xnnpack`` each on and off. Both outputs are checked against the eval-mode PyTorch model first.
Samples of all configurations are interleaved over ``--rounds`` rounds (this shared 2-vCPU machine is
noisy), each batch after a short idle pause and one untimed call, and the median of every sample of a
configuration is reported.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import onebit.models
from onebit.deploy import export, kernels, lce

sys.path.insert(0, str(Path(__file__).parent))
from _nets import trained_looking_batchnorm  # noqa: E402


def sample(fn, repeats: int) -> list[float]:
    """Wall times of ``fn()`` in milliseconds."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - start))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="bireal")
    parser.add_argument("--bireal-net", action="store_true", help="Bi-Real-18 shortcuts (bireal=True)")
    parser.add_argument("--pad-value", type=float, default=0.0, choices=[0.0, 1.0, -1.0],
                        help="binary convs' padding value (0: the papers'; +1: LCE's native one, which also "
                             "lets a bconv feeding only another bconv write bit-packed output)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if not lce.lce_available():
        print("larq-compute-engine is not installed: pip install --no-deps larq-compute-engine", file=sys.stderr)
        return 1

    torch.manual_seed(0)
    model = onebit.models.create("resnet18_imagenet", num_classes=1000, method=args.method,
                                 bireal=args.bireal_net, pad_value=args.pad_value).eval()
    trained_looking_batchnorm(model)
    x = torch.randn(1, 3, 224, 224)
    x_nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    packed = export(model)
    data = lce.to_lce_bytes(packed, x)
    with torch.no_grad():
        expected = model(x)
        err_packed = (packed(x) - expected).abs().max().item() / expected.abs().max().item()
    got = lce.interpreter(data).predict(x_nhwc)[0]
    err_lce = float(np.abs(got - expected.numpy()).max()) / expected.abs().max().item()

    configs = list(itertools.product([False, True], [False, True]))  # (indirect_bgemm, xnnpack)
    results: dict[int, dict[str, float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        kernels.set_num_threads(threads)
        runners = {"onebit": lambda: packed(x)}
        for bgemm, xnn in configs:
            interp = lce.interpreter(data, threads, use_indirect_bgemm=bgemm, use_xnnpack=xnn)
            runners[f"lce bgemm={int(bgemm)} xnnpack={int(xnn)}"] = (lambda it=interp: it.predict(x_nhwc))
        samples: dict[str, list[float]] = {k: [] for k in runners}
        with torch.no_grad():
            for fn in runners.values():  # warm-up
                for _ in range(3):
                    fn()
            for _ in range(args.rounds):
                for key, fn in runners.items():
                    # Let the previous runner's thread pool (ruy/XNNPACK spin-wait, then sleep) go idle:
                    # on 2 vCPUs its spinning threads would otherwise slow the next runner down.
                    time.sleep(0.2)
                    fn()
                    samples[key] += sample(fn, args.repeats)
        results[threads] = {k: statistics.median(v) for k, v in samples.items()}

    name = "Bi-Real-18" if args.bireal_net else "ResNet-18"
    print(f"{name} (ImageNet 224x224, batch 1), method {args.method}, pad_value {args.pad_value:g}; "
          f"onebit kernel {kernels.active_kernel()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}; median of "
          f"{args.rounds}x{args.repeats} calls")
    print(f"max relative difference to PyTorch: onebit packed {err_packed:.1e}, LCE {err_lce:.1e}; "
          f"flatbuffer {len(data) / 2**20:.2f} MiB\n")
    print("| threads | onebit packed ms | LCE best ms (options) | onebit speedup vs LCE best | "
          + " | ".join(f"LCE indirect_bgemm={int(b)} xnnpack={int(n)} ms" for b, n in configs) + " |")
    print("|---" * (4 + len(configs)) + "|")
    for threads, row in results.items():
        lce_rows = {k: v for k, v in row.items() if k.startswith("lce")}
        best = min(lce_rows, key=lce_rows.get)
        print(f"| {threads} | {row['onebit']:.2f} | {lce_rows[best]:.2f} ({best[4:]}) | "
              f"{lce_rows[best] / row['onebit']:.2f}x | " + " | ".join(f"{v:.2f}" for v in lce_rows.values()) + " |")
    print(f"\ncommand: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
