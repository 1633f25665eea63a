"""Validated Python entry points over the compiled kernels (fastrnn._rnn).

Every argument is checked here, before any C code touches memory; the kernels
themselves trust their inputs.
"""
from __future__ import annotations

import os
import math
import threading
import warnings
from contextlib import contextmanager, nullcontext
from typing import Mapping

import numpy as np

from . import reference

try:  # the compiled kernels; a broken build falls back to NumPy with a warning
    from . import _rnn
    _IMPORT_ERROR = None
except (ImportError, TypeError) as exc:  # TypeError: scipy's cython_blas signatures differ
    from ._compat import scipy_blas_mismatch_message
    if (_msg := scipy_blas_mismatch_message(exc)) is not None:
        raise ImportError(_msg) from exc
    _rnn = None
    _IMPORT_ERROR = exc
    warnings.warn(f"fastrnn: compiled kernels unavailable ({exc}); using the slow NumPy "
                  "reference. Reinstall with a C compiler to get the fast kernels.",
                  RuntimeWarning, stacklevel=2)

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hq", "b_q")
NONLINEARITIES = ("tanh", "relu")
_MAX_THREADS = 256


# ---------------------------------------------------------------------------
# threads

def openmp_enabled() -> bool:
    return _rnn is not None and _rnn.openmp_enabled()


def _env_threads() -> int | None:
    for name in ("FASTRNN_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value:
            try:
                n = int(value)
            except ValueError:
                warnings.warn(f"ignoring {name}={value!r}: not an integer", RuntimeWarning)
                continue
            if n >= 1:
                return n
    return None


def default_num_threads() -> int:
    """Threads used when ``num_threads=None``: FASTRNN_NUM_THREADS, else
    OMP_NUM_THREADS, else the cores this process may run on."""
    n = _env_threads()
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            n = os.cpu_count() or 1
    return max(1, min(n, _MAX_THREADS))


def resolve_num_threads(num_threads) -> int:
    """Validate ``num_threads`` (None, or an int >= 1)."""
    if num_threads is None:
        return default_num_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return int(min(num_threads, _MAX_THREADS))


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None      # [(library controller, its thread count before the limit)]
_controller = None
_blas_libs = None


def _threadpool_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded now (scipy's, whose
    cython_blas the kernels call, is loaded with them), found once: a fresh
    ThreadpoolController scans every loaded library, which costs more than a small
    kernel call."""
    global _blas_libs
    if _blas_libs is None:
        _blas_libs = list(_threadpool_controller().select(user_api="blas").lib_controllers)
    return _blas_libs


@contextmanager
def blas_single_thread():
    """Limit BLAS to one thread while our OpenMP threads own the cores.

    Reference-counted, so concurrent calls from several Python threads neither
    restore the limit early nor leave it set afterwards. Only libraries not already
    at one thread are touched, each with one direct call, so the limit costs
    microseconds per kernel call.
    """
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            saved = []
            for lib in _blas_libraries():
                n = lib.get_num_threads()
                if n is not None and n != 1:
                    lib.set_num_threads(1)
                    saved.append((lib, n))
            _blas_saved = saved
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_saved is not None:
                for lib, n in _blas_saved:
                    lib.set_num_threads(n)
                _blas_saved = None


_no_guard = nullcontext()


def _blas_guard(p, X_dense):
    """blas_single_thread() when the kernels will call BLAS for these params and
    inputs, else a no-op (the limit costs ~5 us, a tenth of a small B=1 step)."""
    if _rnn.calls_blas(p["W_hh"].shape[0], X_dense.size > 0):
        return blas_single_thread()
    return _no_guard


# ---------------------------------------------------------------------------
# validation

def _c_aligned(a, dtype=None) -> np.ndarray:
    """C-contiguous and aligned (a misaligned float* is undefined behaviour in C):
    the array itself when it already is, else a copy."""
    if (type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned
            and (dtype is None or a.dtype == dtype)):
        return a
    return np.require(a, dtype=dtype, requirements=["C", "A"])


def empty_aligned(shape, dtype, *, at: int = 0) -> np.ndarray:
    """An uninitialised C-contiguous array whose element ``at`` (flat index) starts
    a 64-byte cache line; numpy itself only promises 16 bytes."""
    dt = np.dtype(dtype)
    n = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    extra = 64 // dt.itemsize
    buf = np.empty(n + extra, dt)
    off = ((-(buf.ctypes.data + at * dt.itemsize)) % 64) // dt.itemsize
    return buf[off: off + n].reshape(shape)


def _aligned64(a: np.ndarray) -> np.ndarray:
    """``a`` itself when it starts a cache line, else a copy that does. The one-row
    products (one sequence, generation) stream W_hh's rows from cache; with the
    rows 48 bytes off a line, every 64 columns touched five lines instead of four
    and each vector load straddled two: a generated character took 2.37 instead of
    1.88 us (H = 256, two threads)."""
    if a.ctypes.data % 64 == 0:
        return a
    out = empty_aligned(a.shape, a.dtype)
    out[...] = a
    return out


def _align_for_rows(p, B, nt):
    """With fewer than two rows per thread some chunk (or the B = 1 split) runs the
    one-row products straight from W_hh, so give them a cache-line-aligned W_hh
    (larger batches use a packed copy)."""
    if B < 2 * nt:
        p["W_hh"] = _aligned64(p["W_hh"])


def _all_finite(a) -> bool:
    """Every value of the C-contiguous float32/float64 array a is finite (one pass
    in C: a third of numpy's isfinite().all() time on a 256x256 W_hh)."""
    if _rnn is not None:
        if a.dtype == np.float32:
            return _rnn.all_finite_f32(a.reshape(-1))
        if a.dtype == np.float64:
            return _rnn.all_finite_f64(a.reshape(-1))
    return bool(np.isfinite(a).all())


def _dtype_of(params) -> np.dtype:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of arrays with keys {PARAM_NAMES}, "
                        f"got {type(params).__name__}")
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"params is missing {', '.join(missing)}")
    dtype = None
    for k in PARAM_NAMES:
        a = params[k]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"params[{k!r}] must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{k!r}] must be float32 or float64, got {a.dtype}")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise TypeError(f"params must share one dtype: params['W_xh'] is {dtype}, "
                            f"params[{k!r}] is {a.dtype}")
    return np.dtype(dtype)


def check_params(params, *, check_finite: bool = True) -> dict:
    """Return C-contiguous params after checking names, dtypes, shapes and values."""
    dtype = _dtype_of(params)
    p = {k: _c_aligned(params[k]) for k in PARAM_NAMES}
    for k, nd in zip(PARAM_NAMES, (2, 2, 1, 2, 1)):
        if p[k].ndim != nd:
            raise ValueError(f"params[{k!r}] must be {nd}-D, got shape {p[k].shape}")
    D, H = p["W_xh"].shape
    V = p["W_hq"].shape[1]
    expect = {"W_xh": (D, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, V), "b_q": (V,)}
    for k in PARAM_NAMES:
        if p[k].shape != expect[k]:
            raise ValueError(f"params[{k!r}] has shape {p[k].shape}, expected {expect[k]} "
                             f"(D={D}, H={H}, V={V} from W_xh {(D, H)} and W_hq "
                             f"{p['W_hq'].shape})")
    for name, n in (("D (input size)", D), ("H (hidden size)", H), ("V (output size)", V)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    if check_finite:
        for k in PARAM_NAMES:
            if not _all_finite(p[k]):
                raise ValueError(f"params[{k!r}] contains NaN or inf")
    assert dtype == p["W_hh"].dtype
    return p


def _int_ids(a, name, upper, what):
    """Validated (B, T) integer ids -> the kernels' (T, B) int32 C array."""
    arr = _asarray(a, name)
    if arr.dtype.kind not in "iu":  # dtype.kind: a tenth of np.issubdtype's cost
        raise TypeError(f"{name} must be an integer array of {what}, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, time) of {what}, got shape {arr.shape}")
    if not arr.size:
        return _c_aligned(arr.T, np.int32)
    if (_rnn is not None and arr.dtype in _FAST_ID_DTYPES and arr.flags.c_contiguous
            and arr.flags.aligned):
        out = np.empty(arr.shape[::-1], np.int32)
        lo, hi = _rnn.ids_tb(arr, out)     # one pass: range and the transposed copy
    else:
        lo, hi = arr.min(), arr.max()
        out = None
    if lo < 0:
        raise ValueError(f"{name} contains a negative id ({lo}); ids must be in [0, {upper})")
    if hi >= upper:
        raise ValueError(f"{name} contains id {hi}, out of range [0, {upper})")
    return out if out is not None else _c_aligned(arr.T, np.int32)


_FAST_ID_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def check_inputs(p, X, h0, Y=None):
    """Validate X (ids or dense), optional Y and h0 against params p.

    Returns (X_ids (T, B) int32 or empty, X_dense (T*B, D) or empty, h0 (B, H),
    Y (T*B,) int32 or None, B, T).
    """
    dtype = p["W_hh"].dtype
    D, H = p["W_xh"].shape
    V = p["W_hq"].shape[1]
    if X is None:
        raise TypeError("X must be an array of token ids (B, T) or dense inputs (B, T, D), "
                        "got None")
    Xa = _asarray(X, "X")
    if Xa.dtype.kind not in "biufc":
        raise TypeError(f"X must be numeric, got dtype {Xa.dtype}")
    if Xa.ndim == 2:
        X_ids = _int_ids(Xa, "X", D, "token ids")
        T, B = X_ids.shape
        X_dense = np.empty((0, 0), dtype)
    elif Xa.ndim == 3:
        if Xa.dtype.kind != "f":
            raise TypeError(f"dense X (B, T, D) must be a float array, got dtype {Xa.dtype} "
                            "(pass token ids as a 2-D integer array)")
        B, T, Dx = Xa.shape
        if Dx != D:
            raise ValueError(f"X has {Dx} features per step but params['W_xh'] expects D={D}")
        X_dense = _c_aligned(Xa.transpose(1, 0, 2), dtype).reshape(T * B, D)
        if not _all_finite(X_dense):
            raise ValueError("X contains NaN or inf")
        X_ids = np.empty((0, 0), np.int32)
    else:
        raise ValueError(f"X must be 2-D token ids (B, T) or 3-D dense inputs (B, T, D), "
                         f"got shape {Xa.shape}")
    if B < 1 or T < 1:
        raise ValueError(f"X must have at least one sequence and one step, got B={B}, T={T}")
    if B * T >= 2**31:  # BLAS takes 32-bit sizes
        raise ValueError(f"X has B*T = {B * T} steps in one call; at most 2**31 - 1 "
                         "(split the batch or the sequence)")
    if h0 is None:
        h = np.zeros((B, H), dtype)
    else:
        ha = _asarray(h0, "h0")
        if ha.dtype.kind not in "fiu":
            raise TypeError(f"h0 must be a float array, got dtype {ha.dtype}")
        if ha.shape != (B, H):
            raise ValueError(f"h0 has shape {ha.shape}, expected (B, H) = {(B, H)}")
        h = _c_aligned(ha, dtype)
        if not _all_finite(h):
            raise ValueError("h0 contains NaN or inf")
    Yt = None
    if Y is not None:
        Yt = _int_ids(Y, "Y", V, "target ids")
        if Yt.shape != (T, B):
            raise ValueError(f"Y has shape {Yt.shape[::-1]}, expected (B, T) = {(B, T)} like X")
        Yt = Yt.reshape(T * B)
    return X_ids, X_dense, h, Yt, B, T


def check_nonlinearity(nonlinearity) -> str:
    """Return the nonlinearity as a plain str ('tanh' or 'relu')."""
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return str(nonlinearity)  # np.str_ -> str: the kernels take a Python str


def _asarray(a, name):
    """np.asarray with numpy's conversion errors (ragged lists...) naming the argument."""
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name} could not be converted to an array: {exc}") from None


# ---------------------------------------------------------------------------
# public functional API

def init_params(input_size: int, hidden_size: int, output_size: int | None = None, *,
                dtype="float32", seed=None, init: str = "d2l", scale: float = 0.01) -> dict:
    """Fresh RNN parameters.

    Parameters
    ----------
    input_size : int
        D, the vocabulary size for token inputs (the width of the one-hot code).
    hidden_size : int
        H, the number of hidden units.
    output_size : int, optional
        V, the number of output classes; defaults to ``input_size`` (a char-LM).
    dtype : {"float32", "float64"}
    seed : int or numpy.random.Generator, optional
        Seed for reproducible initialisation.
    init : {"d2l", "uniform"}
        ``"d2l"`` (default): weights ~ Normal(0, scale**2) with ``scale=0.01``, biases
        zero, as in d2l's ``get_params`` and min-char-rnn. ``"uniform"``: weights and
        biases ~ Uniform(-1/sqrt(H), 1/sqrt(H)), PyTorch's ``nn.RNN``/``nn.Linear``
        scheme (``scale`` is ignored).

    Returns
    -------
    dict
        ``W_xh (D, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``, ``b_q (V,)``,
        C-contiguous, all of ``dtype``.
    """
    sizes = {"input_size": input_size, "hidden_size": hidden_size,
             "output_size": input_size if output_size is None else output_size}
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    D, H, V = (int(sizes[k]) for k in ("input_size", "hidden_size", "output_size"))
    try:
        dt = np.dtype(dtype)
    except TypeError:   # numpy's "data type 'x' not understood" names no argument
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    rng = np.random.default_rng(seed)
    shapes = {"W_xh": (D, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, V), "b_q": (V,)}
    if init == "d2l":
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer,
                                                              np.floating)):
            raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite number >= 0, got {scale}")
        with np.errstate(over="ignore"):  # a huge scale is reported below
            p = {k: (rng.standard_normal(s) * scale if k.startswith("W") else np.zeros(s))
                 for k, s in shapes.items()}
    elif init == "uniform":
        bound = 1.0 / np.sqrt(H)
        p = {k: rng.uniform(-bound, bound, s) for k, s in shapes.items()}
    else:
        raise ValueError(f"init must be 'd2l' or 'uniform', got {init!r}")
    out = {k: empty_aligned(v.shape, dt) for k, v in p.items()}   # whole cache lines
    with np.errstate(over="ignore"):
        for k, v in p.items():
            out[k][...] = v
    if not all(np.isfinite(v).all() for v in out.values()):
        raise ValueError(f"scale={scale} is too large for {dt}: the initial weights overflow")
    return out


_workspace = threading.local()


# BPTT keeps dL/dZ for this many time steps at a time (and at least this many rows,
# and as many steps as fit in this many bytes), not for the whole sequence: the
# backward kernel takes the sequence in blocks and adds each block's terms to the
# weight gradients, so a step's memory is the hidden states, the logits and a block
# of dZ, not a second T*B*H buffer. Each block costs two parallel regions, each
# waiting for its slowest thread; with blocks of up to 2 MiB (1 MiB per core's L2
# with two threads) a d2l training step (B = 1024, H = 32: 16 steps a block instead
# of 8) took 6.3 instead of 6.8 ms while the machine was busy, and the same 3.7 ms
# while it was quiet; medium was unchanged.
_DZ_BLOCK_STEPS = 8
_DZ_BLOCK_ROWS = 256
_DZ_BLOCK_BYTES = 2 << 20


def _dz_steps(T, B, H=1, itemsize=4):
    """Steps of dZ the backward kernel holds at once (T: the whole sequence)."""
    return min(T, max(_DZ_BLOCK_STEPS, -(-_DZ_BLOCK_ROWS // B),
                      _DZ_BLOCK_BYTES // (B * H * itemsize)))


def _buffers(dtype, T, B, H, V):
    """Activation buffers Hs (T+1, B, H), Zs (R*B, H) and O (T*B, V) for this thread,
    where R = _dz_steps(T, B, H, itemsize): Zs is the kernels' work area (forward: one step's
    pre-activations; backward: dZ for R steps at a time).

    Reused while the shapes stay the same (a training loop), so steady-state calls
    neither allocate nor page-fault fresh memory. One set per Python thread, so
    concurrent calls from several threads never share buffers.
    """
    key = (np.dtype(dtype), T, B, H, V)
    if getattr(_workspace, "key", None) != key:
        _workspace.key = None  # drop the old buffers before allocating new ones
        _workspace.bufs = (np.empty((T + 1, B, H), dtype),
                           np.empty((_dz_steps(T, B, H, np.dtype(dtype).itemsize) * B, H), dtype),
                           np.empty((T * B, V), dtype))
        _workspace.key = key
    return _workspace.bufs


def clear_workspace() -> None:
    """Free the calling thread's cached activation buffers."""
    _workspace.key = None
    _workspace.bufs = None


def _run_forward(p, X_ids, X_dense, h, Yt, B, T, nonlinearity, nt, keep_logits,
                 full_z=False):
    """Call the forward kernel; returns (Hs (T+1,B,H), Zs, O, loss_sum). Zs is the
    work area for backward, or with full_z a new (T*B, H) array of every Z_t.

    The returned arrays are the thread's reusable workspace: copy what must outlive
    the next call.
    """
    dtype = p["W_hh"].dtype
    H = p["W_hh"].shape[0]
    V = p["W_hq"].shape[1]
    Hs, Zs, O = _buffers(dtype, T, B, H, V)
    if full_z and Zs.shape[0] != T * B:
        Zs = np.empty((T * B, H), dtype)
    Hs[0] = h
    if not keep_logits:
        O = np.empty((0, 0), dtype)
    Y = Yt if Yt is not None else np.empty(0, np.int32)
    parts = np.zeros(nt, dtype)
    _rnn.forward(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], X_ids, X_dense,
                 Hs, Zs, O, Y, parts, nonlinearity, nt)
    return Hs, Zs, O, float(parts.sum(dtype=np.float64))


def forward(params, X, h0=None, *, nonlinearity: str = "tanh", num_threads=None,
            return_states: bool = False):
    """Run the RNN over a batch of sequences.

    Parameters
    ----------
    params : dict
        ``W_xh (D, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``, ``b_q (V,)``,
        one dtype, float32 or float64 (see :func:`init_params`).
    X : array
        Token ids, integer ``(B, T)`` in ``[0, D)`` (one-hot semantics, computed as a
        row gather of ``W_xh``), or dense float inputs ``(B, T, D)``.
    h0 : array (B, H), optional
        Initial hidden state; zeros if None.
    nonlinearity : {"tanh", "relu"}
    num_threads : int, optional
        OpenMP threads; None means :func:`default_num_threads`.
    return_states : bool
        Also return ``{"Z": (B, T, H), "H": (B, T, H)}``: the pre-activations
        ``Z_t = X_t W_xh + H_{t-1} W_hh + b_h`` and hidden states ``H_t = phi(Z_t)``.

    Returns
    -------
    logits : ndarray (B, T, V)
    h_T : ndarray (B, H)
        The final hidden state.
    """
    p = check_params(params)
    nonlinearity = check_nonlinearity(nonlinearity)
    X_ids, X_dense, h, _, B, T = check_inputs(p, X, h0)
    nt = resolve_num_threads(num_threads)
    if _rnn is None:
        return reference.forward(p, np.asarray(X) if X_ids.size else X_dense.reshape(
            T, B, -1).transpose(1, 0, 2), h, nonlinearity=nonlinearity,
            return_states=return_states)
    _align_for_rows(p, B, nt)
    with _blas_guard(p, X_dense):
        Hs, Zs, O, _ = _run_forward(p, X_ids, X_dense, h, None, B, T, nonlinearity, nt, True,
                                    full_z=return_states)
    V = p["W_hq"].shape[1]
    logits = O.reshape(T, B, V).transpose(1, 0, 2).copy()
    h_T = Hs[T].copy()
    if return_states:
        H = Hs.shape[2]
        states = {"Z": Zs.reshape(T, B, H).transpose(1, 0, 2).copy(),
                  "H": Hs[1:].transpose(1, 0, 2).copy()}
        return logits, h_T, states
    return logits, h_T


def _grad_buffers(p, B, out):
    """Gradient arrays: fresh, or the caller's ``out`` after checking them."""
    H = p["W_hh"].shape[0]
    shapes = {k: p[k].shape for k in PARAM_NAMES}
    shapes["h0"] = (B, H)
    if out is None:
        return {k: np.empty(s, p["W_hh"].dtype) for k, s in shapes.items()}
    if not isinstance(out, Mapping):
        raise TypeError(f"out must be a dict of arrays, got {type(out).__name__}")
    g = dict(out)
    for k, shape in shapes.items():
        if k not in g:
            if k == "h0":
                g[k] = np.empty(shape, p["W_hh"].dtype)
                continue
            raise ValueError(f"out is missing {k!r}")
        a = g[k]
        if (not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != p["W_hh"].dtype
                or not a.flags.c_contiguous or not a.flags.writeable
                or not a.flags.aligned):
            raise ValueError(f"out[{k!r}] must be a writeable, aligned, C-contiguous "
                             f"{p['W_hh'].dtype} array of shape {shape}")
    keys = list(shapes)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if np.shares_memory(g[a], g[b]):
                raise ValueError(f"out[{a!r}] and out[{b!r}] share memory; every gradient "
                                 "needs its own buffer")
    return g


def loss_and_grad(params, X, Y, h0=None, *, nonlinearity: str = "tanh", num_threads=None,
                  out=None):
    """Mean softmax cross-entropy over all B*T predictions and its gradients (BPTT).

    Parameters are as in :func:`forward`, plus ``Y``: integer targets ``(B, T)`` in
    ``[0, V)`` (for a char-LM, X shifted by one character).

    Returns
    -------
    loss : float
        Mean cross-entropy over the ``B*T`` predictions (perplexity is ``exp(loss)``).
    grads : dict
        ``d loss / d param`` with the keys, shapes and dtype of ``params``, plus
        ``"h0"``: ``d loss / d h0``, shape (B, H).
    h_T : ndarray (B, H)
        The final hidden state (to carry into the next segment, detached).

    Other Parameters
    ----------------
    out : dict, optional
        Preallocated C-contiguous gradient arrays (same keys as ``params``, and
        optionally ``"h0"``) to write into instead of allocating, e.g. views into one
        flat gradient buffer. Returned as ``grads``.
    """
    p = check_params(params)
    nonlinearity = check_nonlinearity(nonlinearity)
    if Y is None:
        raise TypeError("Y must be an integer array of target ids (B, T), got None")
    X_ids, X_dense, h, Yt, B, T = check_inputs(p, X, h0, Y)
    nt = resolve_num_threads(num_threads)
    if _rnn is None:
        Xr = np.asarray(X) if X_ids.size else X_dense.reshape(T, B, -1).transpose(1, 0, 2)
        return reference.loss_and_grad(p, Xr, Yt.reshape(T, B).T, h,
                                       nonlinearity=nonlinearity)
    _align_for_rows(p, B, nt)
    g = _grad_buffers(p, B, out)
    with _blas_guard(p, X_dense):
        Hs, Zs, dO, loss_sum = _run_forward(p, X_ids, X_dense, h, Yt, B, T, nonlinearity,
                                            nt, True)
        _rnn.backward(p["W_xh"], p["W_hh"], p["W_hq"], X_ids, X_dense, Hs, Zs, dO,
                      g["W_xh"], g["W_hh"], g["b_h"], g["W_hq"], g["b_q"], g["h0"],
                      nonlinearity, nt)
    return loss_sum / (B * T), g, Hs[T].copy()
