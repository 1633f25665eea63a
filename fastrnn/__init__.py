"""fastrnn: fast recurrent character-level language models on the CPU.

The models are the recurrent networks of the d2l.ai chapters "Recurrent Neural
Networks" and "Modern Recurrent Neural Networks": the Elman RNN (``cell="rnn"``)::

    H_t = phi(X_t W_xh + H_{t-1} W_hh + b_h)
    O_t = H_t W_hq + b_q

GRU (``cell="gru"``) and LSTM (``cell="lstm"``), in stacks of ``num_layers``
layers with dropout between them. :mod:`fastrnn.params` is the parameter table.

Functional API: :func:`init_params`, :func:`forward`, :func:`loss_and_grad`
(compiled Cython/OpenMP kernels); :mod:`fastrnn.reference` has the same
functions in plain NumPy.
"""
from ._version import __version__
from ._core import (default_num_threads, forward, init_params, loss_and_grad)
from . import params
from . import reference
from . import datasets
from .vocab import Vocab
from .config import ModelConfig, TrainConfig
from .model import CharLM, TrainingDiverged, TrainingInterrupted
from .export import from_torch_state_dict, to_torch_state_dict  # no torch import


def build_info() -> dict:
    """How this fastrnn was built and what it runs with.

    Returns
    -------
    dict
        ``version``
            The package version.
        ``compiled``
            True when the compiled kernels are in use (False: the NumPy fallback,
            with the reason in ``import_error``).
        ``openmp``
            True when OpenMP was compiled in.
        ``default_num_threads``
            Threads used when ``num_threads=None`` (see :func:`default_num_threads`).
        ``ftz``
            True when the kernels can flush subnormal floats.
        ``kernels``
            Which hand-written matrix-product kernels run: ``"avx512"``, ``"avx2"``,
            or ``"blas"`` when BLAS does all the products (``FASTRNN_KERNEL_LEVEL``
            forces a lower level); None without the compiled kernels.
        ``blas``
            The BLAS behind the kernels, as threadpoolctl reports it (a dict), or a
            string saying why it is unknown.
        ``layers_compiled``
            True when the compiled layer loops of every cell (``fastrnn._layers``)
            are in use; False: the layer stack runs NumPy's loops.
        ``import_error``
            Only when the kernels could not be loaded: why.

    Examples
    --------
    >>> import fastrnn
    >>> info = fastrnn.build_info()
    >>> info["version"] == fastrnn.__version__
    True
    >>> info["kernels"] in ("avx512", "avx2", "blas", None)
    True
    >>> info["compiled"], info["openmp"]      # doctest: +SKIP
    (True, True)
    """
    from . import _core
    info = {
        "version": __version__,
        "compiled": _core._rnn is not None,
        "openmp": _core.openmp_enabled(),
        "default_num_threads": _core.default_num_threads() if _core.openmp_enabled() else 1,
        "ftz": bool(_core._rnn is not None and _core._rnn.ftz_supported()),
        "kernels": ({2: "avx512", 1: "avx2"}.get(_core._rnn.packed_gemm_level(), "blas")
                    if _core._rnn is not None else None),
        "blas": None,
        "layers_compiled": _core._layers is not None,
    }
    if _core._rnn is None:
        info["import_error"] = str(_core._IMPORT_ERROR)
    try:
        libs = [lib for lib in _core._threadpool_controller().info()
                if lib.get("user_api") == "blas"]
        scipy_libs = [lib for lib in libs if "scipy_openblas" in str(lib.get("prefix"))
                      and "64_" not in str(lib.get("filepath"))]
        lib = (scipy_libs or libs or [None])[0]
        if lib is not None:
            info["blas"] = {k: lib.get(k) for k in
                            ("internal_api", "version", "architecture", "threading_layer",
                             "filepath")}
    except Exception as exc:  # threadpoolctl missing or failing: report, don't crash
        info["blas"] = f"unknown ({exc})"
    return info


__all__ = ["__version__", "build_info", "default_num_threads", "forward", "init_params",
           "loss_and_grad", "params", "reference", "datasets", "Vocab", "CharLM",
           "ModelConfig", "TrainConfig", "TrainingDiverged", "TrainingInterrupted"]
__all__ += ["to_torch_state_dict", "from_torch_state_dict"]
