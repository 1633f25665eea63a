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
from collections.abc import Mapping

import numpy as np

from . import params as _params
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

try:  # the compiled layer loops of every cell; without them the stack runs NumPy's loops
    from . import _layers
    _LAYERS_ERROR = None
except (ImportError, TypeError) as exc:
    _layers = None
    _LAYERS_ERROR = exc

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
    """Return the number of threads used when ``num_threads=None``.

    The first of: the environment variable ``FASTRNN_NUM_THREADS``, then
    ``OMP_NUM_THREADS`` (an integer >= 1; other values are ignored with a
    warning), then the cores this process may run on; at most 256.

    Returns
    -------
    int
        The thread count, >= 1.

    Examples
    --------
    >>> import os, fastrnn
    >>> n = fastrnn.default_num_threads()
    >>> n >= 1
    True
    >>> os.environ["FASTRNN_NUM_THREADS"] = "3"
    >>> fastrnn.default_num_threads()
    3
    >>> del os.environ["FASTRNN_NUM_THREADS"]
    """
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


def _dtype_of(params, names=PARAM_NAMES) -> np.dtype:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of arrays with keys {tuple(names)}, "
                        f"got {type(params).__name__}")
    missing = [k for k in names if k not in params]
    if missing:
        raise ValueError(f"params is missing {', '.join(missing)}")
    dtype = None
    for k in names:
        a = params[k]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"params[{k!r}] must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{k!r}] must be float32 or float64, got {a.dtype}")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise TypeError(f"params must share one dtype: params[{names[0]!r}] is {dtype}, "
                            f"params[{k!r}] is {a.dtype}")
    return np.dtype(dtype)


def check_cell(cell) -> str:
    """Return the cell name as a plain str ('rnn', 'gru' or 'lstm')."""
    return _params._check_cell(cell)


def check_params(params, *, cell: str = "rnn", check_finite: bool = True) -> dict:
    """Return C-contiguous params after checking names, dtypes, shapes and values.

    The layers are read from the names (:func:`fastrnn.params.infer_config`); the
    result holds exactly the names of :func:`fastrnn.params.param_names`, in flat order.
    """
    return _check_params(params, check_cell(cell), check_finite)[0]


def _is_elman(params, cell) -> bool:
    """cell="rnn" and no name of a layer k >= 1 or of GRU: 0.1's parameters."""
    return cell == "rnn" and not any(type(k) is not str or "_l" in k or k == "b_hn"
                                     for k in params)


def _check_params(params, cell, check_finite=True):
    """(checked params, (D, H, V, L)); cell already checked."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of arrays with keys {PARAM_NAMES}, "
                        f"got {type(params).__name__}")
    if _is_elman(params, cell):                  # 0.1's checks: a few us per call
        return _check_elman_params(params, check_finite)
    names = _params.param_names(cell, _params._num_layers(params, cell))
    if any(k not in params for k in names):
        _params.infer_config(params, cell)       # the missing names, or a shape that says
    dtype = _dtype_of(params, names)             # these are another cell's parameters
    config = _params.infer_config(params, cell)
    p = {k: _c_aligned(params[k]) for k in names}
    if check_finite:
        for k in names:
            if not _all_finite(p[k]):
                raise ValueError(f"params[{k!r}] contains NaN or inf")
    assert dtype == p["W_hh"].dtype
    return p, config


def _check_elman_params(params, check_finite):
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
    for name, n in (("D (input size, W_xh.shape[0])", D), ("H (hidden size, W_hh.shape[0])", H),
                    ("V (output size, W_hq.shape[1])", V)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    if check_finite:
        for k in PARAM_NAMES:
            if not _all_finite(p[k]):
                raise ValueError(f"params[{k!r}] contains NaN or inf")
    assert dtype == p["W_hh"].dtype
    return p, (D, H, V, 1)


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


def _check_x(p, X):
    """Validate X (ids or dense) against params p: (X_ids (T, B) int32 or empty,
    X_dense (T*B, D) or empty, B, T)."""
    dtype = p["W_hh"].dtype
    D = p["W_xh"].shape[0]
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
    return X_ids, X_dense, B, T


def _check_y(p, Y, B, T):
    """Validated targets (B, T) -> (T*B,) int32."""
    V = p["W_hq"].shape[1]
    Yt = _int_ids(Y, "Y", V, "target ids")
    if Yt.shape != (T, B):
        raise ValueError(f"Y has shape {Yt.shape[::-1]}, expected (B, T) = {(B, T)} like X")
    return Yt.reshape(T * B)


def _check_h(h0, name, shape, dtype):
    ha = _asarray(h0, name)
    if ha.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a float array, got dtype {ha.dtype}")
    if ha.shape != shape:
        raise ValueError(f"{name} has shape {ha.shape}, expected {shape}")
    h = _c_aligned(ha, dtype)
    if not _all_finite(h):
        raise ValueError(f"{name} contains NaN or inf")
    return h


def check_inputs(p, X, h0, Y=None):
    """Validate X (ids or dense), optional Y and h0 against Elman params p (one layer).

    Returns (X_ids (T, B) int32 or empty, X_dense (T*B, D) or empty, h0 (B, H),
    Y (T*B,) int32 or None, B, T).
    """
    dtype = p["W_hh"].dtype
    H = p["W_hh"].shape[0]
    X_ids, X_dense, B, T = _check_x(p, X)
    if h0 is None:
        h = np.zeros((B, H), dtype)
    else:
        h = _check_h(h0, "h0", (B, H), dtype)
    Yt = None if Y is None else _check_y(p, Y, B, T)
    return X_ids, X_dense, h, Yt, B, T


def check_state(h0, cell, L, B, H, dtype):
    """Validate an initial state in one of the forms of SPEC "State forms".

    Returns (h (L, B, H), c (L, B, H) or None, form): form "BH" when the state is
    (B, H) arrays (one layer only) or None with one layer, else "LBH".
    """
    def one(s, name):
        if s is None:
            return np.zeros((L, B, H), dtype), ("BH" if L == 1 else "LBH")
        if isinstance(s, (tuple, list)) and cell != "lstm" and len(s) == 2 and all(
                isinstance(a, np.ndarray) for a in s):
            raise TypeError(f"{name} is a pair, which is LSTM's state (h, c); cell={cell!r} "
                            "takes one array")
        sa = _asarray(s, name)
        if sa.ndim == 2 and L == 1:
            return _check_h(sa, name, (B, H), dtype)[None], "BH"
        if sa.ndim == 3 or sa.ndim == 2:
            return _check_h(sa, name, (L, B, H), dtype), "LBH"
        raise ValueError(f"{name} has shape {sa.shape}, expected (L, B, H) = {(L, B, H)}"
                         + (f" or (B, H) = {(B, H)}" if L == 1 else ""))
    if cell == "lstm":
        if h0 is None:
            h, form = one(None, "h0")
            return h, np.zeros_like(h), form
        if not isinstance(h0, (tuple, list)) or len(h0) != 2:
            raise TypeError(f"h0 for cell='lstm' must be a pair (h, c) of arrays or None, "
                            f"got {type(h0).__name__}"
                            + (f" of length {len(h0)}" if isinstance(h0, (tuple, list))
                               else ""))
        if h0[0] is None or h0[1] is None:
            raise TypeError("h0 for cell='lstm' must be a pair (h, c) of arrays, got None "
                            "inside the pair (pass h0=None for zeros)")
        (h, fh), (c, fc) = one(h0[0], "h0[0] (h)"), one(h0[1], "h0[1] (c)")
        if fh != fc:
            raise ValueError(f"h0's h and c must have the same form, got shapes "
                             f"{np.shape(h0[0])} and {np.shape(h0[1])}")
        return h, c, fh
    h, form = one(h0, "h0")
    return h, None, form


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
                cell: str = "rnn", num_layers: int = 1, dtype="float32", seed=None,
                init: str | None = None, scale: float = 0.01,
                forget_bias: float = 1.0) -> dict:
    """Fresh parameters of a stack of recurrent layers and its output head.

    Parameters
    ----------
    input_size : int
        D, the vocabulary size for token inputs (the width of the one-hot code).
    hidden_size : int
        H, the number of hidden units of every layer.
    output_size : int, optional
        V, the number of output classes; defaults to ``input_size`` (a char-LM).
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell (gate counts and names: :mod:`fastrnn.params`).
    num_layers : int
        L >= 1 stacked layers; layer k >= 1 has names with the suffix ``_l{k}``.
    dtype : {"float32", "float64"}
        The dtype of every array.
    seed : int or numpy.random.Generator, optional
        Seed for reproducible initialisation. Arrays are drawn in flat order
        (:func:`fastrnn.params.param_names`), so ``cell="rnn"`` with one layer draws
        the same arrays as fastrnn 0.1 for the same seed.
    init : {"d2l", "uniform"}, optional
        ``"d2l"``: weights ~ Normal(0, scale**2) with ``scale=0.01``, biases zero, as
        in d2l's ``get_params`` and min-char-rnn. ``"uniform"``: weights and biases ~
        Uniform(-1/sqrt(H), 1/sqrt(H)), PyTorch's scheme (``scale`` is ignored).
        Default: ``"d2l"`` for ``cell="rnn"`` with one layer (as in 0.1),
        ``"uniform"`` otherwise.
    scale : float
        Standard deviation of the ``"d2l"`` weights.
    forget_bias : float
        LSTM only: the forget-gate block of every layer's ``b_h`` is set to this value
        after the draws (1.0, as char-rnn and Keras' ``unit_forget_bias``); 0.0 leaves
        it as ``init`` drew it. Ignored by other cells.

    Returns
    -------
    dict
        The arrays of :func:`fastrnn.params.layout` by name (for ``cell="rnn"``, one
        layer: ``W_xh (D, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``,
        ``b_q (V,)``), each C-contiguous, starting a cache line, all of ``dtype``.

    Raises
    ------
    ValueError, TypeError
        An unknown cell or init, a size that is not an int >= 1, a bad dtype, scale or
        forget_bias.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(65, 8, cell="lstm", num_layers=2, seed=0)
    >>> [(k, v.shape) for k, v in p.items()][3:]
    [('W_xh_l1', (8, 32)), ('W_hh_l1', (8, 32)), ('b_h_l1', (32,)), ('W_hq', (8, 65)), ('b_q', (65,))]
    >>> p["b_h"][8:16].tolist() == [1.0] * 8      # the forget gate's block
    True
    """
    sizes = {"input_size": input_size, "hidden_size": hidden_size,
             "output_size": input_size if output_size is None else output_size}
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    D, H, V = (int(sizes[k]) for k in ("input_size", "hidden_size", "output_size"))
    cell = _params._check_cell(cell)
    L = _params._check_count("num_layers", num_layers)
    try:
        dt = np.dtype(dtype)
    except TypeError:   # numpy's "data type 'x' not understood" names no argument
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"forget_bias must be a real number, got {type(forget_bias).__name__}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    if init is None:
        init = "d2l" if (cell == "rnn" and L == 1) else "uniform"
    rng = np.random.default_rng(seed)
    shapes = {name: shape for name, shape, _ in _params.layout(cell, D, H, V, L)}
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
    if cell == "lstm" and forget_bias != 0:
        for k in range(L):
            p["b_h" + ("" if k == 0 else f"_l{k}")][H:2 * H] = forget_bias
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
    neither allocate nor page-fault fresh memory; a call that needs at most as much
    and at least half of each buffer gets the leading part of the same memory (the
    shorter last minibatch of an epoch and the validation batches between epochs do
    not reallocate: 0.2-0.4 ms each on a d2l step of 5-8 ms). One set per Python
    thread, so concurrent calls from several threads never share buffers.
    """
    dtype = np.dtype(dtype)
    sizes = ((T + 1) * B * H, _dz_steps(T, B, H, dtype.itemsize) * B * H, T * B * V)
    key = (dtype, H, V)
    flat = getattr(_workspace, "flat", None)
    if (getattr(_workspace, "key", None) != key
            or any(n > len(f) or 2 * n < len(f) for n, f in zip(sizes, flat))):
        _workspace.key = _workspace.flat = None   # drop the old buffers first
        _workspace.flat = tuple(np.empty(n, dtype) for n in sizes)
        _workspace.key = key
        flat = _workspace.flat
    return (flat[0][: sizes[0]].reshape(T + 1, B, H),
            flat[1][: sizes[1]].reshape(sizes[1] // H, H),
            flat[2][: sizes[2]].reshape(T * B, V))


def clear_workspace() -> None:
    """Free the calling thread's cached activation buffers."""
    _workspace.key = None
    _workspace.flat = None
    _workspace.stack = None


def _ws(name, shape, dtype):
    """An uninitialised work array of the layer stack, this thread's, reused by the
    next call that asks for the same name with the same shape and dtype (a training
    loop): steady-state steps neither allocate nor page-fault fresh memory (3,300
    page faults, about 6% of an lstm-medium step, before). Never returned to the
    caller."""
    d = getattr(_workspace, "stack", None)
    if d is None:
        d = _workspace.stack = {}
    a = d.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        d[name] = None                      # drop the old array before the new one
        a = d[name] = np.empty(shape, dtype)
    return a


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


def _check_call(params, cell, nonlinearity, num_threads, return_states=False):
    """Checks shared by forward and loss_and_grad: (p, cell, nonlinearity, (D, H, V, L),
    nt)."""
    cell = check_cell(cell)
    nonlinearity = check_nonlinearity(nonlinearity)
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(f"nonlinearity applies to cell='rnn' only; got "
                         f"nonlinearity={nonlinearity!r} with cell={cell!r}")
    p, config = _check_params(params, cell)
    L = config[3]
    if return_states and (cell != "rnn" or L != 1):
        raise ValueError(f"return_states is available for cell='rnn' with one layer only, "
                         f"got cell={cell!r}, num_layers={L}")
    return p, cell, nonlinearity, config, resolve_num_threads(num_threads)


def forward(params, X, h0=None, *, cell: str = "rnn", nonlinearity: str = "tanh",
            num_threads=None, return_states: bool = False):
    """Run a stack of recurrent layers and the output head over a batch of sequences.

    Parameters
    ----------
    params : dict
        Named arrays of :func:`fastrnn.params.layout` for ``cell`` (see
        :func:`init_params`), one dtype, float32 or float64. The number of layers is
        read from the names (``W_xh_l1`` ...). For ``cell="rnn"``, one layer:
        ``W_xh (D, H)``, ``W_hh (H, H)``, ``b_h (H,)``, ``W_hq (H, V)``, ``b_q (V,)``.
    X : array
        Token ids, integer ``(B, T)`` in ``[0, D)`` (one-hot semantics, computed as a
        row gather of ``W_xh``), or dense float inputs ``(B, T, D)``.
    h0 : array or tuple, optional
        Initial state: None (zeros), ``(B, H)`` (one layer only) or ``(L, B, H)``;
        for LSTM a pair ``(h, c)`` of arrays in the same form.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell; it must fit the parameters' shapes.
    nonlinearity : {"tanh", "relu"}
        ``cell="rnn"`` only; another value with a gated cell raises ValueError.
    num_threads : int, optional
        OpenMP threads; None means :func:`default_num_threads`. Results do not depend
        on it.
    return_states : bool
        ``cell="rnn"`` with one layer only: also return ``{"Z": (B, T, H), "H": (B, T,
        H)}``: the pre-activations ``Z_t = X_t W_xh + H_{t-1} W_hh + b_h`` and hidden
        states ``H_t = phi(Z_t)``.

    Returns
    -------
    logits : ndarray (B, T, V)
        The outputs ``O_t = H_t W_hq + b_q`` of the top layer, in the parameters' dtype.
    state : ndarray or tuple
        The final state: ``(B, H)`` for one layer (``(L, B, H)`` when ``h0`` was given
        so), ``(L, B, H)`` for L > 1; for LSTM a pair ``(h_T, c_T)`` in that form.
    states : dict, optional
        Only with ``return_states=True``: ``{"Z": ..., "H": ...}`` as described above.

    Raises
    ------
    ValueError, TypeError
        Before any compiled code runs: an unknown cell, parameters that do not fit the
        cell (naming the parameter and both shapes), bad ids, shapes, states, values.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(5, 4, cell="lstm", num_layers=2, seed=0)
    >>> logits, (h, c) = fastrnn.forward(p, [[0, 1, 2]], cell="lstm")
    >>> logits.shape, h.shape, c.shape
    ((1, 3, 5), (2, 1, 4), (2, 1, 4))
    """
    p, cell, nonlinearity, (D, H, V, L), nt = _check_call(params, cell, nonlinearity,
                                                          num_threads, return_states)
    if cell == "rnn" and L == 1:
        X_ids, X_dense, B, T = _check_x(p, X)
        h, _, form = check_state(h0, cell, 1, B, H, p["W_hh"].dtype)
        result = _rnn_forward(p, X, X_ids, X_dense, h[0], B, T, nonlinearity, nt,
                              return_states)
        if form == "LBH":
            result = (result[0], result[1][None]) + tuple(result[2:])
        return result
    X_ids, X_dense, B, T = _check_x(p, X)
    h, c, form = check_state(h0, cell, L, B, H, p["W_hh"].dtype)
    logits, hT, cT = _stack(p, cell, L, nonlinearity, X_ids, X_dense, B, T, h, c, None,
                            0.0, 0, 0, nt, None)
    return logits, reference._state_out(hT, cT, form)


def _rnn_forward(p, X, X_ids, X_dense, h, B, T, nonlinearity, nt, return_states):
    """cell="rnn", one layer: the 0.1 kernels (fastrnn._rnn)."""
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


def _grad_buffers(p, B, out, names=PARAM_NAMES, state_shapes=None):
    """Gradient arrays: fresh, or the caller's ``out`` after checking them."""
    H = p["W_hh"].shape[0]
    shapes = {k: p[k].shape for k in names}
    state_shapes = state_shapes or {"h0": (B, H)}
    shapes.update(state_shapes)
    if out is None:
        return {k: np.empty(s, p["W_hh"].dtype) for k, s in shapes.items()}
    if not isinstance(out, Mapping):
        raise TypeError(f"out must be a dict of arrays, got {type(out).__name__}")
    g = dict(out)
    for k, shape in shapes.items():
        if k not in g:
            if k in state_shapes:
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


def loss_and_grad(params, X, Y, h0=None, *, cell: str = "rnn", nonlinearity: str = "tanh",
                  dropout: float = 0.0, seed=None, row_offset: int = 0, num_threads=None,
                  out=None):
    """Mean softmax cross-entropy over all B*T predictions and its gradients (BPTT).

    Parameters
    ----------
    params, X : dict, array
        As in :func:`forward`.
    Y : array
        Integer targets ``(B, T)`` in ``[0, V)`` (for a char-LM, X shifted by one
        character).
    h0, cell, nonlinearity : optional
        As in :func:`forward`.
    dropout : float
        Inverted dropout in ``[0, 1)`` on the output of every layer except the top
        one (training only); with one layer it does nothing and warns, as PyTorch.
    seed : int, optional
        In ``[0, 2**64)``; needed when ``dropout > 0``. Each mask value is a pure
        function of (seed, layer, step, global row, unit):
        :func:`fastrnn.params.dropout_mask`.
    row_offset : int
        Global index of the first row of ``X`` in a larger batch (data-parallel
        callers holding rows ``row_offset..``), so every row gets its own mask.
    num_threads : int, optional
        As in :func:`forward`.

    Returns
    -------
    loss : float
        Mean cross-entropy over the ``B*T`` predictions (perplexity is ``exp(loss)``).
    grads : dict
        ``d loss / d param`` with the keys, shapes and dtype of ``params``, plus
        ``"h0"`` (and ``"c0"`` for LSTM): the gradient with respect to the initial
        state, in the form of the state (see :func:`forward`).
    state : ndarray or tuple
        The final state (to carry into the next segment, detached), as in
        :func:`forward`.

    Other Parameters
    ----------------
    out : dict, optional
        Preallocated C-contiguous gradient arrays (same keys as ``params``, and
        optionally ``"h0"``/``"c0"``) to write into instead of allocating, e.g. views
        into one flat gradient buffer. Returned as ``grads``.

    Raises
    ------
    ValueError, TypeError
        As :func:`forward`, and for a bad ``Y``, ``dropout``, ``seed``, ``row_offset``
        or ``out``.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(5, 4, cell="gru", num_layers=2, seed=0)
    >>> X = [[0, 1, 2, 3]]
    >>> Y = [[1, 2, 3, 4]]
    >>> loss, grads, h = fastrnn.loss_and_grad(p, X, Y, cell="gru", dropout=0.2, seed=7)
    >>> grads["W_hh_l1"].shape, grads["h0"].shape, h.shape
    ((4, 12), (2, 1, 4), (2, 1, 4))
    """
    p, cell, nonlinearity, (D, H, V, L), nt = _check_call(params, cell, nonlinearity,
                                                          num_threads)
    if Y is None:
        raise TypeError("Y must be an integer array of target ids (B, T), got None")
    p_drop, seed, row_offset = reference._dropout_args(L, dropout, seed, row_offset)
    X_ids, X_dense, B, T = _check_x(p, X)
    Yt = _check_y(p, Y, B, T)
    h, c, form = check_state(h0, cell, L, B, H, p["W_hh"].dtype)
    if cell == "rnn" and L == 1:
        if form == "LBH" and isinstance(out, Mapping) and "h0" in out:
            o = out["h0"]
            out = dict(out, h0=o.reshape(B, H) if isinstance(o, np.ndarray)
                       and o.shape == (1, B, H) else o)
        loss, g, hT = _rnn_loss_and_grad(p, X, X_ids, X_dense, h[0], Yt, B, T,
                                         nonlinearity, nt, out)
        if form == "LBH":
            g["h0"] = g["h0"].reshape(1, B, H)
            hT = hT[None]
        return loss, g, hT
    names = _params.param_names(cell, L)
    state_shape = (B, H) if form == "BH" else (L, B, H)
    state_shapes = {"h0": state_shape} if c is None else {"h0": state_shape,
                                                          "c0": state_shape}
    g = _grad_buffers(p, B, out, names, state_shapes)
    loss, hT, cT = _stack(p, cell, L, nonlinearity, X_ids, X_dense, B, T, h, c, Yt,
                          p_drop, seed, row_offset, nt, g)
    return loss, g, reference._state_out(hT, cT, form)


def _rnn_loss_and_grad(p, X, X_ids, X_dense, h, Yt, B, T, nonlinearity, nt, out):
    """cell="rnn", one layer: the 0.1 kernels (fastrnn._rnn)."""
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


def _rnn_ce_sum(p, X_ids, Yt, nonlinearity, nt):
    """Summed cross-entropy of the T*B predictions of checked one-layer Elman params
    ``p`` from a zero state, without gradients: the forward kernel with its fused
    softmax cross-entropy (what loss_and_grad's forward computes); no logits are copied
    out. ``X_ids`` (T, B) and ``Yt`` (T*B,) are C-contiguous int32 ids already in range
    (as _check_x / _check_y make them). Needs the compiled kernels (_rnn)."""
    T, B = X_ids.shape
    dtype = p["W_hh"].dtype
    no_dense = np.empty((0, 0), dtype)
    _align_for_rows(p, B, nt)
    with _blas_guard(p, no_dense):
        return _run_forward(p, X_ids, no_dense, 0, Yt, B, T, nonlinearity, nt, True)[3]


# ---------------------------------------------------------------------------
# the layer stack: every configuration but cell="rnn" with one layer

def _layer_forward(cell, nonlin, XW, W_hh, b_hn, h0, c0, nt, cache=True, ws=None,
                   ids=None):
    """One layer's time loop: (Hs (T, B, H), Cs or None, Gs: the gate cache, None
    without ``cache``: no backward follows). ws: the layer's index, to take the
    arrays from this thread's workspace (the caller must not return them). With ids
    ((T, B) int32 token ids, compiled kernels only), XW is the pair (W_xh, b_h) and
    the kernel gathers each step's input projection itself."""
    if _layers is None:
        return reference.layer_forward(cell, XW, W_hh, b_hn, h0, c0, nonlinearity=nonlin)
    T, B = ids.shape if ids is not None else XW.shape[:2]
    H = W_hh.shape[0]
    dt = W_hh.dtype
    cid = _layer_cell_id(cell)
    new = np.empty if ws is None else (lambda shape, dt, n=None: _ws((n, ws), shape, dt))
    Hs = new((T, B, H), dt, "Hs")
    Cs = new((T, B, H), dt, "Cs") if cell == "lstm" else None
    w = _layers.gate_cache_width(cid, H)
    Gs = new((T, B, w), dt, "Gs") if w and cache else None
    if ids is not None:
        _layers.layer_forward_ids(cid, _layer_nonlin_id(nonlin), ids, XW[0], XW[1], W_hh, b_hn,
                                  h0, c0, Hs, Cs, Gs, nt)
    else:
        _layers.layer_forward(cid, _layer_nonlin_id(nonlin), XW, W_hh, b_hn, h0, c0, Hs, Cs,
                              Gs, nt)
    return Hs, Cs, Gs


def _layer_backward(cell, nonlin, dHs, Hs, Cs, Gs, h0, c0, W_hh, nt, ws=False):
    """One layer's BPTT: (dA (T, B, G*H), dAn_rec (T, B, H): GRU's dL/dhn else None,
    dh0, dc0 or None). dHs may be overwritten. With the compiled kernels, GRU and LSTM
    write dA over their gate cache Gs and return Gs itself: GRU's as (Gs, Gs), rows
    [dA | dAn_rec] (T, B, 4H), which layer_weight_grads and seq_matmul (k=3H) read in
    place. ws: an Elman dA from this thread's workspace (the caller must not return
    it)."""
    H = W_hh.shape[0]
    if _layers is None:
        dA, dA_rec, dh0, dc0 = reference.layer_backward(cell, dHs, Hs, Cs, Gs, h0, c0, W_hh,
                                                        nonlinearity=nonlin)
        return dA, (dA_rec[:, :, 2 * H:] if cell == "gru" else None), dh0, dc0
    T, B, _ = dHs.shape
    new = np.empty if not ws else (lambda shape, dt, n=None: _ws(n, shape, dt))
    dh0 = np.empty((B, H), dHs.dtype)
    dc0 = np.empty((B, H), dHs.dtype) if cell == "lstm" else None
    if Gs is not None:
        # GRU, LSTM: dA (GRU: rows [dA | dAn_rec]) is written over the gate cache (the
        # kernel reads each row's cache before writing there): one (T, B, 4H) array
        # less at the step's peak (lstm-large: 64 MiB of 240). The consumers
        # (_CompiledOps.weight_grads, .input_grad) read GRU's pair from the cache.
        _layers.layer_backward(_layer_cell_id(cell), _layer_nonlin_id(nonlin), dHs, Hs, Cs,
                               Gs, h0, c0, W_hh, Gs, Gs if cell == "gru" else None, dh0,
                               dc0, nt)
        return Gs, (Gs if cell == "gru" else None), dh0, dc0
    dA = new((T, B, W_hh.shape[1]), dHs.dtype, "dA")
    _layers.layer_backward(_layer_cell_id(cell), _layer_nonlin_id(nonlin), dHs, Hs, Cs, Gs,
                           h0, c0, W_hh, dA, None, dh0, dc0, nt)
    return dA, None, dh0, dc0


def _layer_cell_id(cell):
    return {"rnn": _layers.CELL_RNN, "gru": _layers.CELL_GRU, "lstm": _layers.CELL_LSTM}[cell]


def _layer_nonlin_id(nonlin):
    return {"tanh": _layers.NONLIN_TANH, "relu": _layers.NONLIN_RELU}[nonlin]


def _scatter_rows(out, ids, src):
    """out[v] = sum of src[i] over i with ids[i] == v, in increasing i (zero where v
    does not occur): np.add.at's sums, in its order, without its per-element cost."""
    order = np.argsort(ids, kind="stable")
    sids = ids[order]                           # each id's rows in increasing i
    ends = np.r_[np.flatnonzero(sids[1:] != sids[:-1]) + 1, ids.size]
    out[...] = 0
    s = 0
    for e in ends.tolist():                     # one sequential running sum per id present
        S = src[order[s:e]]                     # (one id's rows at a time: small peak)
        np.add.accumulate(S, axis=0, out=S)
        out[sids[s]] = S[-1]
        s = e


class _CompiledOps:
    """The stack's whole-sequence pieces in the compiled kernels (fastrnn._layers):
    every product runs on our OpenMP threads (BLAS at one thread each), work arrays
    come from this thread's workspace."""

    @staticmethod
    def forward(cell, nonlin, k, W_xh, W_hh, b_h, b_hn, X_ids, X_dense, inp, h0, c0, T, B,
                nt, train):
        """Layer k's forward: (its input, kept for the weight gradients; Hs, Cs, Gs)."""
        N = T * B
        if k == 0 and X_ids.size:
            # token ids: the kernel adds the rows W_xh[id] + b_h into each step's
            # pre-activations (a (T, B, G*H) XW, written then read once, cost 2.7 ms
            # of an 80 ms lstm-medium step)
            return X_ids.reshape(N), _layer_forward(cell, nonlin, (W_xh, b_h), W_hh, b_hn,
                                                    h0, c0, nt, train, k, X_ids)
        # the input projection of every step, hoisted out of the time loop
        XW = _ws("XW", (T, B, W_hh.shape[1]), W_hh.dtype)
        x = X_dense.reshape(N, -1) if k == 0 else inp
        _layers.seq_matmul(x, W_xh, b_h, XW.reshape(N, -1), False, nt)
        return x, _layer_forward(cell, nonlin, XW, W_hh, b_hn, h0, c0, nt, train, k)

    @staticmethod
    def logits(inp, W_hq, b_q, T, B, nt):
        O = _ws("O", (T * B, W_hq.shape[1]), W_hq.dtype)
        _layers.head_xent(inp, W_hq, b_q, None, O, nt)
        return O.reshape(T, B, -1).transpose(1, 0, 2).copy()

    @staticmethod
    def head_loss(inp, W_hq, b_q, Yt, g, T, B, nt):
        """Softmax cross-entropy averaged over the T*B predictions, the head's
        gradients into g, and dL/dH_t of the top layer (T, B, H)."""
        N = T * B
        O = _ws("O", (N, W_hq.shape[1]), W_hq.dtype)
        loss = _layers.head_xent(inp, W_hq, b_q, Yt.reshape(N), O, nt) / N   # O: dL/dO
        dInp = _ws("dH", (T, B, W_hq.shape[0]), W_hq.dtype)
        _layers.head_backward(inp, O, W_hq, g["W_hq"], g["b_q"], dInp.reshape(N, -1), nt)
        return loss, dInp

    @staticmethod
    def weight_grads(cell, x, h0, Hs, dA, dAn, dW_xh, dW_hh, db_h, db_hn, nt):
        xi = x if x.ndim == 1 else None
        _layers.layer_weight_grads(_layer_cell_id(cell), h0, Hs, dA, dAn, xi,
                                   None if xi is not None else x, dW_xh, dW_hh, db_h, db_hn,
                                   nt)

    @staticmethod
    def input_grad(dA, W_xh, T, B, nt):
        """dL/d(input of the layer) = dA W_xh^T, (T, B, H)."""
        dInp = _ws("dH", (T, B, W_xh.shape[0]), W_xh.dtype)
        _layers.seq_matmul(dA.reshape(T * B, -1), W_xh, None, dInp.reshape(T * B, -1), True,
                           nt, W_xh.shape[1])      # GRU: dA's 3H columns of the cache's 4H
        return dInp


class _NumpyOps:
    """The same pieces without the compiled kernels (the NumPy fallback): numpy's
    products (the layers' time loops are fastrnn.reference's, in _layer_forward)."""

    @staticmethod
    def forward(cell, nonlin, k, W_xh, W_hh, b_h, b_hn, X_ids, X_dense, inp, h0, c0, T, B,
                nt, train):
        if k == 0 and X_ids.size:             # (T, B, G*H): a row gather of the
            x = X_ids
            XW = np.take(W_xh + b_h, X_ids, axis=0)  # D rows of W_xh + b_h, one pass
        else:
            x = X_dense if k == 0 else inp
            XW = (x @ W_xh).reshape(T, B, -1)
            XW += b_h
        return x, _layer_forward(cell, nonlin, XW, W_hh, b_hn, h0, c0, nt)

    @staticmethod
    def logits(inp, W_hq, b_q, T, B, nt):
        O = inp @ W_hq
        O += b_q
        return O.reshape(T, B, -1).transpose(1, 0, 2).copy()

    @staticmethod
    def head_loss(inp, W_hq, b_q, Yt, g, T, B, nt):
        N = T * B
        O = inp @ W_hq
        O += b_q                                  # logits, time-major (N, V)
        O -= O.max(axis=1, keepdims=True)
        np.exp(O, out=O)
        O /= O.sum(axis=1, keepdims=True)         # softmax probabilities P
        rows = np.arange(N)
        Yi = Yt.reshape(N).astype(np.intp)
        loss = -float(np.log(O[rows, Yi].astype(np.float64)).mean())
        dO = O
        dO[rows, Yi] -= 1                         # dL/dO = P - onehot ...
        dO /= N                                   # ... averaged
        np.matmul(inp.T, dO, out=g["W_hq"])
        g["b_q"][...] = dO.sum(axis=0)
        return loss, (dO @ W_hq.T).reshape(T, B, -1)

    @staticmethod
    def weight_grads(cell, x, h0, Hs, dA, dAn, dW_xh, dW_hh, db_h, db_hn, nt):
        T, B, H = Hs.shape
        N = T * B
        dA2 = dA.reshape(N, -1)
        # whole-sequence weight gradients: dW_hh = H_prev^T dA_rec
        Hprev = np.empty((T, B, H), Hs.dtype)
        Hprev[0] = h0
        Hprev[1:] = Hs[:-1]
        Hprev = Hprev.reshape(N, H)
        if dAn is None:
            np.matmul(Hprev.T, dA2, out=dW_hh)
        else:                                     # GRU: the n block reads dL/dhn
            dW_hh[:, :2 * H] = Hprev.T @ dA2[:, :2 * H]
            dW_hh[:, 2 * H:] = Hprev.T @ dAn.reshape(N, H)
            db_hn[...] = dAn.reshape(N, H).sum(axis=0)
        db_h[...] = dA2.sum(axis=0)
        if x.ndim == 2 and x.dtype == np.int32:   # token ids (T, B): scatter-add rows
            _scatter_rows(dW_xh, x.reshape(N), dA2)
        else:
            np.matmul(x.T, dA2, out=dW_xh)

    @staticmethod
    def input_grad(dA, W_xh, T, B, nt):
        return (dA.reshape(T * B, -1) @ W_xh.T).reshape(T, B, -1)


def _stack(p, cell, L, nonlin, X_ids, X_dense, B, T, h, c, Yt, p_drop, seed, row_offset,
           nt, g):
    """Run the stack on checked input. h, c: (L, B, H) (c: LSTM, else None).

    Without targets (Yt None): returns (logits (B, T, V), h_T, c_T). With targets:
    fills the gradient dict g (keys of params, "h0", "c0" in the state's form) and
    returns (loss, h_T, c_T). h_T, c_T are (L, B, H).

    One driver for both backends: the compiled kernels (fastrnn._layers, _CompiledOps),
    whose OpenMP threads are the only thread owner of the step (no BLAS call sits
    between two parallel regions: its threads would spin against ours), or, when they
    did not build, numpy (_NumpyOps).
    """
    if _layers is None:
        return _stack_run(_NumpyOps, p, cell, L, nonlin, X_ids, X_dense, B, T, h, c, Yt,
                          p_drop, seed, row_offset, nt, g)
    with blas_single_thread():      # layer_weight_grads calls BLAS from our threads
        return _stack_run(_CompiledOps, p, cell, L, nonlin, X_ids, X_dense, B, T, h, c, Yt,
                          p_drop, seed, row_offset, nt, g)


def _stack_run(ops, p, cell, L, nonlin, X_ids, X_dense, B, T, h, c, Yt, p_drop, seed,
               row_offset, nt, g):
    dtype = p["W_hh"].dtype
    H = p["W_hh"].shape[0]
    N = T * B
    hT = np.empty((L, B, H), dtype)
    cT = np.empty((L, B, H), dtype) if c is not None else None
    inputs, caches, masks = [], [], []
    inp = None                                  # (N, H): the input of layer k >= 1
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        x, (Hs, Cs, Gs) = ops.forward(cell, nonlin, k, p["W_xh" + s], p["W_hh" + s],
                                      p["b_h" + s], p.get("b_hn" + s), X_ids, X_dense, inp,
                                      h[k], c[k] if c is not None else None, T, B, nt,
                                      Yt is not None)
        inputs.append(x)
        caches.append((Hs, Cs, Gs))
        hT[k] = Hs[T - 1]
        if cT is not None:
            cT[k] = Cs[T - 1]
        inp = Hs.reshape(N, H)
        if p_drop > 0 and k < L - 1:            # inverted dropout between layers
            masks.append(_params.dropout_mask(seed, k, T, row_offset, B, H, p_drop, dtype)
                         .reshape(N, H))
            inp = inp * masks[k]
    if Yt is None:
        return ops.logits(inp, p["W_hq"], p["b_q"], T, B, nt), hT, cT
    loss, dInp = ops.head_loss(inp, p["W_hq"], p["b_q"], Yt, g, T, B, nt)
    del inp
    dh0 = np.empty((L, B, H), dtype)
    dc0 = np.empty((L, B, H), dtype) if c is not None else None
    for k in reversed(range(L)):
        s = "" if k == 0 else f"_l{k}"
        Hs, Cs, Gs = caches[k]
        dA, dAn, dh0[k], dck = _layer_backward(cell, nonlin, dInp, Hs, Cs, Gs, h[k],
                                               c[k] if c is not None else None,
                                               p["W_hh" + s], nt, True)
        if dc0 is not None:
            dc0[k] = dck
        ops.weight_grads(cell, inputs[k], h[k], Hs, dA, dAn, g["W_xh" + s], g["W_hh" + s],
                         g["b_h" + s], g.get("b_hn" + s), nt)
        caches[k] = inputs[k] = None            # free the layer's activations before
        del Hs, Cs, Gs                          # the input-gradient work below
        if k > 0:                               # dL/d(input of layer k), (T, B, H)
            dInp = ops.input_grad(dA, p["W_xh" + s], T, B, nt)
            if masks:
                dInp *= masks[k - 1].reshape(T, B, H)   # through the dropout below
        del dA, dAn
    if "h0" in g:
        g["h0"][...] = dh0.reshape(g["h0"].shape)
    if dc0 is not None:
        g["c0"][...] = dc0.reshape(g["c0"].shape)
    return loss, hT, cT
