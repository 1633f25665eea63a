"""Training throughput against hidden size: fastrnn, the NumPy reference and PyTorch.

    pip install matplotlib                       # or: pip install -e '.[plot]'
    python benches/plot_hidden.py                # a few minutes on 2 cores
    python benches/plot_hidden.py --quick --out /tmp/q.png
    python benches/plot_hidden.py --replot benches/results/throughput_vs_hidden.json

Times compare.py's training step (forward, mean cross-entropy, BPTT, global-norm
clip, SGD update; float32; token ids) at B=64, T=64, V=28 -- the same B, T and V
for every hidden size, so the points are comparable -- for H in 32 ... 2048 and
plots tokens/s against H on log-log axes. Per hidden size the implementations
run interleaved round by round (as compare.interleaved), so they share the
machine's load; the plot shows medians with min-max bars. After one warm-up
step each, rounds repeat until a time budget per hidden size is spent (20 s;
3 s with --quick), at least 2 rounds (1 with --quick) and at most 30 (5): so
only a few rounds at large H, where a NumPy step takes seconds. Before timing, every
implementation's loss is checked against the float64 reference, as in compare.py.

A dotted line shows the machine's float32 gemm rate (numpy ``@`` on 2048x2048,
same threads, measured in the same run) divided by the flops of a token
(6*H*H + 6*H*V): the throughput of a step running at gemm speed.

Writes the PNG to --out and the raw numbers (every round's time) to the same
path with a .json suffix.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (benches/compare.py)

import fastrnn  # noqa: E402
from fastrnn import reference  # noqa: E402

HIDDEN = (32, 64, 128, 256, 512, 1024, 2048)
B, T, V = 64, 64, 28
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "throughput_vs_hidden.png"
STYLE = {  # label, matplotlib format
    "fastrnn": ("fastrnn", "o-"),
    "numpy": ("NumPy reference (fastrnn.reference)", "s-"),
    "torch-onehot": ("PyTorch one_hot + nn.RNN + nn.Linear", "^--"),
    "torch-embedding": ("PyTorch nn.Embedding + nn.RNN + nn.Linear", "v--"),
}
MATPLOTLIB_MISSING = ("plot_hidden.py needs matplotlib to draw the plot: "
                      "pip install matplotlib  (or: pip install -e '.[plot]')")


def need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def NullFormatter():
    from matplotlib.ticker import NullFormatter as F
    return F()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def problem(p):
    """Inputs, targets (as compare.run_train_config draws them) and the float64
    reference's loss on the same float32 values: the check of compare.py, from the
    forward pass only (the backward would triple its cost at H=2048)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    logits, _ = reference.forward({k: v.astype(np.float64) for k, v in p.items()}, X)
    m = logits.max(axis=-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
    return X, Y, float(-np.take_along_axis(logp, Y[..., None], axis=-1).mean())


def makers(torch_ok):
    m = {"fastrnn": compare.make_fastrnn, "numpy": compare.make_reference}
    if torch_ok:
        m["torch-onehot"] = lambda *a: compare.make_torch(*a, variant="onehot")
        m["torch-embedding"] = lambda *a: compare.make_torch(*a, variant="embedding")
    return m


def measure_hidden(H, threads, torch_ok, budget, min_rounds, max_rounds, log):
    """Every round's seconds per step of each implementation at hidden size H."""
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    X, Y, ref = problem(p)
    steps = {}
    for name, make in makers(torch_ok).items():
        step, loss0 = make(p, X, Y, threads)
        if abs(loss0 - ref) > 1e-4 * abs(ref):
            raise SystemExit(f"H={H}: {name} loss {loss0} != float64 reference {ref}")
        step()  # warm-up (PyTorch's first step is many times slower than the next)
        steps[name] = step
    # interleaved rounds, every implementation once per round, until the budget is
    # spent: at least min_rounds, at most max_rounds
    times = {k: [] for k in steps}
    t_end = time.perf_counter() + budget
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() < t_end and rounds < max_rounds):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    log(f"H={H:5d}: {rounds:2d} rounds  " + "  ".join(
        f"{k} {B * T / statistics.median(v):>10,.0f} tok/s" for k, v in times.items()))
    return {"H": H, "rounds": rounds, "flops_per_token": compare.train_flops(V, H),
            "seconds": times,
            "tokens_per_s": {k: B * T / statistics.median(v) for k, v in times.items()}}


def measure(hidden, threads, torch_ok, quick, log=print):
    budget, min_rounds, max_rounds = (3.0, 1, 5) if quick else (20.0, 2, 30)
    gemm = compare.gemm_rate(threads)
    info = fastrnn.build_info()
    log(f"fastrnn {info['version']} (openmp={info['openmp']}), numpy {np.__version__}, "
        f"torch {compare.torch.__version__ if torch_ok else 'not used'}; {cpu_name()}, "
        f"{os.cpu_count()} cpus, {threads} threads; float32 gemm rate {gemm:.1f} GFLOP/s")
    t0 = time.perf_counter()
    points = [measure_hidden(H, threads, torch_ok, budget, min_rounds, max_rounds, log)
              for H in hidden]
    return {"B": B, "T": T, "V": V, "dtype": "float32", "threads": threads,
            "quick": quick, "gemm_gflops": gemm, "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "numpy": np.__version__, "build_info": info,
            "torch": compare.torch.__version__ if torch_ok else None,
            "wall_seconds": time.perf_counter() - t0, "points": points}


def plot(data, out, plt):
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    Hs = np.array([pt["H"] for pt in data["points"]])
    impls = [k for k in STYLE if any(k in pt["seconds"] for pt in data["points"])]
    for k in impls:
        pts = [pt for pt in data["points"] if k in pt["seconds"]]
        h = [pt["H"] for pt in pts]
        med = np.array([B * T / statistics.median(pt["seconds"][k]) for pt in pts])
        lo = np.array([B * T / max(pt["seconds"][k]) for pt in pts])
        hi = np.array([B * T / min(pt["seconds"][k]) for pt in pts])
        label, fmt = STYLE[k]
        ax.errorbar(h, med, yerr=[med - lo, hi - med], fmt=fmt, capsize=3, label=label,
                    markersize=5, linewidth=1.5)
    bound = data["gemm_gflops"] * 1e9 / np.array([pt["flops_per_token"]
                                                   for pt in data["points"]])
    ax.plot(Hs, bound, ":", color="grey",
            label=f"gemm-rate bound: {data['gemm_gflops']:.0f} GFLOP/s (float32 2048² matmul)"
                  " / (6H²+6HV) flops per token")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(Hs)
    ax.set_xticklabels([str(h) for h in Hs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("hidden size H")
    ax.set_ylabel("training throughput (tokens/s, median; bars: min-max)")
    torch_v = f", torch {data['torch']}" if data["torch"] else ", PyTorch not installed"
    ax.set_title(
        f"Training step (float32, B={data['B']}, T={data['T']}, V={data['V']}) vs hidden size"
        f"{' [quick]' if data['quick'] else ''}\n{data['cpu']}, {data['threads']} threads "
        f"({data['cpu_count']} cpus); fastrnn {data['build_info']['version']}, "
        f"numpy {data['numpy']}{torch_v}", fontsize=9)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.15)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="PNG to write (default benches/results/throughput_vs_hidden.png); the raw "
                         "numbers go to the same path with a .json suffix")
    ap.add_argument("--quick", action="store_true",
                    help="short run: about 3 s of rounds per hidden size instead of 20")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every implementation (default: fastrnn's default)")
    ap.add_argument("--hidden", default=",".join(map(str, HIDDEN)),
                    help="comma-separated hidden sizes (default %(default)s)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--replot", metavar="JSON", type=Path,
                    help="draw the plot from a JSON this script wrote, without measuring")
    args = ap.parse_args(argv)
    plt = need_matplotlib()  # before minutes of measuring
    if args.replot:
        data = json.loads(args.replot.read_text())
    else:
        try:
            hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
        except ValueError:
            ap.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
        if not hidden or min(hidden) < 1:
            ap.error("--hidden needs at least one size >= 1")
        threads = args.threads or fastrnn.default_num_threads()
        torch_ok = compare.torch is not None and not args.no_torch
        if compare.torch is None:
            print("PyTorch is not installed: plotting fastrnn and NumPy only "
                  "(pip install torch to add it)")
        data = measure(hidden, threads, torch_ok, args.quick)
        json_path = args.out.with_suffix(".json")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=1, default=str))
        print(f"wrote {json_path} ({data['wall_seconds']:.0f} s of measuring)")
    plot(data, args.out, plt)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
