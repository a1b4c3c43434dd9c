"""BiPer's accuracy in the default suite, in the form it trains (stage 1) and in its binary form (stage 2).

BiPer's stage 1 (the method's default, as the reference's ``--stage2`` off) trains and evaluates with the
real weights sin(ωW) and binary activations; only stage 2 binarizes the weights to sign(sin(ωW)). The
suite's accuracy track measures the trained stage-1 model, so BiPer's row there is not W1A1 for its
weights. This script loads each trained BiPer model of a results folder, switches it to stage 2
(:func:`onebit.methods.biper.to_stage2`, no fine-tuning) and evaluates both forms on the same test set.

    python benchmarks/bench-default/biper_stage2.py /tmp/bench-default-out
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from onebit.methods.biper import to_stage2
from onebit.train.trainer import evaluate, load_data, load_run_model


def main(out: str) -> int:
    db = sqlite3.connect(Path(out) / "results.sqlite")
    rows = db.execute("select run_id, task, seed from runs where method='biper' and role='main' "
                      "order by task, seed").fetchall()
    print("| task | seed | stage 1 (sin(ωW) weights) % | stage 2 (sign(sin(ωW))) % |")
    print("|---|---|---|---|")
    for run_id, task, seed in rows:
        model, recipe, _ = load_run_model(Path(out) / "runs" / run_id / "model.pt")
        loader = DataLoader(load_data(recipe).test, batch_size=512)
        with torch.no_grad():
            stage1, _ = evaluate(model, loader, torch.device("cpu"))
            stage2, _ = evaluate(to_stage2(model).eval(), loader, torch.device("cpu"))
        print(f"| {task} | {seed} | {stage1:.2f} | {stage2:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
