"""A run's bit widths — weights and activations of its binary layers — and the group label built from
them (``W1A1``, ``W1A32``, ``W1.4A1``, ``W32A32``).

BiBench compares 1-bit weights *and* activations throughout (Qin et al., ICML 2023, Sec. 3); a method
run with real activations (ProxConnect++'s presets and BNN++ by default, ``binarize_activations=False``)
or with several weight bits (HBNN's heterogeneous bitwidths, 1.4 average bits by default) is a
different setting. The benchmark records the widths of every run (metrics ``w_bits`` and ``a_bits``)
and ranks only runs of the same label against each other (:mod:`onebit.bench.scores`).

Widths are averages over the binary layers weighted by their number of weights; the first and last
layers the papers keep real are not binary layers and do not count (every method keeps them alike).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FULL_PRECISION", "PRIMARY", "declared_bits", "model_bits", "precision_label"]

FULL_PRECISION = 32.0
#: The setting BiBench compares and the default suite ranks: 1-bit weights and activations.
PRIMARY = "W1A1"


def _fmt(bits: float) -> str:
    rounded = round(float(bits), 1)
    return f"{rounded:g}"


def precision_label(w_bits: float, a_bits: float) -> str:
    """``W<weight bits>A<activation bits>``, each rounded to one decimal (``W1A1``, ``W1.4A1``)."""
    return f"W{_fmt(w_bits)}A{_fmt(a_bits)}"


def _computes_with_real_weights(method: Any) -> bool:
    """BiPer's stage 1 (its default) computes with the real weights sin(ωW); only stage 2 uses their sign.
    A stage-1 model is therefore not W1 whatever its deployed form: its accuracy must not be ranked
    against W1A1 runs (benchmarks/bench-default/README.md measured 76.9% vs 49.5% on MNIST-1D)."""
    return declares_real_weights(getattr(method, "name", ""), getattr(method, "config", {}))


def declares_real_weights(method: str, options: dict[str, Any] | None = None) -> bool:
    """Whether a model of ``method`` with ``options`` still computes with real weights because its method
    binarizes them only in a final stage (:meth:`onebit.methods.base.Method.final_stage`): BiPer's stage 1,
    its default. The benchmark trains such runs through their final stage (``RunSpec.final_stage``);
    results recorded before it did measured them as W1, and the scores read this rule for them."""
    if method == "fp":
        return False
    from ..methods import method_class

    try:
        return method_class(method).final_stage(dict(options or {})) is not None
    except ValueError:  # a method this version does not know (results of another version)
        return False


def _layer_bits(layer: nn.Module) -> tuple[float, float]:
    method = layer.method
    if not getattr(layer, "binarize_weights", True) or _computes_with_real_weights(method):
        w_bits = FULL_PRECISION
    elif getattr(method, "multibit", False):
        from ..methods.hbnn import average_bits

        w_bits = float(average_bits(layer))
    else:
        w_bits = 1.0
    if not getattr(layer, "binarize_activations", True):
        a_bits = FULL_PRECISION
    elif getattr(method, "config", {}).get("activations") == "hetero":  # HBNN's multi-bit activations
        a_bits = float(method.target_average)
    else:
        a_bits = 1.0
    return w_bits, a_bits


def model_bits(model: nn.Module) -> tuple[float, float]:
    """Average weight and activation bit widths of ``model``'s binary layers (weighted by weight count);
    ``(32, 32)`` for a network without binary layers."""
    from ..nn.layers import BinaryLayer

    total = w_sum = a_sum = 0.0
    for module in model.modules():
        if isinstance(module, BinaryLayer):
            n = float(module.weight.numel())
            w_bits, a_bits = _layer_bits(module)
            total += n
            w_sum += n * w_bits
            a_sum += n * a_bits
    if total == 0:
        return FULL_PRECISION, FULL_PRECISION
    return w_sum / total, a_sum / total


def declared_bits(method: str, options: dict[str, Any] | None = None) -> tuple[float, float]:
    """The widths a run of ``method`` with layer/method ``options`` asks for, without building it (for
    results recorded before the runner measured ``w_bits``/``a_bits``): the method's activation default
    unless ``binarize_activations`` is given, HBNN's ``average_bits`` (1.4 by default) for its weights."""
    from ..methods import method_class

    options = dict(options or {})
    if method == "fp":
        return FULL_PRECISION, FULL_PRECISION
    cls = method_class(method)
    real_weights = options.get("binarize_weights") is False or declares_real_weights(method, options)
    w_bits = FULL_PRECISION if real_weights else 1.0
    if w_bits == 1.0 and getattr(cls, "multibit", False):  # HBNN: the average its configuration asks for
        method_options = {k: v for k, v in options.items() if k in cls.options}
        w_bits = float(cls(**method_options).target_average)
    binary_a = options.get("binarize_activations", cls.binarizes_activations)
    a_bits = 1.0 if binary_a else FULL_PRECISION
    if binary_a and options.get("activations") == "hetero":
        a_bits = w_bits
    return w_bits, a_bits
