"""CharLM for every cell and depth: layout, training, dropout, resume, save/load,
generation (the step loop and nucleus sampling).

Tests marked ``needs_cells`` run gated or stacked models through fastrnn.forward /
loss_and_grad, whose ``cell=`` and stacked layers come from the cells work (SPEC.md's
functional API); they are skipped, saying so, while the installed functional API
lacks ``cell=``.
"""
import inspect
import math
import os
import signal
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import CharLM, TrainConfig, Vocab, params as fparams, reference
from fastrnn.checkpoint import CheckpointError
from fastrnn.model import TrainingInterrupted
from fastrnn.train import trainer as trainer_mod

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled and his usually pale face "
        "was flushed and animated ") * 3
needs_cells = pytest.mark.skipif(
    "cell" not in inspect.signature(fastrnn.loss_and_grad).parameters,
    reason="fastrnn.loss_and_grad has no cell= yet (the functional API of the cells work)")
CONFIGS = [("rnn", 2), ("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)]
FIT = dict(batch_size=4, num_steps=8, lr=0.01, optimizer="adam", progress=False, seed=1)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


def model(cell, L, H=6, dtype="float64", **kw):
    return CharLM(Vocab(TEXT), H, cell=cell, num_layers=L, dtype=dtype, seed=0, **kw)


def _ce(logits, Y):
    o = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    lp = o - o.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    return -lp[np.arange(len(o)), Y.reshape(-1)].mean()


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("cell,L", CONFIGS)
def test_layout_and_init(cell, L):
    lm = model(cell, L, H=5, dtype="float32")
    V = lm.vocab_size
    lay = fparams.layout(cell, V, 5, V, L)
    assert list(lm.params) == fparams.param_names(cell, L) == [k for k, _, _ in lay]
    assert lm.num_parameters == fparams.flat_size(lay)
    for k, shape, off in lay:
        a = lm.params[k]
        assert a.shape == shape and np.shares_memory(a, lm.parameters)
        assert a.__array_interface__["data"][0] == \
            lm.parameters.__array_interface__["data"][0] + 4 * off
    assert lm.params["W_hh"].__array_interface__["data"][0] % 64 == 0
    ref = fastrnn.init_params(V, 5, cell=cell, num_layers=L, seed=0)
    for k, v in ref.items():
        np.testing.assert_array_equal(lm.params[k], v, err_msg=k)
    assert (lm.cell, lm.num_layers, lm.dropout) == (cell, L, 0.0)
    assert f"cell={cell!r}" in repr(lm) and f"num_layers={L}" in repr(lm)


def test_lstm_forget_bias_and_init_options():
    lm = model("lstm", 1, H=4)
    np.testing.assert_array_equal(lm.params["b_h"][4:8], 1.0)
    off = CharLM(Vocab(TEXT), 4, cell="lstm", forget_bias=0.0, seed=0)
    assert np.abs(off.params["b_h"][4:8]).max() < 0.5 + 1e-9
    d2l = CharLM(Vocab(TEXT), 4, cell="gru", init="d2l", seed=0)
    np.testing.assert_array_equal(d2l.params["b_h"], 0.0)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(cell="elman"), ValueError, "cell"), (dict(num_layers=0), ValueError, "num_layers"),
    (dict(dropout=1.0), ValueError, "dropout"), (dict(dropout="x"), TypeError, "dropout"),
    (dict(cell="lstm", nonlinearity="relu"), ValueError, "nonlinearity"),
])
def test_constructor_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        CharLM(Vocab("abc"), 4, **kw)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="dropout=0.5 and num_layers=1"):
        CharLM(Vocab("abc"), 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CharLM(Vocab("abc"), 4, num_layers=2, dropout=0.5)


# ---------------------------------------------------------------- evaluation
@needs_cells
@pytest.mark.parametrize("cell,L", CONFIGS)
def test_perplexity_matches_reference(cell, L):
    lm = model(cell, L)
    ids = lm.vocab.encode(TEXT[:150])
    logits, _ = reference.forward(lm.params, ids[None, :-1], cell=cell)
    assert lm.perplexity(TEXT[:150]) == pytest.approx(math.exp(_ce(logits, ids[1:])),
                                                      rel=1e-9)


@needs_cells
@pytest.mark.parametrize("cell,L", [("lstm", 2), ("gru", 3)])
def test_perplexity_long_text_chunks_carry_every_state(cell, L, monkeypatch):
    from fastrnn import model as model_mod
    lm = model(cell, L)
    ppl = lm.perplexity(TEXT)
    monkeypatch.setattr(model_mod, "_EVAL_CHUNK", 7)     # many chunks: (h, c) carried
    assert lm.perplexity(TEXT) == pytest.approx(ppl, rel=1e-12)
    assert lm.perplexity(TEXT, batch_size=3) == pytest.approx(
        model(cell, L).perplexity(TEXT, batch_size=3), rel=1e-12)


# ---------------------------------------------------------------- training
@needs_cells
@pytest.mark.parametrize("cell,L", CONFIGS)
def test_loss_falls_and_round_trip(cell, L, tmp_path):
    lm = model(cell, L, H=12, dtype="float32", dropout=0.1 if L > 1 else 0.0)
    hist = lm.fit(TEXT, epochs=4, **FIT)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.1
    back = CharLM.load(lm.save(tmp_path / "m.npz"))
    assert back.config == lm.config and list(back.params) == list(lm.params)
    np.testing.assert_array_equal(back.parameters, lm.parameters)
    assert back.generate("the ", 40, seed=2) == lm.generate("the ", 40, seed=2)
    assert back.perplexity(TEXT[:100]) == lm.perplexity(TEXT[:100])


@needs_cells
@pytest.mark.parametrize("cell,L", [("gru", 1), ("lstm", 2)])
def test_one_step_matches_reference_update(cell, L, monkeypatch):
    seen = []
    real = trainer_mod.loss_and_grad

    def spy(p, X, Y, h0=None, **kw):
        seen.append((X.copy(), Y.copy(), kw))
        return real(p, X, Y, h0, **kw)

    monkeypatch.setattr(trainer_mod, "loss_and_grad", spy)
    lm = model(cell, L)
    before = lm.parameters.copy()
    lm.fit(TEXT[:4 * 8 + 8], epochs=1, batch_size=4, num_steps=8, lr=0.5, optimizer="sgd",
           clip=None, progress=False, seed=0)
    assert len(seen) == 1 and seen[0][2]["cell"] == cell and "dropout" not in seen[0][2]
    _, g, _ = reference.loss_and_grad(model(cell, L).params, seen[0][0], seen[0][1], cell=cell)
    flat_g = np.concatenate([g[k].ravel() for k in fparams.param_names(cell, L)])
    np.testing.assert_allclose(lm.parameters, before - 0.5 * flat_g, rtol=1e-9, atol=1e-12)


@needs_cells
def test_dropout_seed_per_step_and_row_offset(monkeypatch):
    seen = []
    real = trainer_mod.loss_and_grad

    def spy(p, X, Y, h0=None, **kw):
        seen.append(kw)
        return real(p, X, Y, h0, **kw)

    monkeypatch.setattr(trainer_mod, "loss_and_grad", spy)
    lm = model("gru", 2, dropout=0.25)
    lm.fit(TEXT, epochs=1, **FIT)
    run_seed = lm._train.seed
    assert isinstance(run_seed, int)
    assert [k["seed"] for k in seen] == [trainer_mod.step_seed(run_seed, s)
                                         for s in range(len(seen))]
    assert all(k["dropout"] == 0.25 and k["row_offset"] == 0 for k in seen)
    assert len({k["seed"] for k in seen}) == len(seen)
    # evaluation never drops out: perplexity is deterministic and has no dropout
    assert lm.perplexity(TEXT[:80]) == lm.perplexity(TEXT[:80])


@pytest.mark.parametrize("cell,L,sampling", [("lstm", 2, "sequential"), ("gru", 2, "random"),
                                             ("lstm", 1, "sequential")])
@needs_cells
def test_interrupted_run_resumes_exactly(cell, L, sampling, tmp_path, monkeypatch):
    """Sequential sampling carries (h, c) of every layer across an interrupt; the
    dropout masks of the resumed steps are those of the uninterrupted run."""
    kw = dict(FIT, sampling=sampling)
    drop = 0.2 if L > 1 else 0.0
    full = model(cell, L, dropout=drop)
    full.fit(TEXT, epochs=2, **kw)
    per_epoch = full.history[0]["step"]
    real = trainer_mod.loss_and_grad
    n = {"k": 0}

    def interrupting(*a, **k):
        n["k"] += 1
        if n["k"] == per_epoch + 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(trainer_mod, "loss_and_grad", interrupting)
    ck = tmp_path / "ck.npz"
    part = model(cell, L, dropout=drop)
    with pytest.raises(TrainingInterrupted):
        part.fit(TEXT, epochs=2, checkpoint=ck, **kw)
    monkeypatch.setattr(trainer_mod, "loss_and_grad", real)
    with np.load(ck) as z:
        names = set(z.files)
        if sampling == "sequential":
            want = (4, 6) if L == 1 else (L, 4, 6)
            assert z["h_carry"].shape == want
            assert ("c_carry" in names) == (cell == "lstm")
            if cell == "lstm":
                assert z["c_carry"].shape == want
        else:
            assert "h_carry" not in names
    resumed = CharLM.load(ck)
    resumed.fit(TEXT, epochs=2, resume=True, **kw)
    np.testing.assert_array_equal(resumed.parameters, full.parameters)
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]


@needs_cells
def test_resume_refuses_another_configuration(tmp_path):
    lm = model("gru", 2)
    ck = tmp_path / "ck.npz"
    lm.fit(TEXT, epochs=1, checkpoint=ck, **FIT)
    with pytest.raises(ValueError, match="cell='lstm'"):
        model("lstm", 2).fit(TEXT, epochs=2, resume=ck, **FIT)
    with pytest.raises(ValueError, match="num_layers=1"):
        model("gru", 1).fit(TEXT, epochs=2, resume=ck, **FIT)


@needs_cells
def test_load_refuses_inconsistent_files(tmp_path):
    import io
    import json
    import zipfile
    lm = model("lstm", 2)
    lm.fit(TEXT, epochs=1, checkpoint=tmp_path / "ck.npz", **FIT)
    p = tmp_path / "ck.npz"
    with zipfile.ZipFile(p) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}

    def rewrite(m):
        with zipfile.ZipFile(p, "w") as z:
            for k, v in m.items():
                z.writestr(k, v)

    def npy(a):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, a)
        return buf.getvalue()

    meta = json.loads(np.load(io.BytesIO(members["meta.npy"])).tobytes())
    meta["model"]["cell"] = "gru"
    rewrite(members | {"meta.npy": npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))})
    with pytest.raises(CheckpointError, match="W_xh.*shape|b_hn.*missing"):
        CharLM.load(p)
    h = np.zeros((2, 4, 6))
    rewrite(members | {"h_carry.npy": npy(h)})               # LSTM: h without c
    with pytest.raises(CheckpointError, match="c_carry"):
        CharLM.load(p)
    rewrite(members | {"h_carry.npy": npy(h), "c_carry.npy": npy(np.zeros((4, 6)))})
    with pytest.raises(CheckpointError, match="c_carry.*shape"):
        CharLM.load(p)
    rewrite(members | {"h_carry.npy": npy(h), "c_carry.npy": npy(h)})
    assert isinstance(CharLM.load(p)._train.h_carry, tuple)


# ---------------------------------------------------------------- generation
def _force(monkeypatch, kind):
    """Make every model generate with one loop: "stack" or "steps"."""
    monkeypatch.setattr(CharLM, "_sampler", lambda self, top_p: kind)


needs_stack = pytest.mark.skipif(
    not hasattr(getattr(fastrnn._core, "_layers", None), "generate_stack"),
    reason="fastrnn._layers.generate_stack did not build or import")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_loop_equals_compiled_loop(monkeypatch, dtype):
    """The step loop's sampler draws exactly as the compiled loop's (Elman model)."""
    lm = CharLM(Vocab(TEXT), 16, dtype=dtype, seed=3, init="uniform")
    lm.fit(TEXT, epochs=2, **FIT)
    cases = [dict(seed=3), dict(seed=4, temperature=0.6, top_k=5), dict(greedy=True),
             dict(seed=5, temperature=1.7)]
    compiled = [lm.generate("the ", 150, **kw) for kw in cases]
    streamed = "".join(lm.stream("the ", 150, seed=3, chunk_size=7))
    assert lm.generate("the ", 150, top_p=1.0, seed=3) == compiled[0]    # top_p: stack loop
    for kind in ("steps", "stack") if hasattr(fastrnn._core._layers, "generate_stack") \
            else ("steps",):
        _force(monkeypatch, kind)
        assert [lm.generate("the ", 150, **kw) for kw in cases] == compiled, kind
        assert "".join(lm.stream("the ", 150, seed=3, chunk_size=7)) == streamed, kind
        monkeypatch.undo()
    assert streamed == compiled[0][4:]


@needs_cells
@needs_stack
@pytest.mark.parametrize("cell,L", CONFIGS)
def test_compiled_stack_loop_equals_step_loop(monkeypatch, cell, L):
    """generate_stack (compiled) and the step loop over fastrnn.forward draw the same
    ids for every cell and depth, with top_k, top_p, temperature and greedy."""
    lm = model(cell, L, H=10, dtype="float64")
    lm.fit(TEXT, epochs=2, **FIT)
    cases = [dict(seed=3), dict(seed=4, temperature=0.6, top_k=5), dict(greedy=True),
             dict(seed=5, top_p=0.8), dict(seed=6, top_k=6, top_p=0.5, temperature=1.4)]
    assert lm._sampler(None) == "stack"
    got = {}
    for kind in ("stack", "steps"):
        _force(monkeypatch, kind)
        got[kind] = [lm.generate("the ", 120, **kw) for kw in cases] + [
            "".join(lm.stream("the ", 120, seed=9, top_p=0.9, chunk_size=11))]
        monkeypatch.undo()
    assert got["stack"] == got["steps"]


@needs_cells
@pytest.mark.parametrize("cell,L", CONFIGS)
def test_generate_and_stream_every_cell(cell, L):
    lm = model(cell, L, H=8, dtype="float32")
    lm.fit(TEXT, epochs=1, **FIT)
    a = lm.generate("the ", 60, seed=7, top_k=4)
    assert a.startswith("the ") and len(a) == 64 and a == lm.generate("the ", 60, seed=7, top_k=4)
    assert "".join(lm.stream("the ", 60, seed=7, top_k=4, chunk_size=9)) == a[4:]
    ids = lm.generate_ids("the ", 60, seed=7, top_k=4)
    assert ids.dtype == np.int32 and lm.vocab.decode(ids) == a[4:]
    # greedy: each character is the argmax of the reference's logits
    g = lm.generate("the ", 12, greedy=True)
    logits, _ = reference.forward({k: v.astype(np.float64) for k, v in lm.params.items()},
                                  lm.vocab.encode(g[:-1])[None, :], cell=cell)
    np.testing.assert_array_equal(logits[0, 3:].argmax(-1), lm.vocab.encode(g[4:]))


@needs_cells
def test_top_p_keeps_the_nucleus(monkeypatch):
    lm = model("lstm", 1, H=8)
    lm.fit(TEXT, epochs=2, **FIT)
    logits, _ = reference.forward(lm.params, lm.vocab.encode("the ")[None, :], cell="lstm")
    o = logits[0, -1]
    p = np.exp(o - o.max())
    p /= p.sum()
    order = np.argsort(-p)
    nucleus = set(order[: int(np.searchsorted(np.cumsum(p[order]), 0.6)) + 1].tolist())
    firsts = {int(lm.generate_ids("the ", 1, top_p=0.6, seed=s)[0]) for s in range(60)}
    assert firsts <= nucleus and len(firsts) >= min(2, len(nucleus))
    tiny = lm.generate("the ", 30, top_p=1e-9, seed=1)
    assert tiny == lm.generate("the ", 30, greedy=True)          # the nucleus is the argmax
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            lm.generate("the ", 5, top_p=bad)
    with pytest.raises(TypeError, match="top_p"):
        lm.generate("the ", 5, top_p="0.5")


@needs_cells
def test_fit_config_object_with_cells():
    lm = model("gru", 2, dropout=0.1)
    cfg = TrainConfig(epochs=1, **FIT)
    hist = lm.fit(TEXT, config=cfg)
    assert len(hist) == 1 and lm.training_state["config"]["optimizer"] == "adam"


# ---------------------------------------------------------------- command line
@needs_cells
def test_cli_trains_lstm_stack_and_generate_eval_read_its_configuration(tmp_path, capsys):
    from fastrnn.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    args = ["train", "--corpus", str(corpus), "--epochs", "1", "--out", str(tmp_path / "m.npz"),
            "--hidden", "8", "--steps", "8", "--batch", "4", "--threads", "1",
            "--sample-length", "10", "--no-progress", "--optimizer", "adam", "--lr", "0.01",
            "--cell", "lstm", "--layers", "2", "--dropout", "0.1", "--seed", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lstm, 2 layers of H=8, dropout 0.1" in out
    lm = CharLM.load(tmp_path / "m.npz")
    assert (lm.cell, lm.num_layers, lm.dropout, lm.hidden_size) == ("lstm", 2, 0.1, 8)
    assert main(["generate", str(tmp_path / "m.npz"), "--prefix", "the ", "-n", "30",
                 "--seed", "4", "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == lm.generate(
        "the ", 30, temperature=0.8, top_p=0.9, seed=4)
    assert main(["eval", str(tmp_path / "m.npz")]) == 0
    assert "[model: lstm, 2 layers of H=8, dropout 0.1]" in capsys.readouterr().out
    # a resumed run keeps the configuration
    assert main(["train", "--resume", str(tmp_path / "m.npz"), "--epochs", "2",
                 "--cell", "gru", "--no-progress"]) == 2
    assert "--cell gru differs from the checkpoint's lstm" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "m.npz"), "--epochs", "2",
                 "--no-progress", "--sample-length", "0"]) == 0
    assert len(CharLM.load(tmp_path / "m.npz").history) == 2


@pytest.mark.parametrize("extra,match", [
    (["--dropout", "0.2"], "needs --layers 2"),
    (["--cell", "gru", "--nonlinearity", "relu"], "--cell rnn only"),
    (["--cell", "cnn"], "invalid choice"), (["--dropout", "1"], "--dropout"),
    (["--layers", "0"], "--layers")])
def test_cli_model_flag_errors(tmp_path, capsys, extra, match):
    from fastrnn.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    try:
        code = main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "m.npz"),
                     "--no-progress", *extra])
    except SystemExit as exc:                  # argparse's own errors
        code = exc.code
    assert code == 2 and match in capsys.readouterr().err
