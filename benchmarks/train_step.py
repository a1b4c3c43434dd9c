"""Training-step cost of every method relative to its full-precision twin: time of one forward +
backward + SGD step and peak memory allocated during it, on ResNet-20 (CIFAR shape, batch 128) and on
the digits MLP of the ``fast`` recipe (512x3, 8x8 inputs, batch 32).

    python benchmarks/train_step.py                                   # the full table (~10 min, quiet 2 cores)
    python benchmarks/train_step.py --baseline-src /tmp/base/src      # before (that copy) and after
    python benchmarks/train_step.py --models mlp --methods bnn fda --repeats 3 --threads 2   # quick look

How it measures: each (source tree, model, thread count) runs in a fresh subprocess that builds every
method's network (and the full-precision one) and then takes its timed samples round-robin over the
methods — fp32, m1, m2, …, fp32, m1, … — so load on the machine hits every method alike; the figure is
each method's median step time divided by fp32's median from the same process. With ``--baseline-src``
the "before" and "after" subprocesses alternate per (model, threads), and the two ratio tables are
printed side by side. With ``--processes K`` each (side, model, threads) runs in K fresh processes in
turn and a cell is the median ratio over them, with its range: one process's ratio can be ~0.1x off on
a shared VM (its fp32 step alone moves 10-25 % between processes), so a claim at the line needs K >= 3.
Peak memory is the highest total of bytes allocated by torch during one step
(torch.profiler's memory events; on CUDA ``max_memory_allocated``), minus what was allocated before
it, relative to fp32.

The variants beside the registered method names: ``fp32-again`` (a second full-precision network, the
A/A control: how far from 1.00x two identical steps read, i.e. the noise floor), ``biper-s2`` (BiPer
stage 2, binary weights) and ``<pcpp preset>-a`` (a ProxConnect++ preset with binary activations,
``binarize_activations=True``); any row with the suffix ``:torch`` runs with the engine's native training
kernels off (the torch formulas), for an A/B of the kernels within one process:

    python benchmarks/train_step.py --models mlp --threads 1 --clock cpu --no-memory --methods irnet irnet:torch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: A row name suffix: the same row with the engine's native training kernels off during its steps
#: (``onebit.methods.functional.NATIVE_KERNELS``), for an A/B of the kernels in one process.
TORCH_PATH = ":torch"
#: A second full-precision network, timed in the same rounds as the methods: its "ratio" to fp32 is what
#: the measurement alone gives two identical steps (an A/A control), the noise floor of every other row.
CONTROL = "fp32-again"
PCPP = ("pcpp-bc", "pcpp-pc", "pcpp-bnn", "pcpp-bnn+", "bnn++")
MODELS = {
    # name: (zoo model, model options, input shape of one sample, batch size)
    "resnet20": ("resnet20", {}, (3, 32, 32), 128),
    "mlp": ("mlp", {"hidden": (512, 512, 512), "input_shape": (1, 8, 8)}, (1, 8, 8), 32),
}


def variant(name: str) -> tuple[str | None, dict]:
    """A table row name -> (registered method or None for fp32, extra options)."""
    name = name.removesuffix(TORCH_PATH)
    if name in ("fp32", CONTROL):
        return None, {}
    if name == "biper-s2":
        return "biper", {"stage": 2}
    if name.endswith("-a") and name[:-2] in PCPP:
        return name[:-2], {"binarize_activations": True}
    return name, {}


def default_rows(available: list[str]) -> list[str]:
    rows = [CONTROL] + [m for m in available]
    rows.insert(rows.index("biper") + 1, "biper-s2")
    rows += [f"{p}-a" for p in PCPP if p in available]
    return rows


# --------------------------------------------------------------------------------------------------
# Worker: one process, one source tree, one model, one thread count
# --------------------------------------------------------------------------------------------------
def build(model: str, row: str, device: str):
    import torch

    from onebit import models

    zoo, options, shape, batch = MODELS[model]
    method, extra = variant(row)
    torch.manual_seed(0)
    net = models.create(zoo, method=method, **options, **extra).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if getattr(torch, "compile", None) is not None and os.environ.get("ONEBIT_BENCH_COMPILE") == "1":
        net = torch.compile(net)
    return net, opt, x, y


def make_step(net, opt, x, y):
    import torch
    import torch.nn.functional as F

    import onebit

    extra_loss = getattr(onebit, "extra_loss", None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        extra = extra_loss(net) if extra_loss is not None else None
        if isinstance(extra, torch.Tensor):
            loss = loss + extra
        loss.backward()
        opt.step()

    return step


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory(step, device: str) -> int:
    """Bytes allocated at the step's high-water mark beyond what was allocated when it began."""
    import torch

    if device == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Every allocation and free (signed nbytes) in time order; the running sum's maximum is the peak.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    total = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        total += event.nbytes()
        peak = max(peak, total)
    return peak


def worker(args: argparse.Namespace) -> int:
    if args.src:
        # An editable install's import hook would win over sys.path; drop it so --src is what runs.
        sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
        sys.path.insert(0, str(Path(args.src).resolve()))
    import torch

    import onebit

    torch.set_num_threads(args.threads)
    functional = sys.modules.get("onebit.methods.functional")
    native = bool(getattr(functional, "NATIVE_KERNELS", False))  # the engine's training kernels in use

    def kernels_for(row: str) -> None:
        if functional is not None:
            functional.NATIVE_KERNELS = native and not row.endswith(TORCH_PATH)

    rows = args.methods
    steps = {}
    for row in rows:
        net, opt, x, y = build(args.model, row, args.device)
        steps[row] = make_step(net, opt, x, y)
        kernels_for(row)
        for _ in range(args.warmup):
            steps[row]()
    times: dict[str, list[float]] = {row: [] for row in rows}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for _ in range(args.repeats):
        for row in rows:
            kernels_for(row)
            sync(args.device)
            start = clock()
            steps[row]()
            sync(args.device)
            times[row].append(clock() - start)
    memory = {}
    for row in rows if args.memory else ():
        kernels_for(row)
        memory[row] = peak_memory(steps[row], args.device)
    json.dump({"onebit": str(Path(onebit.__file__).parent), "native": native, "times": times, "memory": memory},
              sys.stdout)
    return 0


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------
def start_worker(src: str | None, model: str, threads: int, rows: list[str], args, memory: bool):
    """The worker subprocess (started, not waited for) and its command line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model, "--threads", str(threads),
           "--repeats", str(args.mlp_repeats if model == "mlp" else args.repeats), "--warmup", str(args.warmup),
           "--device", args.device, "--clock", args.clock,
           "--methods", *rows]
    if src:
        cmd += ["--src", src]
    if memory:
        cmd.append("--memory")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if args.compile:
        env["ONEBIT_BENCH_COMPILE"] = "1"
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), cmd


def finish_worker(started) -> dict:
    proc, cmd = started
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{stderr[-4000:]}")
    return json.loads(stdout)


def run_worker(src: str | None, model: str, threads: int, rows: list[str], args, memory: bool) -> dict:
    return finish_worker(start_worker(src, model, threads, rows, args, memory))


def ratios(result: dict) -> tuple[dict[str, float], dict[str, float], float]:
    med = {row: statistics.median(ts) for row, ts in result["times"].items()}
    fp = med["fp32"]
    mem = result["memory"]
    mem_ratio = {row: mem[row] / mem["fp32"] for row in mem} if mem else {}
    return {row: t / fp for row, t in med.items()}, mem_ratio, fp


def pooled(runs: list[tuple[dict[str, float], dict[str, float], float]]) -> tuple:
    """Several worker processes' :func:`ratios` -> the median ratio per row over the processes, each row's
    (lowest, highest) ratio, the first process's memory ratios, and the median fp32 step. One process's
    ratio moves by ~0.1x between processes on a shared 2-core VM (its fp32 step alone by 10-25 %),
    more than samples within a process do: the spread shows how far one process's figure can be trusted."""
    rows = runs[0][0]
    ratio = {row: statistics.median(run[0][row] for run in runs) for row in rows}
    spread = {row: (min(run[0][row] for run in runs), max(run[0][row] for run in runs)) for row in rows}
    return ratio, runs[0][1], statistics.median(run[2] for run in runs), spread


def print_table(model: str, threads: list[int], results: dict, sides: list[str], rows: list[str]) -> None:
    head = ["method"]
    for side in sides:
        head += [f"{side} {t}T" for t in threads]
    mem_sides = [s for s in sides if results[(s, threads[0])][1]]
    head += [f"{side} peak mem" for side in mem_sides]
    print(f"\n{model}, batch {MODELS[model][3]}: step time (forward + backward + SGD) and peak memory vs fp32")
    fp_line = ", ".join(f"{side} {t}T {results[(side, t)][2] * 1000:.1f} ms" for side in sides for t in threads)
    print(f"fp32 step: {fp_line}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [row]
        for side in sides:
            cells += [_cell(results[(side, t)], row) for t in threads]
        cells += [f"{results[(side, threads[0])][1][row]:.2f}x" for side in mem_sides]
        print("| " + " | ".join(cells) + " |")


def _cell(result: tuple, row: str) -> str:
    """A ratio, with its lowest-highest over the worker processes when there were several."""
    low, high = result[3][row]
    return f"{result[0][row]:.2f}x" + (f" ({low:.2f}-{high:.2f})" if high > low else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=None,
                        help="rows (registered names, biper-s2, <pcpp preset>-a); default: all")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed ResNet-20 steps per method (median taken)")
    parser.add_argument("--mlp-repeats", type=int, default=40,
                        help="timed MLP steps per method (a step is milliseconds, so take more)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--baseline-src", default=None,
                        help="a second onebit source tree (its src/ folder) measured as 'before'")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall time, or the process's CPU time (with 1 thread: the work done, little "
                             "affected by other jobs on a busy machine)")
    parser.add_argument("--compile", action="store_true", help="wrap every network in torch.compile")
    parser.add_argument("--parallel", action="store_true",
                        help="run the before and after workers at the same time (for --clock cpu at 1 thread on "
                             "a machine with a core for each: half the wall time, both under the same load)")
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes per (side, model, threads), run in turn (sides alternating); "
                             "the table gives the median ratio over them and its range")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        return worker(args)
    if args.device == "cuda":
        args.threads = args.threads[:1]
    sys.path.insert(0, str(HERE.parent / "src"))
    import torch

    import onebit

    rows = ["fp32"] + [r for r in (args.methods or default_rows(onebit.methods.available())) if r != "fp32"]
    sides = ["before", "after"] if args.baseline_src else ["after"]
    # This tree as installed (editable) when it is the one imported, so its compiled engine comes with it:
    # a --src tree without onebit/_engine*.so runs without the native training kernels (see "native").
    own = HERE.parent / "src"
    srcs = {"before": args.baseline_src,
            "after": None if Path(onebit.__file__).resolve().parent.parent == own.resolve() else str(own)}
    cpu = _cpu_name()
    print(f"torch {torch.__version__}, device {args.device} ({cpu}), {args.repeats} samples per method "
          f"(MLP: {args.mlp_repeats}), interleaved; {'compiled' if args.compile else 'eager'}")
    start = time.perf_counter()
    for model in args.models:
        results = {}
        for threads in args.threads:
            runs = {side: [] for side in sides}
            for process in range(args.processes):
                memory = not args.no_memory and threads == args.threads[0] and process == 0
                for side, out in _measure(srcs, sides, model, threads, rows, args, memory).items():
                    runs[side].append(ratios(out))
                    print(f"  {model} {threads}T {side}: fp32 {runs[side][-1][2] * 1000:.1f} ms "
                          f"({out['onebit']}; native kernels {'on' if out.get('native') else 'off'})",
                          file=sys.stderr, flush=True)
            for side in sides:
                results[(side, threads)] = pooled(runs[side])
        print_table(model, args.threads, results, sides, rows)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


def _measure(srcs: dict, sides: list[str], model: str, threads: int, rows: list[str], args,
             memory: bool) -> dict[str, dict]:
    """One worker's result per side: in turn, or with --parallel both at once (the same load on both)."""
    if args.parallel:
        started = {side: start_worker(srcs[side], model, threads, rows, args, memory) for side in sides}
        return {side: finish_worker(started[side]) for side in sides}
    return {side: run_worker(srcs[side], model, threads, rows, args, memory) for side in sides}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
