"""Forward pass only (logits of every step and the final state; float32; token
ids) for every training configuration of compare.CONFIGS: fastrnn.forward, the
NumPy reference's forward, and PyTorch's modules of compare.make_torch (both
variants) under ``torch.no_grad()``.

    pytest benches/test_bench_forward.py
"""
import numpy as np
import pytest

import compare
import fastrnn
from _bench_common import THREADS, TRAIN_CONFIGS, impl_params, run_bench, timed, train_problem
from fastrnn import reference

IMPLS = ["fastrnn", "numpy", "torch-onehot", "torch-embedding"]


def forward_fastrnn(p, X):
    p = {k: v.copy() for k, v in p.items()}
    return lambda: fastrnn.forward(p, X, num_threads=THREADS)[0]


def forward_reference(p, X):
    p = {k: v.copy() for k, v in p.items()}
    return lambda: reference.forward(p, X)[0]


def forward_torch(p, X, variant):
    """compare.torch_model's modules (as in compare.make_torch), without autograd."""
    torch = compare.torch
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    _, logits = compare.torch_model(p, variant)
    Xt = torch.from_numpy(X.astype(np.int64))

    @torch.no_grad()
    def run():
        return logits(Xt)  # (B, T, V)
    return run


@pytest.mark.parametrize("impl", impl_params(IMPLS))
@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_forward(benchmark, config, impl):
    V, H, B, T = compare.CONFIGS[config]
    p, X, _, logits64, _, _ = train_problem(config)
    if impl == "fastrnn":
        fn = forward_fastrnn(p, X)
    elif impl == "numpy":
        fn = forward_reference(p, X)
    else:
        fn = forward_torch(p, X, impl.split("-", 1)[1])
    # the check, once, outside the timed calls: float32 logits against the float64
    # reference's, relative to their scale
    logits, seconds = timed(fn)
    logits = np.asarray(logits)
    assert logits.shape == (B, T, V) and logits.dtype == np.float32
    scale = float(np.abs(logits64).max())
    np.testing.assert_allclose(logits, logits64, rtol=1e-4, atol=1e-4 * scale,
                               err_msg=f"{config}/{impl}: logits differ from the reference")
    run_bench(benchmark, fn, group=f"forward {config} (V={V} H={H} B={B} T={T})",
              check_seconds=seconds, units=B * T, unit_name="tokens")
