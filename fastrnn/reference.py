"""The RNN of the d2l chapter in plain NumPy: the reference the kernels are tested against.

Same contract as :func:`fastrnn.forward` and :func:`fastrnn.loss_and_grad`
(see their docstrings), written for reading, in the manner of min-char-rnn:
one line per chain-rule step. It is batched and vectorised (one matmul per
time step, whole-sequence matmuls elsewhere), so it is an honest baseline for
the benchmarks, not a strawman. It does no input validation beyond what the
public wrappers in :mod:`fastrnn` do; call those for checked input.
"""
from __future__ import annotations

import numpy as np

__all__ = ["forward", "loss_and_grad"]


def _phi(nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh, lambda H: 1 - H * H          # tanh'(Z) = 1 - H^2
    if nonlinearity == "relu":
        return (lambda Z: np.maximum(Z, 0)), (lambda H: (H > 0).astype(H.dtype))
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _inputs(params, X):
    """X_t W_xh for every step, time-major (T, B, H): a row gather for token ids."""
    W_xh = params["W_xh"]
    if X.ndim == 2:                                  # token ids (B, T): one-hot @ W_xh
        return W_xh[X.T]
    return np.einsum("btd,dh->tbh", X, W_xh)        # dense inputs (B, T, D)


def forward(params, X, h0=None, *, nonlinearity="tanh", return_states=False):
    """Logits (B, T, V) and final state h_T (B, H).

    With ``return_states=True`` also returns ``{"Z": (B, T, H), "H": (B, T, H)}``,
    the pre-activations and hidden states of every step.
    """
    W_hh, b_h, W_hq, b_q = params["W_hh"], params["b_h"], params["W_hq"], params["b_q"]
    phi, _ = _phi(nonlinearity)
    XW = _inputs(params, X)                          # (T, B, H)
    T, B, H = XW.shape
    h = np.zeros((B, H), W_hh.dtype) if h0 is None else h0
    Zs, Hs = np.empty_like(XW), np.empty_like(XW)
    for t in range(T):
        Zs[t] = XW[t] + h @ W_hh + b_h              # Z_t = X_t W_xh + H_{t-1} W_hh + b_h
        Hs[t] = h = phi(Zs[t])                       # H_t = phi(Z_t)
    logits = Hs.transpose(1, 0, 2) @ W_hq + b_q      # O_t = H_t W_hq + b_q, (B, T, V)
    if return_states:
        return logits, h, {"Z": Zs.transpose(1, 0, 2), "H": Hs.transpose(1, 0, 2)}
    return logits, h


def loss_and_grad(params, X, Y, h0=None, *, nonlinearity="tanh"):
    """Mean softmax cross-entropy over all B*T predictions, its gradients, and h_T."""
    W_xh, W_hh, W_hq = params["W_xh"], params["W_hh"], params["W_hq"]
    phi, dphi = _phi(nonlinearity)
    XW = _inputs(params, X)
    T, B, H = XW.shape
    h_init = np.zeros((B, H), W_hh.dtype) if h0 is None else h0
    # forward, keeping every state
    Hs = np.empty((T + 1, B, H), W_hh.dtype)
    Hs[0] = h_init
    for t in range(T):
        Hs[t + 1] = phi(XW[t] + Hs[t] @ W_hh + params["b_h"])
    O = Hs[1:] @ W_hq + params["b_q"]                # logits, time-major (T, B, V)
    # softmax cross-entropy, averaged over the N = T*B predictions
    N = T * B
    Yt = Y.T                                         # targets, time-major (T, B)
    P = np.exp(O - O.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)               # softmax probabilities
    t_idx, b_idx = np.indices((T, B))
    loss = -np.log(P[t_idx, b_idx, Yt]).mean()       # mean cross-entropy
    dO = P
    dO[t_idx, b_idx, Yt] -= 1                        # dL/dO = softmax - onehot ...
    dO /= N                                          # ... averaged
    # output layer, whole sequence at once
    dW_hq = Hs[1:].reshape(N, H).T @ dO.reshape(N, -1)
    db_q = dO.sum(axis=(0, 1))
    dH_out = dO @ W_hq.T                             # dL/dH_t through O_t
    # backpropagation through time
    dZ = np.empty_like(XW)
    dh_next = np.zeros((B, H), W_hh.dtype)           # dL/dH_t through Z_{t+1}
    for t in reversed(range(T)):
        dZ[t] = (dH_out[t] + dh_next) * dphi(Hs[t + 1])  # through H_t = phi(Z_t)
        dh_next = dZ[t] @ W_hh.T                     # through Z_t = ... + H_{t-1} W_hh
    dZf = dZ.reshape(N, H)
    dW_hh = Hs[:-1].reshape(N, H).T @ dZf            # sum_t H_{t-1}^T dZ_t
    db_h = dZf.sum(axis=0)
    if X.ndim == 2:                                  # one-hot rows: scatter-add dZ_t
        dW_xh = np.zeros_like(W_xh)
        np.add.at(dW_xh, X.T.reshape(N), dZf)
    else:
        dW_xh = X.transpose(1, 0, 2).reshape(N, -1).T @ dZf
    grads = {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h, "W_hq": dW_hq, "b_q": db_q,
             "h0": dh_next}
    return float(loss), grads, Hs[T].copy()
