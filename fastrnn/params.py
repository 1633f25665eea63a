"""The one parameter table: cells, names, shapes and offsets in the flat buffer.

Every part of fastrnn that names parameters (initialisation, validation, the
model's flat buffer, the optimizer state, checkpoints, export) reads them from
here. Conventions (row vectors, as in the d2l chapter: ``x @ W``):

- A cell has G gates, stored as column blocks in PyTorch's order:
  rnn 1 (``h``), gru 3 (``r, z, n``), lstm 4 (``i, f, g, o``).
- Layer k has ``W_xh (D_k, G*H)``, ``W_hh (H, G*H)``, ``b_h (G*H,)`` and, GRU only,
  ``b_hn (H,)`` (the recurrent bias of the n gate). ``D_0 = D`` (the vocabulary
  size for a char-LM), ``D_k = H`` for k >= 1. Layer 0's names have no suffix,
  layer k >= 1's end in ``_l{k}`` (``W_xh_l1``).
- The head ``W_hq (H, V)``, ``b_q (V,)`` reads the top layer.
- Flat order: for each layer ``W_xh, W_hh, b_h, [b_hn]``, then ``W_hq, b_q``. For
  ``cell="rnn"`` with one layer this is fastrnn 0.1's order.

It also defines the dropout masks (:func:`dropout_mask`): one definition used by the
reference, the layer-stack driver and any compiled kernel.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

__all__ = ["CELLS", "GATES", "layout", "param_names", "flat_size", "infer_config", "views",
           "dropout_mask"]

#: Gate count G of each cell.
CELLS = {"rnn": 1, "gru": 3, "lstm": 4}

#: Gate names of each cell, in column-block order (PyTorch's).
GATES = {"rnn": ("h",), "gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}

_LAYER_NAME = re.compile(r"^(W_xh|W_hh|b_h|b_hn)(?:_l(\d+))?$")


def _check_cell(cell) -> str:
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got {cell!r}")
    return str(cell)


def _check_count(name, n, minimum=1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)


def _suffix(k: int) -> str:
    return "" if k == 0 else f"_l{k}"


def param_names(cell: str, num_layers: int = 1) -> list[str]:
    """Parameter names of a model, in flat-buffer order.

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
    num_layers : int
        L >= 1.

    Returns
    -------
    list of str
        ``W_xh, W_hh, b_h, [b_hn]`` for each layer (suffix ``_l{k}`` for k >= 1), then
        ``W_hq, b_q``.

    Raises
    ------
    ValueError
        Unknown cell, or ``num_layers < 1``.

    Examples
    --------
    >>> param_names("rnn")
    ['W_xh', 'W_hh', 'b_h', 'W_hq', 'b_q']
    >>> param_names("gru", 2)
    ['W_xh', 'W_hh', 'b_h', 'b_hn', 'W_xh_l1', 'W_hh_l1', 'b_h_l1', 'b_hn_l1', 'W_hq', 'b_q']
    """
    cell = _check_cell(cell)
    L = _check_count("num_layers", num_layers)
    extra = ("b_hn",) if cell == "gru" else ()
    names = []
    for k in range(L):
        names += [n + _suffix(k) for n in ("W_xh", "W_hh", "b_h") + extra]
    return names + ["W_hq", "b_q"]


def _shapes(cell, D, H, V, L):
    G = CELLS[cell]
    shapes = {}
    for k in range(L):
        s = _suffix(k)
        shapes["W_xh" + s] = (D if k == 0 else H, G * H)
        shapes["W_hh" + s] = (H, G * H)
        shapes["b_h" + s] = (G * H,)
        if cell == "gru":
            shapes["b_hn" + s] = (H,)
    shapes["W_hq"] = (H, V)
    shapes["b_q"] = (V,)
    return shapes


def layout(cell: str, D: int, H: int, V: int, num_layers: int = 1) -> list[tuple]:
    """Names, shapes and offsets of the parameters in one flat buffer.

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
    D, H, V : int
        Input size (vocabulary size for token ids), hidden size, output size; >= 1.
    num_layers : int
        L >= 1.

    Returns
    -------
    list of (name, shape, offset)
        In flat order (see :func:`param_names`); ``offset`` counts elements from the
        start of the buffer, with no padding between arrays.

    Raises
    ------
    ValueError, TypeError
        Unknown cell, or a size that is not an int >= 1.

    Examples
    --------
    >>> for name, shape, offset in layout("lstm", 5, 2, 5):
    ...     print(name, shape, offset)
    W_xh (5, 8) 0
    W_hh (2, 8) 40
    b_h (8,) 56
    W_hq (2, 5) 64
    b_q (5,) 74
    """
    cell = _check_cell(cell)
    D, H, V = (_check_count(n, v) for n, v in (("D", D), ("H", H), ("V", V)))
    L = _check_count("num_layers", num_layers)
    out, offset = [], 0
    for name, shape in _shapes(cell, D, H, V, L).items():
        out.append((name, shape, offset))
        offset += math.prod(shape)
    return out


def flat_size(lay) -> int:
    """Return the number of elements of the flat buffer that holds ``lay``.

    Parameters
    ----------
    lay : list of (name, shape, offset)
        A :func:`layout`.

    Returns
    -------
    int
        The offset of the last parameter plus its size.

    Examples
    --------
    >>> flat_size(layout("rnn", 5, 2, 5))
    31
    """
    name, shape, offset = lay[-1]
    return offset + math.prod(shape)


def _num_layers(params, cell) -> int:
    """L read from the names (W_xh_l{k}); rejects names that do not fit ``cell``."""
    _check_cell(cell)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of named arrays, got {type(params).__name__}")
    layers = {0}
    for key in params:
        m = _LAYER_NAME.match(key) if isinstance(key, str) else None
        if m is None:
            continue
        if m.group(1) == "b_hn" and cell != "gru":
            raise ValueError(f"params has {key!r}, which only cell='gru' uses; "
                             f"got cell={cell!r}")
        if m.group(2) is not None:
            k = int(m.group(2))
            if k == 0 or m.group(2) != str(k):
                raise ValueError(f"params has {key!r}: layer 0 has no suffix, layer k >= 1 "
                                 "is spelled _l{k}")
            layers.add(k)
    return max(layers) + 1


def infer_config(params: Mapping, cell: str = "rnn") -> tuple[int, int, int, int]:
    """Read ``(D, H, V, num_layers)`` from named parameters and check their shapes.

    The number of layers is read from the names (``W_xh_l{k}``); every name of
    :func:`param_names` must be present with the shape of :func:`layout`. Other keys
    are ignored, except layer names that do not belong to ``cell`` and ``num_layers``.

    Parameters
    ----------
    params : mapping of str to array-like
        Anything with a ``shape``; only names and shapes are read.
    cell : {"rnn", "gru", "lstm"}

    Returns
    -------
    D, H, V, num_layers : int
        Input width, hidden size, output width and number of layers.

    Raises
    ------
    ValueError
        Unknown cell; a missing parameter; a layer name that does not fit (``b_hn``
        with a cell other than gru, a layer index past a gap); a shape that does not fit
        ``cell`` (the message names the parameter and both shapes).
    TypeError
        ``params`` is not a mapping.

    Examples
    --------
    >>> import numpy as np
    >>> p = {"W_xh": np.zeros((5, 12)), "W_hh": np.zeros((3, 12)), "b_h": np.zeros(12),
    ...      "W_hq": np.zeros((3, 5)), "b_q": np.zeros(5)}
    >>> infer_config(p, "lstm")
    (5, 3, 5, 1)
    >>> infer_config(p, "gru")            # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: params['W_xh'] has shape (5, 12), expected (5, 9) for cell='gru' (G=3) ...
    >>> del p["b_q"]; infer_config(p, "lstm")
    Traceback (most recent call last):
    ...
    ValueError: params is missing 'b_q' (cell='lstm', num_layers=1)
    """
    L = _num_layers(params, cell)
    missing = [n for n in param_names(cell, L) if n not in params]
    if missing:
        # parameters of another cell (LSTM's given as GRU's lack b_hn): the shapes say so
        present = {n: params[n] for n in param_names(cell, L) if n in params}
        if all(n in present for n in ("W_xh", "W_hh", "W_hq")):
            try:
                _check_shapes(present, cell, L)
            except ValueError as exc:
                if "has shape" in str(exc):
                    raise
        raise ValueError(f"params is missing {', '.join(map(repr, missing))} "
                         f"(cell={cell!r}, num_layers={L})")
    return _check_shapes(params, cell, L)


def _check_shapes(params, cell, L):
    """(D, H, V, L) after checking the shapes of the names of ``cell`` in params."""

    def shape_of(name):
        try:
            return tuple(np.shape(params[name]))
        except Exception as exc:  # noqa: BLE001 - report which parameter
            raise TypeError(f"params[{name!r}] has no shape: {exc}") from None

    ndims = {"W": 2, "b": 1}
    names = [n for n in param_names(cell, L) if n in params]
    for name in names:
        if len(shape_of(name)) != ndims[name[0]]:
            raise ValueError(f"params[{name!r}] must be {ndims[name[0]]}-D, "
                             f"got shape {shape_of(name)}")
    D, H, V = shape_of("W_xh")[0], shape_of("W_hh")[0], shape_of("W_hq")[1]
    for what, n in (("D (input size, W_xh.shape[0])", D), ("H (hidden size, W_hh.shape[0])", H),
                    ("V (output size, W_hq.shape[1])", V)):
        if n < 1:
            raise ValueError(f"{what} must be >= 1, got {n}")
    for name, expected in _shapes(cell, D, H, V, L).items():
        if name not in params:
            continue
        got = shape_of(name)
        if got != expected:
            raise ValueError(f"params[{name!r}] has shape {got}, expected {expected} for "
                             f"cell={cell!r} (G={CELLS[cell]}) with D={D}, H={H}, V={V}, "
                             f"num_layers={L} (D, H, V read from W_xh.shape[0], "
                             "W_hh.shape[0], W_hq.shape[1])")
    return D, H, V, L


def views(flat: np.ndarray, lay) -> dict:
    """Named views into one flat 1-D buffer.

    Parameters
    ----------
    flat : ndarray, 1-D
        At least :func:`flat_size` ``(lay)`` elements; elements past it are not used.
    lay : list of (name, shape, offset)
        A :func:`layout`.

    Returns
    -------
    dict of str to ndarray
        ``name -> flat[offset: offset + size].reshape(shape)``, views (writes go to
        ``flat``), in flat order.

    Raises
    ------
    ValueError
        ``flat`` is not 1-D or is too short.

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.arange(31.0)
    >>> v = views(flat, layout("rnn", 5, 2, 5))
    >>> v["b_h"]
    array([14., 15.])
    >>> v["b_h"][0] = -1.0; float(flat[14])
    -1.0
    """
    if not isinstance(flat, np.ndarray) or flat.ndim != 1:
        raise ValueError(f"flat must be a 1-D numpy array, got "
                         f"{getattr(flat, 'shape', type(flat).__name__)}")
    need = flat_size(lay)
    if flat.size < need:
        raise ValueError(f"flat has {flat.size} elements, the layout needs {need}")
    return {name: flat[off: off + math.prod(shape)].reshape(shape)
            for name, shape, off in lay}


# ---------------------------------------------------------------------------
# dropout masks

_M64 = (1 << 64) - 1
_GOLD = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix_int(z: int) -> int:
    """splitmix64's finaliser on a Python int (mod 2**64)."""
    z &= _M64
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _M64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wraps mod 2**64), in place."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def dropout_mask(seed: int, layer: int, T: int, row_offset: int, B: int, H: int, p: float,
                 dtype="float32") -> np.ndarray:
    """Inverted-dropout mask of one layer's output for every step of a call.

    Each value is a pure function of ``(seed, layer, t, row_offset + b, j)``, so masks
    do not depend on threads, on how a batch is split across callers (each passes
    the global index of its first row) or on interruptions. With all arithmetic
    mod 2**64 (splitmix64's finaliser as ``mix``)::

        GOLD = 0x9E3779B97F4A7C15
        h = mix(seed + GOLD * (layer + 1))
        h = mix(h + GOLD * (t + 1))
        h = mix(h + GOLD * (row_offset + b + 1))
        h = mix(h + GOLD * (j + 1))
        keep = (h >> 40) >= ceil(p * 2**24)          # u = (h >> 40) / 2**24 >= p
        mask = keep * (1 / (1 - p))                  # 1/(1-p) in float64, then dtype

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    layer : int
        k >= 0, the layer whose output is masked (the input of layer k + 1).
    T : int
        Steps in the call (t = 0 .. T-1 counts from the start of the call).
    row_offset : int
        Global index of the first row (0 for a whole batch).
    B, H : int
        Rows and units.
    p : float
        Drop probability in ``[0, 1)``.
    dtype : {"float32", "float64"}

    Returns
    -------
    ndarray (T, B, H)
        Time-major; each value is 0 or ``1/(1-p)``.

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type (named in the message).

    Examples
    --------
    >>> m = dropout_mask(7, 0, 3, 0, 4, 5, 0.5, "float64")
    >>> m.shape, sorted(set(m.ravel().tolist()))
    ((3, 4, 5), [0.0, 2.0])
    >>> bool((dropout_mask(7, 0, 3, 2, 2, 5, 0.5, "float64") == m[:, 2:]).all())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    layer = _check_count("layer", layer, 0)
    T = _check_count("T", T, 0)
    row_offset = _check_count("row_offset", row_offset, 0)
    B = _check_count("B", B, 0)
    H = _check_count("H", H, 0)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a real number, got {type(p).__name__}")
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    out = np.empty((T, B, H), dt)
    threshold = np.uint64(math.ceil(p * 2.0**24))
    if threshold == 0:           # p so small that every u >= p: nothing is dropped
        out[...] = 1.0
        return out
    scale = dt.type(1.0 / (1.0 - p))
    gold = np.uint64(_GOLD)
    h_layer = _mix_int(int(seed) + _GOLD * (layer + 1))
    rows = gold * (np.arange(row_offset, row_offset + B, dtype=np.uint64) + np.uint64(1))
    units = gold * (np.arange(H, dtype=np.uint64) + np.uint64(1))
    for t in range(T):
        h_t = np.uint64(_mix_int(h_layer + _GOLD * (t + 1)))
        h_r = _mix(rows + h_t)                              # (B,)
        h = _mix(h_r[:, None] + units[None, :])             # (B, H)
        keep = (h >> np.uint64(40)) >= threshold
        np.multiply(keep, scale, out=out[t], dtype=dt)
    return out
