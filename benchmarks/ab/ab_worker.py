"""One side of the before/after engine benchmark: imports onebit from --src (the editable install's
finder removed), times the layers of benchmarks/kernels.py (bits output, as in a BNN), a fused
residual layer, depthwise layers and the per-call overhead on every kernel path, 1 thread; prints JSON."""

import argparse
import json
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--src", required=True)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--cpu", action="store_true")
args = ap.parse_args()
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
sys.path.insert(0, args.src)
import torch  # noqa: E402

import onebit  # noqa: E402
from onebit.deploy import kernels as K  # noqa: E402

assert onebit.__file__.startswith(args.src), onebit.__file__

torch.set_num_threads(1)
K.set_num_threads(1)
torch.manual_seed(0)


CLOCK = time.thread_time if "--cpu" in sys.argv else time.perf_counter


def timeit(fn, repeats, min_time=0.02):
    # CLOCK: the calling thread's CPU time with --cpu (1 thread: the engine and torch run on it), so
    # time the scheduler gives other processes on a loaded machine is not counted
    fn()
    t0 = CLOCK()
    fn()
    one = max(CLOCK() - t0, 1e-6)
    inner = max(1, int(min_time / one))
    s = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        s.append((CLOCK() - t0) / inner)
    return statistics.median(s)


rows = {}
CONV = [
    ("conv3x3 56x56x64", 64, 56, 64, 3, 1, 1),
    ("conv3x3 14x14x256", 256, 14, 256, 3, 1, 1),
    ("conv3x3/s2 56->28 x128", 64, 56, 128, 3, 2, 1),
    ("conv1x1 28x28 256->256", 256, 28, 256, 1, 1, 0),
]
layers = {}
for name, cin, h, cout, k, s, p in CONV:
    x = K.pack_activations(torch.randn(1, cin, h, h))
    tr = K.OutputTransform(scale=torch.rand(cout) + 0.5, bias=torch.randn(cout), output="bits")
    layer = K.PreparedConv2d(K.pack_weights(torch.randn(cout, cin, k, k)), stride=s, padding=p, transform=tr)
    layers[name + " bits"] = lambda layer=layer, x=x: layer(x)
# a ResNet block's second conv: float output, residual added in place, PReLU, and the bits for the next layer
x = K.pack_activations(torch.randn(1, 128, 28, 28))
tr = K.OutputTransform(scale=torch.rand(128) + 0.5, bias=torch.randn(128), prelu=0.25)
res_layer = K.PreparedConv2d(K.pack_weights(torch.randn(128, 128, 3, 3)), padding=1, transform=tr, also_bits=True)
shortcut = torch.randn(1, 128, 28, 28).contiguous(memory_format=torch.channels_last)
layers["conv3x3 28x28x128 float+residual+bits"] = lambda: res_layer(x, residual=shortcut.clone())
# multi-plane (two masked planes, the general epilogue)
wp2 = K.pack_weight_planes(
    [torch.randn(128, 128, 3, 3)] * 2, [(torch.rand(128, 128, 3, 3) < 0.7).float()] * 2, [1.0, 0.5]
)
l2 = K.PreparedConv2d(wp2, padding=1, transform=K.OutputTransform(scale=torch.rand(128), bias=torch.randn(128)))
layers["conv3x3 28x28x128 2 planes float"] = lambda: l2(x)
xl = K.pack_activations(torch.randn(1, 4096))
wl = K.pack_weights(torch.randn(4096, 4096))
trl = K.OutputTransform(scale=torch.rand(4096) + 0.5, bias=torch.randn(4096))
layers["linear 4096->4096 float"] = lambda: K.binary_linear(xl, wl, transform=trl)
for c, h, s in [(128, 28, 1), (256, 14, 1), (128, 56, 2)]:
    xd = K.pack_activations(torch.randn(1, c, h, h))
    wd = K.pack_weights(torch.randn(c, 1, 3, 3), groups=c)
    for out in ("bits", "float"):
        trd = K.OutputTransform(scale=torch.rand(c) + 0.5, bias=torch.randn(c), output=out)
        ld = K.PreparedConv2d(wd, stride=s, padding=1, transform=trd, groups=c)
        layers[f"depthwise 3x3 {c}ch {h}x{h}/s{s} {out}"] = lambda ld=ld, xd=xd: ld(xd)
xo = K.pack_activations(torch.randn(1, 64, 1, 1))
lo = K.PreparedConv2d(K.pack_weights(torch.randn(64, 64, 1, 1)), transform=K.OutputTransform(output="bits"))
layers["per-call overhead 1x1 1 pixel 64ch"] = lambda: lo(xo)


only = os.environ.get("AB_ONLY")  # "substring of the layer name|kernel,kernel"
pick_layer, pick_kern = (only.split("|") + [""])[:2] if only else ("", "")
for kern in K.available_kernels():
    if pick_kern and kern not in pick_kern.split(","):
        continue
    K.set_kernel(kern)
    for name, fn in layers.items():
        if pick_layer and pick_layer not in name:
            continue
        rows[f"{name} | {kern}"] = timeit(fn, args.repeats)
K.set_kernel(None)
print(json.dumps(rows))
