"""Model and training configuration: validated dataclasses that round-trip through JSON.

:class:`ModelConfig` says what a model IS (cell, sizes, dtype): it is saved in every
model file and is all :meth:`fastrnn.CharLM.load` needs to rebuild the parameter
layout. :class:`TrainConfig` says how a model is TRAINED (minibatch shape,
optimizer, clipping, ...): :class:`fastrnn.train.Trainer` runs it, and a checkpoint
with a training state stores it so that a run can resume.

Both validate every field when constructed (``TypeError``/``ValueError`` naming the
field and the value) and convert to and from plain dicts (:meth:`to_dict`,
:meth:`from_dict`). ``from_dict`` ignores keys it does not know and fills missing
ones with the defaults: a field added later must therefore default to the
behaviour that files written before it had (see :mod:`fastrnn.checkpoint`).

Adding a training option: add a field with such a default, validate it in
``__post_init__``, use it in the trainer. Nothing else (``fit`` accepts every field
by name, the checkpoint stores ``to_dict()``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .params import CELLS

__all__ = ["ModelConfig", "TrainConfig", "CELLS", "NONLINEARITIES", "DTYPES", "OPTIMIZERS",
           "SAMPLINGS", "SCHEDULES", "SPIKE_POLICIES"]

NONLINEARITIES = ("tanh", "relu")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adagrad", "adam", "adamw")
SAMPLINGS = ("sequential", "random", "windows")
SCHEDULES = ("constant", "step", "cosine")
SPIKE_POLICIES = ("skip", "rollback", "stop")
DEFAULT_WEIGHT_DECAY = 0.01                      # AdamW's (PyTorch's default)
DEFAULT_EPS = 1e-8                               # Adagrad's and Adam's epsilon


# ---------------------------------------------------------------------------
# checks shared with the model (clear messages naming the argument)

def _pos_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _float(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return v


def _choice(name: str, value: Any, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _seed64(seed: Any, name: str = "seed") -> int:
    """A 64-bit integer seed from an int, a numpy Generator, or None (OS entropy)."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int, a numpy Generator or None, "
                        f"got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return int(seed)


def _dtype_name(dtype: Any) -> str:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt.name


class _DictMixin:
    def to_dict(self) -> dict:
        """The fields as a JSON-serialisable dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Build from a dict: unknown keys are ignored, missing ones take the defaults."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict needs a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------
# the model

@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """What a character-level model is: everything that fixes its parameter layout.

    Parameters
    ----------
    vocab_size : int
        V, the number of tokens (input and output width).
    hidden_size : int
        H, hidden units per layer.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell.
    num_layers : int, default 1
        L, the number of stacked layers.
    dropout : float in [0, 1), default 0
        Inverted dropout on the output of every layer but the top one (training only).
    nonlinearity : {"tanh", "relu"}
        The Elman cell's; other cells take only the default "tanh".
    dtype : {"float32", "float64"}
        The dtype of the parameters.

    Raises
    ------
    ValueError, TypeError
        A field out of range or of the wrong type, naming it.

    Examples
    --------
    >>> from fastrnn import ModelConfig
    >>> cfg = ModelConfig(vocab_size=28, hidden_size=32, cell="lstm", num_layers=2)
    >>> cfg.gates, cfg.to_dict()["dtype"]
    (4, 'float32')
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> ModelConfig(28, 32, cell="gru", nonlinearity="relu")
    Traceback (most recent call last):
    ...
    ValueError: nonlinearity='relu' applies to cell='rnn' only (cell='gru')
    """

    vocab_size: int
    hidden_size: int
    cell: str = "rnn"
    num_layers: int = 1
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    dtype: str = "float32"

    def __post_init__(self):
        s = object.__setattr__
        s(self, "vocab_size", _pos_int("vocab_size", self.vocab_size))
        s(self, "hidden_size", _pos_int("hidden_size", self.hidden_size))
        s(self, "cell", _choice("cell", self.cell, CELLS))
        s(self, "num_layers", _pos_int("num_layers", self.num_layers))
        d = _float("dropout", self.dropout)
        if not 0 <= d < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        s(self, "dropout", d)
        s(self, "nonlinearity", _choice("nonlinearity", self.nonlinearity, NONLINEARITIES))
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(f"nonlinearity={self.nonlinearity!r} applies to cell='rnn' only "
                             f"(cell={self.cell!r})")
        s(self, "dtype", _dtype_name(self.dtype))

    @property
    def gates(self) -> int:
        """G, the number of gates of the cell (column blocks of W_xh, W_hh, b_h)."""
        return CELLS[self.cell]


# ---------------------------------------------------------------------------
# training

@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """Every option of a training run (:meth:`fastrnn.CharLM.fit`, :class:`fastrnn.train.Trainer`).

    Parameters
    ----------
    epochs : int, default 10
        Total number of epochs; a resumed run continues until this many are complete.
    batch_size, num_steps : int, default 32, 35
        Minibatch shape ``(batch_size, num_steps)``; ``num_steps`` is the BPTT
        truncation length.
    lr : float, default 1.0
        Learning rate (d2l uses 1 with SGD; try 0.002 to 0.01 with Adam, 0.1 with Adagrad).
    optimizer : {"sgd", "adagrad", "adam", "adamw"}, default "sgd"
        ``"adamw"`` is Adam with decoupled weight decay (PyTorch's ``AdamW``):
        ``p -= lr * weight_decay * p`` on the weight matrices (names starting with
        ``W_``) before Adam's update, with this step's scheduled ``lr``.
    betas : (float, float), default (0.9, 0.999)
        Adam's moment decay rates.
    eps : float, optional
        Adagrad's / Adam's epsilon (None: 1e-8).
    clip : float or None, default 1.0
        Clip the gradient to this global norm; None disables it.
    clip_value : float or None
        Also clip every gradient entry into ``[-clip_value, clip_value]``.
    sampling : {"sequential", "random", "windows"}, default "sequential"
    num_threads : int, optional
        OpenMP threads for the kernels (None: all available cores).
    seed : int, optional
        Seed of the minibatch order and offsets and of the dropout masks (None: fresh
        entropy); ignored when resuming.
    progress : bool, default True
        Show a progress bar.
    checkpoint : str, optional
        Save the model and the training state there after every epoch and on Ctrl-C.
    weight_decay : float, optional
        AdamW's decoupled weight decay (None: 0.01, PyTorch's default); other
        optimizers refuse a non-zero value.
    schedule : {"constant", "step", "cosine"}, default "constant"
        The learning rate of each optimizer step ``s`` (0-based), a pure function of
        ``s`` and of the run's horizon ``S`` (total steps, fixed when the run starts
        and stored in the checkpoint; see :mod:`fastrnn.train.schedules`):
        ``"constant"``: ``lr``. ``"step"`` (char-rnn): ``lr * decay_factor ** k``
        with ``k = max(0, e - decay_after + 1)`` and ``e`` the completed epochs at
        step ``s``. ``"cosine"`` (nanoGPT): linear warm-up from ``lr / warmup_steps``
        to ``lr`` over ``warmup_steps``, then a half cosine down to ``min_lr`` at ``S``
        (and ``min_lr`` after it).
    warmup_steps : int, default 0
        Linear warm-up steps (``"cosine"``; ``"constant"`` and ``"step"`` warm up too
        when it is > 0).
    min_lr : float, optional
        The cosine schedule's final rate (None: ``lr / 10``, nanoGPT's).
    decay_factor : float in (0, 1], default 0.97
        The step schedule's factor per epoch (char-rnn's ``learning_rate_decay``).
    decay_after : int, default 10
        The step schedule decays after each epoch from this one on (char-rnn's
        ``learning_rate_decay_after``): epochs ``1..decay_after`` run at ``lr``.
    max_steps : int, optional
        Stop after this many optimizer steps in total (the horizon is then
        ``min(max_steps, epochs * steps per epoch)``).
    time_budget : float, optional
        Stop at the first step boundary after this many seconds of training (wall
        time of the run, evaluations included, summed over resumes). Does not
        change the schedule's horizon (give ``max_steps`` for that).
    eval_interval : int, optional
        Evaluate on the validation text every this many optimizer steps (besides the
        per-epoch validation); the results go to :attr:`CharLM.eval_history`.
    eval_block : int, default 256
        These evaluations are the mean cross-entropy over contiguous blocks of
        ``eval_block`` characters of the validation text, each from a zero state
        (nanoGPT's measure; :meth:`CharLM.perplexity` with ``block=``).
    eval_blocks : int, optional
        Use only this many blocks, evenly spaced over the validation text and the
        same at every evaluation (None: all of them).
    val_streams : int, default 1
        The per-epoch validation of ``"sequential"`` and ``"random"`` sampling cuts the
        validation text into this many contiguous streams, each predicted from a zero
        state with the state carried through it (:meth:`CharLM.perplexity` with
        ``batch_size=val_streams``). 1 is the exact value of one stream carried from
        the first character to the last. A data-parallel run splits the streams among
        its ranks (the value does not depend on the number of ranks): give at least as
        many streams as ranks for each to evaluate a share.
    keep_best : bool, default False
        Save the parameters with the lowest validation loss (of the step evaluations
        when ``eval_interval`` is set, else of the epochs) to
        ``<checkpoint stem>.best.npz`` beside ``checkpoint`` (which it needs).
        ``fit`` still ends holding the LAST parameters.
    patience : int, optional
        Stop early after this many evaluations in a row without a new best
        validation loss (counted as for ``keep_best``).
    on_spike : {"skip", "rollback", "stop"}, default "skip"
        What a finite but absurd minibatch loss (above ``10 log V + 10`` nats) does:
        ``"skip"`` the step (no update, carried state reset), ``"rollback"`` to the
        parameters before the previous update and skip, or ``"stop"``
        (:class:`fastrnn.TrainingDiverged`). A NaN/inf loss, gradient norm or
        parameter always stops, as do more than ``max_spikes`` spikes in a row.
    max_spikes : int, default 20
        Consecutive spikes tolerated by ``"skip"`` and ``"rollback"``.

    Raises
    ------
    ValueError, TypeError
        A field out of range or of the wrong type, naming it.

    Examples
    --------
    >>> from fastrnn import TrainConfig
    >>> cfg = TrainConfig(epochs=5, lr=3e-3, optimizer="adam", seed=0)
    >>> cfg.replace(lr=1e-3).lr, cfg.resolved_eps
    (0.001, 1e-08)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TrainConfig(optimizer="rmsprop")                  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of ...
    """

    epochs: int = 10
    batch_size: int = 32
    num_steps: int = 35
    lr: float = 1.0
    optimizer: str = "sgd"
    betas: tuple = (0.9, 0.999)
    eps: float | None = None
    clip: float | None = 1.0
    clip_value: float | None = None
    sampling: str = "sequential"
    num_threads: int | None = None
    seed: int | None = None
    progress: bool = True
    checkpoint: str | None = None
    weight_decay: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float | None = None
    decay_factor: float = 0.97
    decay_after: int = 10
    max_steps: int | None = None
    time_budget: float | None = None
    eval_interval: int | None = None
    eval_block: int = 256
    eval_blocks: int | None = None
    val_streams: int = 1
    keep_best: bool = False
    patience: int | None = None
    on_spike: str = "skip"
    max_spikes: int = 20

    def __post_init__(self):
        s = object.__setattr__
        s(self, "epochs", _pos_int("epochs", self.epochs))
        s(self, "batch_size", _pos_int("batch_size", self.batch_size))
        s(self, "num_steps", _pos_int("num_steps", self.num_steps))
        s(self, "lr", _float("lr", self.lr, positive=True))
        s(self, "optimizer", _choice("optimizer", self.optimizer, OPTIMIZERS))
        b = self.betas
        if (not isinstance(b, (tuple, list)) or len(b) != 2
                or not all(0 <= _float("betas", x) < 1 for x in b)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {b!r}")
        s(self, "betas", (float(b[0]), float(b[1])))
        if self.eps is not None:
            s(self, "eps", _float("eps", self.eps, positive=True))
        if self.clip is not None:
            s(self, "clip", _float("clip", self.clip, positive=True))
        if self.clip_value is not None:
            s(self, "clip_value", _float("clip_value", self.clip_value, positive=True))
        s(self, "sampling", _choice("sampling", self.sampling, SAMPLINGS))
        if self.num_threads is not None:
            s(self, "num_threads", _pos_int("num_threads", self.num_threads))
        if self.seed is not None:
            s(self, "seed", _seed64(self.seed))
        if not isinstance(self.progress, (bool, np.bool_)):
            raise TypeError(f"progress must be a bool, got {type(self.progress).__name__}")
        s(self, "progress", bool(self.progress))
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise TypeError(f"checkpoint must be a path or None, got "
                                f"{type(self.checkpoint).__name__}")
            s(self, "checkpoint", os.fspath(self.checkpoint))
        if self.weight_decay is not None:
            wd = _float("weight_decay", self.weight_decay, nonneg=True)
            if wd and self.optimizer != "adamw":
                raise ValueError(f"weight_decay={wd:g} applies to optimizer='adamw' only "
                                 f"(optimizer={self.optimizer!r})")
            s(self, "weight_decay", wd)
        s(self, "schedule", _choice("schedule", self.schedule, SCHEDULES))
        s(self, "warmup_steps", _pos_int("warmup_steps", self.warmup_steps, minimum=0))
        if self.min_lr is not None:
            s(self, "min_lr", _float("min_lr", self.min_lr, nonneg=True))
            if self.min_lr > self.lr:
                raise ValueError(f"min_lr={self.min_lr:g} must not exceed lr={self.lr:g}")
        f = _float("decay_factor", self.decay_factor, positive=True)
        if f > 1:
            raise ValueError(f"decay_factor must be in (0, 1], got {self.decay_factor}")
        s(self, "decay_factor", f)
        s(self, "decay_after", _pos_int("decay_after", self.decay_after))
        for name in ("max_steps", "eval_interval", "eval_blocks", "patience"):
            if getattr(self, name) is not None:
                s(self, name, _pos_int(name, getattr(self, name)))
        if self.time_budget is not None:
            s(self, "time_budget", _float("time_budget", self.time_budget, positive=True))
        s(self, "eval_block", _pos_int("eval_block", self.eval_block, minimum=2))
        s(self, "val_streams", _pos_int("val_streams", self.val_streams))
        if not isinstance(self.keep_best, (bool, np.bool_)):
            raise TypeError(f"keep_best must be a bool, got {type(self.keep_best).__name__}")
        s(self, "keep_best", bool(self.keep_best))
        if self.keep_best and self.checkpoint is None:
            raise ValueError("keep_best=True saves the best parameters beside the "
                             "checkpoint: give checkpoint= as well")
        s(self, "on_spike", _choice("on_spike", self.on_spike, SPIKE_POLICIES))
        s(self, "max_spikes", _pos_int("max_spikes", self.max_spikes))

    @property
    def resolved_eps(self) -> float:
        """``eps``, or the optimizer's default when None."""
        return DEFAULT_EPS if self.eps is None else self.eps

    @property
    def resolved_weight_decay(self) -> float:
        """``weight_decay``, or AdamW's default (0.01) when None; 0 for other optimizers."""
        if self.optimizer != "adamw":
            return 0.0
        return DEFAULT_WEIGHT_DECAY if self.weight_decay is None else self.weight_decay

    @property
    def resolved_min_lr(self) -> float:
        """``min_lr``, or ``lr / 10`` when None."""
        return self.lr / 10 if self.min_lr is None else self.min_lr

    # The options that fix the shape of the training state: a resumed run must keep them.
    RESUME_FIXED = ("batch_size", "num_steps", "optimizer", "sampling")


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
