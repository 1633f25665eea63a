"""Training: the loop (:class:`Trainer`), optimizers, schedules, resume state, and the
single-process default of the data-parallel hooks.

Modules: :mod:`~fastrnn.train.trainer` (the loop), :mod:`~fastrnn.train.optim`
(update rules over the flat buffer), :mod:`~fastrnn.train.schedules` (learning rate
per step), :mod:`~fastrnn.train.state` (what a checkpoint resumes),
:mod:`~fastrnn.train.dist` (collectives; one process by default),
:mod:`~fastrnn.train.signals` (Ctrl-C), :mod:`~fastrnn.train.progress` (the bar).
"""
from ..config import OPTIMIZERS, SAMPLINGS, TrainConfig
from .state import TrainState
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = ["Trainer", "TrainConfig", "TrainState", "TrainingDiverged", "TrainingInterrupted",
           "OPTIMIZERS", "SAMPLINGS"]
