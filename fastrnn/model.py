"""Character-level RNN language model (d2l.ai, "Recurrent Neural Networks").

:class:`CharLM` wraps the functional API (:func:`fastrnn.loss_and_grad`,
:func:`fastrnn.forward`) into the model the d2l chapter trains: it owns a
:class:`~fastrnn.vocab.Vocab` and the parameters, trains with truncated BPTT
(:meth:`CharLM.fit`), measures perplexity (:meth:`CharLM.perplexity`),
generates text (:meth:`CharLM.generate`, :meth:`CharLM.stream`) and saves
itself safely (:meth:`CharLM.save`, :meth:`CharLM.load`).

Memory layout (as in llm.c): all parameters live in ONE contiguous flat buffer
and ``params`` holds named views into it; the gradients live in a second flat
buffer of the same layout, filled in place by ``loss_and_grad(out=...)``. The
optimizer (compiled, :mod:`fastrnn._lm`) then updates the whole flat buffer
in one pass, and its state (Adagrad's squared-gradient sums, Adam's moments)
is a flat buffer of the same length::

    flat[offset : offset + size]   W_xh (V, H)   input weights (one row per token)
                                   W_hh (H, H)   recurrent weights
                                   b_h  (H,)     hidden bias
                                   W_hq (H, V)   output weights
                                   b_q  (V,)     output bias
"""
from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _core, checkpoint as _ckpt, datasets as _ds
from ._core import (PARAM_NAMES, blas_single_thread, init_params, loss_and_grad,
                    resolve_num_threads)
from ._version import __version__
from .vocab import Vocab

try:
    from . import _lm
except ImportError as exc:  # pragma: no cover - only in broken installs
    _lm = None
    _LM_IMPORT_ERROR = exc

__all__ = ["CharLM", "TrainingDiverged", "TrainingInterrupted", "OPTIMIZERS", "SAMPLINGS"]

OPTIMIZERS = ("sgd", "adagrad", "adam")
SAMPLINGS = ("sequential", "random", "windows")
_DEFAULT_EPS = {"adagrad": 1e-8, "adam": 1e-8}
_OPT_ARRAYS = {"sgd": (), "adagrad": ("opt_mem",), "adam": ("opt_m", "opt_v")}
_EVAL_CHUNK = 1024         # time steps per forward call when measuring perplexity


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; training stopped.

    The model keeps the last parameters that gave a finite loss. ``history``
    holds the epochs completed before, ``epoch`` and ``step`` say where it
    happened.
    """

    def __init__(self, message: str, *, history: list, epoch: int, step: int):
        super().__init__(message)
        self.history, self.epoch, self.step = history, epoch, step


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped :meth:`CharLM.fit` cleanly between two minibatches.

    ``checkpoint`` is the file the training state was saved to (None if
    ``fit`` had no ``checkpoint``); continue with ``fit(..., resume=True)`` on
    the same model or ``fit(..., resume=checkpoint)``.
    """

    def __init__(self, message: str, *, checkpoint: Path | None, history: list,
                 epoch: int, batch: int):
        super().__init__(message)
        self.checkpoint, self.history, self.epoch, self.batch = checkpoint, history, epoch, batch


# ---------------------------------------------------------------------------
# helpers

def _need_lm():
    if _lm is None:  # pragma: no cover
        raise RuntimeError(f"fastrnn's compiled module fastrnn._lm is unavailable "
                           f"({_LM_IMPORT_ERROR}); reinstall fastrnn with a C compiler")
    return _lm


def _layout(V: int, H: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, offset) of each parameter inside the flat buffer."""
    shapes = {"W_xh": (V, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, V), "b_q": (V,)}
    out, off = [], 0
    for k in PARAM_NAMES:
        out.append((k, shapes[k], off))
        off += math.prod(shapes[k])
    return out


def _views(flat: np.ndarray, V: int, H: int) -> dict[str, np.ndarray]:
    return {k: flat[off: off + math.prod(shape)].reshape(shape)
            for k, shape, off in _layout(V, H)}


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


def _sha1(ids: np.ndarray | None) -> str | None:
    if ids is None:
        return None
    return hashlib.sha1(np.ascontiguousarray(ids, dtype="<i4").tobytes(),
                        usedforsecurity=False).hexdigest()


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


class _SigintGuard:
    """Turn the first Ctrl-C into a flag checked between minibatches.

    Installed only in the main thread and only over Python's default handler;
    a second Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _finite_or_none(x):
    return x if x is not None and math.isfinite(x) else None


def _mean_ce(logits: np.ndarray, Y: np.ndarray) -> tuple[float, int]:
    """(summed cross-entropy, count) of logits (..., V) against integer targets (...)."""
    o = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    y = Y.reshape(-1)
    m = o.max(axis=1)
    lse = m + np.log(np.exp(o - m[:, None]).sum(axis=1))
    return float((lse - o[np.arange(len(y)), y]).sum()), len(y)


# ---------------------------------------------------------------------------
# the model

class CharLM:
    """A character-level RNN language model: the d2l chapter's model, compiled.

    Parameters
    ----------
    vocab : Vocab or str
        The vocabulary; a str builds ``Vocab(text)`` from it.
    hidden_size : int, default 256
        H, the number of hidden units.
    nonlinearity : {"tanh", "relu"}
    dtype : {"float32", "float64"}
    seed : int, optional
        Seed of the parameter initialisation.
    init : {"d2l", "uniform"}
        Initialisation scheme (see :func:`fastrnn.init_params`); ``"d2l"`` draws
        weights from Normal(0, 0.01^2) with zero biases, as d2l does.

    Attributes
    ----------
    vocab : Vocab
    info : dict
        Free JSON-serialisable metadata saved with the model (the ``fastrnn``
        command records the corpus and preprocessing there).
    params : dict of ndarray
        Named views into the flat parameter buffer (writing to them changes the
        model): ``W_xh (V, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``,
        ``b_q (V,)``.
    history : list of dict
        One record per completed training epoch (see :meth:`fit`).

    Examples
    --------
    >>> from fastrnn import CharLM
    >>> text = "hello world, " * 200
    >>> lm = CharLM(text, hidden_size=32, seed=0)
    >>> hist = lm.fit(text, epochs=2, batch_size=4, num_steps=16, lr=0.01,
    ...               optimizer="adam", progress=False)
    >>> len(hist), hist[-1]["train_ppl"] < hist[0]["train_ppl"]
    (2, True)
    >>> lm.generate("hello", 10, seed=1)  # doctest: +SKIP
    'hello world, hel'
    """

    def __init__(self, vocab: Vocab | str, hidden_size: int = 256, *,
                 nonlinearity: str = "tanh", dtype: str | np.dtype = "float32",
                 seed: int | None = None, init: str = "d2l") -> None:
        if isinstance(vocab, str):
            if not vocab:
                raise ValueError("vocab text is empty")
            vocab = Vocab(vocab)
        if not isinstance(vocab, Vocab):
            raise TypeError(f"vocab must be a fastrnn.Vocab or a str, got {type(vocab).__name__}")
        if len(vocab) < 1:
            raise ValueError("vocab is empty")
        H = _pos_int("hidden_size", hidden_size)
        _core.check_nonlinearity(nonlinearity)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self._setup(vocab, H, nonlinearity, dt)
        p0 = init_params(len(vocab), H, dtype=dt, seed=seed, init=init)
        for k in PARAM_NAMES:
            self.params[k][...] = p0[k]

    def _setup(self, vocab: Vocab, H: int, nonlinearity: str, dt: np.dtype) -> None:
        self.vocab = vocab
        self._H, self._V = H, len(vocab)
        self._nonlinearity = nonlinearity
        self._dtype = dt
        n = sum(math.prod(shape) for _, shape, _ in _layout(self._V, H))
        # ALL parameters, contiguous; W_hh (after W_xh) starts a 64-byte cache line
        # for the one-row products of generation and B = 1 training
        self._flat = _core.empty_aligned(n, dt, at=self._V * H)
        self._flat[...] = 0
        self.params = _views(self._flat, self._V, H)       # named views into _flat
        self.history: list[dict] = []
        self.info: dict[str, Any] = {}                     # free JSON metadata, saved too
        self._opt: dict[str, np.ndarray] = {}              # optimizer state, flat buffers
        self._train: dict | None = None                    # resumable training state
        self._fit_lock = threading.Lock()                  # one fit at a time per model
        self._param_lock = threading.RLock()               # updates vs. readers of _flat

    # -- properties -------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """H, the number of hidden units."""
        return self._H

    @property
    def vocab_size(self) -> int:
        """V, the number of tokens (input and output width)."""
        return self._V

    @property
    def nonlinearity(self) -> str:
        return self._nonlinearity

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def parameters(self) -> np.ndarray:
        """The flat parameter buffer (every entry of :attr:`params`), shape (P,)."""
        return self._flat

    @property
    def num_parameters(self) -> int:
        return self._flat.size

    @property
    def training_state(self) -> dict | None:
        """Where training stands (epoch, batch, step, ...), or None if never trained."""
        return None if self._train is None else {
            k: v for k, v in self._train.items() if k != "h_carry"}

    def __repr__(self) -> str:
        return (f"CharLM(vocab_size={self._V}, hidden_size={self._H}, "
                f"nonlinearity={self._nonlinearity!r}, dtype={self._dtype.name!r}, "
                f"epochs_trained={len(self.history)})")

    # -- text -> ids --------------------------------------------------------------
    def _ids(self, text: Any, name: str) -> np.ndarray:
        if isinstance(text, str):
            return self.vocab.encode(text)
        if isinstance(text, (bytes, bytearray)):
            raise TypeError(f"{name} must be a str or an array of token ids, got bytes "
                            "(decode it first)")
        arr = np.asarray(text)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(f"{name} must be a str or a 1-D integer array of token ids, "
                            f"got {arr.dtype} array of shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self._V):
            raise ValueError(f"{name} holds ids outside [0, {self._V}), the vocabulary size")
        return np.ascontiguousarray(arr, dtype=np.int32)

    # -- evaluation -----------------------------------------------------------------
    def perplexity(self, text: str | np.ndarray, *, batch_size: int = 1,
                   num_threads: int | None = None) -> float:
        """``exp(mean cross-entropy)`` of predicting each character from those before it.

        The state starts at zero and is carried through the text, so the first
        character is only context and the other ``n - 1`` are predicted.

        Parameters
        ----------
        text : str or 1-D int array of token ids
            At least two tokens.
        batch_size : int, default 1
            Cut the text into this many contiguous streams evaluated in parallel
            (faster; each stream restarts from a zero state, so the value
            changes slightly). 1 gives the exact sequential value.
        num_threads : int, optional

        Returns
        -------
        float
        """
        ids = self._ids(text, "text")
        bs = _pos_int("batch_size", batch_size)
        if len(ids) < 2:
            raise ValueError(f"text must have at least 2 tokens to measure perplexity, "
                             f"got {len(ids)}")
        total, count = self._stream_ce(ids, bs, num_threads)
        return math.exp(total / count)

    def _stream_ce(self, ids: np.ndarray, bs: int, num_threads) -> tuple[float, int]:
        """Summed CE and count over ids, cut into bs streams (plus a remainder stream)."""
        n = len(ids) - 1                       # predictions
        bs = min(bs, n)
        L = n // bs
        parts = [(ids[: bs * L].reshape(bs, L), ids[1: bs * L + 1].reshape(bs, L))]
        if n - bs * L:
            parts.append((ids[bs * L: n][None, :], ids[bs * L + 1:][None, :]))
        total, count = 0.0, 0
        with blas_single_thread(), self._param_lock:
            for X, Y in parts:
                h = None
                for t0 in range(0, X.shape[1], _EVAL_CHUNK):
                    x, y = X[:, t0: t0 + _EVAL_CHUNK], Y[:, t0: t0 + _EVAL_CHUNK]
                    logits, h = _core.forward(self.params, x, h, nonlinearity=self._nonlinearity,
                                              num_threads=num_threads)
                    s, c = _mean_ce(logits, y)
                    total, count = total + s, count + c
        return total, count

    def _windows_ce(self, ids: np.ndarray, num_steps: int, bs: int,
                    num_threads) -> tuple[float, int]:
        """Summed CE over every stride-1 window of ids, each from a zero state."""
        X, Y = _ds.windows(ids, num_steps)
        total, count = 0.0, 0
        with blas_single_thread(), self._param_lock:
            for i in range(0, len(X), bs):
                logits, _ = _core.forward(self.params, np.ascontiguousarray(X[i: i + bs]),
                                          nonlinearity=self._nonlinearity,
                                          num_threads=num_threads)
                s, c = _mean_ce(logits, Y[i: i + bs])
                total, count = total + s, count + c
        return total, count

    # -- generation -------------------------------------------------------------------
    def _gen_setup(self, prefix, length, temperature, top_k, greedy, seed, num_threads):
        lm = _need_lm()
        nt = resolve_num_threads(num_threads)
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if not prefix:
            raise ValueError("prefix must be a non-empty str (it warms up the hidden state)")
        if length is not None:
            _pos_int("length", length, minimum=0)
        greedy = bool(greedy)
        temperature = _float("temperature", temperature)
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature} "
                             "(use greedy=True for argmax decoding)")
        if top_k is None:
            k = 0
        else:
            k = _pos_int("top_k", top_k)
        feed = self.vocab.encode(prefix)
        rng = np.zeros(4, np.uint64)
        lm.rng_seed(np.uint64(_seed64(seed)), rng)
        h = np.zeros(self._H, self._dtype)
        work = np.empty(self._H + 2 * self._V, self._dtype)
        with self._param_lock:
            p = _core.check_params(self.params)  # finite, contiguous views
        return lm, p, feed, rng, h, work, temperature, k, greedy, nt

    def generate_ids(self, prefix: str, length: int, *, temperature: float = 1.0,
                     top_k: int | None = None, greedy: bool = False,
                     seed: int | None = None, num_threads: int | None = None) -> np.ndarray:
        """Like :meth:`generate` but return the ``length`` new token ids (int32)."""
        length = _pos_int("length", length, minimum=0)   # None is valid for stream() only
        lm, p, feed, rng, h, work, temp, k, greedy, nt = self._gen_setup(
            prefix, length, temperature, top_k, greedy, seed, num_threads)
        out = np.empty(length, np.int32)
        if length:
            with blas_single_thread(), self._param_lock:
                lm.generate(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], feed, out,
                            h, work, rng, temp, k, greedy, self._nonlinearity, nt)
        return out

    def generate(self, prefix: str, length: int, *, temperature: float = 1.0,
                 top_k: int | None = None, greedy: bool = False,
                 seed: int | None = None, num_threads: int | None = None) -> str:
        """Continue ``prefix`` by ``length`` characters (d2l's ``predict``).

        The prefix is fed through the network to warm up the hidden state, then
        each character is drawn from ``softmax(O_t / temperature)`` and fed back.
        The whole loop runs in compiled code.

        Parameters
        ----------
        prefix : str
            Non-empty; characters outside the vocabulary become its unknown token.
        length : int
            Number of characters to generate (>= 0).
        temperature : float, default 1.0
            > 0; lower is more conservative, higher more random.
        top_k : int, optional
            Sample only among the ``top_k`` most likely characters (ties at the
            boundary are all kept).
        greedy : bool, default False
            Take the most likely character each step (d2l's ``argmax``);
            ``temperature``, ``top_k`` and ``seed`` are then irrelevant.
        seed : int, optional
            Seed of the sampler (xoshiro256**); the same seed gives the same text.
            None draws a fresh seed from the OS.
        num_threads : int, optional
            OpenMP threads (default: all available cores). With two or more and a
            hidden size of at least 125, each step's hidden units are split across
            two threads; the text is the same for every thread count.

        Returns
        -------
        str
            ``prefix`` followed by the generated characters (as d2l's ``predict``).
        """
        ids = self.generate_ids(prefix, length, temperature=temperature, top_k=top_k,
                                greedy=greedy, seed=seed, num_threads=num_threads)
        return prefix + self.vocab.decode(ids)

    def stream(self, prefix: str, length: int | None = None, *, temperature: float = 1.0,
               top_k: int | None = None, greedy: bool = False, seed: int | None = None,
               chunk_size: int = 16, num_threads: int | None = None) -> Iterator[str]:
        """Yield generated characters one at a time (the prefix is not repeated).

        Same arguments and same characters as :meth:`generate` with the same
        ``seed``; ``length=None`` streams forever. Characters are computed in
        compiled chunks of ``chunk_size``, so the caller can print them as they come.
        """
        cs = _pos_int("chunk_size", chunk_size)
        setup = self._gen_setup(prefix, length, temperature, top_k, greedy, seed, num_threads)
        return self._stream(setup, length, cs)    # arguments checked now, not at next()

    def _stream(self, setup, length, cs) -> Iterator[str]:
        lm, p, feed, rng, h, work, temp, k, greedy, nt = setup
        tokens = self.vocab.tokens
        done = 0
        while length is None or done < length:
            n = cs if length is None else min(cs, length - done)
            out = np.empty(n, np.int32)
            with blas_single_thread(), self._param_lock:
                lm.generate(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], feed, out,
                            h, work, rng, temp, k, greedy, self._nonlinearity, nt)
            feed = out[-1:].copy()             # the last draw is fed at the next chunk
            done += n
            for i in out.tolist():
                yield tokens[i]

    # -- training -----------------------------------------------------------------------
    def _minibatches(self, sampling, ids, B, T, gen, win):
        if sampling == "sequential":
            return _ds.seq_data_iter_sequential(ids, B, T, rng=gen)
        if sampling == "random":
            return _ds.seq_data_iter_random(ids, B, T, rng=gen)
        return _ds.iter_minibatches(win[0], win[1], B, shuffle=True, rng=gen)

    def fit(self, text: str | np.ndarray, *, val_text: str | np.ndarray | None = None,
            epochs: int = 10, batch_size: int = 32, num_steps: int = 35, lr: float = 1.0,
            optimizer: str = "sgd", clip: float | None = 1.0, clip_value: float | None = None,
            sampling: str = "sequential", num_threads: int | None = None,
            progress: bool = True, checkpoint: str | os.PathLike | None = None,
            resume: bool | str | os.PathLike = False,
            callbacks: Sequence[Callable[["CharLM", dict], Any]] | None = None,
            seed: int | None = None, betas: tuple[float, float] = (0.9, 0.999),
            eps: float | None = None) -> list[dict]:
        """Train with truncated backpropagation through time.

        Parameters
        ----------
        text : str or 1-D int array of token ids
            Training corpus.
        val_text : str or 1-D int array, optional
            Validation corpus, evaluated after each epoch.
        epochs : int, default 10
            Total number of epochs; when resuming, training continues until this
            many epochs are complete.
        batch_size, num_steps : int
            Minibatch shape ``(batch_size, num_steps)``; ``num_steps`` is the BPTT
            truncation length.
        lr : float, default 1.0
            Learning rate (d2l uses 1 with SGD; try 0.002 to 0.01 with Adam,
            0.1 with Adagrad).
        optimizer : {"sgd", "adagrad", "adam"}
            ``"sgd"``: ``p -= lr g`` (d2l). ``"adagrad"``: min-char-rnn's
            ``mem += g^2; p -= lr g / sqrt(mem + eps)``. ``"adam"``: Adam with
            bias correction (``betas``, ``eps``).
        clip : float or None, default 1.0
            Clip the gradient by its global norm, d2l's ``g <- min(1, clip/||g||) g``.
            None disables it.
        clip_value : float or None
            Also clip every gradient entry into ``[-clip_value, clip_value]``
            (min-char-rnn uses 5), applied after the norm clip.
        sampling : {"sequential", "random", "windows"}
            ``"sequential"``: d2l's sequential partitioning; the hidden state is
            carried across minibatches (detached) and reset each epoch.
            ``"random"``: d2l's random sampling, state reset each minibatch.
            ``"windows"``: the current d2l edition's stride-1 windows, shuffled,
            state reset each minibatch; validation then uses every stride-1
            window of ``val_text``, each from a zero state.
            Sequential and random validation is :meth:`perplexity` of ``val_text``.
        num_threads : int, optional
            OpenMP threads for the kernels (default: all available cores).
        progress : bool, default True
            Show a tqdm progress bar with loss, perplexity and tokens/s.
        checkpoint : path, optional
            Save the model and the full training state here after every epoch
            (atomically) and when Ctrl-C interrupts training.
        resume : bool or path, default False
            Continue an earlier run: True continues from this model's training
            state (after :meth:`load` of a checkpoint, or an interrupted ``fit``);
            a path first loads that checkpoint into this model. The optimizer
            state, random-number state and step counters are restored, so the
            result equals an uninterrupted run (with the same ``num_threads``).
            ``batch_size``, ``num_steps``, ``optimizer`` and ``sampling`` must
            match the checkpoint, and ``text`` and ``val_text`` must be the same.
        callbacks : sequence of callables, optional
            Each is called as ``callback(model, record)`` after every epoch;
            returning True stops training after that epoch.
        seed : int, optional
            Seed of the minibatch order and offsets (ignored when resuming).
        betas : (float, float), default (0.9, 0.999)
            Adam's moment decay rates.
        eps : float, optional
            Adagrad's / Adam's epsilon (default 1e-8).

        Returns
        -------
        list of dict
            :attr:`history`: one record per epoch with ``epoch``, ``step``,
            ``train_loss`` (mean cross-entropy), ``train_ppl``, ``val_loss`` and
            ``val_ppl`` (None without ``val_text``), ``tokens`` (predictions
            trained on), ``tokens_per_s`` (training throughput, validation
            excluded) and ``wall_time`` (seconds for the epoch, validation included).

        Raises
        ------
        TrainingDiverged
            If the loss or the gradient norm becomes NaN or infinite, or a
            minibatch loss exceeds ``10 log V + 10`` nats (far worse than
            guessing uniformly, ``log V``); the model keeps the last parameters
            that gave an acceptable loss (Adam's or Adagrad's in-memory state
            may include the failing step: for an exact continuation, resume
            from the last checkpoint).
        TrainingInterrupted
            On Ctrl-C (first press), after finishing the current minibatch and
            saving ``checkpoint``. A second Ctrl-C interrupts immediately.
        """
        if not self._fit_lock.acquire(blocking=False):
            raise RuntimeError("CharLM.fit: this model is already being trained by another "
                               "thread; train separate models (or copies) in parallel threads")
        try:
            return self._fit(
                text, val_text=val_text, epochs=epochs, batch_size=batch_size,
                num_steps=num_steps, lr=lr, optimizer=optimizer, clip=clip,
                clip_value=clip_value, sampling=sampling, num_threads=num_threads,
                progress=progress, checkpoint=checkpoint, resume=resume, callbacks=callbacks,
                seed=seed, betas=betas, eps=eps)
        finally:
            self._fit_lock.release()

    def _fit(self, text, *, val_text, epochs, batch_size, num_steps, lr, optimizer, clip,
             clip_value, sampling, num_threads, progress, checkpoint, resume, callbacks, seed,
             betas, eps) -> list[dict]:
        lm = _need_lm()
        # ---- validate everything before any work
        E = _pos_int("epochs", epochs)
        B = _pos_int("batch_size", batch_size)
        T = _pos_int("num_steps", num_steps)
        lr = _float("lr", lr, positive=True)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        clip = None if clip is None else _float("clip", clip, positive=True)
        clip_value = None if clip_value is None else _float("clip_value", clip_value,
                                                            positive=True)
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(0 <= _float("betas", b) < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        b1, b2 = float(betas[0]), float(betas[1])
        eps = _DEFAULT_EPS.get(optimizer, 1e-8) if eps is None else _float("eps", eps,
                                                                              positive=True)
        nt = resolve_num_threads(num_threads)
        cbs = list(callbacks or [])
        for i, cb in enumerate(cbs):
            if not callable(cb):
                raise TypeError(f"callbacks[{i}] is not callable ({type(cb).__name__})")
        ckpt_path = None if checkpoint is None else Path(checkpoint).expanduser()
        if ckpt_path is not None:
            _ckpt.check_writable(ckpt_path)             # fail now, not after an epoch
        if not isinstance(resume, (bool, str, os.PathLike)):
            raise TypeError(f"resume must be a bool or a path, got {type(resume).__name__}")
        if not isinstance(resume, bool):
            other = CharLM.load(resume)
            if other.vocab != self.vocab:
                raise ValueError(f"resume={str(resume)!r}: the checkpoint's vocabulary "
                                 f"({len(other.vocab)} tokens) differs from this model's "
                                 f"({self._V} tokens)")
            if (other._H, other._nonlinearity, other._dtype) != (
                    self._H, self._nonlinearity, self._dtype):
                raise ValueError(f"resume={str(resume)!r}: the checkpoint is {other!r}, "
                                 f"this model is {self!r}")
            with self._param_lock:
                self._flat[...] = other._flat
                self._opt, self._train, self.history = other._opt, other._train, other.history
            resume = True
        train_ids = self._ids(text, "text")
        val_ids = None if val_text is None else self._ids(val_text, "val_text")
        need = T + 1 if sampling == "windows" else B * T + T
        if len(train_ids) < need:
            raise ValueError(f"text is too short: {len(train_ids)} tokens, but "
                             f"sampling={sampling!r} with batch_size={B} and num_steps={T} "
                             f"needs at least {need}")
        if val_ids is not None and len(val_ids) < (T + 1 if sampling == "windows" else 2):
            raise ValueError(f"val_text is too short: {len(val_ids)} tokens")
        config = {"epochs": E, "batch_size": B, "num_steps": T, "optimizer": optimizer,
                  "sampling": sampling, "lr": lr, "clip": clip, "clip_value": clip_value,
                  "betas": [b1, b2], "eps": eps, "num_threads": nt,
                  "data_sha1": _sha1(train_ids), "val_sha1": _sha1(val_ids)}

        # ---- fresh or resumed training state
        P = self._flat.size
        if resume:
            st = self._train
            if st is None:
                raise ValueError("resume=True but this model has no training state "
                                 "(load a checkpoint written by fit(checkpoint=...))")
            old = st["config"]
            for key in ("batch_size", "num_steps", "optimizer", "sampling"):
                if old[key] != config[key]:
                    raise ValueError(f"cannot resume: {key}={config[key]!r} but the "
                                     f"checkpoint was trained with {key}={old[key]!r}")
            for key, what in (("data_sha1", "text"), ("val_sha1", "val_text")):
                if old[key] != config[key]:
                    raise ValueError(f"cannot resume: {what} differs from the one the "
                                     "checkpoint was trained on")
            if old["num_threads"] != nt:
                warnings.warn(f"resuming with num_threads={nt}, the checkpoint used "
                              f"{old['num_threads']}: results may differ in the last bits "
                              "from an uninterrupted run", RuntimeWarning, stacklevel=2)
            for name in _OPT_ARRAYS[optimizer]:
                if name not in self._opt or self._opt[name].shape != (P,):
                    raise ValueError(f"cannot resume: the optimizer state {name!r} is missing")
            st = dict(st, config=config)
        else:
            st = {"config": config, "epoch": 0, "batch": 0, "step": 0,
                  "epoch_rng": np.random.Generator(np.random.PCG64(
                      _seed64(seed))).bit_generator.state,
                  "loss_sum": 0.0, "tokens": 0, "seconds": 0.0, "h_carry": None}
            self._opt = {name: np.zeros(P, self._dtype) for name in _OPT_ARRAYS[optimizer]}
            self.history = []
        self._train = st
        if st["epoch"] >= E:
            return list(self.history)

        # ---- buffers, allocated once
        gflat = np.zeros(P, self._dtype)                 # ALL gradients, contiguous
        grads = _views(gflat, self._V, self._H)           # named views into gflat
        backup = self._flat.copy()                       # last parameters with finite loss
        gen = np.random.Generator(np.random.PCG64())
        windows = _ds.windows(train_ids, T) if sampling == "windows" else None
        loss_limit = 10 * math.log(self._V) + 10   # uniform guessing costs log V per char

        def save_checkpoint():
            if ckpt_path is not None:
                self.save(ckpt_path)

        def diverged(what, value):
            with self._param_lock:
                self._flat[...] = backup
            advice = (f" or stronger gradient clipping (clip={clip:g})" if clip is not None
                      else " or gradient clipping (e.g. clip=1.0)")
            raise TrainingDiverged(
                f"training diverged at epoch {st['epoch'] + 1}, step {st['step'] + 1}: the "
                f"{what} became {value}; stopped and kept the last parameters with a finite "
                f"loss. Try a smaller learning rate (lr={lr:g}){advice}.",
                history=list(self.history), epoch=st["epoch"] + 1, step=st["step"] + 1)

        with blas_single_thread(), _SigintGuard() as sigint:
            while st["epoch"] < E:
                gen.bit_generator.state = st["epoch_rng"]
                batches = self._minibatches(sampling, train_ids, B, T, gen, windows)
                h = st["h_carry"] if (sampling == "sequential" and st["batch"] > 0) else None
                t_start = time.perf_counter() - st["seconds"]
                bar = None
                if progress:
                    from tqdm.auto import tqdm
                    bar = tqdm(total=len(batches), initial=st["batch"], unit="batch",
                               desc=f"epoch {st['epoch'] + 1}/{E}", leave=True,
                               dynamic_ncols=True, file=sys.stderr)
                last_post = 0.0
                try:
                    for i in range(st["batch"], len(batches)):
                        X, Y = batches[i]
                        loss, _, h_T = loss_and_grad(self.params, X, Y, h,
                                                     nonlinearity=self._nonlinearity,
                                                     num_threads=nt, out=grads)
                        if not math.isfinite(loss):
                            diverged("training loss", loss)
                        if loss > loss_limit:
                            diverged("training loss", f"{loss:.4g} nats, far worse than a "
                                     f"uniform guess (log V = {math.log(self._V):.2f})")
                        if clip is not None:
                            norm = lm.clip_global_norm(gflat, clip)
                        else:
                            norm = lm.global_norm(gflat)
                        if not math.isfinite(norm):
                            diverged("gradient norm", norm)
                        if clip_value is not None:
                            lm.clip_value(gflat, clip_value)
                        with self._param_lock:      # readers never see half an update
                            np.copyto(backup, self._flat)
                            if optimizer == "sgd":
                                lm.sgd_update(self._flat, gflat, lr)
                            elif optimizer == "adagrad":
                                lm.adagrad_update(self._flat, gflat, self._opt["opt_mem"], lr,
                                                  eps)
                            else:
                                lm.adam_update(self._flat, gflat, self._opt["opt_m"],
                                               self._opt["opt_v"], lr, b1, b2, eps,
                                               st["step"] + 1)
                            if not np.isfinite(self._flat).all():
                                diverged("parameters", "non-finite after the update")
                        ntok = X.size
                        st["step"] += 1
                        st["batch"] = i + 1
                        st["loss_sum"] += loss * ntok
                        st["tokens"] += ntok
                        h = h_T if sampling == "sequential" else None
                        st["h_carry"] = h
                        if bar is not None:
                            bar.update(1)
                            now = time.perf_counter()
                            if now - last_post > 0.5 or i + 1 == len(batches):
                                last_post = now
                                mean = st["loss_sum"] / st["tokens"]
                                bar.set_postfix_str(
                                    f"loss={mean:.3f} ppl={math.exp(min(mean, 700)):.2f} "
                                    f"tok/s={st['tokens'] / max(now - t_start, 1e-9):,.0f}",
                                    refresh=False)
                        if sigint.requested:
                            st["seconds"] = time.perf_counter() - t_start
                            save_checkpoint()
                            where = f"epoch {st['epoch'] + 1}, minibatch {st['batch']}"
                            raise TrainingInterrupted(
                                f"training interrupted at {where}" + (
                                    f"; checkpoint saved to {ckpt_path}" if ckpt_path else ""),
                                checkpoint=ckpt_path, history=list(self.history),
                                epoch=st["epoch"] + 1, batch=st["batch"])
                    # ---- end of epoch
                    train_seconds = time.perf_counter() - t_start
                    train_loss = st["loss_sum"] / max(st["tokens"], 1)
                    val_loss = None
                    if val_ids is not None:
                        if sampling == "windows":
                            s, c = self._windows_ce(val_ids, T, B, nt)
                        else:
                            s, c = self._stream_ce(val_ids, 1, nt)
                        val_loss = s / c
                    seconds = time.perf_counter() - t_start
                    record = {
                        "epoch": st["epoch"] + 1, "step": st["step"],
                        "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 700)),
                        "val_loss": _finite_or_none(val_loss),
                        "val_ppl": _finite_or_none(None if val_loss is None
                                                   else math.exp(min(val_loss, 700))),
                        "tokens": st["tokens"],
                        "tokens_per_s": st["tokens"] / max(train_seconds, 1e-9),
                        "wall_time": seconds,
                    }
                    if bar is not None:
                        bar.set_postfix_str(
                            f"loss={train_loss:.3f} ppl={record['train_ppl']:.2f}"
                            + (f" val_ppl={record['val_ppl']:.2f}" if record["val_ppl"]
                               else "") + f" tok/s={record['tokens_per_s']:,.0f}")
                finally:
                    if bar is not None:
                        bar.close()
                self.history.append(record)
                st.update(epoch=st["epoch"] + 1, batch=0, loss_sum=0.0, tokens=0,
                          seconds=0.0, h_carry=None, epoch_rng=gen.bit_generator.state)
                save_checkpoint()
                stop = False
                for cb in cbs:
                    stop = bool(cb(self, dict(record))) or stop
                if sigint.requested:
                    raise TrainingInterrupted(
                        f"training interrupted after epoch {st['epoch']}" + (
                            f"; checkpoint saved to {ckpt_path}" if ckpt_path else ""),
                        checkpoint=ckpt_path, history=list(self.history),
                        epoch=st["epoch"], batch=0)
                if stop:
                    break
        return list(self.history)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, training_state: bool = True) -> Path:
        """Write the model to one ``.npz`` file, atomically.

        Parameters
        ----------
        path : str or path-like
            Target file (written exactly there).
        training_state : bool, default True
            Include the optimizer state, RNG state and step counters so that
            :meth:`fit` can resume; False writes only what inference needs.

        Returns
        -------
        pathlib.Path
        """
        with self._param_lock:                             # a consistent snapshot
            arrays = {k: self.params[k].copy() for k in PARAM_NAMES}
            opt = {k: a.copy() for k, a in self._opt.items()}
            h_carry = None if self._train is None else self._train.get("h_carry")
        meta: dict[str, Any] = {
            "fastrnn_version": __version__,
            "model": {"vocab_size": self._V, "hidden_size": self._H,
                      "nonlinearity": self._nonlinearity, "dtype": self._dtype.name},
            "vocab": self.vocab.to_dict(),
            "history": self.history,
            "info": self.info,
            "train": None,
        }
        if training_state and self._train is not None:
            st = {k: v for k, v in self._train.items() if k != "h_carry"}
            meta["train"] = st
            arrays.update(opt)
            if h_carry is not None:
                arrays["h_carry"] = h_carry
        return _ckpt.write(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharLM":
        """Read a model written by :meth:`save` (never unpickles anything).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        fastrnn.checkpoint.CheckpointError
            If the file is corrupted, truncated, of a newer format version, or
            inconsistent (shapes, dtypes, vocabulary size, non-finite values).
        """
        arrays, meta = _ckpt.read(path)

        def bad(why):
            return _ckpt.CheckpointError(f"{path}: not a valid fastrnn model file: {why}")

        m = meta.get("model")
        if not isinstance(m, dict):
            raise bad("metadata has no 'model' object")
        try:
            vocab = Vocab.from_dict(meta.get("vocab"))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise bad(f"invalid vocabulary ({exc})") from None
        H, V = m.get("hidden_size"), m.get("vocab_size")
        for name, v in (("hidden_size", H), ("vocab_size", V)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(f"model.{name} must be a positive integer, got {v!r}")
        if V != len(vocab):
            raise bad(f"vocabulary mismatch: the vocabulary has {len(vocab)} tokens but the "
                      f"model was built for {V}")
        nonlin = m.get("nonlinearity")
        if nonlin not in _core.NONLINEARITIES:
            raise bad(f"unknown nonlinearity {nonlin!r}")
        if m.get("dtype") not in ("float32", "float64"):
            raise bad(f"dtype must be 'float32' or 'float64', got {m.get('dtype')!r}")
        dt = np.dtype(m["dtype"])
        allowed = set(PARAM_NAMES) | {"opt_m", "opt_v", "opt_mem", "h_carry"}
        extra = sorted(set(arrays) - allowed)
        if extra:
            raise bad(f"unexpected arrays {extra}")
        for k, shape, _ in _layout(V, H):          # check everything before allocating
            a = arrays.get(k)
            if a is None:
                raise bad(f"parameter {k!r} is missing")
            if a.shape != shape or a.dtype != dt:
                raise bad(f"parameter {k!r} has shape {a.shape} and dtype {a.dtype}, "
                          f"expected {shape} {dt} (V={V}, H={H})")
            if not np.isfinite(a).all():
                raise bad(f"parameter {k!r} contains NaN or inf")
        self = cls.__new__(cls)
        self._setup(vocab, H, nonlin, dt)
        for k in PARAM_NAMES:
            self.params[k][...] = arrays[k]
        hist = meta.get("history", [])
        if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
            raise bad("history must be a list of records")
        self.history = hist
        info = meta.get("info", {})
        if not isinstance(info, dict):
            raise bad("info must be an object")
        self.info = info
        st = meta.get("train")
        if st is not None:
            self._train = _check_train_state(st, arrays, self._flat.size, (V, H), dt, bad)
            self._opt = {k: np.ascontiguousarray(arrays[k]) for k in
                         _OPT_ARRAYS[st["config"]["optimizer"]]}
        return self

    # -- other frameworks (fastrnn.export) ---------------------------------------------------
    def to_torch(self):
        """This model as a ready ``torch.nn.Module`` (needs PyTorch).

        A :class:`fastrnn.export.TorchCharLM` (one-hot ids -> ``nn.RNN``/``nn.GRU``/
        ``nn.LSTM`` -> ``nn.Linear``, keys ``rnn.*`` and ``head.*``) holding a copy of
        the parameters in the model's dtype; ``forward(ids, state=None)`` returns
        ``(logits, state)`` as :func:`fastrnn.forward` does.
        """
        from . import export
        with self._param_lock:
            params = {k: v.copy() for k, v in self.params.items()}
        return export.to_torch_module(params, cell=getattr(self, "cell", "rnn"),
                                      nonlinearity=self.nonlinearity)

    @classmethod
    def from_torch(cls, module, vocab, *, cell: str | None = None,
                   nonlinearity: str | None = None, dtype=None) -> "CharLM":
        """A model holding a PyTorch char-LM's weights.

        ``module``: a ``torch.nn.Module`` with one ``nn.RNN``/``nn.GRU``/``nn.LSTM``
        (its cell and nonlinearity are read from it), an ``nn.Linear`` head and
        optionally an ``nn.Embedding`` (folded in exactly), or its state dict (then
        pass ``cell`` and ``nonlinearity``); the accepted key names are listed in
        :mod:`fastrnn.export`. ``vocab``: a :class:`Vocab`, or the tokens in the
        module's id order (a list, or a str of the characters). ``dtype``: None keeps
        float64 weights as float64, anything else becomes float32.
        """
        from . import export
        return export.charlm_from_torch(cls, module, vocab, cell=cell,
                                        nonlinearity=nonlinearity, dtype=dtype)

    def export_onnx(self, path: str | os.PathLike, *, opset: int | None = None) -> Path:
        """Write the model as a standard ONNX file for ONNX Runtime (needs ``onnx``).

        ``opset`` defaults to :data:`fastrnn.export.DEFAULT_OPSET` (17). A float64
        model is exported as float32. Inputs ``ids`` (B, T) int64 and ``h0``
        (L, B, H) float32 (``c0`` too for LSTM), outputs ``logits`` (B, T, V) and
        ``hT`` (``cT``); the vocabulary is in the metadata (``fastrnn.vocab``). See
        :func:`fastrnn.export.export_onnx`.
        """
        from . import export
        with self._param_lock:
            params = {k: v.copy() for k, v in self.params.items()}
        return export.export_onnx(
            params, self.vocab.tokens, path, cell=getattr(self, "cell", "rnn"),
            nonlinearity=self.nonlinearity, unk=self.vocab.unk,
            opset=export.DEFAULT_OPSET if opset is None else opset)


def _check_train_state(st, arrays, P, VH, dt, bad) -> dict:
    """Validate the JSON training state and its arrays; return the state with h_carry."""
    if not isinstance(st, dict):
        raise bad("training state is not an object")
    cfg = st.get("config")
    if not isinstance(cfg, dict):
        raise bad("training state has no config")
    ints = {"epoch": st.get("epoch"), "batch": st.get("batch"), "step": st.get("step"),
            "tokens": st.get("tokens"), "config.batch_size": cfg.get("batch_size"),
            "config.num_steps": cfg.get("num_steps"), "config.num_threads": cfg.get("num_threads")}
    for name, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(f"training state {name} must be a non-negative integer, got {v!r}")
    for name in ("loss_sum", "seconds"):
        if not isinstance(st.get(name), (int, float)) or isinstance(st.get(name), bool):
            raise bad(f"training state {name} must be a number")
    if cfg.get("optimizer") not in OPTIMIZERS:
        raise bad(f"unknown optimizer {cfg.get('optimizer')!r}")
    if cfg.get("sampling") not in SAMPLINGS:
        raise bad(f"unknown sampling {cfg.get('sampling')!r}")
    for name in _OPT_ARRAYS[cfg["optimizer"]]:
        a = arrays.get(name)
        if a is None or a.shape != (P,) or a.dtype != dt or not np.isfinite(a).all():
            raise bad(f"optimizer state {name!r} is missing or not a finite ({P},) {dt} array")
    rng = st.get("epoch_rng")
    try:
        if not isinstance(rng, dict) or rng.get("bit_generator") != "PCG64":
            raise ValueError("not a PCG64 state")
        np.random.PCG64().state = rng
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise bad(f"invalid random-number state ({exc})") from None
    st = dict(st)
    h = arrays.get("h_carry")
    if h is not None:
        if h.shape != (cfg["batch_size"], VH[1]) or h.dtype != dt or not np.isfinite(h).all():
            raise bad(f"carried hidden state has shape {h.shape}, expected "
                      f"({cfg['batch_size']}, {VH[1]})")
        h = np.ascontiguousarray(h)
    st["h_carry"] = h
    return st
