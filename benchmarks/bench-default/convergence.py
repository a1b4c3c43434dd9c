"""Are the default suite's full-precision baselines on their plateau?  (issue 16, item 2)

For every [[setting]] of a suite, trains the full-precision model with the suite's own hyper-parameters
for E epochs (the setting's) and for ``--factor``·E epochs, over seeds, through the benchmark's own run
path (:func:`onebit.bench.runner.execute`, accuracy only), and prints the mean test accuracy of both
with the difference: a setting is on its plateau when the longer run gains no more than ``--tolerance``
points. It also prints each setting's measured seconds per epoch and a binarized epoch (``--time-method``),
the inputs of the suite's time estimate.

    python benchmarks/bench-default/convergence.py default --seeds 0 1 2 --workers 2
    python benchmarks/bench-default/convergence.py default --setting 3 --factor 2
    python benchmarks/bench-default/convergence.py default --setting 1 --seeds 0 --method bnn --init fp

Runs go to a temporary directory; nothing is recorded in a results database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from onebit.bench import runner
from onebit.bench.suite import FP, RunSpec, load_suite


def _one(spec: RunSpec) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        if runner.fp_init(spec, out) is not None:  # init = "fp": its FP run first, in the same folder
            fp = runner.execute(replace(spec, method=FP, layer_options={}), out, threads=1)
            if fp.status != "done":
                raise RuntimeError(f"{spec.label}: its FP run failed: {fp.error}")
        record = runner.execute(spec, out, threads=1)
        wall = time.perf_counter() - start
    if record.status != "done":
        raise RuntimeError(f"{spec.label}: {record.error}")
    return {"acc": record.metrics["acc"], "epoch_s": record.metrics["epoch_time_s"], "wall_s": wall}


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _load_cache(path: str | None) -> dict[str, dict[str, Any]]:
    if path and Path(path).exists():
        return json.loads(Path(path).read_text())
    return {}


def _spec(suite: Any, index: int, method: str, seed: int, epochs: int, init: str | None = None) -> RunSpec:
    setting = suite.settings[index]
    hp = suite.hparams(setting, epochs=epochs, **({"init": init} if init else {}))
    return RunSpec(suite.name, "main", method, setting, seed, hp, ("accuracy",),
                   layer_options=suite.layer_options(method))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="a shipped suite name or a suite file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", type=int, nargs="*", help="indices into [[setting]] (default: all)")
    parser.add_argument("--factor", type=int, default=2, help="the longer run trains factor x E epochs")
    parser.add_argument("--tolerance", type=float, default=0.5, help="plateau: gain at most this many points")
    parser.add_argument("--method", default=FP, help="the model checked (default: the FP baseline)")
    parser.add_argument("--time-method", default="reactnet", help="a binarized method timed for 1 epoch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--init", choices=["scratch", "fp"],
                        help="override the suite's [train] init (fp: a binarized run starts from its FP run, "
                             "trained first in the same folder; its wall time includes it)")
    parser.add_argument("--cache", help="a JSON file of finished runs (read, and written after each run)")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    indices = args.setting if args.setting else list(range(len(suite.settings)))
    jobs: dict[tuple[int, str, int], RunSpec] = {}
    for i in indices:
        epochs = suite.hparams(suite.settings[i])["epochs"]
        for seed in args.seeds:
            jobs[(i, "E", seed)] = _spec(suite, i, args.method, seed, epochs, args.init)
            jobs[(i, "2E", seed)] = _spec(suite, i, args.method, seed, args.factor * epochs, args.init)
        jobs[(i, "bin", 0)] = _spec(suite, i, args.time_method, 0, 1)
    cache = _load_cache(args.cache)
    todo = {key: spec for key, spec in jobs.items() if spec.run_id not in cache}
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(_one, spec): (key, spec) for key, spec in todo.items()}
        for future in as_completed(futures):
            key, spec = futures[future]
            cache[spec.run_id] = future.result()
            print(f"{spec.label} ({spec.hparams['epochs']} epochs): {cache[spec.run_id]}", flush=True)
            if args.cache:
                Path(args.cache).write_text(json.dumps(cache, indent=1))
    results = {key: cache[spec.run_id] for key, spec in jobs.items()}
    print(f"suite {suite.name}: {args.method} accuracy at E and {args.factor}E epochs, seeds {args.seeds}; "
          f"plateau = gain <= {args.tolerance} points")
    print(f"| task | arch | E | acc @E % (sd) | acc @{args.factor}E % (sd) | gain | plateau | "
          f"s/epoch fp | s/epoch {args.time_method} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i in indices:
        setting = suite.settings[i]
        short = [results[(i, "E", s)]["acc"] for s in args.seeds]
        long = [results[(i, "2E", s)]["acc"] for s in args.seeds]
        gain = statistics.mean(long) - statistics.mean(short)
        epoch_fp = statistics.mean(results[(i, "E", s)]["epoch_s"] for s in args.seeds)
        print(f"| {setting.task} {setting.data_options or ''} | {setting.arch} | "
              f"{suite.hparams(setting)['epochs']} | {statistics.mean(short):.2f} ({sd(short):.2f}) | "
              f"{statistics.mean(long):.2f} ({sd(long):.2f}) | {gain:+.2f} | "
              f"{'yes' if gain <= args.tolerance else 'NO'} | {epoch_fp:.2f} | "
              f"{results[(i, 'bin', 0)]['epoch_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
