"""CharLM.generate / stream against a NumPy re-implementation of d2l's predict."""
import math

import numpy as np
import pytest

from fastrnn import CharLM, Vocab

from test_lm_kernels import _splitmix64_seed, _xoshiro_next

TEXT = "the time traveller (for so it will be convenient to speak of him) " * 3


def _model(dtype="float64", nonlinearity="tanh", H=24, seed=3, scale=4.0):
    """A model with large random weights, so predictions are confident and varied."""
    lm = CharLM(Vocab(TEXT), H, nonlinearity=nonlinearity, dtype=dtype, seed=seed,
                init="uniform")
    lm.parameters[...] *= scale
    return lm


def numpy_generate(lm, prefix, n, *, greedy=False, temperature=1.0, top_k=None, seed=0):
    """d2l's predict in NumPy (float64), sampling with the documented rule and RNG."""
    p = {k: v.astype(np.float64) for k, v in lm.params.items()}
    phi = np.tanh if lm.nonlinearity == "tanh" else (lambda z: np.maximum(z, 0))
    s = _splitmix64_seed(seed)
    h = np.zeros(lm.hidden_size)
    ids = list(lm.vocab.encode(prefix))
    for x in ids:                                         # warm-up on the prefix
        h = phi(p["W_xh"][x] + h @ p["W_hh"] + p["b_h"])
    out = []
    for i in range(n):
        if i:
            h = phi(p["W_xh"][out[-1]] + h @ p["W_hh"] + p["b_h"])
        o = h @ p["W_hq"] + p["b_q"]                      # O_t = H_t W_hq + b_q
        if greedy:
            out.append(int(np.argmax(o)))
            continue
        keep = np.ones(len(o), bool)
        if top_k is not None and top_k < len(o):
            keep = o >= np.sort(o)[-top_k]                # ties at the boundary kept
        w = np.where(keep, np.exp((o - o.max()) / temperature), 0.0)
        u = (_xoshiro_next(s) >> 11) / 2.0**53 * w.sum()  # uniform [0, total)
        c = np.cumsum(w)
        j = int(np.searchsorted(c, u, side="right"))      # first id with cumsum > u
        out.append(min(j, int(np.flatnonzero(keep)[-1])))
    return prefix + lm.vocab.decode(np.array(out, np.int64))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_greedy_matches_numpy(nonlinearity):
    lm = _model(nonlinearity=nonlinearity, scale=1.0 if nonlinearity == "relu" else 4.0)
    for prefix in ("t", "time traveller", "convenient "):
        got = lm.generate(prefix, 60, greedy=True)
        assert got == numpy_generate(lm, prefix, 60, greedy=True)
        assert got.startswith(prefix)
        assert len(lm.generate_ids(prefix, 60, greedy=True)) == 60


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.6, None), (1.5, 4), (1.0, 1)])
def test_sampling_matches_numpy(temperature, top_k):
    lm = _model(scale=1.5)
    got = lm.generate("the ", 80, temperature=temperature, top_k=top_k, seed=123)
    assert got == numpy_generate(lm, "the ", 80, temperature=temperature, top_k=top_k, seed=123)


def test_float32_greedy_close_to_numpy():
    lm = _model(dtype="float32")
    got = lm.generate("time ", 40, greedy=True)
    ref = numpy_generate(lm, "time ", 40, greedy=True)
    # float32 rounding may flip a near-tie eventually; the start must agree
    assert got[:20] == ref[:20]


def test_top_k_1_is_greedy():
    lm = _model()
    assert lm.generate("the", 50, top_k=1, seed=9) == lm.generate("the", 50, greedy=True)


def test_seeded_generation_repeats():
    lm = _model(dtype="float32", scale=1.0)
    a = lm.generate("the", 200, temperature=1.0, seed=42)
    assert a == lm.generate("the", 200, temperature=1.0, seed=42)
    assert a != lm.generate("the", 200, temperature=1.0, seed=43)
    assert lm.vocab.decode(lm.generate_ids("the", 200, seed=42)) == a[3:]
    # seed=None: fresh entropy each call (equal outputs would be astronomically unlikely)
    assert lm.generate("the", 200, seed=None) != lm.generate("the", 200, seed=None)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 1000])
def test_stream_equals_generate(chunk_size):
    lm = _model(scale=1.0)
    full = lm.generate("the ", 77, temperature=0.8, top_k=6, seed=5)
    chars = list(lm.stream("the ", 77, temperature=0.8, top_k=6, seed=5, chunk_size=chunk_size))
    assert len(chars) == 77
    assert "the " + "".join(chars) == full


def test_stream_unbounded_and_lazy():
    lm = _model(scale=1.0)
    it = lm.stream("the", None, seed=1)
    first = [next(it) for _ in range(40)]
    assert "".join(first) == lm.generate("the", 40, seed=1)[3:]


def test_sampling_frequencies_follow_softmax():
    """With zero weights every step draws from softmax(b_q / T)."""
    lm = CharLM(Vocab("abcd"), 3, seed=0)
    lm.parameters[...] = 0
    logits = np.array([0.0, 1.0, -1.0, 0.5, 2.0])    # <unk>, then the four letters
    lm.params["b_q"][...] = logits
    n = 20000
    for T in (1.0, 0.5):
        ids = lm.generate_ids("a", n, temperature=T, seed=2024)
        freq = np.bincount(ids, minlength=5) / n
        p = np.exp(logits / T) / np.exp(logits / T).sum()
        sigma = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(freq - p) < 5 * sigma + 1e-12), (T, freq, p)


def test_generate_length_zero_and_unknown_prefix():
    lm = _model()
    assert lm.generate("the", 0) == "the"
    # characters outside the vocabulary act as <unk> when warming up
    out = lm.generate("the ☃ ", 10, greedy=True)
    assert out.startswith("the ☃ ")
    assert out == numpy_generate(lm, "the ☃ ", 10, greedy=True)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(prefix="", length=5), ValueError, "prefix"),
    (dict(prefix=3, length=5), TypeError, "prefix"),
    (dict(prefix="a", length=-1), ValueError, "length"),
    (dict(prefix="a", length=2.5), TypeError, "length"),
    (dict(prefix="a", length=5, temperature=0), ValueError, "temperature"),
    (dict(prefix="a", length=5, temperature=-1), ValueError, "temperature"),
    (dict(prefix="a", length=5, temperature=math.nan), ValueError, "temperature"),
    (dict(prefix="a", length=5, top_k=0), ValueError, "top_k"),
    (dict(prefix="a", length=5, seed=-1), ValueError, "seed"),
    (dict(prefix="a", length=5, seed="x"), TypeError, "seed"),
    (dict(prefix="a", length=5, num_threads=0), ValueError, "num_threads"),
    (dict(prefix="a", length=5, num_threads=2.0), TypeError, "num_threads"),
])
def test_generate_bad_arguments(kwargs, exc, match):
    lm = _model()
    with pytest.raises(exc, match=match):
        lm.generate(**kwargs)


def test_stream_checks_arguments_eagerly():
    lm = _model()
    with pytest.raises(ValueError, match="prefix"):
        lm.stream("", 5)                    # raised at the call, before any next()
    with pytest.raises(ValueError, match="chunk_size"):
        lm.stream("a", 5, chunk_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        lm.stream("a", 5, num_threads=-1)


def test_greedy_ignores_temperature():
    lm = _model()
    assert lm.generate("th", 30, greedy=True, temperature=0) == lm.generate("th", 30, greedy=True)


def test_generate_refuses_nonfinite_params():
    lm = _model()
    lm.params["W_hh"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        lm.generate("the", 5)


def test_generation_in_threads_matches_serial():
    """The compiled loop releases the GIL; concurrent calls share nothing mutable."""
    from concurrent.futures import ThreadPoolExecutor
    lm = _model(dtype="float32", scale=1.0)
    serial = [lm.generate("the ", 300, seed=s) for s in range(8)]
    with ThreadPoolExecutor(4) as ex:
        threaded = list(ex.map(lambda s: lm.generate("the ", 300, seed=s), range(8)))
    assert threaded == serial


def test_wide_model_two_threads_matches_numpy():
    """H = 256 and long runs split each step across two threads (the default with
    two or more threads): the text still equals the NumPy reference's, and the same
    for every thread count."""
    lm = _model(H=256, scale=0.6)
    ref = numpy_generate(lm, "the ", 300, temperature=0.8, seed=11)
    for nt in (1, 2):
        assert lm.generate("the ", 300, temperature=0.8, seed=11, num_threads=nt) == ref
    assert lm.generate("the ", 300, greedy=True, num_threads=2) == numpy_generate(
        lm, "the ", 300, greedy=True)
    chunks = "".join(lm.stream("the ", 300, temperature=0.8, seed=11, chunk_size=64,
                               num_threads=2))
    assert "the " + chunks == ref
