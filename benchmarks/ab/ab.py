"""Before/after driver: alternates worker processes of the old and the new engine (order swapped each
round), then reports per row the median over rounds of each side and the ratio new/old."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

old, new, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
py = sys.executable
res = {"old": [], "new": []}
for r in range(rounds):
    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
        src = old if side == "old" else new
        out = subprocess.run(
            [py, str(Path(__file__).with_name("ab_worker.py")), "--src", src] + sys.argv[4:],
            capture_output=True,
            text=True,
            check=True,
        )
        res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r} {side} done", file=sys.stderr, flush=True)
print("| layer | kernel | old µs | new µs | new/old |\n|---|---|---|---|---|")
ratios = []
for key in res["old"][0]:
    o = statistics.median(x[key] for x in res["old"]) * 1e6
    n = statistics.median(x[key] for x in res["new"]) * 1e6
    name, kern = key.split(" | ")
    ratios.append(n / o)
    print(f"| {name} | {kern} | {o:.1f} | {n:.1f} | {n / o:.3f} |")
print(f"\ngeometric mean new/old over {len(ratios)} rows: {statistics.geometric_mean(ratios):.3f}")
