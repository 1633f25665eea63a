"""Character-level vocabulary (d2l.ai, "Text Sequences" / "Converting Raw Text").

A :class:`Vocab` maps every Unicode code point of a text to an integer id and
back.  The id order is fixed by a documented rule (see :class:`Vocab`), so a
vocabulary rebuilt from the same text, or restored with :meth:`Vocab.from_tokens`
/ :meth:`Vocab.from_dict`, decodes saved models identically on every machine.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["Vocab"]


def _check_text(text: Any, name: str = "text") -> str:
    if isinstance(text, str):
        return text
    hint = " (decode bytes to str first)" if isinstance(text, (bytes, bytearray)) else ""
    raise TypeError(f"{name} must be a str, got {type(text).__name__}{hint}")


def _check_unk(unk: Any) -> None:
    if unk is not None and not isinstance(unk, str):
        raise TypeError(f"unk must be a str or None, got {type(unk).__name__}")


class Vocab:
    """Character-level vocabulary: one token per Unicode code point.

    Parameters
    ----------
    text_or_tokens : str or iterable of str
        The text to count characters in.  An iterable of strings (lines, or a
        list of single characters) is counted as if the strings were joined.
    min_freq : int, default 0
        Characters occurring fewer than ``min_freq`` times are left out of the
        vocabulary and encode to the unknown token.
    reserved_tokens : sequence of str, optional
        Extra tokens such as ``"<pad>"``, placed right after the unknown token.
        They may be several characters long; :meth:`encode` works character by
        character, so multi-character tokens are never produced by it, but
        :meth:`decode` renders them.  A single-character reserved token is also
        the token its character encodes to.
    unk : str or None, default "<unk>"
        The unknown token.  With ``unk=None`` there is none and encoding a
        character that is not in the vocabulary raises ``ValueError``.

    Notes
    -----
    Id order (stable, the same on every platform):

    1. id 0 is ``unk`` (when ``unk`` is not None);
    2. then ``reserved_tokens`` in the order given;
    3. then the characters of the text by descending count, ties broken by
       ascending code point.

    Examples
    --------
    >>> v = Vocab("hello")
    >>> v.tokens
    ['<unk>', 'l', 'e', 'h', 'o']
    >>> v.encode("hole!")
    array([3, 4, 1, 2, 0], dtype=int32)
    >>> v.decode([3, 2, 1, 1, 4])
    'hello'
    """

    def __init__(
        self,
        text_or_tokens: str | Iterable[str],
        *,
        min_freq: int = 0,
        reserved_tokens: Sequence[str] | None = None,
        unk: str | None = "<unk>",
    ) -> None:
        if isinstance(text_or_tokens, str):
            counts = Counter(text_or_tokens)
        elif isinstance(text_or_tokens, Iterable) and not isinstance(text_or_tokens, (bytes, bytearray)):
            counts = Counter()
            for i, piece in enumerate(text_or_tokens):
                counts.update(_check_text(piece, f"text_or_tokens[{i}]"))
        else:
            _check_text(text_or_tokens, "text_or_tokens")  # raises TypeError
        if isinstance(min_freq, bool) or not isinstance(min_freq, (int, np.integer)):
            raise TypeError(f"min_freq must be an int, got {type(min_freq).__name__}")
        if min_freq < 0:
            raise ValueError(f"min_freq must be a non-negative int, got {min_freq!r}")
        if isinstance(reserved_tokens, str) or not (
                reserved_tokens is None or isinstance(reserved_tokens, Iterable)):
            raise TypeError("reserved_tokens must be a sequence of str, got "
                            f"{type(reserved_tokens).__name__}")
        _check_unk(unk)
        head = ([] if unk is None else [unk]) + list(reserved_tokens or [])
        taken = set(head)
        chars = sorted(
            (c for c, n in counts.items() if n >= min_freq and c not in taken),
            key=lambda c: (-counts[c], ord(c)),
        )
        self._setup(head + chars, unk)

    # -- construction helpers -------------------------------------------------
    def _setup(self, tokens: list[str], unk: str | None) -> None:
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"token {i} must be a non-empty str, got {tok!r}")
        index = {tok: i for i, tok in enumerate(tokens)}
        if len(index) != len(tokens):
            dup = next(t for t in tokens if tokens.count(t) > 1)
            raise ValueError(f"duplicate token {dup!r}")
        if unk is not None and unk not in index:
            raise ValueError(f"unk token {unk!r} is not among the tokens (pass unk=None if there is none)")
        self._tokens = list(tokens)
        self._index = index
        self._unk = unk
        self._unk_id = None if unk is None else index[unk]
        self._token_array = np.array(self._tokens, dtype=object)
        # Code-point lookup table for encode(): table[cp] -> id, -1 if unknown.
        # The last entry is the answer for every code point above the largest.
        singles = [(ord(t), i) for t, i in index.items() if len(t) == 1]
        top = max((cp for cp, _ in singles), default=-1)
        fill = -1 if self._unk_id is None else self._unk_id
        self._table = np.full(top + 2, fill, dtype=np.int32)
        for cp, i in singles:
            self._table[cp] = i

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], *, unk: str | None = "<unk>") -> Vocab:
        """Restore a vocabulary from its exact ordered token list.

        Parameters
        ----------
        tokens : sequence of str
            Token of id ``i`` at position ``i`` (as given by :attr:`tokens`).
        unk : str or None, default "<unk>"
            The unknown token; it must be one of ``tokens`` unless None.

        Returns
        -------
        Vocab

        Raises
        ------
        TypeError
            If ``tokens`` is a str or not iterable, or ``unk`` is not a str or None.
        ValueError
            For an empty or duplicate token, or an ``unk`` that is not among the tokens.

        Examples
        --------
        >>> v = Vocab.from_tokens(["<unk>", "a", "b"])
        >>> v.encode("abc")
        array([1, 2, 0], dtype=int32)
        """
        if isinstance(tokens, str) or not isinstance(tokens, Iterable):
            raise TypeError(f"tokens must be a sequence of str, got {type(tokens).__name__}")
        _check_unk(unk)
        self = cls.__new__(cls)
        self._setup(list(tokens), unk)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: ``{"tokens": [...], "unk": unk}``.

        Returns
        -------
        dict
            The exact token list in id order and the unknown token; :meth:`from_dict`
            restores an equal vocabulary (model files store it this way).

        Examples
        --------
        >>> Vocab("abba").to_dict()
        {'tokens': ['<unk>', 'a', 'b'], 'unk': '<unk>'}
        """
        return {"tokens": list(self._tokens), "unk": self._unk}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            ``{"tokens": [...], "unk": unk}``; a missing ``"unk"`` means None.

        Returns
        -------
        Vocab

        Raises
        ------
        ValueError
            If ``d`` is not a dict with a ``"tokens"`` key, or its tokens are invalid.

        Examples
        --------
        >>> v = Vocab("hello world")
        >>> Vocab.from_dict(v.to_dict()) == v
        True
        """
        if not isinstance(d, dict) or "tokens" not in d:
            raise ValueError("expected a dict with a 'tokens' key, as made by Vocab.to_dict()")
        return cls.from_tokens(d["tokens"], unk=d.get("unk"))

    # -- lookups ----------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy).

        Examples
        --------
        >>> Vocab("banana", reserved_tokens=["<pad>"]).tokens
        ['<unk>', '<pad>', 'a', 'n', 'b']
        """
        return list(self._tokens)

    @property
    def unk(self) -> str | None:
        """The unknown token, or None."""
        return self._unk

    @property
    def unk_id(self) -> int | None:
        """Id of the unknown token, or None."""
        return self._unk_id

    def __len__(self) -> int:
        return len(self._tokens)

    def __getitem__(self, token: str) -> int:
        """Id of ``token``; the unk id for unknown tokens (KeyError if unk is None).

        Examples
        --------
        >>> v = Vocab("hello")
        >>> v["l"], v["z"]
        (1, 0)
        """
        _check_text(token, "token")
        i = self._index.get(token, self._unk_id)
        if i is None:
            raise KeyError(token)
        return i

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._index

    def to_token(self, idx: int) -> str:
        """Token of id ``idx``.

        Parameters
        ----------
        idx : int

        Returns
        -------
        str

        Raises
        ------
        ValueError
            If ``idx`` is outside ``[0, len(self))``.
        TypeError
            If ``idx`` is not an integer.

        Examples
        --------
        >>> Vocab("hello").to_token(1)
        'l'
        """
        i = operator.index(idx)
        if not 0 <= i < len(self._tokens):
            raise ValueError(f"id {i} is out of range for a vocabulary of {len(self)} tokens")
        return self._tokens[i]

    # -- encode / decode ----------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Map each character of ``text`` to its id.

        Parameters
        ----------
        text : str

        Returns
        -------
        ids : ndarray of int32, shape (len(text),)

        Raises
        ------
        ValueError
            If ``unk`` is None and a character is not in the vocabulary.
        TypeError
            If ``text`` is not a str.

        Examples
        --------
        >>> Vocab("hello").encode("hell")
        array([3, 2, 1, 1], dtype=int32)
        >>> Vocab("hello", unk=None).encode("help")
        Traceback (most recent call last):
        ...
        ValueError: character 'p' (U+0070) at position 3 is not in the vocabulary and unk is None
        """
        _check_text(text)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        last = len(self._table) - 1
        ids = self._table[np.minimum(cps, last)]
        if self._unk_id is None and len(ids) and ids.min() < 0:
            pos = int(np.argmax(ids < 0))
            raise ValueError(
                f"character {text[pos]!r} (U+{ord(text[pos]):04X}) at position {pos} "
                "is not in the vocabulary and unk is None"
            )
        return ids

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Join the tokens of ``ids`` into a string.

        Parameters
        ----------
        ids : int or array_like of int, shape (n,)

        Returns
        -------
        str

        Raises
        ------
        ValueError
            For an id outside ``[0, len(self))`` or an array with ``ndim > 1``.
        TypeError
            For non-integer ids.

        Examples
        --------
        >>> v = Vocab("hello")
        >>> v.decode(v.encode("hole"))
        'hole'
        >>> v.decode([])
        ''
        """
        arr = np.asarray(ids)
        if arr.ndim > 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {arr.shape}; decode rows one by one")
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        arr = arr.reshape(-1)
        bad = (arr < 0) | (arr >= len(self._tokens))
        if bad.any():
            raise ValueError(
                f"id {int(arr[np.argmax(bad)])} is out of range for a vocabulary of {len(self)} tokens"
            )
        return "".join(self._token_array[arr].tolist())

    # -- dunder ---------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self._tokens == other._tokens and self._unk == other._unk

    def __hash__(self) -> int:
        return hash((tuple(self._tokens), self._unk))

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self._tokens[:10])) + (", ..." if len(self) > 10 else "")
        return f"Vocab(size={len(self)}, unk={self._unk!r}, tokens=[{shown}])"
