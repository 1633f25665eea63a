"""Central-difference gradient check of the NumPy reference, in float64."""
import zlib

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


# ---------------------------------------------------------------------------
# every cell, stacked layers, dropout, state forms

from fastrnn import params as P              # noqa: E402
from cellutil import make_stack_problem       # noqa: E402

STACK_CASES = [(cell, L, dense, drop)
               for cell in ("rnn", "gru", "lstm") for L in (1, 2, 3)
               for dense in (False, True) for drop in ((0.0, 0.4) if L > 1 else (0.0,))]


@pytest.mark.parametrize("cell, L, dense, dropout", STACK_CASES,
                         ids=[f"{c}-L{L}-{'dense' if d else 'ids'}-p{p}"
                              for c, L, d, p in STACK_CASES])
def test_stack_gradients_match_finite_differences(cell, L, dense, dropout):
    rng = np.random.default_rng(zlib.crc32(repr((cell, L, dense, dropout)).encode()))
    B, T, D, H, V = 2, 4, 3, 3, 4
    form = "BH" if L == 1 and not dense else "LBH"
    _, p, X, Y, h0 = make_stack_problem(rng, cell, L, B, T, D, H, V, dense=dense, h0=form)
    kw = dict(cell=cell, dropout=dropout, seed=77 if dropout else None, row_offset=3)
    loss, grads, state = reference.loss_and_grad(p, X, Y, h0, **kw)
    assert list(grads)[:len(p)] == P.param_names(cell, L)

    def f():
        return reference.loss_and_grad(p, X, Y, h0, **kw)[0]

    for name in P.param_names(cell, L):
        np.testing.assert_allclose(grads[name], numerical_grad(f, p[name]), rtol=1e-6,
                                   atol=1e-9, err_msg=name)
    hs = h0 if cell == "lstm" else (h0,)
    for key, s in zip(("h0", "c0"), hs):
        assert grads[key].shape == s.shape, key
        np.testing.assert_allclose(grads[key], numerical_grad(f, s), rtol=1e-6, atol=1e-9,
                                   err_msg=key)
    if cell != "lstm":
        assert "c0" not in grads


def test_relu_stack_gradients_match_finite_differences(rng):
    _, p, X, Y, h0 = make_stack_problem(rng, "rnn", 2, 2, 4, 3, 3, 4, h0="LBH")
    kw = dict(nonlinearity="relu", dropout=0.3, seed=5)
    _, grads, _ = reference.loss_and_grad(p, X, Y, h0, **kw)

    def f():
        return reference.loss_and_grad(p, X, Y, h0, **kw)[0]

    for name in list(p) + ["h0"]:
        a = p[name] if name != "h0" else h0
        np.testing.assert_allclose(grads[name], numerical_grad(f, a), rtol=1e-6, atol=1e-9,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_state_forms(rng, cell, L):
    B, T, D, H, V = 2, 3, 4, 3, 4
    _, p, X, Y, h_lbh = make_stack_problem(rng, cell, L, B, T, D, H, V, h0="LBH")
    pair = cell == "lstm"
    logits, s = reference.forward(p, X, h_lbh, cell=cell)
    _, grads, s2 = reference.loss_and_grad(p, X, Y, h_lbh, cell=cell)
    for st in (s, s2):
        for a in (st if pair else (st,)):
            assert a.shape == (L, B, H)
    assert grads["h0"].shape == (L, B, H)
    if pair:
        assert grads["c0"].shape == (L, B, H)
    # None: zeros, returned as (B, H) for one layer, (L, B, H) otherwise
    zeros = np.zeros((L, B, H))
    logits0, s0 = reference.forward(p, X, None, cell=cell)
    logitsz, sz = reference.forward(p, X, (zeros, zeros) if pair else zeros, cell=cell)
    np.testing.assert_array_equal(logits0, logitsz)
    expect = (B, H) if L == 1 else (L, B, H)
    for a, b in zip(s0 if pair else (s0,), sz if pair else (sz,)):
        assert a.shape == expect
        np.testing.assert_array_equal(a.reshape(L, B, H), b)
    _, g0, _ = reference.loss_and_grad(p, X, Y, None, cell=cell)
    assert g0["h0"].shape == expect
    if L == 1:  # (B, H) is (1, B, H) without the leading axis
        h_bh = tuple(a[0] for a in h_lbh) if pair else h_lbh[0]
        l1, s1 = reference.forward(p, X, h_bh, cell=cell)
        np.testing.assert_array_equal(l1, logits)
        for a, b in zip(s1 if pair else (s1,), s if pair else (s,)):
            np.testing.assert_array_equal(a, b[0])
    # the state carries: two halves of a sequence = the whole
    l_a, s_a = reference.forward(p, X[:, :2], h_lbh, cell=cell)
    l_b, s_b = reference.forward(p, X[:, 2:], s_a, cell=cell)
    np.testing.assert_allclose(np.concatenate([l_a, l_b], axis=1), logits, rtol=1e-12)


def test_rnn_one_layer_keeps_return_states_and_matches_the_0_1_equations(rng):
    _, p, X, Y, h0 = make_problem(rng, 3, 4, 5, 6, 5)
    logits, hT, st = reference.forward(p, X, h0, return_states=True)
    h = h0
    for t in range(4):
        z = p["W_xh"][X[:, t]] + h @ p["W_hh"] + p["b_h"]
        np.testing.assert_allclose(st["Z"][:, t], z, rtol=1e-12)
        h = np.tanh(z)
        np.testing.assert_allclose(st["H"][:, t], h, rtol=1e-12)
    np.testing.assert_allclose(hT, h, rtol=1e-12)
    with pytest.raises(ValueError, match="return_states"):
        reference.forward(fastrnn_init(5, 6, "gru"), X, None, cell="gru",
                          return_states=True)


def fastrnn_init(D, H, cell, L=1):
    import fastrnn
    return fastrnn.init_params(D, H, cell=cell, num_layers=L, dtype="float64", seed=1)


def test_dropout_masks_are_the_params_masks(rng):
    # with W_hh = 0 and identity-like layers the dropped units show in the logits' gradient
    p_drop, seed, B, T, H = 0.5, 99, 3, 4, 5
    _, p, X, Y, _ = make_stack_problem(rng, "rnn", 2, B, T, 4, H, 4)
    loss_a, g_a, _ = reference.loss_and_grad(p, X, Y, cell="rnn", dropout=p_drop, seed=seed)
    loss_b, g_b, _ = reference.loss_and_grad(p, X, Y, cell="rnn", dropout=p_drop, seed=seed)
    assert loss_a == loss_b                      # deterministic for a seed
    loss_c, _, _ = reference.loss_and_grad(p, X, Y, cell="rnn", dropout=p_drop, seed=seed + 1)
    assert loss_c != loss_a
    # the layer-1 input is H0 * mask: reproduce the loss by hand
    Hs0, _, _ = reference.layer_forward("rnn", reference._project(X.T, p["W_xh"], p["b_h"]),
                                        p["W_hh"], None, np.zeros((B, H)), None)
    m = P.dropout_mask(seed, 0, T, 0, B, H, p_drop, np.float64)
    Hs1, _, _ = reference.layer_forward("rnn", Hs0 * m @ p["W_xh_l1"] + p["b_h_l1"],
                                        p["W_hh_l1"], None, np.zeros((B, H)), None)
    loss, _ = reference.softmax_cross_entropy(Hs1 @ p["W_hq"] + p["b_q"], Y.T)
    assert loss == pytest.approx(loss_a, rel=1e-13)
    # row_offset: rows r0.. of a larger batch see that batch's masks
    big = np.concatenate([X, X]), np.concatenate([Y, Y])
    _, _, _ = reference.loss_and_grad(p, *big, cell="rnn", dropout=p_drop, seed=seed)
    loss_hi, _, _ = reference.loss_and_grad(p, X, Y, cell="rnn", dropout=p_drop, seed=seed,
                                            row_offset=B)
    m_hi = P.dropout_mask(seed, 0, T, B, B, H, p_drop, np.float64)
    Hs1, _, _ = reference.layer_forward("rnn", Hs0 * m_hi @ p["W_xh_l1"] + p["b_h_l1"],
                                        p["W_hh_l1"], None, np.zeros((B, H)), None)
    loss, _ = reference.softmax_cross_entropy(Hs1 @ p["W_hq"] + p["b_q"], Y.T)
    assert loss == pytest.approx(loss_hi, rel=1e-13)


def test_dropout_arguments(rng):
    _, p, X, Y, _ = make_stack_problem(rng, "gru", 2, 2, 3, 4, 3, 4)
    with pytest.raises(ValueError, match="seed"):
        reference.loss_and_grad(p, X, Y, cell="gru", dropout=0.5)
    with pytest.raises(ValueError, match="dropout"):
        reference.loss_and_grad(p, X, Y, cell="gru", dropout=1.0, seed=1)
    with pytest.raises(TypeError, match="seed"):
        reference.loss_and_grad(p, X, Y, cell="gru", dropout=0.5, seed=1.5)
    _, p1, X, Y, _ = make_stack_problem(rng, "gru", 1, 2, 3, 4, 3, 4)
    with pytest.warns(UserWarning, match="one layer"):
        a = reference.loss_and_grad(p1, X, Y, cell="gru", dropout=0.5, seed=1)[0]
    assert a == reference.loss_and_grad(p1, X, Y, cell="gru")[0]


def test_cell_must_fit_the_parameters(rng):
    _, p, X, Y, h0 = make_problem(rng, 2, 3, 4, 5, 4)
    with pytest.raises(ValueError, match=r"W_xh.*\(4, 5\).*\(4, 20\)"):
        reference.forward(p, X, h0, cell="lstm")
    with pytest.raises(ValueError, match="nonlinearity"):
        reference.forward(fastrnn_init(4, 5, "gru"), X, None, cell="gru", nonlinearity="relu")
