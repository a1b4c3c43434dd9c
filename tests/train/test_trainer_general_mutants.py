"""Trainer code that the in-process tests of tests/train did not execute: evaluating a run on another
data set or root, and a stage whose method sizes its state at the first forward pass (XNOR-Net++'s
conv Γ) trained end to end (issue 21: found with line coverage of the mapped tests; each test fails on
a one-line bug of the lines it names)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import onebit.data
from onebit.train import evaluate_checkpoint, train


def _tiny(data="digits", model="mlp", method="bnn", options=None):
    return {"name": "tiny", "seed": 5, "data": {"name": data, "batch_size": 256},
            "model": {"name": model, "options": options or {}},
            "stage": [{"name": "main", "method": method, "epochs": 1,
                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
                       "lr_schedule": {"name": "constant"}}]}


def test_evaluate_checkpoint_reads_the_given_data_set_and_root(tmp_path, monkeypatch):
    """trainer.py evaluate_checkpoint: ``data`` replaces the run's data set and ``root`` its root, each
    alone; without them the run's own data set is read."""
    result = train(_tiny(options={"hidden": [16]}), tmp_path / "run", progress=False)
    real_load = onebit.data.load
    calls = []

    def load(name, root, **kw):
        calls.append((name, root))
        return real_load("digits", None, **kw)

    monkeypatch.setattr(onebit.data, "load", load)
    own = evaluate_checkpoint(tmp_path / "run", device="cpu")
    assert own == pytest.approx(result.test_accuracy)
    evaluate_checkpoint(tmp_path / "run", root=str(tmp_path / "elsewhere"), device="cpu")
    evaluate_checkpoint(tmp_path / "run", data="other", device="cpu")
    evaluate_checkpoint(tmp_path / "run", data="other", root="r2", device="cpu")
    assert calls == [("digits", None), ("digits", str(tmp_path / "elsewhere")), ("other", None), ("other", "r2")]


def test_a_stage_with_lazily_sized_method_state_trains_it(tmp_path):
    """trainer.py: a method whose parameters are sized by the first forward pass (XNOR-Net++'s conv Γ)
    gets them sized from one test sample before the optimizer is made, so they are trained: every Γ has
    its conv's output shape and moved from its initial value."""
    result = train(_tiny("mnist1d", "conv1d", "xnorpp"), tmp_path / "run", progress=False)
    model = result.model
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
    convs = [m for m in model.modules() if hasattr(m, "gamma_h")]
    assert convs
    for m in convs:
        assert m.gamma_o.shape[0] == m.out_channels and m.gamma_o.numel() == m.out_channels
        assert m.gamma_h.dim() == 1 and m.gamma_h.numel() > 1
    state = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert any("gamma_h" in k for k in state["model"])
    for m in convs:  # initialised to 1 and given to the optimizer: one epoch of SGD moved them (Γ_o, a
        # per-channel factor before BatchNorm, gets a gradient of ~0: BN undoes a channel's scale)
        assert not torch.equal(m.gamma_h.detach(), torch.ones_like(m.gamma_h))


def test_the_live_progress_bar_advances_one_step_per_batch(tmp_path, monkeypatch):
    """trainer.py _train_epoch: each epoch's bar has one tick per training step and ends full, its
    postfix the running loss and accuracy (seed-43 sample survivor: ``bar.update(2)``)."""
    from onebit.train import trainer as T

    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.n, self.postfix, self.closed = total, desc, 0, None, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **kw):
            self.postfix = kw

        def close(self):
            self.closed = True

    monkeypatch.setattr(T._Progress, "bar", lambda self, total, desc: Bar(total, desc))
    recipe = _tiny(options={"hidden": [16]})
    recipe["stage"][0]["epochs"] = 2
    result = train(recipe, tmp_path / "run", progress=False)
    assert [b.desc for b in bars] == ["main 1/2", "main 2/2"]
    steps = len(onebit.data.load("digits", None, seed=5).train) // 256  # full batches (drop_last)
    for bar, row in zip(bars, result.history):
        assert bar.closed and bar.total == steps >= 2
        assert bar.n == bar.total
        assert bar.postfix["loss"] == f"{row['train_loss']:.4f}"
        assert bar.postfix["acc"] == f"{row['train_acc']:.1f}%"
