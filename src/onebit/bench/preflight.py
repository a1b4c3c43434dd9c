"""Check a whole suite before its first run trains: every problem found up front, reported together.

A suite's file is validated when it is read (:mod:`onebit.bench.suite`), but some of its entries are
only checked by what they configure: a model option by the model, a method option by the method, a
data option by the dataset, a corruption name by the corruption set of the task's input shape, and
the robustness track's optional packages (the ``[bench]`` extra) by importing them. A benchmark used
to find these only after training every affected run. :func:`check_runs` builds each distinct piece
once, cheaply — the recipe of every run, each dataset once, each (setting, method) model once (and
the full-precision one's forward pass on one test sample), each corruption once on that sample — and
raises one
:class:`~onebit.bench.suite.SuiteError` listing everything that would fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from .suite import FP, RunSpec, SuiteError

__all__ = ["check_runs"]


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _reason(err: BaseException) -> str:
    if isinstance(err, ImportError):
        return f"needs the [bench] extra: pip install 'onebit[bench]' ({err})"
    return str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"


class _Checker:
    """Collects problems (each once, in suite order) while building every distinct piece once."""

    def __init__(self, data_root: str | None = None) -> None:
        self.problems: dict[str, None] = {}
        self.done: dict[str, Any] = {}
        self.data_root = data_root

    def once(self, key: str, where: str, build: Callable[[], Any]) -> Any:
        """``build()``'s result, computed once per key; None (and a recorded problem) if it fails."""
        if key not in self.done:
            try:
                self.done[key] = build()
            except Exception as err:  # any failure here is a failure the run would meet after training
                self.done[key] = None
                self.problems[f"{where}: {_reason(err)}"] = None
        return self.done[key]

    def run(self, spec: RunSpec) -> None:
        from ..train.trainer import build_model, load_data
        from .runner import _recipe

        if spec.role == "inference":  # a deployment network timed untrained: nothing trains
            return
        setting = spec.setting
        where = f"{spec.method} on {setting.label}"
        recipe = self.once(_key("recipe", spec.run_id), where, lambda: _recipe(spec, self.data_root))
        if recipe is None:
            return
        if not self.once(_key("root", setting.task), f"{setting.label}: data", lambda: self.root(setting.task)):
            return
        bundle = self.once(_key("data", setting.task, setting.data_options), f"{setting.label}: data",
                           lambda: load_data(recipe))
        if bundle is None:
            return
        sample = bundle.test[0][0].unsqueeze(0)

        def model() -> None:
            net = build_model(recipe, recipe.stages[0], bundle.num_classes, tuple(bundle.input_shape)).eval()
            if spec.method == FP:  # the architecture fits the data: one forward pass per setting (a
                with torch.no_grad():  # binarized copy's forward costs ~0.1-1 s and shares the shapes)
                    net(sample)

        self.once(_key("model", setting.arch, setting.model_options, spec.method, spec_layer_options(spec),
                       bundle.input_shape), f"{where}: model", model)
        if "robustness" in spec.tracks:
            self.corruptions(spec, bundle, sample)

    def root(self, task: str) -> bool:
        """Whether ``task``'s local folder is given and exists (for datasets read from disk); else one
        short problem naming the fix, instead of the dataset's own multi-line layout message."""
        from .runner import needs_data_root

        if not needs_data_root(task):
            return True
        what = ("cifar-10-batches-py/, extracted from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
                if task == "cifar10" else f"{task}'s files")
        fix = f"pass --data-root PATH (the folder holding {what}) or set data_root in the suite"
        if self.data_root is None:
            raise ValueError(f"{task} is read from a local copy and no data root is given: {fix}")
        folder = Path(self.data_root).expanduser()
        if not folder.is_dir():
            raise ValueError(f"data root {str(folder)!r} is not a folder (from {Path.cwd()}): {fix}")
        return True

    def corruptions(self, spec: RunSpec, bundle: Any, sample: torch.Tensor) -> None:
        from . import corruptions as C

        where = f"{spec.setting.label}: robustness"
        valid = self.once(_key("corruption-set", bundle.input_shape), where,
                          lambda: C.corruptions_for(bundle.input_shape))
        if valid is None:
            return
        names = valid if spec.corruptions == "all" else spec.corruptions
        unknown = [n for n in names if n not in valid]
        if unknown:
            self.problems[f"{where}: unknown corruption(s) {', '.join(map(repr, unknown))} for inputs of shape "
                          f"{tuple(bundle.input_shape)}; valid: {', '.join(valid)}"] = None
        for name in (n for n in names if n in valid):
            self.once(_key("corruption", spec.setting.task, spec.setting.data_options, name),
                      f"{where}: corruption {name!r}",
                      lambda name=name: C.corrupt_tensor(sample, name, spec.severities[0], mean=bundle.mean,
                                                         std=bundle.std))


def spec_layer_options(spec: RunSpec) -> dict[str, Any]:
    return dict(getattr(spec, "layer_options", {}) or {})


def check_runs(specs: Iterable[RunSpec], suite_name: str = "suite", data_root: str | None = None) -> None:
    """Raise one :class:`SuiteError` naming every problem the runs of a suite would meet, before any
    run trains; return quietly when there is none. ``data_root`` is the folder of datasets read from
    disk (checked to exist, then read once per setting like any other dataset)."""
    checker = _Checker(data_root)
    for spec in specs:
        checker.run(spec)
    if checker.problems:
        problems = list(checker.problems)
        raise SuiteError(
            f"suite {suite_name!r}: {len(problems)} problem(s) found before any training (nothing was run): "
            + "; ".join(f"[{i}] {p}" for i, p in enumerate(problems, 1))
        )
