"""Binary depthwise convolution against torch fp32 depthwise conv, batch 1, same process.

For each shape (3x3, padding 1) times:
  * torch fp32 ``F.conv2d(x, w, groups=C)`` in NCHW and in channels_last (the faster one is the
    baseline);
  * ``binary_conv2d(..., groups=C)`` on each kernel path with packed input and
    - bits output: fused BatchNorm (scale, bias) + sign -> packed bits (the layer as it runs
      inside a BNN: depthwise -> BN -> sign for the next binary layer),
    - float output: fused BatchNorm -> float32 (channels_last).
Medians of ``--repeats`` samples; speedup = torch ms / onebit ms.

    python benchmarks/depthwise.py                  # 1 thread, zero padding
    python benchmarks/depthwise.py --repeats 9 --pad-value -1 --threads 1
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F
from kernels import timeit  # benchmarks/kernels.py, beside this script

from onebit.deploy import kernels as K

# name, channels, H, W, stride
SHAPES = [
    ("64ch 56x56", 64, 56, 56, 1),
    ("128ch 28x28", 128, 28, 28, 1),
    ("256ch 14x14", 256, 14, 14, 1),
    ("512ch 7x7", 512, 7, 7, 1),
    ("128ch 56x56 /s2", 128, 56, 56, 2),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and onebit (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="samples per measurement (default 5)")
    ap.add_argument("--pad-value", type=int, default=0, choices=[-1, 0, 1], help="binary padding value")
    ap.add_argument("--kernels", default=None, help="comma-separated kernel paths (default: all available)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    K.set_num_threads(args.threads)
    kernels = args.kernels.split(",") if args.kernels else K.available_kernels()
    g = torch.Generator().manual_seed(0)
    print(f"# onebit depthwise benchmark: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"3x3 pad 1 (binary pad value {args.pad_value}), median of {args.repeats}")  # fmt: skip
    print()
    print("| shape | torch fp32 ms | layout | kernel | bits-out ms | speedup | float-out ms | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for name, c, h, w, stride in SHAPES:
        x = torch.randn(1, c, h, w, generator=g)
        wt = torch.randn(c, 1, 3, 3, generator=g)
        xl = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            t_nchw = timeit(lambda: F.conv2d(x, wt, stride=stride, padding=1, groups=c), args.repeats)
            t_cl = timeit(lambda: F.conv2d(xl, wt, stride=stride, padding=1, groups=c), args.repeats)
        t_torch, layout = (t_nchw, "NCHW") if t_nchw <= t_cl else (t_cl, "channels_last")
        xp = K.pack_activations(x)
        wp = K.pack_weights(wt, groups=c)
        scale, bias = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
        tb = K.OutputTransform(scale, bias, output="bits")
        tf = K.OutputTransform(scale, bias)
        kw = dict(stride=stride, padding=1, pad_value=args.pad_value, groups=c)
        for kernel in kernels:
            K.set_kernel(kernel)
            t_bits = timeit(lambda: K.binary_conv2d(xp, wp, transform=tb, **kw), args.repeats)
            t_float = timeit(lambda: K.binary_conv2d(xp, wp, transform=tf, **kw), args.repeats)
            print(f"| {name} | {t_torch * 1e3:.3f} | {layout} | {kernel} | {t_bits * 1e3:.3f} | "
                  f"{t_torch / t_bits:.2f}x | {t_float * 1e3:.3f} | {t_torch / t_float:.2f}x |")  # fmt: skip
        K.set_kernel(None)


if __name__ == "__main__":
    main()
