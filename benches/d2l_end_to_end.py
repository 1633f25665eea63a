"""d2l's current-edition run end to end, against its training steps alone and PyTorch.

    python benches/d2l_end_to_end.py                    # 100 epochs, 3 rounds, a few minutes
    python benches/d2l_end_to_end.py --quick            # 3 epochs, 1 round (a smoke run)
    python benches/d2l_end_to_end.py --rounds 5 --json benches/results/d2l_end_to_end.json

The run is ``examples/d2l_time_machine.py --run current`` (d2l.ai's "Recurrent Neural
Network Implementation from Scratch"): d2l's preprocessing, stride-1 windows of 32
characters (the first 10,000 for training, the next 5,000 for validation), hidden
size 32, batch 1024, SGD with lr 1, clipping at global norm 1, 100 epochs (1,000
optimizer steps), float32. In one process, each round times:

(a) ``fit``: the run exactly as the example does it (``CharLM.fit`` with
    ``val_text``, ``sampling="windows"``, so validation over every validation window
    after each epoch; ``progress=False`` unless ``--progress``).
(b) ``steps``: the same optimizer steps alone: ``fastrnn.loss_and_grad`` + the
    compiled global-norm clip + the SGD update on the same minibatches, built before
    the clock starts (the order fit draws from the same seed), no validation, no
    bookkeeping. (a) and (b) must end with the same parameters (checked: the
    largest difference is printed), so (a) - (b) is exactly what fit adds.
(c) ``torch`` (when PyTorch is importable, not with ``--no-torch``): a lean PyTorch
    loop, ``one_hot`` -> ``nn.RNN(V, 32)`` -> ``nn.Linear(32, V)``, mean cross-entropy,
    ``backward``, ``clip_grad_norm_(1)``, ``SGD(lr=1)``, the same minibatch order
    (indexed from the window tensors inside the loop) and the same per-epoch
    validation over every validation window (``no_grad``, summed cross-entropy),
    float32, the same thread count, starting from the same initial parameters
    (its ``bias_hh`` zero).

The rounds alternate the order of (a), (b), (c) so that all see the same machine
load; the figures are medians over the rounds. Printed: the ratios (a)/(b) and
(c)/(a) (of the medians, and their range over the rounds), each run's final
validation perplexity, and where (a)'s time went (from its history: training
seconds, validation seconds, and the rest). ``--json PATH`` writes everything.
Timings on a machine shared with other jobs vary a lot: compare ratios measured in
the same run only.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastrnn
from fastrnn import CharLM, datasets
from fastrnn._core import blas_single_thread, resolve_num_threads
from fastrnn.config import _seed64

try:
    import torch
except ImportError:  # PyTorch is an optional peer
    torch = None

ROOT = Path(__file__).resolve().parents[1]
H, B, T, LR, CLIP = 32, 1024, 32, 1.0, 1.0
EPOCHS, QUICK_EPOCHS = 100, 3


def _example():
    """examples/d2l_time_machine.py as a module (its corpus function is the protocol)."""
    spec = importlib.util.spec_from_file_location("d2l_time_machine",
                                                  ROOT / "examples" / "d2l_time_machine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_model() -> dict:
    """The CPU's model name and its AVX-512F / AVX2 flags (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
                if flags and line.startswith("model name"):
                    break
    except OSError:
        pass
    return {"model": model, "avx512f": " avx512f" in flags, "avx2": " avx2" in flags}


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def epoch_orders(n: int, epochs: int, seed) -> list[np.ndarray]:
    """Each epoch's window order, drawn as fit draws it: one PCG64 generator seeded
    with fit's 64-bit seed, one permutation of the n training windows per epoch
    (fastrnn.datasets.iter_minibatches with shuffle=True)."""
    gen = np.random.Generator(np.random.PCG64(_seed64(seed)))
    return [gen.permutation(n) for _ in range(epochs)]


def windows_ce_reference(params, val_ids) -> tuple[float, int]:
    """(summed cross-entropy, count) over every stride-1 validation window, each from a
    zero state: fastrnn.forward's logits, the log-softmax in float64 NumPy. Independent
    of fit's validation code (used to check it, outside the timing)."""
    X, Y = datasets.windows(val_ids, T)
    total, count = 0.0, 0
    for i in range(0, len(X), B):
        logits, _ = fastrnn.forward(params, np.ascontiguousarray(X[i:i + B]))
        o = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
        y = np.asarray(Y[i:i + B]).reshape(-1)
        m = o.max(axis=1)
        lse = m + np.log(np.exp(o - m[:, None]).sum(axis=1))
        total += float((lse - o[np.arange(len(y)), y]).sum())
        count += len(y)
    return total, count


# ---------------------------------------------------------------------------
# (a) the run as the example does it

def run_fit(vocab, train, val, *, epochs, threads, seed, progress):
    lm = CharLM(vocab, H, seed=seed)
    t0 = time.perf_counter()
    hist = lm.fit(train, val_text=val, epochs=epochs, batch_size=B, num_steps=T, lr=LR,
                  optimizer="sgd", clip=CLIP, sampling="windows", num_threads=threads,
                  progress=progress, seed=seed)
    wall = time.perf_counter() - t0
    train_s = sum(r["tokens"] / r["tokens_per_s"] for r in hist)
    epochs_s = sum(r["wall_time"] for r in hist)
    return {"wall_s": wall, "train_ppl": hist[-1]["train_ppl"], "val_ppl": hist[-1]["val_ppl"],
            "train_loop_s": train_s, "validation_s": epochs_s - train_s,
            "outside_epochs_s": wall - epochs_s,
            "steps": hist[-1]["step"]}, lm


# ---------------------------------------------------------------------------
# (b) the same optimizer steps alone

def build_batches(train, orders):
    """Every minibatch of the run, C-contiguous int32 (B, T) copies, in fit's order."""
    X, Y = datasets.windows(train, T)
    out = []
    for order in orders:
        for i in range(0, len(order), B):
            rows = order[i:i + B]
            out.append((np.ascontiguousarray(X[rows], np.int32),
                        np.ascontiguousarray(Y[rows], np.int32)))
    return out


def run_steps(vocab, batches, *, threads, seed):
    from fastrnn import _lm
    lm = CharLM(vocab, H, seed=seed)                     # the same initial parameters
    flat, params = lm._flat, lm.params
    gflat = np.zeros_like(flat)
    grads = lm._views(gflat)
    losses = np.empty(len(batches))
    with blas_single_thread():
        t0 = time.perf_counter()
        for k, (X, Y) in enumerate(batches):
            losses[k], _, _ = fastrnn.loss_and_grad(params, X, Y, num_threads=threads,
                                                    out=grads)
            _lm.clip_global_norm(gflat, CLIP)
            _lm.sgd_update(flat, gflat, LR)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "steps": len(batches), "last_loss": float(losses[-1])}, lm


# ---------------------------------------------------------------------------
# (c) a lean PyTorch loop

def run_torch(vocab, train, val, orders, init, *, threads):
    """(c), with PyTorch's thread count and flush-denormal mode set for the run and
    restored after it (both are process-wide)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        return _run_torch(vocab, train, val, orders, init)
    finally:
        torch.set_flush_denormal(False)    # the process default (hypothesis checks it)
        torch.set_num_threads(old_threads)


def _run_torch(vocab, train, val, orders, init):
    F = torch.nn.functional
    V = len(vocab)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    rnn, lin = torch.nn.RNN(V, H, batch_first=True), torch.nn.Linear(H, V)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(t(init["W_xh"].T))
        rnn.weight_hh_l0.copy_(t(init["W_hh"].T))
        rnn.bias_ih_l0.copy_(t(init["b_h"]))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(t(init["W_hq"].T))
        lin.bias.copy_(t(init["b_q"]))
    params = list(rnn.parameters()) + list(lin.parameters())
    opt = torch.optim.SGD(params, lr=LR)
    Xw, Yw = (t(np.asarray(a, np.int64)) for a in datasets.windows(train, T))
    Xv, Yv = (t(np.asarray(a, np.int64)) for a in datasets.windows(val, T))
    perms = [t(o.astype(np.int64)) for o in orders]

    def logits(X):
        out, _ = rnn(F.one_hot(X, V).float())
        return lin(out).reshape(-1, V)

    t0 = time.perf_counter()
    for perm in perms:
        loss_sum, count = 0.0, 0
        for i in range(0, len(perm), B):
            idx = perm[i:i + B]
            X, Y = Xw[idx], Yw[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(logits(X), Y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            loss_sum += loss.item() * Y.numel()
            count += Y.numel()
        with torch.no_grad():                            # per-epoch validation
            vs = 0.0
            for i in range(0, len(Xv), B):
                vs += F.cross_entropy(logits(Xv[i:i + B]), Yv[i:i + B].reshape(-1),
                                      reduction="sum").item()
            val_loss = vs / Yv.numel()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_ppl": math.exp(loss_sum / count),
            "val_ppl": math.exp(val_loss), "torch": torch.__version__}


# ---------------------------------------------------------------------------

def warm_up(vocab, train, val, batches, orders, init, *, threads, use_torch):
    """One untimed step of each implementation (libraries loaded, buffers allocated, PyTorch's
    first-call costs paid) so that the first timed round is not the slowest."""
    run_fit(vocab, train[:2 * B + T], val[:B + T], epochs=1, threads=threads, seed=0,
            progress=False)
    run_steps(vocab, batches[:2], threads=threads, seed=0)
    if use_torch:
        run_torch(vocab, train, val, [orders[0][:2 * B]], init, threads=threads)


def _median(xs):
    return statistics.median(xs) if xs else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None,
                    help=f"epochs (default {EPOCHS}; --quick: {QUICK_EPOCHS})")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few epochs, one round")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every implementation (default: fastrnn's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None,
                    help="directory holding timemachine.txt (default: ../shared/data next "
                         "to the repository when present, else fastrnn's data directory)")
    ap.add_argument("--progress", action="store_true", help="(a) with its progress bar")
    ap.add_argument("--no-torch", action="store_true", help="skip (c)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = ap.parse_args(argv)
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    rounds = args.rounds or (1 if args.quick else 3)
    if epochs < 1 or rounds < 1:
        ap.error("--epochs and --rounds must be positive")
    threads = resolve_num_threads(args.threads)
    data_dir = args.data_dir
    if data_dir is None and (ROOT.parent / "shared" / "data" / "timemachine.txt").is_file():
        data_dir = ROOT.parent / "shared" / "data"
    try:
        raw = datasets.time_machine(data_dir=data_dir)
    except (datasets.DatasetUnavailableError, datasets.ChecksumMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    use_torch = torch is not None and not args.no_torch

    vocab, train, val = _example().current_edition_corpus(raw)
    n_train = len(train) - T
    orders = epoch_orders(n_train, epochs, args.seed)
    batches = build_batches(train, orders)
    init = {k: v.copy() for k, v in CharLM(vocab, H, seed=args.seed).params.items()}
    cpu = cpu_model()
    load0 = _loadavg()
    print(f"cpu: {cpu['model']} (avx512f={cpu['avx512f']}, avx2={cpu['avx2']}), "
          f"{os.cpu_count()} cpus, {threads} threads; load average {load0}")
    print(f"d2l current edition: H {H}, batch {B}, {T} steps, {epochs} epochs = "
          f"{len(batches)} steps; {n_train} training / {len(val) - T} validation windows; "
          f"fastrnn {fastrnn.__version__}"
          + (f", torch {torch.__version__}" if use_torch else ", PyTorch not used"))

    warm_up(vocab, train, val, batches, orders, init, threads=threads, use_torch=use_torch)
    names = ["fit", "steps"] + (["torch"] if use_torch else [])
    times = {k: [] for k in names}
    last = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name == "fit":
                res, lm_a = run_fit(vocab, train, val, epochs=epochs, threads=threads,
                                    seed=args.seed, progress=args.progress)
            elif name == "steps":
                res, lm_b = run_steps(vocab, batches, threads=threads, seed=args.seed)
            else:
                res = run_torch(vocab, train, val, orders, init, threads=threads)
            times[name].append(res["wall_s"])
            last.setdefault(name, []).append(res)
            print(f"  round {r + 1}/{rounds} {name:5s}: {res['wall_s']:7.2f} s"
                  + (f", val ppl {res['val_ppl']:.3f}" if "val_ppl" in res else ""),
                  flush=True)

    # (b) outside the clock: its validation perplexity, independently of fit's code,
    # and the check that (a) and (b) ran the same steps
    s, c = windows_ce_reference(lm_b.params, val)
    val_ppl_b = math.exp(s / c)
    s, c = windows_ce_reference(lm_a.params, val)
    val_ppl_a_ref = math.exp(s / c)
    diff = float(np.max(np.abs(lm_a._flat - lm_b._flat)))
    med = {k: _median(v) for k, v in times.items()}
    fit_last = last["fit"][-1]
    result = {
        "bench": "benches/d2l_end_to_end.py", "argv": sys.argv[1:] if argv is None else argv,
        "cpu": cpu, "cpus": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__,
        "fastrnn": fastrnn.__version__, "torch": torch.__version__ if use_torch else None,
        "loadavg_start": load0, "loadavg_end": _loadavg(),
        "protocol": {"hidden": H, "batch": B, "num_steps": T, "lr": LR, "clip": CLIP,
                     "epochs": epochs, "steps": len(batches), "train_windows": n_train,
                     "val_windows": len(val) - T, "seed": args.seed,
                     "progress_bar": args.progress},
        "rounds": rounds, "seconds": times, "median_s": med,
        "ratio_fit_over_steps": med["fit"] / med["steps"],
        "ratio_fit_over_steps_per_round": [a / b for a, b in zip(times["fit"], times["steps"])],
        "ratio_torch_over_fit": med["torch"] / med["fit"] if use_torch else None,
        "ratio_torch_over_fit_per_round": ([a / b for a, b in zip(times["torch"], times["fit"])]
                                           if use_torch else None),
        "fit_breakdown_median_s": {
            k: _median([x[k] for x in last["fit"]])
            for k in ("train_loop_s", "validation_s", "outside_epochs_s")},
        "fit_breakdown_per_round_s": [
            {k: x[k] for k in ("train_loop_s", "validation_s", "outside_epochs_s")}
            for x in last["fit"]],
        # validation over fit's own training loop, epoch by epoch in one run: the
        # figure least disturbed by a load that changes between runs
        "fit_validation_over_train_loop": _median([x["validation_s"] / x["train_loop_s"]
                                                   for x in last["fit"]]),
        "val_ppl": {"fit": fit_last["val_ppl"], "fit_recomputed": val_ppl_a_ref,
                    "steps": val_ppl_b,
                    "torch": last["torch"][-1]["val_ppl"] if use_torch else None},
        "train_ppl": {"fit": fit_last["train_ppl"],
                      "torch": last["torch"][-1]["train_ppl"] if use_torch else None},
        "params_max_abs_diff_fit_vs_steps": diff,
    }
    bd = result["fit_breakdown_median_s"]
    print(f"\nmedians over {rounds} round(s): fit {med['fit']:.2f} s (training loop "
          f"{bd['train_loop_s']:.2f} s, validation {bd['validation_s']:.2f} s, outside "
          f"the epochs {bd['outside_epochs_s']:.2f} s), steps alone {med['steps']:.2f} s"
          + (f", torch {med['torch']:.2f} s" if use_torch else ""))
    print(f"fit's validation / fit's training loop: "
          f"{result['fit_validation_over_train_loop']:.3f}")
    rr = result["ratio_fit_over_steps_per_round"]
    print(f"(a)/(b) fit / steps alone: {result['ratio_fit_over_steps']:.3f} "
          f"(rounds {min(rr):.3f}..{max(rr):.3f})")
    if use_torch:
        rr = result["ratio_torch_over_fit_per_round"]
        print(f"(c)/(a) torch / fit:       {result['ratio_torch_over_fit']:.3f} "
              f"(rounds {min(rr):.3f}..{max(rr):.3f})")
    vp = result["val_ppl"]
    print(f"val ppl: fit {vp['fit']:.4f} (recomputed {vp['fit_recomputed']:.4f}), steps "
          f"{vp['steps']:.4f}" + (f", torch {vp['torch']:.4f}" if use_torch else "")
          + f"; fit vs steps parameters differ by at most {diff:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
