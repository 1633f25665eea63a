"""Problems for the cell/stack tests (test_reference, test_cells)."""
import numpy as np

import fastrnn


def make_stack_problem(rng, cell, L, B, T, D, H, V, *, dtype=np.float64, dense=False,
                       h0="none", scale=1.0):
    """Random parameters of a stack (uniform init, biases perturbed so no gate sits at
    a symmetric point), inputs, targets and an initial state.

    h0: "none" -> None, "BH" -> (B, H) arrays (L = 1 only), "LBH" -> (L, B, H).
    Returns (p in dtype, p64: the same values in float64, X, Y, h0); for LSTM h0 is a
    tuple (h, c) or None.
    """
    p64 = fastrnn.init_params(D, H, V, cell=cell, num_layers=L, dtype="float64",
                              seed=int(rng.integers(1 << 31)), init="uniform")
    p64 = {k: (v + 0.1 * rng.standard_normal(v.shape)) * scale for k, v in p64.items()}
    p = {k: v.astype(dtype) for k, v in p64.items()}
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
    Y = rng.integers(0, V, (B, T))

    def state():
        if h0 == "none":
            return None
        shape = (B, H) if h0 == "BH" else (L, B, H)
        return rng.standard_normal(shape) * 0.5
    s = state()
    if cell == "lstm" and s is not None:
        s = (s, state())
    return p, p64, X, Y, s
