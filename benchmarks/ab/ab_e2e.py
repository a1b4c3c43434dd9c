import json
import statistics
import subprocess
import sys
from pathlib import Path

old, new, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {"old": [], "new": []}
for r in range(rounds):
    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("ab_e2e_worker.py")), "--src", old if side == "old" else new],
            capture_output=True,
            text=True,
            check=True,
        )
        res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r} {side}: {res[side][-1]}", file=sys.stderr, flush=True)
hashes = {s: {k: {x["hash"][k] for x in res[s]} for k in res[s][0]["hash"]} for s in res}
print(
    "output sha256 per kernel path, old / new:",
    {k: (sorted(hashes["old"][k]), sorted(hashes["new"][k])) for k in hashes["old"]},
)
print(
    "identical on every path:",
    all(hashes["old"][k] == hashes["new"][k] and len(hashes["old"][k]) == 1 for k in hashes["old"]),
)
print("| ResNet-18 packed (auto kernel) | old ms | new ms | new/old | samples per side |\n|---|---|---|---|---|")
for key in res["old"][0]["ms"]:
    o = statistics.median(x["ms"][key] for x in res["old"])
    n = statistics.median(x["ms"][key] for x in res["new"])
    print(f"| {key} | {o:.2f} | {n:.2f} | {n / o:.3f} | {rounds} processes |")
