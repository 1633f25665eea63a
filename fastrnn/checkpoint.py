"""Safe model files: NumPy ``.npz`` arrays plus JSON metadata, never pickle.

A file is a ZIP archive written by :func:`numpy.savez` holding named numeric
arrays and one ``meta`` member: the UTF-8 bytes of a JSON object (as a uint8
array) with ``"format": "fastrnn-charlm"`` and ``"format_version"``.

Writing is atomic: the archive goes to a temporary file in the target
directory, is flushed and fsync'ed, then renamed over the target with
:func:`os.replace`, so a crash never leaves a half-written model behind.

Reading trusts nothing. Before any array is read, :func:`read` checks the ZIP
directory (member names, count, declared sizes and compression ratios, so a
zip bomb is refused before it is inflated) and each member's ``.npy`` header
(dtype must be a plain number type, shape must match its declared size);
arrays are then loaded with ``numpy.load(..., allow_pickle=False)`` and the
metadata is parsed as JSON with a size limit. Every failure raises
:class:`CheckpointError` naming the file and the problem.

Versions and compatibility
--------------------------
Two integers in the metadata decide who may read a file:

- ``format_version``: the schema the writer used (this fastrnn writes
  :data:`FORMAT_VERSION` = 2);
- ``min_reader_version``: the oldest schema whose readers use the file correctly
  (this fastrnn writes :data:`MIN_READER_VERSION` = 2). Files without it (version 1)
  mean ``min_reader_version = format_version``.

A reader of schema R accepts a file if and only if ``min_reader_version <= R``; then it
**ignores metadata keys it does not know** and any array listed in the metadata's
``optional_arrays`` that it does not know (other unknown arrays make the file invalid:
they mean corruption or content that is not optional). So a later fastrnn that only
ADDS optional content (a schedule's state, a best-so-far model, a distributed run's
record...) raises ``format_version`` and keeps ``min_reader_version``, and the files it
writes still load here; content that an older reader would misuse if it ignored it
(a new cell, a changed meaning) raises ``min_reader_version`` as well, and older
readers then refuse the file with "written by a newer fastrnn". Missing optional
keys take the value that means "not used", so files written before a key existed
keep loading.

:func:`upgrade` converts the metadata of any older schema this fastrnn reads
(version 1: fastrnn 0.1.0) into the current one; :meth:`fastrnn.CharLM.load` calls it,
so every older file loads, generates the same text and resumes training as before.

Schema 2 (``meta``)::

    format              "fastrnn-charlm"
    format_version      2
    min_reader_version  2
    fastrnn_version     the writer's version (informative)
    model               ModelConfig.to_dict(): cell, vocab_size, hidden_size,
                        num_layers, dropout, nonlinearity, dtype
    vocab               Vocab.to_dict()
    history             list of per-epoch records
    eval_history        list of the evaluations every N steps (optional; [] if absent)
    info                free JSON object (the command line's corpus, prefix, ...)
    train               null, or {"config": TrainConfig.to_dict(),
                                  "data": {"text_sha1", "val_sha1"},
                                  "state": {"epoch", "batch", "step", "loss_sum",
                                            "tokens", "seconds", "epoch_rng",
                                            optional: "seed", "horizon",
                                            "steps_per_epoch", "elapsed", "best_loss",
                                            "best_step", "bad_evals", "spikes",
                                            "skipped", "eval_loss_sum", "eval_tokens"}}
    optional_arrays     [] (names of arrays a reader may ignore)

Arrays: the parameters under their names in :func:`fastrnn.params.param_names`
(``W_xh``, ``W_hh``, ``b_h``, [``b_hn``], per layer with the suffix ``_l{k}`` for
k >= 1, then ``W_hq``, ``b_q``); with a training state, the optimizer's flat state
(``opt_m``, ``opt_v`` or ``opt_mem``) and, mid-epoch with sequential sampling, the
carried hidden state ``h_carry``.

Schema 1 (fastrnn 0.1.0) differs in ``model`` (no cell, num_layers, dropout: an
Elman network of one layer) and ``train`` (one object: ``config`` with
``data_sha1``/``val_sha1`` inside it, and the counters beside it).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "MIN_READER_VERSION", "write",
           "read", "upgrade", "check_writable"]

FORMAT = "fastrnn-charlm"
FORMAT_VERSION = 2          # the schema this fastrnn writes and reads
MIN_READER_VERSION = 2      # the oldest schema whose readers can use what it writes

META_KEY = "meta"
MAX_META_BYTES = 16 << 20        # 16 MiB of JSON: vocabularies of ~1M tokens
MAX_TOTAL_BYTES = 8 << 30        # 8 GiB of arrays in all
MAX_MEMBERS = 64
MAX_RATIO = 200                  # declared size / compressed size, for members over 1 MiB
_ALLOWED_KINDS = "biuf"          # bool, signed, unsigned, float: nothing that can hold objects
# array (member) names: ASCII identifiers such as W_hh_l2 or opt_m; no dots, slashes or
# non-ASCII letters, so a name is never a path and always a valid member name
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def valid_name(name: str) -> bool:
    """Whether ``name`` may name an array in a model file."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


class CheckpointError(ValueError):
    """A model file is unreadable, corrupted, of another version, or unsafe."""


# ---------------------------------------------------------------------------
# write

STALE_SECONDS = 60.0   # temporaries older than this are leftovers of killed saves


def _named(exc: OSError, path: Path) -> OSError:
    """The same kind of OSError (errno kept), naming the file and what failed."""
    if exc.errno:
        return type(exc)(exc.errno, f"cannot save the model to {path}: "
                                    f"{exc.strerror or exc}")
    return type(exc)(f"cannot save the model to {path}: {exc}")


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, naming ``path``, if a model cannot be written there; return its directory.

    Parameters
    ----------
    path : str or path-like
        Where a model is about to be saved.

    Returns
    -------
    pathlib.Path
        The directory that will hold the file.

    Raises
    ------
    FileNotFoundError
        The directory does not exist.
    IsADirectoryError
        ``path`` is a directory.
    PermissionError
        The directory is not writable.

    Examples
    --------
    >>> str(check_writable("model.npz"))
    '.'
    >>> check_writable("no/such/dir/model.npz")
    Traceback (most recent call last):
    ...
    FileNotFoundError: cannot save the model to ...: directory ... does not exist
    """
    path = Path(path).expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot save the model to {path}: directory {directory} "
                                "does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the model to {path}: it is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save the model to {path}: directory {directory} "
                              "is not writable")
    return directory


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.*.tmp`` siblings left by saves that were killed (SIGKILL, power
    loss) more than :data:`STALE_SECONDS` ago; a save in progress is younger."""
    now = time.time()
    try:
        for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            try:
                if now - p.stat().st_mtime > STALE_SECONDS:
                    p.unlink()
            except OSError:
                pass
    except OSError:
        pass

@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C back while a save creates, writes, renames or removes its
    temporary file (main thread only), then deliver it to the handler that was in
    place: an interrupt can no longer strand a temporary file half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    try:
        old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except (ValueError, OSError):  # no signal support here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got:
            if callable(old):
                old(signal.SIGINT, None)    # default_int_handler raises KeyboardInterrupt
            elif old == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def write(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
          meta: Mapping[str, Any]) -> Path:
    """Atomically write ``arrays`` and JSON ``meta`` to ``path``.

    Parameters
    ----------
    path : str or path-like
        Target file; written exactly there (no suffix is added).
    arrays : mapping of str to ndarray
        Numeric arrays (no object dtype); names must be plain identifiers.
    meta : mapping
        JSON-serialisable metadata; ``format``, ``format_version`` and
        ``min_reader_version`` are added (``meta`` may set a higher
        ``min_reader_version``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        For an invalid array name, metadata that is not JSON-serialisable (NaN and
        infinity included) or larger than :data:`MAX_META_BYTES`.
    TypeError
        For an array that is not numeric.
    OSError
        When the file cannot be written (the message names it); the target is then
        unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> write("w.npz", {"W": np.eye(2)}, {"note": "identity"}).name
    'w.npz'
    >>> arrays, meta = read("w.npz")
    >>> arrays["W"]
    array([[1., 0.],
           [0., 1.]])
    >>> meta["note"], meta["format"]
    ('identity', 'fastrnn-charlm')
    """
    path = Path(path).expanduser()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "min_reader_version": MIN_READER_VERSION, **meta}
    blob = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(blob) > MAX_META_BYTES:
        raise ValueError(f"metadata is {len(blob)} bytes, over the {MAX_META_BYTES}-byte limit")
    members = {}
    for name, a in arrays.items():
        if name == META_KEY or not valid_name(name):
            raise ValueError(f"invalid array name {name!r}")
        a = np.ascontiguousarray(a)
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {a.dtype}; only numeric arrays are saved")
        members[name] = a
    members[META_KEY] = np.frombuffer(blob, dtype=np.uint8)
    directory = check_writable(path)
    _remove_stale_temporaries(path)
    with _sigint_deferred():
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise _named(exc, path) from None
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **members)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _named(exc, path) from None
            raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


# ---------------------------------------------------------------------------
# read

_MAX_NPY_HEADER = 10000


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(shape, dtype, header_length) of one .npy member, read from its header only."""
    with zf.open(info) as f:  # the header's length field first: numpy < 1.24 has no limit
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        width = 2 if version == (1, 0) else 4
        length = int.from_bytes(f.read(width), "little")
        if length > _MAX_NPY_HEADER:
            raise ValueError(f"header of {length} bytes, over the {_MAX_NPY_HEADER}-byte limit")
    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
    with zf.open(info) as f:
        np.lib.format.read_magic(f)
        try:
            shape, fortran, dtype = reader(f, max_header_size=_MAX_NPY_HEADER)
        except TypeError as exc:  # numpy < 1.24: no max_header_size (length checked above)
            if "max_header_size" not in str(exc):
                raise
            shape, fortran, dtype = reader(f)
        return shape, fortran, np.dtype(dtype), f.tell()


def read(path: str | os.PathLike, *, max_bytes: int = MAX_TOTAL_BYTES) -> tuple[dict, dict]:
    """Read a file written by :func:`write`, checking it thoroughly first.

    Parameters
    ----------
    path : str or path-like
    max_bytes : int
        Refuse files whose arrays would take more than this many bytes.

    Returns
    -------
    arrays : dict of str to ndarray
        Every array except the metadata.
    meta : dict
        The parsed JSON metadata (``format`` and ``format_version`` checked).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        For anything else wrong with the file.

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("junk.npz").write_bytes(b"not a zip file")
    >>> read("junk.npz")
    Traceback (most recent call last):
    ...
    fastrnn.checkpoint.CheckpointError: junk.npz: ...
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid fastrnn model file: {why}")

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise bad(f"not a readable .npz archive ({exc}); is the file truncated or corrupted?") \
            from None
    except OSError as exc:
        raise bad(f"cannot open it ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise bad(f"{len(infos)} archive members (at most {MAX_MEMBERS} expected)")
        names = {}
        total = 0
        for info in infos:
            stem = info.filename[:-4] if info.filename.endswith(".npy") else None
            if stem is None or not valid_name(stem) or stem in names:
                raise bad(f"unexpected archive member {info.filename!r}")
            if info.flag_bits & 0x1:
                raise bad(f"member {info.filename!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise bad(f"member {info.filename!r} uses an unsupported compression method")
            if (info.file_size > (1 << 20)
                    and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
                raise bad(f"member {info.filename!r} would inflate {info.compress_size} bytes "
                          f"to {info.file_size} (a zip bomb?)")
            total += info.file_size
            if total > max_bytes:
                raise bad(f"its arrays would take more than {max_bytes} bytes")
            names[stem] = info
        if META_KEY not in names:
            raise bad("no metadata (the 'meta' member is missing)")
        if names[META_KEY].file_size > MAX_META_BYTES + 1024:
            raise bad(f"metadata of {names[META_KEY].file_size} bytes exceeds the "
                      f"{MAX_META_BYTES}-byte limit")
        for stem, info in names.items():
            try:
                shape, fortran, dtype, header_len = _npy_header(zf, info)
            except Exception as exc:  # malformed header of any kind
                raise bad(f"member {info.filename!r} has a malformed array header "
                          f"({type(exc).__name__}: {exc})") from None
            if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None:
                raise bad(f"array {stem!r} has dtype {dtype}; only plain numeric arrays are "
                          "allowed (object arrays are refused: they would need pickle)")
            if any(int(s) < 0 for s in shape):
                raise bad(f"array {stem!r} has a negative dimension in shape {shape}")
            nbytes = dtype.itemsize
            for s in shape:
                nbytes *= int(s)
            if nbytes + header_len != info.file_size:
                raise bad(f"array {stem!r} claims shape {shape} of {dtype} "
                          f"({nbytes} bytes) but the member holds {info.file_size} bytes")
            if stem == META_KEY and (dtype != np.uint8 or len(shape) != 1):
                raise bad("metadata must be a 1-D uint8 array of JSON text")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise bad(f"reading the arrays failed ({type(exc).__name__}: {exc})") from None
    raw = arrays.pop(META_KEY)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"metadata is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise bad("metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise bad(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad(f"format_version {version!r} is not an integer")
    if version < 1:
        raise bad(f"unknown format version {version}")
    need = meta.get("min_reader_version", version)
    if not isinstance(need, int) or isinstance(need, bool) or not 1 <= need <= version:
        raise bad(f"min_reader_version {need!r} is not an integer in [1, format_version]")
    if need > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer fastrnn (format version {version}, "
                              f"readable from version {need}); this fastrnn reads version "
                              f"{FORMAT_VERSION} -- upgrade fastrnn")
    return arrays, meta


# ---------------------------------------------------------------------------
# schema upgrades

def upgrade(meta: Mapping[str, Any]) -> dict:
    """Rewrite the metadata of an older schema in today's (see the module docstring).

    Only the structure changes: keys this function does not know pass through, and
    values are validated by the caller as for a current file.

    Parameters
    ----------
    meta : mapping
        The metadata of a file, as :func:`read` returns it.

    Returns
    -------
    dict
        A new dict in schema :data:`FORMAT_VERSION`; for an upgraded file
        ``upgraded_from`` is the file's version. Current metadata comes back as a copy.

    Examples
    --------
    >>> v1 = {"format_version": 1, "model": {"vocab_size": 28, "hidden_size": 32}}
    >>> m = upgrade(v1)
    >>> m["format_version"], m["upgraded_from"], m["model"]["cell"], m["model"]["num_layers"]
    (2, 1, 'rnn', 1)
    """
    meta = dict(meta)
    version = meta.get("format_version")
    if version >= FORMAT_VERSION:
        return meta
    if version == 1:
        meta = _upgrade_1_to_2(meta)
    meta["upgraded_from"] = version
    return meta


def _upgrade_1_to_2(meta: dict) -> dict:
    """Schema 1 (fastrnn 0.1.0): an Elman network of one layer; one training object."""
    model = meta.get("model")
    if isinstance(model, dict):
        meta["model"] = {"cell": "rnn", "num_layers": 1, "dropout": 0.0, **model}
    train = meta.get("train")
    if isinstance(train, dict):
        cfg = train.get("config")
        cfg = dict(cfg) if isinstance(cfg, dict) else cfg
        data = {}
        if isinstance(cfg, dict):
            data = {"text_sha1": cfg.pop("data_sha1", None), "val_sha1": cfg.pop("val_sha1", None)}
        meta["train"] = {"config": cfg, "data": data,
                         "state": {k: v for k, v in train.items() if k != "config"}}
    meta["format_version"] = 2
    meta.setdefault("optional_arrays", [])
    return meta
