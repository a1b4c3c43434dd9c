"""The ``onebit`` command line (also ``python -m onebit``)."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import OnebitError, UsageError

__all__ = ["main", "build_parser"]

#: What each optional feature needs, as pyproject.toml's extras pin it (a test keeps the two equal), so
#: that one hint names everything and the second attempt cannot fail on the next missing package.
EXTRA_REQUIREMENTS = {
    "onnx": ("onnx>=1.14", "onnxruntime>=1.16"),
    "qonnx": ("onnx>=1.14", "qonnx>=0.4"),
    "lce": ("tflite>=2.10", "flatbuffers>=23", "larq-compute-engine>=0.13"),
    "ray": ("ray>=2.9",),
}
#: The import name of each requirement above, where it differs from the distribution's.
IMPORT_NAMES = {"larq-compute-engine": "larq_compute_engine"}
#: File endings `onebit infer` reads as images (Pillow's common formats).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


# --------------------------------------------------------------------------------------------------
# Command-line values: one typed check per kind of value, shared by every command
# --------------------------------------------------------------------------------------------------
def _integer(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (0 and negatives are refused where they mean nothing)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; give an integer >= {low}")
        return value

    return convert


def _positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not allowed; give a finite number > 0")
    return value


def _shape(text: str) -> tuple[int, ...]:
    """An argparse type: one sample's shape, ``3,32,32`` (or ``3x32x32``), every size >= 1."""
    parts = text.replace("x", ",").replace(" ", "").strip("()").split(",")
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; give positive sizes such as 3,32,32")
    return shape


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage block is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _require(feature: str, what: str) -> None:
    """Raise one ImportError naming every package ``feature`` needs that is missing, before any work."""
    import importlib.util

    needed = EXTRA_REQUIREMENTS[feature]
    if feature == "lce" and not _lce_platform():  # no interpreter wheel here: the file is written unchecked
        needed = tuple(r for r in needed if not r.startswith("larq-compute-engine"))
    missing = [req for req in needed if importlib.util.find_spec(IMPORT_NAMES.get(_dist(req), _dist(req))) is None]
    if missing:
        quoted = " ".join(f"'{req}'" for req in missing)
        raise ImportError(f"{what} needs {', '.join(_dist(r) for r in missing)}: pip install {quoted} "
                          f"(or all of the extra, in onebit's checkout: pip install -e "
                          f"'.[{'bench' if feature == 'ray' else 'export'}]')")


def _lce_platform() -> bool:
    """Whether larq-compute-engine ships its interpreter for this machine (x86-64 Linux)."""
    import platform

    return sys.platform == "linux" and platform.machine() == "x86_64"


def _dist(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].strip()


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


def _recipe_from_args(args: argparse.Namespace, run_dir: Path | None = None) -> Any:
    """The recipe named on the command line (or, for ``--resume RUN_DIR`` without one, the run's own
    recorded recipe), with the command line's overrides applied; a given value is always applied
    (``is not None``: a 0 never falls back to the recipe's value; the argparse types refuse it)."""
    from .train.recipe import load_recipe

    source = args.recipe
    if source is None:
        source = _recorded_recipe(run_dir) if run_dir is not None else "fast"
    recipe = load_recipe(source).to_dict()
    if args.data is not None:
        recipe["data"]["name"] = args.data
        recipe["data"]["options"] = {}
    if args.root is not None:
        recipe["data"]["root"] = args.root
    if args.model is not None:
        recipe["model"] = {"name": args.model, "options": {}}
    if args.batch_size is not None:
        recipe["data"]["batch_size"] = args.batch_size
    if args.seed is not None:
        recipe["seed"] = args.seed
    if getattr(args, "compile", False):
        recipe["compile"] = True
    for stage in recipe["stage"]:
        if args.epochs is not None:
            stage["epochs"] = args.epochs
        if args.lr is not None:
            stage["optimizer"]["lr"] = args.lr
        if args.method is not None and stage.get("method") is not None:
            fp = args.method in ("fp", "none", "full-precision")
            stage["method"] = None if fp else args.method
            stage["method_options"] = {}
    for assignment in args.set or []:
        _apply_set(recipe, assignment)
    return load_recipe(recipe)


def _recorded_recipe(run_dir: Path) -> dict[str, Any]:
    """The recipe a run directory was started with (its recipe.json)."""
    import json

    path = run_dir / "recipe.json"
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run directory; give the --out of an earlier "
                         "`onebit train`")  # fmt: skip
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: it holds no recipe.json, so it is not a run directory of "
                         "`onebit train`; give the recipe as well, or start a new run")  # fmt: skip
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); give the recipe on the command line") from None


def _train_target(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """(the run directory given by --resume RUN_DIR or --out, whether to resume)."""
    if isinstance(args.resume, str):
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise UsageError(f"--resume {args.resume} and --out {args.out} name two run directories; "
                             "give one (--resume RUN_DIR alone continues that run)")  # fmt: skip
        return Path(args.resume), True
    return (Path(args.out) if args.out else None), bool(args.resume)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    run_dir, resume = _train_target(args)
    recipe = _recipe_from_args(args, run_dir if resume else None)
    out = str(run_dir or Path("runs") / recipe.name)
    args.run_dir = out  # for the Ctrl-C hint
    result = train(recipe, out, resume=resume, device=args.device, progress=not args.quiet,
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

    _check_output_file(args.out, "export")
    if args.format != "onebit":
        _require(args.format, f"--format {args.format}")  # before anything is written
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
    print(f"exported {count} packed layers ({stage.method or 'full precision'}) -> {args.out} "
          f"({size / 1024:.1f} KiB)")
    return 0


def _method_label(meta: dict[str, Any]) -> str:
    return "full precision" if meta["method"] in ("None", None) else meta["method"]


def _check_output_file(path: str, command: str) -> None:
    """An output file's path must not be a directory and its folder must exist (checked before work)."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path} is a directory; {command} writes a file: give a file path such as "
                         f"{target / ('logits.npy' if command == 'infer' else 'model.onebit')}")
    if not target.parent.is_dir():
        raise UsageError(f"{path}: the folder {target.parent} does not exist; create it first")


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
        if not _lce_platform():
            print(f"exported lce ({_method_label(meta)}) -> {args.out}; not checked: larq-compute-engine ships "
                  "its interpreter for x86-64 Linux only")  # fmt: skip
            return 0

        def run(path: str, x: Any) -> list[Any]:  # LCE takes images NHWC
            return interpreter(path).predict((x.permute(0, 2, 3, 1) if x.dim() == 4 else x).numpy())
    x = torch.randn(1, *shape)
    with torch.no_grad():
        expected = model.eval()(x)
    got = torch.as_tensor(run(args.out, x)[0]).reshape(expected.shape)
    diff = (got - expected).abs().max().item() / max(expected.abs().max().item(), 1e-12)
    size = Path(args.out).stat().st_size
    print(f"exported {args.format} ({_method_label(meta)}) -> {args.out} ({size / 1024:.1f} KiB);"
          f" {runtime} matches PyTorch to {diff:.1e} of the output scale")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import run_suite

    if args.executor == "ray":
        _require("ray", "--executor ray")
    out = args.out or str(Path("bench") / Path(args.suite).stem)
    result = run_suite(args.suite, out, executor=args.executor, workers=args.workers, address=args.address,
                       progress=not args.quiet, report=not args.no_report, device=args.device,
                       data_root=args.data_root)
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
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UsageError(f"input {path}: not a plain numeric .npy array ({err})") from None
        if array.dtype.kind not in "biuf":
            return _numeric(array, path), False
        with np.errstate(over="ignore"):  # (a value beyond float32 becomes inf: the engine refuses it)
            return _numeric(torch.from_numpy(np.array(array, dtype=np.float32)), path), False
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except Exception as err:  # safetensors' own error types for truncated or foreign files
            raise UsageError(f"input {path}: not a readable .safetensors file ({type(err).__name__})") from None
        if len(tensors) != 1:
            raise UsageError(f"input {path}: expected exactly one tensor, found {len(tensors)}")
        return _numeric(next(iter(tensors.values())), path), False
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(f"input {path}: unknown file type {p.suffix or '(no extension)'!r}; give a .npy or "
                         f".safetensors batch or an image ({', '.join(IMAGE_SUFFIXES)})")
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


def _numeric(data: Any, path: str) -> Any:
    """A real-valued, non-empty batch as float32; strings, complex numbers and empty arrays are refused."""
    import torch

    if not isinstance(data, torch.Tensor) or data.is_complex():
        kind = getattr(data, "dtype", type(data).__name__)
        raise UsageError(f"input {path}: its values are {kind}, not real numbers; save a float array")
    if data.numel() == 0:
        raise UsageError(f"input {path}: the array is empty (shape {tuple(data.shape)}); give at least one sample")
    if data.dim() == 0:
        raise UsageError(f"input {path}: a single number, not a batch; give an array of samples")
    return data.float()


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

    if args.out is not None:
        _check_output_file(args.out, "infer")
    packed = load(args.model)
    if args.threads is not None:
        kernels.set_num_threads(args.threads)
    data, is_image = _read_input(args.input)
    info = packed.meta.get("data", {})
    x = _image_tensor(data, info) if is_image else data
    shape = info.get("input_shape")
    if shape and tuple(x.shape[1:]) != tuple(shape):
        if tuple(x.shape) == tuple(shape):
            x = x.unsqueeze(0)
        else:
            raise UsageError(f"input has shape {tuple(x.shape)}; this model takes batches of {tuple(shape)}")
    if args.normalize and not is_image:  # (an image is always normalized)
        x = _normalize(x, info)
    logits = packed(x)
    if args.out is not None:
        _save_npy(args.out, logits.numpy())
    probs = torch.softmax(logits, dim=-1)
    classes = info.get("classes") or []
    top = probs.topk(min(args.top, probs.shape[-1]), dim=-1)
    for i, (values, indices) in enumerate(zip(top.values, top.indices)):
        parts = [f"{classes[j] if j < len(classes) else j}: {v:.3f}" for v, j in zip(values.tolist(), indices.tolist())]
        print(f"sample {i}: " + ", ".join(parts))
    return 0


def _save_npy(path: str, array: Any) -> None:
    """np.save's file (``.npy`` appended as np.save does), written atomically: never half a file."""
    import io

    import numpy as np

    from ._io import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path if path.endswith(".npy") else path + ".npy", buffer.getvalue())


def _cmd_summary(args: argparse.Namespace) -> int:
    from .nn.summary import summary

    model, shape = _summary_model(args)
    print(summary(model, args.input_shape or shape))
    return 0


def _summary_model(args: argparse.Namespace) -> tuple[Any, tuple[int, ...] | None]:
    """The network ``onebit summary`` describes: a run (directory or checkpoint) or a zoo model name."""
    from . import models

    target = Path(args.target)
    if target.suffix == ".onebit" or (target.is_file() and target.suffix not in (".pt", ".pth")):
        raise UsageError(f"{args.target}: give a run directory or its model.pt (a packed model file keeps "
                         "only the deployed arithmetic, not the layers summary counts)")  # fmt: skip
    if target.exists():
        from .train.trainer import load_checkpoint, load_run_model

        if args.method is not None:
            raise UsageError("--method applies to a zoo model name, not to a trained run")
        payload = load_checkpoint(target)
        model, _, _ = load_run_model(payload)
        shape = (payload.get("data_info") or {}).get("input_shape")
        return model, tuple(shape) if shape else None
    if args.target not in models.available():
        raise UsageError(f"{args.target!r} is neither a run directory, a checkpoint nor a model name; "
                         f"models: {', '.join(models.available())}")  # fmt: skip
    fp = args.method in (None, "fp", "none", "full-precision")
    options: dict[str, Any] = {}
    if args.input_shape is not None:  # size the network for that input, as training sizes it for its data
        known = models.spec(args.target)
        options["in_channels"] = args.input_shape[0]
        if "input_shape" in known.options:
            options["input_shape"] = args.input_shape
        elif known.size_option is not None:
            options[known.size_option] = args.input_shape[-1]
    model = models.create(args.target, method=None if fp else args.method, **options)
    return model, tuple(model.input_shape)


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
    parser = _Parser(prog="onebit", description="Binary neural networks in PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command name too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = command("train", help="train a recipe (a shipped name such as 'fast', or a TOML/YAML/JSON file)")
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe name or file (default: fast; with --resume RUN_DIR: the run's own recipe)")
    p.add_argument("--out", help="run directory (default: runs/RECIPE_NAME)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue a run from its last checkpoint: --resume RUN_DIR alone reads the run's "
                        "recipe; bare --resume continues --out with the recipe given")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--method", help="replace the method of every binarized stage ('fp' for full precision)")
    p.add_argument("--data", help="dataset name (onebit.data.available())")
    p.add_argument("--root", help="dataset directory (cifar10, imagefolder)")
    p.add_argument("--model", help="model name (onebit.models.available())")
    p.add_argument("--epochs", type=_integer(1), help="epochs of every stage")
    p.add_argument("--batch-size", type=_integer(1), help="global batch size")
    p.add_argument("--lr", type=_positive_number, help="base learning rate of every stage")
    p.add_argument("--seed", type=_integer(0))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe entry, e.g. stage.0.optimizer.lr=0.01 or stage.*.epochs=2")
    p.add_argument("--workers", type=_integer(0), default=0, help="data-loading worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--compile", action="store_true", help="train with torch.compile (the recipe key compile = true)")
    p.set_defaults(func=_cmd_train)

    p = command("eval", help="test accuracy of a trained run")
    p.add_argument("checkpoint", help="a run directory or its model.pt")
    p.add_argument("--data", help="evaluate on another dataset")
    p.add_argument("--root", help="dataset directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)

    p = command("export", help="export a trained run to a packed 1-bit model file")
    p.add_argument("checkpoint", help="a run directory or its model.pt (from onebit train)")
    p.add_argument("out", help="the packed model file to write (e.g. model.onebit)")
    p.add_argument("--format", default="onebit", choices=["onebit", "lce", "onnx", "qonnx"],
                   help="onebit: the packed engine's safetensors+JSON file; lce: a TFLite flatbuffer for Larq "
                        "Compute Engine; onnx: standard ONNX for onnxruntime; qonnx: QONNX (BipolarQuant/Quant) "
                        "for FINN")
    p.set_defaults(func=_cmd_export)

    p = command("bench", help="run a benchmark suite (BiBench's tracks) into a results database")
    p.add_argument("suite", nargs="?", default="default", help="suite name or TOML/YAML file (default: default)")
    p.add_argument("--out", help="output directory (default: bench/SUITE)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: a process pool here; ray: Ray tasks (--address, or a local Ray instance)")
    p.add_argument("--workers", type=_integer(1), help="parallel runs (default: one per core, at most 4)")
    p.add_argument("--address", help="Ray cluster address, HOST:PORT of `ray start --head`, or auto "
                                     "(with --executor ray; README: Benchmark)")
    p.add_argument("--device", help="where runs train and are evaluated: cpu (default, or the suite's device), "
                                    "cuda, cuda:N")
    p.add_argument("--data-root", help="local folder of datasets read from disk (CIFAR-10: the folder holding "
                                       "cifar-10-batches-py/); default: the suite's data_root")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress display or leaderboard")
    p.set_defaults(func=_cmd_bench)

    p = command("report", help="write report.md and report.html from a benchmark directory")
    p.add_argument("dir", help="a directory written by onebit bench (holding results.sqlite)")
    p.add_argument("--out", help="report directory (default: DIR/report)")
    p.add_argument("--overall", default="rank", choices=["rank"],
                   help="how the overall score combines the tracks: the mean of per-track ranks (bounded)")
    p.add_argument("--strict", action="store_true", help="fail when a binarized run lacks its fp baseline")
    p.set_defaults(func=_cmd_report)

    p = command("infer", help="run a packed model on an input file and print the top classes")
    p.add_argument("model", help="a packed model file written by onebit export")
    p.add_argument("input", help="a .npy or .safetensors batch of model inputs (already normalized as in "
                                 "training, or raw in [0, 1] with --normalize), or an image file "
                                 "(resized and normalized as in training)")  # fmt: skip
    p.add_argument("--normalize", action="store_true",
                   help="apply the training data's per-channel mean/std (recorded in the model file) to "
                        "a .npy/.safetensors batch of raw values in [0, 1]")  # fmt: skip
    p.add_argument("--top", type=_integer(1), default=3, help="classes to print per sample")
    p.add_argument("--out", help="also save the logits as .npy")
    p.add_argument("--threads", type=_integer(1), help="engine threads (default: torch's)")
    p.set_defaults(func=_cmd_infer)

    p = command("summary", help="per-layer parameters, memory, MACs/BOPs of a run or a zoo model")
    p.add_argument("target", metavar="MODEL_OR_RUN",
                   help="a run directory or its model.pt, or a model name (onebit.models.available())")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                   help="one sample's shape (default: the run's data, or the model's own)")
    p.add_argument("--method", help="with a model name: the binarization method ('fp' for full precision)")
    p.set_defaults(func=_cmd_summary)

    p = command("methods", help="list the binarization methods")
    p.set_defaults(func=_cmd_methods)
    p = command("recipes", help="list the shipped training recipes")
    p.set_defaults(func=_cmd_recipes)
    return parser


#: Errors that mean "the command cannot run as given" (a bad value, file, name or a missing package):
#: exit status 2, like argparse's. Any other onebit error, an OS error or a diverged training is a
#: fault met while running: exit status 1.
USAGE_ERRORS = (UsageError, ValueError, ImportError, NotImplementedError, FileNotFoundError)
FAULTS = (OnebitError, OSError, ArithmeticError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is 0, 1 (a fault while running), 2 (a usage error) or 130
    (interrupted). Errors print one line on stderr naming the problem and the fix (``--debug``: the
    traceback as well)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or argparse's one-line usage error
        return int(done.code or 0) if not isinstance(done.code, str) else 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `onebit ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        _report_interrupt(args)
        return 130
    except (*USAGE_ERRORS, *FAULTS) as err:
        if args.debug:
            import traceback

            traceback.print_exc()
        status = 2 if isinstance(err, USAGE_ERRORS) and not _is_fault(err) else 1
        print(f"onebit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return status
    except Exception as err:  # a bug, not a bad input: still one line, with the way to the traceback
        if args.debug:
            raise
        print(f"onebit {args.command}: internal error: {type(err).__name__}: {' '.join(str(err).split())[:300]}; "
              "rerun with --debug for the traceback and please report it", file=sys.stderr)
        return 1


def _is_fault(err: BaseException) -> bool:
    """OS errors other than a missing input file are faults (permissions, full disk, I/O)."""
    return isinstance(err, OSError) and not isinstance(err, FileNotFoundError)


def _one_line(err: BaseException) -> str:
    """The error's message on one line; an OS error also says what to do about it."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError):
        where = f": {err.filename}" if err.filename else ""
        fix = OS_FIXES.get(err.errno or 0, "check the path and its permissions")
        return f"{err.strerror}{where}; {fix}"
    if isinstance(err, FileNotFoundError) and err.strerror:
        return f"{err.filename or 'a file'} does not exist ({err.strerror}); check the path"
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (OnebitError, ValueError, ImportError)) else f"{type(err).__name__}: {text}"


OS_FIXES = {
    errno.EACCES: "choose a writable --out (or fix the folder's permissions)",
    errno.EPERM: "choose a writable --out (or fix the folder's permissions)",
    errno.EROFS: "the file system is read-only: choose an --out on a writable one",
    errno.ENOSPC: "the disk is full: free space or choose an --out on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or choose another --out",
    errno.EISDIR: "that path is a directory: give a file path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: fix the path",
}


def _report_interrupt(args: argparse.Namespace) -> None:
    """One line of its own (a progress bar may hold the cursor) saying how to continue."""
    hints = {
        "train": f"continue it with `onebit train --resume {getattr(args, 'run_dir', 'RUN_DIR')}`",
        "bench": "run the same command again to continue: finished runs are kept and skipped",
    }
    hint = f"; {hints[args.command]}" if args.command in hints else ""
    lead = "\n" if sys.stderr.isatty() else ""
    print(f"{lead}onebit {args.command}: interrupted{hint}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
