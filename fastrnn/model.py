"""Character-level recurrent language models (d2l.ai, "Recurrent Neural Networks").

:class:`CharLM` wraps the functional API (:func:`fastrnn.loss_and_grad`,
:func:`fastrnn.forward`) into the model the d2l chapter trains: it owns a
:class:`~fastrnn.vocab.Vocab`, its configuration (:class:`fastrnn.ModelConfig`: cell,
layers, dropout, sizes, dtype) and the parameters; it measures perplexity
(:meth:`CharLM.perplexity`), generates text (:meth:`CharLM.generate`,
:meth:`CharLM.stream`) and saves itself safely (:meth:`CharLM.save`,
:meth:`CharLM.load`). Training (:meth:`CharLM.fit`) is :class:`fastrnn.train.Trainer`'s.

Memory layout (as in llm.c): all parameters live in ONE contiguous flat buffer
and ``params`` holds named views into it; the gradients live in a second flat
buffer of the same layout, filled in place by ``loss_and_grad(out=...)``. The
optimizer (compiled, :mod:`fastrnn._lm`) then updates the whole flat buffer
in one pass, and its state (Adagrad's squared-gradient sums, Adam's moments)
is a flat buffer of the same length. The layout is :func:`fastrnn.params.layout`;
for the chapter's model (Elman cell, one layer)::

    flat[offset : offset + size]   W_xh (V, H)   input weights (one row per token)
                                   W_hh (H, H)   recurrent weights
                                   b_h  (H,)     hidden bias
                                   W_hq (H, V)   output weights
                                   b_q  (V,)     output bias

A cell with G gates has ``W_xh (V, G*H)``, ``W_hh (H, G*H)``, ``b_h (G*H,)`` (GRU also
``b_hn (H,)``); layer k >= 1 follows with the same names suffixed ``_l{k}`` and
``W_xh_l{k} (H, G*H)``; the head ``W_hq``, ``b_q`` comes last.
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _core, checkpoint as _ckpt, datasets as _ds, params as _params
from ._core import blas_single_thread, init_params, resolve_num_threads
from ._version import __version__
from .config import (OPTIMIZERS, SAMPLINGS, TRAIN_FIELDS, ModelConfig, TrainConfig,
                     _float, _pos_int, _seed64)
from .train import optim as _optim
from .train.state import TrainState
from .train.trainer import Trainer, TrainingDiverged, TrainingInterrupted
from .vocab import Vocab

try:
    from . import _lm
except ImportError as exc:  # pragma: no cover - only in broken installs
    _lm = None
    _LM_IMPORT_ERROR = exc

__all__ = ["CharLM", "TrainingDiverged", "TrainingInterrupted", "OPTIMIZERS", "SAMPLINGS"]

_EVAL_CHUNK = 1024         # time steps per forward call when measuring perplexity


# ---------------------------------------------------------------------------
# helpers

def _need_lm():
    if _lm is None:  # pragma: no cover
        raise RuntimeError(f"fastrnn's compiled module fastrnn._lm is unavailable "
                           f"({_LM_IMPORT_ERROR}); reinstall fastrnn with a C compiler")
    return _lm


def _model_layout(config: ModelConfig) -> list[tuple[str, tuple[int, ...], int]]:
    """The flat-buffer layout of a char-LM: token ids in (D = V), V logits out."""
    V = config.vocab_size
    return _params.layout(config.cell, V, config.hidden_size, V, config.num_layers)


class _GenState:
    """One generation in progress (its sampler, state and the ids still to feed)."""

    def __init__(self, **kw):
        self.state = None                 # the stack's state (step loop)
        self.__dict__.update(kw)


def _sample(o: np.ndarray, g: _GenState, u: np.ndarray) -> int:
    """Draw an id from logits ``o`` (V,) as the compiled samplers do (``_lm`` and
    ``csrc/_sampling.pxd``, operation for operation): the first maximum when greedy;
    else ``softmax(o / T)`` over the logits >= the top_k-th largest, then (top_p < 1)
    over the nucleus: the fewest most likely of those whose probabilities reach top_p,
    every id as likely as the least likely one kept kept too; one uniform from the
    xoshiro256** state ``g.rng`` per draw."""
    best = int(np.argmax(o))
    if g.greedy:
        return best
    V = o.shape[0]
    thresh = np.partition(o, V - g.top_k)[V - g.top_k] if 0 < g.top_k < V else o.min()
    keep = np.flatnonzero(o >= thresh)
    ex = np.exp((o[keep].astype(np.float64) - float(o[best])) * (1.0 / g.temperature))
    if g.top_p is not None and g.top_p < 1:
        total = float(np.cumsum(ex)[-1])                  # sequential, as the C loop
        srt = np.sort(ex)[::-1]
        reach = np.flatnonzero(np.cumsum(srt) >= g.top_p * total)
        cut = srt[reach[0]] if len(reach) else srt[-1]
        sel = ex >= cut
        keep, ex = keep[sel], ex[sel]
    acc = np.cumsum(ex)                                  # sequential, as the C loop
    g.lm.rng_uniform(g.rng, u)
    i = int(np.searchsorted(acc, u[0] * acc[-1], side="right"))
    return int(keep[min(i, len(keep) - 1)])             # the last absorbs rounding


def _mean_ce(logits: np.ndarray, Y: np.ndarray) -> tuple[float, int]:
    """(summed cross-entropy, count) of logits (..., V) against integer targets (...)."""
    o = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    y = Y.reshape(-1)
    m = o.max(axis=1)
    lse = m + np.log(np.exp(o - m[:, None]).sum(axis=1))
    return float((lse - o[np.arange(len(y)), y]).sum()), len(y)


def _share(rows, n: int, tail: bool) -> tuple[int, int, bool]:
    """``(r0, r1, takes_tail)``: the full rows ``r0:r1`` of ``n`` that ``rows`` (a
    ``dist.rows``; None: all) gives this process, and whether it also evaluates the
    last, shorter row (counted as row ``n`` when ``tail``)."""
    total = n + (1 if tail else 0)
    r0, r1 = (0, total) if rows is None else rows(total)
    return min(r0, n), min(r1, n), tail and r0 <= n < r1


# ---------------------------------------------------------------------------
# the model

class CharLM:
    """A character-level recurrent language model: the d2l chapter's models, compiled.

    Parameters
    ----------
    vocab : Vocab or str
        The vocabulary; a str builds ``Vocab(text)`` from it.
    hidden_size : int, default 256
        H, the number of hidden units of every layer.
    cell : {"rnn", "gru", "lstm"}, default "rnn"
        The Elman cell of the chapter, or PyTorch's GRU and LSTM (gates as column
        blocks of ``W_xh``, ``W_hh``, ``b_h``: see :mod:`fastrnn.params`).
    num_layers : int, default 1
        Stacked layers; layer k >= 1 reads the hidden states of layer k - 1.
    dropout : float in [0, 1), default 0
        Inverted dropout on the output of every layer but the top one, during
        :meth:`fit` only (with one layer it does nothing, and warns).
    nonlinearity : {"tanh", "relu"}
        The Elman cell's (other cells take only "tanh").
    dtype : {"float32", "float64"}
    seed : int, optional
        Seed of the parameter initialisation.
    init : {"d2l", "uniform"}, optional
        Initialisation scheme (see :func:`fastrnn.init_params`); ``"d2l"`` draws
        weights from Normal(0, 0.01^2) with zero biases, as d2l does, and is the
        default for the Elman cell with one layer; ``"uniform"`` (+-1/sqrt(H),
        PyTorch's) is the default otherwise.
    forget_bias : float, default 1.0
        LSTM only: the initial forget-gate bias (0 turns it off).

    Attributes
    ----------
    vocab : Vocab
    info : dict
        Free JSON-serialisable metadata saved with the model (the ``fastrnn``
        command records the corpus and preprocessing there).
    params : dict of ndarray
        Named views into the flat parameter buffer (writing to them changes the
        model), in the order of :func:`fastrnn.params.layout`: for the Elman cell
        with one layer ``W_xh (V, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``,
        ``b_q (V,)``; a cell with G gates has ``W_xh (V, G*H)``, ``W_hh (H, G*H)``,
        ``b_h (G*H,)`` (GRU also ``b_hn (H,)``), layer k >= 1 the same names with
        the suffix ``_l{k}``.
    history : list of dict
        One record per completed training epoch (see :meth:`fit`).
    eval_history : list of dict
        The validation evaluations every ``eval_interval`` steps (see :meth:`fit`).

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

    def __init__(self, vocab: Vocab | str, hidden_size: int = 256, *, cell: str = "rnn",
                 num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh",
                 dtype: str | np.dtype = "float32", seed: int | None = None,
                 init: str | None = None, forget_bias: float = 1.0) -> None:
        if isinstance(vocab, str):
            if not vocab:
                raise ValueError("vocab text is empty")
            vocab = Vocab(vocab)
        if not isinstance(vocab, Vocab):
            raise TypeError(f"vocab must be a fastrnn.Vocab or a str, got {type(vocab).__name__}")
        if len(vocab) < 1:
            raise ValueError("vocab is empty")
        cfg = ModelConfig(vocab_size=len(vocab), hidden_size=hidden_size, cell=cell,
                          num_layers=num_layers, dropout=dropout, nonlinearity=nonlinearity,
                          dtype=dtype)
        if cfg.dropout > 0 and cfg.num_layers == 1:
            warnings.warn(f"dropout adds dropout after all but the last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={cfg.dropout} and num_layers=1", UserWarning, stacklevel=2)
        self._setup(vocab, cfg)
        p0 = init_params(cfg.vocab_size, cfg.hidden_size, cell=cfg.cell,
                         num_layers=cfg.num_layers, dtype=cfg.dtype, seed=seed, init=init,
                         forget_bias=forget_bias)
        for k, v in self.params.items():
            v[...] = p0[k]

    def _setup(self, vocab: Vocab, config: ModelConfig) -> None:
        if config.vocab_size != len(vocab):
            raise ValueError(f"vocab_size={config.vocab_size} but the vocabulary has "
                             f"{len(vocab)} tokens")
        self.vocab = vocab
        self._config = config
        self._H, self._V = config.hidden_size, config.vocab_size
        self._nonlinearity = config.nonlinearity
        self._dtype = np.dtype(config.dtype)
        lay = self._layout()
        w_hh = next(off for name, _, off in lay if name == "W_hh")
        # ALL parameters, contiguous; W_hh (after W_xh) starts a 64-byte cache line
        # for the one-row products of generation and B = 1 training
        self._flat = _core.empty_aligned(_params.flat_size(lay), self._dtype, at=w_hh)
        self._flat[...] = 0
        self.params = self._views(self._flat)               # named views into _flat
        self.history: list[dict] = []
        self.eval_history: list[dict] = []                 # evaluations every N steps
        self.info: dict[str, Any] = {}                     # free JSON metadata, saved too
        self._opt: dict[str, np.ndarray] = {}              # optimizer state, flat buffers
        self._train: TrainState | None = None              # resumable training state
        self._fit_lock = threading.Lock()                  # one fit at a time per model
        self._param_lock = threading.RLock()               # updates vs. readers of _flat

    def _layout(self) -> list[tuple[str, tuple[int, ...], int]]:
        """(name, shape, offset) of each parameter inside the flat buffer
        (:func:`fastrnn.params.layout`)."""
        return _model_layout(self._config)

    def _views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into a flat buffer of this model's layout (parameters, gradients)."""
        return _params.views(flat, self._layout())

    def _fn_kw(self) -> dict:
        """The keywords of fastrnn.forward / loss_and_grad that say which network this is
        (the number of layers is read from the parameter names)."""
        kw = {"nonlinearity": self._nonlinearity}
        if self._config.cell != "rnn":
            kw["cell"] = self._config.cell
        return kw

    # -- properties -------------------------------------------------------------
    @property
    def config(self) -> ModelConfig:
        """What this model is (cell, sizes, dtype): :class:`fastrnn.ModelConfig`.

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> CharLM("abc", 8, cell="gru", num_layers=2, dropout=0.1).config
        ModelConfig(vocab_size=4, hidden_size=8, cell='gru', num_layers=2, dropout=0.1, nonlinearity='tanh', dtype='float32')
        """
        return self._config

    @property
    def hidden_size(self) -> int:
        """H, the number of hidden units."""
        return self._H

    @property
    def vocab_size(self) -> int:
        """V, the number of tokens (input and output width)."""
        return self._V

    @property
    def cell(self) -> str:
        """The recurrent cell: "rnn", "gru" or "lstm".

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> CharLM("abc", 8, cell="lstm").cell
        'lstm'
        """
        return self._config.cell

    @property
    def num_layers(self) -> int:
        """L, the number of stacked recurrent layers.

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> CharLM("abc", 8, cell="gru", num_layers=2).num_layers
        2
        """
        return self._config.num_layers

    @property
    def dropout(self) -> float:
        """Dropout probability between layers (training only)."""
        return self._config.dropout

    @property
    def nonlinearity(self) -> str:
        """The Elman cell's nonlinearity, "tanh" or "relu" ("tanh" for gated cells).

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> CharLM("abc", 8, nonlinearity="relu").nonlinearity
        'relu'
        """
        return self._nonlinearity

    @property
    def dtype(self) -> np.dtype:
        """The dtype of every parameter, float32 or float64.

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> CharLM("abc", 8, dtype="float64").dtype
        dtype('float64')
        """
        return self._dtype

    @property
    def parameters(self) -> np.ndarray:
        """The flat parameter buffer (every entry of :attr:`params`), shape (P,)."""
        return self._flat

    @property
    def num_parameters(self) -> int:
        """P, the number of scalar parameters (the size of :attr:`parameters`).

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> lm = CharLM("abc", 8, cell="lstm")      # V = 4 with <unk>
        >>> lm.num_parameters == 4 * 32 + 8 * 32 + 32 + 8 * 4 + 4
        True
        """
        return self._flat.size

    @property
    def training_state(self) -> dict | None:
        """Where training stands, or None if never trained: ``config`` (the
        :class:`TrainConfig` as a dict), ``data`` (sha1 of the texts) and the counters
        ``epoch``, ``batch``, ``step``, ... (see :class:`fastrnn.train.TrainState`)."""
        return None if self._train is None else self._train.public()

    def __repr__(self) -> str:
        c = self._config
        return (f"CharLM(vocab_size={self._V}, hidden_size={self._H}, cell={c.cell!r}, "
                f"num_layers={c.num_layers}, dropout={c.dropout:g}, "
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
                   num_threads: int | None = None, block: int | None = None) -> float:
        """``exp(mean cross-entropy)`` of predicting each character from those before it.

        The state starts at zero and is carried through the text, so the first
        character is only context and the other ``n - 1`` are predicted.
        ``math.log`` of the result is the loss in nats per character.

        With ``block=256`` the text is cut into contiguous blocks instead, each
        predicted from a zero state (nanoGPT's validation loss): block ``k`` feeds
        ``ids[k*block : (k+1)*block]`` and predicts the next token of each, and a last
        shorter block covers the remainder; the result is ``exp`` of the mean over all
        ``n - 1`` predictions. An RNN carrying its state through the whole stream sees
        more context, so the streamed value is lower than the block value.

        Parameters
        ----------
        text : str or 1-D int array of token ids
            At least two tokens.
        batch_size : int, default 1
            Cut the text into this many contiguous streams evaluated in parallel
            (faster; each stream restarts from a zero state, so the value
            changes slightly). 1 gives the exact sequential value.
        num_threads : int, optional
        block : int, optional
            Evaluate contiguous blocks of this many tokens, each from a zero state
            (``batch_size`` is then ignored).

        Returns
        -------
        float
        """
        ids = self._ids(text, "text")
        bs = _pos_int("batch_size", batch_size)
        if len(ids) < 2:
            raise ValueError(f"text must have at least 2 tokens to measure perplexity, "
                             f"got {len(ids)}")
        if block is not None:
            total, count = self._block_ce(ids, _pos_int("block", block), num_threads)
        else:
            total, count = self._stream_ce(ids, bs, num_threads)
        return math.exp(total / count)

    # The three measures below are sums over independent rows (blocks, streams,
    # windows). ``rows`` (a data-parallel run's ``dist.rows``: ``n -> (r0, r1)``) picks
    # this process's contiguous share of them, in the same order as one process; the
    # sum over every process's share is the total of one process up to summation order.
    # A last, shorter row (the remainder of the text) counts as the last row.

    def _block_ce(self, ids: np.ndarray, block: int, num_threads,
                  blocks: int | None = None, rows=None) -> tuple[float, int]:
        """Summed CE and count over contiguous blocks of ids, each from a zero state; with
        ``blocks``, only that many full blocks, evenly spaced (the remainder left out);
        with ``rows``, only this process's share of the blocks."""
        n = len(ids) - 1                       # predictions
        nb = n // block
        X = ids[: nb * block].reshape(nb, block)
        Y = ids[1: nb * block + 1].reshape(nb, block)
        tail = n - nb * block
        if blocks is not None and blocks < nb:
            sel = np.unique(np.linspace(0, nb - 1, blocks).round().astype(np.int64))
            X, Y, tail = X[sel], Y[sel], 0
        r0, r1, mine = _share(rows, len(X), bool(tail))
        rows_per_call = max(1, 65536 // block)
        parts = [(X[r: min(r + rows_per_call, r1)], Y[r: min(r + rows_per_call, r1)])
                 for r in range(r0, r1, rows_per_call)]
        if mine:
            parts.append((ids[nb * block: n][None, :], ids[nb * block + 1:][None, :]))
        total, count = 0.0, 0
        with blas_single_thread(), self._param_lock:
            for x, y in parts:
                logits, _ = _core.forward(self.params, np.ascontiguousarray(x),
                                          num_threads=num_threads, **self._fn_kw())
                s, c = _mean_ce(logits, y)
                total, count = total + s, count + c
        return total, count

    def _stream_ce(self, ids: np.ndarray, bs: int, num_threads,
                   rows=None) -> tuple[float, int]:
        """Summed CE and count over ids, cut into bs streams (plus a remainder stream),
        the state carried through each; with ``rows``, only this process's streams."""
        n = len(ids) - 1                       # predictions
        bs = min(bs, n)
        L = n // bs
        r0, r1, mine = _share(rows, bs, n - bs * L > 0)
        parts = []
        if r1 > r0:
            parts.append((ids[r0 * L: r1 * L].reshape(r1 - r0, L),
                          ids[r0 * L + 1: r1 * L + 1].reshape(r1 - r0, L)))
        if mine:
            parts.append((ids[bs * L: n][None, :], ids[bs * L + 1:][None, :]))
        total, count = 0.0, 0
        with blas_single_thread(), self._param_lock:
            for X, Y in parts:
                h = None
                for t0 in range(0, X.shape[1], _EVAL_CHUNK):
                    x, y = X[:, t0: t0 + _EVAL_CHUNK], Y[:, t0: t0 + _EVAL_CHUNK]
                    logits, h = _core.forward(self.params, x, h, num_threads=num_threads,
                                              **self._fn_kw())
                    s, c = _mean_ce(logits, y)
                    total, count = total + s, count + c
        return total, count

    def _windows_ce(self, ids: np.ndarray, num_steps: int, bs: int,
                    num_threads, rows=None) -> tuple[float, int]:
        """Summed CE over every stride-1 window of ids, each from a zero state, in
        batches of ``bs`` windows; with ``rows`` (a ``dist.rows``), only this process's
        share of the windows."""
        return self._batches_ce(self._window_batches(ids, num_steps, bs, rows), num_threads)

    def _fused_ce(self) -> bool:
        """Evaluation runs the Elman kernel's fused softmax cross-entropy (cell "rnn",
        one layer, compiled kernels) rather than forward + :func:`_mean_ce`."""
        return (self._config.cell == "rnn" and self._config.num_layers == 1
                and _core._rnn is not None)

    def _window_batches(self, ids: np.ndarray, num_steps: int, bs: int,
                        rows=None) -> list[tuple]:
        """The stride-1 windows of ``ids`` (checked ids of this model, e.g. from
        :meth:`_ids`; with ``rows``, a ``dist.rows``, this process's share) cut into batches of
        ``bs`` windows once, in the layout :meth:`_batches_ce` reads, so that an
        evaluation repeated every epoch neither re-slices nor re-checks them.

        Fused models (:meth:`_fused_ce`) get ``(X_ids (T, b), Y (T*b,))``, the int32
        arrays of the kernels' step-major layout; others ``(X (b, T), Y (b, T))``."""
        X, Y = _ds.windows(ids, num_steps)
        r0, r1, _ = _share(rows, len(X), False)
        fused = self._fused_ce()
        out = []
        for i in range(r0, r1, bs):
            j = min(i + bs, r1)
            if fused:
                out.append((np.ascontiguousarray(X[i:j].T, np.int32),
                            np.ascontiguousarray(Y[i:j].T, np.int32).reshape(-1)))
            else:
                out.append((np.ascontiguousarray(X[i:j]), Y[i:j]))
        return out

    def _batches_ce(self, batches: list[tuple], num_threads) -> tuple[float, int]:
        """(summed CE, count) over batches of :meth:`_window_batches`, each window from
        a zero state. The parameters are checked (shapes, finite values) once per call."""
        total, count = 0.0, 0
        with blas_single_thread(), self._param_lock:
            if batches and self._fused_ce():
                nt = resolve_num_threads(num_threads)
                p, _ = _core._check_params(self.params, "rnn")
                for X_ids, Yt in batches:
                    total += _core._rnn_ce_sum(p, X_ids, Yt, self._nonlinearity, nt)
                    count += Yt.size
                return total, count
            for X, Y in batches:
                logits, _ = _core.forward(self.params, X, num_threads=num_threads,
                                          **self._fn_kw())
                s, c = _mean_ce(logits, Y)
                total, count = total + s, count + c
        return total, count

    # -- generation -------------------------------------------------------------------
    def _sampler(self, top_p) -> str:
        """Which loop generates: ``"stack"`` (``fastrnn._layers.generate_stack``, the
        compiled loop of every cell and depth) or ``"steps"`` (one
        :func:`fastrnn.forward` call per character, the compiled sampler's draws in
        NumPy; only when the compiled layer loops are unavailable). Both give the same
        ids for the same seed."""
        layers = getattr(_core, "_layers", None)
        return "stack" if hasattr(layers, "generate_stack") else "steps"

    def _gen_setup(self, prefix, length, temperature, top_k, top_p, greedy, seed, num_threads):
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
        if top_p is not None:
            top_p = _float("top_p", top_p)
            if not 0 < top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        g = _GenState(lm=lm, nt=nt, temperature=temperature, top_k=k, top_p=top_p,
                      greedy=greedy, feed=self.vocab.encode(prefix))
        g.rng = np.zeros(4, np.uint64)
        lm.rng_seed(np.uint64(_seed64(seed)), g.rng)
        g.kind = self._sampler(top_p)
        c = self._config
        if g.kind == "stack":
            g.h = np.zeros((c.num_layers, self._H), self._dtype)
            g.c = np.zeros((c.num_layers, self._H), self._dtype) if c.cell == "lstm" else None
            lay = _core._layers
            g.cell = {"rnn": lay.CELL_RNN, "gru": lay.CELL_GRU, "lstm": lay.CELL_LSTM}[c.cell]
            g.nonlin = {"tanh": lay.NONLIN_TANH, "relu": lay.NONLIN_RELU}[c.nonlinearity]
        if g.kind != "steps":
            with self._param_lock:
                g.p = _core.check_params(self.params, cell=c.cell)   # finite, contiguous
        return g

    def _next_ids(self, g: "_GenState", n: int) -> np.ndarray:
        """The next ``n`` ids of a generation; the last one is fed at the next call."""
        out = np.empty(n, np.int32)
        if not n:
            return out
        p = getattr(g, "p", None)
        if g.kind == "stack":
            sfx = ["" if k == 0 else f"_l{k}" for k in range(self._config.num_layers)]
            layers = [(p["W_xh" + s], p["W_hh" + s], p["b_h" + s], p.get("b_hn" + s))
                      for s in sfx]
            with blas_single_thread(), self._param_lock:
                _core._layers.generate_stack(
                    g.cell, g.nonlin, layers, p["W_hq"], p["b_q"], g.feed, out, g.h, g.c,
                    g.rng, g.temperature, g.top_k, 1.0 if g.top_p is None else g.top_p,
                    g.greedy, g.nt)
        else:
            # one forward call per character over the whole stack, the compiled
            # samplers' draws in NumPy
            kw = self._fn_kw()
            u = np.empty(1, np.float64)
            with blas_single_thread(), self._param_lock:
                for i in range(n):
                    logits, g.state = _core.forward(self.params, g.feed[None, :], g.state,
                                                    num_threads=g.nt, **kw)
                    out[i] = _sample(logits[0, -1], g, u)
                    g.feed = out[i: i + 1]
        g.feed = out[-1:].copy()               # the last draw is fed at the next call
        return out

    def generate_ids(self, prefix: str, length: int, *, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None,
                     greedy: bool = False, seed: int | None = None,
                     num_threads: int | None = None) -> np.ndarray:
        """Like :meth:`generate` but return the ``length`` new token ids (int32).

        Parameters
        ----------
        prefix, length, temperature, top_k, top_p, greedy, seed, num_threads
            As in :meth:`generate`.

        Returns
        -------
        ndarray of int32, shape (length,)
            The generated ids (the prefix is not included); ``vocab.decode`` turns
            them into text.

        Raises
        ------
        ValueError, TypeError
            As :meth:`generate`.

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> lm = CharLM("hello world", 16, cell="gru", seed=0)
        >>> ids = lm.generate_ids("he", 5, seed=1)
        >>> ids.shape, ids.dtype.name
        ((5,), 'int32')
        >>> lm.generate("he", 5, seed=1) == "he" + lm.vocab.decode(ids)
        True
        """
        length = _pos_int("length", length, minimum=0)   # None is valid for stream() only
        g = self._gen_setup(prefix, length, temperature, top_k, top_p, greedy, seed,
                            num_threads)
        return self._next_ids(g, length)

    def generate(self, prefix: str, length: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
                 seed: int | None = None, num_threads: int | None = None) -> str:
        """Continue ``prefix`` by ``length`` characters (d2l's ``predict``).

        The prefix is fed through the network to warm up the hidden state, then
        each character is drawn from ``softmax(O_t / temperature)`` and fed back.
        The whole loop runs in compiled code, for every cell and depth (with the
        Elman cell and one layer, the loop of fastrnn 0.1: the same text).

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
        top_p : float in (0, 1], optional
            Nucleus sampling: sample only among the most likely characters whose
            probabilities (after ``temperature`` and ``top_k``) add up to at least
            ``top_p`` (at least one character is kept).
        greedy : bool, default False
            Take the most likely character each step (d2l's ``argmax``);
            ``temperature``, ``top_k``, ``top_p`` and ``seed`` are then irrelevant.
        seed : int, optional
            Seed of the sampler (xoshiro256**); the same seed gives the same text.
            None draws a fresh seed from the OS.
        num_threads : int, optional
            OpenMP threads (default: all available cores). With two or more, each
            step's hidden units are split across two threads when a step reads
            enough weights (G*H*H >= 32,768 for G gates: the Elman cell from
            H = 182, GRU from H = 105, LSTM from H = 91); the text is the same for
            every thread count.

        Returns
        -------
        str
            ``prefix`` followed by the generated characters (as d2l's ``predict``).

        Raises
        ------
        ValueError, TypeError
            An empty ``prefix``, a negative ``length``, ``temperature <= 0``,
            ``top_k < 1``, ``top_p`` outside (0, 1], a bad ``seed`` or ``num_threads``.

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> lm = CharLM("hello world", 16, cell="lstm", num_layers=2, seed=0)
        >>> text = lm.generate("he", 10, top_p=0.9, seed=1)
        >>> text.startswith("he")
        True
        >>> text == lm.generate("he", 10, top_p=0.9, seed=1)     # same seed, same text
        True
        """
        ids = self.generate_ids(prefix, length, temperature=temperature, top_k=top_k,
                                top_p=top_p, greedy=greedy, seed=seed, num_threads=num_threads)
        return prefix + self.vocab.decode(ids)

    def stream(self, prefix: str, length: int | None = None, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               seed: int | None = None, chunk_size: int = 16,
               num_threads: int | None = None) -> Iterator[str]:
        """Yield generated characters one at a time (the prefix is not repeated).

        Same arguments and same characters as :meth:`generate` with the same
        ``seed``; ``length=None`` streams forever. Characters are computed in
        compiled chunks of ``chunk_size``, so the caller can print them as they come.

        Parameters
        ----------
        prefix : str
            As in :meth:`generate`.
        length : int, optional
            Number of characters to yield; None: without end.
        temperature, top_k, top_p, greedy, seed : optional
            As in :meth:`generate`.
        chunk_size : int, default 16
            Characters computed per compiled call.
        num_threads : int, optional
            As in :meth:`generate`.

        Returns
        -------
        iterator of str
            The generated characters, one at a time.

        Raises
        ------
        ValueError, TypeError
            As :meth:`generate`, when ``stream`` is called (not at the first ``next``).

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> lm = CharLM("hello world", 16, seed=0)
        >>> "".join(lm.stream("he", 20, seed=3)) == lm.generate("he", 20, seed=3)[2:]
        True
        """
        cs = _pos_int("chunk_size", chunk_size)
        g = self._gen_setup(prefix, length, temperature, top_k, top_p, greedy, seed,
                            num_threads)
        return self._stream(g, length, cs)    # arguments checked now, not at next()

    def _stream(self, g, length, cs) -> Iterator[str]:
        tokens = self.vocab.tokens
        done = 0
        while length is None or done < length:
            n = cs if length is None else min(cs, length - done)
            out = self._next_ids(g, n)
            done += n
            for i in out.tolist():
                yield tokens[i]

    # -- training -----------------------------------------------------------------------
    def fit(self, text: str | np.ndarray, *, val_text: str | np.ndarray | None = None,
            config: TrainConfig | None = None, resume: bool | str | os.PathLike = False,
            callbacks: Sequence[Callable[["CharLM", dict], Any]] | None = None,
            distributed: bool = False, comm: Any = None,
            **options: Any) -> list[dict]:
        """Train with truncated backpropagation through time.

        The options are the fields of :class:`fastrnn.TrainConfig`, given either as
        keywords (``fit(text, epochs=5, lr=0.01)``) or as one ``config``; keywords
        given beside a ``config`` replace its fields. The loop itself is
        :class:`fastrnn.train.Trainer`.

        Parameters
        ----------
        text : str or 1-D int array of token ids
            Training corpus.
        val_text : str or 1-D int array, optional
            Validation corpus, evaluated after each epoch.
        config : TrainConfig, optional
            All the options below in one object (default ``TrainConfig()``).
        epochs : int, default 10
            Total number of epochs; when resuming, training continues until this
            many epochs are complete.
        batch_size, num_steps : int
            Minibatch shape ``(batch_size, num_steps)``; ``num_steps`` is the BPTT
            truncation length.
        lr : float, default 1.0
            Learning rate (d2l uses 1 with SGD; try 0.002 to 0.01 with Adam,
            0.1 with Adagrad).
        optimizer : {"sgd", "adagrad", "adam", "adamw"}
            ``"sgd"``: ``p -= lr g`` (d2l). ``"adagrad"``: min-char-rnn's
            ``mem += g^2; p -= lr g / sqrt(mem + eps)``. ``"adam"``: Adam with
            bias correction (``betas``, ``eps``). ``"adamw"``: Adam with PyTorch's
            decoupled weight decay ``p -= lr * weight_decay * p`` on the weight
            matrices only (``weight_decay``, default 0.01).
        schedule, warmup_steps, min_lr, decay_factor, decay_after
            The learning rate per optimizer step: ``"constant"``, ``"step"``
            (char-rnn) or ``"cosine"`` (nanoGPT); see :class:`fastrnn.TrainConfig`.
        max_steps, time_budget
            Stop after that many optimizer steps / seconds.
        val_streams : int, default 1
            Sequential and random sampling's per-epoch validation cuts ``val_text``
            into this many contiguous streams, each from a zero state (a distributed
            run splits them among its ranks; see :class:`fastrnn.TrainConfig`).
        eval_interval, eval_block, eval_blocks, keep_best, patience
            Evaluate every ``eval_interval`` steps on ``val_text`` (mean loss over
            ``eval_block``-character blocks from a zero state; results in
            :attr:`eval_history`); ``keep_best`` saves the best parameters to
            ``<checkpoint stem>.best.npz``; ``patience`` stops early. ``fit`` ends
            holding the LAST parameters (load the ``.best.npz`` file for the best).
        on_spike : {"skip", "rollback", "stop"}, default "skip"
            What a finite minibatch loss above ``10 log V + 10`` nats does.
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
            Sequential and random validation is :meth:`perplexity` of ``val_text``
            with ``batch_size=val_streams`` (default 1: one carried stream).
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
            Seed of the minibatch order and offsets and of the dropout masks
            (ignored when resuming: the checkpoint's run continues).
        distributed : bool, default False
            Data-parallel training over MPI (``mpiexec -n N python script.py``; needs
            ``pip install "fastrnn[mpi]"``): every rank calls ``fit`` with the same
            arguments, computes its rows of each global minibatch and the gradients
            are summed by one allreduce per step, so the model equals one process's
            (up to summation order). Rank 0 alone shows progress, runs the callbacks
            and writes the checkpoint; call :meth:`save` on rank 0 only. Without it
            mpi4py is never imported. See :mod:`fastrnn.train.dist`.
        comm : mpi4py.MPI.Intracomm, optional
            The communicator of a distributed run (default ``MPI.COMM_WORLD``);
            giving one implies ``distributed=True``.
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
            excluded), ``wall_time`` (seconds for the epoch, validation included),
            ``lr`` (the last step's rate) and, once minibatches were skipped as
            loss spikes, ``skipped_steps`` (so far in the run). The evaluations every
            ``eval_interval`` steps are in :attr:`eval_history`: ``step``,
            ``epoch`` (fractional), ``train_loss`` (mean since the previous
            evaluation), ``val_loss`` (nats/char), ``val_ppl``, ``lr``,
            ``tokens_seen``, ``eval_seconds``, ``wall_time`` (seconds since the run
            started, over resumes) and ``best``.

        Raises
        ------
        TrainingDiverged
            If the loss or the gradient norm becomes NaN or infinite (always), or a
            minibatch loss exceeds ``10 log V + 10`` nats (far worse than
            guessing uniformly, ``log V``) with ``on_spike="stop"`` or more than
            ``max_spikes`` times in a row; the model keeps the last parameters
            that gave an acceptable loss (Adam's or Adagrad's in-memory state
            may include the failing step: for an exact continuation, resume
            from the last checkpoint).
        TrainingInterrupted
            On Ctrl-C (first press), after finishing the current minibatch and
            saving ``checkpoint``. A second Ctrl-C interrupts immediately.
        """
        if config is None:
            config = TrainConfig()
        elif not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a fastrnn.TrainConfig, got {type(config).__name__}")
        unknown = sorted(set(options) - set(TRAIN_FIELDS))
        if unknown:
            raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r} "
                            f"(the options are the fields of TrainConfig: "
                            f"{', '.join(TRAIN_FIELDS)})")
        if options:
            config = config.replace(**options)
        if not isinstance(distributed, (bool, np.bool_)):
            raise TypeError(f"distributed must be a bool, got {type(distributed).__name__}")
        from .train.dist import make_dist
        dist = make_dist(bool(distributed), comm)
        return Trainer(self, config, callbacks=callbacks, dist=dist).fit(
            text, val_text, resume=resume)

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
            arrays = {k: v.copy() for k, v in self.params.items()}
            opt = {k: a.copy() for k, a in self._opt.items()}
            st = self._train
            train_meta = None if st is None else st.to_meta()
            carry = {} if st is None else st.carry_arrays()
        meta: dict[str, Any] = {
            "fastrnn_version": __version__,
            "model": self._config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "history": self.history,
            "eval_history": self.eval_history,
            "info": self.info,
            "train": None,
            "optional_arrays": [],
        }
        if training_state and train_meta is not None:
            meta["train"] = train_meta
            arrays.update(opt)
            arrays.update(carry)
        return _ckpt.write(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharLM":
        """Read a model written by :meth:`save` (never unpickles anything).

        Files of every format version this fastrnn knows load (version 1: fastrnn
        0.1.0), see :mod:`fastrnn.checkpoint`.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save` (or a checkpoint of :meth:`fit`).

        Returns
        -------
        CharLM
            The model with its vocabulary, configuration, history, ``info`` and, when
            the file has one, the training state (so ``fit(..., resume=True)``
            continues).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        fastrnn.checkpoint.CheckpointError
            If the file is corrupted, truncated, of a newer format version, or
            inconsistent (shapes, dtypes, vocabulary size, non-finite values).

        Examples
        --------
        >>> from fastrnn import CharLM
        >>> lm = CharLM("hello world", 16, cell="gru", seed=0)
        >>> path = lm.save("model.npz")
        >>> CharLM.load(path).generate("he", 8, seed=2) == lm.generate("he", 8, seed=2)
        True
        """
        arrays, meta = _ckpt.read(path)
        meta = _ckpt.upgrade(meta)

        def bad(why):
            return _ckpt.CheckpointError(f"{path}: not a valid fastrnn model file: {why}")

        m = meta.get("model")
        if not isinstance(m, dict):
            raise bad("metadata has no 'model' object")
        try:
            vocab = Vocab.from_dict(meta.get("vocab"))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise bad(f"invalid vocabulary ({exc})") from None
        try:
            config = ModelConfig.from_dict(m)
        except (TypeError, ValueError) as exc:
            raise bad(f"model configuration: {exc}") from None
        H, V = config.hidden_size, config.vocab_size
        if V != len(vocab):
            raise bad(f"vocabulary mismatch: the vocabulary has {len(vocab)} tokens but the "
                      f"model was built for {V}")
        dt = np.dtype(config.dtype)
        optional = meta.get("optional_arrays", [])
        if not isinstance(optional, list) or not all(isinstance(k, str) for k in optional):
            raise bad("optional_arrays must be a list of names")
        layout = _model_layout(config)
        known = ({k for k, _, _ in layout} | _optim.all_state_names()
                 | {"h_carry", "c_carry"})
        extra = sorted(set(arrays) - known - set(optional))
        if extra:
            raise bad(f"unexpected arrays {extra}")
        for k, shape, _ in layout:                 # check everything before allocating
            a = arrays.get(k)
            if a is None:
                raise bad(f"parameter {k!r} is missing")
            if a.shape != shape or a.dtype != dt:
                raise bad(f"parameter {k!r} has shape {a.shape} and dtype {a.dtype}, "
                          f"expected {shape} {dt} (V={V}, H={H})")
            if not np.isfinite(a).all():
                raise bad(f"parameter {k!r} contains NaN or inf")
        hist = meta.get("history", [])
        if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
            raise bad("history must be a list of records")
        info = meta.get("info", {})
        if not isinstance(info, dict):
            raise bad("info must be an object")
        P = _params.flat_size(layout)
        st = meta.get("train")
        if st is not None:
            st = TrainState.from_meta(st, arrays, size=P, hidden_size=H, dtype=dt, bad=bad,
                                      cell=config.cell, num_layers=config.num_layers)
        self = cls.__new__(cls)
        self._setup(vocab, config)
        for k, _, _ in layout:
            self.params[k][...] = arrays[k]
        self.history = hist
        ev = meta.get("eval_history", [])
        if not isinstance(ev, list) or not all(isinstance(r, dict) for r in ev):
            raise bad("eval_history must be a list of records")
        self.eval_history = ev
        self.info = info
        if st is not None:
            self._train = st
            self._opt = {k: np.ascontiguousarray(arrays[k])
                         for k in _optim.state_names(st.config.optimizer)}
        return self

    # -- other frameworks (fastrnn.export) ---------------------------------------------------
    def to_torch(self):
        """This model as a ready ``torch.nn.Module`` (needs PyTorch).

        A :class:`fastrnn.export.TorchCharLM` (one-hot ids -> ``nn.RNN``/``nn.GRU``/
        ``nn.LSTM`` -> ``nn.Linear``, keys ``rnn.*`` and ``head.*``) holding a copy of
        the parameters in the model's dtype; ``forward(ids, state=None)`` returns
        ``(logits, state)`` as :func:`fastrnn.forward` does.

        Returns
        -------
        torch.nn.Module
            The module (see :func:`fastrnn.export.to_torch_module`).

        Raises
        ------
        ImportError
            PyTorch is not installed (``pip install "fastrnn[torch]"``).

        Examples
        --------
        >>> import torch                                        # doctest: +SKIP
        >>> lm = fastrnn.CharLM("hello world", 16, cell="lstm")  # doctest: +SKIP
        >>> module = lm.to_torch()                              # doctest: +SKIP
        >>> ids = torch.tensor([lm.vocab.encode("hello")])      # doctest: +SKIP
        >>> logits, (h, c) = module(ids)                        # doctest: +SKIP
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

        Parameters
        ----------
        module : torch.nn.Module or mapping
            The PyTorch model, or its state dict (tensors or NumPy arrays).
        vocab : Vocab, list of str or str
            The tokens in the module's id order.
        cell : {"rnn", "gru", "lstm"}, optional
            Needed with a state dict; read from a module.
        nonlinearity : {"tanh", "relu"}, optional
            The Elman cell's, as ``cell``.
        dtype : optional
            None keeps float64 weights as float64; anything else gives float32.

        Returns
        -------
        CharLM
            A new model with the module's weights (no training state).

        Raises
        ------
        ValueError
            A missing, extra or mis-shaped key, another cell's weights, a vocabulary of
            the wrong size, bidirectional layers, LSTM projections, NaN (see
            :func:`fastrnn.from_torch_state_dict`).
        ImportError
            A module was given and PyTorch is not installed.

        Examples
        --------
        >>> lm = fastrnn.CharLM("hello world", 16, cell="gru", seed=0)
        >>> sd = fastrnn.to_torch_state_dict(lm.params, cell="gru")   # NumPy arrays
        >>> back = fastrnn.CharLM.from_torch(sd, lm.vocab, cell="gru")
        >>> back.generate("he", 8, seed=1) == lm.generate("he", 8, seed=1)
        True
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

        Parameters
        ----------
        path : str or os.PathLike
            Where to write the ``.onnx`` file.
        opset : int, optional
            The ONNX opset (default 17).

        Returns
        -------
        pathlib.Path
            The written file.

        Raises
        ------
        ImportError
            ``onnx`` is not installed (``pip install "fastrnn[onnx]"``).
        ValueError
            A float64 value beyond float32's range, or an unsupported opset.

        Examples
        --------
        >>> lm = fastrnn.CharLM("hello world", 16, cell="lstm")     # doctest: +SKIP
        >>> lm.export_onnx("model.onnx")                            # doctest: +SKIP
        PosixPath('model.onnx')
        """
        from . import export
        with self._param_lock:
            params = {k: v.copy() for k, v in self.params.items()}
        return export.export_onnx(
            params, self.vocab.tokens, path, cell=getattr(self, "cell", "rnn"),
            nonlinearity=self.nonlinearity, unk=self.vocab.unk,
            opset=export.DEFAULT_OPSET if opset is None else opset)

