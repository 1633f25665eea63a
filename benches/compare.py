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

def make_fastrnn(p, X, Y, threads):
    from fastrnn import _lm
    names = list(p)
    sizes = [p[k].size for k in names]
    offs = np.cumsum([0] + sizes)
    # one flat vector, W_hh on a cache line, as CharLM keeps its parameters
    flat = fastrnn._core.empty_aligned(int(offs[-1]), p["W_hh"].dtype,
                                       at=int(offs[names.index("W_hh")]))
    flat[...] = np.concatenate([p[k].ravel() for k in names])
    gflat = np.empty_like(flat)
    params = {k: flat[offs[i]:offs[i + 1]].reshape(p[k].shape) for i, k in enumerate(names)}
    grads = {k: gflat[offs[i]:offs[i + 1]].reshape(p[k].shape) for i, k in enumerate(names)}
    loss0 = fastrnn.loss_and_grad(params, X, Y, num_threads=threads)[0]

    def step():
        loss, _, _ = fastrnn.loss_and_grad(params, X, Y, num_threads=threads, out=grads)
        _lm.clip_global_norm(gflat, CLIP)
        _lm.sgd_update(flat, gflat, LR)
        return loss
    return step, loss0


def make_reference(p, X, Y, threads):
    params = {k: v.copy() for k, v in p.items()}
    loss0 = reference.loss_and_grad(params, X, Y)[0]

    def step():
        loss, g, _ = reference.loss_and_grad(params, X, Y)
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
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--no-onnx", action="store_true",
                    help="skip the ONNX Runtime section even if onnxruntime is installed")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    threads = args.threads or fastrnn.default_num_threads()
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for n in names:
        if n not in CONFIGS:
            ap.error(f"unknown config {n!r}; choose from {', '.join(CONFIGS)}")
    torch_ok = torch is not None and not args.no_torch
    peak = gemm_rate(threads)
    info = fastrnn.build_info()
    print(f"fastrnn {info['version']} (openmp={info['openmp']}), numpy {np.__version__}, "
          f"torch {torch.__version__ if torch_ok else 'not used'}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, {threads} threads; float32 gemm rate {peak:.1f} GFLOP/s")
    hdr = (f"{'config':<11}{'V':>4}{'H':>6}{'B':>6}{'T':>4} | {'impl':<16}{'tok/s':>12}"
           f"{'GFLOP/s':>9}{'%gemm':>7} | {'vs numpy':>9}{'vs torch':>9}")
    print(hdr)
    print("-" * len(hdr))
    results = []
    for name in names:
        V, H, B, T = CONFIGS[name]
        if T is None:
            rate, med, rounds, fpt = run_gen_config(V, H, threads, args.quick, torch_ok)
        else:
            rate, med, rounds, fpt = run_train_config(name, V, H, B, T, threads, args.quick,
                                                      torch_ok)
        torch_keys = [k for k in rate if k.startswith("torch")]
        best_torch = max((rate[k] for k in torch_keys), default=None)
        for k, r in rate.items():
            gf = r * fpt / 1e9
            vs_np = rate["fastrnn"] / rate["numpy"] if k == "fastrnn" else None
            vs_t = rate["fastrnn"] / best_torch if (k == "fastrnn" and best_torch) else None
            print(f"{name:<11}{V:>4}{H:>6}{B:>6}{T if T else '-':>4} | {k:<16}{r:>12,.0f}"
                  f"{gf:>9.2f}{100 * gf / peak:>6.1f}% | "
                  f"{(f'{vs_np:.2f}x' if vs_np else ''):>9}{(f'{vs_t:.2f}x' if vs_t else ''):>9}")
            results.append({"config": name, "V": V, "H": H, "B": B, "T": T, "impl": k,
                            "tokens_per_s": r, "seconds_per_call": med[k], "rounds": rounds,
                            "gflops": gf, "pct_gemm": 100 * gf / peak,
                            "vs_numpy": vs_np, "vs_torch": vs_t})
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
                       "torch": torch.__version__ if torch_ok else None,
                       "onnxruntime": ort.__version__ if onnx_ok else None,
                       "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
