"""
Gradients through long sequences
================================

How much of the loss at step :math:`t` reaches the hidden state :math:`d` steps
earlier? The chapter's answer is a product of :math:`d` Jacobians,

.. math::

    \\frac{\\partial H_t}{\\partial H_{t-d}} = \\prod_{k=t-d+1}^{t}
    \\operatorname{diag}\\big(\\phi'(Z_k)\\big)\\, W_{hh}^\\top ,

whose norm shrinks or grows roughly geometrically with :math:`d`: vanishing and
exploding gradients. This example measures :math:`\\lVert \\partial \\ell_d / \\partial
H_0 \\rVert`, the gradient of the loss :math:`\\ell_d` at step :math:`d` alone with
respect to the state :math:`d` steps before it, for distances up to 80 steps, with the
Elman cell (both nonlinearities) and the gated cells, GRU and LSTM.

:func:`fastrnn.loss_and_grad` returns :math:`\\partial L / \\partial H_0` of the *mean*
loss over all steps. For the same inputs cut to :math:`d` and :math:`d - 1` steps, the
first :math:`d - 1` predictions are identical, so

.. math::

    \\frac{\\partial\\, \\ell_d}{\\partial H_0}
    = d\\,B\\,\\frac{\\partial L^{(d)}}{\\partial H_0}
    - (d-1)\\,B\\,\\frac{\\partial L^{(d-1)}}{\\partial H_0}

is the gradient of the cross-entropy :math:`\\ell_d` of step :math:`d` (summed over the
batch's rows, each row with its own :math:`H_0`). This needs nothing but the public
API, so it works for every cell ``loss_and_grad`` accepts. The difference is taken in
float64 and is exact down to about :math:`10^{-16}` of the gradient of the whole
sequence; smaller values are rounding noise and are not plotted.
"""

# %%
# Inputs: 8 windows of 80 characters from the built-in corpus (d2l's preprocessing),
# each predicting the next character.
import matplotlib.pyplot as plt
import numpy as np

import fastrnn
from fastrnn import datasets

text = datasets.preprocess(datasets.builtin_text())
vocab = fastrnn.Vocab(text)
ids = vocab.encode(text)
B, T, H = 8, 80, 128
starts = np.arange(B) * 10_000
X = np.stack([ids[s:s + T] for s in starts])
Y = np.stack([ids[s + 1:s + T + 1] for s in starts])


def step_gradient_norms(params, **kw):
    """Mean over rows of ||d loss_d / d H_0|| for d = 1..T (NaN below rounding)."""
    norms = np.full(T, np.nan)
    prev = 0.0
    for d in range(1, T + 1):
        _, grads, _ = fastrnn.loss_and_grad(params, X[:, :d], Y[:, :d], **kw)
        total = d * B * grads["h0"]           # gradient of the summed loss of steps 1..d
        g = np.linalg.norm(total - prev, axis=1).mean()
        if g > 1e-14 * np.linalg.norm(total, axis=1).mean():
            norms[d - 1] = g
        prev = total
    return norms


# %%
# The cells to compare: keyword arguments for :func:`fastrnn.init_params` and
# :func:`fastrnn.loss_and_grad`. Parameters start from PyTorch's initialisation,
# Uniform(-1/sqrt(H), 1/sqrt(H)); the second panel multiplies the recurrent weights by 3.
CELLS = {
    "Elman, tanh": dict(nonlinearity="tanh"),
    "Elman, relu": dict(nonlinearity="relu"),
    "GRU": dict(cell="gru"),
    "LSTM": dict(cell="lstm"),      # the forget-gate bias starts at 1 (init_params)
}
INIT_KEYS = ("cell", "num_layers")            # the keywords init_params takes too

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
distance = np.arange(1, T + 1)
for ax, gain in zip(axes, (1.0, 3.0)):
    for label, kw in CELLS.items():
        init_kw = {k: v for k, v in kw.items() if k in INIT_KEYS}
        params = fastrnn.init_params(len(vocab), H, dtype="float64", seed=0,
                                     init="uniform", **init_kw)
        params["W_hh"] *= gain
        norms = step_gradient_norms(params, **kw)
        ax.semilogy(distance, norms, label=label)
        last = np.flatnonzero(np.isfinite(norms))[-1]
        print(f"W_hh x {gain:g}, {label:12s}: ||dl/dH|| = {norms[0]:.2e} at distance 1, "
              f"{norms[last]:.2e} at distance {last + 1}")
    ax.set_title(f"recurrent weights x {gain:g}" if gain != 1 else "PyTorch's initialisation")
    ax.set_xlabel("distance d (steps between the state and the loss)")
    ax.grid(True, which="major", alpha=0.3)
axes[0].set_ylabel(r"$\|\partial \ell_d / \partial H_0\|$ (mean over rows)")
axes[0].legend()
fig.tight_layout()
plt.show()

# %%
# At initialisation the gradient of a prediction with respect to a state a few dozen
# steps back is many orders of magnitude smaller than with respect to the last state
# (the printed numbers): an Elman RNN trained by BPTT barely learns dependencies that
# long, whatever ``num_steps`` is. With larger recurrent weights the same product
# explodes instead, which is what global-norm clipping (``clip=`` in
# :meth:`fastrnn.CharLM.fit`) guards against. relu passes no gradient through units
# that are off, and does not saturate when the weights are large.
#
# The gated cells add a path that bypasses the product of Jacobians: the GRU's
# :math:`h' = (1 - z) \odot n + z \odot h` and the LSTM's memory cell
# :math:`c' = f \odot c + i \odot g` pass the gradient on, scaled by the update or
# forget gate, without a product with :math:`W_{hh}` at every step. In this run
# (one initialisation, one batch: read the printed numbers) the LSTM, whose
# forget-gate bias starts at 1, keeps by far the largest gradient at long distances;
# the GRU at initialisation, with its update gate about half open, decays about as
# fast as the Elman cell. With the recurrent weights tripled the Elman cell's
# gradient explodes by orders of magnitude, the GRU's still decays and the LSTM's
# grows only by a small factor.
