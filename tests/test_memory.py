"""No leaks: many calls keep the process's memory flat.

Each check runs in a fresh child interpreter (so other tests' allocations do
not blur the figures), warms up, then measures

* resident memory (/proc/self/statm) across 10,000 ``loss_and_grad`` calls and
  1,000 ``CharLM.generate`` calls: catches leaks in C (kernels, workspaces,
  OpenMP/BLAS buffers) of a few hundred bytes per call or more;
* Python-level allocations with tracemalloc (numpy reports its buffers to it)
  and the number of live objects: catches a leaked array or reference per call
  at byte granularity.

tools/valgrind.sh complements this with memcheck's "definitely lost" count.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastrnn

PKG_ROOT = Path(fastrnn.__file__).resolve().parents[1]
RSS_BOUND_MB = 5.0
pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").exists(),
                                reason="needs Linux /proc for resident memory")

PRELUDE = '''
import gc, json, os, sys, tracemalloc
import numpy as np
import fastrnn
if getattr(fastrnn._core, "_rnn", None) is not None and hasattr(
        fastrnn._core._rnn, "set_min_flops_per_thread"):
    fastrnn._core._rnn.set_min_flops_per_thread(0)   # 2 threads really run 2 chunks

PAGE = os.sysconf("SC_PAGE_SIZE")

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

def measure(step, n, warmup, traced_n):
    """RSS growth over n calls after warmup, and tracemalloc/object growth over
    traced_n further calls."""
    for i in range(warmup):
        step(i)
    gc.collect()
    r0 = rss_mb()
    for i in range(n):
        step(i)
    gc.collect()
    r1 = rss_mb()
    n_obj0 = len(gc.get_objects())
    tracemalloc.start()
    step(0)
    gc.collect()
    t0, _ = tracemalloc.get_traced_memory()
    for i in range(traced_n):
        step(i)
    gc.collect()
    t1, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_obj1 = len(gc.get_objects())
    return {"rss_before_mb": r0, "rss_after_mb": r1, "rss_growth_mb": r1 - r0,
            "traced_growth_bytes": t1 - t0, "objects_growth": n_obj1 - n_obj0}
'''


def run_child(code: str, timeout: float = 300) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    res = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=str(PKG_ROOT))
    assert res.returncode == 0, (f"child exited {res.returncode}\n{res.stdout[-3000:]}\n"
                                 f"{res.stderr[-6000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def check(figures: dict, label: str, calls: int, traced_calls: int) -> None:
    print(label, figures)
    assert figures["rss_growth_mb"] < RSS_BOUND_MB, (
        f"{label}: resident memory grew {figures['rss_growth_mb']:.2f} MB over {calls} "
        f"calls (bound {RSS_BOUND_MB} MB): {figures}")
    # a leaked array or object per call would be >= traced_calls * ~100 bytes
    assert figures["traced_growth_bytes"] < 64 * 1024, (
        f"{label}: Python-level allocations grew {figures['traced_growth_bytes']} bytes "
        f"over {traced_calls} calls: {figures}")
    assert figures["objects_growth"] < traced_calls // 10, (
        f"{label}: {figures['objects_growth']} more live objects after {traced_calls} "
        f"calls: {figures}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_and_grad_10000_calls_flat(dtype):
    """10,000 loss_and_grad calls (ids and dense, 1 and 2 threads, fresh and out=
    gradient buffers, alternating shapes so the workspace is reallocated)."""
    figures = run_child(f'''
        rng = np.random.default_rng(0)
        B, T, D, H, V = 4, 8, 10, 16, 10
        p = fastrnn.init_params(D, H, V, dtype="{dtype}", seed=0, init="uniform")
        Xs = [rng.integers(0, D, (B, T)), rng.standard_normal((B, T, D)),
              rng.integers(0, D, (B + 1, T - 3))]
        Ys = [rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)),
              rng.integers(0, V, (B + 1, T - 3))]
        out = {{k: np.empty_like(v) for k, v in p.items()}}

        def step(i):
            j = i % 3
            h0 = None if i % 2 else np.zeros((Xs[j].shape[0], H))
            kw = {{"out": out}} if i % 5 == 0 else {{}}
            loss, g, hT = fastrnn.loss_and_grad(p, Xs[j], Ys[j], h0,
                                                num_threads=1 + i % 2, **kw)
            if i % 7 == 0:
                fastrnn.forward(p, Xs[j], hT, num_threads=1 + i % 2)

        print(json.dumps(measure(step, 10_000, 500, 2_000)))
    ''')
    check(figures, f"loss_and_grad {dtype}", 10_000, 2_000)


def test_rejected_calls_do_not_leak():
    """Validation errors (raised before C) leave nothing behind either."""
    figures = run_child('''
        p = fastrnn.init_params(5, 6, 7, dtype="float64", seed=0)
        X = np.zeros((3, 4), int)
        bad = [(p, X + 5, X), (p, X, X - 1), ({**p, "W_hh": np.zeros((6, 5))}, X, X),
               (p, np.zeros((3, 4, 2)), X), ({**p, "b_q": p["b_q"] * np.nan}, X, X)]

        def step(i):
            try:
                fastrnn.loss_and_grad(*bad[i % len(bad)])
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError("accepted")

        print(json.dumps(measure(step, 10_000, 500, 2_000)))
    ''')
    check(figures, "rejected calls", 10_000, 2_000)


def _has_charlm():
    return getattr(fastrnn, "CharLM", None) is not None


@pytest.mark.skipif(not _has_charlm(), reason="fastrnn.CharLM is not on this branch yet "
                    "(test_memory: 1,000 generate calls)")
def test_generate_1000_calls_flat():
    figures = run_child('''
        text = "the quick brown fox jumps over the lazy dog. " * 50
        lm = fastrnn.CharLM(text, hidden_size=32, seed=0)

        def step(i):
            s = lm.generate("the ", 60, seed=i, temperature=0.8,
                            top_k=None if i % 2 else 5, greedy=(i % 11 == 0))
            assert s.startswith("the ") and len(s) >= 64   # "<unk>" decodes to 5 chars
            if i % 10 == 0:
                lm.perplexity(text[:200])

        print(json.dumps(measure(step, 1_000, 100, 300)))
    ''')
    check(figures, "generate", 1_000, 300)
