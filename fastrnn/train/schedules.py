"""Learning-rate schedules: the rate of each optimizer step.

A schedule is a pure function of the optimizer step counter (the number of updates
already made), so a resumed run gets the same rates as an uninterrupted one. The
trainer asks for the rate once per step::

    lr = schedule(step)          # step = updates done before this one (0-based)

Only the constant schedule exists today (``TrainConfig.lr`` at every step). A new
schedule (step decay, cosine with warm-up, ...) is a function here, chosen by a
``TrainConfig`` field and built by :func:`make_schedule`; ``total_steps`` (the run's
horizon) is what it needs beyond the configuration, and whatever fixes it when a
run starts belongs in the checkpoint's training state.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["Schedule", "constant", "make_schedule"]

Schedule = Callable[[int], float]


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    return lambda step: lr


def make_schedule(config, total_steps: int | None = None) -> Schedule:
    """The schedule of ``config`` (a :class:`fastrnn.TrainConfig`) over ``total_steps``."""
    return constant(config.lr)
