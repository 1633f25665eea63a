"""Text corpora and minibatch iterators (d2l.ai, "Recurrent Neural Networks").

Corpora
    :func:`time_machine` (d2l's *The Time Machine*, downloaded once and cached
    under :func:`data_dir`), :func:`builtin_text` (an English corpus shipped with
    every CPython, no network), :func:`load_text` (any UTF-8 file) and
    :func:`preprocess` (d2l's letters-only lower-casing).

Minibatches
    All iterators give pairs ``(X, Y)`` of fresh C-contiguous integer arrays of
    shape ``(batch_size, num_steps)`` with ``Y`` being ``X`` shifted one token
    to the left (``Y[b, t]`` is the token that follows ``X[b, t]``):

    * :func:`seq_data_iter_sequential` -- d2l's sequential partitioning; carry
      the hidden state from one minibatch to the next.
    * :func:`seq_data_iter_random` -- d2l's random sampling; reset the hidden
      state for every minibatch.
    * :func:`windows` + :func:`iter_minibatches` -- the current d2l edition's
      overlapping stride-1 windows.

    They return a :class:`Minibatches`, a re-iterable object with ``len`` (for
    progress bars); call the function again each epoch for a new random offset
    or order.
"""

from __future__ import annotations

import hashlib
import http.client
import operator
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Union

import numpy as np

__all__ = [
    "TIME_MACHINE_URL",
    "TIME_MACHINE_SHA1",
    "DatasetUnavailableError",
    "ChecksumMismatchError",
    "preprocess",
    "builtin_text",
    "data_dir",
    "time_machine",
    "TINY_SHAKESPEARE_URL",
    "TINY_SHAKESPEARE_SHA1",
    "tiny_shakespeare",
    "nanogpt_split",
    "load_text",
    "Minibatches",
    "num_batches",
    "seq_data_iter_sequential",
    "seq_data_iter_random",
    "windows",
    "iter_minibatches",
    "train_val_split",
]

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
_TIME_MACHINE_FILE = "timemachine.txt"
TINY_SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                        "tinyshakespeare/input.txt")
TINY_SHAKESPEARE_SHA1 = "04486597058d11dcc2c556b1d0433891eb639d2e"
_TINY_SHAKESPEARE_FILE = "tinyshakespeare.txt"

RngLike = Union[int, np.random.Generator, None]


class DatasetUnavailableError(FileNotFoundError):
    """A corpus is neither cached nor downloadable; the message says where to put it."""


class ChecksumMismatchError(RuntimeError):
    """A file's sha1 is not the expected one."""


# --------------------------------------------------------------------------- text
def preprocess(text: str, mode: str = "d2l") -> str:
    """Normalise raw text.

    Parameters
    ----------
    text : str
    mode : {"d2l", "raw"}
        ``"d2l"``: d2l's ``re.sub('[^A-Za-z]+', ' ', text).lower()`` (every run
        of non-letters becomes one space; 26 letters + space remain).
        ``"raw"``: ``text`` unchanged.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        If ``text`` is not a str.
    ValueError
        For an unknown ``mode``.

    Examples
    --------
    >>> preprocess("The Time-Machine, 1895!")
    'the time machine '
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if mode == "d2l":
        return re.sub("[^A-Za-z]+", " ", text).lower()
    if mode == "raw":
        return text
    raise ValueError(f"unknown mode {mode!r}; expected 'd2l' or 'raw'")


def builtin_text() -> str:
    """An English corpus (~465k characters) that needs no network or file.

    It is the text of the Python reference-manual topics that ``help()`` shows,
    stored in :mod:`pydoc_data.topics` inside every CPython installation: the
    values of ``pydoc_data.topics.topics`` joined by ``"\\n"`` in sorted key
    order.  Its exact content depends on the Python version.

    Returns
    -------
    str

    Raises
    ------
    RuntimeError
        If this Python installation lacks :mod:`pydoc_data.topics` (some
        distributions strip it).

    Examples
    --------
    >>> text = builtin_text()
    >>> len(text) > 100_000
    True
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip it
        raise RuntimeError(
            "builtin_text() needs the standard-library module pydoc_data.topics, which this "
            "Python installation lacks; use time_machine() or load_text(path) instead"
        ) from exc
    return "\n".join(topics[k] for k in sorted(topics))


def data_dir() -> Path:
    """Directory for downloaded corpora (not created here).

    ``$FASTRNN_DATA`` if set, else ``$XDG_CACHE_HOME/fastrnn`` (when that is an
    absolute path), else ``~/.cache/fastrnn``.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os
    >>> os.environ["FASTRNN_DATA"] = "/srv/corpora"
    >>> data_dir().name
    'corpora'
    >>> del os.environ["FASTRNN_DATA"]
    """
    if os.environ.get("FASTRNN_DATA"):
        return Path(os.environ["FASTRNN_DATA"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastrnn"


_default_data_dir = data_dir  # time_machine's parameter shadows the name


def _sha1(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, sha1: str, timeout: float = 30.0) -> None:
    """Download ``url`` to a temp file beside ``dest``, check sha1, rename atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha1(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha1:
            raise ChecksumMismatchError(
                f"downloaded {url} has sha1 {h.hexdigest()}, expected {sha1}; nothing was saved"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cached_corpus(name: str, file: str, url: str, sha1: str, data_dir, download: bool) -> str:
    """The text of a corpus cached as ``file`` in ``data_dir``, downloaded once."""
    root = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()
    path = root / file
    manual = (f"Download {url} yourself and save it as {path} (sha1 {sha1}), or set "
              f"FASTRNN_DATA to a directory holding {file}.")
    if path.exists():
        got = _sha1(path)
        if got != sha1:
            raise ChecksumMismatchError(
                f"{path} has sha1 {got} but {name}'s is {sha1}: the file is corrupt, truncated, "
                "re-encoded (e.g. CRLF line ends) or another text. It was left untouched; move "
                f"or delete it to download again. {manual}")
    elif not download:
        raise DatasetUnavailableError(f"{path} does not exist and download=False. {manual}")
    else:
        try:
            _download(url, path, sha1)
        except (OSError, http.client.HTTPException) as exc:
            raise DatasetUnavailableError(f"could not download {name} ({exc}). {manual}") from exc
        except ChecksumMismatchError as exc:
            raise ChecksumMismatchError(f"{exc}. {manual}") from None
    return path.read_text(encoding="utf-8")


def tiny_shakespeare(*, data_dir: str | os.PathLike | None = None, download: bool = True,
                     split: bool = False) -> str | tuple[str, str]:
    """Karpathy's tiny-shakespeare (char-rnn, nanoGPT): 1,115,394 characters, 65 distinct.

    Cached as ``tinyshakespeare.txt`` where :func:`time_machine` caches its file
    (``data_dir``, default :func:`fastrnn.datasets.data_dir`): downloaded once from
    :data:`TINY_SHAKESPEARE_URL`, checked against :data:`TINY_SHAKESPEARE_SHA1`, and
    read without the network when it is there. Build the vocabulary from the whole
    text (``Vocab(text)``: the 65 characters plus ``<unk>``).

    Parameters
    ----------
    data_dir : path-like, optional
    download : bool, default True
        If False, never use the network.
    split : bool, default False
        Return ``(train, val)``: nanoGPT's split, the first 90% and the last 10%
        (:func:`nanogpt_split`).

    Returns
    -------
    str or (str, str)

    Raises
    ------
    DatasetUnavailableError, ChecksumMismatchError
        As :func:`time_machine`.
    """
    text = _cached_corpus("tiny-shakespeare", _TINY_SHAKESPEARE_FILE, TINY_SHAKESPEARE_URL,
                          TINY_SHAKESPEARE_SHA1, data_dir, download)
    return nanogpt_split(text) if split else text


def nanogpt_split(seq, train_fraction: float = 0.9):
    """nanoGPT's split: ``seq[:int(n * train_fraction)]``, ``seq[int(n * train_fraction):]``
    (for tiny-shakespeare 1,003,854 and 111,540 characters).

    Parameters
    ----------
    seq : str or sequence
        The text (or ids) to split; ``n = len(seq)``.
    train_fraction : float in (0, 1), default 0.9
        The training part's share.

    Returns
    -------
    (train, val)
        The first ``int(n * train_fraction)`` items and the rest.
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    cut = int(len(seq) * train_fraction)
    return seq[:cut], seq[cut:]


def time_machine(*, data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """d2l's corpus, H. G. Wells' *The Time Machine* (raw text, ~179k characters).

    The file ``timemachine.txt`` is looked for in ``data_dir`` (default
    :func:`fastrnn.datasets.data_dir`).  If it is there with the right sha1 the
    network is not touched; otherwise it is downloaded from
    :data:`TIME_MACHINE_URL` (timeout 30 s) to a temporary file in the same
    directory, checked, and atomically renamed into place.

    Parameters
    ----------
    data_dir : path-like, optional
        Directory holding ``timemachine.txt``.
    download : bool, default True
        If False, never use the network.

    Returns
    -------
    str
        The raw text, decoded as UTF-8 (use :func:`preprocess` for d2l's form).

    Raises
    ------
    DatasetUnavailableError
        The file is missing and cannot be downloaded (or ``download=False``);
        the message gives the path to save it at by hand and its sha1.
    ChecksumMismatchError
        A file is at that path but is not the expected one (it is left alone).

    Examples
    --------
    >>> raw = time_machine()                    # doctest: +SKIP
    >>> preprocess(raw)[:30]                    # doctest: +SKIP
    'the project gutenberg ebook of'

    Without the file and without the network:

    >>> import tempfile
    >>> time_machine(data_dir=tempfile.mkdtemp(), download=False)
    Traceback (most recent call last):
    ...
    fastrnn.datasets.DatasetUnavailableError: ... does not exist and download=False. ...
    """
    root = Path(data_dir).expanduser() if data_dir is not None else _default_data_dir()
    path = root / _TIME_MACHINE_FILE
    manual = (
        f"Download {TIME_MACHINE_URL} yourself and save it as {path} "
        f"(sha1 {TIME_MACHINE_SHA1}), or set FASTRNN_DATA to a directory holding timemachine.txt."
    )
    if path.exists():
        got = _sha1(path)
        if got != TIME_MACHINE_SHA1:
            raise ChecksumMismatchError(
                f"{path} has sha1 {got} but The Time Machine's is {TIME_MACHINE_SHA1}: the file is "
                "corrupt, truncated, re-encoded (e.g. CRLF line ends) or another text. It was left "
                f"untouched; move or delete it to download again. {manual}"
            )
    elif not download:
        raise DatasetUnavailableError(f"{path} does not exist and download=False. {manual}")
    else:
        try:
            _download(TIME_MACHINE_URL, path, TIME_MACHINE_SHA1)
        except (OSError, http.client.HTTPException) as exc:
            raise DatasetUnavailableError(f"could not download The Time Machine ({exc}). {manual}") from exc
        except ChecksumMismatchError as exc:
            raise ChecksumMismatchError(f"{exc}. {manual}") from None
    return path.read_text(encoding="utf-8")


def load_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read a whole text file.

    Parameters
    ----------
    path : str or path-like
    encoding : str, default "utf-8"

    Returns
    -------
    str

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file (the message names it).
    ValueError
        If the file is empty.

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("tiny.txt").write_text("to be or not to be", encoding="utf-8")
    >>> load_text("tiny.txt")
    'to be or not to be'
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"no such text file: {p}")
    text = p.read_text(encoding=encoding)
    if not text:
        raise ValueError(f"text file is empty: {p}")
    return text


# --------------------------------------------------------------------------- minibatches
class Minibatches:
    """Sized, re-iterable sequence of ``(X, Y)`` minibatches.

    ``len(mb)`` is the number of minibatches, ``mb[i]`` the i-th, and iterating
    gives them in order (the same ones each time).  Each ``X``/``Y`` is a new
    C-contiguous array, so the corpus is never modified through it.

    Made by :func:`seq_data_iter_sequential`, :func:`seq_data_iter_random` and
    :func:`iter_minibatches`.

    Parameters
    ----------
    n : int
        The number of minibatches.
    get : callable
        ``get(i)`` returns the i-th ``(X, Y)``.

    Examples
    --------
    >>> import numpy as np
    >>> mb = seq_data_iter_sequential(np.arange(10), batch_size=2, num_steps=2)
    >>> len(mb)
    2
    >>> [X.shape for X, Y in mb]
    [(2, 2), (2, 2)]
    """

    def __init__(self, n: int, get: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> None:
        self._n, self._get = n, get

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = operator.index(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"minibatch {i} out of range ({self._n} minibatches)")
        return self._get(i % self._n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self._get(i) for i in range(self._n))

    def __repr__(self) -> str:
        return f"Minibatches(len={self._n})"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _as_ids(corpus_ids: object, name: str = "corpus_ids") -> np.ndarray:
    arr = np.asarray(corpus_ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def _check_length(ids: np.ndarray, need: int, why: str) -> None:
    if len(ids) < need:
        raise ValueError(f"corpus_ids is too short: {len(ids)} tokens, but {why} need at least {need}")


def num_batches(num_tokens: int, batch_size: int, num_steps: int, *, offset: int = 0) -> int:
    """Minibatches per epoch of both d2l strategies for a corpus of ``num_tokens``.

    Equal to ``(num_tokens - 1 - offset) // (batch_size * num_steps)`` for
    :func:`seq_data_iter_sequential` and :func:`seq_data_iter_random` alike
    (``offset`` is the random start, in ``[0, num_steps)``; 0 gives the maximum).
    For windows use ``len(iter_minibatches(...))``.

    Parameters
    ----------
    num_tokens, batch_size, num_steps : int
    offset : int, default 0

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``batch_size`` or ``num_steps`` is not a positive int.

    Examples
    --------
    >>> num_batches(10_000, batch_size=32, num_steps=35)
    8
    """
    bs, ns = _positive_int("batch_size", batch_size), _positive_int("num_steps", num_steps)
    return max(0, (int(num_tokens) - 1 - int(offset)) // (bs * ns))


def _offset(rng: RngLike, num_steps: int) -> int:
    return 0 if rng is None else int(np.random.default_rng(rng).integers(num_steps))


def seq_data_iter_sequential(
    corpus_ids: np.ndarray, batch_size: int, num_steps: int, *, rng: RngLike = None
) -> Minibatches:
    """d2l's sequential partitioning.

    After an offset (random in ``[0, num_steps)`` when ``rng`` is given, else
    0), the first ``len(self) * batch_size * num_steps`` tokens are cut into
    ``batch_size`` equal parallel streams, one per row.  Minibatch ``i`` holds
    columns ``[i*num_steps, (i+1)*num_steps)`` of every stream, so row ``b`` of
    minibatch ``i + 1`` continues row ``b`` of minibatch ``i``: carry the hidden
    state across minibatches (detaching gradients).

    With offset 0, every token of the corpus except the tail that does not fill
    a whole minibatch (fewer than ``batch_size * num_steps + 1`` tokens) is an
    input exactly once per epoch.  (d2l cuts the streams before trimming, so its
    unused tokens sit at the end of each stream instead; the count is the same.)

    Parameters
    ----------
    corpus_ids : array_like of int, shape (n,)
    batch_size, num_steps : int
        Positive; ``n`` must be at least ``batch_size * num_steps + 1`` (plus
        ``num_steps - 1`` when ``rng`` is given, so every offset fits).
    rng : int, numpy.random.Generator or None
        Source of the random offset; None means offset 0.

    Returns
    -------
    Minibatches
        Of ``(X, Y)``, each of shape ``(batch_size, num_steps)``, dtype of the corpus.

    Raises
    ------
    ValueError
        For a corpus that is not 1-D or too short, or a non-positive size.
    TypeError
        For a corpus that does not hold integers.

    Examples
    --------
    Two streams (rows); row ``b`` of one minibatch continues in the next:

    >>> import numpy as np
    >>> mb = seq_data_iter_sequential(np.arange(10), batch_size=2, num_steps=2)
    >>> X, Y = mb[0]
    >>> X
    array([[0, 1],
           [4, 5]])
    >>> Y
    array([[1, 2],
           [5, 6]])
    >>> mb[1][0]
    array([[2, 3],
           [6, 7]])
    """
    ids = _as_ids(corpus_ids)
    bs, ns = _positive_int("batch_size", batch_size), _positive_int("num_steps", num_steps)
    extra = 0 if rng is None else ns - 1
    _check_length(ids, bs * ns + 1 + extra, f"batch_size={bs} and num_steps={ns}"
                  + (" with a random offset" if rng is not None else ""))
    off = _offset(rng, ns)
    n = num_batches(len(ids), bs, ns, offset=off)
    xs = ids[off: off + n * bs * ns].reshape(bs, n * ns)
    ys = ids[off + 1: off + 1 + n * bs * ns].reshape(bs, n * ns)
    cols = lambda i: slice(i * ns, (i + 1) * ns)  # noqa: E731
    return Minibatches(n, lambda i: (np.ascontiguousarray(xs[:, cols(i)]), np.ascontiguousarray(ys[:, cols(i)])))


def seq_data_iter_random(
    corpus_ids: np.ndarray, batch_size: int, num_steps: int, *, rng: RngLike = None
) -> Minibatches:
    """d2l's random sampling.

    After a random offset in ``[0, num_steps)``, the corpus is cut into
    non-overlapping subsequences of ``num_steps`` tokens, which are shuffled and
    grouped ``batch_size`` at a time (leftover subsequences are dropped).
    Neighbouring minibatches are unrelated: reset the hidden state each time.

    Parameters
    ----------
    corpus_ids : array_like of int, shape (n,)
    batch_size, num_steps : int
        Positive; ``n`` must be at least ``(batch_size + 1) * num_steps``.
    rng : int, numpy.random.Generator or None
        Source of the offset and the shuffle (None: fresh OS entropy).

    Returns
    -------
    Minibatches
        Of ``(X, Y)``, each of shape ``(batch_size, num_steps)``, dtype of the corpus.

    Raises
    ------
    ValueError
        For a corpus that is not 1-D or too short, or a non-positive size.
    TypeError
        For a corpus that does not hold integers.

    Examples
    --------
    >>> import numpy as np
    >>> mb = seq_data_iter_random(np.arange(100), batch_size=4, num_steps=5, rng=0)
    >>> len(mb)
    4
    >>> X, Y = mb[0]
    >>> X.shape, bool((Y == X + 1).all())
    ((4, 5), True)
    """
    ids = _as_ids(corpus_ids)
    bs, ns = _positive_int("batch_size", batch_size), _positive_int("num_steps", num_steps)
    _check_length(ids, bs * ns + ns, f"batch_size={bs} and num_steps={ns} with a random offset")
    gen = np.random.default_rng(rng)
    off = _offset(gen, ns)
    m = (len(ids) - 1 - off) // ns  # number of subsequences
    xs = ids[off: off + m * ns].reshape(m, ns)
    ys = ids[off + 1: off + 1 + m * ns].reshape(m, ns)
    order = gen.permutation(m)
    rows = lambda i: order[i * bs: (i + 1) * bs]  # noqa: E731
    return Minibatches(m // bs, lambda i: (xs[rows(i)], ys[rows(i)]))


def windows(corpus_ids: np.ndarray, num_steps: int, *, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All windows of ``num_steps`` tokens and their targets (current d2l edition).

    Window ``k`` starts at token ``k * stride``: ``X[k] = ids[s : s + num_steps]``
    and ``Y[k] = ids[s + 1 : s + num_steps + 1]``.

    Parameters
    ----------
    corpus_ids : array_like of int, shape (n,)
        ``n`` must be at least ``num_steps + 1``.
    num_steps, stride : int
        Positive.

    Returns
    -------
    X, Y : ndarray, shape ((n - num_steps - 1) // stride + 1, num_steps)
        Read-only strided *views* of the corpus (numpy stride tricks): they take
        no memory beyond the corpus although they look ``num_steps`` times
        larger.  Indexing them with an index array (as :func:`iter_minibatches`
        does) makes small C-contiguous copies; ``np.array(X)`` would copy all.

    Raises
    ------
    ValueError
        For a corpus that is not 1-D or shorter than ``num_steps + 1``, or a
        non-positive size.

    Examples
    --------
    >>> import numpy as np
    >>> X, Y = windows(np.arange(6), num_steps=3)
    >>> X
    array([[0, 1, 2],
           [1, 2, 3],
           [2, 3, 4]])
    >>> Y[0]
    array([1, 2, 3])
    """
    ids = _as_ids(corpus_ids)
    ns, st = _positive_int("num_steps", num_steps), _positive_int("stride", stride)
    _check_length(ids, ns + 1, f"num_steps={ns}")
    w = np.lib.stride_tricks.sliding_window_view(ids, ns + 1)[::st]
    return w[:, :-1], w[:, 1:]


def iter_minibatches(
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    rng: RngLike = None,
    drop_last: bool = False,
) -> Minibatches:
    """Group the rows of ``X`` and ``Y`` (e.g. from :func:`windows`) into minibatches.

    Parameters
    ----------
    X, Y : ndarray, shape (n, num_steps)
    batch_size : int
    shuffle : bool, default True
        Visit the rows in a random order drawn from ``rng``.
    rng : int, numpy.random.Generator or None
    drop_last : bool, default False
        Drop the final minibatch if it has fewer than ``batch_size`` rows.

    Returns
    -------
    Minibatches
        Of C-contiguous copies ``(X[rows], Y[rows])``, shape ``(<= batch_size, num_steps)``.

    Raises
    ------
    ValueError
        If ``X`` and ``Y`` have different numbers of rows, or ``batch_size`` is not
        a positive int.

    Examples
    --------
    >>> import numpy as np
    >>> X, Y = windows(np.arange(10), num_steps=3)
    >>> mb = iter_minibatches(X, Y, batch_size=3, shuffle=False)
    >>> len(mb)                                  # 7 windows: 3 + 3 + 1
    3
    >>> mb[2]
    (array([[6, 7, 8]]), array([[7, 8, 9]]))
    """
    bs = _positive_int("batch_size", batch_size)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must have the same number of rows, got {len(X)} and {len(Y)}")
    n = len(X)
    order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
    count = n // bs if drop_last else -(-n // bs)
    rows = lambda i: order[i * bs: (i + 1) * bs]  # noqa: E731
    return Minibatches(count, lambda i: (X[rows(i)], Y[rows(i)]))


def train_val_split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a 1-D id array into its first (train) and last (validation) part.

    Parameters
    ----------
    ids : array_like, shape (n,)
    val_fraction : float in [0, 1)
        The validation part has ``int(n * val_fraction)`` tokens.

    Returns
    -------
    train : ndarray, shape (n - int(n * val_fraction),)
    val : ndarray, shape (int(n * val_fraction),)
        Views of ``ids``.

    Raises
    ------
    ValueError
        If ``val_fraction`` is not in ``[0, 1)`` or ``ids`` is not 1-D.

    Examples
    --------
    >>> import numpy as np
    >>> train, val = train_val_split(np.arange(10), 0.2)
    >>> train, val
    (array([0, 1, 2, 3, 4, 5, 6, 7]), array([8, 9]))
    """
    arr = _as_ids(ids, "ids")
    if not isinstance(val_fraction, (int, float, np.floating, np.integer)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    cut = len(arr) - int(len(arr) * val_fraction)
    return arr[:cut], arr[cut:]
