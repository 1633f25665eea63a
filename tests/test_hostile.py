"""Hostile input: every public entry point either works (and then agrees with the
NumPy reference, or with the same call on plain arrays) or raises a Python
exception that names the offending argument. Never a crash, never a silent
wrong answer.

* In-process, with hypothesis: invalid values (wrong types, dtypes, ranks,
  shapes, zero sizes, out-of-range and negative ids, NaN/inf, bool arrays,
  0-d arrays, Python scalars, ...) for every argument of ``forward``,
  ``loss_and_grad``, ``init_params``, ``Vocab`` and, where it exists,
  ``CharLM``. These are rejected in Python before any C code runs.
* In a child interpreter (``run_child``): everything that hands unusual
  memory to C or may exhaust it -- misaligned, read-only, strided, reversed,
  Fortran-ordered, zero-stride and byte-swapped buffers, caller-provided
  output buffers, absurd sizes (H=10**9) and thread counts -- so that a
  segfault fails one test (with the child's stderr) instead of killing pytest.

Under tools/sanitize.sh these children inherit the AddressSanitizer setup, so
an invalid access in any of them fails the test that made it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference

EXAMPLES = int(os.environ.get("FASTRNN_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
CLEAN = (TypeError, ValueError)
PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hq", "b_q")
B, T, D, H, V = 3, 4, 5, 6, 7

CharLM = getattr(fastrnn, "CharLM", None)
needs_charlm = pytest.mark.skipif(CharLM is None,
                                  reason="fastrnn.CharLM is not on this branch yet")


# ---------------------------------------------------------------------------
# child processes

PKG_ROOT = Path(fastrnn.__file__).resolve().parents[1]
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")

CHILD_PRELUDE = '''
import json, os, sys
import numpy as np
import fastrnn
from fastrnn import reference
B, T, D, H, V = 3, 4, 5, 6, 7
PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hq", "b_q")
# as conftest does for in-process tests: every requested thread gets a chunk even of
# these small problems, so the multi-threaded paths run
if getattr(fastrnn._core, "_rnn", None) is not None and hasattr(
        fastrnn._core._rnn, "set_min_flops_per_thread"):
    fastrnn._core._rnn.set_min_flops_per_thread(0)

def problem(dtype=np.float64, dense=False, seed=0):
    rng = np.random.default_rng(seed)
    p = fastrnn.init_params(D, H, V, dtype=dtype, seed=seed, init="uniform")
    X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
    Y = rng.integers(0, V, (B, T))
    h0 = rng.standard_normal((B, H)) * 0.5
    return p, X, Y, h0

def same(a, b, what):
    """Bitwise-equal results of loss_and_grad (or forward) calls."""
    if isinstance(a, dict):
        assert set(a) == set(b), what
        for k in a:
            same(a[k], b[k], f"{what}[{k}]")
    elif isinstance(a, (tuple, list)):
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{what}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape)
        assert np.array_equal(a, b), what
    else:
        assert a == b, (what, a, b)

def too_big(exc, *names):
    """The policy for sizes that cannot be allocated (README "Guarantees"): a
    MemoryError saying it could not allocate, or, for sizes past numpy's largest
    array, numpy's ValueError saying so (or a ValueError naming the argument)."""
    msg = str(exc)
    if isinstance(exc, MemoryError):
        assert "allocate" in msg, repr(exc)
    else:
        assert isinstance(exc, ValueError), repr(exc)
        if not any(s in msg for s in ("too big", "Maximum allowed dimension")):
            names_it(exc, *names)

def names_it(exc, *names):
    """exc is a clean error whose message names one of names as a word ("id" is not
    named by "invalid", "X" not by "Xs")."""
    import re
    msg = str(exc)
    assert isinstance(exc, (TypeError, ValueError)), repr(exc)
    assert any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg)
               for n in names), f"{type(exc).__name__}({msg!r}) names none of {names}"
'''


def run_child(code: str, *, timeout: float = 300, env: dict | None = None,
              limit_gib: float | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this same fastrnn.

    ``limit_gib`` caps the child's address space (RLIMIT_AS) so that an absurd
    allocation fails with MemoryError on any overcommit policy instead of
    paging the machine to death (skipped under ASan, whose shadow memory is
    terabytes of address space).
    """
    pre = CHILD_PRELUDE
    full_env = dict(os.environ)
    if limit_gib is not None and not UNDER_ASAN:
        pre = ("import resource\nresource.setrlimit(resource.RLIMIT_AS, "
               f"({int(limit_gib * 2**30)}, {int(limit_gib * 2**30)}))\n") + pre
    elif limit_gib is not None:
        # ASan's allocator ignores the kernel's overcommit heuristics: cap each
        # allocation instead (returning NULL -> MemoryError), and kill the child
        # rather than the machine if its resident memory still runs away.
        mb = int(limit_gib * 1024)
        full_env["ASAN_OPTIONS"] = ":".join(filter(None, [
            full_env.get("ASAN_OPTIONS", ""), "allocator_may_return_null=1",
            f"max_allocation_size_mb={mb}", f"hard_rss_limit_mb={2 * mb}"]))
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
    full_env.setdefault("PYTHONFAULTHANDLER", "1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=str(PKG_ROOT))


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def describe_exit(res: subprocess.CompletedProcess) -> str:
    if res.returncode < 0:
        try:
            name = signal.Signals(-res.returncode).name
        except ValueError:
            name = str(-res.returncode)
        how = f"CRASHED (killed by {name})"
    elif any(m in res.stderr for m in SANITIZER_MARKS):
        how = f"CRASHED (sanitizer report, status {res.returncode})"
    else:
        how = f"exited with status {res.returncode}"
    return (f"child {how}\n--- stdout (tail)\n{res.stdout[-4000:]}\n"
            f"--- stderr (tail)\n{res.stderr[-8000:]}")


def child_ok(code: str, **kw) -> str:
    """Run code in a child; it must exit 0 (its own asserts passed, no crash)."""
    res = run_child(code, **kw)
    assert res.returncode == 0, describe_exit(res)
    return res.stdout


def test_child_harness_reports_crashes():
    """The harness tells a crash from a clean exception (so the tests below can fail)."""
    res = run_child("import ctypes; ctypes.string_at(0)")
    assert res.returncode != 0 and "CRASHED" in describe_exit(res)
    res = run_child("raise ValueError('X is bad')")
    assert res.returncode == 1 and "ValueError: X is bad" in res.stderr


# ---------------------------------------------------------------------------
# a valid problem, and invalid replacements for each argument

def valid_problem(dtype=np.float64, dense=False, seed=0):
    rng = np.random.default_rng(seed)
    p = fastrnn.init_params(D, H, V, dtype=dtype, seed=seed, init="uniform")
    X = rng.standard_normal((B, T, D)) if dense else rng.integers(0, D, (B, T))
    Y = rng.integers(0, V, (B, T))
    h0 = rng.standard_normal((B, H)) * 0.5
    return p, X, Y, h0


class Opaque:
    """An object numpy can only wrap as dtype=object."""


NON_ARRAYS = st.sampled_from([None, "abc", "", b"abc", {"a": 1}, {}, 3, -1, 2.5, True,
                              float("nan"), Opaque(), [], [[]], [[[]]], set(), (1, "a")])
BAD_DTYPES = st.sampled_from([np.float16, np.complex64, np.complex128, bool, object, "U3",
                              "S2", "datetime64[s]", np.longdouble])
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def wrong_shapes(draw, good: tuple, allow_same_size=True):
    """A shape that differs from ``good``: another rank, zero-size, or off by some."""
    kind = draw(st.sampled_from(["rank", "zero", "off"]))
    if kind == "rank":
        nd = draw(st.integers(0, 5).filter(lambda n: n != len(good)))
        shape = tuple(draw(st.lists(st.integers(1, 7), min_size=nd, max_size=nd)))
    elif kind == "zero" and len(good):
        i = draw(st.integers(0, len(good) - 1))
        shape = good[:i] + (0,) + good[i + 1:]
    else:
        shape = tuple(n + draw(st.integers(-n, 3)) for n in good)
    assume(shape != good)
    return shape


def cast(a, dtype):
    """a.astype(dtype) for exotic dtypes (strings, dates, objects) too."""
    if np.dtype(dtype).kind in "USMm":
        return np.zeros(a.shape, dtype)
    return a.astype(dtype)


@st.composite
def bad_ids(draw, good: np.ndarray, upper: int, name: str):
    """An invalid (B, T) id array for an argument with ids in [0, upper)."""
    kind = draw(st.sampled_from(["range", "dtype", "shape", "nonarray", "float_list"]))
    if kind == "range":
        bad = draw(st.one_of(st.integers(-2**63, -1), st.integers(upper, 2**64 - 1)))
        a = good.astype(np.uint64 if bad >= 2**63 else np.int64)
        i, j = draw(st.integers(0, B - 1)), draw(st.integers(0, T - 1))
        a[i, j] = bad
        if draw(st.booleans()):           # a smaller dtype when the value fits in it
            for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32):
                if np.can_cast(np.min_scalar_type(bad), dt) and np.can_cast(
                        np.min_scalar_type(good.max()), dt):
                    a = a.astype(dt)
                    break
        return a
    if kind == "dtype":
        return cast(good, draw(BAD_DTYPES.filter(lambda d: d != np.longdouble)))
    if kind == "shape":
        # another rank or a zero size (a 2-D X of another (B, T) is a valid X that h0
        # and Y then contradict: their errors name them)
        shape = draw(wrong_shapes((B, T)).filter(
            lambda s: len(s) != 3 and (name == "Y" or len(s) != 2 or 0 in s)))
        return np.zeros(shape, np.int64)
    if kind == "float_list":
        return good.astype(float).tolist()
    return draw(NON_ARRAYS.filter(lambda v: not (isinstance(v, int) and 0 <= v < upper)))


@st.composite
def bad_params(draw):
    """(params, names that the error message may use)."""
    p, _, _, _ = valid_problem(draw(st.sampled_from([np.float32, np.float64])))
    kind = draw(st.sampled_from(["nonmapping", "missing", "nonarray", "dtype", "mixed",
                                 "shape", "nonfinite", "zero_dim"]))
    if kind == "nonmapping":
        return draw(st.one_of(NON_ARRAYS.filter(lambda v: not isinstance(v, dict) or not v),
                              st.just(list(p.values())), st.just(p["W_hh"]))), ("params",)
    if kind == "zero_dim":            # a consistent set of params with D, H or V == 0
        sizes = dict(zip("DHV", (D, H, V)))
        sizes[draw(st.sampled_from("DHV"))] = 0
        d, h, v = sizes["D"], sizes["H"], sizes["V"]
        shapes = {"W_xh": (d, h), "W_hh": (h, h), "b_h": (h,), "W_hq": (h, v), "b_q": (v,)}
        return ({k: np.zeros(s) for k, s in shapes.items()},
                ("params", "input size", "hidden size", "output size"))
    k = draw(st.sampled_from(PARAM_NAMES))
    names = ("params", k)
    p = dict(p)
    if kind == "missing":
        del p[k]
    elif kind == "nonarray":
        p[k] = draw(st.one_of(NON_ARRAYS, st.just(p[k].tolist())))
    elif kind == "dtype":
        p[k] = cast(p[k], draw(BAD_DTYPES))
    elif kind == "mixed":
        p[k] = p[k].astype(np.float32 if p[k].dtype == np.float64 else np.float64)
    elif kind == "shape":
        p[k] = np.zeros(draw(wrong_shapes(p[k].shape)), p[k].dtype)
    elif kind == "nonfinite":
        p[k] = p[k].copy()
        p[k].flat[draw(st.integers(0, p[k].size - 1))] = draw(NONFINITE)
    return p, names


@st.composite
def hostile_calls(draw):
    """(kwargs for loss_and_grad/forward with one hostile argument, names the
    error may use, whether forward() takes the hostile argument too)."""
    dense = draw(st.booleans())
    p, X, Y, h0 = valid_problem(np.float64, dense)
    args = dict(params=p, X=X, Y=Y, h0=h0)
    which = draw(st.sampled_from(["params", "X", "Y", "h0", "nonlinearity", "num_threads",
                                  "out"]))
    names = (which,)
    if which == "params":
        args["params"], names = draw(bad_params())
    elif which == "X":
        if dense:
            kind = draw(st.sampled_from(["nonfinite", "width", "intdtype", "baddtype"]))
            Xb = X.copy()
            if kind == "nonfinite":
                Xb[draw(st.integers(0, B - 1)), draw(st.integers(0, T - 1)),
                   draw(st.integers(0, D - 1))] = draw(NONFINITE)
            elif kind == "width":
                Xb = np.zeros((B, T, draw(st.integers(0, 9).filter(lambda d: d != D))))
            elif kind == "intdtype":
                Xb = X.astype(np.int64)
            else:
                Xb = cast(X, draw(BAD_DTYPES.filter(
                    lambda d: np.dtype(d).kind not in "f")))
            args["X"] = Xb
        else:
            args["X"] = draw(bad_ids(X, D, "X"))
    elif which == "Y":
        args["Y"] = draw(bad_ids(Y, V, "Y"))
        assume(args["Y"] is not None)     # Y=None: see test_loss_and_grad_requires_Y
    elif which == "h0":
        kind = draw(st.sampled_from(["shape", "dtype", "nonfinite", "nonarray"]))
        if kind == "shape":
            args["h0"] = np.zeros(draw(wrong_shapes((B, H))))
        elif kind == "dtype":
            args["h0"] = cast(h0, draw(BAD_DTYPES.filter(
                lambda d: np.dtype(d).kind not in "f" or d == np.float16 and False)))
        elif kind == "nonfinite":
            hb = h0.copy()
            hb[draw(st.integers(0, B - 1)), draw(st.integers(0, H - 1))] = draw(NONFINITE)
            args["h0"] = hb
        else:
            args["h0"] = draw(NON_ARRAYS.filter(lambda v: v is not None))
    elif which == "nonlinearity":
        args["nonlinearity"] = draw(st.sampled_from(
            [None, "", "sigmoid", "TANH", "tanh ", 3, ["tanh"], b"tanh", ("relu",)]))
    elif which == "num_threads":
        args["num_threads"] = draw(st.sampled_from(
            [0, -1, -2**70, 1.5, 2.0, "2", True, False, np.bool_(True), [2], np.float64(2),
             np.int64(0), complex(2, 0)]))
    else:  # out buffers
        g = {k: np.zeros_like(v) for k, v in p.items()}
        k = draw(st.sampled_from(PARAM_NAMES))
        kind = draw(st.sampled_from(["nonmapping", "missing", "shape", "dtype", "fortran",
                                     "strided", "readonly", "list"]))
        if kind == "nonmapping":
            g = draw(st.sampled_from([[1], "out", 3, np.zeros(3), (1, 2)]))
        elif kind == "missing":
            del g[k]
        elif kind == "shape":
            g[k] = np.zeros(draw(wrong_shapes(p[k].shape)))
        elif kind == "dtype":
            g[k] = np.zeros(p[k].shape, draw(st.sampled_from([np.float32, np.int64, bool])))
        elif kind == "fortran":
            assume(p[k].ndim == 2)
            g[k] = np.zeros(p[k].shape, order="F")
        elif kind == "strided":
            g[k] = np.zeros(tuple(2 * n for n in p[k].shape))[(slice(None, None, 2),) *
                                                               p[k].ndim]
        elif kind == "readonly":
            g[k].flags.writeable = False
        else:
            g[k] = g[k].tolist()
        args["out"] = g
    return args, names, which not in ("Y", "out")


def call_loss(args):
    a = dict(args)
    return fastrnn.loss_and_grad(a.pop("params"), a.pop("X"), a.pop("Y"), a.pop("h0"), **a)


def call_forward(args):
    a = {k: v for k, v in args.items() if k not in ("Y", "out")}
    return fastrnn.forward(a.pop("params"), a.pop("X"), a.pop("h0"), **a)


def names_word(msg, name):
    """name occurs in msg as a word of its own ("id" is not in "invalid")."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", msg) is not None


def assert_names(excinfo, names):
    msg = str(excinfo.value)
    assert any(names_word(msg, n) for n in names), (
        f"{type(excinfo.value).__name__}({msg!r}) does not name any of {names}")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("name,shape_fn", [
    ("W_xh", lambda p: (0, p["W_xh"].shape[1])),
    ("W_hq", lambda p: (p["W_hq"].shape[0], 0)),
])
def test_zero_size_parameter_is_named(cell, name, shape_fn):
    """A parameter with a zero dimension (found by the property test above: an Elman
    W_xh of shape (0, H) got "D (input size) must be >= 1", naming no parameter)."""
    kw = {} if cell == "rnn" else {"cell": cell}
    p = fastrnn.init_params(D, H, V, seed=0, **kw)
    p[name] = np.zeros(shape_fn(p), p[name].dtype)
    if name == "W_hq":
        p["b_q"] = np.zeros(0, p["b_q"].dtype)
    X = np.zeros((B, T), np.int64)
    for call in (lambda: fastrnn.loss_and_grad(p, X, X, **kw),
                 lambda: fastrnn.forward(p, X, **kw)):
        with pytest.raises(ValueError) as excinfo:
            call()
        assert_names(excinfo, (name,))


@SETTINGS
@given(hostile_calls())
def test_hostile_argument_raises_clean_error_naming_it(case):
    args, names, forward_too = case
    with pytest.raises(CLEAN) as excinfo:
        call_loss(args)
    assert_names(excinfo, names)
    if forward_too:
        with pytest.raises(CLEAN) as excinfo:
            call_forward(args)
        assert_names(excinfo, names)


@pytest.mark.parametrize("dense", [False, True])
def test_valid_problem_matches_reference(dense):
    """The base problem the hostile cases mutate is itself valid and correct."""
    p, X, Y, h0 = valid_problem(np.float64, dense)
    loss, g, hT = fastrnn.loss_and_grad(p, X, Y, h0)
    rl, rg, rhT = reference.loss_and_grad(p, X, Y, h0)
    assert loss == pytest.approx(rl, rel=1e-12)
    for k in rg:
        np.testing.assert_allclose(g[k], rg[k], rtol=1e-10, atol=1e-14, err_msg=k)


# ---- accepted-but-unusual values that must give exactly the plain result

EQUIVALENT_IDS = [
    ("list", lambda a: a.tolist()),
    ("tuple", lambda a: tuple(map(tuple, a.tolist()))),
    ("int8", lambda a: a.astype(np.int8)), ("uint8", lambda a: a.astype(np.uint8)),
    ("int16", lambda a: a.astype(np.int16)), ("uint32", lambda a: a.astype(np.uint32)),
    ("uint64", lambda a: a.astype(np.uint64)), ("bigendian", lambda a: a.astype(">i8")),
    ("fortran", np.asfortranarray), ("matrix", np.asmatrix),
    ("reversed", lambda a: np.flip(np.flip(a).copy())),
]


@pytest.mark.parametrize("label,f", EQUIVALENT_IDS, ids=[e[0] for e in EQUIVALENT_IDS])
def test_equivalent_id_arrays_give_identical_results(label, f):
    p, X, Y, h0 = valid_problem(np.float64)
    base = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2)
    got = fastrnn.loss_and_grad(p, f(X), f(Y), h0, num_threads=2)
    assert got[0] == base[0]
    for k in base[1]:
        np.testing.assert_array_equal(got[1][k], base[1][k], err_msg=k)
    np.testing.assert_array_equal(fastrnn.forward(p, f(X), h0)[0], fastrnn.forward(p, X, h0)[0])


def test_extra_keys_in_params_and_out_are_ignored():
    p, X, Y, h0 = valid_problem(np.float32)
    base = fastrnn.loss_and_grad(p, X, Y, h0)
    out = {k: np.zeros_like(v) for k, v in p.items()}
    got = fastrnn.loss_and_grad(dict(p, extra="x", W_foo=np.zeros(3)), X, Y, h0,
                                out=dict(out, junk=None))
    assert got[0] == base[0]
    for k in p:
        np.testing.assert_array_equal(got[1][k], base[1][k], err_msg=k)
        assert got[1][k] is out[k]          # written into the caller's buffers


def test_h0_as_list_and_int_array_is_cast():
    p, X, Y, _ = valid_problem(np.float64)
    h0 = np.arange(B * H).reshape(B, H) % 3 - 1
    base = fastrnn.loss_and_grad(p, X, Y, h0.astype(np.float64))
    for h in (h0, h0.tolist(), h0.astype(np.float32), h0.astype(np.int8)):
        assert fastrnn.loss_and_grad(p, X, Y, h)[0] == base[0]


# ---- gaps found by this suite (fixed): each test failed before its fix

def test_loss_and_grad_requires_Y():
    p, X, _, h0 = valid_problem()
    with pytest.raises(TypeError, match="Y"):
        fastrnn.loss_and_grad(p, X, None, h0)


def test_overlapping_out_buffers_rejected_or_correct():
    rng = np.random.default_rng(0)
    p = fastrnn.init_params(6, 6, 6, dtype="float64", seed=1, init="uniform")
    X = rng.integers(0, 6, (3, 4))
    ref = fastrnn.loss_and_grad(p, X, X)[1]
    shared = np.zeros((6, 6))
    out = {"W_xh": shared, "W_hh": shared, "b_h": np.zeros(6), "W_hq": np.zeros((6, 6)),
           "b_q": np.zeros(6)}
    try:
        g = fastrnn.loss_and_grad(p, X, X, out=out)[1]
    except ValueError as exc:
        assert "out" in str(exc)
        return
    for k in ref:
        np.testing.assert_allclose(g[k], ref[k], rtol=1e-12, err_msg=k)


def test_out_aliasing_the_params_gives_the_right_gradients():
    """out=params (an in-place "params <- grads") reads every weight before
    overwriting it: the gradients are right."""
    p, X, Y, h0 = valid_problem(np.float64)
    ref = fastrnn.loss_and_grad(p, X, Y, h0)
    q = {k: v.copy() for k, v in p.items()}
    got = fastrnn.loss_and_grad(q, X, Y, h0, out=q)
    assert got[0] == ref[0]
    for k in p:
        np.testing.assert_array_equal(got[1][k], ref[1][k], err_msg=k)


def test_numpy_str_nonlinearity_works():
    p, X, Y, h0 = valid_problem()
    base = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity="relu")
    assert fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=np.str_("relu"))[0] == base[0]


@pytest.mark.parametrize("case", ["ragged_X", "ragged_Y", "scale_str", "scale_None"])
def test_numpy_conversion_errors_name_the_argument(case):
    p, X, Y, h0 = valid_problem()
    ragged = [[0, 1, 2, 3], [0, 1], [1, 2, 3, 4]]
    f, name = {
        "ragged_X": (lambda: fastrnn.loss_and_grad(p, ragged, Y), "X"),
        "ragged_Y": (lambda: fastrnn.loss_and_grad(p, X, ragged), "Y"),
        "scale_str": (lambda: fastrnn.init_params(3, 2, scale="a"), "scale"),
        "scale_None": (lambda: fastrnn.init_params(3, 2, scale=None), "scale"),
    }[case]
    with pytest.raises(CLEAN, match=name):
        f()


# ---------------------------------------------------------------------------
# init_params

SIZES = st.one_of(st.integers(-3, 40), st.sampled_from(
    [None, 2.0, 3.5, "3", True, False, np.int8(3), np.uint64(4), np.float64(3), [3],
     np.array(3), np.array([3]), complex(3, 0), float("nan"), float("inf")]))


def init_params_invalid_arguments(d, h, v, dtype, init, scale) -> list[str]:
    """The arguments of init_params(d, h, v, dtype=, init=, scale=) that the docstring
    rules out: sizes are ints >= 1 (not bool), dtype is float32 or float64 (numpy's
    default, float64, for None), init is "d2l", "uniform" or None (the default: "d2l"
    for the one-layer Elman cell these tests use), and for "d2l" scale is a finite real
    >= 0 (not bool; "uniform" ignores scale)."""
    bad = []
    for name, n in (("input_size", d), ("hidden_size", h),
                    ("output_size", d if v is None else v)):
        if (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer))
                or n < 1):
            bad.append(name)
    try:
        ok = np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64))
    except TypeError:
        ok = False
    if not ok:
        bad.append("dtype")
    if init is None or (isinstance(init, str) and init == "d2l"):
        if (isinstance(scale, (bool, np.bool_))
                or not isinstance(scale, (int, float, np.integer, np.floating))
                or not np.isfinite(scale) or scale < 0):
            bad.append("scale")
    elif not (isinstance(init, str) and init == "uniform"):
        bad.append("init")
    return bad


@SETTINGS
@given(SIZES, SIZES, st.one_of(st.none(), SIZES),
       st.sampled_from(["float32", "float64", np.float32, ">f8", "int32", "float16", "x",
                        None, 3, object]),
       st.sampled_from(["d2l", "uniform", "xavier", None, 3, ""]),
       # |scale| <= 1e30: larger finite scales overflow, see test_init_params_huge_scale
       st.one_of(st.floats(-1e30, 1e30), st.sampled_from(
           [0, 1, -1, True, np.float32(0.1), float("nan"), float("inf"), -float("inf")])))
def test_init_params_works_or_raises_clean_error(d, h, v, dtype, init, scale):
    """Valid arguments must work (an error for them is a failure); invalid ones must
    raise a TypeError/ValueError naming one of the invalid arguments."""
    bad = init_params_invalid_arguments(d, h, v, dtype, init, scale)
    try:
        p = fastrnn.init_params(d, h, v, dtype=dtype, init=init, scale=scale, seed=0)
    except CLEAN as exc:
        assert bad, f"valid arguments rejected: {type(exc).__name__}: {exc}"
        assert any(names_word(str(exc), n) for n in bad), (
            f"{type(exc).__name__}({str(exc)!r}) names none of the invalid {bad}")
        return
    assert not bad, f"invalid {bad} accepted"
    vv = d if v is None else v
    assert {k: a.shape for k, a in p.items()} == {
        "W_xh": (d, h), "W_hh": (h, h), "b_h": (h,), "W_hq": (h, vv), "b_q": (vv,)}
    dt = p["W_hh"].dtype
    assert dt in (np.float32, np.float64)
    for a in p.values():
        assert a.dtype == dt and a.flags.c_contiguous and np.isfinite(a).all()


VALID_SIZES = st.one_of(st.integers(1, 40), st.sampled_from([1, np.int8(3), np.uint64(4),
                                                              np.int64(1), np.uint8(40)]))


@SETTINGS
@given(VALID_SIZES, VALID_SIZES, st.one_of(st.none(), VALID_SIZES),
       st.sampled_from(["float32", "float64", np.float32, np.float64, "f4", "<f8", None]),
       st.sampled_from(["d2l", "uniform"]),
       st.one_of(st.floats(0, 1e30), st.sampled_from([0, 1, 0.0, np.float32(0.1),
                                                      np.int64(2)])))
def test_init_params_valid_arguments_work(d, h, v, dtype, init, scale):
    """Only valid arguments (the generator above draws mostly invalid ones): every
    call must work and give the documented shapes; an error is a failure."""
    assert not init_params_invalid_arguments(d, h, v, dtype, init, scale)
    p = fastrnn.init_params(d, h, v, dtype=dtype, init=init, scale=scale, seed=0)
    vv = d if v is None else v
    assert {k: a.shape for k, a in p.items()} == {
        "W_xh": (d, h), "W_hh": (h, h), "b_h": (h,), "W_hq": (h, vv), "b_q": (vv,)}
    assert all(np.isfinite(a).all() for a in p.values())


@pytest.mark.parametrize("dtype,scale", [("float32", 5e38), ("float64", 1e308)])
def test_init_params_huge_scale(dtype, scale):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            p = fastrnn.init_params(3, 2, dtype=dtype, scale=scale, seed=0)
        except ValueError as exc:
            assert "scale" in str(exc)
            return
    assert all(np.isfinite(a).all() for a in p.values()), "init_params returned inf weights"


def test_impossible_sizes_raise_memory_or_value_error():
    """H=10**9 etc. cannot be allocated: a clean MemoryError/ValueError, not a crash or
    an OOM kill. The child's address space is capped at 4 GiB, so this holds whatever
    the machine's overcommit policy."""
    out = child_ok('''
        cases = [(5, 10**9), (10**12, 2), (2, 2**31), (2, 2**62), (2, 2**70), (3, 10**5),
                 (10**9, 1)]
        for D_, H_ in cases:
            for dt in ("float32", "float64"):
                try:
                    fastrnn.init_params(D_, H_, dtype=dt)
                except (MemoryError, ValueError) as exc:
                    print(D_, H_, dt, type(exc).__name__, str(exc)[:100])
                    too_big(exc, "input_size", "hidden_size")
                else:
                    raise AssertionError(f"init_params({D_}, {H_}) allocated?")
        # huge output layer via a zero-stride (virtual) W_hq: the copy to a contiguous
        # array is what fails, before any C code runs
        p = fastrnn.init_params(2, 3, 2, dtype="float32")
        p["W_hq"] = np.broadcast_to(np.float32(0.1), (3, 10**12))
        p["b_q"] = np.broadcast_to(np.float32(0), (10**12,))
        for f in (lambda: fastrnn.forward(p, [[0, 1]]),
                  lambda: fastrnn.loss_and_grad(p, [[0, 1]], [[0, 1]])):
            try:
                f()
            except (MemoryError, ValueError) as exc:
                print("virtual W_hq", type(exc).__name__, str(exc)[:100])
                too_big(exc, "W_hq")
            else:
                raise AssertionError("a (3, 10**12) W_hq was accepted")
        # activations too big for memory: (T+1)*B*H floats of 41 GB
        p = fastrnn.init_params(2, 256, 2, dtype="float32")
        X = np.zeros((1, 4 * 10**7), np.int8)
        for f in (lambda: fastrnn.forward(p, X), lambda: fastrnn.loss_and_grad(p, X, X)):
            try:
                f()
            except MemoryError as exc:
                print("huge T", str(exc)[:100])
                too_big(exc)
            else:
                raise AssertionError("a 40 GB activation buffer was allocated?")
        # and the process is still healthy afterwards
        p = fastrnn.init_params(D, H, V, dtype="float64", seed=1)
        X = np.zeros((B, T), int)
        l, g, _ = fastrnn.loss_and_grad(p, X, X)
        rl, rg, _ = reference.loss_and_grad(p, X, X)
        assert abs(l - rl) < 1e-10
        print("healthy")
    ''', limit_gib=4)
    assert "healthy" in out, out


# ---------------------------------------------------------------------------
# memory layouts handed to C (in a child)

def test_unusual_memory_layouts_give_identical_results():
    """Misaligned (1-byte offset into a bytes buffer), read-only, strided, reversed,
    Fortran, zero-stride and byte-swapped arrays for every argument are ACCEPTED (the
    README: "non-contiguous and read-only arrays are accepted (copied when needed)")
    and give exactly the plain-array result, which itself matches the NumPy
    reference. The one exception is byte-swapped PARAMETERS, refused with an error
    naming the parameter (parameters must be native float32/float64; byte-swapped X,
    Y and h0 are converted): exactly those 40 of the 448 cases are rejected, every
    other one must run."""
    out = child_ok('''
        def misaligned(a, readonly):
            raw = (bytes if readonly else bytearray)(a.nbytes + 1)
            m = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
            if not readonly:
                m[...] = a
            else:  # fill through a writeable twin, then freeze
                raw = bytearray(a.nbytes + 1)
                m = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
                m[...] = a
                m = np.frombuffer(bytes(raw), dtype=a.dtype, count=a.size,
                                  offset=1).reshape(a.shape)
            assert not m.flags.aligned and m.flags.writeable == (not readonly)
            return m

        def strided(a):
            big = np.zeros(tuple(2 * n + 1 for n in a.shape), a.dtype)
            v = big[(slice(1, None, 2),) * a.ndim]
            v[...] = a
            return v

        def readonly(a):
            a = a.copy(); a.flags.writeable = False; return a

        LAYOUTS = {
            "misaligned": lambda a: misaligned(a, False),
            "misaligned_readonly": lambda a: misaligned(a, True),
            "readonly": readonly,
            "strided": strided,
            "reversed": lambda a: np.flip(np.flip(a).copy()),
            "fortran": np.asfortranarray,
            "byteswapped": lambda a: a.astype(a.dtype.newbyteorder()),
        }
        n_ok = n_err = 0
        for dtype in (np.float32, np.float64):
            for dense in (False, True):
                p, X, Y, h0 = problem(dtype, dense)
                p64 = {k: v.astype(np.float64) for k, v in p.items()}
                rl, rg, rh = reference.loss_and_grad(p64, X, Y, h0)
                tol = 1e-10 if dtype == np.float64 else 1e-4
                for nt in (1, 2):
                    base = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=nt)
                    fbase = fastrnn.forward(p, X, h0, num_threads=nt)
                    assert abs(base[0] - rl) <= tol * abs(rl), (base[0], rl)
                    for k in rg:
                        np.testing.assert_allclose(base[1][k], rg[k], rtol=tol,
                                                   atol=tol * np.abs(rg[k]).max(), err_msg=k)
                    np.testing.assert_allclose(base[2], rh, rtol=tol, atol=tol)
                    for lname, f in LAYOUTS.items():
                        targets = list(PARAM_NAMES) + ["X", "Y", "h0"]
                        for t in targets:
                            pp, XX, YY, hh = dict(p), X, Y, h0
                            if t in pp:
                                pp[t] = f(pp[t])
                            elif t == "X":
                                XX = f(X)
                            elif t == "Y":
                                YY = f(Y)
                            else:
                                hh = f(h0)
                            try:
                                got = fastrnn.loss_and_grad(pp, XX, YY, hh, num_threads=nt)
                                fgot = fastrnn.forward(pp, XX, hh, num_threads=nt)
                            except (TypeError, ValueError) as exc:
                                names_it(exc, t)
                                assert lname == "byteswapped" and t in PARAM_NAMES, (
                                    f"{lname} {t} {dtype.__name__} nt={nt} rejected: {exc}")
                                n_err += 1
                                print("rejected", lname, t, dtype.__name__, "->", exc)
                                continue
                            same(got, base, f"{lname} {t} {dtype.__name__} nt={nt}")
                            same(fgot, fbase, f"forward {lname} {t}")
                            n_ok += 1
                    # zero-stride (broadcast, read-only) inputs
                    Xb = np.broadcast_to(X[:1], X.shape)
                    hb = np.broadcast_to(h0[:1], h0.shape)
                    same(fastrnn.loss_and_grad(p, Xb, Y, hb, num_threads=nt),
                         fastrnn.loss_and_grad(p, Xb.copy(), Y, hb.copy(), num_threads=nt),
                         "broadcast")
        print("ok", n_ok, "rejected", n_err)
        assert n_err == 2 * 2 * 2 * len(PARAM_NAMES) == 40, n_err
        assert n_ok == 2 * 2 * 2 * len(LAYOUTS) * 8 - 40 == 408, n_ok
    ''')
    assert "ok 408 rejected 40" in out, out


def test_unusual_out_buffers():
    """Caller-provided gradient buffers: misaligned-but-writeable ones are written
    correctly or refused; read-only, strided, Fortran, byte-swapped ones are refused
    by name."""
    child_ok('''
        for dtype in (np.float32, np.float64):
            p, X, Y, h0 = problem(dtype)
            base = fastrnn.loss_and_grad(p, X, Y, h0)
            for k in PARAM_NAMES + ("h0",):
                shape = p[k].shape if k != "h0" else (B, H)
                raw = bytearray(int(np.prod(shape)) * np.dtype(dtype).itemsize + 1)
                mis = np.frombuffer(raw, dtype, offset=1).reshape(shape)
                out = {q: np.zeros_like(v) for q, v in p.items()}
                out[k] = mis
                try:
                    got = fastrnn.loss_and_grad(p, X, Y, h0, out=out)
                except ValueError as exc:       # refusing it is fine too
                    names_it(exc, "out")
                else:
                    same(got, base, f"misaligned out[{k}]")
                    assert got[1][k] is mis
                bad_variants = {
                    "readonly": np.broadcast_to(np.zeros(1, dtype), shape),
                    "strided": np.zeros(tuple(2 * n for n in shape), dtype)[
                        (slice(None, None, 2),) * len(shape)],
                    "byteswapped": np.zeros(shape, np.dtype(dtype).newbyteorder()),
                }
                if len(shape) == 2:
                    bad_variants["fortran"] = np.zeros(shape, dtype, order="F")
                for label, a in bad_variants.items():
                    out2 = dict(out, **{k: a})
                    try:
                        fastrnn.loss_and_grad(p, X, Y, h0, out=out2)
                    except ValueError as exc:
                        names_it(exc, "out")
                    else:
                        raise AssertionError(f"{label} out[{k}] accepted")
        print("done")
    ''')


def test_extreme_thread_counts():
    """num_threads far above the cores and the batch (capped, not an error), and the
    largest Python / numpy integers, work and agree with the reference."""
    child_ok('''
        for dtype in (np.float64, np.float32):
            for Bq in (1, 2, 5):
                rng = np.random.default_rng(Bq)
                p = fastrnn.init_params(D, H, V, dtype=dtype, seed=Bq, init="uniform")
                X = rng.integers(0, D, (Bq, T)); Y = rng.integers(0, V, (Bq, T))
                p64 = {k: v.astype(np.float64) for k, v in p.items()}
                rl, rg, _ = reference.loss_and_grad(p64, X, Y)
                for nt in (64, 255, 256, 257, 10**6, 2**70, np.uint64(2**64 - 1),
                           np.int8(127)):
                    l, g, _ = fastrnn.loss_and_grad(p, X, Y, num_threads=nt)
                    tol = 1e-10 if dtype == np.float64 else 1e-4
                    assert abs(l - rl) <= tol * abs(rl), (nt, l, rl)
                    for k in rg:
                        err = np.abs(g[k] - rg[k]).max() / max(np.abs(rg[k]).max(), 1e-30)
                        assert err <= tol * 10, (nt, k, err)
                    lo, _ = fastrnn.forward(p, X, num_threads=nt)
        print("done")
    ''')


# ---------------------------------------------------------------------------
# Vocab

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)


@SETTINGS
@given(ANY_TEXT, ANY_TEXT, st.integers(0, 3), st.booleans())
def test_vocab_any_unicode_round_trips(text, other, min_freq, with_unk):
    v = fastrnn.Vocab(text, min_freq=min_freq, unk="<unk>" if with_unk else None)
    kept = "".join(c for c in text if c in v)
    ids = v.encode(kept)
    assert ids.dtype == np.int32 and ids.shape == (len(kept),)
    assert v.decode(ids) == kept
    if with_unk:
        ids = v.encode(other)
        assert ids.shape == (len(other),) and ((ids >= 0) & (ids < len(v))).all()
    else:
        try:
            ids = v.encode(other)
        except ValueError as exc:
            assert "not in the vocabulary" in str(exc)
        else:
            assert v.decode(ids) == other
    assert fastrnn.Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v


@SETTINGS
@given(st.one_of(NON_ARRAYS, st.integers(-2**80, 2**80), st.lists(st.integers(-2**80, 2**80),
                                                                  max_size=4),
                 st.sampled_from([np.array([1.0]), np.array([True]), np.array([[1]]),
                                  np.array([1], object), np.array(["1"]),
                                  np.array([2**64 - 1], np.uint64),
                                  np.array([-1], np.int8)])))
def test_vocab_decode_hostile_ids(ids):
    """decode(ids): a 1-D (or scalar) integer sequence in range decodes (an error for
    it is a failure); anything else raises an error naming ids (the word "id"/"ids",
    or decode itself; "invalid" does not count)."""
    v = fastrnn.Vocab("hello")
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError):
        valid = False
    else:
        valid = arr.ndim <= 1 and (arr.size == 0 or (
            arr.dtype.kind in "iu" and bool((arr >= 0).all()) and bool((arr < 5).all())))
    try:
        s = v.decode(ids)
    except CLEAN as exc:
        assert not valid, f"valid ids {ids!r} rejected: {type(exc).__name__}: {exc}"
        assert any(names_word(str(exc), n) for n in ("id", "ids", "decode")), str(exc)
        return
    assert valid, f"invalid ids {ids!r} decoded to {s!r}"
    tokens = v.to_dict()["tokens"]
    assert s == "".join(tokens[int(i)] for i in arr.reshape(-1))


@pytest.mark.parametrize("kwargs", [
    dict(text_or_tokens=None), dict(text_or_tokens=3), dict(text_or_tokens=b"ab"),
    dict(text_or_tokens=[1, 2]), dict(text_or_tokens=["ab", None]),
    dict(text_or_tokens="ab", min_freq=-1), dict(text_or_tokens="ab", min_freq=True),
    dict(text_or_tokens="ab", reserved_tokens="<pad>"),
    dict(text_or_tokens="ab", reserved_tokens=[1]),
    dict(text_or_tokens="ab", reserved_tokens=[""]),
    dict(text_or_tokens="ab", reserved_tokens=["x", "x"]),
    dict(text_or_tokens="ab", unk=""), dict(text_or_tokens="ab", unk=3),
], ids=repr)
def test_vocab_bad_construction_is_clean(kwargs):
    with pytest.raises(CLEAN):
        fastrnn.Vocab(**kwargs)


@pytest.mark.parametrize("case", ["min_freq", "reserved_tokens", "tokens", "unk"])
def test_vocab_errors_name_the_argument(case):
    f = {
        "min_freq": lambda: fastrnn.Vocab("ab", min_freq="2"),
        "reserved_tokens": lambda: fastrnn.Vocab("ab", reserved_tokens=5),
        "tokens": lambda: fastrnn.Vocab.from_dict({"tokens": None}),
        "unk": lambda: fastrnn.Vocab.from_dict({"tokens": ["a"], "unk": ["a"]}),
    }[case]
    with pytest.raises(CLEAN, match=case):
        f()


# ---------------------------------------------------------------------------
# CharLM (fit / generate / perplexity) and the command line

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture(scope="module")
def lm():
    if CharLM is None:
        pytest.skip("fastrnn.CharLM is not on this branch yet")
    return CharLM(TEXT, hidden_size=8, seed=0)


def _charlm_hostile_calls(lm):
    ok_ids = lm.vocab.encode("the fox")
    V = len(lm.vocab)
    return {
        "perplexity": [
            (None, "text"), (3, "text"), (b"the fox", "text"), ([["t"]], "text"),
            (np.array([[1, 2]]), "text"), (np.array([1.5, 2.0]), "text"),
            (np.array([-1, 2]), "text"), (np.array([V, 0]), "text"),
            (np.array([2**40, 0]), "text"), ("t", "2"), ("", "2"), (ok_ids[:1], "2"),
            (np.array([True, False]), "text"),
        ],
        "generate": [
            (dict(prefix=None, length=5), "prefix"), (dict(prefix="", length=5), "prefix"),
            (dict(prefix=b"the", length=5), "prefix"), (dict(prefix=3, length=5), "prefix"),
            (dict(prefix="the", length=-1), "length"),
            (dict(prefix="the", length=2.5), "length"),
            (dict(prefix="the", length="5"), "length"),
            (dict(prefix="the", length=None), "length"),
            (dict(prefix="the", length=5, temperature=0), "temperature"),
            (dict(prefix="the", length=5, temperature=-1.0), "temperature"),
            (dict(prefix="the", length=5, temperature=float("nan")), "temperature"),
            (dict(prefix="the", length=5, temperature=float("inf")), "temperature"),
            (dict(prefix="the", length=5, temperature="hot"), "temperature"),
            (dict(prefix="the", length=5, top_k=0), "top_k"),
            (dict(prefix="the", length=5, top_k=-3), "top_k"),
            (dict(prefix="the", length=5, top_k=1.5), "top_k"),
            (dict(prefix="the", length=5, seed=-1), "seed"),
            (dict(prefix="the", length=5, seed=2**64), "seed"),
            (dict(prefix="the", length=5, seed="x"), "seed"),
            (dict(prefix="the", length=5, seed=1.5), "seed"),
        ],
        "fit": [
            (dict(text=None), "text"), (dict(text=b"abc"), "text"),
            (dict(text="the"), "text"),                      # too short
            (dict(text=np.array([[1, 2]])), "text"),
            (dict(text=np.array([V] * 200)), "text"),
            (dict(text=TEXT, epochs=0), "epochs"), (dict(text=TEXT, epochs=1.5), "epochs"),
            (dict(text=TEXT, epochs=True), "epochs"),
            (dict(text=TEXT, batch_size=0), "batch_size"),
            (dict(text=TEXT, batch_size=-2), "batch_size"),
            (dict(text=TEXT, num_steps=0), "num_steps"),
            (dict(text=TEXT, num_steps="3"), "num_steps"),
            (dict(text=TEXT, lr=0), "lr"), (dict(text=TEXT, lr=-1.0), "lr"),
            (dict(text=TEXT, lr=float("nan")), "lr"), (dict(text=TEXT, lr=float("inf")), "lr"),
            (dict(text=TEXT, lr="fast"), "lr"), (dict(text=TEXT, lr=None), "lr"),
            (dict(text=TEXT, optimizer="rmsprop"), "optimizer"),
            (dict(text=TEXT, optimizer=None), "optimizer"),
            (dict(text=TEXT, clip=-1.0), "clip"), (dict(text=TEXT, clip=float("nan")), "clip"),
            (dict(text=TEXT, clip_value=0), "clip_value"),
            (dict(text=TEXT, sampling="shuffled"), "sampling"),
            (dict(text=TEXT, num_threads=0), "num_threads"),
            (dict(text=TEXT, num_threads=1.5), "num_threads"),
            (dict(text=TEXT, betas=(0.9,)), "betas"), (dict(text=TEXT, betas=(1.0, 0.9)), "betas"),
            (dict(text=TEXT, betas="ab"), "betas"),
            (dict(text=TEXT, eps=0), "eps"), (dict(text=TEXT, eps=-1e-8), "eps"),
            (dict(text=TEXT, callbacks=[3]), "callbacks"),
            (dict(text=TEXT, resume=3), "resume"),
            (dict(text=TEXT, val_text=b"abc"), "val_text"),
            (dict(text=TEXT, val_text="t"), "val_text"),
            (dict(text=TEXT, checkpoint="/nonexistent-dir-xyz/ck.npz"), "nonexistent"),
        ],
    }


@needs_charlm
@pytest.mark.parametrize("method", ["perplexity", "generate", "fit"])
def test_charlm_hostile_arguments(lm, method):
    """Each hostile argument raises a clean error naming it, and leaves the model as
    it was (no partial training, no changed parameters)."""
    before = lm.parameters.copy()
    hist = list(lm.history)
    failures = []
    for arg, name in _charlm_hostile_calls(lm)[method]:
        try:
            if method == "perplexity":
                lm.perplexity(arg)
            elif method == "generate":
                lm.generate(**arg)
            else:
                kw = dict(epochs=1, batch_size=2, num_steps=5, progress=False)
                kw.update(arg)
                lm.fit(kw.pop("text"), **kw)
        except (TypeError, ValueError, FileNotFoundError) as exc:
            if name not in str(exc):
                failures.append(f"{method}({arg!r}): {type(exc).__name__}({exc}) does not "
                                f"name {name!r}")
        except Exception as exc:  # noqa: BLE001 - any other type is a finding
            failures.append(f"{method}({arg!r}): unexpected {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{method}({arg!r}) was accepted")
    np.testing.assert_array_equal(lm.parameters, before)
    assert lm.history == hist
    assert not failures, "\n".join(failures)


@needs_charlm
def test_charlm_hostile_construction():
    for args, kw, name in [
        ((None,), {}, "vocab"), ((3,), {}, "vocab"), (("",), {}, "vocab"),
        ((b"abc",), {}, "vocab"), (("abc", 0), {}, "hidden_size"),
        (("abc", -1), {}, "hidden_size"), (("abc", 2.5), {}, "hidden_size"),
        (("abc", True), {}, "hidden_size"), (("abc", 4), dict(nonlinearity="gelu"),
                                             "nonlinearity"),
        (("abc", 4), dict(dtype="int32"), "dtype"), (("abc", 4), dict(dtype="x"), "dtype"),
        (("abc", 4), dict(init="he"), "init"),
    ]:
        with pytest.raises(CLEAN) as excinfo:
            CharLM(*args, **kw)
        assert name in str(excinfo.value), (args, kw, str(excinfo.value))


@needs_charlm
def test_charlm_unusual_but_valid_input(lm):
    """Token-id arrays of any integer dtype/layout give the same perplexity as the str;
    prefixes with characters outside the vocabulary (unk) generate fine."""
    text = TEXT[:200]
    base = lm.perplexity(text)
    ids = lm.vocab.encode(text)
    for variant in (ids.astype(np.int64), ids.astype(np.uint8), ids[::-1].copy()[::-1],
                    ids.tolist(), np.frombuffer(bytes(ids.astype(np.int16).tobytes()),
                                                np.int16)):
        assert lm.perplexity(variant) == pytest.approx(base, rel=1e-6)
    s = lm.generate("日本語 \ud800 ☃", 20, seed=1)
    assert s.startswith("日本語 \ud800 ☃") and len(s) == len("日本語 \ud800 ☃") + 20
    assert lm.generate("the", 0, seed=1) == "the"
    # greedy decoding is the argmax loop of the NumPy reference (a float64 model with
    # uniform init, so no near-ties between logits)
    m = CharLM(TEXT, hidden_size=16, seed=3, init="uniform", dtype="float64")
    p = {k: np.asarray(a, np.float64) for k, a in m.params.items()}
    logits, h = reference.forward(p, m.vocab.encode("t")[None, :])
    want = []
    for _ in range(30):
        want.append(int(np.argmax(logits[0, -1])))
        logits, h = reference.forward(p, np.array([[want[-1]]]), h)
    expected = "t" + m.vocab.decode(want)
    assert len(set(want)) > 1, "a degenerate check: the reference repeats one character"
    assert m.generate("t", 30, greedy=True) == expected
    assert m.generate("t", 30, greedy=True, num_threads=2) == expected


@needs_charlm
def test_charlm_huge_requests_fail_cleanly():
    """A hidden size or generation length that cannot fit in memory: a clean error."""
    child_ok('''
        from fastrnn import CharLM
        for H_ in (10**9, 2**40):
            try:
                CharLM("abc", H_)
            except (MemoryError, ValueError) as exc:
                print("H", H_, type(exc).__name__, str(exc)[:80])
                too_big(exc, "hidden_size")
            else:
                raise AssertionError("allocated?")
        lm = CharLM("abc", 4, seed=0)
        try:
            lm.generate("a", 10**12)
        except (MemoryError, ValueError) as exc:
            print("length", type(exc).__name__, str(exc)[:80])
            too_big(exc, "length")
        else:
            raise AssertionError("generated 10**12 characters?")
        print(lm.generate("a", 5, seed=0))
    ''', limit_gib=4)


def _cli(*args, timeout=120, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def _has_cli():
    try:
        import fastrnn.__main__  # noqa: F401
        import fastrnn.cli  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_cli(), reason="fastrnn.__main__ / fastrnn.cli not on this "
                    "branch yet")
def test_cli_hostile_arguments_exit_2_with_one_line(tmp_path):
    """Bad command lines: exit status 2 and a message on stderr, never a traceback
    or a crash."""
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip" + os.urandom(64))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "t.txt"
    text.write_text("abc")
    cases = [
        ("train", "--hidden", "0"), ("train", "--hidden", "abc"), ("train", "--epochs", "-1"),
        ("train", "--lr", "nan"), ("train", "--lr", "-1"), ("train", "--threads", "0"),
        ("train", "--val-fraction", "1.5"), ("train", "--optimizer", "rmsprop"),
        ("train", "--corpus", str(tmp_path / "missing.txt")),
        ("train", "--corpus", str(text), "--no-progress"),     # too short to train on
        ("train", "--out", str(tmp_path / "no" / "such" / "dir" / "m.npz"), "--epochs", "1"),
        ("generate", str(tmp_path / "missing.npz")), ("generate", str(garbage)),
        ("generate", str(empty)), ("generate", str(tmp_path)),
        ("generate", str(garbage), "-n", "-5"), ("generate", str(garbage), "--top-k", "0"),
        ("eval", str(garbage)), ("eval", str(tmp_path / "missing.npz")),
        ("nonsense-command",), ("--no-such-flag",),
    ]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda a: _cli(*a, cwd=tmp_path), cases))
    failures = []
    for args, res in zip(cases, results):
        if res.returncode != 2 or "Traceback" in res.stderr or not res.stderr.strip():
            failures.append(f"fastrnn {' '.join(args)}: {describe_exit(res)}")
    assert not failures, "\n\n".join(failures)
