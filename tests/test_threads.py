"""Threads: the kernels release the GIL; concurrent calls from several Python
threads give exactly the single-threaded results; OpenMP thread counts from
arguments and the environment are honoured; the BLAS thread limit is restored.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastrnn

PKG_ROOT = Path(fastrnn.__file__).resolve().parents[1]
CharLM = getattr(fastrnn, "CharLM", None)
needs_charlm = pytest.mark.skipif(CharLM is None,
                                  reason="fastrnn.CharLM is not on this branch yet")
GRADS = ("W_xh", "W_hh", "b_h", "W_hq", "b_q", "h0")


def problem(seed, B, T, D, H, V, dtype=np.float64, dense=False):
    rng = np.random.default_rng(seed)
    p = fastrnn.init_params(D, H, V, dtype=dtype, seed=seed, init="uniform")
    X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
    Y = rng.integers(0, V, (B, T))
    h0 = rng.standard_normal((B, H)) * 0.5
    return p, X, Y, h0


def assert_identical(a, b, what=""):
    """loss_and_grad results, bitwise."""
    assert a[0] == b[0], (what, a[0], b[0])
    for k in GRADS:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=f"{what} {k}")
    np.testing.assert_array_equal(a[2], b[2], err_msg=f"{what} h_T")


def run_threads(target, n):
    """Start n threads at once (a barrier), join them, re-raise the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------
# the GIL is released

def longest_pause_while(fn):
    """Run fn() in a worker thread while this thread ticks every millisecond; return
    (duration of fn, longest pause between two ticks).

    Each tick needs the GIL. While fn holds the GIL inside C, this thread cannot
    tick, so the longest pause is at least that stretch of C code. With the GIL
    released it stays near the tick (plus scheduling noise). Ticking with
    time.sleep leaves the CPU to the worker on a busy machine.
    """
    done = threading.Event()
    took = {}

    def worker():
        t0 = time.perf_counter()
        fn()
        took["s"] = time.perf_counter() - t0
        done.set()

    th = threading.Thread(target=worker)
    last = time.perf_counter()
    longest = 0.0
    th.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    th.join()
    return took["s"], longest


def long_enough(make_call, T0, target_s=0.3, max_T=20000):
    """Grow the sequence length until one call takes about target_s here."""
    T = T0
    while True:
        call = make_call(T)
        t0 = time.perf_counter()
        call()
        took = time.perf_counter() - t0
        if took >= target_s or T >= max_T:
            return call, took
        T = min(max_T, int(T * min(8.0, 1.2 * target_s / max(took, 1e-4))) + 1)


@pytest.mark.parametrize("which", ["loss_and_grad", "forward"])
def test_kernels_release_the_gil(which):
    """A second Python thread keeps running while a kernel computes. If the GIL
    were held through the forward kernel (all of forward(), a third of
    loss_and_grad) or the backward kernel (two thirds), the other thread would
    stall for that long."""
    def make_call(T):
        p, X, Y, _ = problem(0, 16, T, 64, 256, 64)
        if which == "loss_and_grad":
            return lambda: fastrnn.loss_and_grad(p, X, Y, num_threads=1)
        return lambda: fastrnn.forward(p, X, num_threads=1)

    call, _ = long_enough(make_call, 64)
    took, pause = longest_pause_while(call)
    assert pause < max(0.25 * took, 0.02), (
        f"{which}: another Python thread was blocked for {pause * 1e3:.0f} ms of a "
        f"{took * 1e3:.0f} ms call: the GIL is held in C")


@needs_charlm
def test_generate_releases_the_gil():
    lm = CharLM("abcdefghij klmnopqrstuvwxyz.", hidden_size=512, seed=0)
    call, _ = long_enough(lambda n: (lambda: lm.generate("a", n, seed=0)), 200)
    took, pause = longest_pause_while(call)
    assert pause < max(0.25 * took, 0.02), (
        f"generate: another thread was blocked for {pause * 1e3:.0f} ms of {took * 1e3:.0f}")


# ---------------------------------------------------------------------------
# concurrent calls == single-threaded calls

@pytest.mark.parametrize("num_threads", [1, 2, 64])
def test_concurrent_loss_and_grad_matches_serial(num_threads):
    """6 Python threads, each with its own problem (different shapes, dtypes, ids
    or dense input, some with out= buffers), 15 calls each, all at once: every
    result is bitwise the single-threaded one."""
    shapes = [(3, 7, 5, 9, 6), (1, 12, 8, 16, 8), (5, 5, 4, 4, 11), (4, 9, 6, 12, 6),
              (2, 3, 3, 20, 3), (7, 6, 10, 8, 10)]
    probs = [problem(i, *s, dtype=np.float32 if i % 2 else np.float64, dense=i % 3 == 2)
             for i, s in enumerate(shapes)]
    expect = [fastrnn.loss_and_grad(p, X, Y, h0, num_threads=num_threads)
              for p, X, Y, h0 in probs]
    fexpect = [fastrnn.forward(p, X, h0, num_threads=num_threads)[0]
               for p, X, Y, h0 in probs]

    def work(i):
        p, X, Y, h0 = probs[i]
        out = {k: np.empty_like(v) for k, v in p.items()} if i % 2 else None
        for j in range(15):
            got = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=num_threads, out=out)
            assert_identical(got, expect[i], f"thread {i} call {j}")
            if j % 5 == 0:
                np.testing.assert_array_equal(
                    fastrnn.forward(p, X, h0, num_threads=num_threads)[0], fexpect[i])

    run_threads(work, len(probs))


def test_concurrent_calls_on_shared_inputs():
    """Several threads reading the SAME params and inputs: identical results."""
    p, X, Y, h0 = problem(7, 9, 20, 12, 32, 12, dtype=np.float32)
    for v in p.values():
        v.flags.writeable = False
    expect = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2)

    def work(i):
        for _ in range(10):
            assert_identical(fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2), expect)

    run_threads(work, 4)


def _blas_threads():
    from threadpoolctl import threadpool_info
    return [(i.get("filepath"), i["num_threads"]) for i in threadpool_info()
            if i.get("user_api") == "blas"]


def test_blas_thread_limit_restored_after_concurrent_calls():
    before = _blas_threads()
    p, X, Y, h0 = problem(3, 6, 30, 10, 24, 10)

    def work(i):
        for _ in range(10):
            fastrnn.loss_and_grad(p, X, Y, h0, num_threads=1 + i % 2)
            fastrnn.forward(p, X, h0)

    run_threads(work, 4)
    assert _blas_threads() == before
    # and a caller's own limit is left as the caller set it
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        inside = _blas_threads()
        run_threads(work, 2)
        assert _blas_threads() == inside
    assert _blas_threads() == before


def test_blas_limit_restored_after_an_error_inside():
    before = _blas_threads()
    from fastrnn._core import blas_single_thread
    with pytest.raises(RuntimeError):
        with blas_single_thread():
            raise RuntimeError("boom")
    assert _blas_threads() == before


@needs_charlm
def test_concurrent_generate_on_separate_models_matches_serial():
    text = "the quick brown fox jumps over the lazy dog. " * 10
    models = [CharLM(text, hidden_size=16 + 8 * i, seed=i) for i in range(4)]
    expect = [[m.generate("the ", 80, seed=s, temperature=0.9) for s in range(6)]
              for m in models]

    def work(i):
        for s in range(6):
            assert models[i].generate("the ", 80, seed=s, temperature=0.9) == expect[i][s]

    run_threads(work, len(models))


@needs_charlm
def test_concurrent_generate_and_perplexity_on_one_shared_model():
    """Read-only calls on ONE model from several threads: safe and exact."""
    text = "the quick brown fox jumps over the lazy dog. " * 10
    lm = CharLM(text, hidden_size=24, seed=0)
    gen = [lm.generate("the ", 100, seed=s) for s in range(8)]
    ppl = lm.perplexity(text)

    def work(i):
        for s in range(8):
            assert lm.generate("the ", 100, seed=s) == gen[s]
        assert lm.perplexity(text) == ppl

    run_threads(work, 4)


@needs_charlm
def test_second_concurrent_fit_on_one_model_is_refused():
    """While one thread is inside fit (held at the end of its first epoch by a
    callback), a second fit on the SAME model from another thread is refused at once
    with a RuntimeError that says why, and changes nothing: it neither waits for the
    first fit (serialising would be a different promise) nor runs alongside it. The
    first fit then finishes exactly as if it had been alone."""
    text = "the quick brown fox jumps over the lazy dog. " * 60
    kw = dict(epochs=2, batch_size=8, num_steps=16, lr=0.01, optimizer="adam",
              progress=False, seed=0, num_threads=1)
    alone = CharLM(text, hidden_size=32, seed=0)
    alone.fit(text, **kw)

    lm = CharLM(text, hidden_size=32, seed=0)
    inside, go = threading.Event(), threading.Event()

    def hold(model, record):
        if record["epoch"] == 1:
            inside.set()
            assert go.wait(120), "the test never released the first fit"

    first_errors = []

    def first():
        try:
            lm.fit(text, callbacks=[hold], **kw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            first_errors.append(exc)

    second_result = []

    def second():
        try:
            second_result.append(("returned", lm.fit(text, **kw)))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            second_result.append(("raised", exc))

    t1 = threading.Thread(target=first)
    t1.start()
    try:
        assert inside.wait(120), "the first fit never reached the end of its first epoch"
        held = lm.parameters.copy()
        t2 = threading.Thread(target=second)
        t2.start()
        t2.join(timeout=30)
        blocked = t2.is_alive()
        # still held in the callback: nothing may have touched the parameters
        np.testing.assert_array_equal(lm.parameters, held)
    finally:
        go.set()
        t1.join(timeout=300)
    assert not t1.is_alive(), "the first fit hung"
    if blocked:
        t2.join(timeout=300)
    assert not blocked, ("the second fit waited for the first instead of being refused "
                         f"(it then {second_result[0][0] if second_result else 'hung'})")
    assert not first_errors, first_errors
    assert second_result and second_result[0][0] == "raised", (
        f"the second concurrent fit was not refused: {second_result}")
    exc = second_result[0][1]
    assert isinstance(exc, RuntimeError), repr(exc)
    assert "already being trained" in str(exc) and "thread" in str(exc), str(exc)
    np.testing.assert_array_equal(lm.parameters, alone.parameters)
    assert len(lm.history) == 2


# ---------------------------------------------------------------------------
# OpenMP thread counts

def run_child(code, env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "FASTRNN_NUM_THREADS")}
    full["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([full["PYTHONPATH"]] if full.get("PYTHONPATH") else []))
    full.update(env)
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                         text=True, timeout=120, env=full, cwd=str(PKG_ROOT))
    assert res.returncode == 0, (env, res.stdout[-2000:], res.stderr[-4000:])
    return res


CHILD = '''
import json, os, numpy as np, fastrnn
rng = np.random.default_rng(5)
p = fastrnn.init_params(6, 10, 6, dtype="float64", seed=5, init="uniform")
X = rng.integers(0, 6, (5, 7)); Y = rng.integers(0, 6, (5, 7))
n = fastrnn.default_num_threads()
a = fastrnn.loss_and_grad(p, X, Y)                   # num_threads=None: the default
b = fastrnn.loss_and_grad(p, X, Y, num_threads=n)    # the same, explicitly
same = a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
print(json.dumps({"default": n, "same": bool(same)}))
'''


@pytest.mark.parametrize("env,expect", [
    ({"OMP_NUM_THREADS": "1"}, 1),
    ({"OMP_NUM_THREADS": "3"}, 3),
    ({"OMP_NUM_THREADS": "4,2"}, 4),                  # nested list: the outer level
    ({"FASTRNN_NUM_THREADS": "2"}, 2),
    ({"FASTRNN_NUM_THREADS": "5", "OMP_NUM_THREADS": "1"}, 5),  # ours wins
    ({"OMP_NUM_THREADS": "64"}, 64),
    ({"OMP_NUM_THREADS": "100000"}, 256),             # capped
    ({"OMP_NUM_THREADS": "0"}, None),                 # ignored: the cores
    ({"OMP_NUM_THREADS": "abc"}, None),               # ignored, with a warning
    ({"FASTRNN_NUM_THREADS": "-2"}, None),
], ids=lambda v: str(v))
def test_thread_count_from_environment(env, expect):
    import json
    res = run_child(CHILD, env)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert got["default"] == (expect if expect is not None else min(cores, 256)), got
    if env.get("OMP_NUM_THREADS") == "abc":
        assert "OMP_NUM_THREADS" in res.stderr      # the warning names the variable
    assert got["same"], "num_threads=None differs from num_threads=default_num_threads()"


def test_omp_num_threads_1_runs_serial_kernels():
    """OMP_NUM_THREADS=1 in a fresh process: the OpenMP runtime sees 1 thread and the
    whole API works (a loss_and_grad + forward on a char-LM-sized problem)."""
    res = run_child('''
import fastrnn, numpy as np
from fastrnn import _rnn
assert _rnn.openmp_max_threads() == 1, _rnn.openmp_max_threads()
assert fastrnn.default_num_threads() == 1
rng = np.random.default_rng(0)
p = fastrnn.init_params(30, 64, dtype="float32", seed=0)
X = rng.integers(0, 30, (8, 32))
loss, g, hT = fastrnn.loss_and_grad(p, X, X)
logits, h = fastrnn.forward(p, X)
assert np.isfinite(loss) and logits.shape == (8, 32, 30)
print("ok")
''', {"OMP_NUM_THREADS": "1"})
    assert "ok" in res.stdout


def test_blas_limited_exactly_when_the_kernels_call_blas(monkeypatch):
    """The per-call BLAS thread limit is taken when the kernels may call BLAS (no
    packed kernels, dense inputs, hidden sizes above the in-place A^T B kernel's)
    and skipped otherwise, where it would only cost time."""
    from contextlib import contextmanager
    from fastrnn import _core, _rnn
    entered = []

    @contextmanager
    def recording():
        entered.append(True)
        yield

    monkeypatch.setattr(_core, "blas_single_thread", recording)
    packed = _rnn.packed_gemm_level() >= 1
    rng = np.random.default_rng(0)
    for H, dense, expect in ((24, False, not packed), (24, True, True), (520, False, True)):
        p = fastrnn.init_params(5, H, 5, seed=0)
        X = rng.random((2, 3, 5)) if dense else rng.integers(0, 5, (2, 3))
        Y = rng.integers(0, 5, (2, 3))
        assert _rnn.calls_blas(H, dense) == expect
        entered.clear()
        fastrnn.loss_and_grad(p, X, Y, num_threads=2)
        fastrnn.forward(p, X, num_threads=2)
        assert entered == ([True, True] if expect else []), (H, dense)
