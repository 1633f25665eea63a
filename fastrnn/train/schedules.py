"""Learning-rate schedules: the rate of each optimizer step.

A schedule is a pure function of the optimizer step counter (the number of updates
already made), so a resumed run gets the same rates as an uninterrupted one. The
trainer asks for the rate once per step::

    lr = schedule(step)          # step = updates done before this one (0-based)

:func:`make_schedule` builds the one a :class:`fastrnn.TrainConfig` names
(``schedule=``):

- ``"constant"``: ``lr`` at every step (0.1's behaviour);
- ``"step"`` (char-rnn): ``lr * decay_factor ** max(0, e - decay_after + 1)``, ``e`` the
  epochs completed before step ``s`` (``s // steps_per_epoch``): the rate is
  multiplied by ``decay_factor`` at the end of every epoch from epoch
  ``decay_after`` on;
- ``"cosine"`` (nanoGPT's ``get_lr``): ``lr * (s + 1) / warmup_steps`` during the
  warm-up, then ``min_lr + 0.5 (1 + cos(pi r)) (lr - min_lr)`` with
  ``r = (s - warmup) / (S - warmup)``, and ``min_lr`` from the horizon ``S`` on.

With ``warmup_steps > 0`` the constant and step schedules warm up linearly too.

The horizon ``S`` (total optimizer steps of the run) is fixed when a run starts,
``min(max_steps, epochs * steps_per_epoch)``, and stored in the checkpoint's
training state (``horizon``): a resumed run keeps its schedule even when it asks
for more epochs (the cosine then stays at ``min_lr`` past the old horizon; the
trainer warns). Start a new run (or pass ``reset_schedule`` in the CLI) to plan a
longer one.
"""
from __future__ import annotations

import math
from typing import Callable

__all__ = ["Schedule", "constant", "step_decay", "cosine", "make_schedule", "horizon"]

Schedule = Callable[[int], float]


def _warm(lr: float, warmup: int, step: int) -> float | None:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    return None


def constant(lr: float, warmup_steps: int = 0) -> Schedule:
    """``lr`` at every step (after an optional linear warm-up)."""
    def f(step: int) -> float:
        w = _warm(lr, warmup_steps, step)
        return lr if w is None else w
    return f


def step_decay(lr: float, steps_per_epoch: int, decay_factor: float, decay_after: int,
               warmup_steps: int = 0) -> Schedule:
    """char-rnn's schedule: ``lr * decay_factor ** max(0, epochs_done - decay_after + 1)``."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def f(step: int) -> float:
        w = _warm(lr, warmup_steps, step)
        if w is not None:
            return w
        k = max(0, step // steps_per_epoch - decay_after + 1)
        return lr * decay_factor ** k
    return f


def cosine(lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> Schedule:
    """nanoGPT's: linear warm-up to ``lr``, half a cosine to ``min_lr`` at ``total_steps``."""
    def f(step: int) -> float:
        w = _warm(lr, warmup_steps, step)
        if w is not None:
            return w
        if step >= total_steps:
            return min_lr
        span = total_steps - warmup_steps
        r = (step - warmup_steps) / span if span > 0 else 1.0
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)
    return f


def horizon(config, steps_per_epoch: int) -> int:
    """The total optimizer steps a run of ``config`` plans for."""
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return total


def make_schedule(config, total_steps: int | None = None,
                  steps_per_epoch: int | None = None) -> Schedule:
    """The schedule of ``config`` (a :class:`fastrnn.TrainConfig`) over ``total_steps``
    (needed by ``"cosine"``) with ``steps_per_epoch`` (needed by ``"step"``)."""
    name = config.schedule
    if name == "constant":
        return constant(config.lr, config.warmup_steps)
    if name == "step":
        if steps_per_epoch is None:
            raise ValueError("the step schedule needs steps_per_epoch")
        return step_decay(config.lr, steps_per_epoch, config.decay_factor,
                          config.decay_after, config.warmup_steps)
    if name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs total_steps (the run's horizon)")
        return cosine(config.lr, config.resolved_min_lr, config.warmup_steps, total_steps)
    raise ValueError(f"unknown schedule {name!r}")
