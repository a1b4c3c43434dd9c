"""``binarize()``: swap the Conv/Linear layers of any torch model for binary ones, in place; and the two
training-loop helpers ``schedule_step()`` and ``extra_loss()``."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..methods import Method, get
from .layers import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear

__all__ = ["binarize", "binary_layers", "schedule_step", "extra_loss", "convertible_layers", "finalize",
           "LAYER_OPTIONS", "LINEAR_LAYER_OPTIONS"]

_SWAP: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: BinaryConv1d,
    nn.Conv2d: BinaryConv2d,
    nn.Linear: BinaryLinear,
}
#: The per-layer switches of the binary layers a linear layer takes (keyword arguments of binarize,
#: onebit.models.create and the layers themselves).
LINEAR_LAYER_OPTIONS = ("binarize_weights", "binarize_activations")
#: ... and those of a convolution, which also pads (``pad_value``). The one list of layer options.
LAYER_OPTIONS = ("pad_value", *LINEAR_LAYER_OPTIONS)


def _swap_target(module: nn.Module) -> type[nn.Module] | None:
    if isinstance(module, BinaryLayer):
        return None
    for base, target in _SWAP.items():
        if isinstance(module, base):
            return target
    return None


def convertible_layers(model: nn.Module, example_input: Any = None) -> list[str]:
    """Qualified names of the Conv1d/Conv2d/Linear layers ``binarize`` would consider, in execution
    order when ``example_input`` is given (a forward pass records it), else in registration order.

    Projections inside ``nn.MultiheadAttention`` are left out: that module computes them from its raw
    parameters, so swapping its ``out_proj`` would change nothing."""
    inside_mha: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            inside_mha.update(f"{name}.{child}" if name else child for child, _ in module.named_modules())
    names = [
        name for name, module in model.named_modules()
        if _swap_target(module) is not None and name not in inside_mha
    ]
    if example_input is None:
        return names
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_pre_hook(lambda mod, args, name=name: order.append(name))
        for name in names
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            _call(model, example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    seen = list(dict.fromkeys(order))
    return seen + [name for name in names if name not in seen]


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def _resolve_keep(
    keep: Iterable[str | type[nn.Module]] | str | None, names: Sequence[str], modules: dict[str, nn.Module]
) -> set[str]:
    if keep is None:
        return set()
    if isinstance(keep, str) or isinstance(keep, type):
        keep = (keep,)
    kept: set[str] = set()
    for item in keep:
        if isinstance(item, type):
            kept.update(n for n in names if isinstance(modules[n], item))
        elif item == "first":
            kept.update(names[:1])
        elif item == "last":
            kept.update(names[-1:])
        elif isinstance(item, str):
            matched = [n for n in names if n == item or fnmatch.fnmatchcase(n, item)]
            if not matched:
                raise ValueError(
                    f"keep_full_precision: {item!r} matches no Conv/Linear layer of the model; "
                    f"use 'first', 'last', a module type, or one of: {', '.join(names) or '(none)'}"
                )
            kept.update(matched)
        else:
            raise ValueError(
                f"keep_full_precision entries must be 'first', 'last', a layer name or pattern, or a module "
                f"type; got {item!r}"
            )
    return kept


def _replacement(module: nn.Module, target: type[nn.Module], method: Method, layer_opts: dict) -> nn.Module:
    w = module.weight
    factory = {"device": w.device, "dtype": w.dtype}
    if target is BinaryLinear:
        opts = {k: v for k, v in layer_opts.items() if k in LINEAR_LAYER_OPTIONS}
        new = BinaryLinear(module.in_features, module.out_features, module.bias is not None, **factory,
                           method=method, **opts)
    else:
        new = target(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode, **factory,
            method=method, **layer_opts,
        )
    with torch.no_grad():
        new.weight.copy_(module.weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    new.train(module.training)
    return new


def binarize(
    model: nn.Module,
    method: str | Method,
    keep_full_precision: Iterable[str | type[nn.Module]] | str | None = ("first", "last"),
    *,
    example_input: Any = None,
    **options: Any,
) -> nn.Module:
    """Replace every Conv1d/Conv2d/Linear of ``model`` by its binary counterpart, in place.

    Args:
        model: any torch model; it is changed in place and returned. (If ``model`` itself is a single
            Conv/Linear layer, the new layer is returned and the old one is left unchanged.)
        method: a registered method name (``onebit.methods.available()``) or a configured Method.
        keep_full_precision: layers left in full precision: ``"first"`` and ``"last"`` (the first and
            last Conv/Linear, as the papers keep them), qualified module names or fnmatch patterns
            (``"blocks.*.fc2"``), or module types. ``None`` or ``()`` binarizes every layer.
        example_input: optional input for one forward pass that decides the first/last layers by
            execution order (otherwise registration order) and sizes lazily-shaped method state (e.g.
            XNOR-Net++'s spatial scales).
        **options: the method's options plus ``pad_value``, ``binarize_weights`` and
            ``binarize_activations`` (see :mod:`onebit.nn.layers`).

    Weights and biases are copied; the latent real weights are the original ones.
    """
    layer_opts = {k: options.pop(k) for k in LAYER_OPTIONS if k in options}
    method = get(method, **options)
    target = _swap_target(model)
    if target is not None:
        if isinstance(model, BinaryLayer):
            return model
        return _replacement(model, target, method, layer_opts)

    names = convertible_layers(model, example_input)
    modules = dict(model.named_modules())
    kept = _resolve_keep(keep_full_precision, names, modules)
    _warn_mha(model)
    for name in names:
        if name in kept:
            continue
        new = _replacement(modules[name], _swap_target(modules[name]), method, layer_opts)
        new.onebit_name = name
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, new)
    if example_input is not None:
        _run_once(model, example_input)
    return model


def _run_once(model: nn.Module, example_input: Any) -> None:
    """One eval-mode, no-gradient forward pass (sizes lazily sized state), leaving the mode as it was."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _call(model, example_input)
    finally:
        model.train(was_training)


def _warn_mha(model: nn.Module) -> None:
    mha = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if mha:
        warnings.warn(
            f"binarize: {', '.join(mha)} are nn.MultiheadAttention modules, whose projections are raw "
            "parameters; they stay full precision. Build attention from nn.Linear layers (as "
            "onebit.models' ViT does) to binarize them.",
            stacklevel=3,
        )


def binary_layers(model: nn.Module) -> list[tuple[str, BinaryLayer]]:
    """The (name, layer) pairs of every binary layer in ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BinaryLayer)]


def schedule_step(model: nn.Module, epoch: int, epochs: int) -> None:
    """Call every binary layer's per-epoch schedule. Call it before epoch ``epoch`` (0-based) of
    ``epochs``, as BiBench's ``ModelParamsUpdateHook`` does."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"schedule_step: epochs={epochs!r} must be a positive integer")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise ValueError(f"schedule_step: epoch={epoch!r} must be an integer in [0, epochs={epochs}]")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BinaryLayer):
                module.schedule_step(epoch, epochs)


def finalize(model: nn.Module, example_input: Any = None) -> nn.Module:
    """Bring a trained model (or one binary layer) to its deployable state, in place: each binary
    layer's :meth:`onebit.methods.Method.finalize` (BiPer's stage 2, ProxConnect++'s hard sign).
    ``example_input``, if given, is run through the model first (eval mode, no gradient), which sizes
    lazily sized state (lazy layers, XNOR-Net++'s Γ). Call it once after training, before export;
    returns ``model``."""
    if example_input is not None:
        _run_once(model, example_input)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BinaryLayer):
                module.method.finalize(module)
    return model


def extra_loss(model: nn.Module) -> Tensor:
    """The sum of every binary layer's method loss term (0 when no method has one)."""
    terms = [t for m in model.modules() if isinstance(m, BinaryLayer) for t in [m.extra_loss()] if t is not None]
    if terms:
        return torch.stack([t.reshape(()) for t in terms]).sum()
    param = next(model.parameters(), None)
    return torch.zeros((), device=None if param is None else param.device)
