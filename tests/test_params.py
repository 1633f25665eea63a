"""The parameter table (fastrnn.params): names, layout, views, infer_config, dropout masks."""
import math

import numpy as np
import pytest

from fastrnn import params as P


# ---------------------------------------------------------------------------
# names and layout

def test_rnn_one_layer_is_the_0_1_order():
    assert P.param_names("rnn") == ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]
    lay = P.layout("rnn", 7, 3, 5)
    assert [(n, s) for n, s, _ in lay] == [("W_xh", (7, 3)), ("W_hh", (3, 3)), ("b_h", (3,)),
                                          ("W_hq", (3, 5)), ("b_q", (5,))]
    assert [o for _, _, o in lay] == [0, 21, 30, 33, 48]
    assert P.flat_size(lay) == 53


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_layout_shapes_and_offsets(cell, L):
    D, H, V = 5, 4, 6
    G = P.CELLS[cell]
    assert len(P.GATES[cell]) == G
    lay = P.layout(cell, D, H, V, L)
    names = [n for n, _, _ in lay]
    assert names == P.param_names(cell, L)
    expected = []
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        expected += [("W_xh" + s, (D if k == 0 else H, G * H)), ("W_hh" + s, (H, G * H)),
                     ("b_h" + s, (G * H,))]
        if cell == "gru":
            expected.append(("b_hn" + s, (H,)))
    expected += [("W_hq", (H, V)), ("b_q", (V,))]
    assert [(n, s) for n, s, _ in lay] == expected
    off = 0
    for _, shape, o in lay:                       # packed, in order, no padding
        assert o == off
        off += math.prod(shape)
    assert P.flat_size(lay) == off


def test_views_share_the_flat_buffer():
    lay = P.layout("gru", 3, 2, 4, 2)
    flat = np.arange(P.flat_size(lay) + 3, dtype=np.float64)   # trailing slack is unused
    v = P.views(flat, lay)
    assert list(v) == P.param_names("gru", 2)
    for name, shape, off in lay:
        assert v[name].shape == shape
        assert np.shares_memory(v[name], flat)
        assert v[name].ravel()[0] == off
    v["b_hn_l1"][:] = -1
    assert (flat[dict((n, o) for n, _, o in lay)["b_hn_l1"]:][:2] == -1).all()
    with pytest.raises(ValueError, match="needs"):
        P.views(flat[:5], lay)
    with pytest.raises(ValueError, match="1-D"):
        P.views(flat.reshape(1, -1), lay)


@pytest.mark.parametrize("bad", [("cell", "lstmm"), ("cell", None), ("L", 0), ("L", 1.0),
                                 ("H", 0), ("H", True)])
def test_layout_rejects_bad_arguments(bad):
    kw = {"cell": "rnn", "D": 3, "H": 2, "V": 3, "L": 1}
    kw[bad[0]] = bad[1]
    with pytest.raises((ValueError, TypeError),
                       match={"cell": "cell", "L": "num_layers", "H": "H"}[bad[0]]):
        P.layout(kw["cell"], kw["D"], kw["H"], kw["V"], kw["L"])


# ---------------------------------------------------------------------------
# infer_config

def _zeros(cell, D, H, V, L):
    return {n: np.zeros(s) for n, s, _ in P.layout(cell, D, H, V, L)}


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_infer_config_reads_sizes_and_layers(cell, L):
    p = _zeros(cell, 5, 3, 7, L)
    p["h0"] = np.zeros((2, 3))       # unrelated keys are ignored
    assert P.infer_config(p, cell) == (5, 3, 7, L)


def test_infer_config_names_the_parameter_and_both_shapes():
    p = _zeros("rnn", 5, 3, 5, 1)
    with pytest.raises(ValueError, match=r"params\['W_xh'\] has shape \(5, 3\), "
                                         r"expected \(5, 12\).*lstm"):
        P.infer_config(p, "lstm")
    p = _zeros("lstm", 5, 3, 5, 1)
    with pytest.raises(ValueError, match=r"params\['W_xh'\] has shape \(5, 12\), "
                                         r"expected \(5, 3\)"):
        P.infer_config(p, "rnn")
    p = _zeros("lstm", 5, 3, 5, 2)
    p["W_xh_l1"] = np.zeros((5, 12))           # layer 1 must read H = 3 inputs
    with pytest.raises(ValueError, match=r"W_xh_l1.*\(5, 12\).*\(3, 12\)"):
        P.infer_config(p, "lstm")
    p = _zeros("gru", 5, 3, 5, 1)
    p["b_hn"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"b_hn.*\(4,\).*\(3,\)"):
        P.infer_config(p, "gru")
    p = _zeros("rnn", 5, 3, 5, 1)
    p["W_hq"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"W_hq.*\(4, 5\).*\(3, 5\)"):
        P.infer_config(p, "rnn")
    p["W_hq"] = np.zeros(15)
    with pytest.raises(ValueError, match=r"W_hq.*2-D"):
        P.infer_config(p, "rnn")


def test_infer_config_rejects_names_that_do_not_fit():
    p = _zeros("gru", 5, 3, 5, 1)
    with pytest.raises(ValueError, match="b_hn.*only cell='gru'"):
        P.infer_config(p, "lstm")
    p = _zeros("rnn", 5, 3, 5, 2)
    del p["W_hh_l1"]
    with pytest.raises(ValueError, match="missing 'W_hh_l1'"):
        P.infer_config(p, "rnn")
    p = _zeros("rnn", 5, 3, 5, 1)
    p["W_xh_l2"] = np.zeros((3, 3))           # a gap: layer 1 is missing
    with pytest.raises(ValueError, match="missing 'W_xh_l1'"):
        P.infer_config(p, "rnn")
    p = _zeros("rnn", 5, 3, 5, 1)
    p["W_xh_l0"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="no suffix"):
        P.infer_config(p, "rnn")
    with pytest.raises(ValueError, match="cell"):
        P.infer_config(_zeros("rnn", 5, 3, 5, 1), "elman")
    with pytest.raises(TypeError, match="mapping"):
        P.infer_config([1, 2], "rnn")


# ---------------------------------------------------------------------------
# dropout masks

def _mask_value(seed, k, t, r, j, p):
    """The SPEC's definition, one value at a time, in Python ints."""
    M = 2**64

    def mix(z):
        z %= M
        z ^= z >> 30
        z = z * 0xBF58476D1CE4E5B9 % M
        z ^= z >> 27
        z = z * 0x94D049BB133111EB % M
        return z ^ (z >> 31)

    G = 0x9E3779B97F4A7C15
    h = mix(seed + G * (k + 1))
    h = mix(h + G * (t + 1))
    h = mix(h + G * (r + 1))
    h = mix(h + G * (j + 1))
    keep = (h >> 40) >= math.ceil(p * 2**24)
    return keep / (1 - p)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**64 - 1])
def test_dropout_mask_matches_the_definition(seed):
    p, k, T, r0, B, H = 0.3, 2, 3, 5, 4, 6
    m = P.dropout_mask(seed, k, T, r0, B, H, p, "float64")
    assert m.shape == (T, B, H) and m.dtype == np.float64
    for t in range(T):
        for b in range(B):
            for j in range(H):
                assert m[t, b, j] == _mask_value(seed, k, t, r0 + b, j, p), (t, b, j)


def test_dropout_mask_golden_values():
    # pinned so a compiled implementation can check itself against these numbers
    m = P.dropout_mask(2024, 1, 2, 3, 2, 8, 0.5, "float64")
    keep = (m > 0).astype(int).reshape(2, 16)
    expected = np.array([[int(_mask_value(2024, 1, t, 3 + b, j, 0.5) > 0)
                          for b in range(2) for j in range(8)] for t in range(2)])
    np.testing.assert_array_equal(keep, expected)


def test_dropout_mask_is_a_pure_function_of_seed_layer_step_row_unit():
    seed, p = 987654321, 0.25
    whole = P.dropout_mask(seed, 1, 6, 0, 10, 7, p, "float32")
    for r0, r1 in [(0, 3), (3, 4), (4, 10), (9, 10)]:     # data-parallel shards
        part = P.dropout_mask(seed, 1, 6, r0, r1 - r0, 7, p, "float32")
        np.testing.assert_array_equal(part, whole[:, r0:r1])
    np.testing.assert_array_equal(P.dropout_mask(seed, 1, 4, 0, 10, 7, p, "float32"),
                                  whole[:4])               # fewer steps: a prefix
    np.testing.assert_array_equal(P.dropout_mask(seed, 1, 6, 0, 10, 3, p, "float32"),
                                  whole[:, :, :3])         # fewer units: a prefix
    np.testing.assert_array_equal(P.dropout_mask(seed, 1, 6, 0, 10, 7, p, "float64") > 0,
                                  whole > 0)               # same draws in either dtype
    # and it changes with the seed and the layer
    assert not np.array_equal(P.dropout_mask(seed + 1, 1, 6, 0, 10, 7, p, "float32"), whole)
    assert not np.array_equal(P.dropout_mask(seed, 0, 6, 0, 10, 7, p, "float32"), whole)
    # different steps and rows get different masks
    assert not np.array_equal(whole[0], whole[1])
    assert not np.array_equal(whole[:, 0], whole[:, 1])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_values_and_keep_rate(p, dtype):
    m = P.dropout_mask(42, 0, 20, 0, 50, 100, p, dtype)
    assert m.dtype == dtype
    scale = dtype(1.0 / (1.0 - p))
    assert set(np.unique(m).tolist()) <= {0.0, float(scale)}
    keep = (m != 0).mean()
    n = m.size
    assert abs(keep - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)   # 5 sigma
    assert abs(m.astype(np.float64).mean() - 1.0) < 0.05       # inverted: mean ~ 1


def test_dropout_mask_p_zero_keeps_everything_and_empty_shapes_work():
    np.testing.assert_array_equal(P.dropout_mask(3, 0, 2, 0, 3, 4, 0.0), np.ones((2, 3, 4)))
    assert P.dropout_mask(3, 0, 0, 0, 3, 4, 0.5).shape == (0, 3, 4)
    assert P.dropout_mask(3, 0, 2, 0, 0, 4, 0.5).shape == (2, 0, 4)
    tiny = P.dropout_mask(3, 0, 2, 0, 3, 4, 1e-12, "float64")  # threshold 1 of 2**24
    assert (tiny > 0).all()


@pytest.mark.parametrize("kw, err, match", [
    ({"seed": -1}, ValueError, "seed"), ({"seed": 2**64}, ValueError, "seed"),
    ({"seed": 1.0}, TypeError, "seed"), ({"seed": True}, TypeError, "seed"),
    ({"p": 1.0}, ValueError, "p must"), ({"p": -0.1}, ValueError, "p must"),
    ({"p": "0.1"}, TypeError, "p must"), ({"layer": -1}, ValueError, "layer"),
    ({"row_offset": -2}, ValueError, "row_offset"), ({"dtype": "int32"}, TypeError, "dtype"),
])
def test_dropout_mask_rejects_bad_arguments(kw, err, match):
    args = {"seed": 1, "layer": 0, "T": 2, "row_offset": 0, "B": 2, "H": 2, "p": 0.5,
            "dtype": "float32"}
    args.update(kw)
    with pytest.raises(err, match=match):
        P.dropout_mask(**args)
