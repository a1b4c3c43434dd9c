"""The exported network as a graph: torch.fx tracing, BatchNorm/activation fusion, and a JSON
description of the graph that rebuilds it without pickle (every module type, function and tensor
method it may name is on an allow-list)."""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..nn.blocks import LearnableBias, RPReLU, RSign
from ..nn.layers import BinaryLayer
from .errors import ExportError  # (defined beside UnsupportedLayerError; re-exported here)
from .packed import _PackedBase, build_packed, pack_layer

__all__ = ["trace", "capture", "fuse", "graph_to_json", "graph_from_json", "ExportError", "SUPPORTED_MODULES"]

GRAPH_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Allow-lists
# --------------------------------------------------------------------------------------------------
def _cfg(*names: str):
    def get(m: nn.Module) -> dict[str, Any]:
        out = {}
        for n in names:
            v = getattr(m, n)
            out[n] = list(v) if isinstance(v, tuple) else v
        return out
    return get


def _conv_cfg(m: nn.Module) -> dict[str, Any]:
    d = _cfg("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
             "padding_mode")(m)
    d["bias"] = m.bias is not None
    return d


def _linear_cfg(m: nn.Module) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _norm_cfg(m: nn.Module) -> dict[str, Any]:
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


def _layernorm_cfg(m: nn.LayerNorm) -> dict[str, Any]:
    return {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine, "bias": getattr(m, "bias", None) is not None}


#: type name → (class, config extractor). Constructors take the config as keyword arguments.
SUPPORTED_MODULES: dict[str, tuple[type[nn.Module], Any]] = {
    "Conv1d": (nn.Conv1d, _conv_cfg),
    "Conv2d": (nn.Conv2d, _conv_cfg),
    "Linear": (nn.Linear, _linear_cfg),
    "BatchNorm1d": (nn.BatchNorm1d, _norm_cfg),
    "BatchNorm2d": (nn.BatchNorm2d, _norm_cfg),
    "LayerNorm": (nn.LayerNorm, _layernorm_cfg),
    "ReLU": (nn.ReLU, _cfg()),
    "ReLU6": (nn.ReLU6, _cfg()),
    "Hardtanh": (nn.Hardtanh, _cfg("min_val", "max_val")),
    "PReLU": (nn.PReLU, lambda m: {"num_parameters": m.num_parameters}),
    "LeakyReLU": (nn.LeakyReLU, _cfg("negative_slope")),
    "GELU": (nn.GELU, _cfg("approximate")),
    "SiLU": (nn.SiLU, _cfg()),
    "Sigmoid": (nn.Sigmoid, _cfg()),
    "Tanh": (nn.Tanh, _cfg()),
    "Softmax": (nn.Softmax, _cfg("dim")),
    "Identity": (nn.Identity, _cfg()),
    "Dropout": (nn.Dropout, _cfg("p")),
    "Flatten": (nn.Flatten, _cfg("start_dim", "end_dim")),
    "MaxPool1d": (nn.MaxPool1d, _cfg("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "MaxPool2d": (nn.MaxPool2d, _cfg("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool1d": (nn.AvgPool1d, _cfg("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    "AvgPool2d": (nn.AvgPool2d, _cfg("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, _cfg("output_size")),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _cfg("output_size")),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, _cfg("output_size")),
    "LearnableBias": (LearnableBias, lambda m: {"channels": m.bias.numel(), "features_last": m.features_last}),
    "RSign": (RSign, lambda m: {"channels": m.shift.bias.numel(), "features_last": m.shift.features_last}),
    "RPReLU": (RPReLU, lambda m: {"channels": m.prelu.num_parameters, "features_last": m.features_last}),
}
_TYPE_NAMES = {cls: name for name, (cls, _) in SUPPORTED_MODULES.items()}


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or 'builtins'}.{fn.__qualname__}"


_FUNCTIONS_LIST = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.getitem,
    operator.neg, operator.matmul, operator.pow, operator.iadd, operator.imul, builtins.getattr,
    torch.flatten, torch.cat, torch.stack, torch.add, torch.mul, torch.sub, torch.div, torch.relu,
    torch.sigmoid, torch.tanh, torch.softmax, torch.matmul, torch.transpose, torch.permute, torch.reshape,
    torch.mean, torch.sum, torch.chunk, torch.split, torch.clamp, torch.exp, torch.sqrt, torch.abs,
    torch.where, torch.unsqueeze, torch.squeeze, torch.bmm, torch.einsum,
    F.relu, F.gelu, F.silu, F.softmax, F.log_softmax, F.pad, F.avg_pool1d, F.avg_pool2d, F.max_pool1d,
    F.max_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.hardtanh, F.layer_norm, F.dropout,
    F.interpolate, F.scaled_dot_product_attention, F.prelu, F.leaky_relu, F.linear, F.conv2d, F.conv1d,
]
_FUNCTIONS: dict[str, Any] = {}
for _fn in _FUNCTIONS_LIST:
    _FUNCTIONS.setdefault(_qualname(_fn), _fn)
_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "mean", "sum", "size", "contiguous", "chunk",
    "split", "unsqueeze", "squeeze", "softmax", "expand", "expand_as", "repeat", "mul", "add", "sub", "div",
    "matmul", "clamp", "relu", "sigmoid", "tanh", "float", "unbind", "narrow", "abs", "exp", "sqrt",
    "movedim", "mul_", "add_", "pow", "max", "amax", "t", "dim", "__getitem__",
}
_DTYPES = {str(d).split(".")[-1]: d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                                torch.int64, torch.int32, torch.bool)}


# --------------------------------------------------------------------------------------------------
# Tracing and fusion
# --------------------------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (BinaryLayer, _PackedBase)) or type(m) in _TYPE_NAMES:
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` with binary layers and supported modules as leaves."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as err:
        raise ExportError(
            f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}: {err}); export needs a "
            "forward without data-dependent Python control flow (an `if` on tensor values); move such "
            "logic into a module or use torch.where, or pass example_input= to capture it with torch.export"
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def capture(model: nn.Module, example_input: Any) -> nn.Module:
    """Capture ``model`` with ``torch.export`` (for forwards torch.fx cannot trace: Python control
    flow on shapes, ``**kwargs``, decorators), keeping each binary layer as a module call
    (``preserve_module_call_signature``), and swap those for packed layers in the unflattened module.

    The graph around the packed layers is torch.export's ATen graph, run as is: no BatchNorm or
    activation folding into the packed layers, no execution-plan rewrites, and the file format
    cannot store it (:func:`onebit.deploy.save` says so).
    """
    args, kwargs = ((example_input,), {}) if not isinstance(example_input, (tuple, dict)) else (
        (example_input, {}) if isinstance(example_input, tuple) else ((), example_input))
    paths = [name for name, m in model.named_modules() if isinstance(m, BinaryLayer)]
    try:
        program = torch.export.export(model, args, kwargs, strict=False, preserve_module_call_signature=tuple(paths))
        module = torch.export.unflatten(program)
    except Exception as err:
        raise ExportError(f"torch.export could not capture {type(model).__name__} either ({type(err).__name__}: "
                          f"{str(err)[:300]})") from None
    for path in paths:
        layer = model.get_submodule(path)
        layer.onebit_name = getattr(layer, "onebit_name", None) or path
        module.set_submodule(path, pack_layer(layer))
    return module.eval()


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def fuse(gm: fx.GraphModule, *, fold_batchnorm: bool = True, fuse_activations: bool = True) -> fx.GraphModule:
    """Replace binary layers by packed ones, then fold a BatchNorm (and an activation) that is the
    only consumer of a packed layer's output into that layer's epilogue."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], BinaryLayer):
            layer = modules[node.target]
            layer.onebit_name = getattr(layer, "onebit_name", None) or node.target
            _set_module(gm, node.target, pack_layer(layer))
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), _PackedBase):
            continue
        packed = modules[node.target]
        current = node
        if fold_batchnorm:
            nxt = _single_user(current)
            is_bn = nxt is not None and nxt.op == "call_module" and isinstance(
                modules.get(nxt.target), nn.modules.batchnorm._BatchNorm)
            if is_bn:
                bn = modules[nxt.target]
                if bn.track_running_stats and bn.running_var is not None:
                    packed.fold_batchnorm(bn)
                    nxt.replace_all_uses_with(current)
                    gm.graph.erase_node(nxt)
        if fuse_activations:
            nxt = _single_user(current)
            if nxt is not None and nxt.op == "call_module" and packed.fuse_activation(modules.get(nxt.target)):
                nxt.replace_all_uses_with(current)
                gm.graph.erase_node(nxt)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"float": repr(value)}
    if isinstance(value, (tuple, torch.Size)):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).split(".")[-1]}
    raise ExportError(f"graph argument {value!r} of type {type(value).__name__} cannot be exported")


def _decode(value: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    if "node" in value:
        return nodes[value["node"]]
    if "tuple" in value:
        return tuple(_decode(v, nodes) for v in value["tuple"])
    if "dict" in value:
        return {k: _decode(v, nodes) for k, v in value["dict"].items()}
    if "slice" in value:
        return slice(*(_decode(v, nodes) for v in value["slice"]))
    if "ellipsis" in value:
        return Ellipsis
    if "dtype" in value:
        return _DTYPES[value["dtype"]]
    if "float" in value:
        return float(value["float"])
    raise ValueError(f"unknown graph value {value!r}")


def graph_to_json(gm: fx.GraphModule) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The graph description and the tensors it references (module state and root attributes)."""
    modules = dict(gm.named_modules())
    nodes, module_specs, tensors = [], {}, {}
    for node in gm.graph.nodes:
        entry: dict[str, Any] = {"name": node.name, "op": node.op}
        if node.op == "call_function":
            name = _qualname(node.target)
            if _FUNCTIONS.get(name) is not node.target:
                raise ExportError(f"the graph calls {name}, which onebit's model format does not allow")
            entry["target"] = name
        elif node.op == "call_method":
            if node.target not in _METHODS:
                raise ExportError(f"the graph calls tensor method .{node.target}(), not allowed by the format")
            entry["target"] = node.target
        elif node.op == "call_module":
            entry["target"] = node.target
            module = modules[node.target]
            if node.target not in module_specs:
                module_specs[node.target] = _module_spec(node.target, module, tensors)
        elif node.op == "get_attr":
            entry["target"] = node.target
            value = _get_attr(gm, node.target)
            if not isinstance(value, Tensor):
                raise ExportError(f"graph attribute {node.target} is not a tensor")
            tensors[f"attr/{node.target}"] = value.detach().contiguous().cpu()
        entry["args"] = _encode(node.args)
        entry["kwargs"] = _encode(node.kwargs)
        nodes.append(entry)
    return {"version": GRAPH_VERSION, "nodes": nodes, "modules": module_specs}, tensors


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _module_spec(path: str, module: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Any]:
    if isinstance(module, _PackedBase):
        for key, value in module.state_tensors().items():
            tensors[f"{path}/{key}"] = value
        return {"type": "Packed", "config": module.config}
    if isinstance(module, BinaryLayer):
        raise ExportError(f"layer {path} is still a binary training layer; run fuse() first")
    name = _TYPE_NAMES.get(type(module))
    if name is None:
        supported = ", ".join(sorted(SUPPORTED_MODULES))
        raise ExportError(f"layer {path} is a {type(module).__name__}, which the model format cannot store; "
                          f"supported: {supported}")
    for key, value in module.state_dict().items():
        tensors[f"{path}/{key}"] = value.detach().contiguous().cpu()
    return {"type": name, "config": SUPPORTED_MODULES[name][1](module)}


def graph_from_json(description: dict[str, Any], tensors: dict[str, Tensor]) -> fx.GraphModule:
    """Rebuild the GraphModule; every name is checked against the allow-lists."""
    if description.get("version") != GRAPH_VERSION:
        raise ValueError(f"graph version {description.get('version')!r}; this onebit reads version {GRAPH_VERSION}")
    root = nn.Module()
    for path, spec in description["modules"].items():
        prefix = f"{path}/"
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if spec["type"] == "Packed":
            module = build_packed(spec["config"], own)
        else:
            if spec["type"] not in SUPPORTED_MODULES:
                raise ValueError(f"module type {spec['type']!r} is not part of the format")
            cls = SUPPORTED_MODULES[spec["type"]][0]
            config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
            if cls is nn.LayerNorm:
                config["normalized_shape"] = tuple(config["normalized_shape"])
            module = cls(**config)
            module.load_state_dict(own)
        module.eval()
        _install(root, path, module)
    for key, value in tensors.items():
        if key.startswith("attr/"):
            _install(root, key[5:], value, buffer=True)
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for entry in description["nodes"]:
        op, target = entry["op"], entry.get("target")
        args = _decode(entry["args"], nodes)
        kwargs = _decode(entry["kwargs"], nodes)
        if op == "placeholder":
            node = graph.placeholder(entry["name"])
        elif op == "output":
            node = graph.output(args[0])
        elif op == "call_function":
            if target not in _FUNCTIONS:
                raise ValueError(f"function {target!r} is not part of the format")
            node = graph.call_function(_FUNCTIONS[target], tuple(args), kwargs)
        elif op == "call_method":
            if target not in _METHODS:
                raise ValueError(f"tensor method {target!r} is not part of the format")
            node = graph.call_method(target, tuple(args), kwargs)
        elif op == "call_module":
            node = graph.call_module(target, tuple(args), kwargs)
        elif op == "get_attr":
            node = graph.get_attr(target)
        else:
            raise ValueError(f"graph node op {op!r} is not part of the format")
        node.name = entry["name"]
        nodes[entry["name"]] = node
    graph.lint()
    return fx.GraphModule(root, graph, "OnebitPacked")


def _install(root: nn.Module, path: str, value: Any, buffer: bool = False) -> None:
    parts = path.split(".")
    parent = root
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if buffer:
        parent.register_buffer(parts[-1], value)
    else:
        parent.add_module(parts[-1], value)
