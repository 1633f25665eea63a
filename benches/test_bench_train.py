"""Full training step (forward, mean cross-entropy, BPTT, global-norm clip, SGD
update; float32; token ids) for every configuration of compare.CONFIGS: fastrnn,
the NumPy reference and the two PyTorch peers, timing compare.py's own
make_fastrnn / make_reference / make_torch.

    pytest benches/test_bench_train.py
"""
import math

import pytest

import compare
from _bench_common import (THREADS, TRAIN_CONFIGS, assert_loss_close, impl_params, run_bench,
                      timed, train_problem)

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
