"""The functional API for every cell and depth against the float64 NumPy reference.

Each case runs on both layer back ends: the compiled loops (fastrnn._layers; skipped
when they did not build) and the NumPy per-layer loop the driver falls back to.
cell="rnn" with one layer takes the 0.1 kernels (fastrnn._rnn) on either back end.
Tolerances: float64 rtol 1e-8 (atol 1e-11); float32 against the float64 reference on
the same parameter values rtol 2e-3, atol 2e-5 (gradients are means over B*T, about
1e-2); across thread counts results are bitwise equal (except on the 0.1 Elman
kernels, cell="rnn" with one layer: float64 within 1e-12, float32 within 1e-5 relative
or 1e-7 absolute; see below).
"""
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import _core, reference
from fastrnn import params as P
from cellutil import make_stack_problem

BACKENDS = ["compiled", "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "compiled":
        if _core._layers is None:
            pytest.skip(f"fastrnn._layers not built ({_core._LAYERS_ERROR})")
    else:
        monkeypatch.setattr(_core, "_layers", None)
    return request.param


def tol(dtype):
    return (dict(rtol=1e-8, atol=1e-11) if dtype == np.float64
            else dict(rtol=2e-3, atol=2e-5))


def states(s, cell):
    return list(s) if cell == "lstm" else [s]


# (B, T, D, H, V): ones, odd sizes, B not divisible by 2 or 3
SHAPES = [(1, 1, 1, 1, 1), (5, 3, 4, 3, 2), (7, 4, 3, 5, 6)]
CASES = [(cell, L, drop) for cell in ("rnn", "gru", "lstm") for L in (1, 2, 3)
         for drop in ((0.0, 0.3) if L > 1 else (0.0,))]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell, L, dropout", CASES,
                         ids=[f"{c}-L{L}-p{p}" for c, L, p in CASES])
def test_matches_reference_for_any_thread_count(backend, cell, L, dropout, dtype, dense,
                                                shape):
    B, T, D, H, V = shape
    rng = np.random.default_rng(zlib.crc32(repr((cell, L, dropout, shape)).encode()))
    form = "LBH" if L > 1 or dense else "BH"
    p, p64, X, Y, h0 = make_stack_problem(rng, cell, L, B, T, D, H, V, dtype=dtype,
                                          dense=dense, h0=form)
    Xc = X.astype(dtype) if dense else X
    kw = dict(cell=cell, dropout=dropout, seed=31337 if dropout else None, row_offset=2)
    ref_logits, ref_state = reference.forward(p64, X, h0, cell=cell)
    ref_loss, ref_g, ref_state2 = reference.loss_and_grad(p64, X, Y, h0, **kw)
    first = None
    for nt in (1, 2, 3):
        logits, state = fastrnn.forward(p, Xc, h0, cell=cell, num_threads=nt)
        loss, g, state2 = fastrnn.loss_and_grad(p, Xc, Y, h0, num_threads=nt, **kw)
        assert logits.dtype == dtype and logits.shape == (B, T, V)
        assert sorted(g) == sorted(P.param_names(cell, L) + ["h0"] + (["c0"] if
                                                                    cell == "lstm" else []))
        got = {"logits": logits, "loss": np.array(loss), **g,
               **{f"state{i}": s for i, s in enumerate(states(state, cell))},
               **{f"state2_{i}": s for i, s in enumerate(states(state2, cell))}}
        if first is None:
            first = got
            exp = {"logits": ref_logits, "loss": np.array(ref_loss), **ref_g,
                   **{f"state{i}": s for i, s in enumerate(states(ref_state, cell))},
                   **{f"state2_{i}": s for i, s in enumerate(states(ref_state2, cell))}}
            assert sorted(got) == sorted(exp)
            for k in exp:
                assert got[k].shape == exp[k].shape, k
                if k != "loss":
                    assert got[k].dtype == dtype, k
                np.testing.assert_allclose(got[k], exp[k], err_msg=k, **tol(dtype))
        else:   # bitwise the same for any thread count
            for k in first:
                if cell == "rnn" and L == 1:
                    # the 0.1 kernels are not bitwise across thread counts on these
                    # small odd batches: the loss is a sum of per-thread parts, dense
                    # input is projected per thread's rows, float32 dW_xh sums per part
                    close = (dict(rtol=1e-12, atol=1e-15) if dtype == np.float64
                             else dict(rtol=1e-5, atol=1e-7))
                    np.testing.assert_allclose(got[k], first[k], err_msg=f"{k} nt={nt}",
                                               **close)
                    continue
                np.testing.assert_array_equal(got[k], first[k], err_msg=f"{k} nt={nt}")


@pytest.mark.parametrize("L", [1, 2])
def test_relu_stack_matches_reference(backend, L, rng):
    p, p64, X, Y, h0 = make_stack_problem(rng, "rnn", L, 4, 5, 3, 6, 4, h0="LBH")
    kw = dict(nonlinearity="relu", dropout=0.2 if L > 1 else 0.0, seed=4)
    loss, g, s = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2, **kw)
    rl, rg, rs = reference.loss_and_grad(p64, X, Y, h0, **kw)
    assert loss == pytest.approx(rl, rel=1e-10)
    for k in rg:
        np.testing.assert_allclose(g[k], rg[k], rtol=1e-8, atol=1e-11, err_msg=k)
    np.testing.assert_allclose(s, rs, rtol=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_rows_split_across_callers_equal_one_batch(backend, cell, rng):
    # data parallelism: rows r0.. with row_offset=r0 draw the whole batch's masks, so the
    # row-weighted sum of the parts' gradients is the whole batch's gradient
    B, T = 6, 4
    p, _, X, Y, _ = make_stack_problem(rng, cell, 3, B, T, 5, 4, 5)
    kw = dict(cell=cell, dropout=0.5, seed=2**63 + 11)
    loss, g, _ = fastrnn.loss_and_grad(p, X, Y, **kw)
    total_loss, total = 0.0, {k: np.zeros_like(v) for k, v in p.items()}
    for r0, r1 in [(0, 1), (1, 4), (4, 6)]:
        l_, g_, _ = fastrnn.loss_and_grad(p, X[r0:r1], Y[r0:r1], row_offset=r0, **kw)
        w = (r1 - r0) / B
        total_loss += w * l_
        for k in total:
            total[k] += w * g_[k]
    assert total_loss == pytest.approx(loss, rel=1e-12)
    for k in total:
        np.testing.assert_allclose(total[k], g[k], rtol=1e-9, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_state_forms(backend, cell, L, rng):
    B, T, D, H, V = 3, 4, 5, 2, 5
    p, _, X, Y, h_lbh = make_stack_problem(rng, cell, L, B, T, D, H, V, h0="LBH")
    pair = cell == "lstm"
    expect_none = (B, H) if L == 1 else (L, B, H)
    # None -> (B, H) for one layer, (L, B, H) otherwise
    logits0, s0 = fastrnn.forward(p, X, cell=cell)
    _, g0, s0b = fastrnn.loss_and_grad(p, X, Y, cell=cell)
    for a in states(s0, cell) + states(s0b, cell) + [g0["h0"]] + ([g0["c0"]] if pair else []):
        assert a.shape == expect_none
    # (L, B, H) in, (L, B, H) out, any L
    logits, s = fastrnn.forward(p, X, h_lbh, cell=cell)
    _, g, s2 = fastrnn.loss_and_grad(p, X, Y, h_lbh, cell=cell)
    assert isinstance(s, tuple) == pair and isinstance(s2, tuple) == pair
    for a in states(s, cell) + states(s2, cell) + [g["h0"]] + ([g["c0"]] if pair else []):
        assert a.shape == (L, B, H)
    # explicit zeros equal None
    z = np.zeros((L, B, H))
    lz, sz = fastrnn.forward(p, X, (z, z) if pair else z, cell=cell)
    np.testing.assert_array_equal(lz, logits0)
    for a, b in zip(states(sz, cell), states(s0, cell)):
        np.testing.assert_array_equal(a.reshape(b.shape), b)
    if L == 1:   # (B, H) in, (B, H) out: the same numbers as (1, B, H)
        h_bh = tuple(a[0] for a in h_lbh) if pair else h_lbh[0]
        l1, s1 = fastrnn.forward(p, X, h_bh, cell=cell)
        _, g1, _ = fastrnn.loss_and_grad(p, X, Y, h_bh, cell=cell)
        np.testing.assert_array_equal(l1, logits)
        for a, b in zip(states(s1, cell), states(s, cell)):
            assert a.shape == (B, H)
            np.testing.assert_array_equal(a, b[0])
        np.testing.assert_array_equal(g1["h0"], g["h0"][0])
    # the returned state carries: two segments = one sequence
    la, sa = fastrnn.forward(p, X[:, :2], h_lbh, cell=cell)
    lb, sb = fastrnn.forward(p, X[:, 2:], sa, cell=cell)
    np.testing.assert_allclose(np.concatenate([la, lb], axis=1), logits, rtol=1e-12)
    for a, b in zip(states(sb, cell), states(s, cell)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_out_buffers_for_the_stack(backend, cell, rng):
    p, _, X, Y, h0 = make_stack_problem(rng, cell, 2, 3, 4, 5, 3, 5, h0="LBH")
    lay = P.layout(cell, 5, 3, 5, 2)
    flat = np.zeros(P.flat_size(lay))
    out = P.views(flat, lay)
    loss, g, _ = fastrnn.loss_and_grad(p, X, Y, h0, cell=cell, out=out)
    ref_loss, ref_g, _ = fastrnn.loss_and_grad(p, X, Y, h0, cell=cell)
    assert loss == ref_loss
    for k in out:
        assert g[k] is out[k]
        np.testing.assert_array_equal(g[k], ref_g[k], err_msg=k)
    np.testing.assert_array_equal(g["h0"], ref_g["h0"])
    with pytest.raises(ValueError, match="out is missing 'b_h_l1'"):
        fastrnn.loss_and_grad(p, X, Y, h0, cell=cell,
                              out={k: v for k, v in out.items() if k != "b_h_l1"})


def test_rnn_one_layer_is_the_0_1_path(rng):
    # cell="rnn", one layer: the same results as a 0.1-style call, (1, B, H) states too
    from conftest import make_problem
    p, _, X, Y, h0 = make_problem(rng, 4, 5, 6, 7, 6, dtype=np.float32)
    l_a, g_a, s_a = fastrnn.loss_and_grad(p, X, Y, h0)
    l_b, g_b, s_b = fastrnn.loss_and_grad(p, X, Y, h0[None], cell="rnn", dropout=0.0,
                                          seed=5, row_offset=9)
    assert l_a == l_b
    for k in g_a:
        np.testing.assert_array_equal(g_b[k].reshape(g_a[k].shape), g_a[k], err_msg=k)
    assert g_b["h0"].shape == s_b.shape == (1, 4, 7)
    np.testing.assert_array_equal(s_b[0], s_a)
    logits, h, st = fastrnn.forward(p, X, h0, return_states=True)
    assert set(st) == {"Z", "H"}
    with pytest.warns(UserWarning, match="one layer"):
        l_c, _, _ = fastrnn.loss_and_grad(p, X, Y, h0, dropout=0.5, seed=1)
    assert l_c == l_a


def test_lstm_forget_bias_and_init_schemes():
    p = fastrnn.init_params(5, 4, cell="lstm", num_layers=2, seed=3)
    for s in ("", "_l1"):
        np.testing.assert_array_equal(p["b_h" + s][4:8], 1.0)
        assert np.abs(p["b_h" + s][:4]).max() <= 0.5       # uniform +-1/sqrt(H)
    q = fastrnn.init_params(5, 4, cell="lstm", num_layers=2, seed=3, forget_bias=0.0)
    for k in p:   # the same draws; only the forget blocks differ
        if not k.startswith("b_h"):
            np.testing.assert_array_equal(p[k], q[k])
    assert np.abs(q["b_h"][4:8]).max() <= 0.5
    d = fastrnn.init_params(5, 4, cell="gru", seed=3, init="d2l")
    assert not d["b_h"].any() and not d["b_hn"].any() and d["W_hh"].std() < 0.05
    u = fastrnn.init_params(5, 4, cell="rnn", num_layers=2, seed=3)   # L > 1: uniform
    assert u["W_hh"].std() > 0.1
    assert list(u) == P.param_names("rnn", 2)
    with pytest.raises(ValueError, match="cell"):
        fastrnn.init_params(5, 4, cell="elman")
    with pytest.raises(ValueError, match="num_layers"):
        fastrnn.init_params(5, 4, num_layers=0)
    with pytest.raises(TypeError, match="forget_bias"):
        fastrnn.init_params(5, 4, cell="lstm", forget_bias="1")


# ---------------------------------------------------------------------------
# bad input: a clear error naming the argument, before any compiled code runs

class _NoCompiledCode:
    def __getattr__(self, name):
        raise AssertionError(f"compiled code ran (fastrnn._layers.{name}) on bad input")


@pytest.fixture
def no_c(monkeypatch):
    monkeypatch.setattr(_core, "_layers", _NoCompiledCode())


@pytest.fixture
def prob(rng):
    p, _, X, Y, _ = make_stack_problem(rng, "lstm", 2, 3, 4, 5, 3, 5)
    return p, X, Y


@pytest.mark.parametrize("kw, exc, match", [
    (dict(cell="elman"), ValueError, "cell must be one of"),
    (dict(cell=None), ValueError, "cell"),
    (dict(cell="gru"), ValueError, r"W_xh.*\(5, 12\).*\(5, 9\)"),
    (dict(cell="rnn"), ValueError, r"W_xh.*\(5, 12\).*\(5, 3\)"),
    (dict(nonlinearity="relu"), ValueError, "nonlinearity applies to cell='rnn'"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    (dict(dropout=1.0, seed=1), ValueError, r"dropout must be in \[0, 1\)"),
    (dict(dropout=-0.1, seed=1), ValueError, "dropout"),
    (dict(dropout=float("nan"), seed=1), ValueError, "dropout"),
    (dict(dropout="0.1", seed=1), TypeError, "dropout"),
    (dict(dropout=0.5), ValueError, "seed"),
    (dict(dropout=0.5, seed=1.5), TypeError, "seed must be an int"),
    (dict(seed="3"), TypeError, "seed must be an int"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(row_offset=-1), ValueError, "row_offset"),
    (dict(row_offset=1.0), TypeError, "row_offset"),
    (dict(num_threads=0), ValueError, "num_threads"),
])
def test_bad_arguments(no_c, prob, kw, exc, match):
    p, X, Y = prob
    kw = {"cell": "lstm", **kw}
    with pytest.raises(exc, match=match):
        fastrnn.loss_and_grad(p, X, Y, **kw)
    if not {"dropout", "seed", "row_offset"} & set(kw):
        with pytest.raises(exc, match=match):
            fastrnn.forward(p, X, **kw)


@pytest.mark.parametrize("h0, exc, match", [
    ("array", TypeError, r"pair \(h, c\)"),
    ("triple", TypeError, "pair"),
    ("none-inside", TypeError, "pair"),
    ("bh", ValueError, r"h0\[0\] \(h\) has shape \(3, 3\), expected \(2, 3, 3\)"),
    ("mixed", ValueError, r"h0\[1\] \(c\) has shape \(3, 3\)"),
    ("nan", ValueError, "NaN"),
    ("wrong-B", ValueError, r"h0\[0\].*\(2, 4, 3\)"),
])
def test_bad_lstm_states(no_c, prob, h0, exc, match):
    p, X, Y = prob
    z = np.zeros((2, 3, 3))
    h0 = {"array": z, "triple": (z, z, z), "none-inside": (z, None), "bh": (z[0], z[0]),
          "mixed": (z, z[0]), "nan": (z, z * np.nan), "wrong-B": (np.zeros((2, 4, 3)), z)}[h0]
    with pytest.raises(exc, match=match):
        fastrnn.loss_and_grad(p, X, Y, h0, cell="lstm")
    with pytest.raises(exc, match=match):
        fastrnn.forward(p, X, h0, cell="lstm")


def test_bad_states_of_other_cells(no_c, rng):
    p, _, X, Y, _ = make_stack_problem(rng, "gru", 2, 3, 4, 5, 3, 5)
    z = np.zeros((2, 3, 3))
    with pytest.raises(TypeError, match="pair.*LSTM"):
        fastrnn.forward(p, X, (z, z), cell="gru")
    with pytest.raises(ValueError, match=r"h0 has shape \(3, 3\), expected \(2, 3, 3\)"):
        fastrnn.forward(p, X, z[0], cell="gru")     # (B, H) only with one layer
    with pytest.raises(ValueError, match=r"h0 has shape \(1, 2, 3, 3\)"):
        fastrnn.forward(p, X, z[None], cell="gru")
    with pytest.raises(ValueError, match="return_states"):
        fastrnn.forward(p, X, cell="gru", return_states=True)


def test_mismatched_layers_and_names(no_c, rng):
    p, _, X, Y, _ = make_stack_problem(rng, "gru", 3, 3, 4, 5, 3, 5)
    q = dict(p, W_xh_l2=np.zeros((4, 9)))
    with pytest.raises(ValueError, match=r"W_xh_l2.*\(4, 9\).*\(3, 9\)"):
        fastrnn.loss_and_grad(q, X, Y, cell="gru")
    q = dict(p, W_hh_l1=np.zeros((3, 12)))
    with pytest.raises(ValueError, match=r"W_hh_l1.*\(3, 12\).*\(3, 9\)"):
        fastrnn.forward(q, X, cell="gru")
    q = {k: v for k, v in p.items() if k != "b_hn_l1"}
    with pytest.raises(ValueError, match="missing 'b_hn_l1'"):
        fastrnn.forward(q, X, cell="gru")
    q = dict(p, b_h_l1=p["b_h_l1"].astype(np.float32))
    with pytest.raises(TypeError, match="b_h_l1"):
        fastrnn.forward(q, X, cell="gru")
    q = dict(p, W_hh_l2=p["W_hh_l2"].copy())
    q["W_hh_l2"][0, 0] = np.inf
    with pytest.raises(ValueError, match="W_hh_l2.*NaN or inf"):
        fastrnn.forward(q, X, cell="gru")
    with pytest.raises(ValueError, match="only cell='gru'"):
        fastrnn.forward(p, X, cell="lstm")
    with pytest.raises(ValueError, match=r"X contains id \d+, out of range \[0, 5\)"):
        fastrnn.forward(p, X + 5, cell="gru")
    with pytest.raises(ValueError, match="Y"):
        fastrnn.loss_and_grad(p, X, Y[:, :2], cell="gru")


def test_dropout_with_one_layer_warns_and_does_nothing(backend, rng):
    p, _, X, Y, _ = make_stack_problem(rng, "gru", 1, 3, 4, 5, 3, 5)
    with pytest.warns(UserWarning, match="does nothing with one layer"):
        a = fastrnn.loss_and_grad(p, X, Y, cell="gru", dropout=0.5, seed=3)
    b = fastrnn.loss_and_grad(p, X, Y, cell="gru")
    assert a[0] == b[0]


# ---------------------------------------------------------------------------
# PyTorch's nn.GRU / nn.LSTM with mapped weights (optional)

def _torch_weights(p, cell, L, H):
    """fastrnn -> torch state dict: W_xh (D, G*H) is weight_ih^T; b_h holds the
    input biases plus the recurrent ones of every gate but GRU's n (b_hn)."""
    sd = {}
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        sd[f"weight_ih_l{k}"] = p["W_xh" + s].T
        sd[f"weight_hh_l{k}"] = p["W_hh" + s].T
        sd[f"bias_ih_l{k}"] = p["b_h" + s].copy()
        hh = np.zeros_like(p["b_h" + s])
        if cell == "gru":
            hh[2 * H:] = p["b_hn" + s]
        sd[f"bias_hh_l{k}"] = hh
    return sd


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2])
def test_matches_torch(cell, L, rng):
    torch = pytest.importorskip("torch")
    B, T, D, H, V = 3, 5, 4, 6, 4
    p, _, X, Y, h0 = make_stack_problem(rng, cell, L, B, T, D, H, V, dense=True, h0="LBH")
    mod = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(D, H, num_layers=L,
                                                              batch_first=True).double()
    mod.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in _torch_weights(p, cell, L, H).items()})
    th0 = (tuple(torch.from_numpy(a) for a in h0) if cell == "lstm"
           else torch.from_numpy(h0))
    hs, state = mod(torch.from_numpy(X), th0)
    logits = hs.detach().numpy() @ p["W_hq"] + p["b_q"]
    ours, our_state = fastrnn.forward(p, X, h0, cell=cell)
    np.testing.assert_allclose(ours, logits, rtol=1e-10, atol=1e-12)
    for a, b in zip(states(our_state, cell), states(state, cell)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("module", ["fastrnn.params", "fastrnn.reference", "fastrnn._core"])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
