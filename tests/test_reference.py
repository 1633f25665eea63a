"""Central-difference gradient check of the NumPy reference, in float64."""
import numpy as np
import pytest

from fastrnn import reference
from conftest import make_problem


def numerical_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
def test_reference_gradients_match_finite_differences(rng, nonlinearity, dense):
    B, T, D, H, V = 3, 5, 4, 6, 5
    _, p, X, Y, h0 = make_problem(rng, B, T, D, H, V, dense=dense)
    if nonlinearity == "relu":  # keep pre-activations away from the kink at 0
        p["b_h"] += 0.3
    loss, grads, _ = reference.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity)

    def f():
        return reference.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity)[0]

    for name in ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]:
        num = numerical_grad(f, p[name])
        np.testing.assert_allclose(grads[name], num, rtol=1e-6, atol=1e-9, err_msg=name)
    num_h0 = numerical_grad(f, h0)
    np.testing.assert_allclose(grads["h0"], num_h0, rtol=1e-6, atol=1e-9, err_msg="h0")


def test_reference_loss_is_mean_cross_entropy(rng):
    _, p, X, Y, h0 = make_problem(rng, 2, 3, 4, 5, 4)
    logits, _ = reference.forward(p, X, h0)
    loss, _, _ = reference.loss_and_grad(p, X, Y, h0)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([logp[b, t, Y[b, t]] for b in range(2) for t in range(3)])
    assert loss == pytest.approx(expected, rel=1e-12)


def test_reference_forward_and_loss_agree(rng):
    _, p, X, Y, h0 = make_problem(rng, 3, 4, 5, 6, 5)
    logits, hT = reference.forward(p, X, h0)
    _, _, hT2 = reference.loss_and_grad(p, X, Y, h0)
    np.testing.assert_allclose(hT, hT2, rtol=1e-14)


def test_uniform_logits_give_loss_log_V():
    # all-zero parameters: every prediction is uniform over V classes -> loss = log V
    import fastrnn
    p = {k: np.zeros_like(v) for k, v in fastrnn.init_params(5, 3, 7, dtype="float64").items()}
    X = np.zeros((2, 3), int)
    loss, _, _ = reference.loss_and_grad(p, X, X % 7)
    assert loss == pytest.approx(np.log(7), rel=1e-14)
