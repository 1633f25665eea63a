"""Full training step (forward, mean cross-entropy, BPTT, global-norm clip, SGD
update; float32; token ids) for every configuration of compare.CONFIGS: fastrnn,
the NumPy reference and the two PyTorch peers, timing compare.py's own
make_fastrnn / make_reference / make_torch.

    pytest benches/test_bench_train.py
"""
import math

import pytest

import compare
from _bench_common import (THREADS, TRAIN_CONFIGS, assert_loss_close, gated_problem,
                           impl_params, run_bench, timed, train_problem)

MAKERS = {
    "fastrnn": compare.make_fastrnn,
    "numpy": compare.make_reference,
    "torch-onehot": lambda *a: compare.make_torch(*a, variant="onehot"),
    "torch-embedding": lambda *a: compare.make_torch(*a, variant="embedding"),
}


@pytest.mark.parametrize("impl", impl_params(MAKERS))
@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_train_step(benchmark, config, impl):
    V, H, B, T = compare.CONFIGS[config]
    p, X, Y, _, _, loss64 = train_problem(config)
    step, loss0 = MAKERS[impl](p, X, Y, THREADS)
    # the check, once, outside the timed calls: the loss before any update equals
    # the float64 reference's, and the first step reports that same loss
    assert_loss_close(loss0, loss64, f"{config}/{impl}")
    first, seconds = timed(step)
    assert_loss_close(first, loss64, f"{config}/{impl} first step")
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
