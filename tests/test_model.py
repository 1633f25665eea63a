"""CharLM: flat parameter layout, perplexity, training, resume, divergence."""
import math
import os
import signal

import numpy as np
import pytest

import fastrnn
from fastrnn import CharLM, Vocab, reference
from fastrnn import model as model_mod
from fastrnn.model import TrainingDiverged, TrainingInterrupted
from fastrnn.train import trainer as trainer_mod

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled and his usually pale face "
        "was flushed and animated ") * 4


def tiny(H=16, dtype="float32", **kw):
    return CharLM(Vocab(TEXT), H, dtype=dtype, seed=0, **kw)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny models: one OpenMP thread (fast, and immune to busy CI machines)."""
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


FIT = dict(epochs=2, batch_size=4, num_steps=8, progress=False, seed=1)


# ---------------------------------------------------------------- layout
def test_params_are_views_into_one_flat_buffer():
    lm = tiny(H=5)
    V, H = len(lm.vocab), 5
    flat = lm.parameters
    assert flat.flags.c_contiguous and flat.size == V * H + H * H + H + H * V + V
    assert lm.num_parameters == flat.size
    off = 0
    for k, shape in [("W_xh", (V, H)), ("W_hh", (H, H)), ("b_h", (H,)), ("W_hq", (H, V)),
                     ("b_q", (V,))]:
        a = lm.params[k]
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        assert np.shares_memory(a, flat)
        assert a.__array_interface__["data"][0] == flat.__array_interface__["data"][0] + off * 4
        off += a.size
    lm.params["b_q"][0] = 7.0
    assert flat[-V] == 7.0


def test_init_matches_init_params():
    lm = CharLM(Vocab(TEXT), 8, seed=42)
    ref = fastrnn.init_params(len(lm.vocab), 8, seed=42)
    for k, v in ref.items():
        np.testing.assert_array_equal(lm.params[k], v)
    assert "CharLM(vocab_size=" in repr(lm)


@pytest.mark.parametrize("kwargs,exc", [
    (dict(vocab=3), TypeError), (dict(vocab=""), ValueError),
    (dict(hidden_size=0), ValueError), (dict(hidden_size=2.0), TypeError),
    (dict(nonlinearity="sigmoid"), ValueError), (dict(dtype="int32"), TypeError),
    (dict(dtype="float16"), TypeError),
])
def test_constructor_errors(kwargs, exc):
    args = dict(vocab=Vocab("abc"), hidden_size=4) | kwargs
    with pytest.raises(exc):
        CharLM(args.pop("vocab"), args.pop("hidden_size"), **args)


def test_constructor_accepts_text():
    lm = CharLM("hello", 4)
    assert lm.vocab == Vocab("hello") and lm.vocab_size == 5


# ---------------------------------------------------------------- perplexity
def test_perplexity_hand_checked():
    """Zero weights make every prediction softmax(b_q): probabilities chosen by hand."""
    vocab = Vocab.from_tokens(["a", "b", "c"], unk=None)
    lm = CharLM(vocab, 2, dtype="float64")
    lm.parameters[...] = 0
    lm.params["b_q"][...] = np.log([0.5, 0.25, 0.25])
    # "abca": predictions b|a, c|ab, a|abc with probabilities 1/4, 1/4, 1/2
    expect = math.exp(-(math.log(0.25) + math.log(0.25) + math.log(0.5)) / 3)
    assert expect == pytest.approx(2 ** (5 / 3))
    assert lm.perplexity("abca") == pytest.approx(expect, rel=1e-12)
    assert lm.perplexity(np.array([0, 1, 2, 0])) == pytest.approx(expect, rel=1e-12)
    # uniform output -> perplexity = vocabulary size
    lm.params["b_q"][...] = 0
    assert lm.perplexity("abcabcbbca") == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_perplexity_is_exp_mean_ce_of_reference(nonlinearity):
    lm = CharLM(Vocab(TEXT), 12, nonlinearity=nonlinearity, dtype="float64", seed=5,
                init="uniform")
    ids = lm.vocab.encode(TEXT[:300])
    logits, _ = reference.forward(lm.params, ids[None, :-1], nonlinearity=nonlinearity)
    o = logits[0]
    logp = o - o.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    ce = -logp[np.arange(len(ids) - 1), ids[1:]].mean()
    assert lm.perplexity(TEXT[:300]) == pytest.approx(math.exp(ce), rel=1e-10)
    # batch_size streams: each stream from a zero state, all predictions counted once
    n = len(ids) - 1
    L = n // 4
    tot = 0.0
    for b in range(4):
        lg, _ = reference.forward(lm.params, ids[None, b * L: (b + 1) * L],
                                  nonlinearity=nonlinearity)
        y = ids[b * L + 1: (b + 1) * L + 1]
        lp = lg[0] - lg[0].max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        tot -= lp[np.arange(L), y].sum()
    lg, _ = reference.forward(lm.params, ids[None, 4 * L: n], nonlinearity=nonlinearity)
    lp = lg[0] - lg[0].max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    tot -= lp[np.arange(n - 4 * L), ids[4 * L + 1:]].sum()
    assert lm.perplexity(TEXT[:300], batch_size=4) == pytest.approx(math.exp(tot / n),
                                                                    rel=1e-10)


def test_perplexity_long_text_chunks_carry_state(monkeypatch):
    lm = tiny(dtype="float64")
    ppl = lm.perplexity(TEXT)
    monkeypatch.setattr(model_mod, "_EVAL_CHUNK", 7)     # many chunks, state carried
    assert lm.perplexity(TEXT) == pytest.approx(ppl, rel=1e-12)


def test_perplexity_errors():
    lm = tiny()
    with pytest.raises(ValueError, match="at least 2"):
        lm.perplexity("t")
    with pytest.raises(TypeError, match="str"):
        lm.perplexity(b"the")
    with pytest.raises(ValueError, match="outside"):
        lm.perplexity(np.array([0, 999]))
    with pytest.raises(ValueError, match="batch_size"):
        lm.perplexity("the", batch_size=0)


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("optimizer,lr", [("sgd", 1.0), ("adagrad", 0.1), ("adam", 0.01)])
def test_loss_falls(optimizer, lr):
    lm = tiny(H=32)
    hist = lm.fit(TEXT, **(FIT | dict(epochs=4)), lr=lr, optimizer=optimizer)
    assert len(hist) == 4 and hist is not lm.history and hist == lm.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.1
    assert hist[-1]["train_ppl"] < len(lm.vocab)
    r = hist[-1]
    assert set(r) == {"epoch", "step", "train_loss", "train_ppl", "val_loss", "val_ppl",
                      "tokens", "tokens_per_s", "wall_time", "lr"}
    assert r["epoch"] == 4 and r["val_ppl"] is None
    assert r["train_ppl"] == pytest.approx(math.exp(r["train_loss"]))
    assert r["tokens_per_s"] > 0 and r["wall_time"] > 0


@pytest.mark.parametrize("sampling", ["sequential", "random", "windows"])
def test_val_perplexity_matches(sampling):
    lm = tiny()
    val = TEXT[:200]
    hist = lm.fit(TEXT, val_text=val, **FIT, lr=0.01, optimizer="adam", sampling=sampling)
    r = hist[-1]
    if sampling == "windows":   # every stride-1 window, each from a zero state
        X, Y = fastrnn.datasets.windows(lm.vocab.encode(val), 8)
        logits, _ = fastrnn.forward(lm.params, np.ascontiguousarray(X))
        o = logits.astype(np.float64)
        lp = o - o.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        ce = -np.take_along_axis(lp, Y[..., None], -1).mean()
        assert r["val_ppl"] == pytest.approx(math.exp(ce), rel=1e-5)
    else:
        assert r["val_ppl"] == pytest.approx(lm.perplexity(val), rel=1e-9)
    assert r["val_loss"] == pytest.approx(math.log(r["val_ppl"]))


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_val_streams_is_perplexity_with_that_batch_size(sampling):
    lm = tiny()
    val = TEXT[:200]
    r = lm.fit(TEXT, val_text=val, **FIT, lr=0.01, optimizer="adam", sampling=sampling,
               val_streams=6)[-1]
    want = lm.perplexity(val, batch_size=6)
    assert r["val_ppl"] == pytest.approx(want, rel=1e-12)
    assert abs(want - lm.perplexity(val)) > 1e-6 * want     # another measure than 1 stream


@pytest.mark.parametrize("cell,dtype,rel", [("rnn", "float32", 1e-5), ("rnn", "float64", 1e-12),
                                            ("gru", "float32", 1e-5)])
def test_windows_validation_every_epoch_is_the_reference(cell, dtype, rel):
    """Windows validation (the batches cut once per fit, the Elman kernel's fused
    cross-entropy) after EVERY epoch equals the float64 reference's mean cross-entropy
    over every stride-1 window with that epoch's parameters; 7 windows per batch leave
    a shorter last batch."""
    lm = tiny(dtype=dtype, cell=cell)
    val = TEXT[:120]
    X, Y = fastrnn.datasets.windows(lm.vocab.encode(val), 8)
    seen = []

    def check(model, record):
        p = {k: v.astype(np.float64) for k, v in model.params.items()}
        logits, _ = reference.forward(p, np.asarray(X), cell=cell)
        lp = logits - logits.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        ce = -np.take_along_axis(lp, np.asarray(Y)[..., None], -1).mean()
        assert record["val_loss"] == pytest.approx(ce, rel=rel)
        seen.append(record["val_loss"])

    lm.fit(TEXT, val_text=val, **{**FIT, "epochs": 3, "batch_size": 7}, lr=0.05,
           optimizer="adam", sampling="windows", callbacks=[check])
    assert len(seen) == 3 and len(set(seen)) == 3      # the parameters moved each epoch


def _record_calls(monkeypatch):
    calls = []
    real = trainer_mod.loss_and_grad

    def spy(params, X, Y, h0=None, **kw):
        out = real(params, X, Y, h0, **kw)
        calls.append((X.copy(), Y.copy(), None if h0 is None else h0.copy(), out[2].copy()))
        return out

    monkeypatch.setattr(trainer_mod, "loss_and_grad", spy)
    return calls


def test_sequential_carries_state_and_uses_every_token_once(monkeypatch):
    calls = _record_calls(monkeypatch)
    lm = tiny()
    ids = lm.vocab.encode(TEXT)
    lm.fit(TEXT, epochs=1, batch_size=3, num_steps=5, progress=False, seed=0)
    n = fastrnn.datasets.num_batches(len(ids), 3, 5)
    assert len(calls) >= n - 1
    assert calls[0][2] is None                                 # zero state at epoch start
    for prev, cur in zip(calls, calls[1:]):
        np.testing.assert_array_equal(cur[2], prev[3])         # h0 = previous h_T (detached)
    # each row continues the same row of the previous minibatch: the rows are B
    # contiguous streams, and together they cover a contiguous stretch of the corpus
    rows = np.concatenate([c[0] for c in calls], axis=1)       # (B, n*T)
    flat = rows.reshape(-1)
    start = int(np.flatnonzero([np.array_equal(ids[i:i + 5], flat[:5])
                                for i in range(5)])[0])
    np.testing.assert_array_equal(flat, ids[start: start + flat.size])
    np.testing.assert_array_equal(np.concatenate([c[1] for c in calls], axis=1).reshape(-1),
                                  ids[start + 1: start + 1 + flat.size])


@pytest.mark.parametrize("sampling", ["random", "windows"])
def test_random_and_windows_reset_state(monkeypatch, sampling):
    calls = _record_calls(monkeypatch)
    tiny().fit(TEXT, epochs=1, batch_size=3, num_steps=5, progress=False, seed=0,
               sampling=sampling)
    assert len(calls) > 2 and all(c[2] is None for c in calls)


def _manual_step(lm0, X, Y, optimizer, lr, clip, clip_value=None):
    """One training step with the NumPy reference and textbook formulas (float64)."""
    p = {k: v.astype(np.float64) for k, v in lm0.params.items()}
    _, g, _ = reference.loss_and_grad(p, X, Y)
    flat_g = np.concatenate([g[k].ravel() for k in fastrnn._core.PARAM_NAMES])
    norm = np.linalg.norm(flat_g)
    if clip is not None:
        flat_g *= min(1.0, clip / norm)                       # d2l grad_clipping
    if clip_value is not None:
        flat_g = np.clip(flat_g, -clip_value, clip_value)
    flat = lm0.parameters.astype(np.float64)
    if optimizer == "sgd":
        return flat - lr * flat_g
    if optimizer == "adagrad":
        return flat - lr * flat_g / np.sqrt(flat_g ** 2 + 1e-8)
    m, v = 0.1 * flat_g, 0.001 * flat_g ** 2                 # Adam, t = 1
    return flat - lr * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)


@pytest.mark.parametrize("optimizer,lr,clip,clip_value", [
    ("sgd", 1.0, 1.0, None), ("sgd", 0.5, None, None), ("sgd", 1.0, 0.05, 0.001),
    ("adagrad", 0.1, 1.0, None), ("adam", 0.01, 1.0, None)])
def test_one_step_matches_textbook_update(monkeypatch, optimizer, lr, clip, clip_value):
    calls = _record_calls(monkeypatch)
    lm = tiny(H=6, dtype="float64")
    before = CharLM(lm.vocab, 6, dtype="float64", seed=0)
    text = TEXT[: 4 * 8 + 8]          # exactly one minibatch per epoch
    lm.fit(text, epochs=1, batch_size=4, num_steps=8, lr=lr, optimizer=optimizer, clip=clip,
           clip_value=clip_value, progress=False, seed=0)
    assert len(calls) == 1
    X, Y = calls[0][0], calls[0][1]
    np.testing.assert_allclose(lm.parameters, _manual_step(before, X, Y, optimizer, lr, clip,
                                                           clip_value), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("optimizer,sampling,threads", [
    ("sgd", "sequential", 2), ("adam", "random", 1), ("adagrad", "windows", 1)])
def test_resume_equals_uninterrupted(tmp_path, optimizer, sampling, threads):
    kw = dict(batch_size=4 if sampling != "windows" else 32, num_steps=8,
              lr=0.05 if optimizer != "sgd" else 1.0, optimizer=optimizer, sampling=sampling,
              progress=False, seed=7, num_threads=threads)
    text, val = TEXT[:400], TEXT[400:500]
    full = tiny()
    full.fit(text, val_text=val, epochs=3, **kw)

    part = tiny()
    ck = tmp_path / "ck.npz"
    part.fit(text, val_text=val, epochs=1, checkpoint=ck, **kw)
    resumed = CharLM.load(ck)
    assert resumed.training_state["epoch"] == 1
    hist = resumed.fit(text, val_text=val, epochs=3, **kw, resume=True)
    np.testing.assert_array_equal(resumed.parameters, full.parameters)
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in full.history]
    assert [r["val_ppl"] for r in hist] == [r["val_ppl"] for r in full.history]
    assert [r["step"] for r in hist] == [r["step"] for r in full.history]
    # resume from a path into a fresh model, too
    other = tiny()
    other.fit(text, val_text=val, epochs=3, **kw, resume=ck)
    np.testing.assert_array_equal(other.parameters, full.parameters)
    full.fit(text, val_text=val, epochs=3, **kw, resume=True)   # nothing left to do
    np.testing.assert_array_equal(other.parameters, full.parameters)


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_sigint_mid_epoch_saves_and_resumes_exactly(tmp_path, monkeypatch, sampling):
    kw = dict(batch_size=4, num_steps=8, lr=0.02, optimizer="adam", sampling=sampling,
              progress=False, seed=3, num_threads=1)
    full = tiny()
    full.fit(TEXT, epochs=2, **kw)
    steps_per_epoch = full.history[0]["step"]
    assert steps_per_epoch > 3

    real = trainer_mod.loss_and_grad
    count = {"n": 0}

    def interrupting(*a, **k):
        count["n"] += 1
        if count["n"] == steps_per_epoch + 2:     # Ctrl-C during epoch 2, minibatch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, "loss_and_grad", interrupting)
    ck = tmp_path / "ck.npz"
    part = tiny()
    with pytest.raises(TrainingInterrupted) as info:
        part.fit(TEXT, epochs=2, checkpoint=ck, **kw)
    assert info.value.checkpoint == ck and info.value.epoch == 2 and info.value.batch == 2
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
    monkeypatch.setattr(trainer_mod, "loss_and_grad", real)
    resumed = CharLM.load(ck)
    st = resumed.training_state
    assert (st["epoch"], st["batch"], st["step"]) == (1, 2, steps_per_epoch + 2)
    resumed.fit(TEXT, epochs=2, **kw, resume=True)
    np.testing.assert_array_equal(resumed.parameters, full.parameters)
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]
    # in-memory resume of the interrupted model gives the same
    part.fit(TEXT, epochs=2, **kw, resume=True)
    np.testing.assert_array_equal(part.parameters, full.parameters)


def test_resume_rejects_mismatches(tmp_path):
    lm = tiny()
    ck = tmp_path / "ck.npz"
    kw = dict(batch_size=4, num_steps=8, progress=False, lr=0.5)
    lm.fit(TEXT, epochs=1, checkpoint=ck, **kw)
    m = CharLM.load(ck)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(TEXT, epochs=2, **(kw | dict(batch_size=5)), resume=True)
    with pytest.raises(ValueError, match="optimizer"):
        m.fit(TEXT, epochs=2, **kw, optimizer="adam", resume=True)
    with pytest.raises(ValueError, match="differs"):
        m.fit(TEXT[::-1], epochs=2, **kw, resume=True)
    with pytest.raises(ValueError, match="no training state"):
        tiny().fit(TEXT, epochs=2, **kw, resume=True)
    with pytest.raises(ValueError, match="vocabulary"):
        CharLM(Vocab(TEXT + "Z"), 16).fit(TEXT, epochs=2, **kw, resume=ck)
    with pytest.raises(ValueError, match="CharLM"):
        CharLM(Vocab(TEXT), 17).fit(TEXT, epochs=2, **kw, resume=ck)


def test_divergence_stops_and_keeps_last_good_parameters(monkeypatch):
    calls = _record_calls(monkeypatch)
    lm = tiny(H=16)
    lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False, lr=0.5)
    good = lm.parameters.copy()
    n_before = len(calls)
    with pytest.raises(TrainingDiverged, match="diverged.*lr=") as info:
        lm.fit(TEXT, epochs=5, batch_size=4, num_steps=8, progress=False, lr=1e38,
               clip=None, optimizer="sgd")
    k = info.value.step
    assert k >= 2 and isinstance(info.value, RuntimeError)
    assert len(calls) - n_before == k           # stopped at the first bad step
    assert np.isfinite(lm.parameters).all()
    if k == 2:                                  # back to the parameters step 1 evaluated
        np.testing.assert_array_equal(lm.parameters, good)
    # the kept parameters gave a finite loss on the minibatch before the failing one
    X, Y = calls[-2][0], calls[-2][1]
    loss, _, _ = fastrnn.loss_and_grad(lm.params, X, Y)
    assert math.isfinite(loss)


def test_divergence_on_absurd_finite_loss():
    lm = tiny()
    with pytest.raises(TrainingDiverged, match="far worse than a uniform guess"):
        lm.fit(TEXT, epochs=2, batch_size=4, num_steps=8, progress=False, lr=1e6,
               optimizer="sgd", clip=1.0)
    limit = 10 * math.log(len(lm.vocab)) + 10
    assert all(r["train_loss"] < limit for r in lm.history)
    assert lm.perplexity(TEXT) < math.exp(limit)


def test_unwritable_checkpoint_refused_before_training(tmp_path):
    lm = tiny()
    before = lm.parameters.copy()
    with pytest.raises(IsADirectoryError):
        lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False, checkpoint=tmp_path)
    np.testing.assert_array_equal(lm.parameters, before)
    assert lm.history == []


def test_divergence_on_nan_loss(monkeypatch):
    real = trainer_mod.loss_and_grad
    n = {"k": 0}

    def nan_on_third(*a, **k):
        n["k"] += 1
        loss, g, h = real(*a, **k)
        return (math.nan if n["k"] == 3 else loss), g, h

    lm = tiny()
    snapshots = []

    monkeypatch.setattr(trainer_mod, "loss_and_grad", nan_on_third)
    orig_sgd = model_mod._lm.sgd_update

    def spy_sgd(p, g, lr):
        snapshots.append(p.copy())
        orig_sgd(p, g, lr)

    monkeypatch.setattr(model_mod._lm, "sgd_update", spy_sgd)
    with pytest.raises(TrainingDiverged, match="loss became nan") as info:
        lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False)
    assert info.value.step == 3 and info.value.history == []
    # parameters after step 2's... no: the last parameters with a finite loss are those
    # that step 2 evaluated, i.e. the ones before step 2's update
    np.testing.assert_array_equal(lm.parameters, snapshots[1])


def test_callbacks_and_early_stop():
    seen = []

    def cb(model, record):
        seen.append(record["epoch"])
        return record["epoch"] == 2

    lm = tiny()
    hist = lm.fit(TEXT, epochs=5, batch_size=4, num_steps=8, progress=False, callbacks=[cb])
    assert seen == [1, 2] and len(hist) == 2
    with pytest.raises(TypeError, match="callbacks"):
        lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False, callbacks=[3])


def test_concurrent_fit_on_one_model_rejected():
    import threading
    lm = tiny()
    inside, release = threading.Event(), threading.Event()

    def wait(model, record):
        inside.set()
        release.wait(30)

    t = threading.Thread(target=lambda: lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8,
                                               progress=False, callbacks=[wait]))
    t.start()
    try:
        assert inside.wait(30)
        with pytest.raises(RuntimeError, match="another thread"):
            lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False)
        # readers still work (the callback's thread holds no parameter lock)
        assert isinstance(lm.generate("the", 5, seed=0), str)
    finally:
        release.set()
        t.join(30)
    assert len(lm.history) == 1
    lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=False)   # free again


def test_progress_bar_shows_loss_ppl_tokens(capsys):
    tiny().fit(TEXT, epochs=1, batch_size=4, num_steps=8, progress=True, val_text=TEXT[:50])
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "ppl=" in err and "loss=" in err and "tok/s=" in err
    assert "val_ppl=" in err


def test_float64_and_relu_train():
    lm = CharLM(Vocab(TEXT), 16, dtype="float64", nonlinearity="relu", seed=0)
    hist = lm.fit(TEXT, epochs=3, batch_size=4, num_steps=8, progress=False, lr=0.01,
                  optimizer="adam")
    assert lm.parameters.dtype == np.float64
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(num_steps=1.5), TypeError, "num_steps"),
    (dict(lr=0), ValueError, "lr"),
    (dict(lr=math.inf), ValueError, "lr"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(sampling="shuffle"), ValueError, "sampling"),
    (dict(clip=-1), ValueError, "clip"),
    (dict(clip_value=0), ValueError, "clip_value"),
    (dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(num_threads=0), ValueError, "num_threads"),
    (dict(batch_size=100, num_steps=100), ValueError, "too short"),
    (dict(val_text="a"), ValueError, "val_text"),
    (dict(text=b"abc"), TypeError, "text"),
    (dict(text=np.zeros((2, 2), np.int32)), TypeError, "text"),
    (dict(checkpoint="/nonexistent/dir/x.npz"), FileNotFoundError, "nonexistent"),
    (dict(resume=3), TypeError, "resume"),
])
def test_fit_errors(kwargs, exc, match):
    args = dict(text=TEXT, epochs=1, batch_size=4, num_steps=8, progress=False) | kwargs
    with pytest.raises(exc, match=match):
        tiny().fit(args.pop("text"), **args)


def test_public_exports():
    assert fastrnn.CharLM is CharLM and fastrnn.Vocab is Vocab
    assert fastrnn.datasets.builtin_text
    for name in ("CharLM", "Vocab", "datasets"):
        assert name in fastrnn.__all__
