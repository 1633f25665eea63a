"""Compare fastrnn with its NumPy reference and PyTorch, in one process, one table.

    python benches/compare.py              # all configurations, about 5 minutes on 2 cores
    python benches/compare.py --quick      # under a minute
    python benches/compare.py --json out.json --threads 2
    python benches/compare.py --configs generation --no-torch   # + the onnxruntime section

When onnx and onnxruntime are installed (``pip install 'fastrnn[onnx]'``), a last
section runs the same model exported with :func:`fastrnn.export.export_onnx` in ONNX
Runtime: the batched forward (logits of B x T ids) and generation (one ``sess.run``
per character, as ``examples/onnx_sample.py`` samples); ``--no-onnx`` skips it.

For each configuration the training step (forward, mean cross-entropy, BPTT,
global-norm clip, SGD update; float32; token-id inputs) or the generation loop
runs for fastrnn, ``fastrnn.reference`` and PyTorch (when installed), interleaved
round by round so that all implementations see the same machine load; the table
gives medians. Before timing, every implementation's loss on the same parameters
and batch is checked against the reference (and generation's first characters
against a NumPy sampler), so a fast wrong answer cannot win.

Gated cells (issue 12, ``GATED_CONFIGS``, ``--configs gated``): GRU and LSTM (V = 65)
against ``torch.nn.GRU`` / ``torch.nn.LSTM`` (one-hot input, ``nn.Linear`` head, the same
step as above; float32, so that PyTorch's LSTM takes its oneDNN path), and PyTorch's LSTM
again under ``torch.backends.mkldnn.flags(enabled=False)`` ("torch-lstm-nomkldnn").
An embedding peer as for the Elman cell would need an identity 4H x 4H input weight, so
gated configurations use the one-hot peer only. Each loss is checked against the
float64 reference before timing; generation checks fastrnn's greedy continuation
against the float64 reference and PyTorch's logits against fastrnn's. The NumPy
reference is timed only for LSTM generation (its training step is only the check).
The generation bound: an LSTM step reads 4*H*H float32 of ``W_hh`` (1 MiB at H = 256).

Columns: tokens/s (characters/s for generation); the ratio of fastrnn's speed to
the reference's and to the fastest PyTorch variant (training: one-hot + nn.RNN, and
nn.Embedding + nn.RNN; generation: the same thread count, and one thread, which is
faster for one character at a time); achieved GFLOP/s (6*H*H + 6*H*V flops per token
for a training step, 2*H*H + 2*H*V per generated character); and that rate as a
percentage of this machine's float32 gemm rate (numpy ``@`` on 2048x2048 with the
same number of threads), measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import reference

try:
    import torch
except ImportError:  # PyTorch is an optional peer
    torch = None
try:  # ONNX Runtime: what a user deploys an exported model with (optional section)
    import onnx  # noqa: F401 - fastrnn.export needs it to write the file
    import onnxruntime as ort
except ImportError:
    ort = None

CONFIGS = {  # name: (V, H, B, T); T is None for generation
    "d2l": (28, 32, 1024, 32),
    "medium": (28, 256, 64, 64),
    "large": (96, 1024, 64, 64),
    "b1": (28, 256, 1, 64),
    "generation": (28, 256, 1, None),
}
GEN_CHARS = 10_000
TEMPERATURE = 0.8
LR, CLIP = 0.5, 1.0


def train_flops(V, H):
    return 6 * H * H + 6 * H * V


# ---------------------------------------------------------------------------
# training-step implementations: each is make(params, X, Y, threads) -> (step, loss0)

def make_fastrnn(p, X, Y, threads, cell="rnn"):
    from fastrnn import _lm
    names = list(p)  # init_params returns the flat-buffer order (fastrnn.params.layout)
    sizes = [p[k].size for k in names]
    offs = np.cumsum([0] + sizes)
    # one flat vector, W_hh on a cache line, as CharLM keeps its parameters
    flat = fastrnn._core.empty_aligned(int(offs[-1]), p["W_hh"].dtype,
                                       at=int(offs[names.index("W_hh")]))
    flat[...] = np.concatenate([p[k].ravel() for k in names])
    gflat = np.empty_like(flat)
    params = {k: flat[offs[i]:offs[i + 1]].reshape(p[k].shape) for i, k in enumerate(names)}
    grads = {k: gflat[offs[i]:offs[i + 1]].reshape(p[k].shape) for i, k in enumerate(names)}
    loss0 = fastrnn.loss_and_grad(params, X, Y, cell=cell, num_threads=threads)[0]

    def step():
        loss, _, _ = fastrnn.loss_and_grad(params, X, Y, cell=cell, num_threads=threads,
                                           out=grads)
        _lm.clip_global_norm(gflat, CLIP)
        _lm.sgd_update(flat, gflat, LR)
        return loss
    return step, loss0


def make_reference(p, X, Y, threads, cell="rnn"):
    params = {k: v.copy() for k, v in p.items()}
    loss0 = reference.loss_and_grad(params, X, Y, cell=cell)[0]

    def step():
        loss, g, _ = reference.loss_and_grad(params, X, Y, cell=cell)
        norm = math.sqrt(sum(float(np.vdot(g[k], g[k])) for k in params))
        scale = LR * min(1.0, CLIP / (norm + 1e-12))
        for k in params:
            params[k] -= scale * g[k]
        return loss
    return step, loss0


def torch_model(p, variant):
    """The PyTorch peer's modules holding fastrnn's parameters ``p``; returns
    ``(modules, logits_fn)`` with ``logits_fn(X int64 tensor) -> (B, T, V)``.

    "onehot": d2l's concise model, one_hot -> nn.RNN(V, H) -> nn.Linear.
    "embedding": nn.Embedding(V, H) (= one-hot @ W_xh) feeding nn.RNN(H, H) whose
    input weight is the identity, so it computes the same function (with one extra
    H x H product per step)."""
    V, H = p["W_hq"].shape[1], p["W_hh"].shape[0]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    rnn = torch.nn.RNN(V if variant == "onehot" else H, H, batch_first=True)
    lin = torch.nn.Linear(H, V)
    emb = torch.nn.Embedding(V, H) if variant == "embedding" else None
    with torch.no_grad():
        if variant == "onehot":
            rnn.weight_ih_l0.copy_(t(p["W_xh"].T))
        else:
            emb.weight.copy_(t(p["W_xh"]))
            rnn.weight_ih_l0.copy_(torch.eye(H))
        rnn.weight_hh_l0.copy_(t(p["W_hh"].T))
        rnn.bias_ih_l0.copy_(t(p["b_h"]))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(t(p["W_hq"].T))
        lin.bias.copy_(t(p["b_q"]))

    def logits(Xt):
        inp = (torch.nn.functional.one_hot(Xt, V).float() if variant == "onehot"
               else emb(Xt))
        out, _ = rnn(inp)
        return lin(out)
    return [m for m in (emb, rnn, lin) if m is not None], logits


def make_torch(p, X, Y, threads, variant):
    """The idiomatic PyTorch training step on :func:`torch_model`'s modules."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    V = p["W_hq"].shape[1]
    mods, logits = torch_model(p, variant)
    params = [q for m in mods for q in m.parameters()]
    opt = torch.optim.SGD(params, lr=LR)
    Xt, Yt = torch.from_numpy(X.astype(np.int64)), torch.from_numpy(Y.astype(np.int64))

    def loss_fn():
        return torch.nn.functional.cross_entropy(logits(Xt).reshape(-1, V), Yt.reshape(-1))

    with torch.no_grad():
        loss0 = float(loss_fn())

    def step():
        torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()
    return step, loss0


# ---------------------------------------------------------------------------
# generation implementations: make(params, threads) -> (run, first_ids)

def _vocab28():
    return fastrnn.Vocab("abcdefghijklmnopqrstuvwxyz ")  # 27 chars + <unk> = 28


def gen_fastrnn(p, threads):
    lm = fastrnn.CharLM(_vocab28(), p["W_hh"].shape[0], dtype="float32")
    for k in p:
        lm.params[k][...] = p[k]

    def run():
        return lm.generate("the time traveller ", GEN_CHARS, temperature=TEMPERATURE, seed=1,
                           num_threads=threads)
    return run


def gen_reference(p, threads):
    """The honest NumPy sampler: one matrix-vector product per step, inverse-CDF draw."""
    vocab = _vocab28()
    rng = np.random.default_rng(1)
    W_xh, W_hh, b_h, W_hq, b_q = (p[k] for k in ("W_xh", "W_hh", "b_h", "W_hq", "b_q"))

    def run():
        h = np.zeros(W_hh.shape[0], W_hh.dtype)
        ids = vocab.encode("the time traveller ")
        for i in ids:
            h = np.tanh(W_xh[i] + h @ W_hh + b_h)
        out = []
        for _ in range(GEN_CHARS):
            o = (h @ W_hq + b_q) / TEMPERATURE
            e = np.exp(o - o.max())
            c = np.cumsum(e)
            tok = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
            out.append(tok)
            h = np.tanh(W_xh[tok] + h @ W_hh + b_h)
        return vocab.decode(out)
    return run


def gen_torch(p, threads):
    torch.set_flush_denormal(True)
    vocab = _vocab28()
    V, H = p["W_hq"].shape[1], p["W_hh"].shape[0]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    rnn, lin = torch.nn.RNN(V, H), torch.nn.Linear(H, V)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(t(p["W_xh"].T))
        rnn.weight_hh_l0.copy_(t(p["W_hh"].T))
        rnn.bias_ih_l0.copy_(t(p["b_h"]))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(t(p["W_hq"].T))
        lin.bias.copy_(t(p["b_q"]))
    gen = torch.Generator().manual_seed(1)

    @torch.no_grad()
    def run():
        torch.set_num_threads(threads)
        ids = torch.from_numpy(vocab.encode("the time traveller ").astype(np.int64))
        _, h = rnn(torch.nn.functional.one_hot(ids, V).float().unsqueeze(1))
        x = ids[-1:]
        out = []
        for _ in range(GEN_CHARS):
            o, h = rnn(torch.nn.functional.one_hot(x, V).float().unsqueeze(1), h)
            probs = torch.softmax(lin(o[-1, 0]) / TEMPERATURE, dim=-1)
            x = torch.multinomial(probs, 1, generator=gen)
            out.append(int(x))
        return vocab.decode(out)
    return run


# ---------------------------------------------------------------------------
# gated cells (issue 12): GRU and LSTM against torch.nn.GRU / torch.nn.LSTM

GATED_CONFIGS = {  # name: (cell, V, H, layers, B, T); T is None for generation
    "lstm-medium": ("lstm", 65, 256, 1, 64, 64),
    "gru-medium": ("gru", 65, 256, 1, 64, 64),
    "lstm-large": ("lstm", 65, 1024, 1, 64, 64),
    "lstm-charrnn": ("lstm", 65, 512, 2, 50, 50),
    "lstm-b1": ("lstm", 65, 256, 1, 1, 64),
    "lstm-generation": ("lstm", 65, 256, 1, 1, None),
}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# 64 characters + <unk> = 65 tokens (tinyshakespeare's vocabulary size)
CHARS65 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n\"("


def gated_train_flops(cell, V, H, L):
    """Flops per token of a training step: the recurrent product forward, the
    dL/dh_{t-1} product and dW_hh (2*G*H*H each), the same for the dense input
    projection of every layer above the first (layer 0 reads ids: a row gather), and
    the head (6*H*V)."""
    G = GATES[cell]
    return 6 * G * H * H * L + 6 * G * H * H * (L - 1) + 6 * H * V


def gated_gen_flops(cell, V, H, L):
    G = GATES[cell]
    return 2 * G * H * H * L + 2 * G * H * H * (L - 1) + 2 * H * V


def torch_gated_model(p, cell, L):
    """one_hot -> nn.GRU / nn.LSTM (num_layers=L, batch_first) -> nn.Linear holding
    fastrnn's parameters ``p`` (the concise d2l model); returns (rnn, lin).

    Mapping (fastrnn.params, row vectors): weight_ih_l{k} = W_xh_l{k}^T, weight_hh_l{k}
    = W_hh_l{k}^T, bias_ih_l{k} = b_h_l{k}, bias_hh_l{k} = 0 (LSTM) or [0, 0, b_hn_l{k}]
    (GRU: b_h holds r and z's recurrent biases already, b_hn is the n gate's)."""
    V, H = p["W_hq"].shape[1], p["W_hh"].shape[0]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(V, H, num_layers=L,
                                                              batch_first=True)
    lin = torch.nn.Linear(H, V)
    with torch.no_grad():
        for k in range(L):
            s = "" if k == 0 else f"_l{k}"
            getattr(rnn, f"weight_ih_l{k}").copy_(t(p["W_xh" + s].T))
            getattr(rnn, f"weight_hh_l{k}").copy_(t(p["W_hh" + s].T))
            getattr(rnn, f"bias_ih_l{k}").copy_(t(p["b_h" + s]))
            bhh = getattr(rnn, f"bias_hh_l{k}")
            bhh.zero_()
            if cell == "gru":
                bhh[2 * H:].copy_(t(p["b_hn" + s]))
        lin.weight.copy_(t(p["W_hq"].T))
        lin.bias.copy_(t(p["b_q"]))
    return rnn, lin


def make_torch_gated(p, X, Y, threads, cell, L, mkldnn=True):
    """The idiomatic PyTorch training step (one_hot, nn.GRU/nn.LSTM, nn.Linear, mean
    cross-entropy, backward, clip_grad_norm_, SGD) on :func:`torch_gated_model`;
    ``mkldnn=False`` runs forward and backward under
    ``torch.backends.mkldnn.flags(enabled=False)`` (PyTorch's own LSTM loop)."""
    import contextlib
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    V = p["W_hq"].shape[1]
    rnn, lin = torch_gated_model(p, cell, L)
    params = list(rnn.parameters()) + list(lin.parameters())
    opt = torch.optim.SGD(params, lr=LR)
    Xt, Yt = torch.from_numpy(X.astype(np.int64)), torch.from_numpy(Y.astype(np.int64))
    flags = (contextlib.nullcontext if mkldnn
             else lambda: torch.backends.mkldnn.flags(enabled=False))

    def loss_fn():
        out, _ = rnn(torch.nn.functional.one_hot(Xt, V).float())
        return torch.nn.functional.cross_entropy(lin(out).reshape(-1, V), Yt.reshape(-1))

    with torch.no_grad(), flags():
        loss0 = float(loss_fn())

    def step():
        torch.set_num_threads(threads)
        with flags():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()
    return step, loss0


def gated_makers(cell, L, torch_ok, numpy=False):
    """name -> make(p, X, Y, threads) -> (step, loss0) for a gated configuration."""
    makers = {"fastrnn": lambda *a: make_fastrnn(*a, cell=cell)}
    if numpy:
        makers["numpy"] = lambda *a: make_reference(*a, cell=cell)
    if torch_ok:
        makers[f"torch-{cell}"] = lambda *a: make_torch_gated(*a, cell=cell, L=L)
        if cell == "lstm":
            makers["torch-lstm-nomkldnn"] = lambda *a: make_torch_gated(*a, cell=cell, L=L,
                                                                        mkldnn=False)
    return makers


def gated_problem(cell, V, H, L, B, T):
    """float32 params (PyTorch's uniform init, forget bias 1), ids X, targets Y and
    the float64 reference's loss on them."""
    rng = np.random.default_rng(0)
    p = fastrnn.init_params(V, H, cell=cell, num_layers=L, dtype="float32", seed=0)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    ref_loss = reference.loss_and_grad({q: v.astype(np.float64) for q, v in p.items()}, X, Y,
                                       cell=cell)[0]
    return p, X, Y, ref_loss


def run_gated_train_config(name, cell, V, H, L, B, T, threads, quick, torch_ok):
    p, X, Y, ref_loss = gated_problem(cell, V, H, L, B, T)
    steps = {}
    for k, mk in gated_makers(cell, L, torch_ok).items():
        step, loss0 = mk(p, X, Y, threads)
        if abs(loss0 - ref_loss) > 1e-4 * abs(ref_loss):
            raise SystemExit(f"{name}: {k} loss {loss0} != float64 reference {ref_loss}")
        step()  # warm-up
        steps[k] = step
    slow = gated_train_flops(cell, V, H, L) * B * T > 20e9  # lstm-large: ~1 s per step
    med, rounds = interleaved(steps, rounds=(2 if slow else 3) if quick else 5,
                              min_time=(2 if slow else 4) if quick else 20,
                              settle=0.2)
    return ({k: B * T / v for k, v in med.items()}, med, rounds,
            gated_train_flops(cell, V, H, L))


def vocab65():
    return fastrnn.Vocab(CHARS65)


GATED_PREFIX = "The Time Traveller "


def gen_fastrnn_gated(p, threads, cell, L, n=None):
    H = p["W_hh"].shape[0]
    lm = fastrnn.CharLM(vocab65(), H, cell=cell, num_layers=L, dtype="float32")
    for k in p:
        lm.params[k][...] = p[k]

    def run():
        return lm.generate(GATED_PREFIX, n or GEN_CHARS, temperature=TEMPERATURE, seed=1,
                           num_threads=threads)
    return run, lm


def gen_reference_lstm(p, threads, n=None):
    """The honest NumPy LSTM sampler (one layer): one vector-matrix product per step."""
    vocab = vocab65()
    rng = np.random.default_rng(1)
    W_xh, W_hh, b_h, W_hq, b_q = (p[k] for k in ("W_xh", "W_hh", "b_h", "W_hq", "b_q"))
    H = W_hh.shape[0]

    def cell(x, h, c):
        a = W_xh[x] + h @ W_hh + b_h
        i, f, o = (1 / (1 + np.exp(-a[j * H:(j + 1) * H])) for j in (0, 1, 3))
        c = f * c + i * np.tanh(a[2 * H:3 * H])
        return o * np.tanh(c), c

    def run():
        h = np.zeros(H, W_hh.dtype)
        c = np.zeros(H, W_hh.dtype)
        for x in vocab.encode(GATED_PREFIX):
            h, c = cell(x, h, c)
        out = []
        for _ in range(n or GEN_CHARS):
            o = (h @ W_hq + b_q) / TEMPERATURE
            e = np.exp(o - o.max())
            cs = np.cumsum(e)
            tok = int(np.searchsorted(cs, rng.random() * cs[-1], side="right"))
            out.append(tok)
            h, c = cell(tok, h, c)
        return vocab.decode(out)
    return run


def gen_torch_gated(p, threads, cell, L, n=None, mkldnn=True):
    """PyTorch generating one character per call: rnn(one_hot(x), state), Linear,
    softmax, multinomial (as gen_torch for the Elman cell)."""
    torch.set_flush_denormal(True)
    vocab = vocab65()
    V = p["W_hq"].shape[1]
    rnn, lin = torch_gated_model(p, cell, L)
    gen = torch.Generator().manual_seed(1)
    import contextlib
    flags = (contextlib.nullcontext if mkldnn
             else lambda: torch.backends.mkldnn.flags(enabled=False))

    @torch.no_grad()
    def run():
        with flags():
            return _run()

    def _run():
        torch.set_num_threads(threads)
        ids = torch.from_numpy(vocab.encode(GATED_PREFIX).astype(np.int64))
        _, s = rnn(torch.nn.functional.one_hot(ids, V).float().unsqueeze(0))
        x = ids[-1:]
        out = []
        for _ in range(n or GEN_CHARS):
            o, s = rnn(torch.nn.functional.one_hot(x, V).float().unsqueeze(0), s)
            probs = torch.softmax(lin(o[0, -1]) / TEMPERATURE, dim=-1)
            x = torch.multinomial(probs, 1, generator=gen)
            out.append(int(x))
        return vocab.decode(out)
    return run, (rnn, lin)


def check_gated_generation(p, cell, L, lm, torch_mods, n=200):
    """Validation outside the timed calls: fastrnn's greedy continuation agrees with the
    float64 reference's argmax at every step (near-ties within 1e-4 excepted), and the
    PyTorch model's logits over the prefix equal fastrnn's."""
    vocab = lm.vocab
    ids = lm.generate_ids(GATED_PREFIX, n, greedy=True)
    seq = np.concatenate([vocab.encode(GATED_PREFIX), np.asarray(ids[:-1])])[None]
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    logits = reference.forward(p64, seq, cell=cell)[0][0, len(GATED_PREFIX) - 1:]
    for i, tok in enumerate(ids):
        o = logits[i]
        if o[best := int(np.argmax(o))] - o[tok] > 1e-4 * max(1.0, float(np.abs(o).max())):
            raise SystemExit(f"{cell} generation: greedy step {i} chose {tok}, the float64 "
                             f"reference's argmax is {best}")
    if torch_mods is not None:
        rnn, lin = torch_mods
        V = p["W_hq"].shape[1]
        with torch.no_grad():
            xt = torch.from_numpy(seq.astype(np.int64))
            got = lin(rnn(torch.nn.functional.one_hot(xt, V).float())[0]).numpy()
        want = fastrnn.forward(p, seq, cell=cell)[0]
        err = np.abs(got - want).max() / np.abs(want).max()
        if err > 1e-4:
            raise SystemExit(f"{cell} generation: PyTorch's logits differ from fastrnn's by "
                             f"{err:.2e}")


def run_gated_gen_config(cell, V, H, L, threads, quick, torch_ok):
    """Characters/s generating n characters (1,000 with --quick, 3,000 otherwise:
    PyTorch's LSTM takes about 1 ms per character on one thread, and with two threads
    on a loaded machine 10-30 ms). PyTorch on ``threads`` threads runs in the full run
    only; one thread is its faster setting for one character per call."""
    n = 1000 if quick else 3000
    p = fastrnn.init_params(V, H, cell=cell, num_layers=L, dtype="float32", seed=0)
    run, lm = gen_fastrnn_gated(p, threads, cell, L, n)
    runs = {"fastrnn": run}
    mods = None
    if cell == "lstm" and L == 1:
        runs["numpy"] = gen_reference_lstm(p, threads, n)
    if torch_ok:
        runs["torch-1thread"], mods = gen_torch_gated(p, 1, cell, L, n)
        if cell == "lstm":
            runs["torch-1thread-nomkldnn"] = gen_torch_gated(p, 1, cell, L, n,
                                                             mkldnn=False)[0]
        if threads != 1 and not quick:
            runs["torch"] = gen_torch_gated(p, threads, cell, L, n)[0]
    check_gated_generation(p, cell, L, lm, mods)
    texts = {k: r() for k, r in runs.items()}  # warm-up, and a sanity check
    for k, s in texts.items():
        if len(s) < n:  # <unk> decodes to 5 characters, so >= not ==
            raise SystemExit(f"{cell} generation: {k} produced only {len(s)} characters")
    med, rounds = interleaved(runs, rounds=2 if quick else 3, min_time=3 if quick else 10)
    return ({k: n / v for k, v in med.items()}, med, rounds,
            gated_gen_flops(cell, V, H, L))


# ---------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name and whether it has AVX-512F (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == (platform.processor()
                                                                or platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    return {"model": model, "avx512f": " avx512f" in flags, "avx2": " avx2" in flags}


def gemm_rate(threads, n=2048, reps=5):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def interleaved(fns, rounds, min_time, block=0.3, settle=0.2):
    """Median seconds per call of each fn.

    Rounds alternate between the implementations so that all see the same machine
    load; within a round each runs a block of back-to-back calls (about ``block``
    seconds) and only the block's median counts. Each block starts after a pause of
    ``settle`` seconds: thread pools the previous library leaves spinning must not
    time-share the cores with the next one (measured: OpenBLAS's threads spin for
    about 0.1 s after numpy's reference step, and a d2l fastrnn step run in that
    window took 7.6 ms instead of 3.6).
    """
    per_call = {k: [] for k in fns}
    reps = {}
    for k, f in fns.items():  # calls per block, from one timed call
        t0 = time.perf_counter()
        f()
        reps[k] = max(1, min(200, int(block / max(time.perf_counter() - t0, 1e-6))))
    t_end = time.perf_counter() + min_time
    r = 0
    while r < rounds or (time.perf_counter() < t_end and r < 100):
        for k, f in fns.items():
            time.sleep(settle)
            ts = []
            for _ in range(reps[k]):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            per_call[k].append(statistics.median(ts))
        r += 1
    return {k: statistics.median(v) for k, v in per_call.items()}, r


def run_train_config(name, V, H, B, T, threads, quick, torch_ok):
    rng = np.random.default_rng(0)
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    makers = {"fastrnn": make_fastrnn, "numpy": make_reference}
    if torch_ok:
        makers["torch-onehot"] = lambda *a: make_torch(*a, variant="onehot")
        makers["torch-embedding"] = lambda *a: make_torch(*a, variant="embedding")
    steps, ref_loss = {}, None
    for k, mk in makers.items():
        step, loss0 = mk(p, X, Y, threads)
        if ref_loss is None:
            ref_loss = reference.loss_and_grad(
                {q: v.astype(np.float64) for q, v in p.items()}, X, Y)[0]
        if abs(loss0 - ref_loss) > 1e-4 * abs(ref_loss):
            raise SystemExit(f"{name}: {k} loss {loss0} != reference {ref_loss}")
        step()  # warm-up
        steps[k] = step
    # budget: quick ~6 s per config, full ~25 s
    med, rounds = interleaved(steps, rounds=3 if quick else 5, min_time=4 if quick else 20)
    return {k: B * T / v for k, v in med.items()}, med, rounds, train_flops(V, H)


def run_gen_config(V, H, threads, quick, torch_ok):
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    runs = {"fastrnn": gen_fastrnn(p, threads), "numpy": gen_reference(p, threads)}
    if torch_ok:
        runs["torch"] = gen_torch(p, threads)
        if threads != 1:  # one character at a time: PyTorch is faster on one thread
            runs["torch-1thread"] = gen_torch(p, 1)
    texts = {k: r() for k, r in runs.items()}  # warm-up, and a sanity check
    for k, s in texts.items():
        if len(s) < GEN_CHARS:  # <unk> decodes to 5 characters, so >= not ==
            raise SystemExit(f"generation: {k} produced only {len(s)} characters")
    med, rounds = interleaved(runs, rounds=2 if quick else 3, min_time=3 if quick else 10)
    return {k: GEN_CHARS / v for k, v in med.items()}, med, rounds, 2 * H * H + 2 * H * V


# ---------------------------------------------------------------------------
# optional: the same model in ONNX Runtime (fastrnn.export.export_onnx)

ONNX_FORWARD = (28, 256, 64, 64)   # V, H, B, T of the batched forward


def _ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run_onnx_section(threads, quick, tmpdir):
    """fastrnn vs onnxruntime on one exported model: batched forward (logits and final
    state of B sequences of T ids) and generation (one sess.run per character, the
    loop examples/onnx_sample.py runs). Outputs are compared before timing."""
    import inspect
    from fastrnn import export
    rows = []
    V, H, B, T = ONNX_FORWARD
    rng = np.random.default_rng(0)
    X = rng.integers(0, V, (B, T))
    cells = ["rnn", "gru", "lstm"] if "cell" in inspect.signature(fastrnn.forward).parameters \
        else ["rnn"]  # the compiled API's cells on this branch
    for cell in cells:
        kw = {} if cell == "rnn" else {"cell": cell}
        p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform", **kw)
        path = os.path.join(tmpdir, f"{cell}.onnx")
        export.export_onnx(p, [chr(97 + i) for i in range(V)], path, cell=cell)
        sess = _ort_session(path, threads)
        feeds = {"ids": X.astype(np.int64), "h0": np.zeros((1, B, H), np.float32)}
        if cell == "lstm":
            feeds["c0"] = feeds["h0"]
        want = fastrnn.forward(p, X, num_threads=threads, **kw)[0]
        got = sess.run(None, feeds)[0]
        err = np.abs(got - want).max() / np.abs(want).max()
        if err > 1e-5:
            raise SystemExit(f"onnx forward ({cell}): onnxruntime differs from fastrnn by "
                             f"{err:.2e}")
        fns = {"fastrnn": lambda: fastrnn.forward(p, X, num_threads=threads, **kw),
               "onnxruntime": lambda: sess.run(None, feeds)}
        med, rounds = interleaved(fns, rounds=2 if quick else 4, min_time=2 if quick else 8)
        rows.append((f"fwd-{cell}", V, H, B, T, {k: B * T / v for k, v in med.items()}, med,
                     rounds))
    # generation (rnn: CharLM.generate's compiled sampler vs a sess.run per character)
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    vocab = _vocab28()
    path = os.path.join(tmpdir, "gen.onnx")
    export.export_onnx(p, vocab.tokens, path, cell="rnn")
    sess = _ort_session(path, threads)

    def gen_ort():
        r = np.random.default_rng(1)
        o, h = sess.run(None, {"ids": vocab.encode("the time traveller ")[None].astype(
            np.int64), "h0": np.zeros((1, 1, H), np.float32)})
        out = []
        for _ in range(GEN_CHARS):
            z = o[0, -1].astype(np.float64) / TEMPERATURE
            e = np.exp(z - z.max())
            c = np.cumsum(e)
            tok = int(np.searchsorted(c, r.random() * c[-1], side="right"))
            out.append(tok)
            o, h = sess.run(None, {"ids": np.array([[tok]], np.int64), "h0": h})
        return vocab.decode(out)
    fns = {"fastrnn": gen_fastrnn(p, threads), "onnxruntime": gen_ort}
    for k, f in fns.items():
        if len(f()) < GEN_CHARS:
            raise SystemExit(f"onnx generation: {k} produced too few characters")
    med, rounds = interleaved(fns, rounds=2 if quick else 3, min_time=2 if quick else 8)
    rows.append(("gen-rnn", V, H, 1, None, {k: GEN_CHARS / v for k, v in med.items()}, med,
                 rounds))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (under a minute)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every implementation (default: fastrnn's default)")
    ap.add_argument("--configs", default=",".join(list(CONFIGS) + list(GATED_CONFIGS)),
                    help=f"comma-separated subset of "
                         f"{','.join(list(CONFIGS) + list(GATED_CONFIGS))}; 'gated' means "
                         f"all of {','.join(GATED_CONFIGS)}")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--no-onnx", action="store_true",
                    help="skip the ONNX Runtime section even if onnxruntime is installed")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    threads = args.threads or fastrnn.default_num_threads()
    names = []
    for c in (c.strip() for c in args.configs.split(",")):
        names += list(GATED_CONFIGS) if c == "gated" else ([c] if c else [])
    for n in names:
        if n not in CONFIGS and n not in GATED_CONFIGS:
            ap.error(f"unknown config {n!r}; choose from "
                     f"{', '.join(list(CONFIGS) + list(GATED_CONFIGS))}")
    torch_ok = torch is not None and not args.no_torch
    peak = gemm_rate(threads)
    info = fastrnn.build_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = cpu_model()
    print(f"cpu: {cpu['model']}, avx512f={cpu['avx512f']}; load average at start: {load}")
    print(f"fastrnn {info['version']} (openmp={info['openmp']}), numpy {np.__version__}, "
          f"torch {torch.__version__ if torch_ok else 'not used'}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, {threads} threads; float32 gemm rate {peak:.1f} GFLOP/s")
    hdr = (f"{'config':<16}{'V':>4}{'H':>6}{'B':>6}{'T':>4} | {'impl':<20}{'tok/s':>12}"
           f"{'GFLOP/s':>9}{'%gemm':>7} | {'vs numpy':>9}{'vs torch':>9}")
    print(hdr)
    print("-" * len(hdr))
    results = []
    for name in names:
        cell, L = "rnn", 1
        if name in GATED_CONFIGS:
            cell, V, H, L, B, T = GATED_CONFIGS[name]
            if T is None:
                rate, med, rounds, fpt = run_gated_gen_config(cell, V, H, L, threads,
                                                              args.quick, torch_ok)
            else:
                rate, med, rounds, fpt = run_gated_train_config(name, cell, V, H, L, B, T,
                                                                threads, args.quick,
                                                                torch_ok)
        elif CONFIGS[name][3] is None:
            V, H, B, T = CONFIGS[name]
            rate, med, rounds, fpt = run_gen_config(V, H, threads, args.quick, torch_ok)
        else:
            V, H, B, T = CONFIGS[name]
            rate, med, rounds, fpt = run_train_config(name, V, H, B, T, threads, args.quick,
                                                      torch_ok)
        torch_keys = [k for k in rate if k.startswith("torch")]
        best_torch = max((rate[k] for k in torch_keys), default=None)
        for k, r in rate.items():
            gf = r * fpt / 1e9
            vs_np = rate["fastrnn"] / rate["numpy"] if (k == "fastrnn"
                                                        and "numpy" in rate) else None
            vs_t = rate["fastrnn"] / best_torch if (k == "fastrnn" and best_torch) else None
            print(f"{name:<16}{V:>4}{H:>6}{B:>6}{T if T else '-':>4} | {k:<20}{r:>12,.0f}"
                  f"{gf:>9.2f}{100 * gf / peak:>6.1f}% | "
                  f"{(f'{vs_np:.2f}x' if vs_np else ''):>9}{(f'{vs_t:.2f}x' if vs_t else ''):>9}")
            results.append({"config": name, "cell": cell, "layers": L,
                            "V": V, "H": H, "B": B, "T": T, "impl": k,
                            "tokens_per_s": r, "seconds_per_call": med[k], "rounds": rounds,
                            "gflops": gf, "pct_gemm": 100 * gf / peak,
                            "vs_numpy": vs_np, "vs_torch": vs_t})
        if name in GATED_CONFIGS and T is None:  # the memory bound of one step
            G = GATES[cell]
            mib = 4 * G * H * H * (2 * L - 1) / 2**20
            print(f"{'':<16}(each generated character reads W_hh and the dense W_xh: "
                  f"{mib:.2f} MiB of float32 weights; {name} is bound by their reads from "
                  f"cache, not by flops; with 2 threads each reads half)")
        sys.stdout.flush()
    onnx_ok = ort is not None and not args.no_onnx
    if onnx_ok:
        import tempfile
        print(f"\nthe same model in onnxruntime {ort.__version__} ({threads} intra-op threads; "
              f"fwd: logits of B x T ids; gen: characters/s, one sess.run per character)")
        with tempfile.TemporaryDirectory() as tmp:
            for name, V, H, B, T, rate, med, rounds in run_onnx_section(threads, args.quick,
                                                                         tmp):
                for k, r in rate.items():
                    vs = rate["fastrnn"] / rate["onnxruntime"] if k == "fastrnn" else None
                    print(f"{name:<11}{V:>4}{H:>6}{B:>6}{T if T else '-':>4} | {k:<16}"
                          f"{r:>12,.0f}" + (f" | {vs:.2f}x onnxruntime's" if vs else ""))
                    results.append({"config": name, "V": V, "H": H, "B": B, "T": T,
                                    "impl": k, "tokens_per_s": r, "seconds_per_call": med[k],
                                    "rounds": rounds, "vs_onnxruntime": vs})
                sys.stdout.flush()
    else:
        print("\n(onnxruntime section skipped: "
              + ("--no-onnx)" if ort is not None else "onnx/onnxruntime not installed)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "gemm_gflops": peak, "build_info": info,
                       "cpu": cpu, "loadavg_start": load,
                       "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
                       "argv": sys.argv[1:] if argv is None else list(argv),
                       "torch": torch.__version__ if torch_ok else None,
                       "onnxruntime": ort.__version__ if onnx_ok else None,
                       "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
