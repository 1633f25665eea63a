"""Packaging checks that run in the ordinary suite (fast): the version has one
source, build_info reports what it promises, and a scipy whose cython_blas does
not match the compiled kernels fails at import with a clear message.

The slow, end-to-end check (build the wheel, install it without a compiler, run
this suite against it) is tools/check_wheel.sh.
"""
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import fastrnn
from fastrnn import _compat

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
BUILD_INFO_KEYS = {"version", "compiled", "openmp", "default_num_threads", "ftz", "blas"}


def test_version_has_one_source():
    from fastrnn._version import __version__

    assert fastrnn.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", __version__)
    # the installed metadata was generated from it (a stale install fails here:
    # reinstall after changing fastrnn/_version.py)
    assert metadata.version("fastrnn") == __version__


def test_pyproject_reads_version_from_version_py():
    tomllib = pytest.importorskip("tomllib")
    if not PYPROJECT.is_file():
        pytest.skip(f"{PYPROJECT} not present")
    conf = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in conf["project"]
    assert "version" in conf["project"]["dynamic"]
    assert conf["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "fastrnn._version.__version__"}


def test_build_info_reports_its_keys():
    info = fastrnn.build_info()
    assert BUILD_INFO_KEYS <= set(info), f"missing {BUILD_INFO_KEYS - set(info)}"
    assert info["version"] == fastrnn.__version__
    assert isinstance(info["compiled"], bool) and isinstance(info["openmp"], bool)
    assert isinstance(info["ftz"], bool)
    assert isinstance(info["default_num_threads"], int) and info["default_num_threads"] >= 1
    if info["compiled"]:
        assert "import_error" not in info
    else:
        assert not info["openmp"] and info["import_error"]
    if info["openmp"]:
        assert info["compiled"]


def test_runtime_requirements_have_floors():
    """Every runtime dependency has a >= floor (tools/check_wheel.sh --floors tests them)."""
    runtime = [r for r in metadata.requires("fastrnn") or [] if "extra" not in r]
    assert runtime
    for req in runtime:
        assert ">=" in req, f"{req!r} has no floor"
    assert any(r.startswith("scipy") for r in runtime)


# A fresh interpreter replaces the capsule that scipy.linalg.cython_blas exports for
# `name` (the capsule's name is the C signature Cython checks when fastrnn._rnn is
# imported) by one with another signature -- or removes it -- as a scipy whose
# cython_blas changed would, then imports fastrnn.
_MISMATCH = r"""
import ctypes, json, sys
import scipy.linalg.cython_blas as cython_blas

name, how = sys.argv[1], sys.argv[2]
capi = dict(cython_blas.__pyx_capi__)
if how == "signature":
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    SIG, DUMMY = b"void (int *)", ctypes.c_int(0)  # must outlive the capsule
    capi[name] = new(ctypes.addressof(DUMMY), SIG, None)
else:
    del capi[name]
cython_blas.__pyx_capi__ = capi
try:
    import fastrnn
    out = {"type": None}
except Exception as exc:
    cause = exc.__cause__ or exc
    out = {"type": type(exc).__name__, "message": str(exc),
           "cause_type": type(cause).__name__, "cause": str(cause)}
print(json.dumps(out))
"""


def _import_with_changed_cython_blas(name, how):
    if not fastrnn.build_info()["compiled"]:
        pytest.skip("the compiled kernels are not built")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", _MISMATCH, name, how], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # an exception, never a crash
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_clear(message):
    assert "cython_blas" in message
    assert f"scipy {_compat.installed_scipy()}" in message
    assert _compat.supported_scipy() in message
    assert fastrnn.__version__ in message


@pytest.mark.parametrize("how, cause", [("signature", "TypeError"), ("missing", "ImportError")])
def test_compat_explains_a_real_cython_blas_mismatch(how, cause):
    out = _import_with_changed_cython_blas("sgemm", how)
    if out["type"] is None:  # a missing capsule may be caught and fall back to NumPy
        pytest.skip("fastrnn imported with the NumPy fallback")
    assert out["cause_type"] == cause
    assert "sgemm" in out["cause"]
    exc = TypeError(out["cause"]) if cause == "TypeError" else ImportError(out["cause"])
    _assert_clear(_compat.scipy_blas_mismatch_message(exc))


@pytest.mark.parametrize("how", ["signature", "missing"])
def test_import_fails_clearly_on_a_cython_blas_mismatch(how):
    out = _import_with_changed_cython_blas("dgemm", how)
    assert out["type"] == "ImportError"
    _assert_clear(out["message"])


def test_compat_ignores_other_import_errors():
    assert _compat.scipy_blas_mismatch_message(ImportError("libgomp.so.1: cannot open")) is None
    assert _compat.scipy_blas_mismatch_message(TypeError("unrelated")) is None
    missing = _compat.scipy_blas_mismatch_message(
        ModuleNotFoundError("No module named 'scipy'", name="scipy"))
    assert "scipy is not importable" in missing and _compat.supported_scipy() in missing
