"""fastrnn._lm kernels against independent pure-Python / NumPy formulas."""
import numpy as np
import pytest

_lm = pytest.importorskip("fastrnn._lm")
from fastrnn import _rnn  # noqa: E402
from conftest import competing_thread, skip_without_two_openmp_threads  # noqa: E402

M64 = (1 << 64) - 1
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-13}


# ---------------------------------------------------------------- RNG
def _splitmix64_seed(seed):
    """Reference: 4 splitmix64 outputs (Vigna's splitmix64.c)."""
    x, out = seed, []
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(z ^ (z >> 31))
    return out


def _xoshiro_next(s):
    """Reference: xoshiro256** (Blackman & Vigna, xoshiro256starstar.c)."""
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64  # noqa: E731
    result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
    t = (s[1] << 17) & M64
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 45)
    return result


@pytest.mark.parametrize("seed", [0, 1, 42, 2**64 - 1])
def test_rng_matches_reference(seed):
    st = np.zeros(4, np.uint64)
    _lm.rng_seed(np.uint64(seed), st)
    ref = _splitmix64_seed(seed)
    assert st.tolist() == ref
    out = np.zeros(50, np.uint64)
    _lm.rng_next(st, out)
    assert out.tolist() == [_xoshiro_next(ref) for _ in range(50)]
    assert st.tolist() == ref  # the state advanced identically


def test_splitmix64_known_answer():
    # First outputs of splitmix64 seeded with 0 (widely published test vector).
    assert _splitmix64_seed(0)[:2] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_rng_uniform_is_top_53_bits():
    st = np.zeros(4, np.uint64)
    _lm.rng_seed(np.uint64(7), st)
    st2 = st.copy()
    u = np.zeros(1000, np.float64)
    _lm.rng_uniform(st, u)
    raw = np.zeros(1000, np.uint64)
    _lm.rng_next(st2, raw)
    np.testing.assert_array_equal(u, (raw >> np.uint64(11)).astype(np.float64) / 2.0**53)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.05


def test_rng_rejects_bad_state():
    with pytest.raises(ValueError, match="4 words"):
        _lm.rng_seed(np.uint64(1), np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="4 words"):
        _lm.rng_next(np.zeros(5, np.uint64), np.zeros(2, np.uint64))


# ---------------------------------------------------------------- clipping
@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_and_clip(dtype, rng):
    g = rng.standard_normal(1001).astype(dtype)
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    assert _lm.global_norm(g) == pytest.approx(norm, rel=1e-12)
    # above the threshold: g <- theta/||g|| g
    theta = norm / 3
    c = g.copy()
    assert _lm.clip_global_norm(c, theta) == pytest.approx(norm, rel=1e-12)
    np.testing.assert_allclose(c, g * (theta / norm), rtol=RTOL[dtype])
    np.testing.assert_allclose(np.sqrt(np.sum(c.astype(np.float64) ** 2)), theta, rtol=1e-6)
    # below: unchanged, bit for bit
    c = g.copy()
    _lm.clip_global_norm(c, norm * 2)
    np.testing.assert_array_equal(c, g)


def test_clip_global_norm_nonfinite_untouched():
    g = np.array([1.0, np.nan, 2.0])
    c = g.copy()
    assert np.isnan(_lm.clip_global_norm(c, 1.0))
    np.testing.assert_array_equal(c, g)
    g = np.array([1e300, 1e300])
    assert np.isinf(_lm.clip_global_norm(g.copy(), 1.0))
    assert _lm.global_norm(np.zeros(0)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_value(dtype, rng):
    g = (rng.standard_normal(500) * 10).astype(dtype)
    c = g.copy()
    _lm.clip_value(c, 5.0)
    np.testing.assert_array_equal(c, np.clip(g, -5, 5))


# ---------------------------------------------------------------- optimizers
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd(dtype, rng):
    p = rng.standard_normal(333).astype(dtype)
    ref = p.astype(np.float64)
    for _ in range(3):
        g = rng.standard_normal(333).astype(dtype)
        _lm.sgd_update(p, g, 0.1)
        ref -= 0.1 * g.astype(np.float64)
    np.testing.assert_allclose(p, ref, rtol=RTOL[dtype] * 10, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad(dtype, rng):
    p = rng.standard_normal(333).astype(dtype)
    mem = np.zeros_like(p)
    ref, rmem = p.astype(np.float64), np.zeros(333)
    for _ in range(4):
        g = rng.standard_normal(333).astype(dtype)
        _lm.adagrad_update(p, g, mem, 0.1, 1e-8)
        g64 = g.astype(np.float64)
        rmem += g64 * g64                               # min-char-rnn
        ref += -0.1 * g64 / np.sqrt(rmem + 1e-8)
    np.testing.assert_allclose(mem, rmem, rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(p, ref, rtol=RTOL[dtype] * 10, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam(dtype, rng):
    n, lr, b1, b2, eps = 333, 0.01, 0.9, 0.999, 1e-8
    p = rng.standard_normal(n).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    ref, rm, rv = p.astype(np.float64), np.zeros(n), np.zeros(n)
    for t in range(1, 6):
        g = rng.standard_normal(n).astype(dtype)
        _lm.adam_update(p, g, m, v, lr, b1, b2, eps, t)
        g64 = g.astype(np.float64)
        rm = b1 * rm + (1 - b1) * g64                   # Kingma & Ba, Algorithm 1
        rv = b2 * rv + (1 - b2) * g64 ** 2
        mhat, vhat = rm / (1 - b1 ** t), rv / (1 - b2 ** t)
        ref -= lr * mhat / (np.sqrt(vhat) + eps)
    np.testing.assert_allclose(m, rm, rtol=RTOL[dtype] * 10, atol=1e-7)
    np.testing.assert_allclose(v, rv, rtol=RTOL[dtype] * 10, atol=1e-9)
    np.testing.assert_allclose(p, ref, rtol=RTOL[dtype] * 10, atol=1e-6)
    with pytest.raises(ValueError, match="step"):
        _lm.adam_update(p, g, m, v, lr, b1, b2, eps, 0)


def test_kernels_restore_fp_mode(rng):
    before = _rnn.fp_mode()
    g = rng.standard_normal(64)
    p = np.zeros(64)
    _lm.sgd_update(p, g, 0.1)
    _lm.adam_update(p, g, np.zeros(64), np.zeros(64), 0.1, 0.9, 0.999, 1e-8, 1)
    _lm.clip_global_norm(g, 0.5)
    assert _rnn.fp_mode() == before


def test_adam_subnormal_moments_flushed():
    """Tiny gradients make v subnormal; with FTZ the kernel flushes them to zero."""
    if not _rnn.ftz_supported():
        pytest.skip("no flush-to-zero on this platform")
    g = np.full(8, 1e-30, np.float32)     # g*g = 1e-60 underflows in float32
    p, m, v = np.zeros(8, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32)
    _lm.adam_update(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 1)
    assert np.all(v == 0) and np.all(np.isfinite(p))


# ---------------------------------------------------------------- generation kernel
def _params(rng, V, H, dtype=np.float64, scale=1.0):
    from fastrnn import init_params
    p = init_params(V, H, dtype=dtype, seed=int(rng.integers(1 << 31)), init="uniform")
    return {k: np.ascontiguousarray(v * scale, dtype=dtype) for k, v in p.items()}


def _gen(p, feed, n, h, rng_state, temp=1.0, top_k=0, greedy=False, nonlin="tanh", nt=1):
    """The Elman model's generation: fastrnn._layers.generate_stack with one layer
    (the one sampling loop of every cell; fastrnn._lm keeps the sampler's seeding)."""
    from fastrnn import _layers
    nl = {"tanh": _layers.NONLIN_TANH, "relu": _layers.NONLIN_RELU}.get(nonlin, 99)
    out = np.empty(n, np.int32)
    _layers.generate_stack(_layers.CELL_RNN, nl, [(p["W_xh"], p["W_hh"], p["b_h"], None)],
                           p["W_hq"], p["b_q"], np.asarray(feed, np.int32), out,
                           h.reshape(1, -1), None, rng_state, temp, top_k, 1.0, greedy, nt)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_generate_chunks_equal_one_call(dtype, rng):
    p = _params(rng, 11, 7, dtype, scale=3.0)
    s1 = np.zeros(4, np.uint64)
    _lm.rng_seed(np.uint64(5), s1)
    s2 = s1.copy()
    h1, h2 = np.zeros(7, dtype), np.zeros(7, dtype)
    whole = _gen(p, [1, 2, 3], 40, h1, s1, temp=0.9, top_k=5)
    parts, feed = [], [1, 2, 3]
    for n in (1, 7, 13, 19):
        o = _gen(p, feed, n, h2, s2, temp=0.9, top_k=5)
        parts.append(o)
        feed = o[-1:]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(s1, s2)


def test_generate_kernel_rejects_bad_buffers(rng):
    p = _params(rng, 5, 3)
    st = np.zeros(4, np.uint64)
    with pytest.raises(ValueError, match="feed"):
        _gen(p, [], 3, np.zeros(3), st)
    with pytest.raises(ValueError, match="temperature"):
        _gen(p, [1], 3, np.zeros(3), st, temp=0.0)
    with pytest.raises(ValueError, match="nonlin"):
        _gen(p, [1], 3, np.zeros(3), st, nonlin="sigmoid")
    with pytest.raises(ValueError, match="h"):
        _gen(p, [1], 3, np.zeros(4), st)


@pytest.mark.parametrize("V,k", [(10, 1), (10, 3), (10, 9), (50, 7), (3, 2)])
def test_top_k_only_draws_the_k_largest(rng, V, k):
    """Zero weights: every step samples softmax(b_q / T) restricted to the top k."""
    H = 4
    p = {k_: np.zeros(s) for k_, s in
         {"W_xh": (V, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, V), "b_q": (V,)}.items()}
    p["b_q"] = rng.standard_normal(V) * 0.3          # distinct, fairly flat logits
    st = np.zeros(4, np.uint64)
    _lm.rng_seed(np.uint64(11), st)
    out = _gen(p, [0], 3000, np.zeros(H), st, temp=1.0, top_k=k)
    top = set(np.argsort(-p["b_q"])[:k].tolist())
    assert set(np.unique(out).tolist()) == top


# ------------------------------------------------ generation split across two threads
def _gen_nt(p, feed, n, nt, seed=7, **kw):
    """_gen from zeros with a seeded sampler on nt threads: (ids, h, rng state)."""
    h = np.zeros(p["W_hh"].shape[0], p["W_hh"].dtype)
    state = np.empty(4, np.uint64)
    _lm.rng_seed(seed, state)
    return _gen(p, feed, n, h, state, nt=nt, **kw), h, state


@pytest.fixture
def split_every_size():
    from fastrnn import _layers
    old = _layers.set_gen_split_thresholds(0, 1)
    yield
    _layers.set_gen_split_thresholds(*old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [7, 64, 130, 256])
def test_generate_split_equals_one_thread(dtype, H, rng, split_every_size):
    """With two threads each step's hidden units are cut on a multiple of 64 and the
    draw is taken by each thread from its own copy of the sampler: ids, final state
    and sampler state are bitwise those of one thread (feed-only steps, single
    draws, top-k, greedy and relu included)."""
    p = _params(rng, 11, H, dtype, scale=2.0)
    modes = [dict(), dict(temp=0.7, top_k=3), dict(greedy=True), dict(nonlin="relu")]
    for mode in modes:
        for feed, n in (([3], 1), ([3], 2), ([1, 2, 3, 4, 5], 1), ([4], 40), ([0, 9], 97)):
            one = _gen_nt(p, feed, n, 1, **mode)
            for nt in (2, 3):
                two = _gen_nt(p, feed, n, nt, **mode)
                for a, b, what in zip(one, two, ("ids", "h", "rng")):
                    np.testing.assert_array_equal(b, a, err_msg=f"{what} {mode} n={n}")


def test_generate_split_any_schedule(rng):
    """A thread that finds its partner late takes both parts of a step and the late
    one skips ahead, advancing its copy of the sampler past the draws it missed;
    with another thread competing for the cores, repeated runs (split by default
    at this size) still give bitwise the first run's ids, state and sampler."""
    skip_without_two_openmp_threads()
    p = _params(rng, 28, 256, np.float32, scale=1.5)
    first = _gen_nt(p, [1, 2, 3], 500, 2)
    np.testing.assert_array_equal(first[0], _gen_nt(p, [1, 2, 3], 500, 1)[0])
    with competing_thread():
        for _ in range(60):
            again = _gen_nt(p, [1, 2, 3], 500, 2)
            for a, b in zip(first, again):
                np.testing.assert_array_equal(b, a)
