"""Where a training run stands: what a checkpoint needs to resume it exactly.

:class:`TrainState` is saved in a model file's metadata (``meta["train"]``, see
:mod:`fastrnn.checkpoint`) as::

    {"config": TrainConfig.to_dict() (num_threads and eps resolved),
     "data":   {"text_sha1": ..., "val_sha1": ...},     # the texts it trains on
     "state":  {"epoch", "batch", "step", "loss_sum", "tokens", "seconds", "epoch_rng",
                "seed"}}

plus the arrays ``h_carry`` (and ``c_carry`` for LSTM: the state carried between
minibatches by sequential sampling, mid-epoch only; ``(B, H)`` for one layer,
``(L, B, H)`` for more) and the optimizer's state arrays. New
counters (schedule, best validation loss, evaluations without improvement, ...) go
into ``state`` with a default that means "not used", so that files written before
them still load (:meth:`TrainState.from_meta` fills missing keys, ignores unknown ones).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import TrainConfig

__all__ = ["TrainState", "data_sha1"]

_COUNTERS = ("epoch", "batch", "step", "tokens")
_NUMBERS = ("loss_sum", "seconds")
# counters added with schedules / evaluations / spikes: (name, default meaning "not used")
_OPTIONAL = (("horizon", None), ("steps_per_epoch", None), ("elapsed", 0.0),
             ("best_loss", None), ("best_step", None), ("bad_evals", 0), ("spikes", 0),
             ("skipped", 0), ("eval_loss_sum", 0.0), ("eval_tokens", 0))


def data_sha1(ids: np.ndarray | None) -> str | None:
    """The identity of a token-id sequence (resume refuses other texts)."""
    if ids is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(ids, dtype="<i4").tobytes(),
                        usedforsecurity=False).hexdigest()


@dataclass
class TrainState:
    """The state of a run between two minibatches.

    Attributes
    ----------
    config : TrainConfig
        The run's options, ``num_threads`` and ``eps`` resolved.
    text_sha1, val_sha1 : str or None
        sha1 of the training and validation token ids.
    epoch : int
        Completed epochs.
    batch : int
        Minibatches completed in the current epoch.
    step : int
        Optimizer steps made since the run started (drives Adam's bias correction
        and, later, schedules and dropout seeds).
    loss_sum, tokens, seconds
        The current epoch's summed loss, predicted tokens and training time so far.
    epoch_rng : dict
        PCG64 state at the start of the current epoch (its minibatch order).
    seed : int or None
        The run's seed: each step's dropout masks are drawn from it and the step
        counter (:func:`fastrnn.train.trainer.step_seed`). None in files written
        before it existed (their models had no dropout).
    horizon : int or None
        The schedule's total steps, fixed when the run started (None before schedules).
    steps_per_epoch : int or None
        Minibatches of an epoch as planned at the start (the step schedule's epoch).
    elapsed : float
        Seconds of the whole run so far (training and evaluations, over resumes).
    best_loss, best_step : float or None, int or None
        The lowest validation loss of the evaluations that ``keep_best`` and
        ``patience`` count, and the optimizer step it was reached at.
    bad_evals : int
        Those evaluations since the last new best.
    spikes, skipped : int
        Loss spikes in a row (now), and minibatches skipped over the run.
    eval_loss_sum, eval_tokens
        Training loss summed since the last step evaluation (its ``train_loss``).
    h_carry : ndarray, tuple of two ndarrays (LSTM) or None
        State carried into the next minibatch (sequential sampling, mid-epoch), in
        the form :func:`fastrnn.loss_and_grad` returns it.
    """

    config: TrainConfig
    text_sha1: str | None
    val_sha1: str | None
    epoch_rng: dict
    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    seed: int | None = None
    horizon: int | None = None
    steps_per_epoch: int | None = None
    elapsed: float = 0.0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    spikes: int = 0
    skipped: int = 0
    eval_loss_sum: float = 0.0
    eval_tokens: int = 0
    h_carry: Any = field(default=None, repr=False)

    def counters(self) -> dict:
        d = {"epoch": self.epoch, "batch": self.batch, "step": self.step,
             "loss_sum": self.loss_sum, "tokens": self.tokens, "seconds": self.seconds,
             "epoch_rng": self.epoch_rng, "seed": self.seed}
        d.update({k: getattr(self, k) for k, _ in _OPTIONAL})
        return d

    def carry_arrays(self) -> dict:
        """The carried state as the checkpoint's arrays (``h_carry``, ``c_carry``)."""
        h = self.h_carry
        if h is None:
            return {}
        if isinstance(h, tuple):
            return {"h_carry": h[0], "c_carry": h[1]}
        return {"h_carry": h}

    def to_meta(self) -> dict:
        """The JSON part (``h_carry`` is an array, saved beside it)."""
        return {"config": self.config.to_dict(),
                "data": {"text_sha1": self.text_sha1, "val_sha1": self.val_sha1},
                "state": self.counters()}

    def public(self) -> dict:
        """:attr:`fastrnn.CharLM.training_state`: config, data and counters in one dict."""
        m = self.to_meta()
        return {"config": m["config"], "data": m["data"], **m["state"]}

    def copy(self) -> "TrainState":
        return dataclasses.replace(self, epoch_rng=_copy_json(self.epoch_rng))

    @classmethod
    def from_meta(cls, st: Any, arrays: dict, *, size: int, hidden_size: int, dtype,
                  bad, cell: str = "rnn", num_layers: int = 1) -> "TrainState":
        """Validate a file's training state (JSON and arrays); ``bad(why)`` makes the error."""
        from .optim import state_names
        if not isinstance(st, dict):
            raise bad("training state is not an object")
        cfg, data, counters = st.get("config"), st.get("data", {}), st.get("state")
        if not isinstance(cfg, dict):
            raise bad("training state has no config")
        if not isinstance(counters, dict):
            raise bad("training state has no counters ('state')")
        if not isinstance(data, dict):
            raise bad("training state 'data' is not an object")
        for name in ("batch_size", "num_steps", "num_threads"):
            v = cfg.get(name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"training state config.{name} must be a non-negative integer, "
                          f"got {v!r}")
        try:
            config = TrainConfig.from_dict(cfg)
        except (TypeError, ValueError) as exc:
            raise bad(f"training state config: {exc}") from None
        for name in _COUNTERS:
            v = counters.get(name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"training state {name} must be a non-negative integer, got {v!r}")
        for name in _NUMBERS:
            v = counters.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(f"training state {name} must be a number")
        for name in ("text_sha1", "val_sha1"):
            v = data.get(name)
            if v is not None and not isinstance(v, str):
                raise bad(f"training state data.{name} must be a string or null")
        rng = counters.get("epoch_rng")
        try:
            if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
                raise ValueError("not a PCG64 state")
            np.random.PCG64().state = rng
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise bad(f"invalid random-number state ({exc})") from None
        for name in state_names(config.optimizer):
            a = arrays.get(name)
            if a is None or a.shape != (size,) or a.dtype != dtype or not np.isfinite(a).all():
                raise bad(f"optimizer state {name!r} is missing or not a finite ({size},) "
                          f"{np.dtype(dtype)} array")
        seed = counters.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed < 2**64):
            raise bad(f"training state seed must be an integer in [0, 2**64) or null, "
                      f"got {seed!r}")
        want = ((config.batch_size, hidden_size) if num_layers == 1
                else (num_layers, config.batch_size, hidden_size))
        carry = []
        for name in ("h_carry", "c_carry"):
            a = arrays.get(name)
            if a is not None:
                if a.shape != want or a.dtype != dtype or not np.isfinite(a).all():
                    what = "hidden" if name == "h_carry" else "cell"
                    raise bad(f"carried {what} state {name!r} has shape {a.shape} and dtype "
                              f"{a.dtype}, expected {want} {np.dtype(dtype)}")
                a = np.ascontiguousarray(a)
            carry.append(a)
        h, c = carry
        if cell == "lstm" and (h is None) != (c is None):
            raise bad("an LSTM's carried state needs both h_carry and c_carry")
        if cell != "lstm" and c is not None:
            raise bad(f"c_carry is the carried cell state of an LSTM, not of cell={cell!r}")
        if c is not None:
            h = (h, c)
        extra = {}
        for name, default in _OPTIONAL:
            v = counters.get(name, default)
            if v is None and default is None:
                extra[name] = None
                continue
            integer = name not in ("elapsed", "best_loss", "eval_loss_sum")
            if (isinstance(v, bool) or not isinstance(v, int if integer else (int, float))
                    or not math.isfinite(v) or v < 0):
                raise bad(f"training state {name} must be a non-negative "
                          f"{'integer' if integer else 'number'}, got {v!r}")
            extra[name] = int(v) if integer else float(v)
        return cls(**extra, config=config, text_sha1=data.get("text_sha1"),
                   val_sha1=data.get("val_sha1"), epoch_rng=rng,
                   epoch=counters["epoch"], batch=counters["batch"], step=counters["step"],
                   loss_sum=float(counters["loss_sum"]), tokens=counters["tokens"],
                   seconds=float(counters["seconds"]), seed=seed, h_carry=h)


def _copy_json(x):
    if isinstance(x, dict):
        return {k: _copy_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy_json(v) for v in x]
    return x
