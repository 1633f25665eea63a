"""Optimizers over the flat parameter buffer, using the fused compiled updates of
:mod:`fastrnn._lm`.

An optimizer updates the WHOLE flat parameter vector in one call. Its state (Adagrad's
squared-gradient sums, Adam's moments) is a dict of flat buffers of the same length
and layout as the parameters (:func:`fastrnn.params.layout`), named ``opt_<what>``:
the model keeps them and the checkpoint saves them under these names, so a resumed
run continues exactly.

Adding an optimizer: subclass :class:`Optimizer`, set ``name`` and
``state_names``, implement :meth:`Optimizer.step`, register it in
:data:`REGISTRY`, and add its name to ``fastrnn.config.OPTIMIZERS``. ``layout`` (the
``(name, shape, offset)`` rows of the flat buffer) is passed to every optimizer, so
one that treats weight matrices differently from biases (decoupled weight decay on
matrices only) finds their ranges with :func:`matrix_ranges`.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

try:
    from .. import _lm
except ImportError as exc:  # pragma: no cover - only in broken installs
    _lm = None
    _LM_IMPORT_ERROR = exc

__all__ = ["Optimizer", "SGD", "Adagrad", "Adam", "AdamW", "REGISTRY", "make_optimizer",
           "state_names", "all_state_names", "matrix_ranges"]


def _need_lm():
    if _lm is None:  # pragma: no cover
        raise RuntimeError(f"fastrnn's compiled module fastrnn._lm is unavailable "
                           f"({_LM_IMPORT_ERROR}); reinstall fastrnn with a C compiler")
    return _lm


def matrix_ranges(layout) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the weight matrices (2-D parameters) in the flat buffer."""
    return [(off, off + math.prod(shape)) for _, shape, off in layout if len(shape) == 2]


def decay_ranges(layout) -> np.ndarray:
    """``(R, 2)`` int64 ``[start, stop)`` of the parameters AdamW decays: the weight
    matrices, whose names start with ``W_`` (sorted by offset)."""
    r = sorted((off, off + math.prod(shape)) for name, shape, off in layout
               if name.startswith("W_"))
    return np.array(r, dtype=np.int64).reshape(-1, 2)


class Optimizer:
    """One update rule over the flat parameter buffer.

    Parameters
    ----------
    config : fastrnn.TrainConfig
        ``betas``, ``eps`` and any option of the rule.
    state : dict of str to ndarray
        The flat state buffers named in ``state_names`` (updated in place).
    layout : list of (name, shape, offset), optional
        The flat buffer's layout.
    """

    name: ClassVar[str] = ""
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, state: dict[str, np.ndarray], layout=None):
        self.config = config
        self.state = state
        self.layout = layout
        for k in self.state_names:
            if k not in state:
                raise ValueError(f"optimizer {self.name!r}: state buffer {k!r} is missing")

    @classmethod
    def new_state(cls, size: int, dtype) -> dict[str, np.ndarray]:
        """Fresh (zero) state buffers for ``size`` parameters."""
        return {k: np.zeros(size, dtype) for k in cls.state_names}

    def step(self, flat: np.ndarray, gflat: np.ndarray, lr: float, t: int) -> None:
        """Update ``flat`` in place from the (clipped) gradient ``gflat``.

        ``lr`` is this step's learning rate (from the schedule), ``t`` the 1-based
        number of this update (Adam's bias correction).
        """
        raise NotImplementedError


class SGD(Optimizer):
    """``p -= lr g`` (d2l)."""

    name = "sgd"

    def step(self, flat, gflat, lr, t):
        _need_lm().sgd_update(flat, gflat, lr)


class Adagrad(Optimizer):
    """min-char-rnn's ``mem += g^2; p -= lr g / sqrt(mem + eps)``."""

    name = "adagrad"
    state_names = ("opt_mem",)

    def step(self, flat, gflat, lr, t):
        _need_lm().adagrad_update(flat, gflat, self.state["opt_mem"], lr,
                                  self.config.resolved_eps)


class Adam(Optimizer):
    """Adam with bias correction (``betas``, ``eps``)."""

    name = "adam"
    state_names = ("opt_m", "opt_v")

    def step(self, flat, gflat, lr, t):
        b1, b2 = self.config.betas
        _need_lm().adam_update(flat, gflat, self.state["opt_m"], self.state["opt_v"], lr,
                               b1, b2, self.config.resolved_eps, t)


class AdamW(Adam):
    """Adam with decoupled weight decay (PyTorch's ``torch.optim.AdamW``): before Adam's
    update, ``p -= lr * weight_decay * p`` for the weight matrices (``W_*``) only, with
    this step's scheduled ``lr``. Same state as Adam (``opt_m``, ``opt_v``)."""

    name = "adamw"

    def __init__(self, config, state, layout=None):
        super().__init__(config, state, layout)
        if layout is None:
            raise ValueError("optimizer 'adamw' needs the parameter layout (which entries "
                             "are weight matrices)")
        self.decay = decay_ranges(layout)
        self.weight_decay = config.resolved_weight_decay

    def step(self, flat, gflat, lr, t):
        b1, b2 = self.config.betas
        _need_lm().adamw_update(flat, gflat, self.state["opt_m"], self.state["opt_v"],
                                self.decay, lr, b1, b2, self.config.resolved_eps,
                                self.weight_decay, t)


REGISTRY: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Adagrad, Adam, AdamW)}


def state_names(optimizer: str) -> tuple[str, ...]:
    """The state buffers of ``optimizer`` (the checkpoint's array names)."""
    return REGISTRY[optimizer].state_names


def all_state_names() -> set[str]:
    """Every optimizer-state array name a model file may hold."""
    return {k for c in REGISTRY.values() for k in c.state_names}


def make_optimizer(config, state: dict[str, np.ndarray], layout=None) -> Optimizer:
    """The optimizer ``config.optimizer`` over ``state`` (see :class:`Optimizer`)."""
    return REGISTRY[config.optimizer](config, state, layout)
