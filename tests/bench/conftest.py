"""Hand-made benchmark records for the scoring tests (tests/bench/test_scores_*.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from onebit.bench.db import RunRecord

HP = {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "epochs": 2}
FAMILY = {"mlp": "mlp", "conv1d": "cnn", "resnet20": "cnn", "vit": "transformer"}
_ids = itertools.count()


def make_run(
    method: str,
    acc: float,
    *,
    task: str = "digits",
    arch: str = "mlp",
    seed: int = 0,
    role: str = "main",
    n_test: int | None = 1000,
    n_classes: int | None = 10,
    bits: tuple[float, float] | None = None,
    layer_options: dict[str, Any] | None = None,
    **metrics: float,
) -> RunRecord:
    """One finished run: ``acc`` and ``metrics`` (names with ``/`` as ``corrupt__c__s`` are not needed:
    pass a dict through ``metrics``), the statistics' ``n_test``/``n_classes``, and the bit widths."""
    m: dict[str, float] = {"acc": float(acc), "epoch_time_s": 1.0}
    if n_test is not None:
        m["n_test"] = float(n_test)
    if n_classes is not None:
        m["n_classes"] = float(n_classes)
    if bits is not None:
        m["w_bits"], m["a_bits"] = bits
    m.update(metrics)
    config: dict[str, Any] = {"hparams": HP}
    if layer_options is not None:
        config["layer_options"] = layer_options
    return RunRecord(f"{role}-{method}-{task}-{arch}-{seed}-{next(_ids)}", "unit", role, method, arch,
                     FAMILY.get(arch, "cnn"), task, seed, config, metrics=m)


@pytest.fixture
def run():
    return make_run
