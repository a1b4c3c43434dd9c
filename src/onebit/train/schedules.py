"""Learning-rate schedules as pure functions of training progress, so a resumed run sees exactly the
learning rates of an uninterrupted one (no scheduler state to save)."""

from __future__ import annotations

import bisect
import math

from .recipe import ScheduleSpec

__all__ = ["lr_at"]


def lr_at(spec: ScheduleSpec, base_lr: float, epochs: int, progress: float) -> float:
    """Learning rate at ``progress`` epochs into a stage of ``epochs`` (fractional: epoch + step/steps).

    A linear warm-up to ``base_lr`` over ``warmup_epochs`` comes first;
    then ``cosine`` (SGDR without restarts, Loshchilov & Hutter 2017), ``linear`` decay (ReActNet's
    LambdaLR ``1 − step/total``), ``step`` decay by ``gamma`` at each milestone epoch, or ``constant``.
    """
    warm = spec.warmup_epochs
    if warm > 0 and progress < warm:
        # Linear warm-up from a small fraction of base_lr (never exactly 0: the first step must move).
        return base_lr * max(progress, 1e-3 * warm) / warm
    if spec.name == "constant":
        return base_lr
    if spec.name == "step":
        return base_lr * spec.gamma ** bisect.bisect_right(sorted(spec.milestones), int(progress))
    span = spec.decay_epochs if spec.decay_epochs is not None else max(epochs - warm, 1e-9)
    t = min(max((progress - warm) / span, 0.0), 1.0)
    if spec.name == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * t))
    else:  # linear
        factor = 1 - t
    return spec.final_lr + (base_lr - spec.final_lr) * factor
