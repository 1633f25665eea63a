"""Bad input raises a clear ValueError/TypeError naming the argument, before C runs."""
import numpy as np
import pytest

import fastrnn
from conftest import make_problem


@pytest.fixture
def prob(rng):
    p, _, X, Y, h0 = make_problem(rng, 3, 4, 5, 6, 7)
    return p, X, Y, h0


def call(p, X, Y, h0=None, **kw):
    return fastrnn.loss_and_grad(p, X, Y, h0, **kw)


def test_params_not_a_mapping(prob):
    _, X, Y, _ = prob
    with pytest.raises(TypeError, match="params"):
        call([1, 2], X, Y)


def test_params_missing_key(prob):
    p, X, Y, _ = prob
    del p["W_hh"]
    with pytest.raises(ValueError, match="W_hh"):
        call(p, X, Y)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, object])
def test_params_wrong_dtype(prob, dtype):
    p, X, Y, _ = prob
    p["W_hq"] = p["W_hq"].astype(dtype)
    with pytest.raises(TypeError, match="W_hq"):
        call(p, X, Y)


def test_params_mixed_dtypes(prob):
    p, X, Y, _ = prob
    p["b_h"] = p["b_h"].astype(np.float32)
    with pytest.raises(TypeError, match="b_h"):
        call(p, X, Y)


@pytest.mark.parametrize("name,shape", [("W_hh", (6, 5)), ("b_h", (5,)), ("b_q", (6,)),
                                        ("W_xh", (5,)), ("W_hq", (5, 7))])
def test_params_wrong_shape(prob, name, shape):
    p, X, Y, _ = prob
    p[name] = np.zeros(shape)
    with pytest.raises(ValueError, match=name):
        call(p, X, Y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_params_non_finite(prob, bad):
    p, X, Y, _ = prob
    p["W_hh"][1, 2] = bad
    with pytest.raises(ValueError, match="W_hh.*NaN or inf"):
        call(p, X, Y)
    with pytest.raises(ValueError, match="W_hh"):
        fastrnn.forward(p, X)


def test_ids_out_of_range(prob):
    p, X, Y, _ = prob
    X = X.copy()
    X[0, 0] = 5  # D = 5
    with pytest.raises(ValueError, match=r"X.*5.*\[0, 5\)"):
        call(p, X, Y)
    X[0, 0] = -1
    with pytest.raises(ValueError, match="X.*negative"):
        call(p, X, Y)


def test_targets_out_of_range(prob):
    p, X, Y, _ = prob
    Y = Y.copy()
    Y[2, 3] = 7  # V = 7
    with pytest.raises(ValueError, match=r"Y.*7.*\[0, 7\)"):
        call(p, X, Y)
    Y[2, 3] = -3
    with pytest.raises(ValueError, match="Y.*negative"):
        call(p, X, Y)


def test_huge_ids_do_not_wrap_to_valid_int32(prob):
    p, X, Y, _ = prob
    X = X.astype(np.int64)
    X[0, 0] = 2**32 + 1  # would be 1 after a careless cast to int32
    with pytest.raises(ValueError, match="X"):
        call(p, X, Y)


def test_huge_targets_do_not_wrap_to_valid_int32(prob):
    p, X, Y, _ = prob
    Y = Y.astype(np.int64)
    Y[-1, -1] = -(2**32) + 2  # would be 2 after a careless cast to int32
    with pytest.raises(ValueError, match="Y.*negative"):
        call(p, X, Y)


@pytest.mark.parametrize("B", [1, 15, 16, 17, 37])
def test_ids_every_layout_and_dtype_give_the_same_result(rng, B):
    """Token ids take one C pass (range check + transposed int32 copy) when they are
    C-contiguous int32/int64, numpy's path otherwise: same results either way."""
    from fastrnn import _rnn
    T = 5
    p, _, X, Y, h0 = make_problem(rng, B, T, 9, 6, 7)
    expect = call(p, X.astype(np.int16), Y.astype(np.uint8), h0)
    for dt in (np.int64, np.int32):
        for Xv, Yv in ((X.astype(dt), Y.astype(dt)),
                       (np.asfortranarray(X, dt), np.asfortranarray(Y, dt)),
                       (np.repeat(X, 2, axis=1)[:, ::2].astype(dt, copy=False), Y.astype(dt))):
            got = call(p, Xv, Yv, h0)
            assert got[0] == expect[0]
            for k in expect[1]:
                np.testing.assert_array_equal(got[1][k], expect[1][k], err_msg=k)
        out = np.full((T, B), -7, np.int32)
        Xc = np.ascontiguousarray(X, dt)
        assert _rnn.ids_tb(Xc, out) == (X.min(), X.max())
        np.testing.assert_array_equal(out, X.T)
    with pytest.raises(ValueError, match="shape"):
        _rnn.ids_tb(np.ascontiguousarray(X), np.empty((B, T), np.int32)
                    if B != T else np.empty((1, 1), np.int32))


@pytest.mark.parametrize("X", [np.zeros((3, 4)), np.zeros((3, 4), bool),
                               np.array([["a"] * 4] * 3)])
def test_ids_wrong_dtype(prob, X):
    p, _, Y, _ = prob
    with pytest.raises(TypeError, match="X"):
        call(p, X, Y)


def test_dense_wrong_dtype_and_width(prob, rng):
    p, _, Y, _ = prob
    with pytest.raises(TypeError, match="X"):
        call(p, np.zeros((3, 4, 5), int), Y)
    with pytest.raises(ValueError, match="X.*D=5"):
        call(p, rng.standard_normal((3, 4, 6)), Y)
    Xd = rng.standard_normal((3, 4, 5))
    Xd[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="X.*NaN"):
        call(p, Xd, Y)


@pytest.mark.parametrize("shape", [(3,), (3, 4, 5, 1), ()])
def test_X_wrong_rank(prob, shape):
    p, _, Y, _ = prob
    with pytest.raises((ValueError, TypeError), match="X"):
        call(p, np.zeros(shape, int), Y)


def test_X_none(prob):
    p, _, Y, _ = prob
    with pytest.raises(TypeError, match="X"):
        call(p, None, Y)


def test_empty_batch_or_time(prob):
    p, _, _, _ = prob
    for shape in [(0, 4), (3, 0)]:
        X = np.zeros(shape, int)
        with pytest.raises(ValueError, match="at least one"):
            call(p, X, X)
        with pytest.raises(ValueError, match="at least one"):
            fastrnn.forward(p, X)


def test_Y_shape_mismatch(prob):
    p, X, Y, _ = prob
    with pytest.raises(ValueError, match="Y"):
        call(p, X, Y[:, :3])


def test_h0_shape_and_values(prob):
    p, X, Y, h0 = prob
    with pytest.raises(ValueError, match="h0"):
        call(p, X, Y, h0[:2])
    bad = h0.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="h0"):
        call(p, X, Y, bad)


def test_nonlinearity_and_threads(prob):
    p, X, Y, _ = prob
    with pytest.raises(ValueError, match="nonlinearity"):
        call(p, X, Y, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="num_threads"):
        call(p, X, Y, num_threads=0)
    with pytest.raises(TypeError, match="num_threads"):
        call(p, X, Y, num_threads=1.5)


def test_more_threads_than_cores_or_batch_work(prob):
    p, X, Y, _ = prob
    a = call(p, X, Y, num_threads=1)
    b = call(p, X, Y, num_threads=64)
    assert a[0] == pytest.approx(b[0], rel=1e-12)


def test_noncontiguous_and_readonly_inputs_are_accepted(rng):
    p, p64, X, Y, h0 = make_problem(rng, 4, 6, 5, 6, 7, dense=True)
    expect = fastrnn.loss_and_grad(p, X, Y, h0)
    # Fortran-ordered / strided / read-only copies of every argument
    p2 = {k: np.asfortranarray(v) if v.ndim == 2 else v for k, v in p.items()}
    W = np.zeros((12, 12))
    W[::2, ::2] = p["W_hh"]
    p2["W_hh"] = W[::2, ::2]
    for v in p2.values():
        v.flags.writeable = False
    X2 = np.asfortranarray(X)
    Y2 = np.repeat(Y, 2, axis=1)[:, ::2]
    h2 = np.asfortranarray(h0)
    got = fastrnn.loss_and_grad(p2, X2, Y2, h2)
    assert got[0] == expect[0]
    for k in expect[1]:
        np.testing.assert_array_equal(got[1][k], expect[1][k], err_msg=k)


def test_dense_float32_input_cast_to_param_dtype(rng):
    p, _, X, Y, _ = make_problem(rng, 2, 3, 4, 5, 4, dense=True)
    a = fastrnn.loss_and_grad(p, X, Y)
    b = fastrnn.loss_and_grad(p, X.astype(np.float32).astype(np.float64), Y)
    c = fastrnn.loss_and_grad(p, X.astype(np.float32), Y)
    assert c[0] == b[0] and np.isfinite(a[0])


def test_lists_accepted_as_ids(prob):
    p, X, Y, _ = prob
    a = call(p, X.tolist(), Y.tolist())
    b = call(p, X, Y)
    assert a[0] == b[0]


def test_out_buffers_checked(prob):
    p, X, Y, _ = prob
    with pytest.raises(ValueError, match="out.*W_xh"):
        call(p, X, Y, out={k: np.zeros((1,)) for k in p})
    with pytest.raises(ValueError, match="missing"):
        call(p, X, Y, out={})


@pytest.mark.parametrize("args,exc,msg", [
    ((0, 4), ValueError, "input_size"), ((4, 0), ValueError, "hidden_size"),
    ((4, 3, 0), ValueError, "output_size"), ((4.0, 3), TypeError, "input_size"),
    ((True, 3), TypeError, "input_size"),
])
def test_init_params_bad_sizes(args, exc, msg):
    with pytest.raises(exc, match=msg):
        fastrnn.init_params(*args)


def test_init_params_dtype_seed_and_scheme():
    with pytest.raises(TypeError, match="dtype"):
        fastrnn.init_params(4, 3, dtype="int32")
    with pytest.raises(ValueError, match="init"):
        fastrnn.init_params(4, 3, init="xavier")
    a = fastrnn.init_params(4, 3, 6, seed=7)
    b = fastrnn.init_params(4, 3, 6, seed=7)
    assert {k: v.shape for k, v in a.items()} == {
        "W_xh": (4, 3), "W_hh": (3, 3), "b_h": (3,), "W_hq": (3, 6), "b_q": (6,)}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32
    assert np.all(a["b_h"] == 0) and 0.001 < a["W_hh"].std() < 0.1  # d2l: N(0, 0.01^2)
    u = fastrnn.init_params(4, 100, seed=0, init="uniform")
    assert np.abs(u["W_hh"]).max() <= 0.1 and np.abs(u["W_hh"]).max() > 0.09
