"""No leaks: many calls keep the process's memory flat.

Each check runs in a fresh child interpreter (so other tests' allocations do
not blur the figures), warms up, then measures

* resident memory (/proc/self/statm) across 10,000 ``loss_and_grad`` calls and
  20,000 ``CharLM.generate`` calls, bound RSS_BOUND_MB: catches leaks in C (kernels,
  workspaces, OpenMP/BLAS buffers) of more than about 100 bytes per call (loss_and_grad)
  or 50 bytes per call (generate). The generate kernel's one work buffer is about
  5 KB for the test's model: leaking it grows RSS by about 100 MB here;
* bytes handed out by malloc and not freed (glibc's mallinfo2) across the same calls,
  bound MALLOC_BOUND_PER_CALL bytes per call: catches a C leak to the byte, even one too
  small to move RSS (a 100-byte leak per generate call did not);
* Python-level allocations with tracemalloc (numpy reports its buffers to it) over
  TRACED_CALLS further calls, bound TRACED_BOUND_BYTES (24 bytes per call), and the
  number of live objects: a leaked 100-byte object (or array, or reference) per call
  grows them by 200 KB, far over the bound.

Each bound was checked by leaking on purpose (issue 17): dropping the generate
kernel's ``free`` (RSS +98 MB), a 100-byte ``malloc`` per generate call left unfreed
(malloc +112 B per call; RSS stayed flat) and a 100-byte Python object kept per call
all fail.

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
RSS_BOUND_MB = 1.0             # over 10,000 / 20,000 calls; 0.0-0.3 MB measured when clean
MALLOC_BOUND_PER_CALL = 8      # bytes malloc'ed and kept per call (glibc only)
TRACED_CALLS = 2_000
TRACED_BOUND_BYTES = 48 * 1024  # 24 B per call; 1.5-15 KB measured when clean
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

# bytes malloc has handed out and not had back (glibc's mallinfo2, all arenas, mmapped
# blocks included): exact to the byte, where RSS only moves once a leak has used up
# the free memory the heap already holds (a 100-byte leak per call left RSS flat over
# 20,000 generate calls; this counted 112 bytes per call)
import ctypes
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]
try:
    _mallinfo2 = ctypes.CDLL(None).mallinfo2
    _mallinfo2.restype = _Mallinfo2
except (OSError, AttributeError):   # not glibc >= 2.33
    _mallinfo2 = None

def malloc_in_use():
    if _mallinfo2 is None:
        return None
    m = _mallinfo2()
    return m.uordblks + m.hblkhd

def measure(step, n, warmup, traced_n):
    """RSS growth over n calls after warmup, and tracemalloc/object growth over
    traced_n further calls."""
    for i in range(warmup):
        step(i)
    gc.collect()
    r0, m0 = rss_mb(), malloc_in_use()
    for i in range(n):
        step(i)
    gc.collect()
    r1, m1 = rss_mb(), malloc_in_use()
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
            "malloc_growth_bytes": None if m0 is None else m1 - m0,
            "traced_growth_bytes": t1 - t0, "objects_growth": n_obj1 - n_obj0}
'''


def run_child(code: str, timeout: float = 300) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    res = subprocess.run([sys.executable, "-c", f"TRACED_CALLS = {TRACED_CALLS}\n" + PRELUDE
                          + textwrap.dedent(code)],
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
    if figures["malloc_growth_bytes"] is not None:
        assert figures["malloc_growth_bytes"] < MALLOC_BOUND_PER_CALL * calls, (
            f"{label}: malloc'ed memory in use grew {figures['malloc_growth_bytes']} bytes "
            f"over {calls} calls (bound {MALLOC_BOUND_PER_CALL} bytes per call): {figures}")
    # a leaked array or object per call would be >= traced_calls * ~100 bytes
    assert figures["traced_growth_bytes"] < TRACED_BOUND_BYTES, (
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

        print(json.dumps(measure(step, 10_000, 500, TRACED_CALLS)))
    ''')
    check(figures, f"loss_and_grad {dtype}", 10_000, TRACED_CALLS)


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

        print(json.dumps(measure(step, 10_000, 500, TRACED_CALLS)))
    ''')
    check(figures, "rejected calls", 10_000, TRACED_CALLS)


def _has_charlm():
    return getattr(fastrnn, "CharLM", None) is not None


@pytest.mark.skipif(not _has_charlm(), reason="fastrnn.CharLM is not on this branch yet "
                    "(test_memory: 20,000 generate calls)")
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

        print(json.dumps(measure(step, 20_000, 200, TRACED_CALLS)))
    ''')
    check(figures, "generate", 20_000, TRACED_CALLS)
