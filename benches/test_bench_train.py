"""Full training step (forward, mean cross-entropy, BPTT, global-norm clip, SGD
update; float32; token ids) for every configuration of compare.CONFIGS: fastrnn,
the NumPy reference and the two PyTorch peers, timing compare.py's own
make_fastrnn / make_reference / make_torch.

    pytest benches/test_bench_train.py
"""
import functools
import math

import numpy as np
import pytest

import compare
from fastrnn import reference
from _bench_common import (THREADS, TRAIN_CONFIGS, assert_loss_close, gated_problem,
                           impl_params, run_bench, timed, train_problem)

MAKERS = {
    "fastrnn": compare.make_fastrnn,
    "numpy": compare.make_reference,
    "torch-onehot": lambda *a: compare.make_torch(*a, variant="onehot"),
    "torch-embedding": lambda *a: compare.make_torch(*a, variant="embedding"),
}


def closure_var(fn, name):
    """The variable ``name`` that the closure ``fn`` (a compare.make_* step) holds."""
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


@functools.lru_cache(maxsize=None)
def reference_update(config, split_bias=False):
    """(p0, p1) in float64: the parameters before and after one reference training
    step (the float64 reference gradient, global-norm clip to CLIP, SGD with LR).

    ``split_bias``: the model holds b_h as two parameters (PyTorch's bias_ih + bias_hh),
    each with b_h's gradient: the clipping norm counts that gradient twice and the sum
    moves twice as far.
    """
    p, X, Y, _, _, _ = train_problem(config)
    p0 = {k: v.astype(np.float64) for k, v in p.items()}
    _, g, _ = reference.loss_and_grad(p0, X, Y)
    copies = {k: (2 if split_bias and k == "b_h" else 1) for k in p0}
    norm = math.sqrt(sum(copies[k] * float(np.vdot(g[k], g[k])) for k in p0))
    scale = compare.LR * min(1.0, compare.CLIP / norm)
    return p0, {k: p0[k] - copies[k] * scale * g[k] for k in p0}


def stepped_params(impl, step):
    """The parameters the implementation's step updated, as the reference names them
    (None for torch-embedding: it trains an extra input matrix, initialised to the
    identity, so its update is not the reference's update; its loss is checked)."""
    if impl in ("fastrnn", "numpy"):
        return {k: np.asarray(v, np.float64) for k, v in closure_var(step, "params").items()}
    if impl == "torch-onehot":
        w_ih, w_hh, b_ih, b_hh, w_q, b_q = (t.detach().double().numpy()
                                            for t in closure_var(step, "params"))
        return {"W_xh": w_ih.T, "W_hh": w_hh.T, "b_h": b_ih + b_hh, "W_hq": w_q.T,
                "b_q": b_q}
    return None


def assert_update_matches_reference(config, impl, step):
    """After the check step, every parameter equals the reference's one-step update,
    to float32 accuracy relative to the size of the update."""
    got = stepped_params(impl, step)
    if got is None:
        return
    p0, p1 = reference_update(config, split_bias=impl == "torch-onehot")
    for k in p0:
        moved = np.abs(p1[k] - p0[k]).max()
        err = np.abs(got[k] - p1[k]).max()
        assert err <= 1e-3 * moved + 1e-6 * np.abs(p0[k]).max(), (
            f"{config}/{impl}: {k} after one step is off the reference update by {err:.3g} "
            f"(the update moved it by up to {moved:.3g})")


@pytest.mark.parametrize("impl", impl_params(MAKERS))
@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_train_step(benchmark, config, impl):
    V, H, B, T = compare.CONFIGS[config]
    p, X, Y, _, _, loss64 = train_problem(config)
    step, loss0 = MAKERS[impl](p, X, Y, THREADS)
    # the check, once, outside the timed calls: the loss before any update equals
    # the float64 reference's, the first step reports that same loss, and the
    # parameters it leaves are the reference's update (gradient, clip and SGD: the
    # whole of what is timed, not only the forward pass)
    assert_loss_close(loss0, loss64, f"{config}/{impl}")
    first, seconds = timed(step)
    assert_loss_close(first, loss64, f"{config}/{impl} first step")
    assert_update_matches_reference(config, impl, step)
    loss = run_bench(benchmark, step, group=f"train {config} (V={V} H={H} B={B} T={T})",
                     check_seconds=seconds, units=B * T, unit_name="tokens")
    assert math.isfinite(loss)


# gated cells (issue 12): compare.GATED_CONFIGS against torch.nn.GRU / torch.nn.LSTM
GATED_TRAIN = [k for k, c in compare.GATED_CONFIGS.items() if c[5] is not None]
GATED_IMPLS = ["fastrnn", "torch", "torch-nomkldnn"]


@pytest.mark.parametrize("impl", impl_params(GATED_IMPLS))
@pytest.mark.parametrize("config", GATED_TRAIN)
def test_train_step_gated(benchmark, config, impl):
    cell, V, H, L, B, T = compare.GATED_CONFIGS[config]
    if impl == "torch-nomkldnn" and cell != "lstm":
        pytest.skip("oneDNN runs PyTorch's LSTM only")
    p, X, Y, loss64 = gated_problem(config)
    name = impl.replace("torch", f"torch-{cell}", 1)
    step, loss0 = compare.gated_makers(cell, L, compare.torch is not None)[name](
        p, X, Y, THREADS)
    # the check, once, outside the timed calls (as test_train_step)
    assert_loss_close(loss0, loss64, f"{config}/{impl}")
    first, seconds = timed(step)
    assert_loss_close(first, loss64, f"{config}/{impl} first step")
    loss = run_bench(benchmark, step,
                     group=f"train {config} ({cell} V={V} H={H} L={L} B={B} T={T})",
                     check_seconds=seconds, units=B * T, unit_name="tokens")
    assert math.isfinite(loss)
