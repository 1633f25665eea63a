"""Faults, with real processes: Ctrl-C during fit, SIGKILL while saving, a full disk,
an unwritable path, an absurd learning rate, and crafted model files under a
memory cap. Never lost work, never a corrupt file in place of a good one.

(test_model.py covers Ctrl-C raised inside the process and exact resume;
test_cli.py the command's Ctrl-C; test_checkpoint.py each crafted-file case.
Here the signals come from outside, at moments the process does not choose.)
"""
from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fastrnn

CharLM = getattr(fastrnn, "CharLM", None)
pytestmark = [
    pytest.mark.skipif(CharLM is None, reason="fastrnn.CharLM is not on this branch yet"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits"),
]
PKG_ROOT = Path(fastrnn.__file__).resolve().parents[1]
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief. ") * 30
LONG_TEXT = TEXT * 20      # ~0.5 s per epoch here: room for a signal mid-epoch
CHILD_EPOCHS = 40          # what the Ctrl-C child is asked for: it must never get there
FIT = dict(batch_size=4, num_steps=16, lr=0.01, optimizer="adam", progress=False, seed=1,
           num_threads=1)


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTRNN_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def popen(code: str, *args: str, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), cwd=cwd)


def run(code: str, *args: str, timeout=120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=child_env(),
                          cwd=cwd)


def wait_for_line(p: subprocess.Popen, prefix: str, timeout=60) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = p.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    p.kill()
    out, err = p.communicate()
    raise AssertionError(f"child never printed {prefix!r}; exit {p.returncode}\n{out}\n{err}")


def tmp_files(d: Path) -> list[str]:
    return sorted(f.name for f in d.iterdir() if f.name.endswith(".tmp"))


# ---------------------------------------------------------------------------
# Ctrl-C from outside

TRAIN_CHILD = '''
import json, sys
import numpy as np
from fastrnn import CharLM
from fastrnn.model import TrainingInterrupted
text, ck, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(text, encoding="utf-8").read()
lm = CharLM(text, hidden_size=48, seed=0)
cb = lambda m, rec: print("epoch", rec["epoch"], rec["wall_time"], flush=True)
try:
    lm.fit(text, epochs=epochs, checkpoint=ck, callbacks=[cb], **json.loads(sys.argv[4]))
except TrainingInterrupted as exc:
    st = lm.training_state
    print("interrupted", json.dumps({"epoch": exc.epoch, "batch": exc.batch,
          "finite": bool(np.isfinite(lm.parameters).all()), "step": st["step"]}), flush=True)
    sys.exit(130)
print("finished", flush=True)
'''


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    p.write_text(LONG_TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def uninterrupted():
    """Parameters after 4 epochs without interruption (one thread: bitwise reproducible)."""
    lm = CharLM(LONG_TEXT, hidden_size=48, seed=0)
    lm.fit(LONG_TEXT, epochs=4, **FIT)
    return lm


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.7])
def test_sigint_during_fit_then_resume_equals_uninterrupted(tmp_path, corpus, uninterrupted,
                                                            frac):
    """SIGINT sent `frac` of an epoch after the first epoch ends: the child stops cleanly
    (exit 130) with finite parameters, the checkpoint loads, and a fresh process
    resuming from it ends exactly where an uninterrupted 4-epoch run does.

    The child is asked for CHILD_EPOCHS epochs, far more than the signal lets it run
    (the signal lands in epoch 2 or 3), so a child that finishes ignored the Ctrl-C:
    that is a failure, never a skip. The delay is measured in epochs (the child reports
    epoch 1's wall time), so a faster machine does not run past epoch 4 either."""
    ck = tmp_path / "ck.npz"
    p = popen(TRAIN_CHILD, str(corpus), str(ck), str(CHILD_EPOCHS), json.dumps(FIT))
    try:
        line = wait_for_line(p, "epoch 1 ")
        time.sleep(frac * float(line.split()[2]))
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            raise AssertionError("the child ignored SIGINT and was still training") from None
    finally:
        p.kill()
    assert "finished" not in out and p.returncode != 0, (
        f"the child trained all {CHILD_EPOCHS} epochs: SIGINT did not stop fit\n{out}\n{err}")
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    info = json.loads(out.split("interrupted", 1)[1].strip().splitlines()[0])
    assert info["finite"]
    # resuming to 4 epochs is only comparable if the interruption came before the end
    # of epoch 4 (exc.epoch is the epoch being trained, batch 0 = after it ended)
    assert info["epoch"] < 4 or (info["epoch"] == 4 and info["batch"] == 0), info
    lm = CharLM.load(ck)
    st = lm.training_state
    assert st["step"] == info["step"], "the checkpoint is not the state at the interruption"
    assert not tmp_files(tmp_path)
    # resume in a fresh process, as a user would
    res = run('''
        import json, sys
        import numpy as np
        from fastrnn import CharLM
        lm = CharLM.load(sys.argv[1])
        lm.fit(open(sys.argv[2], encoding="utf-8").read(), epochs=4, resume=True,
               **json.loads(sys.argv[3]))
        np.save(sys.argv[4], lm.parameters)
    ''', str(ck), str(corpus), json.dumps(FIT), str(tmp_path / "resumed.npy"))
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), uninterrupted.parameters)


def test_double_sigint_while_saving_keeps_a_loadable_checkpoint(tmp_path, corpus):
    """Two Ctrl-C in quick succession (the second lands while the checkpoint is being
    written, or during the next minibatch) abort at once, and the file on disk is
    still a complete model: the previous one or the new one, never a torn one."""
    for attempt, gap in enumerate([0.0, 0.001, 0.005, 0.02]):
        ck = tmp_path / f"ck{attempt}.npz"
        p = popen(TRAIN_CHILD, str(corpus), str(ck), "50", json.dumps(FIT))
        try:
            wait_for_line(p, "epoch 1")
            p.send_signal(signal.SIGINT)
            time.sleep(gap)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=120)
        finally:
            p.kill()
        assert p.returncode in (1, 130, -signal.SIGINT), (p.returncode, err)
        assert "Segmentation" not in err and "core dumped" not in err
        lm = CharLM.load(ck)                      # complete and valid
        assert np.isfinite(lm.parameters).all() and lm.training_state["epoch"] >= 1
        assert not tmp_files(tmp_path), "a temporary file was left behind"


# ---------------------------------------------------------------------------
# SIGKILL while saving

SAVER = '''
import os, sys
import numpy as np
from fastrnn import CharLM
path = sys.argv[1]
lm = CharLM("abcdefghijklmnopqrstuvwxyz ,.", hidden_size=600, seed=0)   # ~1.5 MB file
v = 0
# make the save observable from outside: "writing v" is printed (and flushed into the
# pipe) when checkpoint.write starts writing the temporary file, "renaming v" just
# before the os.replace that puts it in place, "saved v" after save() returned. A
# SIGKILL whose last line is "writing v" provably landed before version v's rename.
# Each line is ONE write: with PYTHONUNBUFFERED set (as on the CI machines) print()
# writes its pieces with one system call each, and a kill between "saved" and its
# number left a line the parent could not read (seen once on a loaded machine).
def say(word):
    sys.stdout.write(f"{word} {v}\\n")
    sys.stdout.flush()
real_savez, real_replace = np.savez, os.replace
def savez(*a, **k):
    say("writing")
    return real_savez(*a, **k)
def replace(*a, **k):
    say("renaming")
    return real_replace(*a, **k)
np.savez, os.replace = savez, replace
while True:
    v += 1
    lm.params["b_q"][0] = v            # the version, in the arrays ...
    lm.info["version"] = v             # ... and in the metadata
    lm.save(path)
    say("saved")
'''

KILLS = 12


def test_sigkill_while_saving_never_leaves_a_torn_file(tmp_path):
    """A process that saves over the same file again and again is SIGKILLed at
    random moments: the file on disk always loads, its arrays and metadata come from
    the same save, and it is exactly the version the child's progress lines allow: a
    kill while version v's temporary file was being written leaves version v - 1 (the
    previous good file), a kill after v's save returned leaves v. At least a quarter
    of the kills must provably land mid-write, or the test proves nothing."""
    path = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    where = []
    for kill in range(KILLS):
        p = popen(SAVER, str(path))
        try:
            first = wait_for_line(p, "saved")
            time.sleep(float(rng.uniform(0, 0.15)))
            p.send_signal(signal.SIGKILL)
            out, _ = p.communicate(timeout=60)
        finally:
            p.kill()
        assert p.returncode == -signal.SIGKILL
        # the last progress line (the one already read if the child printed nothing
        # more before the kill, as on a loaded machine)
        last, n = (first + out).strip().splitlines()[-1].split()
        n = int(n)
        lm = CharLM.load(path)
        v = lm.info["version"]
        assert lm.params["b_q"][0] == v, "arrays and metadata from different saves"
        if last == "writing":          # killed before version n was renamed into place
            assert v == n - 1, f"killed while writing version {n}, but the file holds {v}"
        elif last == "renaming":       # the rename may or may not have happened
            assert v in (n - 1, n), (last, n, v)
        else:
            assert last == "saved" and v == n, (last, n, v)
        where.append(f"{last} {n} -> file {v}")
    mid_write = sum(w.startswith("writing") for w in where)
    print(f"kills: {where}; {len(tmp_files(tmp_path))} temporary files left")
    assert mid_write >= KILLS // 4, f"only {mid_write} of {KILLS} kills landed mid-write: {where}"
    # leftovers of killed saves are hidden temporary files; they never shadow the model
    for name in tmp_files(tmp_path):
        assert name.startswith(".m.npz.")


def test_stale_temporary_files_are_cleaned_up(tmp_path):
    """A save killed by SIGKILL leaves its hidden temporary file; the next save
    removes such leftovers once they are stale."""
    path = tmp_path / "m.npz"
    stale = tmp_path / ".m.npz.abc123.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    CharLM("abc", hidden_size=4, seed=0).save(path)
    assert not stale.exists()


# ---------------------------------------------------------------------------
# full disk, unwritable path

FULL_DISK = '''
import errno, json, os, resource, signal, sys
import numpy as np
from fastrnn import CharLM
d, text = sys.argv[1], open(sys.argv[2], encoding="utf-8").read()
fit = json.loads(sys.argv[3])
good = os.path.join(d, "m.npz")
lm = CharLM(text, hidden_size=64, seed=0)
lm.fit(text, epochs=1, checkpoint=good, **fit)
good_bytes = open(good, "rb").read()
params = lm.parameters.copy()
report = {}

# from here on no file may grow past 16 KiB: writes fail with EFBIG, as a full
# disk fails them with ENOSPC (both are OSErrors from the same write calls)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))

try:
    lm.save(good)
except OSError as exc:
    report["save"] = [exc.errno, str(exc)]
assert open(good, "rb").read() == good_bytes, "the good checkpoint was damaged"
assert np.array_equal(lm.parameters, params), "the model in memory changed"
assert lm.generate("it was", 20, seed=0)

try:
    lm.fit(text, epochs=3, checkpoint=good, resume=True, **fit)
except OSError as exc:
    report["fit"] = [exc.errno, str(exc)]
report["epochs_after_failed_fit"] = len(lm.history)
report["finite"] = bool(np.isfinite(lm.parameters).all())
assert open(good, "rb").read() == good_bytes, "the good checkpoint was damaged by fit"
report["tmp"] = sorted(f for f in os.listdir(d) if f.endswith(".tmp"))

# space again: the model kept in memory saves and resumes
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
lm.save(good)
again = CharLM.load(good)
assert np.array_equal(again.parameters, lm.parameters)
lm.fit(text, epochs=3, checkpoint=good, resume=True, **fit)
report["epochs_at_end"] = len(lm.history)
print(json.dumps(report))
'''


def test_full_disk_keeps_model_and_previous_checkpoint(tmp_path, corpus):
    d = tmp_path / "run"
    d.mkdir()
    res = run(FULL_DISK, str(d), str(corpus), json.dumps(FIT))
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["save"][0] in (errno.EFBIG, errno.ENOSPC), r
    assert r["fit"][0] in (errno.EFBIG, errno.ENOSPC), r
    # fit trained its epoch, failed to save it, and kept it in memory
    assert r["epochs_after_failed_fit"] == 2 and r["finite"], r
    assert r["tmp"] == [], f"temporary files left after failed saves: {r['tmp']}"
    assert r["epochs_at_end"] == 3


def test_full_disk_error_names_the_file(tmp_path, corpus):
    """The OSError of a failed save (full disk) names the file, errno kept."""
    d = tmp_path / "run"
    d.mkdir()
    res = run(FULL_DISK, str(d), str(corpus), json.dumps(FIT))
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert "m.npz" in r["save"][1], r["save"]


def test_unwritable_paths_give_clear_errors(tmp_path):
    """save() to a missing directory, below a file, or onto a directory: an error
    naming the path; fit(checkpoint=...) to a missing directory or below a file
    refuses before training; the model is untouched either way."""
    lm = CharLM("hello world", hidden_size=8, seed=0)
    before = lm.parameters.copy()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target, exc_types, fit_too in [
        (tmp_path / "missing_dir" / "m.npz", (FileNotFoundError,), True),
        (blocker / "m.npz", (FileNotFoundError, NotADirectoryError), True),
        (tmp_path, (IsADirectoryError,), False),           # a directory as the file
    ]:
        with pytest.raises(exc_types) as info:
            lm.save(target)
        assert str(target) in str(info.value), info.value
        if fit_too:
            with pytest.raises(exc_types):
                lm.fit("hello world " * 20, epochs=1, batch_size=2, num_steps=4,
                       checkpoint=target, progress=False)
    np.testing.assert_array_equal(lm.parameters, before)
    assert lm.history == [] and not tmp_files(tmp_path)
    if hasattr(os, "geteuid") and os.geteuid() != 0:   # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(PermissionError):
                lm.save(ro / "m.npz")
        finally:
            ro.chmod(0o700)


def test_fit_refuses_unwritable_checkpoint_before_training(tmp_path):
    """A checkpoint path that cannot be written is refused before training, not
    after the first epoch."""
    lm = CharLM("hello world", hidden_size=8, seed=0)
    before = lm.parameters.copy()
    with pytest.raises(OSError):
        lm.fit("hello world " * 20, epochs=1, batch_size=2, num_steps=4, checkpoint=tmp_path,
               progress=False)
    np.testing.assert_array_equal(lm.parameters, before)


# ---------------------------------------------------------------------------
# divergence

def test_overflowing_lr_stops_with_last_good_parameters_and_file(tmp_path):
    """An lr that overflows the parameters (inf loss): TrainingDiverged, the model keeps
    finite parameters, and the checkpoint on disk is the last good one, unchanged."""
    from fastrnn.model import TrainingDiverged
    ck = tmp_path / "ck.npz"
    lm = CharLM(TEXT, hidden_size=32, seed=0)
    lm.fit(TEXT, epochs=1, checkpoint=ck, **FIT)
    good = ck.read_bytes()
    good_params = lm.parameters.copy()
    steps_before = lm.training_state["step"]
    with pytest.raises(TrainingDiverged, match="diverged") as info:
        lm.fit(TEXT, epochs=3, checkpoint=ck, resume=True, **dict(FIT, lr=1e38))
    # Adam's first step at lr=1e38 moves every parameter with a gradient by about 1e38:
    # either that overflows (stopped at the first step) or the next loss is inf (stopped
    # at the second). Either way the last parameters with a finite loss are exactly
    # those the first step evaluated, i.e. the ones epoch 1 ended with.
    assert info.value.step - steps_before in (1, 2), (info.value.step, steps_before)
    np.testing.assert_array_equal(lm.parameters, good_params)
    assert ck.read_bytes() == good, "a diverged state was written to the checkpoint"
    logits, _ = fastrnn.forward(lm.params, lm.vocab.encode(TEXT[:50])[None, :])
    assert np.isfinite(logits).all()


def test_absurd_lr_with_finite_loss_is_reported_as_divergence(tmp_path):
    """lr=1e6 drives the loss to millions of nats without any NaN/inf: that is
    divergence too (far worse than guessing uniformly, log V)."""
    from fastrnn.model import TrainingDiverged
    lm = CharLM(TEXT, hidden_size=32, seed=0)
    with pytest.raises(TrainingDiverged):
        lm.fit(TEXT, epochs=2, **dict(FIT, lr=1e6, optimizer="sgd", clip=1.0))
    V = len(lm.vocab)
    assert all(r["train_loss"] < 10 * math.log(V) + 10 for r in lm.history)


# ---------------------------------------------------------------------------
# crafted files: bounded memory and time

CRAFTED = '''
import io, json, os, resource, struct, sys, time, zipfile, zlib
import numpy as np
from fastrnn import CharLM
from fastrnn.checkpoint import CheckpointError
d = sys.argv[1]
# 1 GiB of address space for the reader: a crafted file that made it allocate
# gigabytes fails with MemoryError here, and that counts as a failure
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

good = os.path.join(d, "good.npz")
CharLM("abcdef", hidden_size=8, seed=0).save(good)
members = {}
with zipfile.ZipFile(good) as z:
    for n in z.namelist():
        members[n] = z.read(n)

def npy(a):
    b = io.BytesIO(); np.save(b, a, allow_pickle=False); return b.getvalue()

def write(name, mem, compression=zipfile.ZIP_STORED):
    p = os.path.join(d, name)
    with zipfile.ZipFile(p, "w", compression) as z:
        for n, data in mem.items():
            z.writestr(n, data)
    return p

cases = {}
# a deflate stream of 1 GiB of zeros in place of a member whose directory entry
# claims 64 bytes (the member is written last, so only the central directory moves)
bomb = zlib.compressobj(1, zlib.DEFLATED, -15)
chunk = b"\\0" * (1 << 24)
raw = b"".join(bomb.compress(chunk) for _ in range(64)) + bomb.flush()
mem = {k: v for k, v in members.items() if k != "W_hh.npy"}
mem["W_hh.npy"] = b"x" * 64
p = write("lying_size.npz", mem, zipfile.ZIP_DEFLATED)
data = open(p, "rb").read()
with zipfile.ZipFile(p) as z:
    info = z.getinfo("W_hh.npy")
off = info.header_offset
n_name, n_extra = struct.unpack("<HH", data[off + 26: off + 30])
start = off + 30 + n_name + n_extra
delta = len(raw) - info.compress_size
data = data[:start] + raw + data[start + info.compress_size:]
eocd = data.rindex(b"PK\\x05\\x06")
cd_offset = struct.unpack("<I", data[eocd + 16: eocd + 20])[0] + delta
data = data[:eocd + 16] + struct.pack("<I", cd_offset) + data[eocd + 20:]
open(p, "wb").write(data)
cases["lying_size"] = p
# npy header claiming 10**12 floats, honest tiny payload
hdr = npy(np.zeros((0, 1000000), np.float32)).replace(b"(0, 1000000)", b"(1000000, 1000000)")
cases["huge_header"] = write("huge_header.npz", dict(members, **{"W_hh.npy": hdr}))
# 2000 members
many = dict(members)
for i in range(2000):
    many[f"x{i}.npy"] = npy(np.zeros(1, np.float32))
cases["many_members"] = write("many.npz", many)
# metadata: 10 MB of nested lists, a 100000-digit number, 1e400
for label, payload in [("nested", b"[" * 5_000_000 + b"]" * 5_000_000),
                       ("bigint", b'{"format": "fastrnn-charlm", "format_version": 1' + b"9" * 100000 + b"}"),
                       ("inf", b'{"format": "fastrnn-charlm", "format_version": 1e400}')]:
    cases["meta_" + label] = write(f"meta_{label}.npz", dict(members, **{"meta.npy": npy(
        np.frombuffer(payload, np.uint8))}))           # stored: reaches the JSON parser
# not a zip at all, empty, a directory, /dev/zero
open(os.path.join(d, "empty.npz"), "wb").close()
cases["empty"] = os.path.join(d, "empty.npz")
cases["directory"] = d
cases["dev_zero"] = "/dev/zero"

report = {}
for label, path in cases.items():
    t0 = time.perf_counter()
    try:
        CharLM.load(path)
        outcome = "LOADED"
    except (CheckpointError, FileNotFoundError, IsADirectoryError) as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[-120:]
    except MemoryError as exc:
        outcome = "MEMORY: " + str(exc)[:100]
    except Exception as exc:
        outcome = "OTHER " + type(exc).__name__ + ": " + str(exc)[:150]
    report[label] = [outcome, round(time.perf_counter() - t0, 3)]
print(json.dumps(report))
'''


def test_crafted_files_rejected_in_bounded_memory_and_time(tmp_path):
    res = run(CRAFTED, str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    bad = {k: v for k, v in report.items()
           if not v[0].startswith(("CheckpointError", "FileNotFoundError", "IsADirectoryError"))
           or v[1] > 10}
    assert not bad, json.dumps(report, indent=1)
