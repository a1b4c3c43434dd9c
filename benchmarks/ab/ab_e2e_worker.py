"""One side of the end-to-end before/after: benchmarks/e2e.py's binarized ResNet-18 (bireal, 224x224,
batch 1) exported to the packed engine, timed on 1 and 2 threads (auto kernel), and the output's
bytes hashed on every kernel path (bit-identity between the two engines); prints JSON."""

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--src", required=True)
ap.add_argument("--repeats", type=int, default=10)
args = ap.parse_args()
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
sys.path.insert(0, args.src)
import torch  # noqa: E402

import onebit  # noqa: E402
import onebit.models  # noqa: E402
from onebit.deploy import export, kernels  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent))
from _nets import trained_looking_batchnorm  # noqa: E402

assert onebit.__file__.startswith(args.src)

torch.manual_seed(0)
binary = onebit.models.create("resnet18_imagenet", num_classes=1000, method="bireal").eval()
trained_looking_batchnorm(binary)
x = torch.randn(1, 3, 224, 224)
packed = export(binary)
res = {"hash": {}, "ms": {}}
with torch.no_grad():
    for kern in kernels.available_kernels():
        kernels.set_kernel(kern)
        y = packed(x)
        res["hash"][kern] = hashlib.sha256(y.contiguous().numpy().tobytes()).hexdigest()[:16]
    kernels.set_kernel(None)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        kernels.set_num_threads(threads)
        packed(x)
        s = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            packed(x)
            s.append(time.perf_counter() - t0)
        res["ms"][f"{threads} threads"] = 1e3 * statistics.median(s)
print(json.dumps(res))
