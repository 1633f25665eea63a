import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

# A script that starts a command in the background without job control (`cmd &` in a
# non-interactive shell) starts it with SIGINT ignored, and Python keeps it ignored, as
# do the processes it starts: fit would then rightly leave Ctrl-C alone, and every
# Ctrl-C test would fail for a reason outside fastrnn. The tests need the usual
# handling, so the session restores it (children started from here get the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# ---------------------------------------------------------------------------
# which kernel levels this run covered (issue 17): test_kernels.py's
# test_every_kernel_variant_matches_reference records the levels it ran; the summary
# says which ran and which did not, so an AVX2-only green run is not read as
# AVX-512 coverage.

_LEVEL_NAMES = {0: "BLAS", 1: "AVX2", 2: "AVX-512"}
_levels_ran: dict = {}
_levels_skipped: dict = {}


def pytest_runtest_logreport(report):
    if "test_every_kernel_variant_matches_reference" not in report.nodeid:
        return
    for key, value in report.user_properties:
        if key == "fastrnn_kernel_level" and report.when == "call" and report.passed:
            _levels_ran[value[0]] = value[1]
    if report.skipped and isinstance(report.longrepr, tuple):
        msg = report.longrepr[2]
        for level, name in _LEVEL_NAMES.items():
            if f"kernel level {level} " in msg:
                _levels_skipped[level] = msg.replace("Skipped: ", "")


def pytest_terminal_summary(terminalreporter):
    try:
        import fastrnn
        info = fastrnn.build_info()
    except Exception:  # noqa: BLE001 - a summary line must never break the run
        return
    if not (_levels_ran or _levels_skipped):
        line = (f"fastrnn kernel levels: default {info.get('kernels')} "
                f"(compiled={info.get('compiled')}); the kernel-level test did not run")
    else:
        ran = ", ".join(f"{lv} {_LEVEL_NAMES[lv]} ({how})"
                        for lv, how in sorted(_levels_ran.items())) or "none"
        missing = [lv for lv in _LEVEL_NAMES if lv not in _levels_ran]
        line = f"fastrnn kernel levels: ran {ran}"
        if missing:
            line += "; NOT run: " + ", ".join(f"{lv} {_LEVEL_NAMES[lv]}" for lv in missing)
    terminalreporter.write_sep("-", "fastrnn kernels")
    terminalreporter.write_line(line)


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
    old_seq = _core._layers.set_seq_min_flops_per_thread(0)
    yield
    _core._rnn.set_min_flops_per_thread(old)
    _core._layers.set_seq_min_flops_per_thread(old_seq)


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
