"""Generation: 10,000 characters sampled with temperature from a state warmed up
on a prefix, B=1 (compare.CONFIGS["generation"]), timing compare.py's
gen_fastrnn (CharLM.generate), gen_reference (a NumPy loop) and gen_torch.

    pytest benches/test_bench_generate.py
"""
import inspect

import numpy as np
import pytest

import compare
import fastrnn
from fastrnn import reference
from _bench_common import GEN_CONFIGS, THREADS, impl_params, run_bench, timed

PREFIX = "the time traveller "  # the prefix of compare.gen_*
UNK = "<unk>"
GENS = {"fastrnn": compare.gen_fastrnn, "numpy": compare.gen_reference,
        "torch": compare.gen_torch}


def n_tokens(text):
    """Characters generated, counting the unknown token (decoded as "<unk>", which
    no other sequence of the 27-letter vocabulary spells) as one."""
    return len(text) - (len(UNK) - 1) * text.count(UNK)


def numpy_greedy_check(lm, ids):
    """Check ``ids``, CharLM's greedy continuation of PREFIX, against greedy
    decoding in float64 NumPy: feed the same characters through the NumPy
    recurrence and require each id to be the argmax of the NumPy logits. Where
    that holds at every step, NumPy's own greedy loop produces exactly ``ids``;
    float32 rounding may only pick the other side of a near-tie (within 1e-4 of
    the logits' scale). Returns the number of such near-ties."""
    p = {k: v.astype(np.float64) for k, v in lm.params.items()}
    h = np.zeros(lm.hidden_size)
    for x in lm.vocab.encode(PREFIX):
        h = np.tanh(p["W_xh"][x] + h @ p["W_hh"] + p["b_h"])
    ties = 0
    for i, tok in enumerate(ids):
        o = h @ p["W_hq"] + p["b_q"]
        best = int(np.argmax(o))
        if tok != best:
            tol = 1e-4 * max(1.0, float(np.abs(o).max()))
            assert o[best] - o[tok] <= tol, (
                f"greedy step {i}: fastrnn chose {tok} (logit {o[tok]}), "
                f"NumPy's argmax is {best} (logit {o[best]})")
            ties += 1
        h = np.tanh(p["W_xh"][tok] + h @ p["W_hh"] + p["b_h"])
    return ties


def closure_var(fn, name):
    """The variable ``name`` that the closure ``fn`` (a compare.gen_* run) holds
    (through decorators such as ``torch.no_grad()``, which wrap it)."""
    fn = inspect.unwrap(fn)
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


def numpy_sampler_check(p, text):
    """The NumPy sampler's timed loop against an independent float64 recomputation
    of the same inverse-CDF draws from the same generator (default_rng(1)): the
    first 200 characters must agree (float32 against float64 may flip a draw that
    falls on a boundary, after which the texts part ways; the seeds are fixed, so
    this either always holds or never). Returns how many characters agree."""
    vocab = compare._vocab28()
    rng = np.random.default_rng(1)
    q = {k: v.astype(np.float64) for k, v in p.items()}
    h = np.zeros(q["W_hh"].shape[0])
    for i in vocab.encode(PREFIX):
        h = np.tanh(q["W_xh"][i] + h @ q["W_hh"] + q["b_h"])
    want = []
    for _ in range(500):
        o = (h @ q["W_hq"] + q["b_q"]) / compare.TEMPERATURE
        c = np.cumsum(np.exp(o - o.max()))
        tok = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
        want.append(tok)
        h = np.tanh(q["W_xh"][tok] + h @ q["W_hh"] + q["b_h"])
    want = vocab.decode(want)
    n = next((i for i, (a, b) in enumerate(zip(text, want)) if a != b), len(want))
    assert n >= 200, (
        f"the NumPy sampler's text parts from the float64 recomputation at {n}: "
        f"{text[:n + 20]!r} vs {want[:n + 20]!r}")
    return n


def torch_model_check(p, run):
    """PyTorch's sampler draws from its own generator, so its text cannot be compared;
    check instead that the modules it samples from give the float64 reference's
    logits after the prefix (the model it times is the model)."""
    import torch
    rnn, lin = closure_var(run, "rnn"), closure_var(run, "lin")
    V = p["W_hq"].shape[1]
    ids = compare._vocab28().encode(PREFIX).astype(np.int64)
    with torch.no_grad():
        out, _ = rnn(torch.nn.functional.one_hot(torch.from_numpy(ids), V).float()
                     .unsqueeze(1))
        got = lin(out[-1, 0]).double().numpy()
    q = {k: v.astype(np.float64) for k, v in p.items()}
    want, _ = reference.forward(q, ids[None, :])
    want = want[0, -1]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (got, want)


@pytest.mark.parametrize("impl", impl_params(GENS))
@pytest.mark.parametrize("config", GEN_CONFIGS)
def test_generate(benchmark, config, impl):
    V, H, _, _ = compare.CONFIGS[config]
    n = compare.GEN_CHARS
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    run = GENS[impl](p, THREADS)
    # the checks, once, outside the timed calls
    text, seconds = timed(run)
    if impl == "fastrnn":  # CharLM.generate returns the prefix too
        assert text.startswith(PREFIX)
        text = text[len(PREFIX):]
        # the same model, decoding greedily, against NumPy's greedy decoding
        lm = fastrnn.CharLM(compare._vocab28(), H, dtype="float32")
        for k in p:
            lm.params[k][...] = p[k]
        ids = lm.generate_ids(PREFIX, n, greedy=True)
        assert len(ids) == n
        ties = numpy_greedy_check(lm, ids)
        assert ties <= n // 100, f"{ties} near-ties in {n} greedy steps"
        # sampling: the same seed gives the same characters as the timed call's
        head = lm.generate_ids(PREFIX, 200, temperature=compare.TEMPERATURE, seed=1)
        assert text.startswith(lm.vocab.decode(head))
    elif impl == "numpy":
        numpy_sampler_check(p, text)
    else:
        torch_model_check(p, run)
    assert n_tokens(text) == n, f"{impl} generated {n_tokens(text)} characters, not {n}"
    assert set(text.replace(UNK, "")) <= set("abcdefghijklmnopqrstuvwxyz ")
    run_bench(benchmark, run, group=f"generate {n} chars (V={V} H={H} B=1)",
              check_seconds=seconds, units=n, unit_name="chars", rounds_lo=2, rounds_hi=20)


# gated cells (issue 12): LSTM generation, one character per call for PyTorch
GATED_GEN = [k for k, c in compare.GATED_CONFIGS.items() if c[5] is None]


@pytest.mark.parametrize("impl", impl_params(["fastrnn", "numpy", "torch"]))
@pytest.mark.parametrize("config", GATED_GEN)
def test_generate_gated(benchmark, config, impl):
    cell, V, H, L, _, _ = compare.GATED_CONFIGS[config]
    n = 1000
    p = fastrnn.init_params(V, H, cell=cell, num_layers=L, dtype="float32", seed=0)
    if impl == "fastrnn":
        run, lm = compare.gen_fastrnn_gated(p, THREADS, cell, L, n)
        # the checks, once, outside the timed calls: greedy decoding against the
        # float64 reference (SystemExit on a mismatch)
        compare.check_gated_generation(p, cell, L, lm, None)
    elif impl == "numpy":
        run = compare.gen_reference_lstm(p, THREADS, n)
    else:  # one thread: PyTorch's faster setting for one character per call
        run, mods = compare.gen_torch_gated(p, 1, cell, L, n)
        _, lm = compare.gen_fastrnn_gated(p, THREADS, cell, L, n)
        compare.check_gated_generation(p, cell, L, lm, mods)
    text, seconds = timed(run)
    if impl == "fastrnn":
        assert text.startswith(compare.GATED_PREFIX)
        text = text[len(compare.GATED_PREFIX):]
    assert n_tokens(text) == n, f"{impl} generated {n_tokens(text)} characters, not {n}"
    run_bench(benchmark, run, group=f"generate {n} chars ({cell} V={V} H={H} L={L} B=1)",
              check_seconds=seconds, units=n, unit_name="chars", rounds_lo=2, rounds_hi=20)
