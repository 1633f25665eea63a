"""fastrnn <-> PyTorch state dicts, the PyTorch module, and ONNX export (fastrnn.export).

The state-dict tests need only NumPy. The module and gradient tests need torch
(``pip install 'fastrnn[torch]'``), the ONNX tests onnx and onnxruntime
(``pip install 'fastrnn[onnx]'``); they are skipped, with the reason, only where
those cannot be imported.

Every cell and depth is compared three ways where this branch can: PyTorch's module
holding the mapped weights, fastrnn's compiled functional API and fastrnn's NumPy
reference. Tolerances: float64 relative 1e-9; float32 relative 1e-5 with an
absolute floor of 1e-5 times the largest magnitude of the array compared (PyTorch's
oneDNN kernels and ONNX Runtime's do not round as fastrnn does).
"""
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import export as ex

try:
    import torch
    _TORCH_ERR = None
except Exception as exc:  # noqa: BLE001 - any import failure means "no torch here"
    torch, _TORCH_ERR = None, exc
try:
    import onnx
    import onnxruntime as ort
    _ONNX_ERR = None
except Exception as exc:  # noqa: BLE001
    onnx = ort = None
    _ONNX_ERR = exc

needs_torch = pytest.mark.skipif(torch is None, reason=f"torch is not importable "
                                                       f"({_TORCH_ERR})")
needs_onnx = pytest.mark.skipif(ort is None, reason=f"onnx/onnxruntime are not importable "
                                                    f"({_ONNX_ERR})")

CELLS = ("rnn", "gru", "lstm")
G = {"rnn": 1, "gru": 3, "lstm": 4}
V, H = 11, 8
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# helpers

def make_params(rng, cell, L, *, D=V, Hh=H, Vo=V, dtype="float64", scale=0.6):
    """Random fastrnn parameters (SPEC layout): large enough that every gate matters."""
    g = G[cell]
    p = {}
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        p[f"W_xh{s}"] = rng.uniform(-scale, scale, (D if k == 0 else Hh, g * Hh))
        p[f"W_hh{s}"] = rng.uniform(-scale, scale, (Hh, g * Hh))
        p[f"b_h{s}"] = rng.uniform(-scale, scale, g * Hh)
        if cell == "gru":
            p[f"b_hn{s}"] = rng.uniform(-scale, scale, Hh)
    p["W_hq"] = rng.uniform(-scale, scale, (Hh, Vo))
    p["b_q"] = rng.uniform(-scale, scale, Vo)
    return {k: np.ascontiguousarray(v, dtype) for k, v in p.items()}


def n_layers(p):
    return 1 + sum(1 for k in p if k.startswith("W_xh_l"))


def make_state(rng, cell, L, B, dtype, *, layered=None):
    """A random initial state in fastrnn's form: (B, H) for L == 1 unless layered."""
    layered = L > 1 if layered is None else layered
    shape = (L, B, H) if layered else (B, H)
    h = (rng.standard_normal(shape) * 0.5).astype(dtype)
    if cell == "lstm":
        return (h, (rng.standard_normal(shape) * 0.5).astype(dtype))
    return h


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def spec_forward(p, X, h0, cell, nonlinearity="tanh"):
    """The SPEC's equations, written out in float64 for these tests: an independent
    check of the weight mapping for configurations fastrnn on this branch lacks."""
    L = n_layers(p)
    B, T = X.shape[:2]
    x = (np.eye(p["W_xh"].shape[0])[X] if X.ndim == 2 else X).astype(np.float64)
    parts = [np.zeros((L, B, H))] * (2 if cell == "lstm" else 1) if h0 is None else [
        np.asarray(a, np.float64).reshape(L, B, H) for a in state_parts(h0, cell)]
    hs, cs = [], []
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        W_xh, W_hh, b = (p[n + s].astype(np.float64) for n in ("W_xh", "W_hh", "b_h"))
        h = parts[0][k]
        c = parts[1][k] if cell == "lstm" else None
        ys = []
        for t in range(T):
            xw = x[:, t] @ W_xh + b
            if cell == "rnn":
                a = xw + h @ W_hh
                h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
            elif cell == "gru":
                hw = h @ W_hh
                r = _sigmoid(xw[:, :H] + hw[:, :H])
                z = _sigmoid(xw[:, H:2 * H] + hw[:, H:2 * H])
                n = np.tanh(xw[:, 2 * H:] + r * (hw[:, 2 * H:] + p["b_hn" + s]))
                h = (1 - z) * n + z * h
            else:
                a = xw + h @ W_hh
                i, f, g, o = (a[:, j * H:(j + 1) * H] for j in range(4))
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
            ys.append(h)
        x = np.stack(ys, axis=1)
        hs.append(h)
        cs.append(c)
    logits = x @ p["W_hq"].astype(np.float64) + p["b_q"]
    layered = L > 1 or (h0 is not None and state_parts(h0, cell)[0].ndim == 3)
    f = (lambda v: np.stack(v)) if layered else (lambda v: v[0])  # noqa: E731
    return logits, ((f(hs), f(cs)) if cell == "lstm" else f(hs))


def _has_cell_kw(fn):
    return "cell" in inspect.signature(fn).parameters


def _impl(which):
    return fastrnn if which == "compiled" else fastrnn.reference


def available(which, cell, L):
    """Whether fastrnn on this branch computes cell x L layers (with ``which``)."""
    return which == "spec" or _has_cell_kw(_impl(which).forward) or (cell == "rnn" and L == 1)


def fastrnn_forward(which, p, X, h0, cell, nonlinearity="tanh"):
    """fastrnn's own logits and state (compiled API or NumPy reference; "spec": the
    equations above); skips when this branch's fastrnn has no such cell or depth yet."""
    if which == "spec":
        return spec_forward(p, X, h0, cell, nonlinearity)
    mod = _impl(which)
    if _has_cell_kw(mod.forward):
        return mod.forward(p, X, h0, cell=cell, nonlinearity=nonlinearity)
    if cell != "rnn" or n_layers(p) > 1:
        pytest.skip(f"fastrnn{'.reference' if which != 'compiled' else ''}.forward has no "
                    f"cell= on this branch yet: {cell} x {n_layers(p)} layers is compared "
                    f"with the other implementations only")
    if h0 is not None and h0.ndim == 3:      # (1, B, H): this branch takes (B, H) only
        logits, h = mod.forward(p, X, h0[0], nonlinearity=nonlinearity)
        return logits, h[None]
    return mod.forward(p, X, h0, nonlinearity=nonlinearity)


def fastrnn_loss_and_grad(which, p, X, Y, h0, cell, nonlinearity="tanh"):
    mod = _impl(which)
    if _has_cell_kw(mod.loss_and_grad):
        return mod.loss_and_grad(p, X, Y, h0, cell=cell, nonlinearity=nonlinearity)
    if cell != "rnn" or n_layers(p) > 1:
        pytest.skip(f"fastrnn{'.reference' if which != 'compiled' else ''}.loss_and_grad "
                    f"has no cell= on this branch yet: {cell} x {n_layers(p)} layers is "
                    f"compared with the other implementations only")
    return mod.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity)


def tol(dtype):
    return 1e-9 if np.dtype(dtype) == np.float64 else 1e-5


def assert_close(actual, desired, rtol, what=""):
    """Relative rtol with an absolute floor of rtol * max|desired|."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (what, actual.shape, desired.shape)
    floor = rtol * max(float(np.abs(desired).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=floor, err_msg=what)


def state_parts(state, cell):
    return list(state) if cell == "lstm" else [state]


def to_np(t):
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------
# state dicts (NumPy only)

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip_is_exact(rng, cell, L, dtype):
    p = make_params(rng, cell, L, dtype=dtype)
    sd = ex.to_torch_state_dict(p, cell=cell)
    names = [f"rnn.{w}_l{k}" for k in range(L)
             for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] + [
        "head.weight", "head.bias"]
    assert list(sd) == names
    g = G[cell]
    for k in range(L):
        assert sd[f"rnn.weight_ih_l{k}"].shape == (g * H, V if k == 0 else H)
        assert sd[f"rnn.weight_hh_l{k}"].shape == (g * H, H)
        assert sd[f"rnn.bias_ih_l{k}"].shape == sd[f"rnn.bias_hh_l{k}"].shape == (g * H,)
        s = "" if k == 0 else f"_l{k}"
        np.testing.assert_array_equal(sd[f"rnn.weight_ih_l{k}"], p[f"W_xh{s}"].T)
        np.testing.assert_array_equal(sd[f"rnn.bias_ih_l{k}"], p[f"b_h{s}"])
        want_hh = np.zeros(g * H)
        if cell == "gru":
            want_hh[2 * H:] = p[f"b_hn{s}"]
        np.testing.assert_array_equal(sd[f"rnn.bias_hh_l{k}"], want_hh)
    assert sd["head.weight"].shape == (V, H) and sd["head.bias"].shape == (V,)
    assert all(a.dtype == np.dtype(dtype) and a.flags.c_contiguous for a in sd.values())
    assert not any(np.shares_memory(a, b) for a in sd.values() for b in p.values())
    back = ex.from_torch_state_dict(sd, cell=cell)
    assert sorted(back) == sorted(p)
    for k in p:
        assert back[k].dtype == p[k].dtype, k
        np.testing.assert_array_equal(back[k], p[k], err_msg=k)


def test_gru_bias_combination_rule(rng):
    """b_h = bias_ih + bias_hh for r and z; the n block keeps bias_ih's, b_hn = bias_hh's."""
    sd = ex.to_torch_state_dict(make_params(rng, "gru", 1), cell="gru")
    sd["rnn.bias_hh_l0"] = rng.standard_normal(3 * H)
    p = ex.from_torch_state_dict(sd, cell="gru")
    b_ih, b_hh = sd["rnn.bias_ih_l0"], sd["rnn.bias_hh_l0"]
    np.testing.assert_array_equal(p["b_h"][:2 * H], b_ih[:2 * H] + b_hh[:2 * H])
    np.testing.assert_array_equal(p["b_h"][2 * H:], b_ih[2 * H:])
    np.testing.assert_array_equal(p["b_hn"], b_hh[2 * H:])
    sd = ex.to_torch_state_dict(make_params(rng, "lstm", 1), cell="lstm")
    sd["rnn.bias_hh_l0"] = rng.standard_normal(4 * H)
    p = ex.from_torch_state_dict(sd, cell="lstm")
    np.testing.assert_array_equal(p["b_h"], sd["rnn.bias_ih_l0"] + sd["rnn.bias_hh_l0"])


def test_accepted_key_spellings_and_dtype(rng):
    p = make_params(rng, "lstm", 2)
    sd = ex.to_torch_state_dict(p, cell="lstm")
    for rp, hp in (("lstm.", "fc."), ("", "decoder."), ("gru.", "linear."), ("rnn.", "head.")):
        renamed = {(rp + k[4:] if k.startswith("rnn.") else hp + k[5:]): v
                   for k, v in sd.items()}
        renamed = {"module." + k: v for k, v in renamed.items()} if rp == "" else renamed
        back = ex.from_torch_state_dict(renamed, cell="lstm")
        for k in p:
            np.testing.assert_array_equal(back[k], p[k])
    # dtype: float64 only when every array is; asked for explicitly otherwise
    mixed = dict(sd, **{"head.bias": sd["head.bias"].astype(np.float32)})
    assert ex.from_torch_state_dict(mixed, cell="lstm")["W_hh"].dtype == np.float32
    assert ex.from_torch_state_dict(mixed, cell="lstm", dtype="float64")["b_q"].dtype == \
        np.float64
    half = {k: v.astype(np.float16) for k, v in sd.items()}
    assert ex.from_torch_state_dict(half, cell="lstm")["W_xh"].dtype == np.float32
    lists = {k: v.tolist() for k, v in sd.items()}
    np.testing.assert_array_equal(ex.from_torch_state_dict(lists, cell="lstm")["W_hh_l1"],
                                  p["W_hh_l1"])


def test_embedding_is_folded_into_layer_0(rng):
    E = 5
    emb = rng.standard_normal((V, E))
    sd = ex.to_torch_state_dict(make_params(rng, "gru", 2), cell="gru")
    sd["rnn.weight_ih_l0"] = rng.standard_normal((3 * H, E))
    for key in ex.ACCEPTED_KEYS["embedding_keys"]:
        p = ex.from_torch_state_dict(dict(sd, **{key: emb}), cell="gru")
        np.testing.assert_allclose(p["W_xh"], emb @ sd["rnn.weight_ih_l0"].T, rtol=1e-15)
        assert p["W_xh"].shape == (V, 3 * H)


def _bad_cases(rng):
    """(description, cell, state dict, text the error must contain)."""
    sd = ex.to_torch_state_dict(make_params(rng, "lstm", 2), cell="lstm")
    cases = []
    d = dict(sd)
    del d["rnn.bias_hh_l1"]
    cases.append(("missing", "lstm", d, "rnn.bias_hh_l1"))
    cases.append(("missing head", "lstm", {k: v for k, v in sd.items()
                                           if not k.startswith("head.")}, "head.weight"))
    cases.append(("missing rnn", "lstm", {k: v for k, v in sd.items()
                                          if k.startswith("head.")}, "rnn.weight_ih_l0"))
    cases.append(("extra", "lstm", dict(sd, **{"rnn.extra": sd["head.bias"]}), "rnn.extra"))
    cases.append(("extra unknown prefix", "lstm", dict(sd, **{"dropout.p": np.zeros(1)}),
                  "dropout.p"))
    cases.append(("mis-shaped", "lstm", dict(sd, **{"rnn.weight_hh_l1":
                                                    sd["rnn.weight_hh_l1"][:, :-1]}),
                  "rnn.weight_hh_l1"))
    cases.append(("mis-shaped input", "lstm", dict(sd, **{"rnn.weight_ih_l1":
                                                          np.zeros((4 * H, H + 1))}),
                  "rnn.weight_ih_l1"))
    cases.append(("mis-shaped bias", "lstm", dict(sd, **{"rnn.bias_ih_l0": np.zeros(4 * H + 1)}),
                  "rnn.bias_ih_l0"))
    cases.append(("mis-shaped head", "lstm", dict(sd, **{"head.bias": np.zeros(V + 1)}),
                  "head.bias"))
    cases.append(("1-D weight", "lstm", dict(sd, **{"rnn.weight_hh_l0": np.zeros(4 * H)}),
                  "rnn.weight_hh_l0"))
    cases.append(("wrong cell", "gru", sd, "fits cell='lstm'"))
    cases.append(("wrong cell rnn", "rnn", sd, "rnn.weight_hh_l0"))
    nan = sd["rnn.weight_hh_l1"].copy()
    nan[1, 2] = np.nan
    cases.append(("nan", "lstm", dict(sd, **{"rnn.weight_hh_l1": nan}), "rnn.weight_hh_l1"))
    inf = sd["head.bias"].copy()
    inf[0] = -np.inf
    cases.append(("inf", "lstm", dict(sd, **{"head.bias": inf}), "head.bias"))
    cases.append(("bidirectional", "lstm", dict(sd, **{"rnn.weight_ih_l0_reverse":
                                                       sd["rnn.weight_ih_l0"]}),
                  "bidirectional"))
    cases.append(("projection", "lstm", dict(sd, **{"rnn.weight_hr_l0": np.zeros((4, H))}),
                  "proj_size"))
    cases.append(("no biases", "lstm", {k: v for k, v in sd.items() if "bias_" not in k},
                  "bias=False"))
    gap = {k.replace("_l1", "_l2"): v for k, v in sd.items()}
    cases.append(("layer gap", "lstm", gap, "rnn.weight_ih_l2"))
    cases.append(("two rnns", "lstm", dict(sd, **{"lstm.weight_ih_l0": sd["rnn.weight_ih_l0"]}),
                  "lstm.weight_ih_l0"))
    cases.append(("two heads", "lstm", dict(sd, **{"fc.weight": sd["head.weight"]}),
                  "fc."))
    cases.append(("embedding width", "lstm", dict(sd, **{"embedding.weight": np.zeros((V, 3))}),
                  "embedding.weight"))
    cases.append(("float64 overflow in float32", "lstm",
                  dict(sd, **{"head.bias": np.full(V, 1e300)}), "b_q"))
    return cases


def test_bad_state_dicts_raise_value_error_naming_the_key(rng):
    for what, cell, sd, needle in _bad_cases(rng):
        kw = {"dtype": "float32"} if "overflow" in what else {}
        with pytest.raises(ValueError) as ei:
            ex.from_torch_state_dict(sd, cell=cell, **kw)
        assert needle in str(ei.value), (what, str(ei.value))
    sd = ex.to_torch_state_dict(make_params(rng, "rnn", 1), cell="rnn")
    with pytest.raises(ValueError, match="cell must be one of"):
        ex.from_torch_state_dict(sd, cell="transformer")
    with pytest.raises(TypeError, match="head.bias"):
        ex.from_torch_state_dict(dict(sd, **{"head.bias": np.arange(V)}), cell="rnn")
    with pytest.raises(TypeError, match="mapping"):
        ex.from_torch_state_dict([("head.bias", sd["head.bias"])])
    with pytest.raises(TypeError, match="float32 or float64"):
        ex.from_torch_state_dict(sd, dtype="float16")


def test_bad_fastrnn_params_raise(rng):
    p = make_params(rng, "gru", 2)
    with pytest.raises(ValueError, match=r"b_hn.*cell='gru'"):
        ex.to_torch_state_dict(p, cell="rnn")
    with pytest.raises(ValueError, match="fits cell='gru'"):
        ex.to_torch_state_dict({k: v for k, v in p.items() if not k.startswith("b_hn")},
                               cell="lstm")
    q = dict(p)
    del q["b_h_l1"]
    with pytest.raises(ValueError, match="b_h_l1"):
        ex.to_torch_state_dict(q, cell="gru")
    q = dict(p, W_hq=p["W_hq"][:-1])
    with pytest.raises(ValueError, match="W_hq"):
        ex.to_torch_state_dict(q, cell="gru")
    q = dict(p, b_q=p["b_q"].astype(np.float32))
    with pytest.raises(TypeError, match="b_q"):
        ex.to_torch_state_dict(q, cell="gru")
    q = dict(p, W_hh_l1=p["W_hh_l1"].copy())
    q["W_hh_l1"][0, 0] = np.nan
    with pytest.raises(ValueError, match="W_hh_l1"):
        ex.to_torch_state_dict(q, cell="gru")


def test_importing_fastrnn_imports_neither_torch_nor_onnx():
    assert fastrnn.to_torch_state_dict is ex.to_torch_state_dict
    assert fastrnn.from_torch_state_dict is ex.from_torch_state_dict
    code = ("import sys, numpy as np, fastrnn\n"
            "p = fastrnn.init_params(5, 3, seed=0)\n"
            "sd = fastrnn.to_torch_state_dict(p)\n"
            "fastrnn.from_torch_state_dict(sd)\n"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# PyTorch module

def _plain_torch_module(cell, D, Hh, Vo, L, nonlinearity="tanh"):
    """The module the docs describe, written out with torch.nn alone."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            kw = dict(num_layers=L, batch_first=True)
            if cell == "rnn":
                self.rnn = torch.nn.RNN(D, Hh, nonlinearity=nonlinearity, **kw)
            else:
                self.rnn = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](D, Hh, **kw)
            self.head = torch.nn.Linear(Hh, Vo)
    return Model()


@needs_torch
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_loads_into_the_plain_pytorch_module(rng, cell, L):
    p = make_params(rng, cell, L, dtype="float32")
    m = _plain_torch_module(cell, V, H, V, L)
    want = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    sd = ex.to_torch_state_dict(p, cell=cell)
    assert {k: v.shape for k, v in sd.items()} == want
    assert list(sd) == list(want)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    built = ex.to_torch_module(p, cell=cell)
    assert list(built.state_dict()) == list(want)
    assert isinstance(built, ex.TorchCharLM)


@needs_torch
@pytest.mark.parametrize("which", ["compiled", "reference", "spec"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_torch_module_forward_equals_fastrnn(rng, cell, L, dtype, which):
    B, T = 3, 6
    p = make_params(rng, cell, L, dtype=dtype)
    X = rng.integers(0, V, (B, T))
    m = ex.to_torch_module(p, cell=cell)
    for h0 in (None, make_state(rng, cell, L, B, dtype),
               make_state(rng, cell, L, B, dtype, layered=True)):
        want_logits, want_state = fastrnn_forward(which, p, X, h0, cell)
        th0 = None if h0 is None else (
            tuple(torch.from_numpy(a) for a in h0) if cell == "lstm" else torch.from_numpy(h0))
        with torch.no_grad():
            logits, state = m(torch.from_numpy(X), th0)
        assert logits.dtype == (torch.float64 if dtype == "float64" else torch.float32)
        assert_close(to_np(logits), want_logits, tol(dtype), "logits")
        for a, b in zip(state_parts(state, cell), state_parts(want_state, cell)):
            assert_close(to_np(a), b, tol(dtype), "state")


@needs_torch
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("L", [1, 2])
def test_torch_rnn_nonlinearity_and_dense_inputs(rng, nonlinearity, L):
    p = make_params(rng, "rnn", L)
    X = rng.standard_normal((2, 5, V))
    m = ex.to_torch_module(p, cell="rnn", nonlinearity=nonlinearity)
    assert m.rnn.nonlinearity == nonlinearity
    want_logits, want_h = fastrnn_forward("compiled", p, X, None, "rnn", nonlinearity)
    with torch.no_grad():
        logits, h = m(torch.from_numpy(X))
    assert_close(to_np(logits), want_logits, 1e-9)
    assert_close(to_np(h), want_h, 1e-9)


@needs_torch
@pytest.mark.parametrize("which", ["compiled", "reference"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_torch_gradients_equal_fastrnn(rng, cell, L, dtype, which):
    B, T = 3, 5
    p = make_params(rng, cell, L, dtype=dtype)
    X, Y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = make_state(rng, cell, L, B, dtype)
    loss, grads, state = fastrnn_loss_and_grad(which, p, X, Y, h0, cell)
    m = ex.to_torch_module(p, cell=cell)
    th0 = [torch.from_numpy(a.copy()).requires_grad_() for a in state_parts(h0, cell)]
    logits, tstate = m(torch.from_numpy(X), tuple(th0) if cell == "lstm" else th0[0])
    tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                              torch.from_numpy(Y).reshape(-1))
    tloss.backward()
    r = tol(dtype)
    assert abs(tloss.item() - loss) <= r * abs(loss)
    for a, b in zip(state_parts(tstate, cell), state_parts(state, cell)):
        assert_close(to_np(a), b, r, "state")
    # torch's parameter gradients in fastrnn's naming: the transposes, b_h's gradient is
    # bias_ih's (bias_hh's gradient is the same for every block but GRU's n)
    tg = {k: to_np(v.grad) for k, v in m.named_parameters()}
    for k in range(L):
        s = "" if k == 0 else f"_l{k}"
        assert_close(tg[f"rnn.weight_ih_l{k}"].T, grads[f"W_xh{s}"], r, f"W_xh{s}")
        assert_close(tg[f"rnn.weight_hh_l{k}"].T, grads[f"W_hh{s}"], r, f"W_hh{s}")
        assert_close(tg[f"rnn.bias_ih_l{k}"], grads[f"b_h{s}"], r, f"b_h{s}")
        if cell == "gru":
            assert_close(tg[f"rnn.bias_hh_l{k}"][2 * H:], grads[f"b_hn{s}"], r, f"b_hn{s}")
    assert_close(tg["head.weight"].T, grads["W_hq"], r, "W_hq")
    assert_close(tg["head.bias"], grads["b_q"], r, "b_q")
    assert_close(to_np(th0[0].grad), grads["h0"], r, "h0")
    if cell == "lstm":
        assert_close(to_np(th0[1].grad), grads["c0"], r, "c0")


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_from_a_real_torch_module_with_embedding(rng, cell, dtype):
    """nn.Embedding + RNN/GRU/LSTM + Linear with random (nonzero) bias_hh, read from its
    tensors: the imported fastrnn model computes the same logits and state."""
    torch.manual_seed(0)
    E, L, B, T = 6, 2, 2, 7
    tdt = torch.float64 if dtype == "float64" else torch.float32

    class WordLM(torch.nn.Module):           # PyTorch's word_language_model example
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Embedding(V, E)
            self.rnn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU,
                        "lstm": torch.nn.LSTM}[cell](E, H, L, batch_first=True, dropout=0.3)
            self.decoder = torch.nn.Linear(H, V)

        def forward(self, ids, state=None):
            y, s = self.rnn(self.encoder(ids), state)
            return self.decoder(y), s

    m = WordLM().to(tdt).eval()
    with torch.no_grad():
        for name, prm in m.named_parameters():
            prm.uniform_(-0.6, 0.6)
    p = ex.from_torch_state_dict(m.state_dict(), cell=cell)
    assert p["W_xh"].shape == (V, G[cell] * H) and p["W_xh"].dtype == np.dtype(dtype)
    X = rng.integers(0, V, (B, T))
    with torch.no_grad():
        want_logits, want_state = m(torch.from_numpy(X))
        logits, state = ex.to_torch_module(p, cell=cell)(torch.from_numpy(X))
    r = tol(dtype)
    assert_close(to_np(logits), to_np(want_logits), r, "logits via to_torch_module")
    for a, b in zip(state_parts(state, cell), state_parts(want_state, cell)):
        assert_close(to_np(a), to_np(b), r, "state via to_torch_module")
    for which in ("spec", "compiled", "reference"):
        if not available(which, cell, L):
            continue
        f_logits, f_state = fastrnn_forward(which, p, X, None, cell)
        assert_close(f_logits, to_np(want_logits), r, f"logits via fastrnn {which}")
        for a, b in zip(state_parts(f_state, cell), state_parts(want_state, cell)):
            assert_close(a, to_np(b), r, f"state via fastrnn {which}")


@needs_torch
def test_tensors_on_bfloat16_and_requiring_grad_are_read(rng):
    m = _plain_torch_module("gru", V, H, V, 1)
    sd = dict(m.state_dict(keep_vars=True))          # Parameters, requires_grad=True
    sd["head.bias"] = sd["head.bias"].detach().to(torch.bfloat16)
    p = ex.from_torch_state_dict(sd, cell="gru")
    assert p["b_q"].dtype == np.float32
    np.testing.assert_array_equal(p["b_q"], sd["head.bias"].float().numpy())


@needs_torch
def test_torch_module_state_forms_and_pickling(rng, tmp_path):
    p = make_params(rng, "lstm", 2)
    m = ex.to_torch_module(p, cell="lstm")
    ids = torch.from_numpy(rng.integers(0, V, (2, 3)))
    _, (h, c) = m(ids)
    assert h.shape == c.shape == (2, 2, H)
    with pytest.raises(ValueError, match="one layer"):
        m(ids, (torch.zeros(2, H, dtype=torch.float64),) * 2)
    with pytest.raises(ValueError, match=r"\(h, c\)"):
        m(ids, (torch.zeros(2, 2, H, dtype=torch.float64),))
    m1 = ex.to_torch_module(make_params(rng, "rnn", 1), cell="rnn")
    assert m1(ids)[1].shape == (2, H)
    assert m1(ids, torch.zeros(1, 2, H, dtype=torch.float64))[1].shape == (1, 2, H)
    torch.save(m, tmp_path / "m.pt")                  # the class is importable by name
    m2 = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(m2(ids)[0], m(ids)[0])


# ---------------------------------------------------------------------------
# CharLM wrappers and the command line

@needs_torch
def test_charlm_to_torch_and_back(rng):
    text = "hello world, the quick brown fox. " * 20
    lm = fastrnn.CharLM(text, hidden_size=H, seed=0, init="uniform", dtype="float64",
                        nonlinearity="relu")
    m = lm.to_torch()
    assert m.rnn.nonlinearity == "relu"
    ids = lm.vocab.encode("hello wor")[None]
    with torch.no_grad():
        logits, h = m(torch.from_numpy(ids.astype(np.int64)))
    want_logits, want_h = fastrnn.forward(lm.params, ids, nonlinearity="relu")
    assert_close(to_np(logits), want_logits, 1e-9)
    assert_close(to_np(h), want_h, 1e-9)
    back = fastrnn.CharLM.from_torch(m, lm.vocab)
    assert back.nonlinearity == "relu" and back.dtype == np.float64
    assert back.vocab.tokens == lm.vocab.tokens
    for k in lm.params:
        np.testing.assert_array_equal(back.params[k], lm.params[k])
    assert back.generate("hello", 20, seed=3) == lm.generate("hello", 20, seed=3)
    # a plain module (no fastrnn class), a vocabulary as a list of characters
    plain = _plain_torch_module("rnn", 4, 3, 4, 1)
    lm2 = fastrnn.CharLM.from_torch(plain, list("abcd"))
    assert lm2.vocab.tokens == list("abcd") and lm2.vocab.unk is None
    assert lm2.dtype == np.float32 and lm2.hidden_size == 3
    with pytest.raises(ValueError, match="vocabulary"):
        fastrnn.CharLM.from_torch(plain, list("abc"))
    lstm2 = _plain_torch_module("lstm", 4, 3, 4, 2)
    if hasattr(lm, "cell"):                  # CharLM with cells: the import works
        lm3 = fastrnn.CharLM.from_torch(lstm2, list("abcd"))
        assert lm3.cell == "lstm"
        with torch.no_grad():
            want = lstm2.head(lstm2.rnn(torch.nn.functional.one_hot(
                torch.tensor([[0, 1, 2]]), 4).float())[0])
        assert_close(lm3.to_torch()(torch.tensor([[0, 1, 2]]))[0].detach().numpy(),
                     to_np(want), 1e-5)
    else:
        with pytest.raises(ValueError, match="lstm"):
            fastrnn.CharLM.from_torch(lstm2, list("abcd"))


@needs_torch
def test_charlm_from_torch_refuses_bidirectional():
    class Bi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(4, 3, bidirectional=True, batch_first=True)
            self.head = torch.nn.Linear(6, 4)
    with pytest.raises(ValueError, match="bidirectional"):
        fastrnn.CharLM.from_torch(Bi(), list("abcd"))


# ---------------------------------------------------------------------------
# ONNX

def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_onnx(sess, cell, ids, state):
    """Run the exported model; state in the ONNX form (L, B, H) (tuple for LSTM)."""
    feeds = {"ids": np.ascontiguousarray(ids, np.int64)}
    parts = state_parts(state, cell)
    feeds["h0"] = np.ascontiguousarray(parts[0], np.float32)
    if cell == "lstm":
        feeds["c0"] = np.ascontiguousarray(parts[1], np.float32)
    out = sess.run(None, feeds)
    return out[0], (tuple(out[1:3]) if cell == "lstm" else out[1])


def _layered(state, cell, L):
    """fastrnn's state as (L, B, H) arrays (the ONNX form)."""
    if L == 1:
        f = (lambda a: a[None]) if state_parts(state, cell)[0].ndim == 2 else (lambda a: a)
    else:
        f = lambda a: a  # noqa: E731
    parts = [f(a) for a in state_parts(state, cell)]
    return tuple(parts) if cell == "lstm" else parts[0]


@needs_onnx
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_export_checks_and_matches_fastrnn(rng, tmp_path, cell, L):
    p = make_params(rng, cell, L, dtype="float32")
    tokens = [chr(ord("a") + i) for i in range(V - 1)] + ["<unk>"]
    path = ex.export_onnx(p, tokens, tmp_path / "m.onnx", cell=cell, unk="<unk>")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == ex.DEFAULT_OPSET
    assert {n.op_type for n in model.graph.node} >= {
        {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cell], "OneHot", "MatMul", "Add"}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)     # no custom ops
    assert [i.name for i in model.graph.input] == ["ids", "h0"] + (["c0"] if cell == "lstm"
                                                                   else [])
    assert [o.name for o in model.graph.output] == ["logits", "hT"] + (["cT"] if cell == "lstm"
                                                                       else [])
    sess = _session(path)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["fastrnn.vocab"]) == tokens
    assert json.loads(meta["fastrnn.unk"]) == "<unk>"
    assert meta["fastrnn.cell"] == cell and int(meta["fastrnn.num_layers"]) == L
    assert int(meta["fastrnn.hidden_size"]) == H
    m = ex.to_torch_module(p, cell=cell) if torch is not None else None
    for B, T in ((1, 1), (1, 9), (4, 3), (5, 12)):
        X = rng.integers(0, V, (B, T))
        h0 = make_state(rng, cell, L, B, np.float32, layered=True)
        got_logits, got_state = _run_onnx(sess, cell, X, h0)
        assert got_logits.shape == (B, T, V) and got_logits.dtype == np.float32
        refs = {}
        if m is not None:
            with torch.no_grad():
                tl, ts = m(torch.from_numpy(X), tuple(torch.from_numpy(a) for a in h0)
                           if cell == "lstm" else torch.from_numpy(h0))
            refs["torch"] = (to_np(tl), [to_np(a) for a in state_parts(ts, cell)])
        for which in ("spec", "compiled", "reference"):
            if available(which, cell, L):
                fl, fs = fastrnn_forward(which, p, X, h0, cell)
                refs[which] = (fl, state_parts(_layered(fs, cell, L), cell))
        assert refs, "nothing to compare the ONNX model with"
        for name, (rl, rs) in refs.items():
            assert_close(got_logits, rl, 1e-5, f"logits vs {name} B={B} T={T}")
            for a, b in zip(state_parts(got_state, cell), rs):
                assert a.shape == (L, B, H)
                assert_close(a, b, 1e-5, f"state vs {name} B={B} T={T}")


@needs_onnx
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_state_carried_between_calls(rng, tmp_path, cell, L):
    """Two calls carrying hT (cT) equal one call over the whole sequence, and fastrnn's."""
    p = make_params(rng, cell, L, dtype="float32")
    sess = _session(ex.export_onnx(p, [str(i) for i in range(V)], tmp_path / "m.onnx",
                                   cell=cell))
    B, T1, T2 = 3, 4, 6
    X = rng.integers(0, V, (B, T1 + T2))
    zeros = np.zeros((L, B, H), np.float32)
    s0 = (zeros, zeros) if cell == "lstm" else zeros
    l1, s1 = _run_onnx(sess, cell, X[:, :T1], s0)
    l2, s2 = _run_onnx(sess, cell, X[:, T1:], s1)
    lw, sw = _run_onnx(sess, cell, X, s0)
    assert_close(np.concatenate([l1, l2], axis=1), lw, 1e-5, "split vs whole")
    for a, b in zip(state_parts(s2, cell), state_parts(sw, cell)):
        assert_close(a, b, 1e-5, "state split vs whole")
    for which in ("spec", "compiled"):
        if not available(which, cell, L):
            continue
        fl, fs = fastrnn_forward(which, p, X, s0, cell)
        assert_close(np.concatenate([l1, l2], axis=1), fl, 1e-5, f"vs {which}")
        for a, b in zip(state_parts(s2, cell), state_parts(_layered(fs, cell, L), cell)):
            assert_close(a, b, 1e-5, f"state vs {which}")


@needs_onnx
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_onnx_float64_model_exports_as_float32(rng, tmp_path, nonlinearity):
    p = make_params(rng, "rnn", 1, dtype="float64")
    path = ex.export_onnx(p, list("abcdefghijk"), tmp_path / "m.onnx",
                          nonlinearity=nonlinearity)
    model = onnx.load(str(path))
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer
               if t.name[0] in "WRB")
    sess = _session(path)
    assert sess.get_modelmeta().custom_metadata_map["fastrnn.source_dtype"] == "float64"
    X = rng.integers(0, V, (2, 7))
    logits, h = _run_onnx(sess, "rnn", X, np.zeros((1, 2, H), np.float32))
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    want_logits, want_h = fastrnn.forward(p32, X, nonlinearity=nonlinearity)
    assert_close(logits, want_logits, 1e-5)
    assert_close(h[0], want_h, 1e-5)
    want64, _ = fastrnn.forward(p, X, nonlinearity=nonlinearity)
    assert_close(logits, want64, 1e-4, "vs the float64 model")


@needs_onnx
@pytest.mark.parametrize("opset", [13, 21, "newest"])
def test_onnx_opsets(rng, tmp_path, opset):
    p = make_params(rng, "gru", 2, dtype="float32")
    opset = onnx.defs.onnx_opset_version() if opset == "newest" else opset
    path = ex.export_onnx(p, list("abcdefghijk"), tmp_path / "m.onnx", cell="gru",
                          opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    try:
        sess = _session(path)
    except Exception as exc:  # noqa: BLE001
        if opset > 21:
            pytest.skip(f"onnxruntime {ort.__version__} does not run opset {opset}: {exc}")
        raise
    l_new, _ = _run_onnx(sess, "gru", np.array([[1, 2, 3]]), np.zeros((2, 1, H), np.float32))
    default = _session(ex.export_onnx(p, list("abcdefghijk"), tmp_path / "d.onnx", cell="gru"))
    l_def, _ = _run_onnx(default, "gru", np.array([[1, 2, 3]]), np.zeros((2, 1, H), np.float32))
    np.testing.assert_array_equal(l_new, l_def)


@needs_onnx
def test_onnx_export_bad_arguments(rng, tmp_path):
    p = make_params(rng, "rnn", 1, dtype="float32")
    with pytest.raises(ValueError, match="11 inputs"):
        ex.export_onnx(p, list("abc"), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset"):
        ex.export_onnx(p, list("abcdefghijk"), tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="unk"):
        ex.export_onnx(p, list("abcdefghijk"), tmp_path / "m.onnx", unk="<unk>")
    with pytest.raises(ValueError, match="cell"):
        ex.export_onnx(p, list("abcdefghijk"), tmp_path / "m.onnx", cell="lstm")
    big = make_params(rng, "rnn", 1)
    big["W_hh"][0, 0] = 1e39
    with pytest.raises(ValueError, match="W_hh.*float32"):
        ex.export_onnx(big, list("abcdefghijk"), tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ex.export_onnx(p, list("abcdefghijk"), tmp_path / "nodir" / "m.onnx")
    assert not list(tmp_path.iterdir())


@needs_onnx
def test_charlm_export_onnx_cli_and_example(rng, tmp_path):
    from fastrnn.cli import main
    text = "the time traveller (for so it will be convenient to speak of him) " * 10
    lm = fastrnn.CharLM(text, hidden_size=H, seed=0, init="uniform")
    lm.save(tmp_path / "m.npz")
    path = lm.export_onnx(tmp_path / "a.onnx")
    assert main(["export", str(tmp_path / "m.npz"), str(tmp_path / "b.onnx")]) == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    sess = _session(path)
    assert json.loads(sess.get_modelmeta().custom_metadata_map["fastrnn.vocab"]) == \
        lm.vocab.tokens
    ids = lm.vocab.encode("the time")[None].astype(np.int64)
    logits, _ = _run_onnx(sess, "rnn", ids, np.zeros((1, 1, H), np.float32))
    assert_close(logits, fastrnn.forward(lm.params, ids)[0], 1e-5)
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "c.onnx")]) == 2
    # the example samples with onnxruntime alone: fastrnn cannot be imported there
    example = ROOT / "examples" / "onnx_sample.py"
    code = ("import sys, runpy\n"
            "sys.modules['fastrnn'] = None  # any 'import fastrnn' raises ImportError\n"
            f"sys.argv = [{str(example)!r}, {str(path)!r}, '--prefix', 'the ', '-n', '40', "
            "'--seed', '1']\n"
            f"runpy.run_path({str(example)!r}, run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("the ") and len(out.stdout.rstrip("\n")) >= 44
    assert set(out.stdout.rstrip("\n")) <= set("".join(lm.vocab.tokens))
