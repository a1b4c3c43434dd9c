"""Every per-epoch schedule as the real trainer drives it, against the paper's formula at that epoch.

One ``onebit.train.train`` run of a tiny MLP on the embedded digits data, one stage per scheduled method.
Global forward and optimizer-step hooks (public torch API) record, at every training step, each binary
layer's schedule state (ReCU's τ, IR-Net's t and k, FDA's n and α, PC++'s μ and hard flag, BiPer's
constant τ and stage) and the learning rate. Epoch e must see the formula's value *at e*: a trainer
that schedules one epoch ahead (or after the epoch) fails here. The formulas are written out from the
papers / reference code, not imported from onebit.
"""

from __future__ import annotations

import math

import pytest
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from onebit.nn import BinaryLayer
from onebit.train import train

EPOCHS = 3
BASE_LR = 1e-3


def recu_tau(e, E, lo=0.85, hi=0.99):  # ReCU Sec. 3.4: A·exp(e/E) + B, A = (τmax − τmin)/(ℯ − 1), B = τmin − A
    a = (hi - lo) / (math.e - 1)
    return a * math.exp(e / E) + lo - a


def irnet_t_k(e, E, t_min=1e-3, t_max=10.0):  # IR-Net cpt_tk: t log-linear in e/E, k = max(1/t, 1)
    t = 10 ** (math.log10(t_min) + (math.log10(t_max) - math.log10(t_min)) * e / E)
    return t, max(1 / t, 1.0)


def fda_n_alpha(e, E):  # FDA (BiBench fda.py): n = 9 + ⌊9e/E⌋, α = 0.05(1 + cos(π(e+1)/E))
    return 9 + math.floor(9 * e / E), 0.05 * (1 + math.cos(math.pi * (e + 1) / E))


def pcpp_mu(e, E, start, end, hard_epochs=1):  # linear start → end over E − hard epochs, then the hard sign
    if e >= E - hard_epochs:
        return end, True
    return start + (end - start) * e / (E - hard_epochs - 1), False


def cosine_lr(progress, E, warmup=1.0):  # linear warm-up, then cosine to 0 over the remaining epochs
    if progress < warmup:
        return BASE_LR * max(progress, 1e-3 * warmup) / warmup
    return BASE_LR * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (E - warmup)))


EXPECTED = {  # method: (state read from a layer, the formula at epoch e)
    "recu": (lambda m: (float(m.tau),), lambda e: (recu_tau(e, EPOCHS),)),
    "irnet": (lambda m: (float(m.ede_t), float(m.ede_k)), lambda e: irnet_t_k(e, EPOCHS)),
    "fda": (lambda m: (int(m.fda_terms), float(m.fda_alpha)), lambda e: fda_n_alpha(e, EPOCHS)),
    "bnn++": (lambda m: (float(m.pcpp_mu), bool(m.pcpp_hard)), lambda e: pcpp_mu(e, EPOCHS, 1.0, 20.0)),
    "pcpp-pc": (lambda m: (float(m.pcpp_mu), bool(m.pcpp_hard)), lambda e: pcpp_mu(e, EPOCHS, 0.0, 1.0)),
    # BiPer's CIFAR recipe keeps its loss weight τ constant within a stage (0.037 in stage 1)
    "biper": (lambda m: (m.method.tau, m.method.stage), lambda e: (0.037, 1)),
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    steps: list[tuple[str, tuple]] = []  # (method, state) per training forward of a binary layer
    lrs: list[float] = []

    def on_forward(module, inputs, output):
        if isinstance(module, BinaryLayer):
            name = module.method.name
            steps.append((name if module.training else "eval", EXPECTED[name][0](module)))

    def on_step(optimizer, args, kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])

    stages = [{
        "name": method.replace("+", "p"), "method": method, "epochs": EPOCHS,
        "optimizer": {"name": "adam", "lr": BASE_LR}, "lr_schedule": {"name": "cosine", "warmup_epochs": 1},
    } for method in EXPECTED]
    recipe = {"name": "schedules", "seed": 0, "data": {"name": "digits", "batch_size": 512},
              "model": {"name": "mlp", "options": {"hidden": [32, 32]}}, "stage": stages}
    handles = [register_module_forward_hook(on_forward), register_optimizer_step_pre_hook(on_step)]
    try:
        result = train(recipe, tmp_path_factory.mktemp("run") / "run", progress=False)
    finally:
        for handle in handles:
            handle.remove()
    return _epochs(steps), lrs, result.history


def _epochs(steps):
    """Split the recorded forwards into epochs: maximal runs of training forwards (evaluation between)."""
    epochs, current = [], []
    for name, state in steps + [("eval", ())]:
        if name == "eval":
            if current:
                epochs.append(current)
            current = []
        else:
            current.append((name, state))
    return epochs


def test_every_epoch_of_every_stage_was_recorded(recorded):
    epochs, lrs, history = recorded
    assert len(epochs) == len(EXPECTED) * EPOCHS == len(history)
    assert [{name for name, _ in epoch} for epoch in epochs] == [{m} for m in EXPECTED for _ in range(EPOCHS)]


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_epoch_sees_the_formula_at_that_epoch(recorded, method):
    epochs, _, _ = recorded
    stage = list(EXPECTED).index(method)
    formula = EXPECTED[method][1]
    seen = [epochs[stage * EPOCHS + e] for e in range(EPOCHS)]
    for e, forwards in enumerate(seen):
        want = formula(e)
        for _, state in forwards:  # every step, every layer of the epoch
            assert state == pytest.approx(want, rel=1e-6), f"{method} epoch {e}: {state} != formula {want}"
    # the schedule moves (a method whose state never changes would pass any shift)
    if method != "biper":
        assert formula(0) != pytest.approx(formula(1))


def test_learning_rate_of_every_step_follows_warmup_then_cosine(recorded):
    epochs, lrs, history = recorded
    per_stage = len(lrs) // len(EXPECTED)
    steps = per_stage // EPOCHS
    assert steps * EPOCHS * len(EXPECTED) == len(lrs) and steps >= 2
    for index in range(len(EXPECTED)):
        for e in range(EPOCHS):
            for s in range(steps):
                got = lrs[index * per_stage + e * steps + s]
                assert got == pytest.approx(cosine_lr(e + s / steps, EPOCHS), rel=1e-9), (index, e, s)
            assert history[index * EPOCHS + e]["lr"] == pytest.approx(cosine_lr(e + (steps - 1) / steps, EPOCHS))
