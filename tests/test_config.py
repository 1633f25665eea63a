"""ModelConfig and TrainConfig: validation, dict round trips, fit(config=...)."""
import json
import math

import numpy as np
import pytest

from fastrnn import CharLM, ModelConfig, TrainConfig, Vocab

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a "
        "recondite matter to us his grey eyes shone and twinkled ") * 4


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


def test_train_config_defaults_are_fits_defaults():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.num_steps, c.lr, c.optimizer, c.clip, c.clip_value,
            c.sampling, c.num_threads, c.seed, c.progress, c.checkpoint, c.betas, c.eps) == \
        (10, 32, 35, 1.0, "sgd", 1.0, None, "sequential", None, None, True, None,
         (0.9, 0.999), None)
    assert c.resolved_eps == 1e-8


@pytest.mark.parametrize("kw,exc,match", [
    (dict(epochs=0), ValueError, "epochs"), (dict(epochs=True), TypeError, "epochs"),
    (dict(batch_size=1.0), TypeError, "batch_size"), (dict(num_steps=-1), ValueError, "num_steps"),
    (dict(lr=0), ValueError, "lr"), (dict(lr=math.nan), ValueError, "lr"),
    (dict(lr="1"), TypeError, "lr"), (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(betas=(0.9,)), ValueError, "betas"), (dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(eps=0), ValueError, "eps"), (dict(clip=0), ValueError, "clip"),
    (dict(clip_value=-1), ValueError, "clip_value"), (dict(sampling="x"), ValueError, "sampling"),
    (dict(num_threads=0), ValueError, "num_threads"), (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"), (dict(seed="1"), TypeError, "seed"),
    (dict(progress=1), TypeError, "progress"), (dict(checkpoint=3), TypeError, "checkpoint"),
])
def test_train_config_validation(kw, exc, match):
    with pytest.raises(exc, match=match):
        TrainConfig(**kw)


def test_train_config_round_trip_through_json(tmp_path):
    c = TrainConfig(epochs=3, lr=0.01, optimizer="adam", betas=[0.8, 0.99], clip=None,
                    seed=2**63 + 5, checkpoint=tmp_path / "ck.npz", num_threads=2)
    assert c.betas == (0.8, 0.99) and c.checkpoint == str(tmp_path / "ck.npz")
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    # unknown keys (written by a later fastrnn) are ignored, missing ones take defaults
    assert TrainConfig.from_dict(d | {"an_option_from_the_future": 100}) == c
    assert TrainConfig.from_dict({"lr": 0.5}) == TrainConfig(lr=0.5)
    assert c.replace(lr=0.1).lr == 0.1 and c.lr == 0.01
    with pytest.raises(ValueError, match="lr"):
        c.replace(lr=-1)
    with pytest.raises(TypeError, match="mapping"):
        TrainConfig.from_dict([1])
    gen_seeded = TrainConfig(seed=np.random.default_rng(0))     # a Generator draws a seed
    assert isinstance(gen_seeded.seed, int)


def test_model_config():
    c = ModelConfig(65, 256)
    assert c.to_dict() == {"vocab_size": 65, "hidden_size": 256, "cell": "rnn",
                           "num_layers": 1, "dropout": 0.0, "nonlinearity": "tanh",
                           "dtype": "float32"}
    assert ModelConfig.from_dict(c.to_dict() | {"future": 1}) == c
    assert ModelConfig(5, 4, cell="lstm", num_layers=2, dtype=np.float64).gates == 4
    assert ModelConfig(5, 4, dtype=np.dtype("float64")).dtype == "float64"
    for kw, exc, match in [(dict(cell="elman"), ValueError, "cell"),
                           (dict(num_layers=0), ValueError, "num_layers"),
                           (dict(dropout=1.0), ValueError, "dropout"),
                           (dict(dropout=-0.1), ValueError, "dropout"),
                           (dict(cell="gru", nonlinearity="relu"), ValueError, "nonlinearity"),
                           (dict(dtype="float16"), TypeError, "dtype"),
                           (dict(hidden_size=0), ValueError, "hidden_size")]:
        with pytest.raises(exc, match=match):
            ModelConfig(**(dict(vocab_size=5, hidden_size=4) | kw))


def test_fit_config_equals_keywords_and_keywords_override():
    kw = dict(epochs=2, batch_size=4, num_steps=8, lr=0.01, optimizer="adam",
              progress=False, seed=3)
    a = CharLM(Vocab(TEXT), 8, seed=0)
    ha = a.fit(TEXT, **kw)
    b = CharLM(Vocab(TEXT), 8, seed=0)
    hb = b.fit(TEXT, config=TrainConfig(**kw))
    np.testing.assert_array_equal(a.parameters, b.parameters)
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    c = CharLM(Vocab(TEXT), 8, seed=0)
    c.fit(TEXT, config=TrainConfig(**(kw | dict(epochs=5, lr=1.0))), epochs=2, lr=0.01)
    np.testing.assert_array_equal(a.parameters, c.parameters)
    assert c.training_state["config"] == b.training_state["config"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        c.fit(TEXT, learning_rate=0.1)
    with pytest.raises(TypeError, match="TrainConfig"):
        c.fit(TEXT, config={"lr": 0.1})


def test_training_state_holds_the_resolved_config():
    lm = CharLM(Vocab(TEXT), 8, seed=0)
    lm.fit(TEXT, epochs=1, batch_size=4, num_steps=8, optimizer="adam", lr=0.01,
           progress=False, seed=1)
    st = lm.training_state
    assert st["config"]["num_threads"] == 1 and st["config"]["eps"] == 1e-8
    assert st["config"]["seed"] == 1 and st["epoch"] == 1 and st["batch"] == 0
    assert set(st["data"]) == {"text_sha1", "val_sha1"} and st["data"]["val_sha1"] is None
    assert TrainConfig.from_dict(st["config"]).optimizer == "adam"
