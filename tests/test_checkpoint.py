"""Model files: round trips, atomic writes, and refusal of corrupted or hostile files."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from fastrnn import CharLM, Vocab, checkpoint
from fastrnn.checkpoint import CheckpointError

TEXT = "the quick brown fox jumps over the lazy dog. ünïcödé ☃ " * 8


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny models: one OpenMP thread (fast, and immune to busy CI machines)."""
    monkeypatch.setenv("FASTRNN_NUM_THREADS", "1")


@pytest.fixture
def trained(tmp_path):
    lm = CharLM(Vocab(TEXT, reserved_tokens=["<pad>"]), 12, seed=1)
    lm.fit(TEXT, val_text=TEXT[:60], epochs=2, batch_size=4, num_steps=8, lr=0.01,
           optimizer="adam", progress=False, seed=2)
    lm.info["note"] = "hello ☃"
    return lm


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i.filename) for i in z.infolist()}


def _rewrite(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(a, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=allow_pickle)
    return buf.getvalue()


def _meta(path):
    raw = np.load(io.BytesIO(_members(path)["meta.npy"]))
    return json.loads(raw.tobytes().decode())


def _with_meta(path, meta):
    m = _members(path)
    m["meta.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    _rewrite(path, m)


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_identical_outputs(tmp_path, dtype):
    lm = CharLM(Vocab(TEXT), 10, dtype=dtype, nonlinearity="relu", seed=4)
    path = lm.save(tmp_path / "m.npz")
    assert path == tmp_path / "m.npz" and path.is_file()
    back = CharLM.load(path)
    assert back.vocab == lm.vocab and back.vocab.tokens == lm.vocab.tokens
    assert (back.hidden_size, back.nonlinearity, back.dtype) == (10, "relu", np.dtype(dtype))
    np.testing.assert_array_equal(back.parameters, lm.parameters)
    assert back.generate("the ", 100, seed=3) == lm.generate("the ", 100, seed=3)
    assert back.perplexity(TEXT) == lm.perplexity(TEXT)


def test_save_load_trained_model_keeps_everything(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    back = CharLM.load(str(p))
    assert back.history == trained.history and len(back.history) == 2
    assert back.info == {"note": "hello ☃"}
    assert back.training_state == trained.training_state
    assert back.vocab.tokens[:2] == ["<unk>", "<pad>"]
    for k in trained._opt:
        np.testing.assert_array_equal(back._opt[k], trained._opt[k])
    # inference-only file: no optimizer state, cannot resume
    q = trained.save(tmp_path / "inf.npz", training_state=False)
    small = CharLM.load(q)
    assert small.training_state is None and not small._opt
    assert set(_members(q)) == {"W_xh.npy", "W_hh.npy", "b_h.npy", "W_hq.npy", "b_q.npy",
                                "meta.npy"}
    np.testing.assert_array_equal(small.parameters, trained.parameters)


def test_file_loads_without_pickle(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    with np.load(p, allow_pickle=False) as z:
        assert {"W_xh", "meta", "opt_m", "opt_v"} <= set(z.files)
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    assert meta["format"] == "fastrnn-charlm" and meta["format_version"] == 2
    assert meta["min_reader_version"] == 2
    assert meta["model"] == {"vocab_size": len(trained.vocab), "hidden_size": 12,
                             "cell": "rnn", "num_layers": 1, "dropout": 0.0,
                             "nonlinearity": "tanh", "dtype": "float32"}
    assert set(meta["train"]) == {"config", "data", "state"}
    assert meta["train"]["config"] == trained.training_state["config"]
    assert meta["train"]["config"]["optimizer"] == "adam"
    assert meta["train"]["state"]["epoch"] == 2 and meta["optional_arrays"] == []


# ---------------------------------------------------------------- atomic writes
def test_save_is_atomic(tmp_path, trained, monkeypatch):
    p = tmp_path / "m.npz"
    CharLM(Vocab(TEXT), 4, seed=0).save(p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        trained.save(p)
    assert p.read_bytes() == before                    # old file intact
    assert os.listdir(tmp_path) == ["m.npz"]           # no temporary file left
    monkeypatch.undo()
    trained.save(p)
    assert os.listdir(tmp_path) == ["m.npz"]
    np.testing.assert_array_equal(CharLM.load(p).parameters, trained.parameters)


def test_save_to_missing_directory(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trained.save(tmp_path / "no" / "m.npz")


# ---------------------------------------------------------------- broken files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        CharLM.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -30])
def test_truncated_file(tmp_path, trained, cut):
    p = trained.save(tmp_path / "m.npz")
    data = p.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    p.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="m.npz"):
        CharLM.load(p)


def test_garbage_and_corrupted_bytes(tmp_path, trained):
    p = tmp_path / "g.npz"
    p.write_bytes(os.urandom(5000))
    with pytest.raises(CheckpointError, match="not a readable"):
        CharLM.load(p)
    q = trained.save(tmp_path / "m.npz")
    data = bytearray(q.read_bytes())
    # flip bytes inside the W_hh array data: the CRC check catches it
    off = data.find(b"W_hh.npy") + 200
    data[off: off + 16] = bytes(16)
    q.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        CharLM.load(q)


def test_newer_and_unknown_format(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    meta = _meta(p)
    _with_meta(p, meta | {"format_version": 99, "min_reader_version": 99})
    with pytest.raises(CheckpointError, match="newer fastrnn.*version 99"):
        CharLM.load(p)
    _with_meta(p, {k: v for k, v in meta.items() if k != "min_reader_version"}
               | {"format_version": 3})           # no min_reader_version: format_version
    with pytest.raises(CheckpointError, match="newer fastrnn.*version 3"):
        CharLM.load(p)
    for bad in ("2", 0, 100, True):
        _with_meta(p, meta | {"min_reader_version": bad})
        with pytest.raises(CheckpointError, match="min_reader_version"):
            CharLM.load(p)
    _with_meta(p, meta | {"format_version": "1"})
    with pytest.raises(CheckpointError, match="format_version"):
        CharLM.load(p)
    _with_meta(p, meta | {"format": "something-else"})
    with pytest.raises(CheckpointError, match="format"):
        CharLM.load(p)


class _Evil:
    """Unpickling this would create a file: a load must never do it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_object_array_refused_without_unpickling(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    marker = tmp_path / "pwned"
    m = _members(p)
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(str(marker))
    m["W_hh.npy"] = _npy(evil, allow_pickle=True)
    _rewrite(p, m)
    assert b"pwned" in p.read_bytes()                   # the payload really is there
    with pytest.raises(CheckpointError, match="object arrays are refused"):
        CharLM.load(p)
    assert not marker.exists()
    # a raw pickle renamed to .npz is refused too
    q = tmp_path / "p.npz"
    q.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError):
        CharLM.load(q)
    assert not marker.exists()


@pytest.mark.parametrize("name,array,match", [
    ("W_hh", np.zeros((3, 3), np.float32), "W_hh.*shape"),
    ("W_xh", np.zeros((3, 3), np.float32), "W_xh.*shape"),
    ("b_q", np.zeros(3, np.int64), "b_q"),
    ("W_hh", np.full((12, 12), np.nan, np.float32), "NaN"),
    ("opt_m", np.zeros(5, np.float32), "optimizer state"),
    ("h_carry", np.zeros((3, 3), np.float32), "hidden state"),
    ("evil", np.zeros(3), "unexpected arrays"),
    ("W_hh", np.zeros((12, 12), [("a", "f4"), ("b", "f4")]), "plain numeric"),
    ("W_hh", np.zeros((12, 12), "U3"), "plain numeric"),
])
def test_wrong_arrays(tmp_path, trained, name, array, match):
    p = trained.save(tmp_path / "m.npz")
    m = _members(p)
    m[f"{name}.npy"] = _npy(array)
    _rewrite(p, m)
    with pytest.raises(CheckpointError, match=match):
        CharLM.load(p)


def test_missing_parameter_and_metadata(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    m = _members(p)
    _rewrite(p, {k: v for k, v in m.items() if k != "b_h.npy"})
    with pytest.raises(CheckpointError, match="b_h.*missing"):
        CharLM.load(p)
    _rewrite(p, {k: v for k, v in m.items() if k != "meta.npy"})
    with pytest.raises(CheckpointError, match="no metadata"):
        CharLM.load(p)
    _rewrite(p, m | {"../escape.npy": m["b_h.npy"]})
    with pytest.raises(CheckpointError, match="unexpected archive member"):
        CharLM.load(p)


@pytest.mark.parametrize("change,match", [
    (lambda m: m["vocab"]["tokens"].pop(), "vocabulary mismatch"),
    (lambda m: m["vocab"].update(tokens="abc"), "vocabulary"),
    (lambda m: m["vocab"]["tokens"].__setitem__(3, 5), "vocabulary"),
    (lambda m: m["vocab"]["tokens"].__setitem__(3, m["vocab"]["tokens"][4]), "duplicate"),
    (lambda m: m["model"].update(hidden_size=10**12), "W_xh.*shape"),
    (lambda m: m["model"].update(hidden_size=-1), "hidden_size"),
    (lambda m: m["model"].update(hidden_size=True), "hidden_size"),
    (lambda m: m["model"].update(dtype="object"), "dtype"),
    (lambda m: m["model"].update(nonlinearity="os.system"), "nonlinearity"),
    (lambda m: m.pop("model"), "model"),
    (lambda m: m.update(history="x"), "history"),
    (lambda m: m.update(info=[1]), "info"),
    (lambda m: m["model"].update(cell="transformer"), "cell"),
    (lambda m: m["model"].update(num_layers=0), "num_layers"),
    (lambda m: m["model"].update(dropout=1.0), "dropout"),
    (lambda m: m.update(optional_arrays="evil"), "optional_arrays"),
    (lambda m: m["train"]["state"].update(epoch=-1), "epoch"),
    (lambda m: m["train"]["state"].update(step=1.5), "step"),
    (lambda m: m["train"].pop("state"), "counters"),
    (lambda m: m["train"]["config"].update(optimizer="evil"), "optimizer"),
    (lambda m: m["train"]["config"].update(batch_size=-3), "batch_size"),
    (lambda m: m["train"]["config"].update(lr="x"), "lr"),
    (lambda m: m["train"]["data"].update(text_sha1=5), "text_sha1"),
    (lambda m: m["train"]["state"].update(epoch_rng={"bit_generator": "MT19937"}), "random"),
    (lambda m: m["train"]["state"]["epoch_rng"]["state"].update(state="x"), "random"),
])
def test_hostile_metadata(tmp_path, trained, change, match):
    p = trained.save(tmp_path / "m.npz")
    meta = _meta(p)
    change(meta)
    _with_meta(p, meta)
    with pytest.raises(CheckpointError, match=match):
        CharLM.load(p)


@pytest.mark.parametrize("payload,match", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100000 + b"]" * 100000, "JSON"),
    (b'{"format": "fastrnn-charlm", "format_version": 2' + b', "x": 1' + b"0" * 5000 + b"}",
     "JSON"),
])
def test_malformed_json(tmp_path, trained, payload, match):
    p = trained.save(tmp_path / "m.npz")
    m = _members(p)
    m["meta.npy"] = _npy(np.frombuffer(payload, np.uint8))
    _rewrite(p, m)
    with pytest.raises(CheckpointError, match=match):
        CharLM.load(p)


def test_oversized_metadata(tmp_path, trained, monkeypatch):
    p = trained.save(tmp_path / "m.npz")
    monkeypatch.setattr(checkpoint, "MAX_META_BYTES", 100)
    with pytest.raises(CheckpointError, match="metadata of .* exceeds"):
        CharLM.load(p)
    with pytest.raises(ValueError, match="limit"):
        trained.save(tmp_path / "n.npz")


def test_zip_bomb_refused_before_inflating(tmp_path, trained, monkeypatch):
    p = trained.save(tmp_path / "m.npz")
    m = _members(p)
    m["W_hh.npy"] = _npy(np.zeros((4096, 4096), np.float32))     # 64 MiB of zeros
    _rewrite(p, m, zipfile.ZIP_DEFLATED)
    assert p.stat().st_size < 1 << 20
    inflated = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: inflated.append(1) or real_load(*a, **k))
    with pytest.raises(CheckpointError, match="zip bomb"):
        CharLM.load(p)
    assert not inflated                                 # refused from the directory alone


def test_total_size_limit(tmp_path, trained):
    p = trained.save(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="more than 1000 bytes"):
        checkpoint.read(p, max_bytes=1000)


def test_lying_npy_header(tmp_path, trained):
    """A header claiming far more data than the member holds is refused unread."""
    p = trained.save(tmp_path / "m.npz")
    m = _members(p)
    real = _npy(np.zeros((12, 12), np.float32))
    hdr = _npy(np.zeros((0, 100000), np.float32))       # a valid header of shape (0, 100000)
    fake = hdr.replace(b"(0, 100000)", b"(100000, 100000)")
    m["W_hh.npy"] = fake + real[len(real) - 12 * 12 * 4:]
    _rewrite(p, m)
    with pytest.raises(CheckpointError, match="claims shape"):
        CharLM.load(p)
    m["W_hh.npy"] = b"\x93NUMPY\x09\x09garbage"
    _rewrite(p, m)
    with pytest.raises(CheckpointError, match="malformed array header"):
        CharLM.load(p)


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="numeric"):
        checkpoint.write(tmp_path / "x.npz", {"a": np.array([object()])}, {})
    with pytest.raises(ValueError, match="name"):
        checkpoint.write(tmp_path / "x.npz", {"../a": np.zeros(2)}, {})
    with pytest.raises(ValueError):
        checkpoint.write(tmp_path / "x.npz", {"a": np.zeros(2)}, {"x": float("nan")})
    assert not list(tmp_path.iterdir())


def test_stale_temporaries_removed_fresh_ones_kept(tmp_path, trained):
    import time
    stale, fresh = tmp_path / ".m.npz.old1.tmp", tmp_path / ".m.npz.new1.tmp"
    other = tmp_path / ".x.npz.old2.tmp"                 # another file's: not ours to touch
    for f in (stale, fresh, other):
        f.write_bytes(b"partial")
    for f in (stale, other):
        os.utime(f, (time.time() - 3600,) * 2)
    trained.save(tmp_path / "m.npz")
    assert not stale.exists() and fresh.exists() and other.exists()


def test_write_errors_name_the_file(tmp_path, trained, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="cannot save the model to .*m.npz: No space") as info:
        trained.save(tmp_path / "m.npz")
    assert info.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        trained.save(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trained.save(tmp_path / "f" / "m.npz")


# ---------------------------------------------------------------- versions
def test_newer_file_with_only_optional_additions_loads(tmp_path, trained):
    """The compatibility rule: a later writer that only adds optional content (new
    metadata keys, arrays listed in optional_arrays) keeps min_reader_version, and
    this reader loads its files, ignoring what it does not know."""
    p = trained.save(tmp_path / "m.npz")
    meta = _meta(p)
    meta |= {"format_version": 7, "schedule": {"name": "cosine", "total_steps": 100},
             "optional_arrays": ["best_W_hh"]}
    meta["model"]["future_option"] = "x"
    meta["train"]["config"]["warmup_steps"] = 10
    meta["train"]["state"]["best_val_loss"] = 1.5
    _with_meta(p, meta)
    m = _members(p)
    m["best_W_hh.npy"] = _npy(np.zeros((12, 12), np.float32))
    _rewrite(p, m)
    back = CharLM.load(p)
    np.testing.assert_array_equal(back.parameters, trained.parameters)
    assert back.training_state["epoch"] == 2
    # ... but an unknown array that is not declared optional is refused
    m["other.npy"] = _npy(np.zeros(3, np.float32))
    _rewrite(p, m)
    with pytest.raises(CheckpointError, match="unexpected arrays.*other"):
        CharLM.load(p)


def test_missing_optional_keys_take_their_defaults(tmp_path, trained):
    """Keys added after a file was written are missing from it: they mean 'not used'."""
    p = trained.save(tmp_path / "m.npz")
    meta = _meta(p)
    for k in ("cell", "num_layers", "dropout"):
        del meta["model"][k]
    del meta["optional_arrays"]
    for k in ("clip_value", "seed", "progress", "checkpoint"):
        del meta["train"]["config"][k]
    _with_meta(p, meta)
    back = CharLM.load(p)
    assert (back.config.cell, back.config.num_layers, back.config.dropout) == ("rnn", 1, 0.0)
    assert back.training_state["config"]["clip_value"] is None


@pytest.mark.parametrize("name", ["W_xh_l1", "opt_m", "h_carry", "b_hn_l12", "x0"])
def test_array_names_allowed(tmp_path, name):
    checkpoint.write(tmp_path / "x.npz", {name: np.zeros(2)}, {})
    arrays, _ = checkpoint.read(tmp_path / "x.npz")
    assert list(arrays) == [name]


@pytest.mark.parametrize("name", ["a.b", "../a", "a/b", "Wü", "", "a b", "1a", "x" * 65])
def test_array_names_refused(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        checkpoint.write(tmp_path / "x.npz", {name: np.zeros(2)}, {})
    assert not list(tmp_path.iterdir())


def test_upgrade_v1_metadata():
    v1 = {"format": "fastrnn-charlm", "format_version": 1,
          "model": {"vocab_size": 5, "hidden_size": 3, "nonlinearity": "relu",
                    "dtype": "float64"},
          "train": {"config": {"epochs": 2, "optimizer": "sgd", "data_sha1": "ab",
                               "val_sha1": None},
                    "epoch": 1, "batch": 0, "step": 7},
          "extra": 1}
    v2 = checkpoint.upgrade(v1)
    assert v2["format_version"] == 2 and v2["upgraded_from"] == 1 and v2["extra"] == 1
    assert v2["model"] == {"cell": "rnn", "num_layers": 1, "dropout": 0.0, "vocab_size": 5,
                           "hidden_size": 3, "nonlinearity": "relu", "dtype": "float64"}
    assert v2["train"] == {"config": {"epochs": 2, "optimizer": "sgd"},
                           "data": {"text_sha1": "ab", "val_sha1": None},
                           "state": {"epoch": 1, "batch": 0, "step": 7}}
    assert v1["model"] == {"vocab_size": 5, "hidden_size": 3, "nonlinearity": "relu",
                           "dtype": "float64"}                      # input untouched
    assert checkpoint.upgrade(v2) == v2
