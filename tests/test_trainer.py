"""fastrnn.train: the Trainer used directly, its hooks, and the optimizer registry."""
import math

import numpy as np
import pytest

import fastrnn
from fastrnn import CharLM, TrainConfig, Vocab
from fastrnn.train import Trainer, TrainingDiverged, optim, schedules
from fastrnn.train import trainer as trainer_mod
from fastrnn.train.dist import SingleProcess

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled ") * 4
CFG = TrainConfig(epochs=2, batch_size=4, num_steps=8, lr=0.01, optimizer="adam",
                  progress=False, seed=5)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


def test_trainer_equals_fit():
    a = CharLM(Vocab(TEXT), 8, seed=0)
    a.fit(TEXT, config=CFG)
    b = CharLM(Vocab(TEXT), 8, seed=0)
    hist = Trainer(b, CFG).fit(TEXT)
    np.testing.assert_array_equal(a.parameters, b.parameters)
    assert hist == b.history and len(hist) == 2
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(b, dict(epochs=1))
    with pytest.raises(TypeError, match="callbacks"):
        Trainer(b, CFG, callbacks=[1])


class RecordingDist(SingleProcess):
    """The single-process collectives, recording the order of the calls."""

    def __init__(self, events):
        self.events = events

    def reduce_mean(self, value, count):
        self.events.append("reduce_mean")
        return value

    def reduce_gradient(self, gflat, count, total):
        self.events.append(("reduce_gradient", count, total))

    def reduce_flags(self, flags):
        self.events.append(("flags", len(flags)))
        return super().reduce_flags(flags)


def test_dist_hooks_called_once_per_step_in_order(monkeypatch):
    events = []
    real_lag, real_clip = trainer_mod.loss_and_grad, optim._lm.clip_global_norm

    def lag(*a, **k):
        events.append("loss_and_grad")
        return real_lag(*a, **k)

    def clip(g, c):
        events.append("clip")
        return real_clip(g, c)

    monkeypatch.setattr(trainer_mod, "loss_and_grad", lag)
    monkeypatch.setattr(optim._lm, "clip_global_norm", clip)
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    ref = CharLM(Vocab(TEXT), 8, seed=0)
    Trainer(lm, CFG.replace(epochs=1), dist=RecordingDist(events)).fit(TEXT)
    got = list(events)
    Trainer(ref, CFG.replace(epochs=1)).fit(TEXT)
    np.testing.assert_array_equal(lm.parameters, ref.parameters)   # identity collectives
    steps = lm.history[0]["step"]
    step = ["loss_and_grad", "reduce_mean", ("reduce_gradient", 32, 32), "clip", ("flags", 2)]
    assert got[: 5 * steps] == step * steps
    assert got[5 * steps:] == [("flags", 2)]                     # after the epoch


def test_after_step_hook_stops_cleanly(tmp_path):
    class StopAtThree(Trainer):
        def _after_step(self, st):
            return st.step == 3

    lm = CharLM(Vocab(TEXT), 8, seed=0)
    ck = tmp_path / "ck.npz"
    hist = StopAtThree(lm, CFG.replace(checkpoint=str(ck))).fit(TEXT)
    assert hist == [] and lm.training_state["step"] == 3
    back = CharLM.load(ck)                            # a checkpoint at the stop
    assert back.training_state["step"] == 3 and back.training_state["batch"] == 3
    back.fit(TEXT, config=CFG, resume=True)           # and it resumes exactly
    full = CharLM(Vocab(TEXT), 8, seed=0)
    full.fit(TEXT, config=CFG)
    np.testing.assert_array_equal(back.parameters, full.parameters)


def test_schedule_hook_gives_each_steps_rate(monkeypatch):
    seen = []

    def make(config, total_steps=None, steps_per_epoch=None):
        def lr(step):
            seen.append(step)
            return config.lr / (1 + step)
        return lr

    monkeypatch.setattr(trainer_mod, "make_schedule", make)
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    lm.fit(TEXT, config=CFG.replace(optimizer="sgd", lr=0.5, epochs=1))
    assert seen == list(range(lm.history[0]["step"]))
    assert schedules.make_schedule(CFG)(12345) == CFG.lr


def test_optimizer_registry_and_state_names():
    assert set(optim.REGISTRY) == set(fastrnn.config.OPTIMIZERS)
    assert optim.state_names("sgd") == () and optim.state_names("adagrad") == ("opt_mem",)
    assert optim.state_names("adam") == ("opt_m", "opt_v")
    assert optim.all_state_names() == {"opt_mem", "opt_m", "opt_v"}
    lm = CharLM(Vocab(TEXT), 4, seed=0)
    ranges = optim.matrix_ranges(lm._layout())
    V, H = lm.vocab_size, 4
    assert ranges == [(0, V * H), (V * H, V * H + H * H),
                      (V * H + H * H + H, V * H + H * H + H + H * V)]
    with pytest.raises(ValueError, match="opt_m"):
        optim.Adam(CFG, {}, None)


def test_optimizers_match_numpy_formulas():
    rng = np.random.default_rng(0)
    p0, g = rng.standard_normal(50), rng.standard_normal(50)
    cfg = TrainConfig(optimizer="adam", betas=(0.8, 0.9), eps=1e-6)
    for t in (1, 2):
        p = p0.copy()
        st = optim.Adam.new_state(50, np.float64)
        st["opt_m"][:] = 0.1
        st["opt_v"][:] = 0.2
        optim.make_optimizer(cfg, st).step(p, g, 0.01, t)
        m = 0.8 * 0.1 + 0.2 * g
        v = 0.9 * 0.2 + 0.1 * g * g
        ref = p0 - 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose(p, ref, rtol=1e-12)
        np.testing.assert_allclose(st["opt_m"], m, rtol=1e-12)


def test_diverged_message_and_hook(monkeypatch):
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    with pytest.raises(TrainingDiverged, match=r"half the learning rate \(lr=5e\+37"):
        lm.fit(TEXT, config=CFG.replace(optimizer="sgd", lr=1e38, clip=None))
    assert np.isfinite(lm.parameters).all() and math.isfinite(lm.perplexity(TEXT))
