import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def run_in_a_temporary_directory(tmp_path_factory, monkeypatch):
    """Tests and the child processes they start run outside the source tree, so
    `python -c` / `python -m` children import the installed fastrnn, not the bare
    source folder ('' on sys.path is the working directory)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def every_thread_gets_work():
    """The kernels use fewer threads than asked for on small problems; tests use
    small problems, so turn that off to exercise every requested split."""
    from fastrnn import _core
    if _core._rnn is None:
        yield
        return
    old = _core._rnn.set_min_flops_per_thread(0)
    yield
    _core._rnn.set_min_flops_per_thread(old)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def make_problem(rng, B, T, D, H, V, *, dtype=np.float64, dense=False, h0=True,
                 init="uniform", scale=1.0):
    """Random parameters and inputs of the given sizes (params in float64 and dtype)."""
    import fastrnn
    p64 = fastrnn.init_params(D, H, V, dtype="float64", seed=int(rng.integers(1 << 31)),
                              init=init)
    if scale != 1.0:
        p64 = {k: v * scale for k, v in p64.items()}
    p = {k: v.astype(dtype) for k, v in p64.items()}
    if dtype != np.float64:  # compare against the float64 reference on the same values
        p64 = {k: v.astype(np.float64) for k, v in p.items()}
    X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
    Y = rng.integers(0, V, (B, T))
    h = rng.standard_normal((B, H)) * 0.5 if h0 else None
    return p, p64, X, Y, h


def skip_without_two_openmp_threads():
    """Skip a test of the B = 1 split, which needs OpenMP and two cores."""
    from fastrnn import _rnn
    if not _rnn.openmp_enabled() or (os.cpu_count() or 1) < 2:
        pytest.skip("the split needs two OpenMP threads")


@contextmanager
def competing_thread():
    """A Python thread busy-looping for the duration of the block: the kernels
    release the GIL, so it competes with their OpenMP threads for the cores and
    shuffles which thread gets to a step first."""
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            x += 1

    rival = threading.Thread(target=spin, daemon=True)
    rival.start()
    try:
        yield
    finally:
        stop.set()
        rival.join()
