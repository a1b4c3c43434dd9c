"""Execution plans written down as plain data, to compare the plan passes' output with a recorded one.

``python tests/deploy/plan_probe.py --write`` records the plans of :data:`CASES` in
``execution_plans.json`` beside this file. The recorded plans were written by the single-function
``optimize_for_inference`` of commit 5df38ef (before it became a sequence of named passes):
``test_plan_passes.py`` checks that the passes build the very same plans (same nodes in the same order,
same wrapped layers, same bit hand-overs, same in-place decisions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from deploy_probe import finish_training
from torch import fx, nn

import onebit
import onebit.models
from onebit.deploy import export

RECORD = Path(__file__).with_name("execution_plans.json")

DEPLOYED = ["bireal", "reactnet", "xnor", "hbnn"]  # plain sign, thresholds, a runtime input scale, bit planes
# (zoo model, its options, input shape, the methods tried on it)
ZOO = [
    ("resnet18_imagenet", {"bireal": True}, (1, 3, 32, 32), DEPLOYED),  # Bi-Real ResNet-18
    ("reactnet_a", {"width": 0.25, "input_size": 32}, (1, 3, 32, 32), DEPLOYED),
    ("resnet20", {}, (1, 3, 32, 32), ["bireal", "xnor"]),
    ("resnet18", {"bireal": True, "shortcut": "A", "activation": "identity"}, (1, 3, 32, 32), ["reactnet"]),
    ("vgg_small", {"input_size": 16}, (1, 3, 16, 16), ["bireal", "xnor"]),
    ("conv1d", {}, (1, 1, 40), ["bireal", "hbnn"]),
    ("mlp", {"hidden": (64, 65, 63), "input_shape": (1, 8, 8)}, (1, 1, 8, 8), ["bireal"]),
    ("vit", {"img_size": 16, "patch_size": 4, "dim": 32, "depth": 2, "heads": 2}, (1, 3, 16, 16), ["bireal"]),
]
# plan options besides the defaults, each tried on the two deployment networks
OPTIONS = [{"fuse_residuals": False}, {"overwrite_residuals": False}]


def _test_nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    from test_export import ResidualVariants, chain_net, depthwise_net

    return {
        "chain_net": (chain_net(), (1, 3, 11, 9)),
        "residual_variants": (nn.Sequential(nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
                                            ResidualVariants(65), nn.Flatten(), nn.LazyLinear(10)), (1, 3, 9, 7)),
        "depthwise_net": (depthwise_net(2), (1, 3, 9, 9)),
    }


def cases() -> list[tuple[str, Any, dict[str, Any]]]:
    """(case name, a function building the exported graph, plan options)."""
    out = []
    for name, options, shape, methods in ZOO:
        for method in methods:
            out.append((f"{name}/{method}", (name, options, shape, method), {}))
    for option in OPTIONS:
        for name, options, shape, _ in ZOO[:2]:
            method = "reactnet" if name == "reactnet_a" else "bireal"
            out.append((f"{name}/{method}/{next(iter(option))}", (name, options, shape, method), option))
    for name in _test_nets():
        for method in DEPLOYED:
            out.append((f"{name}/{method}", (name, None, None, method), {}))
    return out


def exported_net(build: tuple[Any, ...]) -> fx.GraphModule:
    name, options, shape, method = build
    torch.manual_seed(3)
    if options is None:
        model, shape = _test_nets()[name]
        model(torch.randn(shape))
        onebit.binarize(model, method, example_input=torch.randn(shape))
    else:
        model = onebit.models.create(name, num_classes=10, method=method, **options)
    finish_training(model, method)
    model.eval()
    with torch.no_grad():
        model(torch.randn(shape))
    return export(model).net


def describe(plan: fx.GraphModule) -> list[list[Any]]:
    """Each node of ``plan`` as [op, target, args, kwargs]: nodes named by their position, packed
    layers by their name in the exported net, a plan wrapper by its class and every decision it holds."""
    position = {node: i for i, node in enumerate(plan.graph.nodes)}
    layer_name = {id(m): n for n, m in plan.named_modules() if not n.startswith("_onebit_plan")}
    modules = dict(plan.named_modules())

    def value(v: Any) -> Any:
        if isinstance(v, fx.Node):
            return f"%{position[v]}"
        if isinstance(v, (tuple, list)):
            return [value(x) for x in v]
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        return v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)

    def target(node: fx.Node) -> Any:
        if node.op == "call_function":
            return getattr(node.target, "__name__", repr(node.target))
        if node.op != "call_module" or not node.target.startswith("_onebit_plan"):
            return node.target
        m = modules[node.target]
        decisions = {"layer": layer_name[id(m.layer)], "bits_in": m.bits_in}
        if type(m).__name__.endswith("ChainedBinary"):
            consumer = m._consumer[0]
            decisions["consumer"] = None if consumer is None else layer_name[id(consumer)]
        else:
            bits_for = m._bits_for[0]
            decisions.update(clamp=value(m.clamp), overwrite_residual=m.overwrite_residual,
                             bits_for=None if bits_for is None else layer_name[id(bits_for)])
        return [type(m).__name__.lstrip("_"), decisions]

    return [[node.op, target(node), value(node.args), value(node.kwargs)] for node in plan.graph.nodes]


def plans() -> dict[str, list[list[Any]]]:
    from onebit.deploy.export import optimize_for_inference

    return {name: describe(optimize_for_inference(exported_net(build), **option))
            for name, build, option in cases()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/deploy/plan_probe.py --write")
    RECORD.write_text(json.dumps(plans(), indent=0, sort_keys=True) + "\n")
