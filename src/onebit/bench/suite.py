"""Benchmark suites: which methods, architectures, tasks and tracks one ``onebit bench`` run covers.

A suite is a TOML (or YAML) file; ``onebit bench default`` runs the shipped ``suites/default.toml``.
Example::

    name = "mine"
    methods = ["bnn", "reactnet"]      # or "all"; the full-precision baseline "fp" is always added
    seeds = [0]
    tracks = ["accuracy", "robustness", "training", "sensitivity", "complexity", "inference"]
    activations = "binary"             # W1A1 for every method (default); "method": each method's default
    weight_only = ["pcpp-pc"]          # optional: also run these with real activations (group W1A32)
    device = "cpu"                     # or "cuda" / "cuda:N" (training, evaluation, robustness); --device
    data_root = "data/cifar10"         # datasets read from disk (cifar10, imagefolder); --data-root

    [train]                            # defaults of every run (BiBench's eff_train grid varies these)
    epochs = 8
    batch_size = 32
    optimizer = "adam"
    lr = 2e-3
    schedule = "cosine"
    init = "fp"                        # optional: binarized runs start from their FP run (trained first)

    [[setting]]                        # one (task, architecture) pair; family defaults from the arch
    task = "digits"
    arch = "mlp"
    model_options = { hidden = [256, 256] }
    train = { epochs = 10 }            # overrides [train] for this setting

    [robustness]
    corruptions = "all"                # the image or the 1-D set, chosen by the task's input shape
    severities = [1, 2, 3, 4, 5]

    [sensitivity]                      # BiBench's training-consumption grid on one setting
    setting = 0                        # index into [[setting]]
    grid = [{ optimizer = "sgd", lr = 0.1 }, { optimizer = "adam", lr = 1e-3 }]
    schedules = ["cosine", "step"]

    [inference]
    networks = ["bireal18", "reactnet_a"]  # deployment networks timed at 224x224 (onebit.bench.deployment);
    threads = [1, 2]                   # without networks, the trained models are timed (threads: one int)
    repeats = 20

Each suite expands into :class:`RunSpec` s; a run's id hashes everything that changes its result, so
the same run in two suites (or the FP baseline several settings share) is trained once per results
database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnebitError
from ..methods import available as available_methods

__all__ = [
    "SuiteError",
    "Suite",
    "Setting",
    "RunSpec",
    "load_suite",
    "builtin_suites",
    "SUITE_DIR",
    "TRACKS",
    "family_of",
]

SUITE_DIR = Path(__file__).parent / "suites"
#: The task name of inference-track runs on deployment networks (random 224x224 inputs, no data set).
DEPLOY_TASK = "random224"
TRACKS = ("accuracy", "robustness", "training", "sensitivity", "complexity", "inference")
FP = "fp"

#: BiBench's architecture families (Sec. 3.2): CNNs, transformers, and MLP-based networks.
_FAMILIES = {"mlp": "mlp", "conv1d": "cnn", "vit": "transformer"}
_TRAIN_KEYS = {
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "lr": float,
    "schedule": str,
    "warmup_epochs": float,
    "weight_decay": float,
    "momentum": float,
    "init": str,
}
#: ``init`` in ``[train]``: "scratch" (default), or "fp" — a binarized run starts from the final weights of
#: the FP run of its setting, seed and hyper-parameters (BiBench's ``init_cfg=Pretrained``), which then
#: trains first. Part of a run's id only when set (the ids of suites without it stay as they were).
INITS = ("scratch", "fp")
#: BiBench's eff_train grid (configs/eff_train): {SGD 0.1, 0.01; Adam 1e-3, 1e-4} × {cosine, step}, each point
#: with its config's momentum and weight decay (:func:`bibench_regularization`).
_DEFAULT_GRID = (
    {"optimizer": "sgd", "lr": 0.1},
    {"optimizer": "sgd", "lr": 0.01},
    {"optimizer": "adam", "lr": 1e-3},
    {"optimizer": "adam", "lr": 1e-4},
)


def bibench_regularization(optimizer: str, schedule: str) -> dict[str, float]:
    """Momentum and weight decay of BiBench's schedule configs (``configs/_base_/schedules/``, e.g.
    ``sgd_1e-1_steplr_200e.py``) for one point of the sensitivity grid: SGD with the step schedule has no
    momentum and weight decay 1e-4; SGD with cosine decay momentum 0.9 and weight decay 1e-4; Adam no weight
    decay (torch's default betas, as mmcv's). Keys set in ``[sensitivity].train`` override these; other
    optimizers keep the suite's values."""
    if optimizer == "sgd":
        return {"momentum": 0.0 if schedule == "step" else 0.9, "weight_decay": 1e-4}
    if optimizer == "adam":
        return {"weight_decay": 0.0}
    return {}


class SuiteError(OnebitError, ValueError):
    """A suite file or table is invalid; the message names the entry and what is allowed."""


def family_of(arch: str) -> str:
    """BiBench's family of a zoo architecture: ``mlp``, ``transformer`` or ``cnn``."""
    return _FAMILIES.get(arch, "cnn")


@dataclass(frozen=True)
class Setting:
    """One (task, architecture) pair of a suite, with its data/model options and training overrides."""

    task: str
    arch: str
    family: str
    data_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.task}"


@dataclass(frozen=True)
class RunSpec:
    """Everything one benchmark run computes: train ``method`` on ``setting`` with ``hparams``, then
    measure the ``tracks`` that apply to its role."""

    suite: str
    role: str  # "main" or "sensitivity"
    method: str  # a registered method, or "fp"
    setting: Setting
    seed: int
    hparams: dict[str, Any]
    tracks: tuple[str, ...]
    corruptions: tuple[str, ...] | str = "all"
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    inference: dict[str, Any] = field(default_factory=dict)
    #: binary-layer options of the run, e.g. ``{"binarize_activations": True}`` (see :attr:`Suite.activations`)
    layer_options: dict[str, Any] = field(default_factory=dict)
    #: the second stage a two-stage method trains before its weights are binary (:func:`final_stage_of`):
    #: ``{"options", "first_epochs", "epochs", "lr"}``; empty for one-stage methods
    final_stage: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """A stable id of what the run computes (the suite's name is not part of it)."""
        content = asdict(self)
        content.pop("suite")
        for key in ("layer_options", "final_stage"):  # ids of runs without these predate the fields
            if not content[key]:
                content.pop(key)
        blob = json.dumps(content, sort_keys=True, default=list).encode()
        return f"{self.method}-{self.setting.arch}-{self.setting.task}-{hashlib.sha1(blob).hexdigest()[:10]}"

    @property
    def label(self) -> str:
        hp = self.hparams
        extra = f" {hp['optimizer']} {hp['lr']:g} {hp['schedule']}" if self.role == "sensitivity" else ""
        if self.layer_options.get("binarize_activations") is False:
            extra += " W1A32"  # the weight-only variant of a method
        return f"{self.method} {self.setting.label} seed {self.seed}{extra}"

    def config(self) -> dict[str, Any]:
        """The JSON-able description stored with the run's results."""
        out = asdict(self)
        out["setting"].pop("family")
        return out


def final_stage_of(method: str, layer_options: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """The final stage (:meth:`onebit.methods.base.Method.final_stage`) a run of ``method`` trains after
    its first, so that every run is scored in the binary form it deploys in (BiPer: stage 2 after stage 1,
    within the run's epochs); ``{}`` for the full-precision model and one-stage methods."""
    if method == FP:
        return {}
    from ..methods import method_class

    stage = method_class(method).final_stage(layer_options)
    if stage is None:
        return {}
    first, last = stage.epochs(hparams["epochs"])
    return {"options": dict(stage.options), "first_epochs": first, "epochs": last,
            "lr": hparams["lr"] * stage.lr_factor}


@dataclass
class Suite:
    name: str
    methods: list[str]
    seeds: list[int]
    tracks: tuple[str, ...]
    train: dict[str, Any]
    settings: list[Setting]
    corruptions: tuple[str, ...] | str = "all"
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    sensitivity_setting: int = 0
    sensitivity_methods: list[str] = field(default_factory=list)
    sensitivity_grid: list[dict[str, Any]] = field(default_factory=lambda: [dict(g) for g in _DEFAULT_GRID])
    sensitivity_schedules: list[str] = field(default_factory=lambda: ["cosine", "step"])
    sensitivity_train: dict[str, Any] = field(default_factory=dict)
    #: seeds of the grid (default: the suite's); BiBench trains each grid point once
    sensitivity_seeds: list[int] = field(default_factory=list)
    inference: dict[str, Any] = field(default_factory=lambda: {"threads": 1, "repeats": 20})
    description: str = ""
    #: "binary": every method binarizes activations (W1A1, BiBench's setting; methods whose default keeps
    #: them real — the PC++ presets, bnn++ — run with ``binarize_activations=True``); "method": each
    #: method's own default
    activations: str = "binary"
    #: methods also run with real activations (weight-only, W1A32): a separate group, never ranked against W1A1
    weight_only: list[str] = field(default_factory=list)
    #: where training, evaluation and robustness run ("cpu", "cuda", "cuda:N"; ``onebit bench --device``
    #: overrides it). Not part of a run's id: the same run on another device is the same run.
    device: str = "cpu"
    #: the local folder of datasets read from disk (cifar10, imagefolder); ``--data-root`` overrides it.
    #: Relative paths are taken from the working directory. Not part of a run's id (each machine of a
    #: Ray cluster may keep its copy elsewhere).
    data_root: str | None = None

    def layer_options(self, method: str, weight_only: bool = False) -> dict[str, Any]:
        """The binary-layer options a run of ``method`` gets from :attr:`activations` / :attr:`weight_only`."""
        if method == FP:
            return {}
        if weight_only:
            return {"binarize_activations": False}
        from ..methods import method_class

        if self.activations == "binary" and not method_class(method).binarizes_activations:
            return {"binarize_activations": True}
        return {}

    def hparams(self, setting: Setting, **changes: Any) -> dict[str, Any]:
        hp = {
            "epochs": 8,
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 2e-3,
            "schedule": "cosine",
            "warmup_epochs": 0.0,
            "weight_decay": 0.0,
            "momentum": 0.9,
        }
        hp.update(self.train)
        hp.update(setting.train)
        hp.update(changes)
        return hp

    def _deployment_runs(self, networks: list[str], variants: list[tuple[str, bool]]) -> list[RunSpec]:
        """One inference-track run per (method, network): random weights, timed at 224x224, batch 1."""
        if not networks:  # the trained models are timed in their own runs
            return []
        timing = {"threads": list(self.inference["threads"]), "repeats": self.inference["repeats"]}
        return [
            RunSpec(self.name, "inference", method, Setting(DEPLOY_TASK, network, "cnn"), 0, {}, ("inference",),
                    inference=timing, layer_options=self.layer_options(method, weight_only))
            for network in networks
            for method, weight_only in variants
            if method != FP  # each run times torch fp32 beside the packed model
        ]

    def runs(self) -> list[RunSpec]:
        """The suite's runs: the main grid (every method and fp × setting × seed), then the sensitivity
        grid if that track is on."""
        networks = self.inference.get("networks") or []
        # with deployment networks, the trained models keep their accuracy role only: the inference track
        # times the networks (onebit.bench.deployment), not the tiny trained models
        main_tracks = tuple(t for t in self.tracks if t != "sensitivity" and not (t == "inference" and networks))
        main_inference = {} if networks else dict(self.inference)
        out: list[RunSpec] = []
        variants = [(m, False) for m in [FP, *self.methods]] + [(m, True) for m in self.weight_only]
        for setting in self.settings:
            for seed in self.seeds:
                for method, weight_only in variants:
                    options, hp = self.layer_options(method, weight_only), self.hparams(setting)
                    out.append(RunSpec(self.name, "main", method, setting, seed, hp, main_tracks, self.corruptions,
                                       self.severities, main_inference, options, final_stage_of(method, options, hp)))
        if "inference" in self.tracks:
            out += self._deployment_runs(networks, variants)
        if "sensitivity" in self.tracks:
            setting = self.settings[self.sensitivity_setting]
            for seed in self.sensitivity_seeds or self.seeds:
                for method in [FP, *(self.sensitivity_methods or self.methods)]:
                    for point in self.sensitivity_grid:
                        for schedule in self.sensitivity_schedules:
                            hp = self.hparams(setting, **self.sensitivity_train, **point, schedule=schedule)
                            if "init" not in self.sensitivity_train:  # BiBench's eff_train: from scratch
                                hp.pop("init", None)
                            hp.update({k: v for k, v in bibench_regularization(hp["optimizer"], schedule).items()
                                       if k not in self.sensitivity_train})
                            options = self.layer_options(method)
                            out.append(RunSpec(self.name, "sensitivity", method, setting, seed, hp, ("accuracy",),
                                               layer_options=options, final_stage=final_stage_of(method, options, hp)))
        return out


# --------------------------------------------------------------------------------------------------
# Reading suite files
# --------------------------------------------------------------------------------------------------
def _fail(where: str, message: str) -> SuiteError:
    return SuiteError(f"suite: {where}: {message}")


def _table(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return value


def _methods(value: Any, where: str) -> list[str]:
    known = available_methods()
    if value == "all":
        return known
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise _fail(where, 'must be "all" or a non-empty list of method names')
    bad = [m for m in value if m not in known and m != FP]  # "fp" is always run; listing it is harmless
    if bad:
        raise _fail(where, f"unknown method(s) {', '.join(bad)}; available: {', '.join(known)}")
    return [m for m in value if m != FP]


def _train(value: Any, where: str) -> dict[str, Any]:
    table = _table(value, where, set(_TRAIN_KEYS))
    out = {}
    for key, value in table.items():
        kind = _TRAIN_KEYS[key]
        if kind is str:
            if not isinstance(value, str):
                raise _fail(f"{where}.{key}", f"must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise _fail(f"{where}.{key}", f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        elif value < 0 or (key in ("epochs", "batch_size", "lr") and value <= 0):
            raise _fail(f"{where}.{key}", f"must be positive, got {value!r}")
        out[key] = kind(value)
    from ..train.recipe import OPTIMIZERS, SCHEDULES

    if out.get("optimizer", "adam") not in OPTIMIZERS:
        raise _fail(f"{where}.optimizer", f"{out['optimizer']!r} is not one of {', '.join(OPTIMIZERS)}")
    if out.get("schedule", "cosine") not in SCHEDULES:
        raise _fail(f"{where}.schedule", f"{out['schedule']!r} is not one of {', '.join(SCHEDULES)}")
    if out.get("init", "scratch") not in INITS:
        raise _fail(f"{where}.init", f"{out['init']!r} is not one of {', '.join(INITS)}")
    return out


def _setting(raw: Any, index: int) -> Setting:
    from ..data import available as available_data
    from ..models import available as available_models

    where = f"setting[{index}]"
    raw = _table(raw, where, {"task", "arch", "family", "data_options", "model_options", "train"})
    for key in ("task", "arch"):
        if not isinstance(raw.get(key), str):
            raise _fail(f"{where}.{key}", "is required (a name)")
    if raw["task"] not in available_data():
        raise _fail(f"{where}.task", f"unknown dataset {raw['task']!r}; available: {', '.join(available_data())}")
    if raw["arch"] not in available_models():
        raise _fail(f"{where}.arch", f"unknown model {raw['arch']!r}; available: {', '.join(available_models())}")
    family = raw.get("family", family_of(raw["arch"]))
    if family not in ("cnn", "mlp", "transformer"):
        raise _fail(f"{where}.family", f"{family!r} is not one of cnn, mlp, transformer")
    options = {}
    for key in ("data_options", "model_options"):  # checked by the dataset and model when a run builds them
        if not isinstance(raw.get(key, {}), dict):
            raise _fail(f"{where}.{key}", "must be a table")
        options[key] = dict(raw.get(key, {}))
    return Setting(
        raw["task"],
        raw["arch"],
        family,
        options["data_options"],
        options["model_options"],
        _train(raw.get("train", {}), f"{where}.train"),
    )


def suite_from_dict(table: dict[str, Any], default_name: str = "suite") -> Suite:
    """A validated :class:`Suite` from the table of a suite file."""
    table = _table(
        table,
        "top level",
        {
            "name",
            "description",
            "methods",
            "seeds",
            "tracks",
            "train",
            "setting",
            "robustness",
            "sensitivity",
            "inference",
            "activations",
            "weight_only",
            "device",
            "data_root",
        },
    )
    name = table.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise _fail("name", "must be a non-empty string")
    methods = _methods(table.get("methods", "all"), "methods")
    seeds = table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _fail("seeds", f"must be a non-empty list of integers >= 0, got {seeds!r}")
    tracks = table.get("tracks", list(TRACKS))
    if not isinstance(tracks, list) or not all(t in TRACKS for t in tracks) or "accuracy" not in tracks:
        raise _fail("tracks", f"must be a list from {', '.join(TRACKS)} that includes accuracy, got {tracks!r}")
    settings_raw = table.get("setting")
    if not isinstance(settings_raw, list) or not settings_raw:
        raise _fail("setting", "a suite needs at least one [[setting]] (task + arch)")
    settings = [_setting(raw, i) for i, raw in enumerate(settings_raw)]
    suite = Suite(
        name,
        methods,
        list(seeds),
        tuple(t for t in TRACKS if t in tracks),
        _train(table.get("train", {}), "train"),
        settings,
        description=str(table.get("description", "")),
    )

    suite.activations = table.get("activations", "binary")
    if suite.activations not in ("binary", "method"):
        raise _fail("activations", f'must be "binary" (W1A1 for every method) or "method" (each method\'s '
                    f"default), got {suite.activations!r}")
    if "weight_only" in table:
        suite.weight_only = _methods(table["weight_only"], "weight_only")
    for key in ("device", "data_root"):
        if key in table and (not isinstance(table[key], str) or not table[key]):
            raise _fail(key, f"must be a non-empty string, got {table[key]!r}")
    suite.device = table.get("device", "cpu")
    suite.data_root = table.get("data_root")

    rob = _table(table.get("robustness", {}), "robustness", {"corruptions", "severities"})
    corruptions = rob.get("corruptions", "all")
    if corruptions != "all" and not (isinstance(corruptions, list) and all(isinstance(c, str) for c in corruptions)):
        raise _fail("robustness.corruptions", 'must be "all" or a list of corruption names')
    suite.corruptions = corruptions if corruptions == "all" else tuple(corruptions)
    severities = rob.get("severities", [1, 2, 3, 4, 5])
    if not isinstance(severities, list) or not severities or not all(s in (1, 2, 3, 4, 5) for s in severities):
        raise _fail("robustness.severities", f"must be a non-empty list from 1..5, got {severities!r}")
    suite.severities = tuple(severities)

    sens = _table(table.get("sensitivity", {}), "sensitivity",
                  {"setting", "methods", "grid", "schedules", "train", "seeds"})
    index = sens.get("setting", 0)
    if not isinstance(index, int) or not 0 <= index < len(settings):
        raise _fail("sensitivity.setting", f"must be an index into [[setting]] (0..{len(settings) - 1})")
    suite.sensitivity_setting = index
    if "methods" in sens:
        suite.sensitivity_methods = _methods(sens["methods"], "sensitivity.methods")
    if "grid" in sens:
        grid = sens["grid"]
        if not isinstance(grid, list) or not grid:
            raise _fail("sensitivity.grid", "must be a non-empty list of {optimizer, lr} tables")
        suite.sensitivity_grid = [
            _train(_table(g, f"sensitivity.grid[{i}]", {"optimizer", "lr"}), f"sensitivity.grid[{i}]")
            for i, g in enumerate(grid)
        ]
    if "schedules" in sens:
        suite.sensitivity_schedules = [
            _train({"schedule": s}, "sensitivity.schedules")["schedule"] for s in sens["schedules"]
        ]
    suite.sensitivity_train = _train(sens.get("train", {}), "sensitivity.train")
    if "seeds" in sens:
        seeds = sens["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise _fail("sensitivity.seeds", f"must be a non-empty list of integers >= 0, got {seeds!r}")
        suite.sensitivity_seeds = list(seeds)

    inf = _table(table.get("inference", {}), "inference", {"threads", "repeats", "networks"})
    networks = inf.get("networks", [])
    from .deployment import NETWORKS

    if not isinstance(networks, list) or not all(n in NETWORKS for n in networks):
        raise _fail("inference.networks", f"must be a list from {', '.join(NETWORKS)}, got {networks!r}")
    for key, default in (("threads", [1, 2] if networks else 1), ("repeats", 20)):
        value = inf.get(key, default)
        values = value if key == "threads" and networks and isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            listed = " (or, with networks, a list of them)" if key == "threads" else ""
            raise _fail(f"inference.{key}", f"must be an integer >= 1{listed}, got {value!r}")
        suite.inference[key] = values if key == "threads" and networks else value
    if networks:
        suite.inference["networks"] = list(networks)
    return suite


def builtin_suites() -> list[str]:
    """Names of the suites shipped with onebit (``onebit bench NAME``)."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.toml"))


def load_suite(source: str | Path | dict[str, Any] | Suite) -> Suite:
    """A validated suite from a shipped name, a TOML/YAML path, a dict or a :class:`Suite`."""
    from ..train.recipe import read_table

    if isinstance(source, Suite):
        return source
    if isinstance(source, dict):
        return suite_from_dict(source)
    path = Path(source)
    if not path.exists():
        shipped = SUITE_DIR / f"{source}.toml"
        if not shipped.exists():
            raise SuiteError(
                f"suite {str(source)!r} is neither a file nor a shipped suite; shipped: {', '.join(builtin_suites())}"
            )
        path = shipped
    table = read_table(path, "suite", SuiteError)
    try:
        return suite_from_dict(table, default_name=path.stem)
    except SuiteError as err:
        raise SuiteError(f"{path}: {err}") from None
