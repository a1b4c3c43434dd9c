"""End to end: a binarized ResNet-18 (ImageNet shape, 224x224, batch 1) exported to the packed 1-bit
engine vs the same network in torch fp32; latency at 1 and 2 threads, and file size.

    python benchmarks/e2e.py [--method bireal] [--repeats 20] [--kernel avx2] [--ablation] [--profile]

torch fp32 is timed in both NCHW and channels_last and the faster one is reported (the strongest
baseline); at each thread count the samples of the three variants alternate, so the speedups are
side by side.
The packed model keeps the full-precision stem, downsample 1x1 convs and classifier in torch, as the
papers do; every binary 3x3 conv runs on the engine with BatchNorm and the activation fused.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import onebit.models
from onebit.bench.deployment import timed_side_by_side  # samples of every runtime alternate
from onebit.deploy import export, kernels, load, save
from onebit.deploy.export import optimize_for_inference

sys.path.insert(0, str(Path(__file__).parent))
from _nets import trained_looking_batchnorm  # noqa: E402


def profile_plan(plan: torch.fx.GraphModule, x: torch.Tensor, repeats: int) -> None:
    """Median time per node of the packed model's execution plan on 1 thread (run node by node by
    torch.fx's Interpreter, whose own overhead lands in no node), grouped into the engine's nodes
    and torch's."""
    from onebit.deploy.export import _ChainedBinary, _ResidualBinary
    from onebit.deploy.packed import PackedBinary

    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    samples: dict[str, list[float]] = {}
    engine_nodes = set()

    class Timed(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node):
            start = time.perf_counter()
            result = super().run_node(n)
            if n.op in ("call_module", "call_function", "call_method"):
                if n.op == "call_module":
                    m = self.module.get_submodule(n.target)
                    key = f"{type(m).__name__} {n.target}"
                    if isinstance(m, (PackedBinary, _ChainedBinary, _ResidualBinary)):
                        engine_nodes.add(key)
                else:
                    key = f"{getattr(n.target, '__name__', n.target)} ({n.name})"
                samples.setdefault(key, []).append(time.perf_counter() - start)
            return result

    with torch.no_grad():
        for _ in range(repeats + 3):
            Timed(plan).run(x)
    ms = {k: 1000 * statistics.median(v[3:]) for k, v in samples.items()}
    engine = sum(v for k, v in ms.items() if k in engine_nodes)
    other = sum(v for k, v in ms.items() if k not in engine_nodes)
    print(f"\nexecution plan, 1 thread, median per node: engine nodes {engine:.2f} ms "
          f"({len(engine_nodes)} nodes), torch nodes {other:.2f} ms ({len(ms) - len(engine_nodes)} nodes)")
    print("\n| node (top 12) | ms | runs on |\n|---|---|---|")
    for k, v in sorted(ms.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {k} | {v:.3f} | {'engine' if k in engine_nodes else 'torch'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="bireal")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--kernel", default=None, help="force a kernel path (portable, popcnt, avx2, avx512)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ablation", action="store_true",
                        help="also time the packed model without its residual-block fusion, side by side")
    parser.add_argument("--profile", action="store_true",
                        help="also split the packed model's time by node of its execution plan (1 thread)")
    args = parser.parse_args()
    if args.kernel:
        kernels.set_kernel(args.kernel)

    torch.manual_seed(0)
    fp = onebit.models.create("resnet18_imagenet", num_classes=1000).eval()
    binary = onebit.models.create("resnet18_imagenet", num_classes=1000, method=args.method).eval()
    trained_looking_batchnorm(binary)  # ties at an accumulator of 0 would flip signs by chance
    x = torch.randn(1, 3, 224, 224)
    packed = export(binary)
    with torch.no_grad():
        err = (packed(x) - binary(x)).abs().max().item() / binary(x).abs().max().item()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onebit"
        save(packed, path)
        packed_size = path.stat().st_size
        load_ms = []
        for _ in range(3):
            t0 = time.perf_counter()
            load(path)
            load_ms.append(1e3 * (time.perf_counter() - t0))
    buffer = io.BytesIO()
    torch.save(fp.state_dict(), buffer)
    fp_size = len(buffer.getvalue())

    print(f"ResNet-18 (ImageNet, 224x224, batch 1), method {args.method}, kernel {kernels.active_kernel()}, "
          f"torch {torch.__version__}; packed vs PyTorch max relative difference {err:.1e}\n")
    print("| threads | torch fp32 NCHW ms | torch fp32 channels_last ms | onebit packed ms | speedup vs best torch |")
    print("|---|---|---|---|---|")
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)  # Module.to works in place
    x_cl = x.to(memory_format=torch.channels_last)
    packed_ms = {}
    for threads in args.threads:
        ms = timed_side_by_side({"nchw": (fp, x), "cl": (fp_cl, x_cl), "packed": (packed, x)}, threads, args.repeats)
        packed_ms[threads] = ms["packed"]
        best = min(ms["nchw"], ms["cl"])
        print(f"| {threads} | {ms['nchw']:.2f} | {ms['cl']:.2f} | {ms['packed']:.2f} | {best / ms['packed']:.2f}x |")
    if len(args.threads) > 1:
        t0 = args.threads[0]
        print("\n" + ", ".join(f"onebit {t} threads vs {t0}: {packed_ms[t0] / packed_ms[t]:.2f}x"
                               for t in args.threads[1:]))
    print(f"\nfile size: fp32 state_dict {fp_size / 2**20:.2f} MiB, packed {packed_size / 2**20:.2f} MiB "
          f"({fp_size / packed_size:.1f}x smaller); load() {statistics.median(load_ms):.0f} ms "
          "(median of 3, digest check included)")
    if args.ablation:
        # The execution plan with and without the residual rewrite (conv + shortcut add + activation,
        # and the next conv's packed input, in one engine pass), samples alternated.
        # The same with the fused blocks writing a new buffer instead of over their shortcut.
        unfused = optimize_for_inference(packed.net, fuse_residuals=False)
        fresh_out = optimize_for_inference(packed.net, overwrite_residuals=False)
        with torch.no_grad():
            assert torch.equal(unfused(x_cl), packed(x)), "the rewrite must not change the output"
            assert torch.equal(fresh_out(x_cl), packed(x)), "writing over the shortcut must not either"
        print("\n| threads | packed, residual blocks fused ms | fused, output not over the shortcut ms "
              "| not fused ms | fusion speedup | of which writing over the shortcut |\n|---|---|---|---|---|---|")
        for threads in args.threads:
            plans = {"fused": (packed.execution_plan(), x_cl), "fresh": (fresh_out, x_cl), "unfused": (unfused, x_cl)}
            ms = timed_side_by_side(plans, threads, 4 * args.repeats)
            print(f"| {threads} | {ms['fused']:.2f} | {ms['fresh']:.2f} | {ms['unfused']:.2f} | "
                  f"{ms['unfused'] / ms['fused']:.3f}x | {ms['fresh'] / ms['fused']:.3f}x |")
    if args.profile:
        profile_plan(packed.execution_plan(), x_cl, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
