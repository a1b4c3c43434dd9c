"""Which tensors a training step keeps alive for backward: after one forward pass (and the loss) of
ResNet-20 (CIFAR shape, batch 128), every tensor of 1 MiB or more that an op produced and that is still
alive, summed by (op, the onebit source line that called it, dtype). What the peak-memory column of
``train_step.py`` counts, broken down by who made it.

    python benchmarks/live_tensors.py fp32 bireal reactnet
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step  # noqa: E402

MIN_BYTES = 1 << 20


def _caller() -> str:
    frames = [f for f in traceback.extract_stack() if "/onebit/" in f.filename]
    return f"{frames[-1].filename.split('onebit/')[-1]}:{frames[-1].lineno}" if frames else "?"


class Recorder(TorchDispatchMode):
    """Records every large op output with a weak reference to its storage."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[tuple[str, str, str, int, StorageWeakRef]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() >= MIN_BYTES:
                storage = t.untyped_storage()
                self.outputs.append((str(func), _caller(), str(t.dtype), storage.nbytes(), StorageWeakRef(storage)))
        return out


def live_after_forward(row: str) -> collections.Counter:
    net, opt, x, y = train_step.build("resnet20", row, "cpu")
    train_step.make_step(net, opt, x, y)()  # one step first: lazy parameters, warm caches
    opt.zero_grad(set_to_none=True)
    recorder = Recorder()
    with recorder:
        loss = F.cross_entropy(net(x), y)
    gc.collect()
    alive: collections.Counter = collections.Counter()
    seen = set()
    for op, where, dtype, nbytes, ref in recorder.outputs:
        if not ref.expired() and ref.cdata not in seen:
            seen.add(ref.cdata)
            alive[(op, where, dtype)] += nbytes
    del loss
    return alive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="train_step.py row names (fp32, bnn, reactnet, biper-s2, ...)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for row in args.rows:
        alive = live_after_forward(row)
        print(f"== {row}: {sum(alive.values()) / 2**20:.1f} MiB alive after the forward pass")
        for (op, where, dtype), nbytes in alive.most_common(10):
            print(f"  {nbytes / 2**20:7.1f} MiB  {op}  {where}  {dtype}")


if __name__ == "__main__":
    main()
