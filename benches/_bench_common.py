"""Helpers shared by the pytest-benchmark suites in benches/ (test_bench_*.py).

Each bench checks its result against the NumPy reference once, outside the timed
call, then times ``rounds`` calls after one warm-up call. Rounds are chosen from
the duration of the checked call so that each bench takes about
``FASTRNN_BENCH_SECONDS`` seconds (default 2), within fixed bounds; raise it on
a quiet machine for steadier medians.
"""
from __future__ import annotations

import functools
import os
import time

import numpy as np
import pytest

import compare  # benches/compare.py (benches/ is on sys.path: see conftest.py)

import fastrnn
from fastrnn import reference

THREADS = fastrnn.default_num_threads()
TORCH_REASON = "PyTorch is not installed (optional peer: pip install torch)"
TRAIN_CONFIGS = [k for k, (V, H, B, T) in compare.CONFIGS.items() if T is not None]
GEN_CONFIGS = [k for k, (V, H, B, T) in compare.CONFIGS.items() if T is None]


def impl_params(names):
    """pytest.param for each implementation name; torch ones skip without PyTorch."""
    return [pytest.param(n, marks=pytest.mark.skipif(compare.torch is None, reason=TORCH_REASON))
            if n.startswith("torch") else n for n in names]


def budget_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get("FASTRNN_BENCH_SECONDS", "2")))
    except ValueError:
        return 2.0


def rounds_for(seconds: float, lo: int = 3, hi: int = 50) -> int:
    """Rounds of ``seconds`` each that fill the time budget, clamped to [lo, hi]."""
    return int(min(hi, max(lo, budget_seconds() // max(seconds, 1e-9))))


def timed(fn, *args):
    """(fn(*args), seconds): the check call, outside pytest-benchmark's timing."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def seconds_per_call(fn, first_seconds):
    """Estimate of one call's duration, for choosing rounds: the first (check)
    call pays one-time costs (PyTorch's first call is 10-30x slower), so when it
    was shorter than the budget, time one more call and take the faster."""
    if first_seconds < budget_seconds():
        return min(first_seconds, timed(fn)[1])
    return first_seconds


def run_bench(benchmark, fn, *, group, check_seconds, units, unit_name, rounds_lo=3,
              rounds_hi=50):
    """Time ``fn`` with pedantic (one warm-up round), label the group, and record
    the throughput (``units`` per call, e.g. tokens) in extra_info. ``check_seconds``
    is how long the check call took."""
    benchmark.group = group
    if getattr(benchmark, "disabled", False):  # --benchmark-disable: one plain call
        rounds = 1
    else:
        rounds = rounds_for(seconds_per_call(fn, check_seconds), rounds_lo, rounds_hi)
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)  # None if disabled
    if stats is not None and stats.median > 0:
        benchmark.extra_info[f"{unit_name}_per_s"] = units / stats.median
    benchmark.extra_info["threads"] = THREADS
    return result


# ---------------------------------------------------------------------------
# problems, built once per configuration and shared by the three suites

@functools.lru_cache(maxsize=None)
def train_problem(name):
    """float32 params, inputs, targets as compare.run_train_config builds them, and
    the float64 reference's logits, final state and mean cross-entropy on the same
    values. Shared between benches: every implementation copies the params."""
    V, H, B, T = compare.CONFIGS[name]
    rng = np.random.default_rng(0)
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    logits64, hT64 = reference.forward(p64, X)
    m = logits64.max(axis=-1, keepdims=True)
    logp = logits64 - m - np.log(np.exp(logits64 - m).sum(axis=-1, keepdims=True))
    loss64 = float(-np.take_along_axis(logp, Y[..., None], axis=-1).mean())
    return p, X, Y, logits64, hT64, loss64


def assert_loss_close(got, ref, what):
    assert abs(got - ref) <= 1e-4 * abs(ref), f"{what}: loss {got} != float64 reference {ref}"


@functools.lru_cache(maxsize=None)
def gated_problem(name):
    """compare.gated_problem for a compare.GATED_CONFIGS training configuration:
    (float32 params, X, Y, the float64 reference's loss)."""
    cell, V, H, L, B, T = compare.GATED_CONFIGS[name]
    return compare.gated_problem(cell, V, H, L, B, T)
