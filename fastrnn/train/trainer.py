"""The training loop: truncated BPTT over minibatches of a token stream.

:class:`Trainer` trains a :class:`fastrnn.CharLM` (whose ``fit`` is a thin entry point
to it). One step::

    X, Y = minibatch                                   # (B, T) ids, from the sampler
    loss, grads, h = loss_and_grad(params, X, Y, h,    # compiled forward + BPTT
                         cell=..., dropout=p, seed=step_seed(run_seed, step), row_offset=r0)
    loss = dist.reduce_mean(loss, ...)                 # -- data parallel: global loss
    dist.reduce_gradient(gflat, ...)                   # -- data parallel: one allreduce
    check(loss)                                        # divergence (self._diverged)
    clip(gflat)                                        # global norm, then per value
    optimizer.step(flat, gflat, schedule(step), step + 1)
    stop = dist.reduce_flags([ctrl_c, _after_step()])  # stop flags, every step

then, at the end of an epoch, validation, the history record, the checkpoint and the
callbacks. The model keeps the parameters (one flat buffer), the optimizer state and
the :class:`~fastrnn.train.state.TrainState`; the trainer keeps nothing that a
checkpoint would need, so ``Trainer(model, config).fit(..., resume=True)`` on a
loaded model continues exactly.

Extension points (each a method or an object passed in):

- ``dist`` (:mod:`fastrnn.train.dist`): the gradient allreduce, the reduced stop
  flags, the rows of a batch each rank computes, root-only output.
- ``schedule`` (:mod:`fastrnn.train.schedules`): this step's learning rate.
- :meth:`Trainer._optimizer_step` / :mod:`fastrnn.train.optim`: the update rule.
- :meth:`Trainer._validate`: the per-epoch validation loss;
  :meth:`Trainer._block_totals`: the (sum, count) of an evaluation every
  ``eval_interval`` steps (256-char blocks from a zero state), which
  :meth:`Trainer._step_eval` records and :meth:`Trainer._judge` turns into the
  keep-best and early-stopping decisions (the same on every rank given the same loss).
- :meth:`Trainer._after_step`, :meth:`Trainer._after_epoch`: per-step and per-epoch
  decisions (evaluate, ``max_steps``, ``time_budget``, callbacks); they return True
  to stop.
- :meth:`Trainer._diverged`: what a non-finite loss does (always stops);
  :meth:`Trainer._spike`: what a finite absurd loss does (``on_spike``).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checkpoint as _ckpt, datasets as _ds
from .._core import blas_single_thread, loss_and_grad, resolve_num_threads
from ..config import TrainConfig, _seed64
from . import optim as _optim
from . import dist as _dist
from .dist import PeerFailed, SingleProcess
from .progress import EpochBar
from . import schedules as _sched
from .schedules import make_schedule
from .signals import SigintGuard
from .state import TrainState, data_sha1

if TYPE_CHECKING:  # pragma: no cover
    from ..model import CharLM

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "best_path"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; training stopped.

    The model keeps the last parameters that gave a finite loss. ``history``
    holds the epochs completed before, ``epoch`` and ``step`` say where it
    happened.

    Parameters
    ----------
    message : str
        What diverged and where.
    history, epoch, step
        Stored as the attributes below.

    Attributes
    ----------
    history : list of dict
        The records of the epochs completed before the divergence.
    epoch : int
        The epoch in which it happened, counting from 1.
    step : int
        The optimizer step at which it happened, counting from 1.

    Examples
    --------
    >>> import fastrnn
    >>> try:
    ...     raise fastrnn.TrainingDiverged("loss is nan", history=[], epoch=0, step=3)
    ... except fastrnn.TrainingDiverged as exc:
    ...     print(exc, exc.step)
    loss is nan 3
    """

    def __init__(self, message: str, *, history: list, epoch: int, step: int):
        super().__init__(message)
        self.history, self.epoch, self.step = history, epoch, step


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :meth:`CharLM.fit` cleanly between two minibatches.

    ``checkpoint`` is the file the training state was saved to (None if
    ``fit`` had no ``checkpoint``); continue with ``fit(..., resume=True)`` on
    the same model or ``fit(..., resume=checkpoint)``.

    Parameters
    ----------
    message : str
        Where training stopped.
    checkpoint, history, epoch, batch
        Stored as the attributes below.

    Attributes
    ----------
    checkpoint : pathlib.Path or None
        The checkpoint written on the interrupt, or None without ``checkpoint=``.
    history : list of dict
        The records of the completed epochs.
    epoch : int
        The epoch that was interrupted, counting from 1 (when Ctrl-C came at the end
        of an epoch: that epoch, with ``batch`` 0).
    batch : int
        The minibatches of that epoch already done.

    Examples
    --------
    >>> import fastrnn
    >>> issubclass(fastrnn.TrainingInterrupted, KeyboardInterrupt)   # Ctrl-C semantics
    True
    """

    def __init__(self, message: str, *, checkpoint: Path | None, history: list,
                 epoch: int, batch: int):
        super().__init__(message)
        self.checkpoint, self.history, self.epoch, self.batch = checkpoint, history, epoch, batch


def best_path(checkpoint: str | os.PathLike) -> Path:
    """Where ``keep_best`` saves the best parameters: ``model.npz`` -> ``model.best.npz``."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.best{p.suffix}" if p.suffix else f"{p.name}.best")


def _finite_or_none(x):
    return x if x is not None and math.isfinite(x) else None


_GOLD = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2**64)."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
    return z ^ (z >> 31)


def step_seed(run_seed: int, step: int) -> int:
    """The dropout seed of optimizer step ``step`` (0-based) of a run seeded ``run_seed``:
    a pure function of both, so a resumed run draws the masks an uninterrupted one
    does, on any number of processes."""
    return _mix64((run_seed + _GOLD * (step + 1)) & _M64)


def state_rows(state, r0: int, r1: int):
    """Rows ``r0:r1`` of a recurrent state in any of its forms ((B, H), (L, B, H), or
    an LSTM's pair of either)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(state_rows(s, r0, r1) for s in state)
    return state[r0:r1] if state.ndim == 2 else state[:, r0:r1]


def minibatches(sampling: str, ids: np.ndarray, B: int, T: int, gen: np.random.Generator,
                windows=None) -> list:
    """One epoch's minibatches ``[(X, Y), ...]`` in the order ``gen`` draws."""
    if sampling == "sequential":
        return _ds.seq_data_iter_sequential(ids, B, T, rng=gen)
    if sampling == "random":
        return _ds.seq_data_iter_random(ids, B, T, rng=gen)
    return _ds.iter_minibatches(windows[0], windows[1], B, shuffle=True, rng=gen)


class Trainer:
    """Runs :class:`~fastrnn.TrainConfig` on a model: truncated BPTT, as :meth:`fastrnn.CharLM.fit`.

    Parameters
    ----------
    model : CharLM
        Trained in place (its parameters, optimizer state, training state, history).
    config : TrainConfig, optional
        The options (default ``TrainConfig()``).
    callbacks : sequence of callables, optional
        ``callback(model, record)`` after every epoch; returning True stops training.
    dist : optional
        The peers of a data-parallel run (:class:`fastrnn.train.dist.SingleProcess`
        when None): see :mod:`fastrnn.train.dist`.

    Examples
    --------
    >>> from fastrnn import CharLM, TrainConfig
    >>> from fastrnn.train import Trainer
    >>> text = "hello world, " * 200
    >>> lm = CharLM(text, hidden_size=16, seed=0)
    >>> cfg = TrainConfig(epochs=1, batch_size=4, num_steps=8, lr=0.01,
    ...                   optimizer="adam", progress=False, seed=0)
    >>> len(Trainer(lm, cfg).fit(text))
    1
    """

    def __init__(self, model: "CharLM", config: TrainConfig | None = None, *,
                 callbacks: Sequence[Callable[[Any, dict], Any]] | None = None,
                 dist=None) -> None:
        if config is None:
            config = TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a fastrnn.TrainConfig, got "
                            f"{type(config).__name__}")
        cbs = list(callbacks or [])
        for i, cb in enumerate(cbs):
            if not callable(cb):
                raise TypeError(f"callbacks[{i}] is not callable ({type(cb).__name__})")
        self.model = model
        self.config = config
        self.callbacks = cbs
        self.dist = SingleProcess() if dist is None else dist

    # -- entry point ------------------------------------------------------------------
    def fit(self, text, val_text=None, *, resume: bool | str | os.PathLike = False) -> list[dict]:
        """Train on ``text``, validating on ``val_text`` after each epoch.

        See :meth:`fastrnn.CharLM.fit` for the arguments, the history and the
        exceptions in detail.

        Parameters
        ----------
        text : str or 1-D int array
            The training corpus.
        val_text : str or 1-D int array, optional
            The validation corpus.
        resume : bool or path, default False
            True continues from the model's training state; a path loads that
            checkpoint first.

        Returns
        -------
        list of dict
            The model's history, one record per completed epoch.

        Raises
        ------
        fastrnn.TrainingDiverged
            A NaN/inf or exploding loss or gradient.
        fastrnn.TrainingInterrupted
            Ctrl-C, after the state was saved.
        RuntimeError
            The model is already being trained by another thread.
        ValueError, TypeError
            Bad texts, or a resume that does not fit the configuration or the texts.
        """
        model = self.model
        if not model._fit_lock.acquire(blocking=False):
            raise RuntimeError("CharLM.fit: this model is already being trained by another "
                               "thread; train separate models (or copies) in parallel threads")
        try:
            return self._fit(text, val_text, resume)
        except BaseException as exc:
            if self.dist.size > 1 and not _dist.coordinated(exc):
                _dist.abort_job(self.dist, exc)    # an error on this rank alone: end all
            raise
        finally:
            model._fit_lock.release()

    # -- setup --------------------------------------------------------------------------
    def _fit(self, text, val_text, resume) -> list[dict]:
        # with several ranks, a setup error on any of them stops all of them here
        box = []
        self._together(lambda: box.append(self._setup(text, val_text, resume)))
        st = box[0]
        if st is None:
            return list(self.model.history)
        return self._loop(st)

    def _setup(self, text, val_text, resume) -> TrainState | None:
        """Check the arguments, load or start the training state; None when there is
        nothing left to train."""
        _optim._need_lm()
        model, cfg = self.model, self.config
        nt = (self.dist.default_num_threads() if cfg.num_threads is None
              else resolve_num_threads(cfg.num_threads))
        ckpt_path = None if cfg.checkpoint is None else Path(cfg.checkpoint).expanduser()
        if ckpt_path is not None and self.dist.is_root:
            _ckpt.check_writable(ckpt_path)             # fail now, not after an epoch
        self.checkpoint_path = ckpt_path
        if not isinstance(resume, (bool, str, os.PathLike)):
            raise TypeError(f"resume must be a bool or a path, got {type(resume).__name__}")
        if not isinstance(resume, bool):
            self._load_resume(resume)
            resume = True
        train_ids = model._ids(text, "text")
        val_ids = None if val_text is None else model._ids(val_text, "val_text")
        B, T, sampling = cfg.batch_size, cfg.num_steps, cfg.sampling
        need = T + 1 if sampling == "windows" else B * T + T
        if len(train_ids) < need:
            raise ValueError(f"text is too short: {len(train_ids)} tokens, but "
                             f"sampling={sampling!r} with batch_size={B} and num_steps={T} "
                             f"needs at least {need}")
        if val_ids is not None and len(val_ids) < (T + 1 if sampling == "windows" else 2):
            raise ValueError(f"val_text is too short: {len(val_ids)} tokens")
        # the configuration as run: threads and epsilon resolved (saved in checkpoints)
        run_cfg = cfg.replace(num_threads=nt, eps=cfg.resolved_eps)
        st = self._start_state(run_cfg, train_ids, val_ids, resume)
        model._train = st
        if st.epoch >= run_cfg.epochs:
            return None
        self.train_ids, self.val_ids = train_ids, val_ids
        return st

    def _load_resume(self, path) -> None:
        """``resume=PATH``: load that checkpoint into the model (same configuration)."""
        model = self.model
        other = type(model).load(path)
        if other.vocab != model.vocab:
            raise ValueError(f"resume={str(path)!r}: the checkpoint's vocabulary "
                             f"({len(other.vocab)} tokens) differs from this model's "
                             f"({len(model.vocab)} tokens)")
        if other.config != model.config:
            raise ValueError(f"resume={str(path)!r}: the checkpoint is {other!r}, "
                             f"this model is {model!r}")
        with model._param_lock:
            model._flat[...] = other._flat
            model._opt, model._train, model.history = other._opt, other._train, other.history

    def _start_state(self, cfg: TrainConfig, train_ids, val_ids, resume) -> TrainState:
        """A fresh training state, or the model's own one checked against ``cfg``."""
        model = self.model
        P = model._flat.size
        names = _optim.state_names(cfg.optimizer)
        text_sha1, val_sha1 = data_sha1(train_ids), data_sha1(val_ids)
        if resume:
            st = model._train
            if st is None:
                raise ValueError("resume=True but this model has no training state "
                                 "(load a checkpoint written by fit(checkpoint=...))")
            old = st.config
            for key in TrainConfig.RESUME_FIXED:
                if getattr(old, key) != getattr(cfg, key):
                    raise ValueError(f"cannot resume: {key}={getattr(cfg, key)!r} but the "
                                     f"checkpoint was trained with {key}={getattr(old, key)!r}")
            for have, new, what in ((st.text_sha1, text_sha1, "text"),
                                    (st.val_sha1, val_sha1, "val_text")):
                if have != new:
                    raise ValueError(f"cannot resume: {what} differs from the one the "
                                     "checkpoint was trained on")
            if old.num_threads != cfg.num_threads:
                warnings.warn(f"resuming with num_threads={cfg.num_threads}, the checkpoint "
                              f"used {old.num_threads}: results may differ in the last bits "
                              "from an uninterrupted run", RuntimeWarning, stacklevel=8)
            for name in names:
                if name not in model._opt or model._opt[name].shape != (P,):
                    raise ValueError(f"cannot resume: the optimizer state {name!r} is missing")
            st = st.copy()
            spe = self._steps_per_epoch(cfg, train_ids)
            if st.steps_per_epoch is None:                 # a state from before schedules
                st.steps_per_epoch = spe
            if st.horizon is None:
                st.horizon = _sched.horizon(old, st.steps_per_epoch)
            want = _sched.horizon(cfg, st.steps_per_epoch)
            if want != st.horizon and cfg.schedule != "constant":
                warnings.warn(
                    f"resuming with epochs={cfg.epochs}, max_steps={cfg.max_steps}: the "
                    f"{cfg.schedule!r} schedule keeps the horizon of {st.horizon} steps fixed "
                    f"when the run started (it asks for {want}); "
                    + ("past it the rate stays at min_lr="
                       f"{cfg.resolved_min_lr:g}" if cfg.schedule == "cosine" else
                       "the step decay goes on per epoch")
                    + ". Start a new run to plan a longer schedule.",
                    RuntimeWarning, stacklevel=5)
            st.config = cfg
            return st
        seed = _seed64(cfg.seed)
        spe = self._steps_per_epoch(cfg, train_ids)
        st = TrainState(config=cfg, text_sha1=text_sha1, val_sha1=val_sha1,
                        epoch_rng=np.random.Generator(np.random.PCG64(seed)).bit_generator.state,
                        seed=seed, steps_per_epoch=spe, horizon=_sched.horizon(cfg, spe))
        model._opt = _optim.REGISTRY[cfg.optimizer].new_state(P, model.dtype)
        model.history = []
        model.eval_history = []
        return st

    @staticmethod
    def _steps_per_epoch(cfg: TrainConfig, ids) -> int:
        """Minibatches of an epoch (sequential sampling: at offset 0, which random offsets
        may shorten by one)."""
        B, T = cfg.batch_size, cfg.num_steps
        if cfg.sampling == "windows":
            return -(-(len(ids) - T) // B)
        if cfg.sampling == "sequential":
            return _ds.num_batches(len(ids), B, T)
        return max(1, (len(ids) - 1) // T // B)

    # -- the loop -------------------------------------------------------------------------
    def _loop(self, st: TrainState) -> list[dict]:
        model, cfg, dist = self.model, st.config, self.dist
        lm = _optim._need_lm()
        P = model._flat.size
        B, T, E, nt = cfg.batch_size, cfg.num_steps, cfg.epochs, cfg.num_threads
        sampling = cfg.sampling
        # ---- buffers, allocated once
        gflat = np.zeros(P, model.dtype)                  # ALL gradients, contiguous
        grads = model._views(gflat)                       # named views into gflat
        self._backup = model._flat.copy()                 # last parameters with finite loss
        optimizer = _optim.make_optimizer(cfg, model._opt, model._layout())
        schedule = make_schedule(cfg, st.horizon, st.steps_per_epoch)
        self._lr = cfg.lr                                 # the last step's rate
        self._eval_subset, self._last_val, self._n_batches = None, None, 0
        self._val_batches = None                          # validation windows, cut once
        if model.eval_history:
            self._last_val = model.eval_history[-1]["val_loss"]
        gen = np.random.Generator(np.random.PCG64())
        windows = _ds.windows(self.train_ids, T) if sampling == "windows" else None
        loss_limit = 10 * math.log(model.vocab_size) + 10  # uniform guessing: log V per char
        self.state = st
        kw = model._fn_kw()                               # cell, nonlinearity
        mc = model.config
        dropout = mc.dropout if mc.num_layers > 1 else 0.0
        if dropout:
            kw["dropout"] = dropout
            if st.seed is None:                           # a state from before seeds
                st.seed = _seed64(None)

        self._t_run = time.perf_counter() - st.elapsed       # the run's clock (resumes too)
        with blas_single_thread(), SigintGuard() as sigint:
            while st.epoch < E:
                gen.bit_generator.state = st.epoch_rng
                batches = minibatches(sampling, self.train_ids, B, T, gen, windows)
                h = st.h_carry if (sampling == "sequential" and st.batch > 0) else None
                if h is not None and dist.size > 1:
                    r0, r1 = dist.rows(B)
                    h = state_rows(h, r0, r1)
                t_start = time.perf_counter() - st.seconds
                self._n_batches = len(batches)
                bar = EpochBar(cfg.progress and dist.is_root, total=len(batches),
                               initial=st.batch, desc=f"epoch {st.epoch + 1}/{E}")
                try:
                    for i in range(st.batch, len(batches)):
                        X, Y = batches[i]
                        ntok = X.size                        # the global batch's predictions
                        r0 = 0
                        if dist.size > 1:                   # this rank's rows
                            r0, r1 = dist.rows(len(X))
                            X, Y = X[r0:r1], Y[r0:r1]
                        if dropout:                         # masks: (run seed, step, rows)
                            kw["seed"] = step_seed(st.seed, st.step)
                            kw["row_offset"] = r0
                        failure = None
                        try:
                            if X.size:
                                loss, _, h_T = loss_and_grad(model.params, X, Y, h,
                                                             num_threads=nt, out=grads, **kw)
                            else:                           # more ranks than rows
                                loss, h_T = 0.0, h
                                gflat[...] = 0
                        except Exception as exc:
                            if dist.size == 1:
                                raise
                            failure, loss = exc, math.nan   # stop every rank, then raise
                        if failure is None:
                            loss = dist.reduce_mean(loss, X.size)
                        else:                               # tells the others to stop
                            dist.reduce_mean(loss, X.size, failed=True)
                        if failure is not None:
                            failure._fastrnn_coordinated = True
                            raise failure
                        dist.reduce_gradient(gflat, X.size, ntok)
                        if not math.isfinite(loss):
                            self._diverged("training loss", loss)
                        lr = self._lr = schedule(st.step)
                        if loss > loss_limit and self._spike(loss, lr):
                            h = None                          # skipped: restart the state
                        else:
                            st.spikes = 0
                            if cfg.clip is not None:
                                norm = lm.clip_global_norm(gflat, cfg.clip)
                            else:
                                norm = lm.global_norm(gflat)
                            if not math.isfinite(norm):
                                self._diverged("gradient norm", norm)
                            if cfg.clip_value is not None:
                                lm.clip_value(gflat, cfg.clip_value)
                            self._optimizer_step(optimizer, gflat, lr, st.step + 1)
                            st.step += 1
                            st.loss_sum += loss * ntok
                            st.tokens += ntok
                            st.eval_loss_sum += loss * ntok
                            st.eval_tokens += ntok
                            h = h_T if sampling == "sequential" else None
                        st.batch = i + 1
                        st.h_carry = h
                        st.elapsed = time.perf_counter() - self._t_run
                        bar.step(loss_sum=st.loss_sum, tokens=st.tokens,
                                 seconds=time.perf_counter() - t_start,
                                 last=i + 1 == len(batches), val_loss=self._last_val,
                                 eta=self._eta(st))
                        interrupt, stop = dist.reduce_flags(
                            [sigint.requested, self._after_step(st)])
                        if interrupt or stop:
                            st.seconds = time.perf_counter() - t_start
                            self._save_checkpoint()
                            if not interrupt:
                                return list(model.history)
                            ck = self.checkpoint_path
                            raise TrainingInterrupted(
                                f"training interrupted at epoch {st.epoch + 1}, minibatch "
                                f"{st.batch}" + (f"; checkpoint saved to {ck}" if ck else ""),
                                checkpoint=ck, history=list(model.history),
                                epoch=st.epoch + 1, batch=st.batch)
                    # ---- end of epoch
                    train_seconds = time.perf_counter() - t_start
                    train_loss = st.loss_sum / max(st.tokens, 1)
                    val_loss = self._validate()
                    seconds = time.perf_counter() - t_start
                    record = {
                        "epoch": st.epoch + 1, "step": st.step, "lr": self._lr,
                        "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 700)),
                        "val_loss": _finite_or_none(val_loss),
                        "val_ppl": _finite_or_none(None if val_loss is None
                                                   else math.exp(min(val_loss, 700))),
                        "tokens": st.tokens,
                        "tokens_per_s": st.tokens / max(train_seconds, 1e-9),
                        "wall_time": seconds,
                    }
                    if st.skipped:
                        record["skipped_steps"] = st.skipped
                    bar.epoch(record)
                finally:
                    bar.close()
                model.history.append(record)
                st.epoch, st.batch, st.loss_sum, st.tokens, st.seconds = \
                    st.epoch + 1, 0, 0.0, 0, 0.0
                st.h_carry, st.epoch_rng = None, gen.bit_generator.state
                st.elapsed = time.perf_counter() - self._t_run
                early = False
                if not cfg.eval_interval and val_loss is not None:
                    early = self._judge(st, val_loss)   # keep-best / patience per epoch
                self._save_checkpoint()
                interrupt, stop = dist.reduce_flags(
                    [sigint.requested, self._after_epoch(st, record) or early
                     or self._budget_spent(st)])
                if interrupt:
                    ck = self.checkpoint_path
                    raise TrainingInterrupted(
                        f"training interrupted after epoch {st.epoch}" + (
                            f"; checkpoint saved to {ck}" if ck else ""),
                        checkpoint=ck, history=list(model.history), epoch=st.epoch, batch=0)
                if stop:
                    break
        return list(model.history)

    # -- pieces of a step, overridable ----------------------------------------------------
    def _optimizer_step(self, optimizer, gflat: np.ndarray, lr: float, t: int) -> None:
        """Update the parameters (readers never see half an update); keep the previous ones."""
        model = self.model
        with model._param_lock:
            np.copyto(self._backup, model._flat)
            optimizer.step(model._flat, gflat, lr, t)
            if not np.isfinite(model._flat).all():
                self._diverged("parameters", "non-finite after the update")

    def _diverged(self, what: str, value) -> None:
        """Restore the last parameters with a finite loss and raise TrainingDiverged."""
        model, st = self.model, self.state
        cfg = st.config
        with model._param_lock:
            model._flat[...] = self._backup
        lr = self._lr
        advice = (f" or stronger gradient clipping (clip={cfg.clip / 2:g} instead of "
                  f"{cfg.clip:g})" if cfg.clip is not None
                  else " or gradient clipping (e.g. clip=1.0)")
        raise TrainingDiverged(
            f"training diverged at epoch {st.epoch + 1}, step {st.step + 1}: the "
            f"{what} became {value}; stopped and kept the last parameters with a finite "
            f"loss. Try half the learning rate (lr={lr / 2:.3g}; this step's rate was "
            f"{lr:.3g}){advice}.",
            history=list(model.history), epoch=st.epoch + 1, step=st.step + 1)

    def _spike(self, loss: float, lr: float) -> bool:
        """A finite minibatch loss above ``10 log V + 10``: apply ``on_spike``. Returns
        True when the step is skipped (no update; the caller restarts the carried
        state), else raises :class:`TrainingDiverged`. Every rank sees the same reduced
        loss, so every rank takes the same decision."""
        st = self.state
        cfg = st.config
        what = (f"{loss:.4g} nats, far worse than a uniform guess "
                f"(log V = {math.log(self.model.vocab_size):.2f})")
        if cfg.on_spike == "stop":
            self._diverged("training loss", what + " (on_spike='stop')")
        st.spikes += 1
        if st.spikes > cfg.max_spikes:
            self._diverged("training loss", f"{what}, {st.spikes} minibatches in a row")
        if cfg.on_spike == "rollback":
            with self.model._param_lock:          # the parameters before the last update
                self.model._flat[...] = self._backup
        st.skipped += 1
        if st.skipped == 1 and self.dist.is_root:
            warnings.warn(f"loss spike at step {st.step + 1}: {what}; the minibatch is "
                          f"skipped (on_spike={cfg.on_spike!r}). If spikes repeat, try half the "
                          f"learning rate (lr={lr / 2:.3g}).", RuntimeWarning, stacklevel=4)
        return True

    def _validate(self) -> float | None:
        """Mean cross-entropy on the validation text (None without one): every stride-1
        window (``"windows"`` sampling) or ``val_streams`` carried streams; with several
        ranks each evaluates its share and the totals are summed (one process's value).
        The windows (this rank's share of them) are cut into batches in the kernels'
        layout once per ``fit`` and reused every epoch."""
        if self.val_ids is None:
            return None
        model, cfg, dist = self.model, self.state.config, self.dist
        if cfg.sampling == "windows":
            if self._val_batches is None:
                self._val_batches = model._window_batches(
                    self.val_ids, cfg.num_steps, cfg.batch_size,
                    dist.rows if dist.size > 1 else None)
            s, c = model._batches_ce(self._val_batches, cfg.num_threads)
            if dist.size > 1:                   # shares of the same windows, summed
                s, c = dist.reduce_sum([s, c])
                s, c = float(s), int(round(c))
        else:
            s, c = _dist.shared_totals(self.dist, model._stream_ce, self.val_ids,
                                       cfg.val_streams, cfg.num_threads)
        return s / c

    def _after_step(self, st: TrainState) -> bool:
        """Called after every minibatch (this rank's view); True stops training (after a
        checkpoint, as an interrupt): the step evaluation every ``eval_interval`` steps
        (keep-best, early stopping), ``max_steps`` and ``time_budget``. The epoch's last
        minibatch leaves the budget to the end of the epoch (its record comes first)."""
        cfg = st.config
        stop = False
        if (cfg.eval_interval and self.val_ids is not None and st.eval_tokens
                and st.step % cfg.eval_interval == 0):
            stop = self._step_eval(st)
        if st.batch < self._n_batches:
            stop = self._budget_spent(st) or stop
        return stop

    def _budget_spent(self, st: TrainState) -> bool:
        cfg = st.config
        return ((cfg.max_steps is not None and st.step >= cfg.max_steps)
                or (cfg.time_budget is not None and st.elapsed >= cfg.time_budget))

    def _eta(self, st: TrainState) -> float | None:
        """Seconds left to the horizon (or the time budget) at the run's mean pace."""
        cfg = st.config
        left = None
        if st.horizon and st.step:
            left = st.elapsed / st.step * max(st.horizon - st.step, 0)
        if cfg.time_budget is not None:
            b = max(cfg.time_budget - st.elapsed, 0.0)
            left = b if left is None else min(left, b)
        return left

    # -- evaluation every N steps, keep-best, early stopping -------------------------------
    def _block_totals(self, ids: np.ndarray, block: int, blocks: int | None):
        """(summed cross-entropy, count) over contiguous ``block``-token blocks of ``ids``,
        each from a zero state; ``blocks`` evenly spaced full blocks when given. With
        several ranks each evaluates its share of the blocks (``dist.rows``) and the
        totals are summed (``dist.reduce_sum``): every rank gets one process's value."""
        cfg = self.state.config
        return _dist.shared_totals(self.dist, self.model._block_ce, ids, block,
                                   cfg.num_threads, blocks=blocks)

    def _step_eval(self, st: TrainState) -> bool:
        """Evaluate on the validation text now; record it; True stops early."""
        cfg = st.config
        t0 = time.perf_counter()
        tot = np.asarray(self._block_totals(self.val_ids, cfg.eval_block, cfg.eval_blocks),
                         dtype=np.float64)
        total, count = tot[0], tot[1]
        loss = total / count
        train = st.eval_loss_sum / st.eval_tokens if st.eval_tokens else None
        st.eval_loss_sum, st.eval_tokens = 0.0, 0
        st.elapsed = time.perf_counter() - self._t_run
        lr = self._lr
        rec = {"step": st.step, "epoch": st.epoch + st.batch / max(self._n_batches, 1),
               "train_loss": train, "val_loss": _finite_or_none(loss),
               "val_ppl": _finite_or_none(math.exp(min(loss, 700))), "lr": lr,
               "tokens_seen": st.step * cfg.batch_size * cfg.num_steps,
               "eval_seconds": time.perf_counter() - t0, "wall_time": st.elapsed}
        self._last_val = loss
        stop = self._judge(st, loss)
        rec["best"] = st.best_step == st.step
        self.model.eval_history.append(rec)
        return stop

    def _judge(self, st: TrainState, loss: float) -> bool:
        """One validation loss that ``keep_best`` and ``patience`` count: a new best saves
        the parameters (root) and resets the count; True when patience is exhausted."""
        cfg = st.config
        if not math.isfinite(loss):
            st.bad_evals += 1
        elif st.best_loss is None or loss < st.best_loss:
            st.best_loss, st.best_step, st.bad_evals = float(loss), st.step, 0
            if cfg.keep_best and self.dist.is_root and self.checkpoint_path is not None:
                self.model.save(best_path(self.checkpoint_path), training_state=False)
        else:
            st.bad_evals += 1
        return cfg.patience is not None and st.bad_evals >= cfg.patience

    def _after_epoch(self, st: TrainState, record: dict) -> bool:
        """Called after every epoch's record and checkpoint: the callbacks (on the root
        only); True stops training (the trainer reduces it: every rank stops)."""
        stop = False
        if self.dist.is_root:
            for cb in self.callbacks:
                stop = bool(cb(self.model, dict(record))) or stop
        return stop

    def _save_checkpoint(self) -> None:
        """Save the model and the training state (called on every rank: with several,
        the carried state of the whole batch is gathered first; the root writes)."""
        if self.checkpoint_path is None:
            return
        st, dist = self.state, self.dist
        local = st.h_carry
        carried = st.config.sampling == "sequential" and st.batch > 0   # same on every rank
        full = (dist.gather_rows(local, st.config.batch_size) if dist.size > 1 and carried
                else local)
        if not dist.is_root:
            self._together(lambda: None)
            return
        st.h_carry = full                      # the file holds the state of every row
        try:
            self._together(self.model.save, self.checkpoint_path)
        finally:
            st.h_carry = local

    def _together(self, fn, *args):
        """Run ``fn`` on this rank and reduce a failure flag: if it raised on any rank,
        every rank raises (its own error, or :class:`PeerFailed`) at this point."""
        if self.dist.size == 1:
            fn(*args)
            return
        failure = None
        try:
            fn(*args)
        except Exception as exc:
            failure = exc
        (any_failed,) = self.dist.reduce_flags([failure is not None])
        if failure is not None:
            failure._fastrnn_coordinated = True
            raise failure
        if any_failed:
            raise PeerFailed(f"another rank of the distributed run failed; rank "
                             f"{self.dist.rank} stopped with it")
