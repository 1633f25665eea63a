import hashlib
import io
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fastrnn import datasets as ds
from fastrnn.vocab import Vocab

SHARED_TM = Path(__file__).resolve().parents[2] / "shared" / "data" / "timemachine.txt"
needs_tm = pytest.mark.skipif(not SHARED_TM.is_file(), reason=f"{SHARED_TM} not present")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any network attempt fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail(f"network access attempted: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def tm_dir(tmp_path, monkeypatch):
    shutil.copyfile(SHARED_TM, tmp_path / "timemachine.txt")
    monkeypatch.setenv("FASTRNN_DATA", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- text sources
def test_preprocess():
    assert ds.preprocess("Hello,  World!\n42 x") == "hello world x"
    assert ds.preprocess("Héllo\n", mode="raw") == "Héllo\n"
    with pytest.raises(ValueError, match="mode"):
        ds.preprocess("x", mode="lower")
    with pytest.raises(TypeError):
        ds.preprocess(b"x")


def test_builtin_text(monkeypatch):
    from pydoc_data.topics import topics

    text = ds.builtin_text()
    assert isinstance(text, str) and len(text) > 100_000
    assert text == "\n".join(topics[k] for k in sorted(topics))
    assert text == ds.builtin_text()
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(RuntimeError, match="pydoc_data"):
        ds.builtin_text()


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTRNN_DATA", str(tmp_path / "d"))
    assert ds.data_dir() == tmp_path / "d"
    monkeypatch.delenv("FASTRNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ds.data_dir() == tmp_path / "xdg" / "fastrnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ds.data_dir() == tmp_path / "home" / ".cache" / "fastrnn"


@needs_tm
def test_time_machine_cached(tm_dir):
    text = ds.time_machine()
    assert text.startswith("The Time Machine, by H. G. Wells")
    assert hashlib.sha1(text.encode()).hexdigest() == ds.TIME_MACHINE_SHA1
    assert ds.time_machine(data_dir=tm_dir, download=False) == text


@needs_tm
def test_time_machine_d2l_numbers(tm_dir):
    raw = ds.time_machine()
    text = ds.preprocess(raw)
    # d2l (current edition, whole-text preprocessing): text[:60] and (173428, 28)
    assert text[:60] == "the time machine by h g wells i the time traveller for so it"
    vocab = Vocab(text)
    assert len(vocab) == 28  # 26 letters + space + <unk>
    assert vocab.tokens[:3] == ["<unk>", " ", "e"]
    assert len(vocab.encode(text)) == 173428
    # d2l (older edition, line by line, stripped): lines[0] and a corpus of 170580
    lines = [ds.preprocess(line).strip() for line in raw.splitlines()]
    assert lines[0] == "the time machine by h g wells"
    assert sum(map(len, lines)) == 170580


def test_time_machine_offline_error(tmp_path):
    with pytest.raises(ds.DatasetUnavailableError) as ei:
        ds.time_machine(data_dir=tmp_path, download=False)
    msg = str(ei.value)
    assert str(tmp_path / "timemachine.txt") in msg and ds.TIME_MACHINE_SHA1 in msg
    assert isinstance(ei.value, FileNotFoundError)


def test_time_machine_network_failure(tmp_path, monkeypatch):
    def down(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", down)
    with pytest.raises(ds.DatasetUnavailableError) as ei:
        ds.time_machine(data_dir=tmp_path / "sub")
    msg = str(ei.value)
    assert str(tmp_path / "sub" / "timemachine.txt") in msg and ds.TIME_MACHINE_SHA1 in msg
    assert "no route to host" in msg
    assert list((tmp_path / "sub").iterdir()) == []  # no half-written file


def test_time_machine_wrong_sha1(tmp_path, monkeypatch):
    bad = tmp_path / "timemachine.txt"
    bad.write_text("not the time machine\n")
    monkeypatch.setenv("FASTRNN_DATA", str(tmp_path))
    with pytest.raises(ds.ChecksumMismatchError) as ei:
        ds.time_machine()
    assert str(bad) in str(ei.value) and ds.TIME_MACHINE_SHA1 in str(ei.value)
    assert bad.read_text() == "not the time machine\n"  # left untouched


@needs_tm
def test_time_machine_download_is_atomic(tmp_path, monkeypatch):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(SHARED_TM.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    text = ds.time_machine(data_dir=tmp_path)
    assert calls == [(ds.TIME_MACHINE_URL, 30.0)]
    assert [p.name for p in tmp_path.iterdir()] == ["timemachine.txt"]
    assert text == SHARED_TM.read_text()
    ds.time_machine(data_dir=tmp_path)  # second call: cached, no download
    assert len(calls) == 1


def test_time_machine_corrupt_download(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>oops"))
    with pytest.raises(ds.ChecksumMismatchError, match="nothing was saved"):
        ds.time_machine(data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_text(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("héllo\n", encoding="utf-8")
    assert ds.load_text(p) == "héllo\n"
    assert ds.load_text(str(p)) == "héllo\n"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        ds.load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        ds.load_text(tmp_path / "empty.txt")


# ---------------------------------------------------------------- minibatches
def _check_shift(X, Y, corpus):
    """With corpus == arange, ids are positions: Y is X shifted by one token."""
    assert X.shape == Y.shape
    np.testing.assert_array_equal(Y, X + 1)
    np.testing.assert_array_equal(np.diff(X, axis=1), 1)
    np.testing.assert_array_equal(corpus[X], X)


def test_sequential_uses_every_token_once_and_continues():
    corpus = np.arange(1000, dtype=np.int32)
    bs, ns = 4, 7
    batches = ds.seq_data_iter_sequential(corpus, bs, ns)
    n = ds.num_batches(len(corpus), bs, ns)
    assert len(batches) == n == 999 // 28
    seen = []
    prev = None
    for X, Y in batches:
        assert X.shape == (bs, ns) and X.dtype == np.int32
        assert X.flags.c_contiguous and Y.flags.c_contiguous
        _check_shift(X, Y, corpus)
        if prev is not None:  # row b continues row b of the previous minibatch
            np.testing.assert_array_equal(X[:, 0], prev[:, -1] + 1)
        prev = X
        seen.append(X.ravel())
    seen = np.sort(np.concatenate(seen))
    np.testing.assert_array_equal(seen, np.arange(n * bs * ns))  # each token exactly once
    assert len(corpus) - 1 - len(seen) < bs * ns  # only a short tail is unused


def test_sequential_random_offset():
    corpus = np.arange(500)
    offsets = set()
    for seed in range(30):
        batches = ds.seq_data_iter_sequential(corpus, 3, 5, rng=seed)
        X0, _ = batches[0]
        offsets.add(int(X0[0, 0]))
        assert len(batches) == ds.num_batches(500, 3, 5, offset=int(X0[0, 0]))
        for X, Y in batches:
            _check_shift(X, Y, corpus)
    assert offsets <= set(range(5)) and len(offsets) > 1
    # deterministic for a given seed, and re-iterable
    a = ds.seq_data_iter_sequential(corpus, 3, 5, rng=1)
    b = ds.seq_data_iter_sequential(corpus, 3, 5, rng=np.random.default_rng(1))
    assert [x.tolist() for x, _ in a] == [x.tolist() for x, _ in b] == [x.tolist() for x, _ in a]


def test_random_sampling_non_overlapping():
    corpus = np.arange(1000)
    bs, ns = 5, 8
    batches = ds.seq_data_iter_random(corpus, bs, ns, rng=0)
    starts = []
    for X, Y in batches:
        assert X.shape == (bs, ns) and X.flags.c_contiguous
        _check_shift(X, Y, corpus)
        starts.extend(X[:, 0].tolist())
    starts = np.array(starts)
    offset = starts.min() % ns
    assert np.all(starts % ns == offset)  # aligned, non-overlapping subsequences
    assert len(set(starts.tolist())) == len(starts)
    assert len(batches) == ds.num_batches(1000, bs, ns, offset=int(offset))
    assert not np.all(np.diff(starts) > 0)  # shuffled
    again = ds.seq_data_iter_random(corpus, bs, ns, rng=0)
    assert [x.tolist() for x, _ in again] == [x.tolist() for x, _ in batches]


def test_windows():
    corpus = np.arange(20, dtype=np.int32)
    X, Y = ds.windows(corpus, 5)
    assert X.shape == Y.shape == (15, 5)  # d2l: len(corpus) - num_steps windows
    np.testing.assert_array_equal(X[3], [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(Y[3], [4, 5, 6, 7, 8])
    assert np.shares_memory(X, corpus) and not X.flags.writeable
    X2, Y2 = ds.windows(corpus, 5, stride=4)
    assert X2.shape == (4, 5)
    np.testing.assert_array_equal(X2[:, 0], [0, 4, 8, 12])
    np.testing.assert_array_equal(Y2[-1], np.arange(13, 18))
    assert ds.windows(np.arange(6), 5)[0].shape == (1, 5)


def test_iter_minibatches():
    X, Y = ds.windows(np.arange(30), 4)  # 26 windows
    batches = ds.iter_minibatches(X, Y, 8, shuffle=True, rng=0)
    assert len(batches) == 4
    rows = []
    for xb, yb in batches:
        assert xb.flags.c_contiguous and not np.shares_memory(xb, X)
        np.testing.assert_array_equal(yb, xb + 1)
        rows.extend(xb[:, 0].tolist())
    assert sorted(rows) == list(range(26)) and rows != sorted(rows)
    assert [b[0].shape[0] for b in batches] == [8, 8, 8, 2]
    plain = ds.iter_minibatches(X, Y, 8, shuffle=False, drop_last=True)
    assert len(plain) == 3
    np.testing.assert_array_equal(plain[1][0], X[8:16])
    np.testing.assert_array_equal(plain[-1][0], X[16:24])
    with pytest.raises(IndexError):
        plain[3]
    with pytest.raises(ValueError, match="same number of rows"):
        ds.iter_minibatches(X, Y[:-1], 8)


def test_train_val_split():
    ids = np.arange(10)
    tr, va = ds.train_val_split(ids, 0.25)
    np.testing.assert_array_equal(tr, np.arange(8))
    np.testing.assert_array_equal(va, [8, 9])
    tr, va = ds.train_val_split(ids, 0)
    assert len(tr) == 10 and len(va) == 0
    for bad in (-0.1, 1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="val_fraction"):
            ds.train_val_split(ids, bad)


@pytest.mark.parametrize(
    "fn", [ds.seq_data_iter_sequential, ds.seq_data_iter_random]
)
def test_argument_validation(fn):
    corpus = np.arange(100)
    for name, args in [("batch_size", (0, 5)), ("batch_size", (2.0, 5)), ("num_steps", (2, -1)),
                       ("batch_size", (True, 5))]:
        with pytest.raises(ValueError, match=name):
            fn(corpus, *args)
    with pytest.raises(ValueError, match=r"too short: 100 tokens.*at least"):
        fn(corpus, 10, 10)
    with pytest.raises(ValueError, match="1-D"):
        fn(corpus.reshape(10, 10), 2, 2)
    with pytest.raises(TypeError, match="integers"):
        fn(np.linspace(0, 1, 100), 2, 2)


def test_argument_validation_windows():
    with pytest.raises(ValueError, match="at least 6"):
        ds.windows(np.arange(5), 5)
    with pytest.raises(ValueError, match="stride"):
        ds.windows(np.arange(50), 5, stride=0)
    with pytest.raises(ValueError, match="batch_size"):
        ds.iter_minibatches(np.zeros((3, 2)), np.zeros((3, 2)), 0)


def test_minimum_lengths_are_exact():
    ds.seq_data_iter_sequential(np.arange(4 * 5 + 1), 4, 5)  # offset 0: bs*ns + 1
    ds.seq_data_iter_random(np.arange(4 * 5 + 5), 4, 5, rng=0)  # any offset: (bs+1)*ns
    for seed in range(20):  # with a random offset there is always at least one batch
        assert len(ds.seq_data_iter_sequential(np.arange(25), 4, 5, rng=seed)) == 1
        assert len(ds.seq_data_iter_random(np.arange(25), 4, 5, rng=seed)) == 1
