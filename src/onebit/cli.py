"""The ``onebit`` command line (also ``python -m onebit``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _value(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def _apply_set(table: dict[str, Any], assignment: str) -> None:
    """``stage.1.optimizer.lr=0.01`` / ``stage.*.epochs=2`` / ``data.batch_size=32`` on a recipe dict."""
    if "=" not in assignment:
        raise ValueError(f"--set {assignment!r}: expected KEY=VALUE, e.g. stage.0.epochs=3")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    value = _value(raw.strip())

    def walk(node: Any, path: list[str]) -> None:
        head, rest = path[0], path[1:]
        if isinstance(node, list):
            targets = range(len(node)) if head == "*" else [int(head)] if head.isdigit() else None
            if targets is None or any(i >= len(node) for i in targets):
                raise ValueError(f"--set {key}: {head!r} is not an index of a list of {len(node)}")
            for i in targets:
                if rest:
                    walk(node[i], rest)
                else:
                    node[i] = value
            return
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: cannot descend into {node!r}")
        if not rest:
            node[head] = value
            return
        if node.get(head) is None:
            node[head] = {}
        walk(node[head], rest)

    walk(table, parts)


def _recipe_from_args(args: argparse.Namespace) -> Any:
    from .train.recipe import load_recipe

    recipe = load_recipe(args.recipe).to_dict()
    if args.data:
        recipe["data"]["name"] = args.data
        recipe["data"]["options"] = {}
    if args.root:
        recipe["data"]["root"] = args.root
    if args.model:
        recipe["model"] = {"name": args.model, "options": {}}
    if args.batch_size:
        recipe["data"]["batch_size"] = args.batch_size
    if args.seed is not None:
        recipe["seed"] = args.seed
    for stage in recipe["stage"]:
        if args.epochs:
            stage["epochs"] = args.epochs
        if args.lr:
            stage["optimizer"]["lr"] = args.lr
        if args.method and stage.get("method") is not None:
            fp = args.method in ("fp", "none", "full-precision")
            stage["method"] = None if fp else args.method
            stage["method_options"] = {}
    for assignment in args.set or []:
        _apply_set(recipe, assignment)
    return load_recipe(recipe)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    recipe = _recipe_from_args(args)
    out = args.out or str(Path("runs") / recipe.name)
    result = train(recipe, out, resume=args.resume, device=args.device, progress=not args.quiet,
                   num_workers=args.workers)
    if args.quiet and int(os.environ.get("RANK", "0")) == 0:  # --quiet keeps the final line
        print(f"test accuracy: {result.test_accuracy:.2f}% -> {Path(out) / 'model.pt'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    acc = evaluate_checkpoint(args.checkpoint, data=args.data, root=args.root, device=args.device)
    print(f"test accuracy: {acc:.2f}%")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export, save
    from .train.trainer import load_checkpoint, load_run_model

    payload = load_checkpoint(args.checkpoint)
    model, recipe, stage = load_run_model(payload)
    meta = {"recipe": recipe.name, "model": (stage.model or recipe.model).name, "method": str(stage.method),
            "data": payload.get("data_info", {})}
    if args.format != "onebit":
        return _export_foreign(args, model, payload, meta)
    packed = export(model, meta=meta)
    save(packed, args.out)
    size = Path(args.out).stat().st_size
    count = len(packed.packed_layers())
    print(f"exported {count} packed layers ({stage.method}) -> {args.out} ({size / 1024:.1f} KiB)")
    return 0


def _export_foreign(args: argparse.Namespace, model: Any, payload: dict[str, Any], meta: dict[str, Any]) -> int:
    """ONNX, QONNX or LCE export, checked at once against the target's own runtime on a random input."""
    import torch

    shape = (payload.get("data_info") or {}).get("input_shape")
    if not shape:
        raise ValueError(f"{args.checkpoint}: the checkpoint does not record the input shape; "
                         "export the run's model.pt or a stage-*.pt file")
    example = torch.zeros(1, *shape)
    if args.format in ("onnx", "qonnx"):
        from .deploy.onnx_export import run_onnx, to_onnx

        flavor = "float" if args.format == "onnx" else "qonnx"
        to_onnx(model, example, args.out, flavor, metadata={k: str(v) for k, v in meta.items()})
        runtime, run = ("onnxruntime" if flavor == "float" else "QONNX's executor"), run_onnx
    else:
        from .deploy.lce import interpreter, to_lce

        to_lce(model, example, args.out)
        runtime = "LCE's interpreter"

        def run(path: str, x: Any) -> list[Any]:  # LCE takes images NHWC
            return interpreter(path).predict((x.permute(0, 2, 3, 1) if x.dim() == 4 else x).numpy())
    x = torch.randn(1, *shape)
    with torch.no_grad():
        expected = model.eval()(x)
    got = torch.as_tensor(run(args.out, x)[0]).reshape(expected.shape)
    diff = (got - expected).abs().max().item() / max(expected.abs().max().item(), 1e-12)
    print(f"exported {args.format} ({meta['method']}) -> {args.out} ({Path(args.out).stat().st_size / 1024:.1f} KiB);"
          f" {runtime} matches PyTorch to {diff:.1e} of the output scale")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import run_suite

    out = args.out or str(Path("bench") / Path(args.suite).stem)
    result = run_suite(args.suite, out, executor=args.executor, workers=args.workers, address=args.address,
                       progress=not args.quiet, report=not args.no_report)
    print(f"{result['runs']} runs ({result['skipped']} already done, {len(result['failed'])} failed) in "
          f"{result['wall_s']:.0f} s -> {Path(out) / 'results.sqlite'}"
          + (f"; report: {result['report']}" if result["report"] else ""))
    return 1 if result["failed"] else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .bench.report import write_report

    paths = write_report(args.dir, args.out, overall=args.overall, strict=args.strict)
    print(f"report: {paths['markdown']}  {paths['html']}")
    return 0


def _read_input(path: str) -> Any:
    """A batch from .npy (no pickle), .safetensors (its single tensor) or an image file."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input {path} does not exist; give a .npy, .safetensors or image file")
    if p.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(p, allow_pickle=False)).float(), False
        except ValueError as err:
            raise ValueError(f"input {path}: not a plain numeric .npy array ({err})") from None
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(p))
        if len(tensors) != 1:
            raise ValueError(f"input {path}: expected exactly one tensor, found {len(tensors)}")
        return next(iter(tensors.values())).float(), False
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs Pillow: pip install pillow") from None
    try:
        image = Image.open(p)
        image.load()
    except Exception as err:
        raise ValueError(f"input {path}: not a readable image ({type(err).__name__})") from None
    return image, True


def _image_tensor(image: Any, info: dict[str, Any]) -> Any:
    import numpy as np
    import torch
    import torch.nn.functional as F

    shape = info.get("input_shape")
    if not shape or len(shape) != 3:
        raise ValueError("this model's file records no image input shape; pass a .npy batch instead")
    channels, height, width = shape
    image = image.convert("L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    x = F.interpolate(x.unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False)
    # (a model file without statistics: the image's [0, 1] values as they are)
    return _normalize(x, {"mean": info.get("mean", [0.0] * channels), "std": info.get("std", [1.0] * channels)})


def _normalize(x: Any, info: dict[str, Any]) -> Any:
    """(x - mean) / std per channel (dim 1), with the training data's statistics from the model file."""
    import torch

    if "mean" not in info or "std" not in info:
        raise ValueError("this model's file records no input mean/std to normalize with; pass a batch "
                         "normalized as in training, without --normalize")  # fmt: skip
    mean, std = torch.tensor(info["mean"]), torch.tensor(info["std"])
    if x.dim() < 2 or x.shape[1] != mean.numel():
        raise ValueError(f"--normalize: input of shape {tuple(x.shape)} has no channel dimension 1 of "
                         f"{mean.numel()} (the recorded mean/std)")  # fmt: skip
    view = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.reshape(view)) / std.reshape(view)


def _cmd_infer(args: argparse.Namespace) -> int:
    import torch

    from .deploy import kernels, load

    packed = load(args.model)
    if args.threads:
        kernels.set_num_threads(args.threads)
    data, is_image = _read_input(args.input)
    info = packed.meta.get("data", {})
    x = _image_tensor(data, info) if is_image else data
    shape = info.get("input_shape")
    if shape and tuple(x.shape[1:]) != tuple(shape):
        if tuple(x.shape) == tuple(shape):
            x = x.unsqueeze(0)
        else:
            raise ValueError(f"input has shape {tuple(x.shape)}; this model takes batches of {tuple(shape)}")
    if args.normalize and not is_image:  # (an image is always normalized)
        x = _normalize(x, info)
    logits = packed(x)
    if args.out:
        import numpy as np

        np.save(args.out, logits.numpy())
    probs = torch.softmax(logits, dim=-1)
    classes = info.get("classes") or []
    top = probs.topk(min(args.top, probs.shape[-1]), dim=-1)
    for i, (values, indices) in enumerate(zip(top.values, top.indices)):
        parts = [f"{classes[j] if j < len(classes) else j}: {v:.3f}" for v, j in zip(values.tolist(), indices.tolist())]
        print(f"sample {i}: " + ", ".join(parts))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from . import methods

    for name in methods.available():
        cls = methods.method_class(name)
        opts = ", ".join(f"{k}={o.default!r}" for k, o in cls.options.items()) or "-"
        acts = "W+A" if cls.binarizes_activations else "W"
        print(f"{name:<10} {acts:<4} {cls.paper}\n{'':<15}options: {opts}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .train.recipe import builtin_recipes, load_recipe

    for name in builtin_recipes():
        recipe = load_recipe(name)
        stages = " -> ".join(f"{s.name}[{s.method or 'fp'}, {s.epochs} ep]" for s in recipe.stages)
        print(f"{name:<22} {recipe.model.name} on {recipe.data.name}: {stages}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onebit", description="Binary neural networks in PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe (a shipped name such as 'fast', or a TOML/YAML file)")
    p.add_argument("recipe", nargs="?", default="fast", help="recipe name or file (default: fast)")
    p.add_argument("--out", help="run directory (default: runs/RECIPE_NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--method", help="replace the method of every binarized stage ('fp' for full precision)")
    p.add_argument("--data", help="dataset name (onebit.data.available())")
    p.add_argument("--root", help="dataset directory (cifar10, imagefolder)")
    p.add_argument("--model", help="model name (onebit.models.available())")
    p.add_argument("--epochs", type=int, help="epochs of every stage")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float, help="base learning rate of every stage")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe entry, e.g. stage.0.optimizer.lr=0.01 or stage.*.epochs=2")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a trained run")
    p.add_argument("checkpoint", help="a run directory or its model.pt")
    p.add_argument("--data", help="evaluate on another dataset")
    p.add_argument("--root", help="dataset directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="export a trained run to a packed 1-bit model file")
    p.add_argument("checkpoint", help="a run directory or its model.pt (from onebit train)")
    p.add_argument("out", help="the packed model file to write (e.g. model.onebit)")
    p.add_argument("--format", default="onebit", choices=["onebit", "lce", "onnx", "qonnx"],
                   help="onebit: the packed engine's safetensors+JSON file; lce: a TFLite flatbuffer for Larq "
                        "Compute Engine; onnx: standard ONNX for onnxruntime; qonnx: QONNX (BipolarQuant/Quant) "
                        "for FINN")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="run a benchmark suite (BiBench's tracks) into a results database")
    p.add_argument("suite", nargs="?", default="default", help="suite name or TOML/YAML file (default: default)")
    p.add_argument("--out", help="output directory (default: bench/SUITE)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: a process pool here; ray: Ray tasks (--address, or a local Ray instance)")
    p.add_argument("--workers", type=int, help="parallel runs (default: one per core, at most 4)")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress display or leaderboard")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="write report.md and report.html from a benchmark directory")
    p.add_argument("dir", help="a directory written by onebit bench (holding results.sqlite)")
    p.add_argument("--out", help="report directory (default: DIR/report)")
    p.add_argument("--overall", default="rank", choices=["rank"],
                   help="how the overall score combines the tracks: the mean of per-track ranks (bounded)")
    p.add_argument("--strict", action="store_true", help="fail when a binarized run lacks its fp baseline")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("infer", help="run a packed model on an input file and print the top classes")
    p.add_argument("model", help="a packed model file written by onebit export")
    p.add_argument("input", help="a .npy or .safetensors batch of model inputs (already normalized as in "
                                 "training, or raw in [0, 1] with --normalize), or an image file "
                                 "(resized and normalized as in training)")  # fmt: skip
    p.add_argument("--normalize", action="store_true",
                   help="apply the training data's per-channel mean/std (recorded in the model file) to "
                        "a .npy/.safetensors batch of raw values in [0, 1]")  # fmt: skip
    p.add_argument("--top", type=int, default=3, help="classes to print per sample")
    p.add_argument("--out", help="also save the logits as .npy")
    p.add_argument("--threads", type=int, help="engine threads (default: torch's)")
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser("methods", help="list the binarization methods")
    p.set_defaults(func=_cmd_methods)
    p = sub.add_parser("recipes", help="list the shipped training recipes")
    p.set_defaults(func=_cmd_recipes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("onebit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, NotImplementedError) as err:
        # Every expected failure (bad recipe, missing data, corrupt checkpoint, unknown name) carries a
        # message that names the problem and the fix; show it without a traceback.
        print(f"onebit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
