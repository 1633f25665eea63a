"""Clear messages for an installed scipy that the compiled kernels cannot use.

The kernels call BLAS through ``scipy.linalg.cython_blas``. Cython binds those
functions when ``fastrnn._rnn`` is imported, by name and C signature (the
function-pointer capsules in ``cython_blas.__pyx_capi__``), so any scipy whose
``cython_blas`` exports the routines with the signatures fastrnn was compiled
against works, whatever its version. One that does not makes the import raise
``TypeError: C function scipy.linalg.cython_blas.sgemm has wrong signature
(expected ..., got ...)`` or ``ImportError: scipy.linalg.cython_blas does not
export expected C function sgemm``; :func:`scipy_blas_mismatch_message` turns
those into a message that says which scipy is installed and which is supported.
"""
from __future__ import annotations

import re
from importlib import metadata


def supported_scipy() -> str:
    """The scipy requirement in this fastrnn's metadata, e.g. ``"scipy>=1.9.2"``
    (``"scipy"`` when fastrnn runs from a tree that was never installed)."""
    try:
        requires = metadata.requires("fastrnn") or []
    except metadata.PackageNotFoundError:
        requires = []
    for req in requires:
        spec, _, marker = req.partition(";")
        if re.match(r"scipy\b", spec.strip(), re.IGNORECASE) and "extra" not in marker:
            return spec.replace(" ", "")
    return "scipy"


def installed_scipy() -> str:
    """The installed scipy's version, or why it has none."""
    try:
        return metadata.version("scipy")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def scipy_blas_mismatch_message(exc: BaseException) -> str | None:
    """The message for an exception raised while importing the compiled kernels.

    Returns None unless ``exc`` says the installed scipy's ``cython_blas`` does
    not provide the BLAS routines, with the C signatures, that fastrnn was built
    against (or that scipy is missing altogether).
    """
    text = str(exc)
    missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "scipy"
    if "cython_blas" not in text and not missing:
        return None
    from ._version import __version__

    want = supported_scipy()
    have = installed_scipy()
    if missing:
        return (f"fastrnn {__version__} needs scipy for its compiled kernels, and scipy "
                f"is not importable ({text}). Install it: pip install \"{want}\"")
    return (f"fastrnn {__version__} cannot load its compiled kernels: the installed "
            f"scipy {have} does not provide the BLAS routines that fastrnn was compiled "
            f"against ({text}). fastrnn supports {want}; install a scipy in that range "
            f"(pip install \"{want}\"), or rebuild fastrnn against this scipy "
            "(pip install Cython, then pip install --no-binary fastrnn "
            "--no-build-isolation fastrnn).")
