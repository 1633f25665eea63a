"""Issue 13: learning-rate schedules, AdamW, evaluation every N steps, keep-best, early
stopping, block perplexity, tiny-shakespeare, loss-spike policies and their CLI flags."""
import io
import math
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import CharLM, TrainConfig, Vocab, datasets as ds
from fastrnn.train import Trainer, TrainingDiverged, optim, schedules
from fastrnn.train.trainer import best_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAKESPEARE = SHARED / "tinyshakespeare.txt"
TM = SHARED / "timemachine.txt"
needs_ts = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not present")
needs_tm = pytest.mark.skipif(not TM.is_file(), reason=f"{TM} not present")

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled ") * 6
VAL = "his grey eyes shone and twinkled and his usually pale face was flushed " * 3
CFG = TrainConfig(epochs=3, batch_size=4, num_steps=8, lr=0.01, optimizer="adam",
                  progress=False, seed=5)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


# ---------------------------------------------------------------- schedules
def test_constant_schedule_and_warmup():
    f = schedules.make_schedule(TrainConfig(lr=0.5))
    assert [f(s) for s in (0, 1, 10**6)] == [0.5, 0.5, 0.5]
    f = schedules.make_schedule(TrainConfig(lr=0.5, warmup_steps=4))
    assert [f(s) for s in range(6)] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])


def test_step_schedule_is_char_rnns():
    cfg = TrainConfig(lr=2e-3, schedule="step", decay_factor=0.5, decay_after=2)
    f = schedules.make_schedule(cfg, steps_per_epoch=10)
    # epochs 1 and 2 at lr; after epoch 2 (step 20) x0.5, after epoch 3 x0.25, ...
    want = {0: 2e-3, 19: 2e-3, 20: 1e-3, 29: 1e-3, 30: 5e-4, 45: 2.5e-4}
    assert {s: f(s) for s in want} == pytest.approx(want)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedules.make_schedule(cfg)


def test_cosine_schedule_is_nanogpts():
    cfg = TrainConfig(lr=1e-3, schedule="cosine", warmup_steps=10, min_lr=1e-4)
    S = 110
    f = schedules.make_schedule(cfg, total_steps=S)
    assert f(0) == pytest.approx(1e-4) and f(9) == pytest.approx(1e-3)
    assert f(10) == pytest.approx(1e-3)
    assert f(60) == pytest.approx(1e-4 + 0.5 * 9e-4)                  # half way
    assert f(S) == pytest.approx(1e-4) and f(S + 50) == pytest.approx(1e-4)
    for s in range(10, S):                                              # decreasing
        assert f(s + 1) <= f(s) + 1e-15
        r = (s - 10) / (S - 10)
        assert f(s) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * r)) * 9e-4)
    assert TrainConfig(lr=1e-3, schedule="cosine").resolved_min_lr == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="total_steps"):
        schedules.make_schedule(cfg)


def test_config_validation_of_new_fields():
    for bad, err in [(dict(schedule="linear"), ValueError), (dict(warmup_steps=-1), ValueError),
                     (dict(decay_factor=1.5), ValueError), (dict(min_lr=2.0, lr=1.0), ValueError),
                     (dict(weight_decay=0.1), ValueError), (dict(on_spike="ignore"), ValueError),
                     (dict(eval_interval=0), ValueError), (dict(keep_best=True), ValueError),
                     (dict(keep_best=1), TypeError), (dict(time_budget=0), ValueError),
                     (dict(val_streams=0), ValueError), (dict(val_streams=2.0), TypeError)]:
        with pytest.raises(err, match=next(iter(bad))):
            TrainConfig(**bad)
    c = TrainConfig(optimizer="adamw", schedule="cosine", eval_interval=5, patience=2)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.resolved_weight_decay == 0.01 and TrainConfig().resolved_weight_decay == 0.0


def test_trainer_uses_the_schedule_per_step():
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    cfg = CFG.replace(schedule="cosine", warmup_steps=3, eval_interval=4)
    lm.fit(TEXT, val_text=VAL, config=cfg)
    st = lm.training_state
    S = st["horizon"]
    assert S == cfg.epochs * st["steps_per_epoch"] and st["step"] == S
    f = schedules.make_schedule(cfg, total_steps=S)
    assert [r["lr"] for r in lm.eval_history] == pytest.approx(
        [f(r["step"] - 1) for r in lm.eval_history])
    assert lm.history[-1]["lr"] == pytest.approx(f(S - 1))


# ---------------------------------------------------------------- AdamW
def adamw_reference(p, g, m, v, decay_mask, lr, b1, b2, eps, wd, t):
    """torch.optim.AdamW's update (single tensor, amsgrad=False), in float64."""
    p = p * np.where(decay_mask, 1 - lr * wd, 1.0)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    denom = np.sqrt(v) / math.sqrt(bc2) + eps
    return p - (lr / bc1) * m / denom, m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_matches_pytorchs_formula(dtype):
    lm = CharLM(Vocab("abcdefg"), 5, cell="gru", num_layers=2, dtype=dtype, seed=1)
    lay = lm._layout()
    P = lm.num_parameters
    mask = np.zeros(P, bool)
    for name, shape, off in lay:
        mask[off: off + math.prod(shape)] = name.startswith("W_")
    assert mask.any() and not mask.all()
    rng = np.random.default_rng(0)
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.1, betas=(0.8, 0.95), eps=1e-6)
    state = optim.AdamW.new_state(P, dtype)
    opt = optim.make_optimizer(cfg, state, lay)
    p = rng.standard_normal(P).astype(dtype)
    p64, m64, v64 = p.astype(np.float64), np.zeros(P), np.zeros(P)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for t in range(1, 6):
        g = rng.standard_normal(P).astype(dtype)
        lr = 0.01 * t
        opt.step(p, g, lr, t)
        p64, m64, v64 = adamw_reference(p64, g.astype(np.float64), m64, v64, mask, lr, 0.8,
                                        0.95, 1e-6, 0.1, t)
        np.testing.assert_allclose(p, p64, rtol=tol, atol=tol, err_msg=f"step {t}")
        np.testing.assert_allclose(state["opt_m"], m64, rtol=tol, atol=tol)
        np.testing.assert_allclose(state["opt_v"], v64, rtol=tol, atol=tol)


def test_adamw_without_decay_is_adam_and_matches_torch():
    rng = np.random.default_rng(1)
    lay = [("W_xh", (4, 3), 0), ("b_h", (3,), 12), ("W_hq", (3, 2), 15), ("b_q", (2,), 21)]
    P = 23
    p0 = rng.standard_normal(P)
    a, b = p0.copy(), p0.copy()
    sa, sb = optim.Adam.new_state(P, np.float64), optim.AdamW.new_state(P, np.float64)
    adam = optim.make_optimizer(TrainConfig(optimizer="adam"), sa, lay)
    adamw = optim.make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.0), sb, lay)
    grads = [rng.standard_normal(P) for _ in range(3)]
    for t, g in enumerate(grads, 1):
        adam.step(a, g, 0.1, t)
        adamw.step(b, g, 0.1, t)
    np.testing.assert_array_equal(a, b)
    torch = pytest.importorskip("torch")
    c = p0.copy()
    sc = optim.AdamW.new_state(P, np.float64)
    ours = optim.make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.3), sc, lay)
    w = torch.tensor(p0[:12], requires_grad=True)
    bias = torch.tensor(p0[12:15], requires_grad=True)
    w2 = torch.tensor(p0[15:21], requires_grad=True)
    b2 = torch.tensor(p0[21:], requires_grad=True)
    topt = torch.optim.AdamW([{"params": [w, w2], "weight_decay": 0.3},
                              {"params": [bias, b2], "weight_decay": 0.0}], lr=0.1, eps=1e-8)
    for t, g in enumerate(grads, 1):
        ours.step(c, g, 0.1, t)
        for tens, sl in ((w, slice(0, 12)), (bias, slice(12, 15)), (w2, slice(15, 21)),
                         (b2, slice(21, 23))):
            tens.grad = torch.tensor(g[sl])
        topt.step()
    ref = np.concatenate([x.detach().numpy() for x in (w, bias, w2, b2)])
    np.testing.assert_allclose(c, ref, rtol=1e-12, atol=1e-12)


def test_adamw_decay_ranges_are_weight_matrices():
    lm = CharLM(Vocab("abc"), 4, cell="lstm", num_layers=2, seed=0)
    r = optim.decay_ranges(lm._layout())
    names = [n for n, _, _ in lm._layout() if n.startswith("W_")]
    assert len(r) == len(names) == 5
    with pytest.raises(ValueError, match="sorted"):
        optim._lm.adamw_update(np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4),
                               np.array([[2, 3], [0, 1]], np.int64), 0.1, 0.9, 0.99, 1e-8,
                               0.1, 1)


def test_fit_with_adamw_trains():
    lm = CharLM(Vocab(TEXT), 16, seed=0)
    h = lm.fit(TEXT, config=CFG.replace(optimizer="adamw", weight_decay=0.1))
    assert h[-1]["train_loss"] < h[0]["train_loss"]


# ---------------------------------------------------------------- exact resume
class StopAt(Trainer):
    at = 7

    def _after_step(self, st):
        return super()._after_step(st) or st.step == self.at


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_resume_mid_schedule_is_exact(tmp_path, schedule):
    cfg = CFG.replace(optimizer="adamw", schedule=schedule, warmup_steps=2, decay_after=1,
                      decay_factor=0.5, eval_interval=3, keep_best=True, patience=50,
                      checkpoint=str(tmp_path / "ck.npz"))
    full = CharLM(Vocab(TEXT), 8, cell="gru", seed=0)
    full.fit(TEXT, val_text=VAL, config=cfg.replace(checkpoint=str(tmp_path / "full.npz")))
    part = CharLM(Vocab(TEXT), 8, cell="gru", seed=0)
    StopAt(part, cfg).fit(TEXT, VAL)
    assert part.training_state["step"] == 7
    back = CharLM.load(tmp_path / "ck.npz")
    assert back.training_state["horizon"] == full.training_state["horizon"]
    back.fit(TEXT, val_text=VAL, config=cfg, resume=True)
    np.testing.assert_array_equal(back.parameters, full.parameters)
    strip = lambda ev: [{k: v for k, v in r.items() if k not in ("wall_time", "eval_seconds")}
                        for r in ev]
    assert strip(back.eval_history) == strip(full.eval_history)
    for k in ("best_loss", "best_step", "bad_evals", "step"):
        assert back.training_state[k] == full.training_state[k]


def test_resume_with_more_epochs_keeps_the_horizon_and_says_so(tmp_path):
    cfg = CFG.replace(schedule="cosine", epochs=2, checkpoint=str(tmp_path / "c.npz"))
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    lm.fit(TEXT, config=cfg)
    S = lm.training_state["horizon"]
    with pytest.warns(RuntimeWarning, match=f"horizon of {S} steps"):
        lm.fit(TEXT, config=cfg.replace(epochs=3), resume=True)
    assert lm.training_state["horizon"] == S and lm.training_state["step"] > S
    assert lm.history[-1]["lr"] == pytest.approx(cfg.resolved_min_lr)


# ---------------------------------------------------------------- evaluation, best, patience
def test_step_evaluations_keep_best_and_last(tmp_path):
    ck = tmp_path / "m.npz"
    cfg = CFG.replace(eval_interval=5, keep_best=True, checkpoint=str(ck), lr=0.02)
    lm = CharLM(Vocab(TEXT), 16, seed=0)
    hist = lm.fit(TEXT, val_text=VAL, config=cfg)
    ev = lm.eval_history
    assert len(hist) == 3                                  # per-epoch records as before
    assert [r["step"] for r in ev] == list(range(5, hist[-1]["step"] + 1, 5))
    for r in ev:
        assert set(r) >= {"step", "epoch", "train_loss", "val_loss", "val_ppl", "lr",
                          "wall_time", "tokens_seen", "best"}
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
    walls = [r["wall_time"] for r in ev]
    assert walls == sorted(walls)
    best = min(ev, key=lambda r: r["val_loss"])
    st = lm.training_state
    assert st["best_step"] == best["step"] and st["best_loss"] == pytest.approx(best["val_loss"])
    b = CharLM.load(best_path(ck))
    assert best_path(ck).name == "m.best.npz"
    assert math.log(b.perplexity(VAL, block=256)) == pytest.approx(best["val_loss"], rel=1e-6)
    # fit ends holding the LAST parameters (the checkpoint's); the file beside has the best
    np.testing.assert_array_equal(CharLM.load(ck).parameters, lm.parameters)
    assert CharLM.load(ck).eval_history == ev


def test_eval_blocks_is_a_fixed_subset():
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    ids = lm.vocab.encode(VAL)
    s_all, c_all = lm._block_ce(ids, 16, None)
    s, c = lm._block_ce(ids, 16, None, blocks=3)
    assert c_all == len(ids) - 1 and c == 3 * 16


def test_early_stopping_after_patience(monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 2.1, 2.0, 1.0, 0.5])

    def fake(self, ids, block, blocks):
        return next(losses), 1

    monkeypatch.setattr(Trainer, "_block_totals", fake)
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    lm.fit(TEXT, val_text=VAL, config=CFG.replace(eval_interval=2, patience=3, epochs=20))
    assert [r["val_loss"] for r in lm.eval_history] == [3.0, 2.0, 2.5, 2.1, 2.0]
    assert lm.training_state["step"] == 10 and lm.training_state["bad_evals"] == 3
    assert lm.training_state["best_step"] == 4


def test_epoch_patience_without_eval_interval(monkeypatch):
    vals = iter([2.0, 2.5, 2.6, 1.0])
    monkeypatch.setattr(Trainer, "_validate", lambda self: next(vals))
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    hist = lm.fit(TEXT, val_text=VAL, config=CFG.replace(patience=2, epochs=10))
    assert len(hist) == 3 and lm.training_state["best_step"] == hist[0]["step"]


def test_max_steps_and_time_budget_stop():
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    lm.fit(TEXT, config=CFG.replace(max_steps=5, schedule="cosine", epochs=50))
    st = lm.training_state
    assert st["step"] == 5 and st["horizon"] == 5
    lm2 = CharLM(Vocab(TEXT), 8, seed=0)
    lm2.fit(TEXT, config=CFG.replace(time_budget=1e-9, epochs=50))
    assert lm2.training_state["step"] == 1


# ---------------------------------------------------------------- block perplexity
@pytest.mark.parametrize("cell,layers", [("rnn", 1), ("lstm", 2)])
def test_block_perplexity_vs_direct(cell, layers):
    lm = CharLM(Vocab(TEXT), 12, cell=cell, num_layers=layers, seed=3, dtype="float64")
    ids = lm.vocab.encode(VAL)
    block = 50
    total, count = 0.0, 0
    for k in range(0, len(ids) - 1, block):
        x = ids[k: k + block]
        y = ids[k + 1: k + block + 1]
        x = x[: len(y)]
        logits, _ = fastrnn.forward(lm.params, x[None, :], **lm._fn_kw())
        o = logits[0] - logits[0].max(axis=1, keepdims=True)
        logp = o - np.log(np.exp(o).sum(axis=1, keepdims=True))
        total -= logp[np.arange(len(y)), y].sum()
        count += len(y)
    assert count == len(ids) - 1
    got = lm.perplexity(VAL, block=block)
    assert got == pytest.approx(math.exp(total / count), rel=1e-12)
    assert lm.perplexity(VAL, block=10**6) == pytest.approx(lm.perplexity(VAL), rel=1e-12)


# ---------------------------------------------------------------- tiny-shakespeare
@needs_ts
def test_tiny_shakespeare_offline_and_split():
    text = ds.tiny_shakespeare(data_dir=SHARED, download=False)
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert len(Vocab(text)) == 66
    tr, va = ds.tiny_shakespeare(data_dir=SHARED, download=False, split=True)
    assert (len(tr), len(va)) == (1_003_854, 111_540) and tr + va == text


@needs_ts
def test_tiny_shakespeare_download_once_and_checksum(tmp_path, monkeypatch):
    calls = []

    def fake(url, timeout=None):
        calls.append(url)
        return io.BytesIO(SHAKESPEARE.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    monkeypatch.setenv("FASTRNN_DATA", str(tmp_path))
    assert ds.tiny_shakespeare() == SHAKESPEARE.read_text()
    ds.tiny_shakespeare()
    assert calls == [ds.TINY_SHAKESPEARE_URL]
    assert [p.name for p in tmp_path.iterdir()] == ["tinyshakespeare.txt"]
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\r\n")
    with pytest.raises(ds.ChecksumMismatchError, match=ds.TINY_SHAKESPEARE_SHA1):
        ds.tiny_shakespeare()
    monkeypatch.setattr(urllib.request, "urlopen", lambda u, timeout=None: io.BytesIO(b"x"))
    with pytest.raises(ds.ChecksumMismatchError, match="nothing was saved"):
        ds.tiny_shakespeare(data_dir=tmp_path / "new")
    with pytest.raises(ds.DatasetUnavailableError, match="download=False"):
        ds.tiny_shakespeare(data_dir=tmp_path / "none", download=False)


# ---------------------------------------------------------------- loss spikes
def _relu_run(**kw):
    """The issue's protocol: relu RNN, H 40, batch 16, 32 steps, sequential, Adam 1e-3,
    clip 1, on The Time Machine (raw text: spikes on its first steps)."""
    text = TM.read_text()
    lm = CharLM(Vocab(text), 40, nonlinearity="relu", seed=0, init="d2l")
    cfg = TrainConfig(epochs=4, batch_size=16, num_steps=32, sampling="sequential",
                      optimizer="adam", lr=1e-3, clip=1.0, progress=False, seed=0, **kw)
    return lm, lm.fit(text, config=cfg)


@needs_tm
def test_relu_time_machine_trains_on_through_spikes():
    with pytest.warns(RuntimeWarning, match="loss spike .* half the learning rate"):
        lm, hist = _relu_run()
    losses = [r["train_loss"] for r in hist]
    assert len(hist) == 4 and hist[-1]["skipped_steps"] >= 1
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 2.6
    with pytest.raises(TrainingDiverged, match=r"half the learning rate \(lr=0.0005"):
        _relu_run(on_spike="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lm, hist = _relu_run(on_spike="rollback")
    assert len(hist) == 4 and hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_non_finite_always_stops(monkeypatch):
    from fastrnn.train import trainer as tm
    real = tm.loss_and_grad

    def nan_at_3(*a, **k):
        loss, g, h = real(*a, **k)
        nan_at_3.n += 1
        return (float("nan") if nan_at_3.n == 3 else loss), g, h
    nan_at_3.n = 0
    monkeypatch.setattr(tm, "loss_and_grad", nan_at_3)
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    with pytest.raises(TrainingDiverged, match="nan"):
        lm.fit(TEXT, config=CFG.replace(on_spike="skip"))


def test_too_many_spikes_in_a_row_stop(monkeypatch):
    from fastrnn.train import trainer as tm
    real = tm.loss_and_grad
    monkeypatch.setattr(tm, "loss_and_grad",
                        lambda *a, **k: (1e6,) + tuple(real(*a, **k)[1:]))
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    p0 = lm.parameters.copy()
    with pytest.warns(RuntimeWarning), pytest.raises(TrainingDiverged, match="4 minibatches"):
        lm.fit(TEXT, config=CFG.replace(max_spikes=3))
    np.testing.assert_array_equal(lm.parameters, p0)


# ---------------------------------------------------------------- command line
def test_cli_schedule_eval_keep_best_and_block_eval(tmp_path, capsys):
    from fastrnn.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT * 2)
    out = tmp_path / "m.npz"
    rc = main(["train", "--corpus", str(corpus), "--hidden", "16", "--steps", "8", "--batch",
               "4", "--epochs", "2", "--threads", "1", "--no-progress", "--sample-length", "0",
               "--optimizer", "adamw", "--weight-decay", "0.05", "--lr", "0.01",
               "--schedule", "cosine", "--warmup-steps", "3", "--min-lr", "0.001",
               "--eval-interval", "4", "--eval-blocks", "2", "--keep-best", "--patience", "100",
               "--on-spike", "rollback", "--val-fraction", "0.2", "--val-streams", "3",
               "--out", str(out)])
    o = capsys.readouterr().out
    assert rc == 0, o
    assert "nats/char" in o and "step 4: val loss" in o and "best parameters saved" in o
    lm = CharLM.load(out)
    cfg = lm.training_state["config"]
    assert (cfg["optimizer"], cfg["weight_decay"], cfg["schedule"], cfg["warmup_steps"],
            cfg["min_lr"], cfg["eval_interval"], cfg["eval_blocks"], cfg["keep_best"],
            cfg["patience"], cfg["on_spike"], cfg["val_streams"]) == (
                "adamw", 0.05, "cosine", 3, 0.001, 4, 2, True, 100, "rollback", 3)
    assert best_path(out).is_file() and lm.eval_history
    assert main(["eval", str(out), "--block", "16"]) == 0
    o = capsys.readouterr().out
    assert "block perplexity" in o and "16-character blocks" in o and "nats/char" in o
    assert main(["train", "--corpus", str(corpus), "--decay-factor", "2",
                 "--schedule", "step", "--out", str(tmp_path / "x.npz")]) == 2


def test_cli_preset_fills_defaults_and_flags_override():
    from fastrnn.cli import PRESETS, build_parser
    p = build_parser()
    a = p.parse_args(["train", "--preset", "shakespeare", "--hidden", "32"])
    assert a.preset == "shakespeare" and a.hidden == 32
    assert PRESETS["shakespeare"]["corpus"] == "shakespeare"
    h = p._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--schedule", "--warmup-steps", "--min-lr", "--decay-factor", "--decay-after",
                 "--keep-best", "--patience", "--eval-interval", "--on-spike", "--preset",
                 "--weight-decay", "--max-steps", "--time-budget"):
        assert flag in h


def test_cli_preset_shakespeare_30min_expands_to_its_flags():
    from fastrnn.cli import PRESETS, apply_preset, build_parser
    p = build_parser()
    a = p.parse_args(["train", "--preset", "shakespeare-30min"])
    apply_preset(a)
    want = p.parse_args(["train", "--corpus", "shakespeare", "--cell", "gru", "--layers", "2",
                         "--hidden", "256", "--dropout", "0.2", "--batch", "32", "--steps",
                         "64", "--optimizer", "adamw", "--lr", "0.008", "--weight-decay",
                         "0.01", "--schedule", "cosine", "--warmup-steps", "100",
                         "--max-steps", "3000", "--time-budget", "1740", "--clip",
                         "1", "--eval-interval", "500", "--keep-best", "--epochs", "100"])
    assert {**vars(a), "preset": None} == vars(want)
    assert a.eval_blocks is None          # step evaluations on all validation blocks
    b = p.parse_args(["train", "--preset", "shakespeare-30min", "--max-steps", "100",
                      "--dropout", "0.3"])
    apply_preset(b)
    assert (b.max_steps, b.dropout, b.layers) == (100, 0.3, 2)
    assert "shakespeare-30min" in p._subparsers._group_actions[0].choices["train"].format_help()
    assert set(PRESETS) == {"shakespeare", "shakespeare-30min"}


def test_cli_plot_with_step_evaluations(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from fastrnn.cli import main
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT * 2)
    png = tmp_path / "curve.png"
    assert main(["train", "--corpus", str(corpus), "--hidden", "8", "--steps", "8", "--batch",
                 "4", "--epochs", "1", "--threads", "1", "--no-progress", "--sample-length",
                 "0", "--eval-interval", "5", "--val-fraction", "0.2", "--plot", str(png),
                 "--out", str(tmp_path / "m.npz")]) == 0
    assert png.stat().st_size > 0
