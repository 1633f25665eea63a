"""Compiled kernels against the float64 NumPy reference, every output."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import reference
from conftest import competing_thread, make_problem, skip_without_two_openmp_threads

GRAD_NAMES = ["W_xh", "W_hh", "b_h", "W_hq", "b_q", "h0"]
# float64: 1e-10 relative; float32 (vs the float64 reference): 1e-4 relative.
# "relative" is measured against the largest magnitude of each tensor, so that
# entries that are tiny by cancellation do not make the test meaningless.
RTOL = {np.float64: 1e-10, np.float32: 1e-4}


def assert_close(actual, desired, rtol, name):
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, name
    scale = max(np.abs(desired).max(initial=0.0), 1e-30)
    err = np.abs(actual - desired).max(initial=0.0) / scale
    assert err <= rtol, f"{name}: max error {err:.3g} relative to max|ref| exceeds {rtol:g}"


@pytest.fixture(autouse=True)
def small_dz_blocks():
    """BPTT blocks by steps and rows only, as for a large model: the test problems
    here are small enough to fit one 2 MiB block, and the SHAPES marked "blocks"
    are there to run the blockwise path."""
    from fastrnn import _core
    old = _core._DZ_BLOCK_BYTES
    _core._DZ_BLOCK_BYTES = 0
    _core.clear_workspace()
    yield
    _core._DZ_BLOCK_BYTES = old
    _core.clear_workspace()


def test_dz_block_rule():
    """Steps of dZ per BPTT block: at least 8 steps, 256 rows and as many steps as
    fit in _DZ_BLOCK_BYTES (2 MiB by default), at most T; the buffer the kernels get
    follows it."""
    from fastrnn import _core
    _core._DZ_BLOCK_BYTES = 2 << 20
    assert _core._dz_steps(32, 1024, 32, 4) == 16     # d2l: 128 KiB a step
    assert _core._dz_steps(32, 1024, 32, 8) == 8      # float64: 256 KiB a step
    assert _core._dz_steps(64, 64, 256, 4) == 32      # medium
    assert _core._dz_steps(64, 64, 1024, 4) == 8      # large: the peak-memory budget
    assert _core._dz_steps(64, 1, 256, 4) == 64       # one sequence: whole
    assert _core._dz_steps(5, 10_000, 512, 4) == 5    # never more than T
    _core._DZ_BLOCK_BYTES = 0
    assert _core._dz_steps(40, 40, 33, 8) == 8        # steps and rows only
    assert _core._dz_steps(100, 3, 7, 8) == 86        # ceil(256 / 3)
    _core.clear_workspace()
    assert _core._buffers(np.float32, 19, 40, 33, 12)[1].shape == (8 * 40, 33)


def test_compiled_kernels_are_in_use():
    info = fastrnn.build_info()
    assert info["compiled"], info.get("import_error")


SHAPES = [  # (B, T, D, H, V)
    (5, 7, 11, 9, 13),      # B not divisible by 2, 3 or 8
    (1, 6, 5, 4, 5),        # B = 1 (gemv path)
    (4, 1, 5, 4, 5),        # T = 1
    (3, 5, 5, 1, 5),        # H = 1
    (3, 5, 1, 4, 5),        # D = 1
    (3, 5, 5, 4, 1),        # V = 1
    (17, 9, 28, 32, 28),    # a small char-LM
    (13, 4, 7, 33, 40),     # packed micro-kernel: partial row tiles and column panels
    (8, 3, 6, 70, 3),       # H over two AVX-512 panels; V under one (reads past rows)
    (40, 19, 6, 33, 12),    # BPTT in blocks of 8 steps (8 + 8 + 3), dZ not kept whole
    (3, 100, 5, 7, 9),      # blocks of 86 + 14 steps
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_threads", [1, 2, 3, 8])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%dT%dD%dH%dV%d" % s)
def test_kernels_match_reference(rng, dtype, num_threads, nonlinearity, dense, shape):
    B, T, D, H, V = shape
    p, p64, X, Y, h0 = make_problem(rng, B, T, D, H, V, dtype=dtype, dense=dense)
    rtol = RTOL[dtype]
    logits, hT = fastrnn.forward(p, X, h0, nonlinearity=nonlinearity,
                                 num_threads=num_threads)
    r_logits, r_hT = reference.forward(p64, X, h0, nonlinearity=nonlinearity)
    assert logits.dtype == dtype and hT.dtype == dtype
    assert_close(logits, r_logits, rtol, "logits")
    assert_close(hT, r_hT, rtol, "forward h_T")

    loss, grads, hT2 = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity,
                                             num_threads=num_threads)
    r_loss, r_grads, r_hT2 = reference.loss_and_grad(p64, X, Y, h0,
                                                     nonlinearity=nonlinearity)
    assert isinstance(loss, float)
    assert abs(loss - r_loss) <= rtol * abs(r_loss), ("loss", loss, r_loss)
    assert_close(hT2, r_hT2, rtol, "h_T")
    assert set(grads) == set(GRAD_NAMES)
    for name in GRAD_NAMES:
        ref_shape = p[name].shape if name != "h0" else (B, H)
        assert grads[name].shape == ref_shape and grads[name].dtype == dtype, name
        assert_close(grads[name], r_grads[name], rtol, name)


@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("BT", [(13, 12), (40, 21)], ids=["whole", "blocks"])
def test_thread_counts_agree(rng, dense, nonlinearity, BT):
    p, _, X, Y, h0 = make_problem(rng, BT[0], BT[1], 10, 24, 10, dense=dense)
    base = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity, num_threads=1)
    for nt in (2, 3, 4, 8, 13, 20):
        loss, grads, hT = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity,
                                                num_threads=nt)
        assert abs(loss - base[0]) <= 1e-12 * abs(base[0])
        assert_close(hT, base[2], 1e-12, f"h_T nt={nt}")
        for name in GRAD_NAMES:
            assert_close(grads[name], base[1][name], 1e-12, f"{name} nt={nt}")


@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
def test_concatenation_identity(rng, dense):
    """d2l: X_t W_xh + H_{t-1} W_hh == [X_t, H_{t-1}] @ [W_xh; W_hh]."""
    B, T, D, H, V = 4, 6, 7, 5, 7
    p, _, X, _, h0 = make_problem(rng, B, T, D, H, V, dense=dense)
    _, _, states = fastrnn.forward(p, X, h0, return_states=True, num_threads=2)
    Xin = X if dense else np.eye(D)[X]                   # one-hot (B, T, D)
    Hprev = np.concatenate([h0[:, None, :], states["H"][:, :-1]], axis=1)
    W = np.concatenate([p["W_xh"], p["W_hh"]], axis=0)  # (D + H, H)
    Z = np.concatenate([Xin, Hprev], axis=-1) @ W + p["b_h"]
    np.testing.assert_allclose(states["Z"], Z, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(states["H"], np.tanh(Z), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("V", [1, 2, 15, 16, 17, 28, 31, 32, 33, 47, 64, 65, 100])
def test_softmax_rows_every_vocab_tail(rng, V):
    """float32 softmax cross-entropy rows (AVX-512: 16-wide vectors, the row's tail
    as its overlapping last 16 values, 16 rows per block) against the float64
    reference, for vocabularies around every multiple of 16 and row counts that
    leave a partial block; every target column is hit, the tail's included."""
    B, T, D, H = 37, 3, 5, 8       # 111 rows per step set: 6 blocks of 16 and 15
    p, p64, X, _, h0 = make_problem(rng, B, T, D, H, V, dtype=np.float32, scale=3.0)
    Y = (np.arange(B * T).reshape(B, T) * 7) % V
    for nt in (1, 2):
        loss, g, _ = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=nt)
        r_loss, r_g, _ = reference.loss_and_grad(p64, X, Y, h0)
        assert abs(loss - r_loss) <= 1e-5 * abs(r_loss), (loss, r_loss)
        for name in GRAD_NAMES:
            assert_close(g[name], r_g[name], 1e-4, f"{name} V={V} nt={nt}")
        # the logits themselves (the rows before the softmax) at every column
        logits, _ = fastrnn.forward(p, X, h0, num_threads=nt)
        r_logits, _ = reference.forward(p64, X, h0)
        assert_close(logits, r_logits, 1e-5, f"logits V={V}")


def test_float32_tanh_within_a_few_ulp():
    """The float32 tanh (AVX-512: 1/Q from vrcp14ps and a Newton step) against
    float64 tanh over [-12, 12] and the edge cases of its branches: the clamp at
    7.9, tiny |z| (tanh(z) = z) and zero."""
    H = 64
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-6, 3.9e-4, 4.1e-4, -4.1e-4, 7.9053, 7.906,
               -7.906, 9.0, 20.0, -20.0, 0.5, -0.5, 1.0, 2.0]
    z = np.concatenate([np.linspace(-12, 12, 100 * H - len(special)), special])
    z = z.astype(np.float32).reshape(100, H)
    p = {"W_xh": z, "W_hh": np.zeros((H, H), np.float32), "b_h": np.zeros(H, np.float32),
         "W_hq": np.zeros((H, 3), np.float32), "b_q": np.zeros(3, np.float32)}
    X = np.arange(100).reshape(100, 1)        # step 1 of row b: Z = W_xh[b] exactly
    for nt in (1, 2):
        _, _, st = fastrnn.forward(p, X, return_states=True, num_threads=nt)
        Z, Hh = st["Z"][:, 0], st["H"][:, 0]
        np.testing.assert_array_equal(Z, z)
        exact = np.tanh(z.astype(np.float64))
        ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        err = np.abs(Hh.astype(np.float64) - exact) / ulp
        assert err.max() <= 5, (err.max(), z.ravel()[err.argmax()])
        assert np.all(np.abs(Hh) <= 1)
        np.testing.assert_array_equal(np.signbit(Hh), np.signbit(Z))  # tanh(-0.0) = -0.0


def test_zero_h0_equals_none(rng):
    p, _, X, Y, _ = make_problem(rng, 3, 4, 5, 6, 5, h0=False)
    a = fastrnn.loss_and_grad(p, X, Y)
    b = fastrnn.loss_and_grad(p, X, Y, np.zeros((3, 6)))
    assert a[0] == b[0]
    for name in GRAD_NAMES:
        np.testing.assert_array_equal(a[1][name], b[1][name])


def test_segments_chain_like_one_sequence(rng):
    """Forward over [X1, X2] equals forward over X1 then X2 from h_T (detached state)."""
    p, _, X, _, h0 = make_problem(rng, 3, 10, 6, 8, 6)
    logits, hT = fastrnn.forward(p, X, h0)
    l1, h1 = fastrnn.forward(p, X[:, :4], h0)
    l2, h2 = fastrnn.forward(p, X[:, 4:], h1)
    np.testing.assert_allclose(np.concatenate([l1, l2], axis=1), logits, rtol=1e-12)
    np.testing.assert_allclose(h2, hT, rtol=1e-12)


def test_short_and_long_sequences_in_turn_match_the_reference(rng):
    """T = 2, then T = 50, then T = 2 again (the workspace grows, then is reused
    oversized): every gradient VALUE matches the float64 reference each time, so
    nothing of the longer call leaks into the shorter one (the shapes equal the
    parameter shapes by construction; the values are what can be wrong)."""
    p, p64, X, Y, _ = make_problem(rng, 2, 50, 5, 6, 5, h0=False)
    for T_ in (2, 50, 2):
        loss, g, hT = fastrnn.loss_and_grad(p, X[:, :T_], Y[:, :T_])
        r_loss, r_g, r_hT = reference.loss_and_grad(p64, X[:, :T_], Y[:, :T_])
        assert loss == pytest.approx(r_loss, rel=1e-12), T_
        np.testing.assert_allclose(hT, r_hT, rtol=1e-10, atol=1e-13)
        for name in GRAD_NAMES:
            assert g[name].shape == (p[name].shape if name in p else (2, 6))
            np.testing.assert_allclose(g[name], r_g[name], rtol=1e-10, atol=1e-13,
                                       err_msg=f"{name}, T={T_}")


def test_subnormals_flushed_without_leaking_mode(rng):
    """Tiny weights drive the hidden state subnormal; results stay right and the
    caller's floating-point mode is unchanged afterwards."""
    from fastrnn import _rnn
    before = _rnn.fp_mode()
    p, p64, X, Y, _ = make_problem(rng, 4, 30, 5, 8, 5, dtype=np.float32, h0=False,
                                   init="d2l")
    loss, grads, hT = fastrnn.loss_and_grad(p, X, Y, num_threads=2)
    r_loss, r_grads, r_hT = reference.loss_and_grad(p64, X, Y)
    assert abs(loss - r_loss) <= 1e-4 * r_loss
    # every gradient, to float32 accuracy relative to its largest entry (values the
    # kernel flushed to zero are below that by far more than 1e-4)
    for name in GRAD_NAMES:
        scale = max(np.abs(r_grads[name]).max(), 1e-30)
        err = np.abs(grads[name].astype(np.float64) - r_grads[name]).max() / scale
        assert err <= 1e-4, (name, err, scale)
    assert np.abs(hT - r_hT).max() <= 1e-4 * max(np.abs(r_hT).max(), 1e-30)
    assert _rnn.fp_mode() == before
    # a float32 subnormal computed after the call is still representable
    assert np.float32(1e-38) * np.float32(1e-3) != 0


def test_inputs_not_modified(rng):
    p, _, X, Y, h0 = make_problem(rng, 3, 4, 5, 6, 5, dense=True)
    copies = [{k: v.copy() for k, v in p.items()}, X.copy(), Y.copy(), h0.copy()]
    fastrnn.loss_and_grad(p, X, Y, h0)
    for k in p:
        np.testing.assert_array_equal(p[k], copies[0][k])
    np.testing.assert_array_equal(X, copies[1])
    np.testing.assert_array_equal(Y, copies[2])
    np.testing.assert_array_equal(h0, copies[3])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
@pytest.mark.parametrize("H", [1, 7, 64, 130, 256])
def test_single_sequence_split_across_threads(rng, dtype, dense, H):
    """B = 1 with several threads splits each step's hidden units between two
    threads (claimed per step, on by default; forced here for every H). The cut is
    on a multiple of 64 units, so every unit takes the same code path as on one
    thread: states are bitwise equal, and so are the gradients where the backward
    pass's other products are order-fixed (the packed kernels); the loss to
    rounding (its per-thread partial sums are added in another grouping)."""
    from fastrnn import _rnn
    old = _rnn.set_split_one_sequence(True)
    try:
        _check_split(rng, dtype, dense, H)
    finally:
        _rnn.set_split_one_sequence(old)


def _check_split(rng, dtype, dense, H):
    from fastrnn import _rnn
    # the backward pass's other products (dO W_hq^T, the weight gradients) are
    # order-fixed on the packed kernels; BLAS may round differently per chunking
    exact_backward = _rnn.packed_gemm_level() >= 1
    p, _, X, Y, h0 = make_problem(rng, 1, 23, 9, H, 11, dtype=dtype, dense=dense)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for nonlinearity in ("tanh", "relu"):
        _, h1, s1 = fastrnn.forward(p, X, h0, nonlinearity=nonlinearity, num_threads=1,
                                    return_states=True)
        one = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity, num_threads=1)
        for nt in (2, 3):
            _, h2, s2 = fastrnn.forward(p, X, h0, nonlinearity=nonlinearity,
                                        num_threads=nt, return_states=True)
            np.testing.assert_array_equal(s2["Z"], s1["Z"])
            np.testing.assert_array_equal(s2["H"], s1["H"])
            np.testing.assert_array_equal(h2, h1)
            two = fastrnn.loss_and_grad(p, X, Y, h0, nonlinearity=nonlinearity,
                                        num_threads=nt)
            assert abs(two[0] - one[0]) <= tol * abs(one[0])
            np.testing.assert_array_equal(two[2], one[2])
            for name in GRAD_NAMES:
                if exact_backward and not (dense and name == "W_xh"):
                    np.testing.assert_array_equal(two[1][name], one[1][name], err_msg=name)
                else:  # BLAS's result may depend on how rows or columns are chunked
                    assert_close(two[1][name], one[1][name], tol, name)


def test_single_sequence_split_any_schedule(rng):
    """Which thread computes which part of a B = 1 step depends on timing: a thread
    finding its partner late takes the partner's part too, and a thread that comes
    late skips steps already taken (csrc/_steps.h). Whatever the schedule, every
    part is computed once with the same arithmetic, so repeated calls with another
    thread competing for the cores give bitwise the same results as the first."""
    from fastrnn import _rnn
    skip_without_two_openmp_threads()
    old = _rnn.set_split_one_sequence(True)
    try:
        for dtype, dense in ((np.float32, False), (np.float64, True)):
            p, _, X, Y, h0 = make_problem(rng, 1, 40, 9, 130, 11, dtype=dtype, dense=dense)
            loss0, g0, hT0 = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2)
            logits0, _ = fastrnn.forward(p, X, h0, num_threads=2)
            with competing_thread():
                for _ in range(150):
                    loss, g, hT = fastrnn.loss_and_grad(p, X, Y, h0, num_threads=2)
                    assert loss == loss0
                    np.testing.assert_array_equal(hT, hT0)
                    for name in GRAD_NAMES:
                        np.testing.assert_array_equal(g[name], g0[name], err_msg=name)
                    np.testing.assert_array_equal(fastrnn.forward(p, X, h0, num_threads=2)[0],
                                                  logits0)
    finally:
        _rnn.set_split_one_sequence(old)


KERNEL_LEVELS = {0: "BLAS (no hand-written gemm)", 1: "AVX2+FMA micro-kernels",
                 2: "AVX-512 micro-kernels"}
KERNEL_NAMES = {0: "blas", 1: "avx2", 2: "avx512"}


@pytest.mark.parametrize("level", sorted(KERNEL_LEVELS), ids=lambda l: KERNEL_LEVELS[l])
def test_every_kernel_variant_matches_reference(level, record_property):
    """The products run on a variant picked from the CPU (csrc/_pgemm.h). The level
    this CPU picks is covered by the whole suite (this test only confirms it is the
    one in use); each lower level is forced with FASTRNN_KERNEL_LEVEL and this file
    rerun under it, as a machine without the better one would run; a level above the
    CPU's SKIPS, saying it was not tested, so a green run on an AVX2 machine is not
    mistaken for AVX-512 coverage. conftest.py prints the levels that ran in the
    summary ("fastrnn kernel levels: ...")."""
    from fastrnn import _rnn
    detected = _rnn.packed_gemm_level()
    if level > detected:
        pytest.skip(f"kernel level {level} ({KERNEL_LEVELS[level]}) NOT TESTED: this "
                    f"run's kernels go up to level {detected} (the CPU, or "
                    "FASTRNN_KERNEL_LEVEL)")
    if level == detected:
        assert fastrnn.build_info()["kernels"] == KERNEL_NAMES[level]
        record_property("fastrnn_kernel_level", (level, "default: the whole suite"))
        return
    env = dict(os.environ, FASTRNN_KERNEL_LEVEL=str(level))
    probe = subprocess.run([sys.executable, "-c",
                            "from fastrnn import _rnn; print(_rnn.packed_gemm_level())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == str(level)
    names = subprocess.run([sys.executable, "-c",
                            "import fastrnn; print(fastrnn.build_info()['kernels'])"],
                           env=env, capture_output=True, text=True, check=True)
    assert names.stdout.strip() == KERNEL_NAMES[level]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          str(Path(__file__).resolve()), "-k", "not every_kernel_variant"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    record_property("fastrnn_kernel_level", (level, "forced: tests/test_kernels.py"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dense", [False, True], ids=["ids", "dense"])
def test_blockwise_bptt_equals_whole_sequence(rng, dtype, dense):
    """The backward kernel with dZ for a few steps at a time (what loss_and_grad uses
    for long sequences) against the same kernel holding dZ for every step."""
    from fastrnn import _core, _rnn
    B, T, D, H, V = 6, 23, 5, 12, 7
    p, _, X, Y, h0 = make_problem(rng, B, T, D, H, V, dtype=dtype, dense=dense)
    p = _core.check_params(p)
    X_ids, X_dense, h, Yt, _, _ = _core.check_inputs(p, X, h0, Y)
    results = []
    for R in (T, 5, 1):
        Hs = np.empty((T + 1, B, H), dtype)
        Hs[0] = h
        Zs = np.empty((R * B, H), dtype)
        O = np.empty((T * B, V), dtype)
        parts = np.zeros(2, dtype)
        g = {k: np.empty_like(v) for k, v in p.items()}
        dh0 = np.empty((B, H), dtype)
        _rnn.forward(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"], X_ids, X_dense,
                     Hs, Zs, O, Yt, parts, "tanh", 2)
        _rnn.backward(p["W_xh"], p["W_hh"], p["W_hq"], X_ids, X_dense, Hs, Zs, O,
                      g["W_xh"], g["W_hh"], g["b_h"], g["W_hq"], g["b_q"], dh0, "tanh", 2)
        results.append((float(parts.sum()), g, dh0))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for loss, g, dh0 in results[1:]:
        assert abs(loss - results[0][0]) <= rtol * abs(results[0][0])
        assert_close(dh0, results[0][2], rtol, "h0")
        for k in g:
            assert_close(g[k], results[0][1][k], rtol, k)


def test_work_area_rows_checked():
    from fastrnn import _rnn
    p = fastrnn.init_params(5, 4, dtype="float64", seed=0)
    Hs = np.zeros((4, 2, 4))
    with pytest.raises(ValueError, match="Zs must have"):
        _rnn.forward(p["W_xh"], p["W_hh"], p["b_h"], p["W_hq"], p["b_q"],
                     np.zeros((3, 2), np.int32), np.empty((0, 0)), Hs, np.empty((3, 4)),
                     np.empty((6, 5)), np.empty(0, np.int32), np.zeros(2), "tanh", 1)


def test_workspace_reused_for_smaller_batches(rng):
    """A shorter batch (an epoch's last, a validation batch) takes the leading part of
    the buffers a larger call left; a call needing under half of them gets its own;
    the results are those of fresh buffers, bit for bit, in any order of calls."""
    from fastrnn import _core
    p = fastrnn.init_params(7, 12, dtype="float32", seed=0)
    X, Y = rng.integers(0, 7, (40, 9)), rng.integers(0, 7, (40, 9))

    def run(b):
        loss, g, h = fastrnn.loss_and_grad(p, X[:b], Y[:b], num_threads=2)
        logits, _ = fastrnn.forward(p, X[:b], num_threads=2)
        return [loss, h, logits] + [g[k] for k in sorted(g)]

    fresh = {}
    for b in (40, 31, 12):
        _core.clear_workspace()
        fresh[b] = run(b)
    _core.clear_workspace()
    for b in (40, 31, 12, 31, 40, 12, 40):
        for got, want in zip(run(b), fresh[b]):
            assert np.array_equal(got, want)
    _core.clear_workspace()
    big = _core._buffers(np.float32, 9, 40, 12, 7)
    part = _core._buffers(np.float32, 9, 31, 12, 7)
    assert all(np.shares_memory(a, b) for a, b in zip(big, part))
    assert [a.shape for a in part] == [(10, 31, 12), (_core._dz_steps(9, 31, 12) * 31, 12),
                                       (9 * 31, 7)]
    small = _core._buffers(np.float32, 9, 12, 12, 7)
    assert not any(np.shares_memory(a, b) for a, b in zip(big, small))


def _misaligned(a, offset_bytes=16):
    """A C-contiguous copy of a that starts offset_bytes past a 64-byte line."""
    buf = np.empty(a.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset_bytes
    out = buf[start: start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset_bytes
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_parameters_start_cache_lines(dtype):
    """init_params and CharLM give W_hh on a 64-byte line (the one-row products of
    one sequence and of generation stream its rows; numpy promises 16 bytes)."""
    for D, H in ((28, 256), (65, 100), (7, 33), (1, 1)):
        p = fastrnn.init_params(D, H, dtype=dtype, seed=0)
        assert all(v.ctypes.data % 64 == 0 for v in p.values()), D
        chars = "".join(chr(0x41 + i) for i in range(D - 1))
        lm = fastrnn.CharLM(fastrnn.Vocab(chars), H, dtype=dtype)
        assert lm.params["W_hh"].ctypes.data % 64 == 0, (D, H)
        assert lm.params["W_hh"].base is not None   # still a view into the flat vector


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("B", [1, 3])
def test_misaligned_W_hh_gives_the_same_results(rng, dtype, B):
    """A W_hh 16 bytes off a cache line is copied to an aligned buffer for the
    one-row products (B < 2 per thread): bitwise the same results, and the caller's
    dict and arrays are left as they were."""
    from fastrnn import _core
    p, _, X, Y, h0 = make_problem(rng, B, 9, 6, 130, 11, dtype=dtype)
    p_al = dict(p, W_hh=_core._aligned64(p["W_hh"]))
    p_mis = dict(p, W_hh=_misaligned(p["W_hh"]))
    W_before = p_mis["W_hh"]
    for nt in (1, 2):
        a = fastrnn.loss_and_grad(p_al, X, Y, h0, num_threads=nt)
        b = fastrnn.loss_and_grad(p_mis, X, Y, h0, num_threads=nt)
        assert a[0] == b[0]
        for k in GRAD_NAMES:
            np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
        np.testing.assert_array_equal(fastrnn.forward(p_al, X, h0, num_threads=nt)[0],
                                      fastrnn.forward(p_mis, X, h0, num_threads=nt)[0])
    assert p_mis["W_hh"] is W_before and W_before.ctypes.data % 64 == 16
    al = _core._aligned64(W_before)
    assert al.ctypes.data % 64 == 0 and al is not W_before
    np.testing.assert_array_equal(al, W_before)
    assert _core._aligned64(al) is al
