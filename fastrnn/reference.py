"""Every cell and the layer stack in plain NumPy: the reference the kernels are tested against.

Same contract as :func:`fastrnn.forward` and :func:`fastrnn.loss_and_grad` (see
their docstrings), written for reading next to the d2l chapters "Recurrent Neural
Networks" and "Modern Recurrent Neural Networks", in the manner of min-char-rnn:
one line per chain-rule step. Row vectors (``x @ W``); gates are column blocks in
PyTorch's order (see :mod:`fastrnn.params`). The code reads in three levels:

1. **cells**: one forward/backward pair per cell (:func:`rnn_cell`,
   :func:`gru_cell`, :func:`lstm_cell` and their ``*_backward``), one time step;
2. **a layer**: :func:`layer_forward` / :func:`layer_backward` scan a cell over the
   sequence, given the hoisted input projection ``XW_t = x_t W_xh + b_h``;
3. **the stack**: :func:`forward` / :func:`loss_and_grad` run the layers bottom-up
   (dropout between them), the output head and the softmax cross-entropy, then
   backpropagate top-down.

It is batched and vectorised (one matmul per time step, whole-sequence matmuls
elsewhere), so it is an honest baseline for the benchmarks, not a strawman. It
checks names and shapes (:func:`fastrnn.params.infer_config`) but not values or
dtypes; call the public wrappers in :mod:`fastrnn` for checked input.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import params as _params

__all__ = ["forward", "loss_and_grad", "layer_forward", "layer_backward",
           "rnn_cell", "rnn_cell_backward", "gru_cell", "gru_cell_backward",
           "lstm_cell", "lstm_cell_backward"]


def _sigmoid(a):
    with np.errstate(over="ignore"):             # exp(1000) = inf -> sigmoid = 0, exactly
        return 1.0 / (1.0 + np.exp(-a))


def _phi(nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh, lambda H: 1 - H * H          # tanh'(Z) = 1 - H^2
    if nonlinearity == "relu":
        return (lambda Z: np.maximum(Z, 0)), (lambda H: (H > 0).astype(H.dtype))
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


# ---------------------------------------------------------------------------
# 1. cells: one time step each. Inputs: xa = x_t W_xh + b_h (B, G*H), the previous
# state h (and c). Forward returns (h', c', gates): what backward needs. Backward
# takes dh = dL/dh' and dc = dL/dc' and returns (da, da_rec, dh_prev, dc_prev):
# da = dL/dxa, da_rec = dL/d(h W_hh) (the same except GRU's n block), and the
# gradients for the previous state.

def rnn_cell(xa, h, c, W_hh, b_hn=None, *, nonlinearity="tanh"):
    """Elman step: ``h' = phi(x W_xh + b_h + h W_hh)``; ``gates`` is the pre-activation Z.

    Examples
    --------
    >>> import numpy as np
    >>> h, _, z = rnn_cell(np.array([[0.5]]), np.array([[1.0]]), None, np.array([[0.5]]))
    >>> float(z[0, 0]), round(float(h[0, 0]), 6)
    (1.0, 0.761594)
    """
    phi, _ = _phi(nonlinearity)
    z = xa + h @ W_hh                                # Z_t = X_t W_xh + b_h + H_{t-1} W_hh
    return phi(z), None, z                           # H_t = phi(Z_t)


def rnn_cell_backward(dh, dc, h, h_prev, c, c_prev, gates, W_hh, *, nonlinearity="tanh"):
    """Backward of :func:`rnn_cell` (``dc``, ``c``, ``c_prev`` unused)."""
    _, dphi = _phi(nonlinearity)
    da = dh * dphi(h)                                # through H_t = phi(Z_t)
    return da, da, da @ W_hh.T, None                 # through Z_t = ... + H_{t-1} W_hh


def gru_cell(xa, h, c, W_hh, b_hn, **_):
    """GRU step, PyTorch's convention (reset gate after the recurrent product)::

        r = sigmoid(x W_r + b_r + h W_hr)        z = sigmoid(x W_z + b_z + h W_hz)
        hn = h W_hn + b_hn                       n = tanh(x W_n + b_n + r * hn)
        h' = (1 - z) * n + z * h

    ``gates`` is ``[r, z, n, hn]`` (B, 4H).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.zeros((1, 3))
    >>> h, _, g = gru_cell(z, np.ones((1, 1)), None, np.zeros((1, 3)), np.zeros(1))
    >>> h.tolist(), g.tolist()                    # r = z = 1/2, n = 0: h' = h / 2
    ([[0.5]], [[0.5, 0.5, 0.0, 0.0]])
    """
    H = h.shape[1]
    R = h @ W_hh                                     # all recurrent products at once
    r = _sigmoid(xa[:, :H] + R[:, :H])               # reset gate
    z = _sigmoid(xa[:, H:2 * H] + R[:, H:2 * H])     # update gate
    hn = R[:, 2 * H:] + b_hn                         # recurrent part of the candidate
    n = np.tanh(xa[:, 2 * H:] + r * hn)              # candidate state
    h_new = (1 - z) * n + z * h                      # H_t
    return h_new, None, np.concatenate([r, z, n, hn], axis=1)


def gru_cell_backward(dh, dc, h, h_prev, c, c_prev, gates, W_hh, **_):
    """Backward of :func:`gru_cell`; ``da_rec``'s n block is ``dL/dhn = da_n * r``."""
    H = h.shape[1]
    r, z, n, hn = (gates[:, i * H:(i + 1) * H] for i in range(4))
    dn = dh * (1 - z)                                # through h' = (1 - z) n + z h
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n * n)                          # through n = tanh(a_n)
    dhn = da_n * r                                   # through a_n = xn + r * hn
    da_r = da_n * hn * r * (1 - r)                   # ... and r = sigmoid(a_r)
    da_z = dz * z * (1 - z)                          # through z = sigmoid(a_z)
    da = np.concatenate([da_r, da_z, da_n], axis=1)
    da_rec = np.concatenate([da_r, da_z, dhn], axis=1)
    dh_prev = da_rec @ W_hh.T + dh * z               # through h W_hh and z * h
    return da, da_rec, dh_prev, None


def lstm_cell(xa, h, c, W_hh, b_hn=None, **_):
    """LSTM step::

        i, f, o = sigmoid(A_i, A_f, A_o)    g = tanh(A_g)    (A = x W_xh + b_h + h W_hh)
        c' = f * c + i * g                  h' = o * tanh(c')

    ``gates`` is ``[i, f, g, o]`` (B, 4H).

    Examples
    --------
    >>> import numpy as np
    >>> h, c, g = lstm_cell(np.zeros((1, 4)), np.zeros((1, 1)), np.ones((1, 1)),
    ...                     np.zeros((1, 4)))
    >>> c.tolist(), g.tolist()                    # f = 1/2 keeps half of c
    ([[0.5]], [[0.5, 0.5, 0.0, 0.5]])
    """
    H = h.shape[1]
    A = xa + h @ W_hh                                # all gates' pre-activations
    i = _sigmoid(A[:, :H])                           # input gate
    f = _sigmoid(A[:, H:2 * H])                      # forget gate
    g = np.tanh(A[:, 2 * H:3 * H])                   # candidate cell
    o = _sigmoid(A[:, 3 * H:])                       # output gate
    c_new = f * c + i * g                            # C_t
    h_new = o * np.tanh(c_new)                       # H_t
    return h_new, c_new, np.concatenate([i, f, g, o], axis=1)


def lstm_cell_backward(dh, dc, h, h_prev, c, c_prev, gates, W_hh, **_):
    """Backward of :func:`lstm_cell`; ``dc`` is dL/dc' carried from the next step."""
    H = h.shape[1]
    i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
    tc = np.tanh(c)
    do = dh * tc                                     # through h' = o tanh(c')
    dc = dc + dh * o * (1 - tc * tc)
    di, df, dg = dc * g, dc * c_prev, dc * i         # through c' = f c + i g
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f),    # sigmoid' = s (1 - s)
                         dg * (1 - g * g), do * o * (1 - o)], axis=1)
    return da, da, da @ W_hh.T, dc * f


_CELLS = {"rnn": (rnn_cell, rnn_cell_backward), "gru": (gru_cell, gru_cell_backward),
          "lstm": (lstm_cell, lstm_cell_backward)}


# ---------------------------------------------------------------------------
# 2. a layer: scan one cell over the sequence (time-major)

def layer_forward(cell, XW, W_hh, b_hn, h0, c0, *, nonlinearity="tanh"):
    """Run one layer over a sequence.

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
    XW : ndarray (T, B, G*H)
        ``x_t W_xh + b_h`` for every step (the hoisted input projection).
    W_hh : ndarray (H, G*H)
    b_hn : ndarray (H,) or None
        GRU's recurrent bias of the n gate; None for other cells.
    h0, c0 : ndarray (B, H)
        Initial state; ``c0`` for LSTM only (else None).
    nonlinearity : {"tanh", "relu"}
        For ``cell="rnn"``.

    Returns
    -------
    Hs : ndarray (T, B, H)
        ``h_t`` for every step.
    Cs : ndarray (T, B, H) or None
        LSTM's ``c_t``.
    Gs : ndarray (T, B, W)
        What :func:`layer_backward` needs: rnn the pre-activations (W = H), gru
        ``r, z, n, hn`` and lstm ``i, f, g, o`` (W = 4H).

    Examples
    --------
    >>> import numpy as np
    >>> Hs, Cs, Gs = layer_forward("rnn", np.ones((3, 1, 1)), np.zeros((1, 1)), None,
    ...                            np.zeros((1, 1)), None)
    >>> Hs.shape, Cs, Gs.shape
    ((3, 1, 1), None, (3, 1, 1))
    """
    step, _ = _CELLS[cell]
    T = XW.shape[0]
    h, c = h0, c0
    Hs, Cs, Gs = [], [], []
    for t in range(T):
        h, c, g = step(XW[t], h, c, W_hh, b_hn, nonlinearity=nonlinearity)
        Hs.append(h), Cs.append(c), Gs.append(g)
    B, H = h0.shape
    W = {"rnn": H, "gru": 4 * H, "lstm": 4 * H}[cell]
    as_array = (lambda xs, w: np.stack(xs) if xs else np.empty((0, B, w), h0.dtype))
    return (as_array(Hs, H), as_array(Cs, H) if cell == "lstm" else None, as_array(Gs, W))


def layer_backward(cell, dHs, Hs, Cs, Gs, h0, c0, W_hh, *, nonlinearity="tanh"):
    """Backpropagate through one layer (BPTT).

    Parameters
    ----------
    cell : {"rnn", "gru", "lstm"}
    dHs : ndarray (T, B, H)
        dL/dh_t from above (the head or the next layer), not yet including the path
        through h_{t+1}.
    Hs, Cs, Gs : from :func:`layer_forward`
    h0, c0 : ndarray (B, H)
        The initial state given to :func:`layer_forward` (``c0``: LSTM, else None).
    W_hh : ndarray (H, G*H)
    nonlinearity : {"tanh", "relu"}

    Returns
    -------
    dA : ndarray (T, B, G*H)
        dL/dXW_t: the gradient with respect to every gate's pre-activation.
    dA_rec : ndarray (T, B, G*H)
        dL/d(h_{t-1} W_hh): ``dA`` except GRU's n block, which is dL/dhn.
    dh0 : ndarray (B, H)
    dc0 : ndarray (B, H) or None
        LSTM only.

    Examples
    --------
    >>> import numpy as np
    >>> args = ("rnn", np.ones((2, 1, 1)), np.zeros((1, 1)), None, np.zeros((1, 1)), None)
    >>> Hs, Cs, Gs = layer_forward(*args)
    >>> dA, dA_rec, dh0, dc0 = layer_backward("rnn", np.ones((2, 1, 1)), Hs, Cs, Gs,
    ...                                       np.zeros((1, 1)), None, np.zeros((1, 1)))
    >>> dA.shape, dh0.shape, dc0
    ((2, 1, 1), (1, 1), None)
    """
    _, step_backward = _CELLS[cell]
    T = dHs.shape[0]
    B, H = h0.shape
    GH = W_hh.shape[1]
    dA = np.empty((T, B, GH), dHs.dtype)
    dA_rec = np.empty((T, B, GH), dHs.dtype)
    dh_next = np.zeros((B, H), dHs.dtype)            # dL/dh_t through step t+1
    dc_next = np.zeros((B, H), dHs.dtype) if cell == "lstm" else None
    for t in reversed(range(T)):
        h_prev = Hs[t - 1] if t > 0 else h0
        c, c_prev = (Cs[t], Cs[t - 1] if t > 0 else c0) if cell == "lstm" else (None, None)
        dA[t], dA_rec[t], dh_next, dc_next = step_backward(
            dHs[t] + dh_next, dc_next, Hs[t], h_prev, c, c_prev, Gs[t], W_hh,
            nonlinearity=nonlinearity)
    return dA, dA_rec, dh_next, dc_next


# ---------------------------------------------------------------------------
# state forms (SPEC "State forms"): None, (B, H) for one layer, (L, B, H); LSTM (h, c)

def _state_in(h0, cell, L, B, H, dtype):
    """Initial states as (L, B, H) arrays: (h, c or None, form), form "BH" or "LBH"."""
    def one(s):
        if s is None:
            return np.zeros((L, B, H), dtype), "BH" if L == 1 else "LBH"
        s = np.asarray(s)
        return (s[None], "BH") if s.ndim == 2 else (s, "LBH")
    if cell == "lstm":
        if h0 is None:
            h0 = (None, None)
        (h, form), (c, _) = one(h0[0]), one(h0[1])
        return h, c, form
    h, form = one(h0)
    return h, None, form


def _state_out(h, c, form):
    """(L, B, H) states in the caller's form (a tuple (h, c) for LSTM)."""
    pick = (lambda s: s[0].copy()) if form == "BH" else (lambda s: s.copy())
    return pick(h) if c is None else (pick(h), pick(c))


def _time_major(X):
    """Token ids (B, T) -> (T, B); dense inputs (B, T, D) -> (T, B, D)."""
    X = np.asarray(X)
    return X.T if X.ndim == 2 else X.transpose(1, 0, 2)


def _project(inp, W_xh, b_h):
    """x_t W_xh + b_h for every step (T, B, G*H): a row gather for token ids."""
    if inp.ndim == 2:                                # ids (T, B): one-hot @ W_xh
        return W_xh[inp] + b_h
    return inp @ W_xh + b_h                          # dense (T, B, D_k)


def _config(params, cell, nonlinearity, return_states=False):
    cell = _params._check_cell(cell)
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(f"nonlinearity applies to cell='rnn' only; got "
                         f"nonlinearity={nonlinearity!r} with cell={cell!r}")
    _phi(nonlinearity)
    D, H, V, L = _params.infer_config(params, cell)
    if return_states and (cell != "rnn" or L != 1):
        raise ValueError("return_states is available for cell='rnn' with one layer only")
    return H, L


def _layer(params, k):
    s = "" if k == 0 else f"_l{k}"
    return (params["W_xh" + s], params["W_hh" + s], params["b_h" + s],
            params.get("b_hn" + s))


# ---------------------------------------------------------------------------
# 3. the stack

def forward(params, X, h0=None, *, cell="rnn", nonlinearity="tanh", num_threads=None,
            return_states=False):
    """Logits and the final state of a stack of recurrent layers (NumPy reference).

    Parameters
    ----------
    params : dict
        Named arrays of :func:`fastrnn.params.layout` (layers read from the names).
    X : ndarray
        Token ids ``(B, T)`` or dense inputs ``(B, T, D)``.
    h0 : ndarray or tuple, optional
        Initial state in one of the forms of :func:`fastrnn.forward`.
    cell : {"rnn", "gru", "lstm"}
    nonlinearity : {"tanh", "relu"}
        ``cell="rnn"`` only.
    num_threads : ignored
        Accepted for the same signature as :func:`fastrnn.forward`.
    return_states : bool
        ``cell="rnn"`` with one layer: also return ``{"Z": (B, T, H), "H": (B, T, H)}``,
        the pre-activations and hidden states of every step.

    Returns
    -------
    logits : ndarray (B, T, V)
        The outputs of the head, in the parameters' dtype.
    state : ndarray or tuple
        The final state, in the form of ``h0`` (see :func:`fastrnn.forward`).

    Raises
    ------
    ValueError, TypeError
        A cell that does not fit the parameters, a bad nonlinearity or state.

    See Also
    --------
    fastrnn.forward : The compiled function with the same contract.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(5, 3, cell="gru", num_layers=2, dtype="float64", seed=0)
    >>> logits, h = forward(p, [[0, 1, 2]], cell="gru")
    >>> logits.shape, h.shape
    ((1, 3, 5), (2, 1, 3))
    """
    H, L = _config(params, cell, nonlinearity, return_states)
    inp = _time_major(X)
    T, B = inp.shape[:2]
    dtype = params["W_hh"].dtype
    h, c, form = _state_in(h0, cell, L, B, H, dtype)
    hT, cT = np.empty_like(h), None if c is None else np.empty_like(c)
    for k in range(L):
        W_xh, W_hh, b_h, b_hn = _layer(params, k)
        Hs, Cs, Gs = layer_forward(cell, _project(inp, W_xh, b_h), W_hh, b_hn, h[k],
                                   None if c is None else c[k], nonlinearity=nonlinearity)
        hT[k] = Hs[-1] if T else h[k]
        if cT is not None:
            cT[k] = Cs[-1] if T else c[k]
        inp = Hs                                     # the next layer's input
    logits = (inp @ params["W_hq"] + params["b_q"]).transpose(1, 0, 2)  # O_t = H_t W_hq + b_q
    state = _state_out(hT, cT, form)
    if return_states:
        return logits, state, {"Z": Gs.transpose(1, 0, 2).copy(),
                               "H": Hs.transpose(1, 0, 2).copy()}
    return logits, state


def _dropout_args(L, dropout, seed, row_offset):
    """Checked (p, seed, row_offset); p = 0 when nothing is dropped."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.integer,
                                                             np.floating)):
        raise TypeError(f"dropout must be a real number, got {type(dropout).__name__}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if seed is not None and (isinstance(seed, bool)
                             or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed is not None and not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if isinstance(row_offset, bool) or not isinstance(row_offset, (int, np.integer)):
        raise TypeError(f"row_offset must be an int, got {type(row_offset).__name__}")
    if row_offset < 0:
        raise ValueError(f"row_offset must be >= 0, got {row_offset}")
    if dropout > 0 and L == 1:
        warnings.warn(f"dropout={dropout} does nothing with one layer: it applies to the "
                      "output of every layer but the top one", UserWarning, stacklevel=3)
        return 0.0, seed, int(row_offset)
    if dropout > 0 and seed is None:
        raise ValueError(f"dropout={dropout} needs an int seed= (each mask is a pure "
                         "function of the seed, layer, step, row and unit)")
    return float(dropout), seed, int(row_offset)


def softmax_cross_entropy(O, Yt):
    """Mean cross-entropy of logits ``O (T, B, V)`` against targets ``Yt (T, B)``, and
    its gradient dL/dO (T, B, V)."""
    T, B, _ = O.shape
    N = T * B
    P = np.exp(O - O.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)               # softmax probabilities
    t_idx, b_idx = np.indices((T, B))
    loss = -np.log(P[t_idx, b_idx, Yt]).mean()       # mean cross-entropy
    dO = P
    dO[t_idx, b_idx, Yt] -= 1                        # dL/dO = softmax - onehot ...
    dO /= N                                          # ... averaged
    return float(loss), dO


def loss_and_grad(params, X, Y, h0=None, *, cell="rnn", nonlinearity="tanh", dropout=0.0,
                  seed=None, row_offset=0, num_threads=None, out=None):
    """Mean softmax cross-entropy over all B*T predictions, its gradients and the state.

    Parameters
    ----------
    params, X : dict, ndarray
        As in :func:`forward`.
    Y : ndarray (B, T)
        Integer targets in ``[0, V)``.
    h0, cell, nonlinearity : optional
        As in :func:`forward`.
    dropout : float
        Inverted dropout in ``[0, 1)`` on the output of every layer but the top one,
        masks from :func:`fastrnn.params.dropout_mask`; needs ``seed``.
    seed : int, optional
        In ``[0, 2**64)``.
    row_offset : int
        Global index of the first row of ``X`` (for the dropout masks).
    num_threads : ignored
        As in :func:`forward`.
    out : dict, optional
        Arrays to copy the gradients into (returned as ``grads``).

    Returns
    -------
    loss : float
        The mean cross-entropy; ``exp(loss)`` is the perplexity.
    grads : dict
        The gradients dL/d(parameter) of every parameter, ``"h0"`` (and ``"c0"`` for
        LSTM) in the form of the state.
    state : ndarray or tuple
        The final state (detached), in the form of ``h0``.

    Raises
    ------
    ValueError, TypeError
        A cell that does not fit the parameters, a bad ``dropout``/``seed``/``row_offset``.

    See Also
    --------
    fastrnn.loss_and_grad : The compiled function with the same contract.

    Examples
    --------
    >>> import fastrnn
    >>> p = fastrnn.init_params(4, 3, cell="lstm", dtype="float64", seed=0)
    >>> loss, grads, (h, c) = loss_and_grad(p, [[0, 1]], [[1, 2]], cell="lstm")
    >>> sorted(grads), h.shape
    (['W_hh', 'W_hq', 'W_xh', 'b_h', 'b_q', 'c0', 'h0'], (1, 3))
    """
    H, L = _config(params, cell, nonlinearity)
    p_drop, seed, row_offset = _dropout_args(L, dropout, seed, row_offset)
    X0 = _time_major(X)                              # the input of layer 0
    T, B = X0.shape[:2]
    dtype = params["W_hh"].dtype
    h, c, form = _state_in(h0, cell, L, B, H, dtype)
    # forward, keeping each layer's input, states and gates
    inputs, caches, masks = [], [], []
    inp = X0
    for k in range(L):
        W_xh, W_hh, b_h, b_hn = _layer(params, k)
        inputs.append(inp)
        ck = None if c is None else c[k]
        Hs, Cs, Gs = layer_forward(cell, _project(inp, W_xh, b_h), W_hh, b_hn, h[k], ck,
                                   nonlinearity=nonlinearity)
        caches.append((Hs, Cs, Gs))
        inp = Hs
        if p_drop > 0 and k < L - 1:                 # inverted dropout between layers
            masks.append(_params.dropout_mask(seed, k, T, row_offset, B, H, p_drop, dtype))
            inp = Hs * masks[k]
    O = inp @ params["W_hq"] + params["b_q"]         # logits, time-major (T, B, V)
    loss, dO = softmax_cross_entropy(O, np.asarray(Y).T)
    # output head, whole sequence at once
    N = T * B
    grads = {"W_hq": inp.reshape(N, H).T @ dO.reshape(N, -1), "b_q": dO.sum(axis=(0, 1))}
    dInp = dO @ params["W_hq"].T                     # dL/dH_t of the top layer
    dh0, dc0 = np.zeros_like(h), None if c is None else np.zeros_like(c)
    for k in reversed(range(L)):
        W_xh, W_hh, b_h, b_hn = _layer(params, k)
        s = "" if k == 0 else f"_l{k}"
        Hs, Cs, Gs = caches[k]
        ck = None if c is None else c[k]
        dA, dA_rec, dh0[k], dck = layer_backward(cell, dInp, Hs, Cs, Gs, h[k], ck, W_hh,
                                                 nonlinearity=nonlinearity)
        if dc0 is not None:
            dc0[k] = dck
        Hprev = np.concatenate([h[k][None], Hs[:-1]])  # h_{t-1} for every step
        GH = dA.shape[2]
        grads["W_hh" + s] = Hprev.reshape(N, H).T @ dA_rec.reshape(N, GH)
        grads["b_h" + s] = dA.sum(axis=(0, 1))
        if cell == "gru":
            grads["b_hn" + s] = dA_rec[:, :, 2 * H:].sum(axis=(0, 1))
        x = inputs[k]
        if x.ndim == 2:                              # one-hot rows: scatter-add dA_t
            grads["W_xh" + s] = np.zeros_like(W_xh)
            np.add.at(grads["W_xh" + s], x.reshape(N), dA.reshape(N, GH))
        else:
            grads["W_xh" + s] = x.reshape(N, -1).T @ dA.reshape(N, GH)
        if k > 0:
            dInp = dA @ W_xh.T                       # dL/d(input of layer k)
            if masks:
                dInp *= masks[k - 1]                 # through the dropout below
    grads = {n: grads[n] for n in _params.param_names(cell, L)}
    grads["h0"] = dh0[0] if form == "BH" else dh0
    if dc0 is not None:
        grads["c0"] = dc0[0] if form == "BH" else dc0
    if out is not None:
        for k, v in grads.items():
            if k in out:
                out[k][...] = v
                grads[k] = out[k]
    hT = np.stack([cache[0][-1] for cache in caches])
    cT = None if c is None else np.stack([cache[1][-1] for cache in caches])
    return loss, grads, _state_out(hT, cT, form)
