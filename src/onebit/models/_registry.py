"""The model registry: declarative, validated options and one ``create`` entry point."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._registry import Option, Registry, describe_options, is_bool, is_int
from ..methods import Method, get, method_class
from ..methods.base import iter_classes
from ._layers import LAYER_OPTIONS, LayerFactory, ZooModel

__all__ = ["ModelSpec", "Option", "available", "create", "is_bool", "is_int", "register", "spec"]


def is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def is_choice(*choices: Any) -> Callable[[Any], bool]:
    # ``True in ("A", "B")`` is False but ``1 in (True,)`` is True: compare types too, so that 1 is no bool.
    return lambda v: any(v == c and type(v) is type(c) for c in choices)


def is_int_tuple(min_len: int = 1) -> Callable[[Any], bool]:
    """A tuple or list of at least ``min_len`` positive ints."""

    def check(v: Any) -> bool:
        return (
            isinstance(v, (tuple, list)) and len(v) >= min_len
            and all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)
        )

    return check


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model.

    ``builder(layers=LayerFactory, num_classes=int, in_channels=int, **options)`` returns the network;
    ``input_shape`` and ``num_classes`` are the defaults of the dataset the paper trained it on;
    ``size_option`` names the option that sets the input's spatial size (``None`` where the network
    is fully convolutional and takes any size).
    """

    name: str
    builder: Callable[..., ZooModel]
    options: dict[str, Option]
    input_shape: tuple[int, ...]
    num_classes: int
    paper: str
    summary: str
    size_option: str | None = None

    def describe_options(self) -> str:
        return describe_options(self.options)


_MODELS: Registry[ModelSpec] = Registry(duplicate="a model named {name!r} is already registered",
                                        unknown="unknown model {name!r}; available models: {names}")
_REGISTRY = _MODELS.entries


def register(model_spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry."""
    return _MODELS.add(model_spec.name, model_spec)


def available() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return _MODELS.names()


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    return _MODELS.get(name)


def _positive_int(what: str, value: Any, model: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{model}: {what}={value!r} must be a positive int")
    return value


def create(
    name: str,
    num_classes: int | None = None,
    method: str | Method | None = None,
    in_channels: int | None = None,
    **options: Any,
) -> ZooModel:
    """Build a zoo model, full precision or binary.

    Args:
        name: one of :func:`available`.
        num_classes: outputs of the head; default: the model's dataset (``spec(name).num_classes``).
        method: ``None`` for the full-precision network, or a binarization method (a name from
            ``onebit.methods.available()`` or a configured :class:`onebit.methods.Method`). The network is
            then built with ``onebit.nn`` binary layers directly, the first and last layers (and the
            layers the paper keeps real, such as downsample convs) in full precision.
        in_channels: channels of the input; default: ``spec(name).input_shape[0]``.
        **options: the model's options (``spec(name).options``), the method's options (e.g.
            ``tau_min`` for ``recu``) and the binary layers' ``pad_value``, ``binarize_weights`` and
            ``binarize_activations``. An unknown option or a bad value raises ``ValueError`` naming it
            and what is allowed.

    Returns:
        The model (a :class:`onebit.models.ZooModel`); ``model.input_shape`` is the shape of one sample.
    """
    model_spec = spec(name)
    num_classes = _positive_int("num_classes", model_spec.num_classes if num_classes is None else num_classes,
                                name)

    method_options: dict[str, Any] = {}
    layer_options: dict[str, Any] = {}
    model_options: dict[str, Any] = {}
    method_known: tuple[str, ...] = ()
    if method is not None:
        cls = type(method) if isinstance(method, Method) else method_class(method)
        method_known = tuple(cls.options)
    for key, value in options.items():
        if key in model_spec.options and key in method_known:
            raise ValueError(
                f"{name}: option {key!r} is both a model option and a {cls.name} option; configure the "
                f"method first (onebit.methods.get({cls.name!r}, {key}=...)) and pass it as method="
            )
        if key in model_spec.options:
            model_options[key] = value
        elif key in method_known:
            method_options[key] = value
        elif key in LAYER_OPTIONS and method is not None:
            layer_options[key] = value
        elif method is None and (key in LAYER_OPTIONS or _is_any_method_option(key)):
            raise ValueError(
                f"{name}: option {key!r} configures binary layers, but method=None builds the "
                "full-precision network; pass method=... to use it"
            )
        else:
            parts = [f"model options: {', '.join(model_spec.options) or '(none)'}"]
            if method is not None:
                method_name = method.name if isinstance(method, Method) else method
                parts.append(f"{method_name} options: {', '.join(method_known) or '(none)'}")
                parts.append(f"layer options: {', '.join(LAYER_OPTIONS)}")
            raise ValueError(f"{name}: unknown option {key!r}; " + "; ".join(parts))

    resolved: dict[str, Any] = {}
    for key, opt in model_spec.options.items():
        value = model_options.get(key, opt.default)
        if not opt.check(value):
            raise ValueError(f"{name}: invalid value {key}={value!r}; allowed: {opt.allowed}")
        resolved[key] = tuple(value) if isinstance(value, list) else value

    if in_channels is None:
        # A model that takes its whole sample shape as an option (the MLP) takes its channels from it too.
        in_channels = resolved["input_shape"][0] if "input_shape" in resolved else model_spec.input_shape[0]
    in_channels = _positive_int("in_channels", in_channels, name)

    configured = None if method is None else get(method, **method_options)
    layers = LayerFactory(configured, layer_options)
    return model_spec.builder(layers=layers, num_classes=num_classes, in_channels=in_channels, **resolved)


def _is_any_method_option(key: str) -> bool:
    return any(key in cls.options for cls in iter_classes())
