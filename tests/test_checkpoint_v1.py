"""The upgrade path: model files written by fastrnn 0.1.0 (checkpoint format version 1).

tests/data/make_v1_files.py wrote the files in tests/data with fastrnn 0.1.0, together
with what 0.1.0 generated from them (fixed seeds), their perplexity on a text, and for
the checkpoints with a training state the parameters 0.1.0 reached when it resumed them.
Today's code must load each one and give the same.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastrnn import CharLM

DATA = Path(__file__).resolve().parent / "data"
EXPECT = json.loads((DATA / "v1_expected.json").read_text("utf-8"))
FILES = sorted(EXPECT["files"])


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


def _meta_version(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode("utf-8"))["format_version"]


@pytest.mark.parametrize("name", FILES)
def test_v1_file_generates_the_same_text(name):
    path = DATA / name
    assert _meta_version(path) == 1                       # really a version-1 file
    exp = EXPECT["files"][name]
    lm = CharLM.load(path)
    prefix = EXPECT["prefix"]
    assert lm.generate(prefix, 60, seed=3) == exp["sample_seed3"]
    assert lm.generate(prefix, 60, seed=3, temperature=0.7, top_k=5) == \
        exp["sample_seed3_t07_k5"]
    assert lm.generate(prefix, 60, greedy=True) == exp["greedy"]
    assert "".join(lm.stream(prefix, 40, seed=5, chunk_size=7)) == exp["stream_seed5"]
    assert lm.perplexity(EXPECT["val_text"]) == pytest.approx(exp["perplexity"], rel=1e-6)


@pytest.mark.parametrize("name", [n for n in FILES if "resume" in EXPECT["files"][n]])
def test_v1_checkpoint_resumes_to_the_same_parameters(name, tmp_path):
    exp = EXPECT["files"][name]
    kw = dict(exp["resume"])
    lm = CharLM.load(DATA / name)
    assert lm.training_state is not None
    val = EXPECT["val_text"] if any(r["val_loss"] is not None
                                    for r in exp["resumed_history"]) else None
    hist = lm.fit(EXPECT["text"], val_text=val, resume=True, **kw)
    np.testing.assert_allclose(lm.parameters, exp["resumed_parameters"], rtol=1e-12,
                               atol=1e-14)
    assert [r["step"] for r in hist] == [r["step"] for r in exp["resumed_history"]]
    np.testing.assert_allclose([r["train_loss"] for r in hist],
                               [r["train_loss"] for r in exp["resumed_history"]], rtol=1e-12)
    # resume=PATH into a fresh model of the same configuration, too
    other = CharLM(lm.vocab, lm.hidden_size, nonlinearity=lm.nonlinearity, dtype=lm.dtype)
    copy = tmp_path / name
    shutil.copy(DATA / name, copy)
    other.fit(EXPECT["text"], val_text=val, resume=copy, **kw)
    np.testing.assert_allclose(other.parameters, exp["resumed_parameters"], rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("name", FILES)
def test_v1_file_resaved_loads_the_same(name, tmp_path):
    """Saving a loaded v1 model writes today's format; nothing is lost on the way."""
    lm = CharLM.load(DATA / name)
    out = lm.save(tmp_path / "re.npz")
    back = CharLM.load(out)
    np.testing.assert_array_equal(back.parameters, lm.parameters)
    assert back.vocab == lm.vocab and back.history == lm.history and back.info == lm.info
    assert back.training_state == lm.training_state
    assert back.generate(EXPECT["prefix"], 60, seed=3) == \
        EXPECT["files"][name]["sample_seed3"]
