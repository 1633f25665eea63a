"""Using fastrnn models elsewhere: PyTorch state dicts both ways, ONNX export.

Neither PyTorch nor ONNX is a dependency of fastrnn: ``torch`` is imported only
by :func:`to_torch_module` (install it with ``pip install 'fastrnn[torch]'``),
``onnx`` only by :func:`export_onnx` (``pip install 'fastrnn[onnx]'``, which also
installs ``onnxruntime`` to run the exported file). :func:`to_torch_state_dict`
and :func:`from_torch_state_dict` work on NumPy arrays and need neither.

Parameter names (see :mod:`fastrnn.params`): layer ``k`` has ``W_xh``, ``W_hh``,
``b_h`` (and ``b_hn`` for GRU), with the suffix ``_l{k}`` for ``k >= 1``; the head is
``W_hq``, ``b_q``. Gates are column blocks in PyTorch's order (GRU: r, z, n; LSTM: i,
f, g, o) and fastrnn multiplies row vectors (``x @ W_xh``), so ``W_xh`` is PyTorch's
``weight_ih.T``. fastrnn has one bias per gate where PyTorch has two
(``bias_ih + bias_hh``) except for the GRU's n gate, whose recurrent bias sits inside
``r * (h W_hn + b_hn)``: that one is fastrnn's ``b_hn``.

The PyTorch model
-----------------
:func:`to_torch_state_dict` writes, and :func:`from_torch_state_dict` reads, the
state dict of this module (``D`` inputs, ``H`` hidden units, ``L`` layers, ``V``
outputs; the input of layer 0 is the one-hot code of the ids, so ``D = V`` for a
char-LM)::

    class Model(nn.Module):                    # fastrnn.export.TorchCharLM is this
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(D, H, num_layers=L, batch_first=True)  # or nn.RNN, nn.GRU
            self.head = nn.Linear(H, V)

    keys: rnn.weight_ih_l{k} (G*H, D_k), rnn.weight_hh_l{k} (G*H, H),
          rnn.bias_ih_l{k} (G*H,), rnn.bias_hh_l{k} (G*H,), head.weight (V, H),
          head.bias (V,)         (G = 1, 3, 4 for rnn, gru, lstm; D_0 = D, D_k = H)

:func:`from_torch_state_dict` also accepts these spellings (:data:`ACCEPTED_KEYS`):

- the recurrent layers under ``rnn.``, ``gru.``, ``lstm.`` or no prefix;
- the head under ``head.``, ``fc.``, ``decoder.`` or ``linear.``;
- an optional embedding ``embedding.weight``, ``embed.weight``, ``emb.weight`` or
  ``encoder.weight`` (``nn.Embedding(V, E)``, then ``weight_ih_l0`` is ``(G*H, E)``):
  it is folded into layer 0 exactly, ``W_xh = embedding.weight @ weight_ih_l0.T``
  (one-hot ids times ``W_xh`` is the embedding row times ``weight_ih_l0.T``);
- every key prefixed by ``module.`` (a model saved from ``nn.DataParallel`` or
  ``DistributedDataParallel``).

Bidirectional layers (``*_reverse`` keys), LSTM projections (``weight_hr_l{k}``) and
layers without biases (``bias=False``) are not fastrnn models and are refused.
Dropout has no parameters and is not part of fastrnn's inference: a model trained
with dropout imports (and exports) as its inference model.

ONNX
----
:func:`export_onnx` writes a standard ONNX graph (built with ``onnx.helper``):
``OneHot`` ids, one ONNX ``RNN``/``GRU`` (``linear_before_reset=1``)/``LSTM``
operator per layer, then the head ``MatMul`` + ``Add``. It runs in ONNX Runtime
with no custom operators. See :func:`export_onnx` for its inputs and outputs.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import params as _params

__all__ = ["to_torch_state_dict", "from_torch_state_dict", "to_torch_module",
           "export_onnx", "DEFAULT_OPSET", "ACCEPTED_KEYS"]

_CELLS = _params.CELLS          # gate counts: rnn 1, gru 3, lstm 4

#: The ONNX opset :func:`export_onnx` writes by default: opset 17 (ONNX 1.12), which
#: ONNX Runtime 1.12 and every later release runs. Any opset from 13 (``Squeeze``
#: taking its axes as an input) to the installed onnx package's newest can be asked for.
DEFAULT_OPSET = 17
_MIN_OPSET = 13

#: Key spellings :func:`from_torch_state_dict` accepts (``module.`` may precede all keys).
ACCEPTED_KEYS = {
    "recurrent_prefixes": ("rnn.", "gru.", "lstm.", ""),
    "head_prefixes": ("head.", "fc.", "decoder.", "linear."),
    "embedding_keys": ("embedding.weight", "embed.weight", "emb.weight", "encoder.weight"),
}

# ONNX's gate orders, as indices of fastrnn's (PyTorch's) blocks:
# GRU  fastrnn r, z, n      -> ONNX z, r, h
# LSTM fastrnn i, f, g, o   -> ONNX i, o, f, c
_ONNX_GATES = {"rnn": (0,), "gru": (1, 0, 2), "lstm": (0, 3, 1, 2)}


# ---------------------------------------------------------------------------
# fastrnn parameters

def _check_cell(cell: Any) -> str:
    if not isinstance(cell, str) or cell not in _CELLS:
        raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
    return str(cell)


def _check_nonlinearity(nonlinearity: Any) -> str:
    if not isinstance(nonlinearity, str) or nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return str(nonlinearity)


def _sfx(k: int) -> str:
    return "" if k == 0 else f"_l{k}"


def _config(params: Any, cell: str) -> tuple[int, int, int, int, np.dtype]:
    """(D, H, V, L, dtype) of fastrnn parameters, after checking every name and shape
    (:func:`fastrnn.params.infer_config`), that there are no other entries, one float
    dtype and finite values."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of arrays, got {type(params).__name__}")
    try:
        D, H, V, L = _params.infer_config(params, cell)
    except ValueError as exc:
        W_hh = params.get("W_hh")
        fits = [c for c, g in _CELLS.items() if c != cell and getattr(W_hh, "ndim", 0) == 2
                and W_hh.shape[1] == g * W_hh.shape[0]]
        raise ValueError(f"{exc}" + (f"; W_hh {W_hh.shape} fits cell={fits[0]!r}"
                                     if fits else "")) from None
    expected = _params.param_names(cell, L)
    extra = sorted(set(params) - set(expected), key=str)
    if extra:
        raise ValueError(f"params has unexpected entries {extra} for cell={cell!r} with "
                         f"{L} layer(s)")
    dt = None
    for n in expected:
        a = params[n]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"params[{n!r}] must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"params[{n!r}] must be float32 or float64, got {a.dtype}")
        if dt is None:
            dt = a.dtype
        elif a.dtype != dt:
            raise TypeError(f"params must share one dtype: params['W_xh'] is {dt}, "
                            f"params[{n!r}] is {a.dtype}")
    for n in expected:
        if not np.isfinite(params[n]).all():
            raise ValueError(f"params[{n!r}] contains NaN or inf")
    return D, H, V, L, np.dtype(dt)


def to_torch_state_dict(params: Mapping[str, np.ndarray], *, cell: str = "rnn") -> dict:
    """Convert fastrnn parameters to the state dict of a PyTorch RNN/GRU/LSTM + Linear.

    Parameters
    ----------
    params : dict of ndarray
        The fastrnn parameters of ``cell`` (any number of layers), float32 or float64.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell of ``params``.

    Returns
    -------
    dict of ndarray
        ``rnn.weight_ih_l{k}``, ``rnn.weight_hh_l{k}``, ``rnn.bias_ih_l{k}``,
        ``rnn.bias_hh_l{k}`` for each layer, then ``head.weight``, ``head.bias``, in
        PyTorch's order and shapes and the parameters' dtype (fresh C-contiguous
        arrays; ``torch.from_numpy`` takes them as they are). The combined bias
        ``b_h`` goes to ``bias_ih`` and ``bias_hh`` is zero, except the GRU's n block
        of ``bias_hh``, which is ``b_hn``. Load it into the module described in
        :mod:`fastrnn.export` (or build that with :func:`to_torch_module`).

    Raises
    ------
    ValueError, TypeError
        An unknown cell, or parameters that do not fit it (naming the parameter).

    See Also
    --------
    from_torch_state_dict : The inverse.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(5, 4, cell="gru", num_layers=2, seed=0)
    >>> sd = fastrnn.to_torch_state_dict(p, cell="gru")
    >>> [(k, v.shape) for k, v in sd.items()][:4]
    [('rnn.weight_ih_l0', (12, 5)), ('rnn.weight_hh_l0', (12, 4)), ('rnn.bias_ih_l0', (12,)), ('rnn.bias_hh_l0', (12,))]
    >>> bool((sd["rnn.bias_hh_l0"][8:] == p["b_hn"]).all())      # GRU: n block is b_hn
    True
    """
    cell = _check_cell(cell)
    D, H, V, L, dt = _config(params, cell)
    sd = {}
    for k in range(L):
        s = _sfx(k)
        b_hh = np.zeros(_CELLS[cell] * H, dt)
        if cell == "gru":
            b_hh[2 * H:] = params[f"b_hn{s}"]
        sd[f"rnn.weight_ih_l{k}"] = np.ascontiguousarray(params[f"W_xh{s}"].T)
        sd[f"rnn.weight_hh_l{k}"] = np.ascontiguousarray(params[f"W_hh{s}"].T)
        sd[f"rnn.bias_ih_l{k}"] = np.array(params[f"b_h{s}"], dt, copy=True)
        sd[f"rnn.bias_hh_l{k}"] = b_hh
    sd["head.weight"] = np.ascontiguousarray(params["W_hq"].T)
    sd["head.bias"] = np.array(params["b_q"], dt, copy=True)
    for k, v in sd.items():      # .T of a 1-row/1-column array may be the same memory
        if any(np.shares_memory(v, a) for a in params.values()):
            sd[k] = v.copy()
    return sd


# ---------------------------------------------------------------------------
# PyTorch state dict -> fastrnn

def _to_numpy(v: Any, key: str) -> np.ndarray:
    """An array from a NumPy array, a torch.Tensor (without importing torch) or a list."""
    if not isinstance(v, np.ndarray) and hasattr(v, "detach") and hasattr(v, "numpy"):
        t = v.detach()
        if hasattr(t, "cpu"):
            t = t.cpu()
        try:
            v = t.numpy()
        except TypeError:        # bfloat16 and other dtypes NumPy lacks
            v = t.double().numpy()
    try:
        a = np.asarray(v)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"state_dict[{key!r}] could not be converted to an array: "
                        f"{exc}") from None
    if a.dtype.kind != "f":
        raise TypeError(f"state_dict[{key!r}] must be a floating-point array, got dtype "
                        f"{a.dtype}")
    return a


def _strip_module(keys: list[str]) -> str:
    return "module." if keys and all(k.startswith("module.") for k in keys) else ""


def from_torch_state_dict(state_dict: Mapping[str, Any], *, cell: str = "rnn",
                          dtype: Any = None) -> dict:
    """Convert the state dict of a PyTorch RNN/GRU/LSTM char-LM to fastrnn parameters.

    Parameters
    ----------
    state_dict : mapping of str to array
        NumPy arrays (torch is then never imported) or ``torch.Tensor`` values (read
        with ``.detach().cpu().numpy()``), keyed as described in :mod:`fastrnn.export`
        (``rnn.weight_ih_l0``, ..., ``head.weight``, ``head.bias``, optionally an
        ``nn.Embedding`` that is folded into layer 0; see :data:`ACCEPTED_KEYS`).
    cell : {"rnn", "gru", "lstm"}
        The recurrent module's type (``nn.RNN``, ``nn.GRU``, ``nn.LSTM``). A plain
        RNN's nonlinearity is not in its state dict: pass it to fastrnn separately.
    dtype : {None, "float32", "float64"}
        dtype of the result; None: float64 if every array is float64, else float32.

    Returns
    -------
    dict of ndarray
        The fastrnn parameters (``W_xh``, ``W_hh``, ``b_h`` [, ``b_hn``] per layer with
        ``_l{k}`` suffixes, ``W_hq``, ``b_q``): ``W = weight.T``, ``b_h = bias_ih +
        bias_hh`` (GRU: the n block of ``b_h`` is ``bias_ih``'s alone and ``b_hn`` is
        ``bias_hh``'s n block), computed in float64 and rounded once.

    Raises
    ------
    ValueError
        Naming the key: a missing, unexpected or mis-shaped array (including a state
        dict of another cell type, bidirectional layers or LSTM projections), or a
        non-finite value.
    TypeError
        A value that is not a floating-point array.

    See Also
    --------
    to_torch_state_dict : The inverse.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(5, 4, cell="lstm", seed=0, dtype="float64")
    >>> sd = fastrnn.to_torch_state_dict(p, cell="lstm")
    >>> q = fastrnn.from_torch_state_dict(sd, cell="lstm")
    >>> all((q[k] == p[k]).all() for k in p)                       # exact round trip
    True
    >>> fastrnn.from_torch_state_dict(sd, cell="gru")              # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    cell = _check_cell(cell)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of arrays, got "
                        f"{type(state_dict).__name__}")
    bad_keys = [k for k in state_dict if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"state_dict keys must be str, got {bad_keys[0]!r}")
    mod = _strip_module(list(state_dict))
    sd = {k[len(mod):]: v for k, v in state_dict.items()}
    G = _CELLS[cell]

    rnn_p = [p for p in ACCEPTED_KEYS["recurrent_prefixes"] if f"{p}weight_ih_l0" in sd]
    if not rnn_p:
        raise ValueError(f"state_dict has no recurrent layer: expected the key "
                         f"'{mod}rnn.weight_ih_l0' (or under 'gru.', 'lstm.' or no prefix); "
                         f"keys: {sorted(state_dict)[:12]}")
    if len(rnn_p) > 1:
        raise ValueError(f"state_dict has several recurrent modules "
                         f"{[mod + p + 'weight_ih_l0' for p in rnn_p]}; expected one")
    rp = rnn_p[0]
    head_p = [p for p in ACCEPTED_KEYS["head_prefixes"]
              if f"{p}weight" in sd or f"{p}bias" in sd]
    if not head_p:
        raise ValueError(f"state_dict is missing the output layer: expected "
                         f"'{mod}head.weight' and '{mod}head.bias' (or under 'fc.', "
                         f"'decoder.', 'linear.')")
    if len(head_p) > 1:
        raise ValueError(f"state_dict has several output layers {[mod + p for p in head_p]}; "
                         f"expected one")
    hp = head_p[0]
    emb_k = [k for k in ACCEPTED_KEYS["embedding_keys"] if k in sd]
    if len(emb_k) > 1:
        raise ValueError(f"state_dict has several embeddings {[mod + k for k in emb_k]}")
    L = 1
    while f"{rp}weight_ih_l{L}" in sd:
        L += 1
    expected = [f"{rp}{w}_l{k}" for k in range(L)
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    expected += [f"{hp}weight", f"{hp}bias"] + emb_k
    extra = sorted(set(sd) - set(expected))
    if extra:
        why = ""
        if any("_reverse" in k for k in extra):
            why = " (bidirectional layers are not supported)"
        elif any(re.search(r"weight_hr_l\d+$", k) for k in extra):
            why = " (LSTM projections, proj_size > 0, are not supported)"
        elif any(re.search(r"(weight|bias)_(ih|hh)_l\d+$", k) for k in extra):
            why = f" (layers must be numbered 0..L-1 without gaps; found {L})"
        raise ValueError(f"state_dict has unexpected keys {[mod + k for k in extra]}{why}")
    missing = [k for k in expected if k not in sd]
    if missing:
        why = (" (layers without biases, bias=False, are not supported)"
               if all("bias" in k for k in missing) else "")
        raise ValueError(f"state_dict is missing {[mod + k for k in missing]}{why}")

    arrs = {k: _to_numpy(sd[k], mod + k) for k in expected}

    def shape_error(k, want, note=""):
        return ValueError(f"state_dict[{mod + k!r}] has shape {arrs[k].shape}, expected "
                          f"{want} for cell={cell!r}{note}")

    w_hh0 = arrs[f"{rp}weight_hh_l0"]
    if w_hh0.ndim != 2 or w_hh0.shape[1] < 1:
        raise shape_error(f"{rp}weight_hh_l0", "(G*H, H)")
    H = w_hh0.shape[1]
    if w_hh0.shape[0] != G * H:
        fits = [c for c, g in _CELLS.items() if w_hh0.shape[0] == g * H]
        raise shape_error(f"{rp}weight_hh_l0", (G * H, H), f" (H={H} from its columns)" + (
            f"; it fits cell={fits[0]!r}" if fits else ""))
    w_ih0 = arrs[f"{rp}weight_ih_l0"]
    if w_ih0.ndim != 2 or w_ih0.shape[0] != G * H or w_ih0.shape[1] < 1:
        raise shape_error(f"{rp}weight_ih_l0", f"({G * H}, input_size)", f" (H={H})")
    E = w_ih0.shape[1]
    if emb_k:
        emb = arrs[emb_k[0]]
        if emb.ndim != 2 or emb.shape[1] != E or emb.shape[0] < 1:
            raise shape_error(emb_k[0], f"(V, {E})",
                              f" (an embedding of width {E} = weight_ih_l0's columns)")
    head_w = arrs[f"{hp}weight"]
    if head_w.ndim != 2 or head_w.shape[1] != H or head_w.shape[0] < 1:
        raise shape_error(f"{hp}weight", f"(V, {H})", f" (H={H})")
    V = head_w.shape[0]
    want = {f"{hp}bias": (V,)}
    for k in range(L):
        want.update({f"{rp}weight_ih_l{k}": (G * H, E if k == 0 else H),
                     f"{rp}weight_hh_l{k}": (G * H, H),
                     f"{rp}bias_ih_l{k}": (G * H,), f"{rp}bias_hh_l{k}": (G * H,)})
    for k, shape in want.items():
        if arrs[k].shape != shape:
            raise shape_error(k, shape, f" (H={H}, V={V}, {L} layer(s))")
    for k in expected:
        if not np.isfinite(arrs[k]).all():
            raise ValueError(f"state_dict[{mod + k!r}] contains NaN or inf")

    if dtype is None:
        dt = (np.dtype(np.float64) if all(a.dtype == np.float64 for a in arrs.values())
              else np.dtype(np.float32))
    else:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
    from ._core import empty_aligned

    def out(a):
        o = empty_aligned(a.shape, dt)       # whole cache lines, as init_params gives
        with np.errstate(over="ignore"):       # values beyond float32: reported below
            o[...] = a
        return o

    f64 = {k: a.astype(np.float64) for k, a in arrs.items()}
    params = {}
    for k in range(L):
        s = _sfx(k)
        w_ih = f64[f"{rp}weight_ih_l{k}"]
        if k == 0 and emb_k:
            W_xh = f64[emb_k[0]] @ w_ih.T        # one-hot ids -> embedding row -> layer 0
        else:
            W_xh = w_ih.T
        b_ih, b_hh = f64[f"{rp}bias_ih_l{k}"], f64[f"{rp}bias_hh_l{k}"]
        b_h = b_ih + b_hh
        params[f"W_xh{s}"] = out(W_xh)
        params[f"W_hh{s}"] = out(f64[f"{rp}weight_hh_l{k}"].T)
        if cell == "gru":
            b_h[2 * H:] = b_ih[2 * H:]
            params[f"b_h{s}"] = out(b_h)
            params[f"b_hn{s}"] = out(b_hh[2 * H:])
        else:
            params[f"b_h{s}"] = out(b_h)
    params["W_hq"] = out(f64[f"{hp}weight"].T)
    params["b_q"] = out(f64[f"{hp}bias"])
    for k, a in params.items():
        if not np.isfinite(a).all():          # e.g. a float64 value beyond float32's range
            raise ValueError(f"params[{k!r}] is not finite in {dt} (from the state dict's "
                             f"values); import with dtype='float64'")
    return params


# ---------------------------------------------------------------------------
# PyTorch module

def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"this needs PyTorch (pip install 'fastrnn[torch]'): {exc}") from None
    return torch


_TORCH_CLASS = None


def _torch_lm_class():
    """TorchCharLM, defined on first use so that importing fastrnn never imports torch."""
    global _TORCH_CLASS
    if _TORCH_CLASS is not None:
        return _TORCH_CLASS
    torch = _import_torch()
    nn = torch.nn

    class TorchCharLM(nn.Module):
        """fastrnn's char-LM in PyTorch: one-hot ids -> RNN/GRU/LSTM -> Linear.

        ``forward(ids, state=None)`` returns ``(logits, state)`` as
        :func:`fastrnn.forward` does: ``ids`` are integer ``(B, T)`` (or dense float
        inputs ``(B, T, D)``), logits ``(B, T, V)``; ``state`` is None (zeros),
        ``(B, H)`` when there is one layer, or ``(L, B, H)``; for LSTM a tuple
        ``(h, c)`` of two such. The state comes back in the form it was given
        (``(B, H)`` for None with one layer, ``(L, B, H)`` with more).
        """

        def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int,
                     num_layers: int = 1, nonlinearity: str = "tanh"):
            super().__init__()
            cell = _check_cell(cell)
            nonlinearity = _check_nonlinearity(nonlinearity)
            self.cell, self.nonlinearity = cell, nonlinearity
            self.input_size, self.hidden_size = input_size, hidden_size
            self.output_size, self.num_layers = output_size, num_layers
            kw = dict(num_layers=num_layers, batch_first=True)
            if cell == "rnn":
                self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kw)
            else:
                self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(input_size, hidden_size,
                                                                   **kw)
            self.head = nn.Linear(hidden_size, output_size)

        def forward(self, ids, state=None):
            dt = self.head.weight.dtype
            if ids.is_floating_point():
                x = ids.to(dt)
            else:
                x = nn.functional.one_hot(ids.long(), self.input_size).to(dt)
            squeeze = False
            if state is not None:
                parts = list(state) if self.cell == "lstm" else [state]
                if self.cell == "lstm" and len(parts) != 2:
                    raise ValueError("an LSTM state is a tuple (h, c)")
                squeeze = parts[0].dim() == 2
                if squeeze and self.num_layers != 1:
                    raise ValueError(f"a (B, H) state is only for one layer; this model has "
                                     f"{self.num_layers}: pass (L, B, H)")
                if squeeze:
                    parts = [p.unsqueeze(0) for p in parts]
                state = tuple(parts) if self.cell == "lstm" else parts[0]
            else:
                squeeze = self.num_layers == 1
            y, s = self.rnn(x, state)
            logits = self.head(y)
            if squeeze:
                s = tuple(p.squeeze(0) for p in s) if self.cell == "lstm" else s.squeeze(0)
            return logits, s

    TorchCharLM.__module__ = __name__
    TorchCharLM.__qualname__ = "TorchCharLM"
    _TORCH_CLASS = TorchCharLM
    return TorchCharLM


def __getattr__(name):          # fastrnn.export.TorchCharLM, imported on first use
    if name == "TorchCharLM":
        return _torch_lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_torch_module(params: Mapping[str, np.ndarray], *, cell: str = "rnn",
                    nonlinearity: str = "tanh"):
    """Build a ready ``torch.nn.Module`` computing what fastrnn computes with ``params``.

    The module is a ``fastrnn.export.TorchCharLM`` (``rnn``: ``nn.RNN``/``nn.GRU``/
    ``nn.LSTM`` with ``batch_first=True``, ``head``: ``nn.Linear``) holding
    :func:`to_torch_state_dict` ``(params)`` in the parameters' dtype, in training
    mode as PyTorch modules start (it has no dropout, so eval() changes nothing).
    ``forward(ids, state=None)`` returns ``(logits, state)`` like
    :func:`fastrnn.forward`. Needs PyTorch.

    Parameters
    ----------
    params : dict of ndarray
        The fastrnn parameters of ``cell``, any number of layers.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell of ``params``.
    nonlinearity : {"tanh", "relu"}
        ``cell="rnn"`` only.

    Returns
    -------
    torch.nn.Module
        The module, with the parameters copied in.

    Raises
    ------
    ImportError
        PyTorch is not installed (``pip install "fastrnn[torch]"``).
    ValueError, TypeError
        An unknown cell or nonlinearity, or parameters that do not fit the cell.

    Examples
    --------
    >>> import torch                                                 # doctest: +SKIP
    >>> p = fastrnn.init_params(5, 4, cell="lstm", seed=0)
    >>> m = fastrnn.export.to_torch_module(p, cell="lstm")          # doctest: +SKIP
    >>> logits, (h, c) = m(torch.tensor([[0, 1, 2]]))               # doctest: +SKIP
    >>> logits.shape                                                 # doctest: +SKIP
    torch.Size([1, 3, 5])
    """
    cell = _check_cell(cell)
    nonlinearity = _check_nonlinearity(nonlinearity)
    D, H, V, L, dt = _config(params, cell)
    torch = _import_torch()
    m = _torch_lm_class()(cell, D, H, V, L, nonlinearity if cell == "rnn" else "tanh")
    m = m.to(torch.float64 if dt == np.float64 else torch.float32)
    sd = to_torch_state_dict(params, cell=cell)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return m


# ---------------------------------------------------------------------------
# ONNX

def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper, TensorProto
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the onnx package (pip install "
                          f"'fastrnn[onnx]'): {exc}") from None
    return onnx, helper, numpy_helper, TensorProto


def _onnx_blocks(a: np.ndarray, cell: str, H: int) -> np.ndarray:
    """The gate blocks of the last axis of a (..., G*H) in ONNX's gate order."""
    return np.concatenate([a[..., g * H:(g + 1) * H] for g in _ONNX_GATES[cell]], axis=-1)


def _build_onnx(params, cell, nonlinearity, D, H, V, L, opset, meta):
    onnx, helper, numpy_helper, TP = _import_onnx()
    G = _CELLS[cell]
    f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
    inits, nodes = [], []

    def init(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **attrs))
        return outs[0]

    # ids (B, T) -> time-major one-hot rows (T, B, D): layer 0's X
    ids_tb = node("Transpose", ["ids"], ["ids_tb"], perm=[1, 0])
    x = node("OneHot", [ids_tb, init("onehot_depth", np.array([D], np.int64)),
                        init("onehot_values", np.array([0, 1], np.float32))],
             ["x_onehot"], axis=-1)
    ax0, ax1 = init("axis0", np.array([0], np.int64)), init("axis1", np.array([1], np.int64))
    h_outs, c_outs = [], []
    for k in range(L):
        s = _sfx(k)
        # ONNX: W (1, G*H, D_k), R (1, G*H, H), B (1, 2*G*H) = [Wb, Rb], gates reordered
        W = _onnx_blocks(params[f"W_xh{s}"], cell, H).T[None]
        R = _onnx_blocks(params[f"W_hh{s}"], cell, H).T[None]
        Rb = np.zeros(G * H, np.float64)
        if cell == "gru":
            Rb[2 * H:] = params[f"b_hn{s}"]
        Bias = np.concatenate([_onnx_blocks(params[f"b_h{s}"], cell, H),
                               _onnx_blocks(Rb, cell, H)])[None]
        lo, hi = init(f"layer{k}_lo", np.array([k], np.int64)), init(
            f"layer{k}_hi", np.array([k + 1], np.int64))
        ins = [x, init(f"W{k}", f32(W)), init(f"R{k}", f32(R)), init(f"B{k}", f32(Bias)), "",
               node("Slice", ["h0", lo, hi, ax0], [f"h0_{k}"])]
        outs = [f"Y{k}", f"Yh{k}"]
        attrs = {"hidden_size": H}
        if cell == "lstm":
            ins.append(node("Slice", ["c0", lo, hi, ax0], [f"c0_{k}"]))
            outs.append(f"Yc{k}")
            op = "LSTM"
        elif cell == "gru":
            op = "GRU"
            attrs["linear_before_reset"] = 1
        else:
            op = "RNN"
            attrs["activations"] = ["Tanh" if nonlinearity == "tanh" else "Relu"]
        node(op, ins, outs, **attrs)
        h_outs.append(f"Yh{k}")
        if cell == "lstm":
            c_outs.append(f"Yc{k}")
        x = node("Squeeze", [f"Y{k}", ax1], [f"x{k + 1}"])      # (T, 1, B, H) -> (T, B, H)
    node("Concat", h_outs, ["hT"], axis=0)
    if cell == "lstm":
        node("Concat", c_outs, ["cT"], axis=0)
    y = node("Transpose", [x], ["y_bt"], perm=[1, 0, 2])       # (B, T, H)
    o = node("MatMul", [y, init("W_hq", f32(params["W_hq"]))], ["o"])
    node("Add", [o, init("b_q", f32(params["b_q"]))], ["logits"])

    st = lambda n: helper.make_tensor_value_info(n, TP.FLOAT, [L, "batch", H])  # noqa: E731
    inputs = [helper.make_tensor_value_info("ids", TP.INT64, ["batch", "time"]), st("h0")]
    outputs = [helper.make_tensor_value_info("logits", TP.FLOAT, ["batch", "time", V]),
               st("hT")]
    if cell == "lstm":
        inputs.append(st("c0"))
        outputs.append(st("cT"))
    graph = helper.make_graph(nodes, f"fastrnn_{cell}", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="fastrnn",
                              producer_version=meta["fastrnn.version"])
    model.ir_version = helper.find_min_ir_version_for(opsets)
    model.doc_string = (f"fastrnn char-LM ({cell}, {L} layer(s), H={H}, V={V}): ids (B, T) "
                        f"int64 and h0 (L, B, H) float32 -> logits (B, T, V), hT")
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(params: Mapping[str, np.ndarray], vocab_chars: Sequence[str],
                path: str | os.PathLike, *, cell: str = "rnn", nonlinearity: str = "tanh",
                opset: int = DEFAULT_OPSET, unk: str | None = None) -> Path:
    """Write a char-LM as a standard ONNX model that ONNX Runtime runs as it is (needs onnx).

    Parameters
    ----------
    params : dict of ndarray
        The fastrnn parameters of ``cell``, any number of layers, with ``D = V`` =
        ``len(vocab_chars)``. float64 parameters are exported as float32 (ONNX
        Runtime's CPU RNN, GRU and LSTM kernels are float32 only): its logits then
        differ from the float64 model's by float32 rounding.
    vocab_chars : sequence of str
        The tokens in id order (``CharLM.vocab.tokens``), stored in the model's
        metadata under ``fastrnn.vocab`` as a JSON list.
    path : str or path-like
        The ``.onnx`` file to write (atomically: a temporary file, then a rename).
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell of ``params``.
    nonlinearity : {"tanh", "relu"}
        ``cell="rnn"`` only (``RNN``'s ``activations``); gated cells ignore it.
    opset : int, default :data:`DEFAULT_OPSET` (17)
        ONNX opset, from 13 to the installed onnx package's newest.
    unk : str, optional
        The unknown token, stored as ``fastrnn.unk`` (JSON; ``null`` when None).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ImportError
        ``onnx`` is not installed (``pip install "fastrnn[onnx]"``).
    ValueError, TypeError
        Parameters that do not fit the cell, a vocabulary of the wrong size, an
        ``unk`` not in it, a bad opset, or a float64 value beyond float32's range.

    Notes
    -----
    The graph: ``OneHot`` of the ids (time-major), then per layer one ONNX ``RNN``,
    ``GRU`` (``linear_before_reset=1``, which is PyTorch's and fastrnn's GRU) or
    ``LSTM`` operator (gates reordered to ONNX's z, r, h and i, o, f, c), then the
    head ``MatMul`` + ``Add``. Dropout is never part of it.

    - inputs: ``ids`` int64 ``(B, T)`` (B and T dynamic; an id outside ``[0, V)``
      gives a zero input row, ONNX ``OneHot``'s rule), ``h0`` float32 ``(L, B, H)``
      (zeros to start), and for LSTM ``c0`` float32 ``(L, B, H)``;
    - outputs: ``logits`` float32 ``(B, T, V)``, ``hT`` ``(L, B, H)`` (and ``cT``),
      the state to pass as ``h0`` (``c0``) of the next call.
    - metadata (``InferenceSession.get_modelmeta().custom_metadata_map``):
      ``fastrnn.vocab``, ``fastrnn.unk``, ``fastrnn.cell``, ``fastrnn.nonlinearity``,
      ``fastrnn.num_layers``, ``fastrnn.hidden_size``, ``fastrnn.dtype`` (always
      float32), ``fastrnn.source_dtype`` (the model's), ``fastrnn.version``.

    The model passes ``onnx.checker.check_model(full_check=True)`` before it is written.

    Examples
    --------
    >>> p = fastrnn.init_params(3, 4, cell="gru", seed=0)
    >>> fastrnn.export.export_onnx(p, ["a", "b", "c"], "m.onnx", cell="gru")  # doctest: +SKIP
    PosixPath('m.onnx')
    """
    from ._version import __version__

    cell = _check_cell(cell)
    nonlinearity = _check_nonlinearity(nonlinearity)
    D, H, V, L, dt = _config(params, cell)
    if isinstance(vocab_chars, str):
        vocab_chars = list(vocab_chars)
    tokens = list(vocab_chars)
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("vocab_chars must be a sequence of str (the tokens in id order)")
    if len(tokens) != V or D != V:
        raise ValueError(f"export_onnx needs a char-LM with one vocabulary: the vocabulary "
                         f"has {len(tokens)} tokens, the model D={D} inputs and V={V} outputs")
    if unk is not None and unk not in tokens:
        raise ValueError(f"unk {unk!r} is not among the vocabulary's tokens")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    if dt == np.float64:
        big = float(np.finfo(np.float32).max)
        for n, a in params.items():
            if a.size and np.abs(a).max() > big:
                raise ValueError(f"params[{n!r}] has values beyond float32's range; the ONNX "
                                 f"model is float32")
    onnx = _import_onnx()[0]
    newest = onnx.defs.onnx_opset_version()
    if not _MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{_MIN_OPSET}, {newest}] (the installed onnx "
                         f"{onnx.__version__} knows up to {newest}), got {opset}")
    meta = {"fastrnn.vocab": json.dumps(tokens, ensure_ascii=False),
            "fastrnn.unk": json.dumps(unk, ensure_ascii=False),
            "fastrnn.cell": cell,
            "fastrnn.nonlinearity": nonlinearity if cell == "rnn" else "tanh",
            "fastrnn.num_layers": str(L), "fastrnn.hidden_size": str(H),
            "fastrnn.dtype": "float32", "fastrnn.source_dtype": dt.name,
            "fastrnn.version": __version__}
    from .checkpoint import _named, check_writable
    path = Path(os.fspath(path)).expanduser()
    directory = check_writable(path)       # a clear error before the model is built
    model = _build_onnx(params, cell, nonlinearity, D, H, V, L, int(opset), meta)
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from None
        raise
    return path


# ---------------------------------------------------------------------------
# CharLM <-> torch.nn.Module (CharLM.to_torch / CharLM.from_torch call these)

# torch.nn.RNNBase.mode -> (cell, nonlinearity)
_TORCH_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"),
                "GRU": ("gru", "tanh"), "LSTM": ("lstm", "tanh")}


def _vocab_of(vocab: Any):
    from .vocab import Vocab
    if isinstance(vocab, Vocab):
        return vocab
    if isinstance(vocab, str):
        vocab = list(vocab)
    if isinstance(vocab, Sequence) and all(isinstance(t, str) for t in vocab):
        tokens = list(vocab)
        return Vocab.from_tokens(tokens, unk="<unk>" if "<unk>" in tokens else None)
    raise TypeError(f"vocab must be a fastrnn.Vocab, a sequence of tokens in id order or a "
                    f"str of the characters in id order, got {type(vocab).__name__}")


def charlm_from_torch(cls, module: Any, vocab: Any, *, cell: str | None = None,
                      nonlinearity: str | None = None, dtype: Any = None):
    """``cls`` (a :class:`~fastrnn.CharLM`) holding a PyTorch char-LM's weights.

    ``module`` is a ``torch.nn.Module`` (its one ``nn.RNN``/``nn.GRU``/``nn.LSTM``
    gives the cell and the nonlinearity) or a state dict (then ``cell`` and
    ``nonlinearity`` default to "rnn" and "tanh"); see :func:`from_torch_state_dict`
    for the accepted layouts. ``vocab`` maps the module's ids to characters.
    """
    if isinstance(module, Mapping):
        sd = module
        cell = _check_cell("rnn" if cell is None else cell)
        nonlinearity = _check_nonlinearity("tanh" if nonlinearity is None else nonlinearity)
    else:
        if not hasattr(module, "state_dict") or not hasattr(module, "modules"):
            raise TypeError(f"module must be a torch.nn.Module or a state dict, got "
                            f"{type(module).__name__}")
        rnns = [m for m in module.modules() if getattr(m, "mode", None) in _TORCH_MODES]
        if len(rnns) != 1:
            raise ValueError(f"module must hold exactly one nn.RNN, nn.GRU or nn.LSTM, "
                             f"found {len(rnns)}")
        r = rnns[0]
        if getattr(r, "bidirectional", False):
            raise ValueError("bidirectional layers are not supported: a language model "
                             "reads left to right")
        if getattr(r, "proj_size", 0):
            raise ValueError("LSTM projections (proj_size > 0) are not supported")
        m_cell, m_nl = _TORCH_MODES[r.mode]
        for name, given, found in (("cell", cell, m_cell), ("nonlinearity", nonlinearity, m_nl)):
            if given is not None and given != found:
                raise ValueError(f"{name}={given!r} but the module's recurrent layer is "
                                 f"{type(r).__name__} ({name} {found!r})")
        cell, nonlinearity = m_cell, m_nl
        sd = module.state_dict()
    vocab = _vocab_of(vocab)
    params = from_torch_state_dict(sd, cell=cell, dtype=dtype)
    D, H, V, L, dt = _config(params, cell)
    if not D == V == len(vocab):
        raise ValueError(f"the vocabulary has {len(vocab)} tokens but the model reads "
                         f"{D} ids and predicts {V}")
    kw = {} if (cell == "rnn" and L == 1) else {"cell": cell, "num_layers": L}
    try:
        lm = cls(vocab, H, nonlinearity=nonlinearity, dtype=dt, seed=0, **kw)
    except TypeError as exc:
        if kw and ("cell" in str(exc) or "num_layers" in str(exc)):
            raise ValueError(f"this fastrnn's CharLM has one-layer cell='rnn' models only; "
                             f"the module is {cell} with {L} layer(s) "
                             f"(fastrnn.export.from_torch_state_dict gives its parameters "
                             f"for the functional API)") from None
        raise
    if set(lm.params) != set(params):
        raise ValueError(f"CharLM's parameters {sorted(lm.params)} do not match the "
                         f"imported {sorted(params)}")
    for k, a in params.items():
        lm.params[k][...] = a
    return lm
