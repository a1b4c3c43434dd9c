"""Recipes: a small declarative description of a training run, as a TOML/YAML file or Python objects.

A recipe names the data and the model once and lists one or more **stages**; each stage sets the
binarization method and its options, the optimizer, the learning-rate schedule with warm-up, the
epochs, weight-decay groups, what it loads from the previous stage, and an optional distillation
teacher. Example (TOML)::

    name = "biper-cifar10"
    seed = 0
    [data]
    name = "cifar10"
    root = "data/cifar10"
    batch_size = 256

    [model]
    name = "resnet18"

    [[stage]]
    name = "stage1"
    method = "biper"
    method_options = { stage = 1, omega = 20, tau = 0.037 }
    epochs = 600
    optimizer = { name = "sgd", lr = 0.021, momentum = 0.9, weight_decay = 1.6e-3 }
    lr_schedule = { name = "cosine", warmup_epochs = 5 }

    [[stage]]
    name = "stage2"
    init = "previous"
    ...
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnebitError

__all__ = [
    "RecipeError",
    "DataSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ScheduleSpec",
    "DistillSpec",
    "Stage",
    "Recipe",
    "load_recipe",
    "builtin_recipes",
    "read_table",
    "RECIPE_DIR",
]

RECIPE_DIR = Path(__file__).parent / "recipes"

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "step", "constant")
WD_GROUPS = ("all", "no_norm_bias", "conv_fc_only")
DISTILL_LOSSES = ("kl", "kl+ce")


class RecipeError(OnebitError, ValueError):
    """A recipe is malformed; the message names the key, the bad value and what is allowed."""


def _fail(where: str, message: str) -> RecipeError:
    return RecipeError(f"recipe: {where}: {message}")


def _take(table: dict[str, Any], where: str, cls: type) -> dict[str, Any]:
    """Check that ``table`` only has keys ``cls`` knows and return it."""
    if not isinstance(table, dict):
        raise _fail(where, f"expected a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    return table


def _number(value: Any, where: str, *, low: float | None = None, integer: bool = False,
            low_open: bool = False) -> Any:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)  # NaN and inf are no epochs, rates or sizes
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
        raise _fail(where, f"{value!r} is not {kind}{bound}")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(where, f"{value!r} is not one of {', '.join(choices)}")
    return value


@dataclass
class DataSpec:
    name: str = "digits"
    root: str | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self, where: str = "data") -> None:
        from ..data import available

        if self.name not in available():
            raise _fail(f"{where}.name", f"{self.name!r} is not a dataset; available: {', '.join(available())}")
        if self.root is not None and not isinstance(self.root, str):
            raise _fail(f"{where}.root", f"{self.root!r} is not a directory path")
        if not isinstance(self.options, dict):
            raise _fail(f"{where}.options", f"{self.options!r} is not a table")
        _number(self.batch_size, f"{where}.batch_size", low=1, integer=True)
        if self.eval_batch_size is not None:
            _number(self.eval_batch_size, f"{where}.eval_batch_size", low=1, integer=True)


@dataclass
class ModelSpec:
    name: str = "mlp"
    options: dict[str, Any] = field(default_factory=dict)

    def check(self, where: str = "model") -> None:
        from ..models import available

        if self.name not in available():
            raise _fail(f"{where}.name", f"{self.name!r} is not a model; available: {', '.join(available())}")
        if not isinstance(self.options, dict):
            raise _fail(f"{where}.options", f"{self.options!r} is not a table")


@dataclass
class OptimizerSpec:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    nesterov: bool = False
    #: Which parameters get weight decay: all of them, all but norm layers' weights and biases
    #: (and 1-D method parameters), or only those whose name has "conv" or "fc" (BiPer's ImageNet code).
    weight_decay_groups: str = "all"

    def check(self, where: str) -> None:
        _choice(self.name, f"{where}.name", OPTIMIZERS)
        _number(self.lr, f"{where}.lr", low=0.0, low_open=True)
        _number(self.momentum, f"{where}.momentum", low=0.0)
        _number(self.weight_decay, f"{where}.weight_decay", low=0.0)
        _choice(self.weight_decay_groups, f"{where}.weight_decay_groups", WD_GROUPS)
        if not isinstance(self.nesterov, bool):
            raise _fail(f"{where}.nesterov", f"{self.nesterov!r} is not true or false")
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise _fail(f"{where}.betas", f"{self.betas!r} is not two numbers")
        for beta in self.betas:
            _number(beta, f"{where}.betas", low=0.0)


@dataclass
class ScheduleSpec:
    #: cosine to ``final_lr``; linear decay to ``final_lr``; step decay by ``gamma`` at ``milestones``;
    #: or constant. All are evaluated per optimizer step from (epoch, step) so a resumed run sees the
    #: same learning rates.
    name: str = "cosine"
    warmup_epochs: float = 0.0
    final_lr: float = 0.0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    #: Length of the cosine/linear decay in epochs (default: the stage's epochs minus the warm-up);
    #: BiPer's CIFAR code uses epochs − 4.
    decay_epochs: float | None = None

    def check(self, where: str) -> None:
        _choice(self.name, f"{where}.name", SCHEDULES)
        _number(self.warmup_epochs, f"{where}.warmup_epochs", low=0.0)
        _number(self.final_lr, f"{where}.final_lr", low=0.0)
        _number(self.gamma, f"{where}.gamma", low=0.0, low_open=True)
        if self.decay_epochs is not None:
            _number(self.decay_epochs, f"{where}.decay_epochs", low=0.0, low_open=True)
        if not isinstance(self.milestones, (list, tuple)):
            raise _fail(f"{where}.milestones", f"{self.milestones!r} is not a list of epochs")
        for m in self.milestones:
            _number(m, f"{where}.milestones", low=0, integer=True)


@dataclass
class DistillSpec:
    #: The teacher: the name of an earlier stage of this recipe, or a checkpoint path written by
    #: ``onebit train`` (its recipe tells the architecture).
    teacher: str = ""
    #: "kl": ReActNet's distribution loss alone (KL from the teacher's softmax); "kl+ce": weighted sum
    #: ``alpha·KL + (1 − alpha)·CE``.
    loss: str = "kl"
    alpha: float = 1.0
    temperature: float = 1.0

    def check(self, where: str) -> None:
        if not self.teacher or not isinstance(self.teacher, str):
            raise _fail(f"{where}.teacher", "must name an earlier stage or a checkpoint path")
        _choice(self.loss, f"{where}.loss", DISTILL_LOSSES)
        _number(self.alpha, f"{where}.alpha", low=0.0)
        if self.alpha > 1:
            raise _fail(f"{where}.alpha", f"{self.alpha} must be in [0, 1]")
        _number(self.temperature, f"{where}.temperature", low=0.0, low_open=True)


@dataclass
class Stage:
    name: str = "main"
    #: A registered binarization method, or None for the full-precision network.
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    #: Length of the stage (README's Training section documents the default).
    epochs: int = 10
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    lr_schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    #: "scratch" (fresh initialisation), "previous" (the previous stage's final weights), or
    #: "stage:NAME" / a checkpoint path. Method-owned parameters missing from the source keep their
    #: initialisation (e.g. learnable scales when fine-tuning from a full-precision network).
    init: str = "scratch"
    distill: DistillSpec | None = None
    #: A different architecture for this stage only (e.g. a full-precision teacher stage).
    model: ModelSpec | None = None
    label_smoothing: float = 0.0
    grad_clip: float | None = None

    def check(self, where: str) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _fail(f"{where}.name", "must be a non-empty string")
        if self.method is not None:
            from ..methods import method_class

            if not isinstance(self.method, str):
                raise _fail(f"{where}.method", f"{self.method!r} is not a method name")
            try:
                method_class(self.method)
            except ValueError as err:
                raise _fail(f"{where}.method", str(err)) from None
        self._check_method_options(where)
        if not isinstance(self.init, str):
            raise _fail(f"{where}.init", f"{self.init!r} is not 'scratch', 'previous', 'stage:NAME' or a path")
        _number(self.epochs, f"{where}.epochs", low=1, integer=True)
        self.optimizer.check(f"{where}.optimizer")
        self.lr_schedule.check(f"{where}.lr_schedule")
        if self.distill is not None:
            self.distill.check(f"{where}.distill")
        if self.model is not None:
            self.model.check(f"{where}.model")
        _number(self.label_smoothing, f"{where}.label_smoothing", low=0.0)
        if self.grad_clip is not None:
            _number(self.grad_clip, f"{where}.grad_clip", low=0.0, low_open=True)

    def _check_method_options(self, where: str) -> None:
        """method_options: a table of the method's own options (values checked by the method) and the
        binary layers' options; reported under this key, not under the model."""
        from ..methods import method_class
        from ..models._registry import LAYER_OPTIONS

        options = self.method_options
        if not isinstance(options, dict):
            raise _fail(f"{where}.method_options", f"{options!r} is not a table")
        if self.method is None:
            if options:
                raise _fail(f"{where}.method_options", "a full-precision stage (no method) takes no method options")
            return
        cls = method_class(self.method)
        unknown = sorted(k for k in options if k not in cls.options and k not in LAYER_OPTIONS)
        if unknown:
            raise _fail(f"{where}.method_options", f"unknown option(s) {', '.join(map(repr, unknown))}; "
                        f"{self.method} options: {', '.join(cls.options) or '(none)'}; layer options: "
                        f"{', '.join(LAYER_OPTIONS)}")
        for key in ("binarize_weights", "binarize_activations"):
            if options.get(key) is not None and not isinstance(options[key], bool):
                raise _fail(f"{where}.method_options.{key}", f"{options[key]!r} is not true or false")
        try:
            cls(**{k: v for k, v in options.items() if k in cls.options})
        except (ValueError, TypeError) as err:
            raise _fail(f"{where}.method_options", str(err)) from None


@dataclass
class Recipe:
    name: str = "recipe"
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    stages: list[Stage] = field(default_factory=lambda: [Stage()])
    description: str = ""
    #: Wrap the model in torch.compile for training and evaluation (opt-in; same numbers as eager
    #: within float tolerance, tests/train/test_compile.py).
    compile: bool = False

    def check(self) -> Recipe:
        if not isinstance(self.name, str) or not self.name.strip():
            raise _fail("name", f"{self.name!r} is not a run name (a non-empty string)")
        if not isinstance(self.description, str):
            raise _fail("description", f"{self.description!r} is not a string")
        _number(self.seed, "seed", low=0, integer=True)
        if not isinstance(self.compile, bool):
            raise _fail("compile", f"{self.compile!r} is not true or false")
        if self.seed >= 2**32:
            raise _fail("seed", f"{self.seed} is not below 2**32 (the random generators' seed range)")
        self.data.check()
        self.model.check()
        if not self.stages:
            raise _fail("stage", "a recipe needs at least one [[stage]]")
        for i, stage in enumerate(self.stages):  # (each name a string before they are compared)
            if not isinstance(stage.name, str) or not stage.name:
                raise _fail(f"stage[{i}].name", f"{stage.name!r} is not a non-empty string")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise _fail("stage", f"stage names must be unique, got {names}")
        for i, stage in enumerate(self.stages):
            where = f"stage[{i}] ({stage.name})"
            stage.check(where)
            earlier = names[:i]
            refs = []
            if stage.init.startswith("stage:"):
                refs.append(("init", stage.init[6:]))
            elif stage.init == "previous" and i == 0:
                raise _fail(f"{where}.init", "'previous' needs an earlier stage")
            if stage.distill is not None and stage.distill.teacher in names:
                refs.append(("distill.teacher", stage.distill.teacher))
            for key, ref in refs:
                if ref not in earlier:
                    raise _fail(f"{where}.{key}", f"{ref!r} is not an earlier stage ({', '.join(earlier) or 'none'})")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stage"] = out.pop("stages")
        return out

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> Recipe:
        table = dict(table)
        stages_raw = table.pop("stage", table.pop("stages", None))
        _take(table, "top level", cls)
        data = DataSpec(**_take(table.pop("data", {}), "data", DataSpec))
        model = ModelSpec(**_take(table.pop("model", {}), "model", ModelSpec))
        if stages_raw is None:
            raise _fail("stage", "a recipe needs at least one [[stage]] table")
        if isinstance(stages_raw, dict):
            stages_raw = [stages_raw]
        if not isinstance(stages_raw, list):
            raise _fail("stage", f"{stages_raw!r} is not a list of [[stage]] tables")
        stages = [_stage_from_dict(s, i) for i, s in enumerate(stages_raw)]
        try:
            recipe = cls(data=data, model=model, stages=stages, **table)
        except TypeError as err:
            raise _fail("top level", str(err)) from None
        return recipe.check()


def _stage_from_dict(raw: dict[str, Any], index: int) -> Stage:
    where = f"stage[{index}]"
    raw = dict(_take(raw, where, Stage))
    if "optimizer" in raw:
        opt = dict(_take(raw["optimizer"], f"{where}.optimizer", OptimizerSpec))
        if isinstance(opt.get("betas"), list):
            opt["betas"] = tuple(opt["betas"])
        raw["optimizer"] = OptimizerSpec(**opt)
    if "lr_schedule" in raw:
        raw["lr_schedule"] = ScheduleSpec(**_take(raw["lr_schedule"], f"{where}.lr_schedule", ScheduleSpec))
    if raw.get("model") is not None:
        raw["model"] = ModelSpec(**_take(raw["model"], f"{where}.model", ModelSpec))
    if raw.get("distill") is not None:
        raw["distill"] = DistillSpec(**_take(raw["distill"], f"{where}.distill", DistillSpec))
    return Stage(**raw)


def read_table(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The top-level table of the TOML (or, by suffix, YAML) file ``path``; a syntax error or a
    non-table document raises ``error`` with a message naming the ``what`` ("recipe", "suite")."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":  # a run's recipe.json
            import json

            table = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise error(f"{what} {path}: YAML files need PyYAML (pip install pyyaml)") from None
            table = yaml.safe_load(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            table = tomllib.loads(text)
    except error:
        raise
    except Exception as err:  # a parser's own message says where the syntax broke
        raise error(f"{what} {path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {err}") from None
    if not isinstance(table, dict):
        raise error(f"{what} {path}: the top level must be a table")
    return table


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with onebit (``onebit train NAME``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def load_recipe(source: str | Path | dict[str, Any] | Recipe) -> Recipe:
    """A validated recipe from a shipped name, a TOML/YAML path, a dict, or a Recipe."""
    if isinstance(source, Recipe):
        return source.check()
    if isinstance(source, dict):
        return Recipe.from_dict(source)
    path = Path(source)
    if not path.exists():
        shipped = RECIPE_DIR / f"{source}.toml"
        if shipped.exists():
            path = shipped
        else:
            raise RecipeError(
                f"recipe {str(source)!r} is neither a file nor a shipped recipe; "
                f"shipped: {', '.join(builtin_recipes())}"
            )
    table = read_table(path, "recipe", RecipeError)
    try:
        return Recipe.from_dict(table)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
