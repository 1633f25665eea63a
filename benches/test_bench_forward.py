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
    """The modules of compare.make_torch, set up the same way, without autograd.
    "onehot": one_hot -> nn.RNN(V, H) -> nn.Linear; "embedding": nn.Embedding(V, H)
    -> nn.RNN(H, H) with identity input weight -> nn.Linear."""
    torch = compare.torch
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    V, H = p["W_hq"].shape[1], p["W_hh"].shape[0]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    rnn = torch.nn.RNN(V if variant == "onehot" else H, H, batch_first=True)
    lin = torch.nn.Linear(H, V)
    emb = torch.nn.Embedding(V, H) if variant == "embedding" else None
    with torch.no_grad():
        if variant == "onehot":
            rnn.weight_ih_l0.copy_(t(p["W_xh"].T))
        else:
            emb.weight.copy_(t(p["W_xh"]))
            rnn.weight_ih_l0.copy_(torch.eye(H))
        rnn.weight_hh_l0.copy_(t(p["W_hh"].T))
        rnn.bias_ih_l0.copy_(t(p["b_h"]))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(t(p["W_hq"].T))
        lin.bias.copy_(t(p["b_q"]))
    Xt = torch.from_numpy(X.astype(np.int64))

    @torch.no_grad()
    def run():
        inp = (torch.nn.functional.one_hot(Xt, V).float() if variant == "onehot"
               else emb(Xt))
        out, _ = rnn(inp)
        return lin(out)  # (B, T, V)
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
