"""``onebit.summary``: per-layer and total complexity of a (binarized) model, in the shape users know
from Larq's ``lq.models.summary`` — precision, 1-bit and 32-bit parameters, memory, MACs per precision,
BOPs and the compression ratio — plus BiBench's theoretical-complexity quantities.

Counting rules (BiBench, Qin et al., ICML 2023, Sec. 3.5, "theoretical complexity"):

* a MAC between 1-bit weights and 1-bit activations is a binary operation (BOP); BiBench's FLOPs of a
  binarized network are ``BOPs / 64 + FP FLOPs`` (a 64-bit word does 64 XNOR/popcount MACs at once);
* binary parameters count 1/32 of a 32-bit parameter: ``Params_bi = binary / 32 + FP params``;
* the extra full-precision work of each method is counted as FP operations
  (:meth:`onebit.methods.Method.extra_fp_ops`): one multiply per output element for an output scale
  (α, Γ), one add per input element for a threshold (RSign), and one multiply-add per input element
  for a runtime activation scale (XNOR-Net's K);
* multi-bit weights (HBNN) count one BOP per MAC per active bit plane (their average bit width,
  :meth:`onebit.methods.Method.weight_bits`), and their "1-bit params" are the stored bits (weights ×
  average bits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .layers import BinaryLayer

__all__ = ["summary", "Summary", "LayerSummary"]


@dataclass
class LayerSummary:
    name: str
    kind: str
    precision: str  # e.g. "1/1" (weight bits / activation bits), "1/32", "32/32"
    output_shape: tuple[int, ...]
    params_1bit: int
    params_32bit: int
    macs_binary: int  # BOPs
    macs_fp: int
    extra_fp_ops: int
    #: The layer's parameter count as real numbers (what the fp32 model stores).
    params_total: int = 0

    @property
    def memory_bytes(self) -> float:
        return self.params_1bit / 8 + self.params_32bit * 4


@dataclass
class Summary:
    layers: list[LayerSummary] = field(default_factory=list)
    other_params: int = 0  # parameters of modules that are not Conv/Linear (BN, scales, embeddings)

    @property
    def totals(self) -> dict[str, float]:
        p1 = sum(layer.params_1bit for layer in self.layers)
        p32 = sum(layer.params_32bit for layer in self.layers) + self.other_params
        bops = sum(layer.macs_binary for layer in self.layers)
        fp = sum(layer.macs_fp + layer.extra_fp_ops for layer in self.layers)
        fp_equivalent_params = sum(layer.params_total for layer in self.layers) + self.other_params
        return {
            "params_1bit": p1,
            "params_32bit": p32,
            "memory_bytes": p1 / 8 + p32 * 4,
            "fp32_memory_bytes": fp_equivalent_params * 4,
            "compression_ratio": (fp_equivalent_params * 4) / max(p1 / 8 + p32 * 4, 1e-9),
            "bops": bops,
            "fp_macs": fp,
            "flops_bibench": bops / 64 + fp,
            "params_bibench": p1 / 32 + p32,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"layers": [dict(vars(layer), memory_bytes=layer.memory_bytes) for layer in self.layers],
                "totals": self.totals}

    def __str__(self) -> str:
        header = ("layer", "type", "W/A bits", "output", "1-bit params", "32-bit params", "memory KiB",
                  "BOPs", "FP MACs")
        rows = [header]
        for layer in self.layers:
            rows.append((layer.name, layer.kind, layer.precision, "x".join(map(str, layer.output_shape)),
                         f"{layer.params_1bit:,}", f"{layer.params_32bit:,}", f"{layer.memory_bytes / 1024:.2f}",
                         f"{layer.macs_binary:,}", f"{layer.macs_fp + layer.extra_fp_ops:,}"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        t = self.totals
        lines += [
            "",
            f"total params: {t['params_1bit']:,} 1-bit + {t['params_32bit']:,} 32-bit "
            f"(other layers' {self.other_params:,} included)",
            f"memory: {t['memory_bytes'] / 2**20:.3f} MiB (fp32 equivalent {t['fp32_memory_bytes'] / 2**20:.3f} MiB, "
            f"compression {t['compression_ratio']:.2f}x)",
            f"BOPs: {t['bops']:,}  FP MACs: {t['fp_macs']:,}  BiBench FLOPs (BOPs/64 + FP): {t['flops_bibench']:,.0f}",
        ]
        return "\n".join(lines)


def _macs(module: nn.Module, out: Tensor) -> int:
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    kernel = math.prod(module.kernel_size) * (module.in_channels // module.groups)
    return out.numel() * kernel


def _layer(name: str, module: nn.Module, inp: Tensor, out: Tensor) -> LayerSummary:
    weight_count = module.weight.numel()
    bias = 0 if module.bias is None else module.bias.numel()
    macs = _macs(module, out)
    kind = type(module).__name__
    if not isinstance(module, BinaryLayer):
        return LayerSummary(name, kind, "32/32", tuple(out.shape[1:]), 0, weight_count + bias, 0, macs, 0,
                            weight_count + bias)
    binary_w = module.binarize_weights
    binary_a = module.binarize_activations
    method = module.method
    planes = float(method.weight_bits(module)) if binary_w else 1.0
    w_bits = f"{planes:g}" if binary_w else "32"
    precision = f"{w_bits}/{f'{float(method.activation_bits(module)):g}' if binary_a else 32}"
    extra_params = sum(p.numel() for n, p in module.named_parameters() if n not in ("weight", "bias"))
    p1 = int(round(weight_count * planes)) if binary_w else 0
    p32 = (0 if binary_w else weight_count) + bias + extra_params
    bops = int(macs * planes) if (binary_w and binary_a) else 0
    fp = 0 if (binary_w and binary_a) else macs
    extra = method.extra_fp_ops(module, inp.numel(), out.numel())
    return LayerSummary(name, kind, precision, tuple(out.shape[1:]), p1, p32, bops, fp, extra,
                        weight_count + bias + extra_params)


def summary(model: nn.Module, input_shape: tuple[int, ...] | None = None, *, example_input: Any = None) -> Summary:
    """Per-layer and total complexity of ``model`` for one sample of ``input_shape`` (without the batch
    dimension), or for ``example_input``. ``print(summary(...))`` shows the table; ``.as_dict()`` returns
    it for programs."""
    if example_input is None:
        if input_shape is None:
            shape = getattr(model, "input_shape", None)
            if shape is None:
                raise ValueError("summary: pass input_shape (one sample's shape, e.g. (3, 32, 32)) or example_input")
            input_shape = tuple(shape)
        example_input = torch.zeros((1, *input_shape))
    result = Summary()
    seen: set[int] = set()
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            def hook(mod: nn.Module, args: tuple, out: Tensor, name: str = name) -> None:
                if id(mod) not in seen:
                    seen.add(id(mod))
                    result.layers.append(_layer(name, mod, args[0], out))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    counted = {id(p) for name, m in model.named_modules() if id(m) in seen for p in m.parameters()}
    result.other_params = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return result
