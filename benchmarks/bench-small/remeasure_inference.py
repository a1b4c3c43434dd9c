"""Re-run the small suite's inference-track runs one at a time (nothing else of the suite running), with
onebit.bench.runner.execute, replacing their rows in the results database.

    python benchmarks/bench-small/remeasure_inference.py [OUT]      # OUT: the `onebit bench --out` folder

Why: in the suite run, these runs were timed while the other worker trained, and PC++ and BiPer were
still in a training-only state (fixed since: onebit.bench.deployment puts networks in their deployed form).
"""
import sys

from onebit.bench.db import ResultsDB
from onebit.bench.runner import execute
from onebit.bench.suite import load_suite

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bsmall/out"
suite = load_suite("benchmarks/bench-small/suite.toml")
specs = [s for s in suite.runs() if s.role == "inference"]
with ResultsDB(f"{OUT}/results.sqlite") as db:
    for spec in specs:
        record = execute(spec, OUT)
        db.write_run(record)
        latency = {k: round(v, 1) for k, v in record.metrics.items() if k.startswith("latency_ms")}
        print(spec.label, record.status, latency, flush=True)
