"""Quantization error of real trained weights: BiPer's QE versus ω, and HBNN's reconstruction error
versus the average number of bits.

Trains a small MLP and a small CNN in full precision on scikit-learn's ``load_digits`` (8×8 images,
bundled with scikit-learn, no download; a few seconds on a CPU), then measures on each layer's weights

* BiPer's quantization error ``mean|sin(ωW) − sign(sin(ωW))|`` (:func:`onebit.methods.biper.
  quantization_error`, as the reference's ``vis_get_QE.py``) for ω ∈ {1, 5, 10, 20, 30, 50};
* HBNN's relative reconstruction error ``‖Ŵ − W‖ / ‖W‖`` of the heterogeneous residual binarization
  at 1.0, 1.4 and 2.0 average bits (and the realized average).

Run: ``.venv/bin/python benchmarks/quantization.py`` (``--markdown`` prints the README tables).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from onebit.methods import get
from onebit.methods.biper import quantization_error
from onebit.methods.hbnn import residual_binarize

OMEGAS = (1, 5, 10, 20, 30, 50)
AVERAGE_BITS = (1.0, 1.4, 2.0)


def load_digits_tensors(seed: int = 0) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    return x[:split], y[:split], x[split:], y[split:]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, seed: int = 0) -> float:
    """Full-precision training with Adam (batch 128); returns the test accuracy."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y_train)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def weight_layers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, m.weight.detach()) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def hbnn_error(w: torch.Tensor, average: float) -> tuple[float, float]:
    method = get("hbnn", average_bits=average)
    result = residual_binarize(w.reshape(1, -1), method.target_bits, method.target_mix)
    error = ((result.approx - w.reshape(1, -1)).norm() / w.norm()).item()
    return error, result.bitmap.double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    data = load_digits_tensors()
    sep = " | " if args.markdown else "  "

    def row(cells: list[str]) -> str:
        return ("| " + sep.join(cells) + " |") if args.markdown else sep.join(f"{c:>12}" for c in cells)

    for name, build in (("MLP 64-128-64-10", mlp), ("CNN conv16-conv32-FC", cnn)):
        torch.manual_seed(0)
        model = build()
        start = time.perf_counter()
        accuracy = train(model, data, args.epochs)
        seconds = time.perf_counter() - start
        layers = weight_layers(model)
        print(f"\n{name}: full-precision test accuracy {100 * accuracy:.1f} % ({seconds:.1f} s, "
              f"{args.epochs} epochs, {len(data[1])} train / {len(data[3])} test digits)\n")

        print("BiPer QE = mean|sin(ωW) − sign(sin(ωW))| per layer (sum = the reference's total):")
        header = ["layer", "mean abs W"] + [f"ω={o}" for o in OMEGAS]
        print(row(header))
        if args.markdown:
            print("|" + "|".join(["---"] * len(header)) + "|")
        for lname, w in layers:
            print(row([lname, f"{w.abs().mean().item():.4f}"] + [f"{quantization_error(w, o):.4f}" for o in OMEGAS]))
        print(row(["sum", ""] + [f"{quantization_error([w for _, w in layers], o):.4f}" for o in OMEGAS]))

        print("\nHBNN relative reconstruction error ‖Ŵ − W‖/‖W‖ (realized average bits):")
        header = ["layer", "#weights"] + [f"{b:g} bits" for b in AVERAGE_BITS]
        print(row(header))
        if args.markdown:
            print("|" + "|".join(["---"] * len(header)) + "|")
        for lname, w in layers:
            cells = []
            for b in AVERAGE_BITS:
                error, realized = hbnn_error(w, b)
                cells.append(f"{error:.4f} ({realized:.3f})")
            print(row([lname, str(w.numel())] + cells))


if __name__ == "__main__":
    main()
