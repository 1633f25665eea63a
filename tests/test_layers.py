"""fastrnn._layers: the compiled time loop of one layer, for every cell.

An independent NumPy oracle of one layer (SPEC.md's equations) is written here:
its forward step by step, its backward by the explicit chain rule, the backward
checked against central differences in float64. The kernels are compared with it
over cell x nonlinearity x dtype x threads {1, 2, 3} x odd shapes (1 included),
and must give bitwise the same results for every thread count.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

L = pytest.importorskip("fastrnn._layers")

CELLS = {"rnn": L.CELL_RNN, "gru": L.CELL_GRU, "lstm": L.CELL_LSTM}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NONLIN = {"tanh": L.NONLIN_TANH, "relu": L.NONLIN_RELU}
CONFIGS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
# (B, T, H); B = 1 with H = 130, 200 splits each step's units at 64, 128
SHAPES = [(1, 1, 1), (3, 5, 7), (5, 2, 1), (1, 6, 9), (7, 4, 33), (1, 5, 130), (1, 3, 200)]


@pytest.fixture(autouse=True)
def split_every_one_sequence():
    """One sequence (B = 1) with several threads splits each step's units across two
    threads from a work threshold; tests split every size."""
    old = L.set_split_min_work(0)
    yield
    L.set_split_min_work(old)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------
# the NumPy oracle of one layer

def oracle_forward(cell, nonlin, XW, W_hh, b_hn, h0, c0):
    """Hs, Cs (LSTM) and the per-step gate values of one layer, step by step."""
    T, B, GH = XW.shape
    H = W_hh.shape[0]
    Hs = np.zeros((T, B, H))
    Cs = np.zeros((T, B, H))
    gates = []
    h, c = h0, c0
    for t in range(T):
        if cell == "rnn":
            a = XW[t] + h @ W_hh
            h = np.tanh(a) if nonlin == "tanh" else np.maximum(a, 0)
            gates.append(None)
        elif cell == "gru":
            rec = h @ W_hh
            r = sigmoid(XW[t, :, :H] + rec[:, :H])
            z = sigmoid(XW[t, :, H:2 * H] + rec[:, H:2 * H])
            hn = rec[:, 2 * H:] + b_hn
            n = np.tanh(XW[t, :, 2 * H:] + r * hn)
            gates.append((r, z, n, hn, h))
            h = (1 - z) * n + z * h
        else:
            a = XW[t] + h @ W_hh
            i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
            g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
            gates.append((i, f, g, o, c))
            c = f * c + i * g
            h = o * np.tanh(c)
            Cs[t] = c
        Hs[t] = h
    return Hs, (Cs if cell == "lstm" else None), gates


def oracle_backward(cell, nonlin, dHs, Hs, Cs, gates, h0, c0, W_hh):
    """dA (= dL/dXW), dAn_rec (GRU), dh0, dc0 (LSTM) by the chain rule, step by step."""
    T, B, H = dHs.shape
    G = GATES[cell]
    dA = np.zeros((T, B, G * H))
    dAn = np.zeros((T, B, H))
    dh_next = np.zeros((B, H))
    dc_next = np.zeros((B, H))
    for t in reversed(range(T)):
        dh = dHs[t] + dh_next                       # dL/dh_t, all of it
        if cell == "rnn":
            h = Hs[t]
            da = dh * (1 - h * h) if nonlin == "tanh" else dh * (h > 0)
            dA[t] = da
            dh_next = da @ W_hh.T
        elif cell == "gru":
            r, z, n, hn, hp = gates[t]
            dn = dh * (1 - z)                       # h' = (1 - z) n + z h
            dz = dh * (hp - n)
            dxn = dn * (1 - n * n)                  # n = tanh(xn + r hn)
            dhn = dxn * r
            dr = dxn * hn
            dar, daz = dr * r * (1 - r), dz * z * (1 - z)
            dA[t] = np.concatenate([dar, daz, dxn], axis=1)
            dAn[t] = dhn
            dh_next = dh * z + np.concatenate([dar, daz, dhn], axis=1) @ W_hh.T
        else:
            i, f, g, o, cp = gates[t]
            tc = np.tanh(Cs[t])                     # h' = o tanh(c')
            do = dh * tc
            dc = dc_next + dh * o * (1 - tc * tc)   # c' = f c + i g
            di, df, dg = dc * g, dc * cp, dc * i
            dA[t] = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g),
                                    do * o * (1 - o)], axis=1)
            dc_next = dc * f
            dh_next = dA[t] @ W_hh.T
    return dA, (dAn if cell == "gru" else None), dh_next, (dc_next if cell == "lstm" else None)


def make_layer(rng, cell, B, T, H, dtype=np.float64):
    G = GATES[cell]
    XW = rng.standard_normal((T, B, G * H))
    W_hh = rng.uniform(-1.5, 1.5, (H, G * H)) / np.sqrt(H)
    b_hn = rng.standard_normal(H) * 0.5 if cell == "gru" else None
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5 if cell == "lstm" else None
    dHs = rng.standard_normal((T, B, H))
    cast = (lambda a: None if a is None else np.ascontiguousarray(a, dtype))
    return {k: cast(v) for k, v in dict(XW=XW, W_hh=W_hh, b_hn=b_hn, h0=h0, c0=c0,
                                        dHs=dHs).items()}


def f64(a):
    return None if a is None else a.astype(np.float64)


def run_forward(cell, nonlin, p, num_threads, *, with_cache=True):
    T, B, _ = p["XW"].shape
    H = p["W_hh"].shape[0]
    dt = p["XW"].dtype
    Hs = np.full((T, B, H), np.nan, dt)
    Cs = np.full((T, B, H), np.nan, dt) if cell == "lstm" else None
    Gs = (np.full((T, B, L.gate_cache_width(CELLS[cell], H)), np.nan, dt)
          if cell != "rnn" and with_cache else None)
    L.layer_forward(CELLS[cell], NONLIN[nonlin], p["XW"], p["W_hh"], p["b_hn"], p["h0"],
                    p["c0"], Hs, Cs, Gs, num_threads)
    return Hs, Cs, Gs


def run_backward(cell, nonlin, p, Hs, Cs, Gs, num_threads):
    T, B, H = Hs.shape
    dt = Hs.dtype
    G = GATES[cell]
    dA = np.full((T, B, G * H), np.nan, dt)
    dAn = np.full((T, B, H), np.nan, dt) if cell == "gru" else None
    dh0 = np.full((B, H), np.nan, dt)
    dc0 = np.full((B, H), np.nan, dt) if cell == "lstm" else None
    L.layer_backward(CELLS[cell], NONLIN[nonlin], p["dHs"].copy(), Hs, Cs, Gs, p["h0"],
                     p["c0"], p["W_hh"], dA, dAn, dh0, dc0, num_threads)
    return dA, dAn, dh0, dc0


# ---------------------------------------------------------------------------
# the oracle's backward against central differences (float64)

@pytest.mark.parametrize("cell,nonlin", CONFIGS)
@pytest.mark.parametrize("shape", [(2, 3, 3), (1, 4, 2)], ids=str)
def test_oracle_backward_matches_central_differences(cell, nonlin, shape):
    rng = np.random.default_rng(7)
    B, T, H = shape
    p = make_layer(rng, cell, B, T, H)
    if nonlin == "relu":      # keep pre-activations away from relu's kink
        p["XW"] += np.sign(p["XW"]) * 0.2
    R = p["dHs"]

    def loss(q):
        Hs, _, _ = oracle_forward(cell, nonlin, q["XW"], q["W_hh"], q["b_hn"], q["h0"],
                                  q["c0"])
        return float(np.sum(Hs * R))

    Hs, Cs, gates = oracle_forward(cell, nonlin, p["XW"], p["W_hh"], p["b_hn"], p["h0"],
                                   p["c0"])
    dA, dAn, dh0, dc0 = oracle_backward(cell, nonlin, R, Hs, Cs, gates, p["h0"], p["c0"],
                                        p["W_hh"])
    Hprev = np.concatenate([p["h0"][None], Hs[:-1]], axis=0).reshape(T * B, H)
    dA_rec = dA.copy()
    if cell == "gru":
        dA_rec[:, :, 2 * H:] = dAn
    analytic = {"XW": dA, "h0": dh0, "W_hh": Hprev.T @ dA_rec.reshape(T * B, -1)}
    if cell == "gru":
        analytic["b_hn"] = dAn.sum(axis=(0, 1))
    if cell == "lstm":
        analytic["c0"] = dc0
    eps = 1e-6
    for name, grad in analytic.items():
        num = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            q = {k: (None if v is None else v.copy()) for k, v in p.items()}
            q[name][idx] += eps
            up = loss(q)
            q[name][idx] -= 2 * eps
            num[idx] = (up - loss(q)) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8, err_msg=name)


# ---------------------------------------------------------------------------
# kernels against the oracle; thread counts bitwise

def tolerances(dtype):
    # float64: the kernels' sums run in another order than numpy's; float32: the
    # rational tanh (a few ulp) and float32 products over T steps
    return dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dT%dH%d" % s)
@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_layer_matches_oracle_and_thread_counts_agree(cell, nonlin, shape, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((cell, nonlin, shape)).encode()))
    B, T, H = shape
    p = make_layer(rng, cell, B, T, H, dtype)
    p64 = {k: f64(v) for k, v in p.items()}
    Hs_r, Cs_r, gates = oracle_forward(cell, nonlin, p64["XW"], p64["W_hh"], p64["b_hn"],
                                       p64["h0"], p64["c0"])
    dA_r, dAn_r, dh0_r, dc0_r = oracle_backward(cell, nonlin, p64["dHs"], Hs_r, Cs_r, gates,
                                                p64["h0"], p64["c0"], p64["W_hh"])
    tol = tolerances(dtype)
    first = None
    for nt in (1, 2, 3):
        Hs, Cs, Gs = run_forward(cell, nonlin, p, nt)
        grads = run_backward(cell, nonlin, p, Hs, Cs, Gs, nt)
        got = dict(Hs=Hs, Cs=Cs, Gs=Gs, dA=grads[0], dAn_rec=grads[1], dh0=grads[2],
                   dc0=grads[3])
        want = dict(Hs=Hs_r, Cs=Cs_r, dA=dA_r, dAn_rec=dAn_r, dh0=dh0_r, dc0=dc0_r)
        for name, ref in want.items():
            if ref is None:
                assert got[name] is None, name
                continue
            assert got[name].dtype == dtype, name
            np.testing.assert_allclose(got[name], ref, err_msg=f"{name} nt={nt}", **tol)
        if first is None:
            first = got
        else:
            for name, a in got.items():
                if a is not None:
                    np.testing.assert_array_equal(a, first[name], err_msg=f"{name} nt={nt}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dT%dH%d" % s)
@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_forward_ids_equals_gather_then_forward(cell, nonlin, shape, dtype):
    """layer_forward_ids gathers W_xh[id] + b_h inside the time loop: bitwise what
    gather_rows then layer_forward give (and so the oracle), for 1, 2, 3 threads,
    with and without the gate cache."""
    rng = np.random.default_rng(zlib.crc32(repr(("ids", cell, nonlin, shape)).encode()))
    B, T, H = shape
    D = 5
    p = make_layer(rng, cell, B, T, H, dtype)
    GH = GATES[cell] * H
    W_xh = rng.standard_normal((D, GH)).astype(dtype)
    b_h = rng.standard_normal(GH).astype(dtype)
    ids = rng.integers(0, D, (T, B)).astype(np.int32)
    XW = np.empty((T, B, GH), dtype)
    L.gather_rows(W_xh, b_h, ids.reshape(-1), XW.reshape(T * B, GH), 1)
    np.testing.assert_array_equal(XW, W_xh[ids] + b_h)
    p["XW"] = XW
    for cache in (True, False):
        want = run_forward(cell, nonlin, p, 1, with_cache=cache)
        for nt in (1, 2, 3):
            Hs = np.full((T, B, H), np.nan, dtype)
            Cs = np.full((T, B, H), np.nan, dtype) if cell == "lstm" else None
            Gs = (np.full((T, B, L.gate_cache_width(CELLS[cell], H)), np.nan, dtype)
                  if cell != "rnn" and cache else None)
            L.layer_forward_ids(CELLS[cell], NONLIN[nonlin], ids, W_xh, b_h, p["W_hh"],
                                p["b_hn"], p["h0"], p["c0"], Hs, Cs, Gs, nt)
            for name, a, b in zip(("Hs", "Cs", "Gs"), (Hs, Cs, Gs), want):
                if b is not None:
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} nt={nt}")


def test_forward_ids_rejects_bad_ids():
    rng = np.random.default_rng(0)
    T, B, H, D = 3, 2, 4, 5
    p = make_layer(rng, "lstm", B, T, H, np.float32)
    W_xh = np.zeros((D, 4 * H), np.float32)
    b_h = np.zeros(4 * H, np.float32)
    Hs = np.empty((T, B, H), np.float32)
    Cs = np.empty((T, B, H), np.float32)
    Gs = np.empty((T, B, 4 * H), np.float32)

    def call(ids, W=W_xh, b=b_h):
        L.layer_forward_ids(L.CELL_LSTM, L.NONLIN_TANH, ids, W, b, p["W_hh"], None, p["h0"],
                            p["c0"], Hs, Cs, Gs, 1)
    call(np.zeros((T, B), np.int32))
    for bad in (D, -1):
        ids = np.zeros((T, B), np.int32)
        ids[2, 1] = bad
        with pytest.raises(ValueError, match="ids must lie in"):
            call(ids)
    with pytest.raises(ValueError, match="ids must have dtype int32"):
        call(np.zeros((T, B), np.int64))
    with pytest.raises(ValueError, match="ids"):
        call(np.zeros(T * B, np.int32))
    with pytest.raises(ValueError, match="h0 must have shape"):   # B from ids
        call(np.zeros((T, B + 1), np.int32))
    with pytest.raises(ValueError, match="b_h must have shape"):
        call(np.zeros((T, B), np.int32), b=np.zeros(H, np.float32))
    with pytest.raises(ValueError, match="must have dtype float64"):  # dtype from W_xh
        call(np.zeros((T, B), np.int32), W=np.zeros((D, 4 * H)))
    with pytest.raises(ValueError, match="must not overlap"):
        L.layer_forward_ids(L.CELL_LSTM, L.NONLIN_TANH, np.zeros((T, B), np.int32), W_xh,
                            b_h, p["W_hh"], None, p["h0"], p["c0"], Hs, Hs, Gs, 1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gate_cache_holds_the_gates(cell):
    rng = np.random.default_rng(3)
    B, T, H = 3, 4, 5
    p = make_layer(rng, cell, B, T, H)
    Hs_r, _, gates = oracle_forward(cell, "tanh", p["XW"], p["W_hh"], p["b_hn"], p["h0"],
                                    p["c0"])
    _, _, Gs = run_forward(cell, "tanh", p, 2)
    assert L.gate_cache_width(CELLS[cell], H) == 4 * H
    for t in range(T):
        np.testing.assert_allclose(Gs[t], np.concatenate(gates[t][:4], axis=1), rtol=1e-12,
                                   atol=1e-13)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_forward_without_gate_cache(cell):
    """Gs=None (inference) gives the same states bitwise."""
    rng = np.random.default_rng(4)
    p = make_layer(rng, cell, 4, 5, 6, np.float32)
    a = run_forward(cell, "tanh", p, 2)
    b = run_forward(cell, "tanh", p, 2, with_cache=False)
    np.testing.assert_array_equal(a[0], b[0])
    if cell == "lstm":
        np.testing.assert_array_equal(a[1], b[1])


def test_enum_and_widths():
    assert (L.CELL_RNN, L.CELL_GRU, L.CELL_LSTM) == (0, 1, 2)
    assert (L.NONLIN_TANH, L.NONLIN_RELU) == (0, 1)
    assert [L.gate_count(c) for c in (0, 1, 2)] == [1, 3, 4]
    assert [L.gate_cache_width(c, 7) for c in (0, 1, 2)] == [0, 28, 28]
    with pytest.raises(ValueError):
        L.gate_cache_width(3, 4)


def test_empty_sizes_and_ftz_restored():
    from fastrnn import _rnn
    rng = np.random.default_rng(5)
    before = _rnn.fp_mode()
    for cell in ("rnn", "gru", "lstm"):
        for B, T, H in [(0, 3, 4), (2, 0, 4), (2, 3, 0)]:
            p = make_layer(rng, cell, B, T, H)
            Hs, Cs, Gs = run_forward(cell, "tanh", p, 2)
            dA, dAn, dh0, dc0 = run_backward(cell, "tanh", p, Hs, Cs, Gs, 2)
            if T == 0:
                assert np.all(dh0 == 0)
    assert _rnn.fp_mode() == before


def test_subnormals_flushed_inside_and_mode_restored():
    """A state of subnormals becomes zero inside the kernel (FTZ/DAZ), and the
    caller's mode is unchanged afterwards."""
    from fastrnn import _rnn
    if not _rnn.ftz_supported():
        pytest.skip("no FTZ control on this platform")
    before = _rnn.fp_mode()
    p = make_layer(np.random.default_rng(6), "rnn", 2, 1, 3)
    p["XW"][:] = 0
    p["W_hh"][:] = np.eye(3)
    p["h0"][:] = 1e-310                      # subnormal double
    Hs, _, _ = run_forward("rnn", "relu", p, 1)
    assert np.all(Hs == 0)
    assert _rnn.fp_mode() == before


# ---------------------------------------------------------------------------
# bad arguments: ValueError / TypeError, never a crash

def _fwd_args(cell="lstm", dtype=np.float64):
    p = make_layer(np.random.default_rng(8), cell, 3, 4, 5, dtype)
    T, B, H = 4, 3, 5
    Hs = np.zeros((T, B, H), dtype)
    Cs = np.zeros((T, B, H), dtype) if cell == "lstm" else None
    Gs = np.zeros((T, B, 4 * H), dtype) if cell != "rnn" else None
    return dict(cell=CELLS[cell], nonlin=0, XW=p["XW"], W_hh=p["W_hh"], b_hn=p["b_hn"],
                h0=p["h0"], c0=p["c0"], Hs=Hs, Cs=Cs, Gs=Gs, num_threads=2)


def _call_fwd(a):
    L.layer_forward(a["cell"], a["nonlin"], a["XW"], a["W_hh"], a["b_hn"], a["h0"], a["c0"],
                    a["Hs"], a["Cs"], a["Gs"], a["num_threads"])


@pytest.mark.parametrize("change,err", [
    (dict(cell=5), ValueError),
    (dict(nonlin=1), ValueError),                  # relu with LSTM
    (dict(num_threads=0), ValueError),
    (dict(c0=None), ValueError),
    (dict(Cs=None), ValueError),
    (dict(b_hn=np.zeros(5)), ValueError),         # LSTM has no b_hn
    (dict(XW="x"), ValueError),
    (dict(h0=[[0.0] * 5] * 3), TypeError),
    (dict(h0=np.zeros((3, 5), np.float32)), ValueError),
    (dict(h0=np.zeros((3, 6))), ValueError),
    (dict(W_hh=np.zeros((5, 19))), ValueError),
    (dict(Hs=np.zeros((4, 3, 10))[:, :, ::2]), ValueError),
    (dict(Gs=np.zeros((4, 3, 19))), ValueError),
], ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(v))
def test_forward_rejects_bad_arguments(change, err):
    a = _fwd_args()
    a.update(change)
    with pytest.raises(err):
        _call_fwd(a)


def test_forward_rejects_read_only_and_overlapping_outputs():
    a = _fwd_args()
    a["Hs"].flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _call_fwd(a)
    a = _fwd_args()
    a["Cs"] = a["Hs"]
    with pytest.raises(ValueError, match="overlap"):
        _call_fwd(a)
    a = _fwd_args("rnn")
    a["Gs"] = np.zeros((4, 3, 0))
    with pytest.raises(ValueError):
        _call_fwd(a)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B,T,H", [(1, 5, 130), (1, 4, 7), (2, 3, 5), (7, 4, 70), (13, 3, 9),
                                   (64, 9, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_writes_da_over_the_gate_cache(cell, B, T, H, dtype):
    """dA may be the gate cache Gs itself (GRU: dAn_rec too, rows [dA | dAn_rec]): the
    same values bitwise as into separate arrays, for 1, 2, 3 threads, one sequence
    (split in two parts at H = 130, whole at H = 7) and batches; and the weight
    gradients and the input gradient read GRU's pair from the cache bitwise as from
    separate arrays. Another array overlapping Gs is still refused."""
    p = make_layer(np.random.default_rng(B * 100 + H), cell, B, T, H, dtype)
    Hs, Cs, Gs = run_forward(cell, "tanh", p, 1)
    want = run_backward(cell, "tanh", p, Hs, Cs, Gs, 1)
    G = GATES[cell]
    cid = CELLS[cell]
    old = L.set_split_min_work(1)
    try:
        for nt in (1, 2, 3):
            G2 = Gs.copy()
            dh0 = np.full((B, H), np.nan, dtype)
            dc0 = np.full((B, H), np.nan, dtype) if cell == "lstm" else None
            L.layer_backward(cid, NONLIN["tanh"], p["dHs"].copy(), Hs, Cs, G2, p["h0"],
                             p["c0"], p["W_hh"], G2, G2 if cell == "gru" else None, dh0, dc0,
                             nt)
            assert np.array_equal(G2[:, :, :G * H], want[0])
            if cell == "gru":
                assert np.array_equal(G2[:, :, 3 * H:], want[1])
            assert np.array_equal(dh0, want[2])
            if cell == "lstm":
                assert np.array_equal(dc0, want[3])
            # the consumers: weight gradients (ids and dense) and the input gradient
            V, N = 11, T * B
            rng = np.random.default_rng(nt)
            ids = rng.integers(0, V, N).astype(np.int32)
            X = rng.standard_normal((N, V)).astype(dtype)
            for xi, xd in ((ids, None), (None, X)):
                outs = []
                for dA, dAn in ((want[0], want[1]), (G2, G2 if cell == "gru" else None)):
                    o = [np.full((V, G * H), np.nan, dtype), np.full((H, G * H), np.nan, dtype),
                         np.full(G * H, np.nan, dtype),
                         np.full(H, np.nan, dtype) if cell == "gru" else None]
                    L.layer_weight_grads(cid, p["h0"], Hs, dA, dAn, xi, xd, *o, nt)
                    outs.append(o)
                for x, y in zip(*outs):
                    if x is not None:
                        assert np.array_equal(x, y)
            W_xh = rng.standard_normal((V, G * H)).astype(dtype)
            d1, d2 = np.empty((N, V), dtype), np.empty((N, V), dtype)
            L.seq_matmul(want[0].reshape(N, G * H), W_xh, None, d1, True, nt)
            L.seq_matmul(G2.reshape(N, -1), W_xh, None, d2, True, nt, G * H)
            assert np.array_equal(d1, d2)
    finally:
        L.set_split_min_work(old)
    G2 = Gs.copy()
    with pytest.raises(ValueError):
        L.layer_backward(cid, NONLIN["tanh"], p["dHs"].copy(), Hs, Cs, G2, p["h0"], p["c0"],
                         p["W_hh"], G2[:], G2[:] if cell == "gru" else None,
                         np.zeros((B, H), dtype),
                         np.zeros((B, H), dtype) if cell == "lstm" else None, 1)


def test_backward_rejects_bad_arguments():
    cell = "gru"
    p = make_layer(np.random.default_rng(9), cell, 3, 4, 5)
    Hs, Cs, Gs = run_forward(cell, "tanh", p, 1)
    ok = dict(dHs=p["dHs"].copy(), Hs=Hs, Cs=None, Gs=Gs, h0=p["h0"], c0=None, W_hh=p["W_hh"],
              dA=np.zeros((4, 3, 15)), dAn_rec=np.zeros((4, 3, 5)), dh0=np.zeros((3, 5)),
              dc0=None)

    def call(**change):
        a = dict(ok, **change)
        L.layer_backward(CELLS[cell], 0, a["dHs"], a["Hs"], a["Cs"], a["Gs"], a["h0"], a["c0"],
                         a["W_hh"], a["dA"], a["dAn_rec"], a["dh0"], a["dc0"], 2)

    call()   # valid
    for change in (dict(Gs=None), dict(dAn_rec=None), dict(dc0=np.zeros((3, 5))),
                   dict(dA=np.zeros((4, 3, 14))), dict(dh0=np.zeros((3, 5), np.float32)),
                   dict(dHs=Hs), dict(dA=ok["dHs"].reshape(4, 3, 5)[:, :, :5].copy())):
        with pytest.raises(ValueError):
            call(**change)


# ---------------------------------------------------------------------------
# generate_stack: the compiled sampling loop over a stack of layers

def make_stack(rng, cell, V, H, nL, dtype=np.float64, D=None):
    G = GATES[cell]
    D = V if D is None else D
    s = 1.0 / np.sqrt(H)
    layers = []
    for k in range(nL):
        layers.append(tuple(
            None if a is None else np.ascontiguousarray(a, dtype) for a in (
                rng.uniform(-1, 1, ((D if k == 0 else H), G * H)) * (1.0 if k == 0 else s),
                rng.uniform(-1.5, 1.5, (H, G * H)) * s,
                rng.uniform(-0.5, 0.5, G * H),
                rng.uniform(-0.5, 0.5, H) if cell == "gru" else None)))
    W_hq = np.ascontiguousarray(rng.uniform(-2, 2, (H, V)) * s, dtype)
    b_q = np.ascontiguousarray(rng.uniform(-0.5, 0.5, V), dtype)
    return layers, W_hq, b_q


def np_stack_step(cell, nonlin, layers, x_id, hs, cs):
    """One step of the stack for one sequence, with the oracle's layer step."""
    hs, cs = hs.copy(), (None if cs is None else cs.copy())
    below = None
    for k, (W_xh, W_hh, b_h, b_hn) in enumerate(layers):
        xw = (W_xh[x_id] if k == 0 else below @ W_xh) + b_h
        Hs, Cs, _ = oracle_forward(cell, nonlin, xw[None, None], W_hh, b_hn, hs[k][None],
                                   None if cs is None else cs[k][None])
        hs[k] = Hs[0, 0]
        if cs is not None:
            cs[k] = Cs[0, 0]
        below = hs[k]
    return hs, cs


def run_gen(cell, nonlin, stack, feed, n, seed, *, h=None, c=None, temperature=1.0, top_k=0,
            top_p=1.0, greedy=False, logits=False, rng_state=None, num_threads=2):
    from fastrnn import _lm
    layers, W_hq, b_q = stack
    nL, H, dt = len(layers), W_hq.shape[0], W_hq.dtype
    h = np.zeros((nL, H), dt) if h is None else h
    if cell == "lstm" and c is None:
        c = np.zeros((nL, H), dt)
    if rng_state is None:
        rng_state = np.zeros(4, np.uint64)
        _lm.rng_seed(np.uint64(seed), rng_state)
    out = np.empty(n, np.int32)
    lg = np.empty((n, W_hq.shape[1]), dt) if logits else None
    L.generate_stack(CELLS[cell], NONLIN[nonlin], layers, W_hq, b_q,
                     np.asarray(feed, np.int32), out, h, c, rng_state, temperature, top_k,
                     top_p, greedy, num_threads, lg)
    return out, h, c, lg, rng_state


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("nL", [1, 2, 3])
@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_generate_stack_states_and_logits_match_numpy(cell, nonlin, nL, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((cell, nonlin, nL)).encode()))
    V, H = 7, 5
    stack = make_stack(rng, cell, V, H, nL, dtype)
    feed = [3, 0, 6]
    n = 12
    out, h, c, lg, _ = run_gen(cell, nonlin, stack, feed, n, 1, temperature=0.8, logits=True)
    assert out.min() >= 0 and out.max() < V
    layers64 = [tuple(f64(a) for a in lay) for lay in stack[0]]
    W_hq, b_q = f64(stack[1]), f64(stack[2])
    hs = np.zeros((nL, H))
    cs = np.zeros((nL, H)) if cell == "lstm" else None
    tol = tolerances(dtype)
    for s, x in enumerate(list(feed) + list(out[:-1])):
        hs, cs = np_stack_step(cell, nonlin, layers64, x, hs, cs)
        i = s - len(feed) + 1
        if i >= 0:
            np.testing.assert_allclose(lg[i], hs[-1] @ W_hq + b_q, err_msg=f"logits {i}", **tol)
    np.testing.assert_allclose(h, hs, err_msg="h", **tol)
    if cell == "lstm":
        np.testing.assert_allclose(c, cs, err_msg="c", **tol)
    # greedy takes the argmax of the logits it reports
    out, _, _, lg, _ = run_gen(cell, nonlin, stack, feed, n, 1, greedy=True, logits=True)
    np.testing.assert_array_equal(out, lg.argmax(axis=1))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_generate_stack_pieces_equal_one_call(cell):
    """Continuing with feed=out[-1:], the returned state and sampler state gives the
    ids of one call (the streaming contract)."""
    rng = np.random.default_rng(11)
    stack = make_stack(rng, cell, 9, 6, 2, np.float32)
    whole, h1, c1, _, r1 = run_gen(cell, "tanh", stack, [1, 2], 40, 5, top_k=4, top_p=0.9)
    first, h, c, _, r = run_gen(cell, "tanh", stack, [1, 2], 15, 5, top_k=4, top_p=0.9)
    rest, h, c, _, r = run_gen(cell, "tanh", stack, first[-1:], 25, 5, h=h, c=c, top_k=4,
                               top_p=0.9, rng_state=r)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)
    np.testing.assert_array_equal(h, h1)
    np.testing.assert_array_equal(r, r1)


@pytest.fixture
def split_every_generation():
    """generate_stack splits long enough runs of large enough models: split every run."""
    old = L.set_gen_split_thresholds(0, 1)
    yield
    L.set_gen_split_thresholds(*old)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("H", [65, 130, 200])
@pytest.mark.parametrize("nL", [1, 2, 3])
@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_generate_stack_two_threads_and_pieces_are_bitwise_one_thread(
        cell, nonlin, nL, H, dtype, split_every_generation):
    """With two threads each step's units are cut at a multiple of 64 (H = 65 leaves
    one unit to the second part) and each thread draws the ids itself: the ids, the
    states, the logits and the sampler's state are bitwise one thread's. A run cut
    into pieces of a few sub-steps (a long feed included) gives them too."""
    rng = np.random.default_rng(zlib.crc32(repr((cell, nonlin, nL, H)).encode()))
    V = 11
    stack = make_stack(rng, cell, V, H, nL, dtype)
    feed = rng.integers(0, V, 9)
    for kw in (dict(temperature=0.9, top_k=5, top_p=0.95), dict(greedy=True)):
        one = run_gen(cell, nonlin, stack, feed, 40, 7, logits=True, num_threads=1, **kw)
        two = run_gen(cell, nonlin, stack, feed, 40, 7, logits=True, num_threads=2, **kw)
        old = L._set_gen_piece(4)         # feed of 9 ids: feed-only pieces first
        try:
            pieces = run_gen(cell, nonlin, stack, feed, 40, 7, logits=True, num_threads=2,
                             **kw)
        finally:
            L._set_gen_piece(old)
        for got, what in ((two, "two threads"), (pieces, "pieces")):
            for a, b, name in zip(one, got, ("ids", "h", "c", "logits", "rng")):
                if a is not None:
                    np.testing.assert_array_equal(b, a, err_msg=f"{what}: {name} {kw}")


@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_split_generation_matches_numpy(cell, nonlin, split_every_generation):
    """The two-thread loop against the NumPy oracle (H = 130: parts of 128 and 2)."""
    rng = np.random.default_rng(zlib.crc32(repr(("split", cell, nonlin)).encode()))
    V, H, nL = 9, 130, 2
    stack = make_stack(rng, cell, V, H, nL)
    feed = [3, 0, 6, 1]
    out, h, c, lg, _ = run_gen(cell, nonlin, stack, feed, 30, 2, temperature=0.8,
                               logits=True, num_threads=2)
    hs = np.zeros((nL, H))
    cs = np.zeros((nL, H)) if cell == "lstm" else None
    for s, x in enumerate(list(feed) + list(out[:-1])):
        hs, cs = np_stack_step(cell, nonlin, stack[0], x, hs, cs)
        i = s - len(feed) + 1
        if i >= 0:
            np.testing.assert_allclose(lg[i], hs[-1] @ stack[1] + stack[2], rtol=1e-9,
                                       atol=1e-10, err_msg=f"logits {i}")
    np.testing.assert_allclose(h, hs, rtol=1e-9, atol=1e-10)
    if cell == "lstm":
        np.testing.assert_allclose(c, cs, rtol=1e-9, atol=1e-10)


def fixed_distribution_stack(probs, dtype=np.float64):
    """A one-layer stack whose logits are log(probs) whatever the state (W_hq = 0)."""
    V, H = len(probs), 3
    layers = [(np.zeros((V, H), dtype), np.zeros((H, H), dtype), np.zeros(H, dtype), None)]
    return layers, np.zeros((H, V), dtype), np.log(np.asarray(probs, dtype))


def frequencies(probs, n=20000, **kw):
    out = run_gen("rnn", "tanh", fixed_distribution_stack(probs), [0], n, 123, **kw)[0]
    return np.bincount(out, minlength=len(probs)) / n


def assert_freq(got, want, n=20000):
    want = np.asarray(want, float) / np.sum(want)
    # 5 binomial standard deviations (and exact zeros where want is zero)
    sd = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(got - want) <= 5 * sd + 1e-12), (got, want)


def test_sampled_ids_follow_the_distribution():
    p = np.array([0.5, 0.25, 0.15, 0.1])
    assert_freq(frequencies(p), p)
    assert_freq(frequencies(p, temperature=0.5), p ** 2)            # softmax(log p / 0.5)
    assert_freq(frequencies(p, temperature=2.0), p ** 0.5)
    assert_freq(frequencies(p, top_k=2), [0.5, 0.25, 0, 0])
    assert_freq(frequencies(p, greedy=True), [1, 0, 0, 0])


def test_top_p_nucleus_semantics():
    """top_p keeps the fewest most likely ids whose probabilities reach top_p (ties
    with the least likely kept id are kept too), then samples among them in
    proportion; 1.0 is off; it applies after temperature and top_k."""
    p = np.array([0.1, 0.5, 0.25, 0.15])
    assert_freq(frequencies(p, top_p=0.45), [0, 1, 0, 0])          # 0.5 >= 0.45
    assert_freq(frequencies(p, top_p=0.6), [0, 0.5, 0.25, 0])      # 0.75 >= 0.6
    assert_freq(frequencies(p, top_p=0.8), [0, 0.5, 0.25, 0.15])   # 0.9 >= 0.8
    assert_freq(frequencies(p, top_p=0.95), p)
    assert_freq(frequencies(p, top_p=1.0), p)
    q = np.array([0.3, 0.3, 0.2, 0.2])
    assert_freq(frequencies(q, top_p=0.5), [0.3, 0.3, 0, 0])
    assert_freq(frequencies(q, top_p=0.65), q)                     # tie at the cut: kept
    # after top_k: the nucleus of the renormalised top 3 (0.5/0.9 = 0.56 >= 0.5)
    assert_freq(frequencies(p, top_k=3, top_p=0.5), [0, 1, 0, 0])
    # after temperature: p**2 normalised is [.029, .725, .181, .065]
    assert_freq(frequencies(p, temperature=0.5, top_p=0.8), [0, 0.25, 0.0625, 0])
    # one uniform per draw whatever top_p: the sampler's state advances alike
    r1 = run_gen("rnn", "tanh", fixed_distribution_stack(p), [0], 50, 7, top_p=0.3)[4]
    r2 = run_gen("rnn", "tanh", fixed_distribution_stack(p), [0], 50, 7)[4]
    np.testing.assert_array_equal(r1, r2)


def test_generate_stack_rejects_bad_arguments():
    rng = np.random.default_rng(12)
    stack = make_stack(rng, "gru", 6, 4, 2)

    def call(cell="gru", layers=None, feed=(1,), top_p=1.0, temperature=1.0, top_k=0,
             h=None, c=None, **kw):
        layers = stack[0] if layers is None else layers
        h = np.zeros((len(layers), 4)) if h is None else h
        r = np.zeros(4, np.uint64)
        r[0] = 1
        L.generate_stack(CELLS[cell], 0, layers, stack[1], stack[2], np.asarray(feed, np.int32),
                         np.empty(3, np.int32), h, c, r, temperature, top_k, top_p, False, 1,
                         **kw)

    call()   # valid
    bad = [dict(top_p=0.0), dict(top_p=1.5), dict(temperature=0.0), dict(top_k=-1),
           dict(feed=(6,)), dict(feed=(-1,)), dict(feed=()), dict(layers=[]),
           dict(layers=[stack[0][0][:3]]), dict(cell="lstm"), dict(h=np.zeros((1, 4))),
           dict(layers=[(stack[0][0][0][:5].copy(),) + stack[0][0][1:]]),
           dict(layers=[stack[0][0], stack[0][0]]),          # layer 1's W_xh is (H, G*H)
           dict(logits=np.empty((3, 5)))]
    for change in bad:
        with pytest.raises(ValueError):
            call(**change)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,nonlin", CONFIGS)
def test_one_sequence_forward_equals_generation(cell, nonlin, dtype):
    """B = 1: layer_forward on the fed ids gives bitwise generate_stack's states (the
    same one-row product and cell step), so training and sampling see one model."""
    rng = np.random.default_rng(zlib.crc32(repr((cell, nonlin)).encode()))
    V, H = 6, 70
    layers, W_hq, b_q = make_stack(rng, cell, V, H, 1, dtype)
    W_xh, W_hh, b_h, b_hn = layers[0]
    feed = [1, 4, 0, 5, 5, 2]
    out, h, c, _, _ = run_gen(cell, nonlin, (layers, W_hq, b_q), feed, 1, 3)
    XW = np.ascontiguousarray((W_xh[feed] + b_h)[:, None, :])
    p = dict(XW=XW, W_hh=W_hh, b_hn=b_hn, h0=np.zeros((1, H), dtype),
             c0=np.zeros((1, H), dtype) if cell == "lstm" else None)
    Hs, Cs, _ = run_forward(cell, nonlin, p, 2)
    np.testing.assert_array_equal(Hs[-1, 0], h[0])
    if cell == "lstm":
        np.testing.assert_array_equal(Cs[-1, 0], c[0])


@pytest.mark.parametrize("level", [0, 1], ids=["portable", "avx2"])
def test_every_kernel_variant(level):
    """The packed products and tanh run on a variant picked from the CPU; rerun this
    file with each lower variant forced by FASTRNN_KERNEL_LEVEL, as a machine without
    the best one would run it."""
    from fastrnn import _rnn
    detected = _rnn.packed_gemm_level()
    if level >= detected:
        pytest.skip(f"level {level} is what this CPU runs by default (level {detected})")
    env = dict(os.environ, FASTRNN_KERNEL_LEVEL=str(level))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          str(Path(__file__).resolve()), "-k",
                          "not every_kernel_variant and not follow_the_distribution "
                          "and not nucleus"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


# ---------------------------------------------------------------------------
# property: any shape, any thread count

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=int(os.environ.get("FASTRNN_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(CONFIGS), st.integers(1, 9), st.integers(1, 6), st.integers(1, 70),
       st.integers(2, 5), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_property_any_shape_matches_oracle_bitwise_across_threads(config, B, T, H, nt, dtype,
                                                                 seed):
    cell, nonlin = config
    p = make_layer(np.random.default_rng(seed), cell, B, T, H, dtype)
    p64 = {k: f64(v) for k, v in p.items()}
    Hs_r, Cs_r, gates = oracle_forward(cell, nonlin, p64["XW"], p64["W_hh"], p64["b_hn"],
                                       p64["h0"], p64["c0"])
    dA_r, _, dh0_r, _ = oracle_backward(cell, nonlin, p64["dHs"], Hs_r, Cs_r, gates, p64["h0"],
                                        p64["c0"], p64["W_hh"])
    one = run_forward(cell, nonlin, p, 1)
    many = run_forward(cell, nonlin, p, nt)
    g1 = run_backward(cell, nonlin, p, *one, 1)
    gn = run_backward(cell, nonlin, p, *many, nt)
    tol = tolerances(dtype)
    np.testing.assert_allclose(one[0], Hs_r, err_msg="Hs", **tol)
    np.testing.assert_allclose(g1[0], dA_r, err_msg="dA", **tol)
    np.testing.assert_allclose(g1[2], dh0_r, err_msg="dh0", **tol)
    for a, b in zip(one + g1, many + gn):
        if a is not None:
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# the whole-sequence products of the stack driver (gather, matmul, head, weight
# gradients) against numpy in float64, and bitwise the same for 1, 2, 3 threads

SEQ_SHAPES = [(1, 1, 1, 1), (3, 5, 7, 4), (2, 9, 33, 11), (4, 3, 70, 29), (16, 32, 128, 65)]
# (T, B, H, V); the last is large enough for the threads to overlap in time


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("T,B,H,V", SEQ_SHAPES + [(2, 5, 300, 7), (3, 300, 40, 9),
                                                  (37, 29, 96, 13)])
@pytest.mark.parametrize("dense", [False, True])
def test_layer_weight_grads(cell, T, B, H, V, dense):
    """(2, 5, 300, 7): several column blocks of at least 512 (lstm's 1200 columns in
    three, gru's r, z columns in two), taken by different threads. With fewer than 4
    column blocks, the sum over T*B rows is cut into pieces of the time axis (at least
    256 rows each) added in order: (16, 32, 128, 65) in 2, (3, 300, 40, 9) in 3 pieces
    of one step each, (37, 29, 96, 13) in 4 (rnn) or 2 uneven ones."""
    rng = np.random.default_rng(T * 1000 + B * 100 + H)
    cid = {"rnn": L.CELL_RNN, "gru": L.CELL_GRU, "lstm": L.CELL_LSTM}[cell]
    G = L.gate_count(cid)
    N, GH, D = T * B, G * H, V
    h0 = rng.standard_normal((B, H))
    Hs = rng.standard_normal((T, B, H))
    dA = rng.standard_normal((T, B, GH))
    dAn = rng.standard_normal((T, B, H)) if cell == "gru" else None
    ids = rng.integers(0, D, N).astype(np.int32)
    X = rng.standard_normal((N, D)) if dense else None
    Hp = np.concatenate([h0[None], Hs[:-1]]).reshape(N, H)
    dA2 = dA.reshape(N, GH)
    want_hh = Hp.T @ dA2
    if cell == "gru":
        want_hh[:, 2 * H:] = Hp.T @ dAn.reshape(N, H)
    if dense:
        want_xh = X.T @ dA2
    else:
        want_xh = np.zeros((D, GH))
        np.add.at(want_xh, ids, dA2)
    results = []
    for nt in (1, 2, 3):
        out = [np.full((D, GH), np.nan), np.full((H, GH), np.nan), np.full(GH, np.nan),
               np.full(H, np.nan) if cell == "gru" else None]
        L.layer_weight_grads(cid, h0, Hs, dA, dAn, None if dense else ids, X, *out, nt)
        np.testing.assert_allclose(out[0], want_xh, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[1], want_hh, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[2], dA2.sum(0), rtol=1e-12, atol=1e-12)
        if cell == "gru":
            np.testing.assert_allclose(out[3], dAn.reshape(N, H).sum(0), rtol=1e-12,
                                       atol=1e-12)
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            if a is not None:
                assert np.array_equal(a, b)


@pytest.mark.parametrize("T,B,H,V", SEQ_SHAPES + [(2, 9, 600, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_head_and_products(T, B, H, V, dtype):
    """(2, 9, 600, 11): H > 512, where head_backward's dW_hq runs on BLAS in blocks of
    256 rows (three, shared among the threads)."""
    rng = np.random.default_rng(V * 7 + H)
    N = T * B
    tol = 1e-5 if dtype == np.float32 else 1e-12
    Hh = rng.standard_normal((N, H)).astype(dtype)
    W = rng.standard_normal((H, V)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype)
    Y = rng.integers(0, V, N).astype(np.int32)
    ids = rng.integers(0, H, N).astype(np.int32)
    h64, w64, b64 = (a.astype(np.float64) for a in (Hh, W, b))
    Z = h64 @ w64 + b64
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    want_loss = -np.log(P[np.arange(N), Y]).sum()
    dO_want = P.copy()
    dO_want[np.arange(N), Y] -= 1
    dO_want /= N
    runs = []
    for nt in (1, 2, 3):
        O = np.empty((N, V), dtype)
        assert L.head_xent(Hh, W, b, None, O, nt) is None
        np.testing.assert_allclose(O, Z, rtol=tol, atol=tol)
        loss = L.head_xent(Hh, W, b, Y, O, nt)
        np.testing.assert_allclose(loss, want_loss, rtol=tol)
        np.testing.assert_allclose(O, dO_want, rtol=tol, atol=tol / N)
        dW, db, dH = np.empty((H, V), dtype), np.empty(V, dtype), np.empty((N, H), dtype)
        L.head_backward(Hh, O, W, dW, db, dH, nt)
        d64 = O.astype(np.float64)
        np.testing.assert_allclose(dW, h64.T @ d64, rtol=tol, atol=tol)
        np.testing.assert_allclose(db, d64.sum(0), rtol=tol, atol=tol)
        np.testing.assert_allclose(dH, d64 @ w64.T, rtol=tol, atol=tol)
        M1 = np.empty((N, V), dtype)
        L.seq_matmul(Hh, W, b, M1, False, nt)
        np.testing.assert_allclose(M1, Z, rtol=tol, atol=tol)
        M2 = np.empty((N, H), dtype)
        L.seq_matmul(O, W, None, M2, True, nt)
        np.testing.assert_allclose(M2, d64 @ w64.T, rtol=tol, atol=tol)
        Gt = np.empty((N, V), dtype)
        L.gather_rows(W, b, ids, Gt, nt)
        assert np.array_equal(Gt, W[ids] + b)
        runs.append((loss, O, dW, db, dH, M1, M2))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        for a, b_ in zip(runs[0][1:], other[1:]):
            assert np.array_equal(a, b_)


def test_seq_products_refuse_bad_input():
    W = np.zeros((4, 3))
    with pytest.raises(ValueError, match="ids must lie in"):
        L.gather_rows(W, np.zeros(3), np.array([0, 4], np.int32), np.empty((2, 3)), 1)
    with pytest.raises(ValueError, match="Y must lie in"):
        L.head_xent(np.zeros((2, 4)), W, np.zeros(3), np.array([0, -1], np.int32),
                    np.empty((2, 3)), 1)
    with pytest.raises(ValueError, match="out must have shape"):
        L.seq_matmul(np.zeros((2, 4)), W, None, np.empty((2, 4)), False, 1)
    with pytest.raises(ValueError, match="dW_hh must have dtype"):
        L.layer_weight_grads(L.CELL_RNN, np.zeros((1, 4)), np.zeros((1, 1, 4)),
                             np.zeros((1, 1, 4)), None, np.zeros(1, np.int32), None,
                             np.zeros((3, 4)), np.zeros((4, 4), np.float32), np.zeros(4),
                             None, 1)
    with pytest.raises(ValueError, match="must not overlap"):
        buf = np.zeros((2, 3))
        L.seq_matmul(buf, np.zeros((3, 3)), None, buf, False, 1)
