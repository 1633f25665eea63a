import json

import numpy as np
import pytest

from fastrnn.vocab import Vocab

UNICODE = "héllo wörld — 日本語 🙂"


def test_unicode_round_trip():
    v = Vocab(UNICODE)
    ids = v.encode(UNICODE)
    assert ids.dtype == np.int32 and ids.shape == (len(UNICODE),)
    assert v.decode(ids) == UNICODE
    assert v.decode(ids.tolist()) == UNICODE
    assert "🙂" in v and "日" in v
    assert v.to_token(v["🙂"]) == "🙂"


def test_lone_surrogate_is_a_token():
    text = "a\udcff b"
    v = Vocab(text)
    assert v.decode(v.encode(text)) == text


def test_ordering_rule():
    # counts: b=3, a=2, then z, ' ', c once each -> ties by code point ascending
    v = Vocab("zbab cab", reserved_tokens=["<pad>", "<bos>"])
    assert v.tokens == ["<unk>", "<pad>", "<bos>", "b", "a", " ", "c", "z"]
    assert v.unk_id == 0 and v["<pad>"] == 1
    # the rule is independent of the order the text presents characters in
    assert Vocab("cab zbab").tokens[1:] == ["b", "a", " ", "c", "z"]


def test_no_unk():
    v = Vocab("abca", unk=None)
    assert v.tokens == ["a", "b", "c"] and v.unk is None and v.unk_id is None
    with pytest.raises(ValueError, match=r"'z'.*position 3"):
        v.encode("abcz")
    with pytest.raises(KeyError):
        v["z"]


def test_min_freq_maps_rare_to_unk():
    v = Vocab("aaabbc", min_freq=2)
    assert v.tokens == ["<unk>", "a", "b"]
    assert "c" not in v
    assert v["c"] == 0
    assert v.encode("abcx").tolist() == [1, 2, 0, 0]
    assert v.decode(v.encode("cab")) == "<unk>ab"


def test_reserved_tokens():
    v = Vocab("ab\n", reserved_tokens=["<pad>", "\n"])
    assert v.tokens[:3] == ["<unk>", "<pad>", "\n"]
    assert v.tokens.count("\n") == 1
    # a single-character reserved token is what its character encodes to
    assert v.encode("a\n").tolist() == [v["a"], 2]
    # multi-character tokens are never produced by encode, but decode renders them
    assert v["<"] == v.unk_id
    assert v.decode([1, v["a"], 1]) == "<pad>a<pad>"
    with pytest.raises(ValueError, match="duplicate"):
        Vocab("ab", reserved_tokens=["<unk>"])
    with pytest.raises(TypeError):
        Vocab("ab", reserved_tokens="<pad>")


def test_iterable_of_strings():
    assert Vocab(["ab", "b"]) == Vocab("abb")
    assert Vocab(list("hello")) == Vocab("hello")


@pytest.mark.parametrize("bad", [b"abc", 3, None, ["a", 1]])
def test_type_errors(bad):
    with pytest.raises(TypeError, match="str"):
        Vocab(bad)


def test_encode_decode_errors():
    v = Vocab("abc")
    with pytest.raises(TypeError, match="str"):
        v.encode(b"abc")
    with pytest.raises(ValueError, match="id 4"):
        v.decode([1, 4])
    with pytest.raises(ValueError, match="id -1"):
        v.decode(np.array([-1]))
    with pytest.raises(ValueError, match="id 7"):
        v.to_token(7)
    with pytest.raises(TypeError):
        v.decode([1.5])
    with pytest.raises(ValueError):
        v.decode([[1, 2]])
    assert v.decode([]) == "" and v.encode("").shape == (0,)
    assert v.decode(np.array([1, 2], dtype=np.uint8)) == "ab"
    assert v.decode(np.int64(3)) == "c"


def test_dict_and_tokens_round_trip():
    v = Vocab(UNICODE + "ll", reserved_tokens=["<pad>"], min_freq=1)
    d = json.loads(json.dumps(v.to_dict()))
    w = Vocab.from_dict(d)
    assert w == v and w.tokens == v.tokens and hash(w) == hash(v)
    assert Vocab.from_tokens(v.tokens) == v
    assert w.decode(w.encode(UNICODE)) == UNICODE
    # unk may sit anywhere in a restored list; ids are kept exactly
    u = Vocab.from_tokens(["x", "<unk>", "y"])
    assert u.encode("xyz").tolist() == [0, 2, 1]
    n = Vocab.from_tokens(["x", "y"], unk=None)
    assert n.to_dict() == {"tokens": ["x", "y"], "unk": None}
    with pytest.raises(ValueError, match="unk"):
        Vocab.from_tokens(["x", "y"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocab.from_tokens(["x", "x"], unk=None)
    with pytest.raises(ValueError):
        Vocab.from_tokens(["x", ""], unk=None)


def test_dunders():
    v = Vocab("hello")
    assert len(v) == 5
    assert v.tokens == ["<unk>", "l", "e", "h", "o"]
    assert "l" in v and "z" not in v and 3 not in v
    assert v["l"] == 1 and v["z"] == 0
    assert repr(v).startswith("Vocab(size=5, unk='<unk>'")
    assert v != Vocab("hello", unk=None)
    assert v != "hello"
    v.tokens.append("q")  # tokens is a copy
    assert len(v) == 5


def test_large_text_round_trip():
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefgh ijk\nλ€🙂"))
    text = "".join(alphabet[rng.integers(len(alphabet), size=200_000)])
    v = Vocab(text)
    ids = v.encode(text)
    assert v.decode(ids) == text
    counts = np.bincount(ids, minlength=len(v))
    assert counts[0] == 0 and np.all(np.diff(counts[1:]) <= 0)  # descending frequency
