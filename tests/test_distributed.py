"""Data-parallel training over MPI: N ranks under ``mpiexec`` against one process.

Every test that needs MPI starts ``mpiexec -n N python tests/mpi_worker.py JOBS.json``
as a subprocess with a timeout, on small problems, and compares with a run in this
process (which never imports mpi4py). They skip, with the reason, only when MPI
cannot start (mpi4py or mpiexec missing or broken): install ``fastrnn[mpi]``; with
``FASTRNN_REQUIRE_MPI=1`` (CI) they fail instead.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastrnn import CharLM, TrainConfig
from fastrnn.train import Trainer
from fastrnn.train import trainer as trainer_mod
from fastrnn.train.dist import SingleProcess, split_rows

WORKER = Path(__file__).with_name("mpi_worker.py")
TIMEOUT = 300


def _mpiexec():
    here = Path(sys.executable).parent
    return shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def _env():
    env = dict(os.environ)
    for k in ("FASTRNN_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(k, None)
    return env


_PROBE = {}


def need_mpi():
    """Skip (with the reason) when mpiexec cannot start two mpi4py ranks."""
    if "why" not in _PROBE:
        why = None
        exe = _mpiexec()
        if exe is None:
            why = "mpiexec not found (pip install 'fastrnn[mpi]')"
        else:
            try:
                r = subprocess.run([exe, "-n", "2", sys.executable, "-c",
                                    "from mpi4py import MPI; c = MPI.COMM_WORLD; "
                                    "n = c.allreduce(1); c.rank or print(n)"],
                                   capture_output=True, text=True, timeout=120, env=_env())
                if r.returncode != 0 or r.stdout.split() != ["2"]:
                    why = (f"mpiexec -n 2 with mpi4py failed (rc {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-500:]}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                why = f"mpiexec -n 2 could not start: {exc}"
        _PROBE["why"] = why
    if _PROBE["why"]:
        if os.environ.get("FASTRNN_REQUIRE_MPI"):    # CI with the [mpi] extra: no skipping
            pytest.fail(_PROBE["why"] + " (FASTRNN_REQUIRE_MPI is set)")
        pytest.skip(_PROBE["why"])
    return _mpiexec()


def mpirun(n, jobs, tmp_path, *, timeout=TIMEOUT, check=True):
    exe = need_mpi()
    spec = tmp_path / f"jobs{len(list(tmp_path.glob('jobs*')))}.json"
    spec.write_text(json.dumps(jobs))
    r = subprocess.run([exe, "-n", str(n), sys.executable, str(WORKER), str(spec)],
                       capture_output=True, text=True, timeout=timeout, env=_env())
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def results(out, n):
    return [json.loads(Path(f"{out}.rank{k}.json").read_text()) for k in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from fastrnn import datasets
    text = datasets.builtin_text()[:1500]
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    p.write_text(text, encoding="utf-8")
    return p


def job(corpus, out, *, model=None, fit=None, **extra):
    m = {"hidden_size": 8, "seed": 0, "dtype": "float64"}
    m.update(model or {})
    f = {"epochs": 3, "batch_size": 5, "num_steps": 6, "lr": 0.5, "optimizer": "sgd",
         "seed": 3, "num_threads": 1, "progress": False}
    f.update(fit or {})
    return {"text": str(corpus), "model": m, "fit": f, "out": str(out), **extra}


def single(j):
    """The job run in this process, without MPI."""
    text = Path(j["text"]).read_text(encoding="utf-8")
    n_val = j.get("val_chars", 0)
    train, val = (text[:-n_val], text[-n_val:]) if n_val else (text, None)
    lm = CharLM(text, **j["model"])
    Trainer(lm, TrainConfig(**j["fit"])).fit(train, val, resume=j.get("resume") or False)
    return lm


def maxabs_rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def normwise(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


MODELS = [("rnn", 1, 0.0), ("rnn", 2, 0.0), ("rnn", 2, 0.3),
          ("gru", 1, 0.0), ("gru", 2, 0.0), ("gru", 2, 0.3),
          ("lstm", 1, 0.0), ("lstm", 2, 0.0), ("lstm", 2, 0.3)]


# -- without MPI ------------------------------------------------------------------------

def test_split_rows_covers_the_batch_in_rank_order():
    for B in range(1, 12):
        for n in range(1, 6):
            spans = [split_rows(B, n, k) for k in range(n)]
            assert spans[0][0] == 0 and spans[-1][1] == B
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            sizes = [r1 - r0 for r0, r1 in spans]
            assert max(sizes) - min(sizes) <= 1


def test_plain_fit_never_imports_mpi4py(tmp_path):
    code = ("import sys; from fastrnn import CharLM; t = 'hello world, ' * 50; "
            "lm = CharLM(t, hidden_size=8, seed=0); "
            "lm.fit(t, epochs=1, batch_size=4, num_steps=5, progress=False, seed=0); "
            "import fastrnn.cli, fastrnn.train.dist; "
            "print('mpi4py' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_single_process_dist_is_the_default():
    lm = CharLM("hello world, " * 50, hidden_size=8, seed=0)
    assert isinstance(Trainer(lm).dist, SingleProcess)
    with pytest.raises(TypeError, match="distributed must be a bool"):
        lm.fit("hello world, " * 50, distributed="yes")


def test_distributed_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)        # import mpi4py fails
    lm = CharLM("hello world, " * 50, hidden_size=8, seed=0)
    with pytest.raises(ImportError, match=r"pip install 'fastrnn\[mpi\]'"):
        lm.fit("hello world, " * 50, epochs=1, batch_size=4, num_steps=5, progress=False,
               distributed=True)


# -- the same model as one process ------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_same_model_as_one_process_every_cell_and_depth(n, corpus, tmp_path):
    jobs = []
    for cell, L, p in MODELS:
        model = {"cell": cell, "num_layers": L, "dropout": p}
        for opt, lr in (("sgd", 0.5), ("adam", 0.01)):
            jobs.append(job(corpus, tmp_path / f"{cell}{L}{p}{opt}64", model=model,
                            fit={"optimizer": opt, "lr": lr}))
        jobs.append(job(corpus, tmp_path / f"{cell}{L}{p}sgd32",
                        model={**model, "dtype": "float32"}))
    mpirun(n, jobs, tmp_path)
    worst = {"float64": 0.0, "float32": 0.0}
    for j in jobs:
        res = results(j["out"], n)
        assert all(r["status"] == "ok" and r["size"] == n for r in res), res[0]["status"]
        assert len({r["sha1"] for r in res}) == 1      # every rank holds the same model
        got = np.load(j["out"] + ".npy")
        want = single(j)._flat
        if want.dtype == np.float64:
            d = maxabs_rel(got, want)
            assert d <= 1e-10, j["out"]
        else:
            d = normwise(got, want)
            assert d <= 1e-5, j["out"]
        worst[want.dtype.name] = max(worst[want.dtype.name], d)
        assert res[0]["history"][-1]["step"] == single_steps(j)
    print(f"{n} ranks vs one process, worst: float64 max-abs relative "
          f"{worst['float64']:.2e}, float32 normwise {worst['float32']:.2e}")


def single_steps(j):
    text = Path(j["text"]).read_text(encoding="utf-8")
    B, T = j["fit"]["batch_size"], j["fit"]["num_steps"]
    return j["fit"]["epochs"] * ((len(text) - 1) // (B * T))


def test_samplings_validation_and_more_ranks_than_rows(corpus, tmp_path):
    """random and windows sampling, validation reduced from the ranks' shares (the
    value of one process), and a batch of 2 rows over 3 ranks (one rank idle)."""
    jobs = [job(corpus, tmp_path / "seqval", val_chars=300, model={"cell": "gru"}),
            job(corpus, tmp_path / "random", val_chars=300,
                fit={"sampling": "random", "epochs": 2}),
            job(corpus, tmp_path / "windows", val_chars=200,
                fit={"sampling": "windows", "epochs": 1, "batch_size": 16}),
            job(corpus, tmp_path / "idle", model={"cell": "lstm", "num_layers": 2,
                                                  "dropout": 0.2},
                fit={"batch_size": 2, "epochs": 1, "checkpoint": str(tmp_path / "i.npz")},
                stop={"rank": 2, "step": 7})]
    mpirun(3, jobs, tmp_path)
    for j in jobs:
        res = results(j["out"], 3)
        assert all(r["status"] == "ok" for r in res) and len({r["sha1"] for r in res}) == 1
        lm = single({**j, "fit": {**j["fit"], "checkpoint": None}})
        if "stop" in j:                  # the idle rank's stop, reduced: a mid-epoch checkpoint
            st = CharLM.load(j["fit"]["checkpoint"]).training_state
            assert (st["step"], st["batch"]) == (7, 7)
            continue
        assert maxabs_rel(np.load(j["out"] + ".npy"), lm._flat) <= 1e-10
        for got, want in zip(res[0]["history"], lm.history):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-12)
            if want["val_loss"] is not None:
                assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-12)
            assert got["tokens"] == want["tokens"]


def test_one_rank_equals_a_plain_run(corpus, tmp_path):
    """fit(distributed=True) with one rank is one process (bitwise)."""
    j = job(corpus, tmp_path / "one", model={"cell": "lstm", "num_layers": 2,
                                             "dropout": 0.3}, fit={"optimizer": "adam",
                                                                   "lr": 0.01})
    mpirun(1, [j], tmp_path)
    res = results(j["out"], 1)[0]
    assert res["status"] == "ok" and res["size"] == 1 and res["mpi4py_loaded"]
    np.testing.assert_array_equal(np.load(j["out"] + ".npy"), single(j)._flat)


def test_threads_default_divides_the_cores_among_local_ranks(corpus, tmp_path):
    j = job(corpus, tmp_path / "thr", fit={"epochs": 1, "num_threads": None})
    mpirun(2, [j], tmp_path)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for r in results(j["out"], 2):
        assert r["local_size"] == 2
        assert r["num_threads"] == max(1, cores // 2)


# -- validation on the ranks' shares ------------------------------------------------------

def _val_jobs(corpus, tmp_path):
    """Every validation mode, with counts of streams / blocks / windows that 2 and 3
    do not divide (300 validation characters: 299 predictions)."""
    def ck(name):
        return str(tmp_path / f"{name}.npz")
    return [
        # sequential: 7 carried streams of 42 + a remainder of 5; step evaluations on
        # 18 blocks of 16 + a tail of 11; keep-best on the step evaluations
        job(corpus, tmp_path / "seq", val_chars=300, model={"cell": "gru"},
            fit={"epochs": 2, "val_streams": 7, "eval_interval": 10, "eval_block": 16,
                 "keep_best": True, "checkpoint": ck("seq")}),
        # random: 4 streams + remainder; 5 evenly spaced blocks of 20; dropout, Adam
        job(corpus, tmp_path / "random", val_chars=300,
            model={"cell": "lstm", "num_layers": 2, "dropout": 0.2},
            fit={"sampling": "random", "epochs": 2, "optimizer": "adam", "lr": 0.01,
                 "val_streams": 4, "eval_interval": 8, "eval_block": 20, "eval_blocks": 5,
                 "keep_best": True, "checkpoint": ck("random")}),
        # windows: 114 stride-1 windows; blocks of 16 + a tail
        job(corpus, tmp_path / "windows", val_chars=120,
            fit={"sampling": "windows", "epochs": 1, "batch_size": 16, "eval_interval": 20,
                 "eval_block": 16}),
        # per-epoch keep-best and patience (no step evaluations): 5 streams + remainder
        job(corpus, tmp_path / "epochs", val_chars=300, model={"cell": "lstm"},
            fit={"epochs": 4, "val_streams": 5, "keep_best": True, "patience": 1,
                 "lr": 2.0, "checkpoint": ck("epochs")}),
        # float32
        job(corpus, tmp_path / "f32", val_chars=300, model={"dtype": "float32"},
            fit={"epochs": 2, "val_streams": 3, "eval_interval": 10, "eval_block": 32}),
    ]


def _val_figures(res):
    return ([r["val_loss"] for r in res["history"]]
            + [r["val_loss"] for r in res["eval_history"]] + [res["best_loss"] or 0.0])


def _one_process(j, tmp_path):
    """The job run in this process by the same worker code, without MPI."""
    import mpi_worker
    name = Path(j["out"]).name
    fit = dict(j["fit"])
    if fit.get("checkpoint"):
        fit["checkpoint"] = str(tmp_path / f"one-{name}.npz")
    one = {**j, "fit": fit, "distributed": False, "out": str(tmp_path / f"one-{name}")}
    mpi_worker.run(one)
    return results(one["out"], 1)[0], fit.get("checkpoint")


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def val_runs(request, corpus, tmp_path_factory):
    """The validation jobs run on 2 and 3 ranks (once for the tests below), and each in
    this process: ``(n, jobs, {out: one-process result}, {out: its checkpoint})``."""
    n = request.param
    tmp_path = tmp_path_factory.mktemp(f"val{n}")
    jobs = _val_jobs(corpus, tmp_path)
    mpirun(n, jobs, tmp_path)
    one = {j["out"]: _one_process(j, tmp_path) for j in jobs}
    return n, jobs, one


def test_validation_on_shares_is_the_one_process_value(val_runs):
    """Per-epoch validation (carried streams and windows) and the step evaluations on
    blocks, reduced from the ranks' shares, give one process's figures on every rank,
    and so the same keep-best choice and early stop."""
    n, jobs, one = val_runs
    worst = {"float64": 0.0, "float32": 0.0}
    for j in jobs:
        res = results(j["out"], n)
        want, ck1 = one[j["out"]]
        assert want["status"] == "ok"
        assert all(r["status"] == "ok" for r in res), [r["status"] for r in res]
        assert len({r["sha1"] for r in res}) == 1
        for r in res:                               # every rank took the same decisions
            assert _val_figures(r) == _val_figures(res[0])
            assert r["best_step"] == res[0]["best_step"]
        got = res[0]
        assert len(got["history"]) == len(want["history"]) >= 1
        assert len(got["eval_history"]) == len(want["eval_history"])
        assert [e["step"] for e in got["eval_history"]] == \
            [e["step"] for e in want["eval_history"]]
        assert [e["best"] for e in got["eval_history"]] == \
            [e["best"] for e in want["eval_history"]]
        assert got["best_step"] == want["best_step"]
        a, b = np.array(_val_figures(got)), np.array(_val_figures(want))
        dtype = j["model"]["dtype"]
        if dtype == "float64":
            d = maxabs_rel(a, b)
            assert d <= 1e-12, (j["out"], a, b)
        else:
            d = normwise(a, b)
            assert d <= 1e-6, (j["out"], a, b)
        worst[dtype] = max(worst[dtype], d)
        if j["fit"].get("keep_best"):               # the same parameters kept as best
            best_n = CharLM.load(trainer_mod.best_path(j["fit"]["checkpoint"]))._flat
            best_1 = CharLM.load(trainer_mod.best_path(ck1))._flat
            assert maxabs_rel(best_n, best_1) <= 1e-10
    print(f"{n} ranks vs one process, validation figures: float64 max-abs relative "
          f"{worst['float64']:.2e}, float32 normwise {worst['float32']:.2e}")


def _row_tokens(j, phase):
    """The longest row (stream, block, window) of an evaluation, in tokens."""
    f = j["fit"]
    n_pred = j["val_chars"] - 1
    if phase == "step":
        return f["eval_block"]
    if f.get("sampling") == "windows":
        return f["num_steps"]
    return n_pred // f.get("val_streams", 1) + f.get("val_streams", 1)


def test_each_rank_evaluates_only_its_share(val_runs):
    """Counted in the forward pass: every rank evaluates part of every validation and
    step evaluation, at most an even share plus one row, and the shares add up to
    exactly the tokens one process evaluates."""
    n, jobs, one = val_runs
    for j in jobs:
        res = results(j["out"], n)
        want, _ = one[j["out"]]
        for phase, evals in (("epoch", len(want["history"])),
                             ("step", len(want["eval_history"]))):
            counts = [r["evaluated"][phase] for r in res]
            total = want["evaluated"][phase]
            assert sum(counts) == total, (j["out"], phase, counts, total)
            if not evals:
                assert total == 0
                continue
            assert min(counts) > 0, (j["out"], phase, counts)
            assert max(counts) <= evals * (total / evals / n + _row_tokens(j, phase)), \
                (j["out"], phase, counts, total)


# -- checkpoints and resume with another number of ranks --------------------------------

def test_resume_with_2_then_1_then_3_ranks_equals_an_uninterrupted_run(corpus, tmp_path):
    model = {"cell": "lstm", "num_layers": 2, "dropout": 0.3}
    fit = {"optimizer": "adam", "lr": 0.01, "epochs": 3}
    ck = tmp_path / "ck.npz"
    full = single(job(corpus, tmp_path / "full", model=model, fit=fit))
    # 2 ranks: stop mid-epoch 1 (the stop asked by rank 1 alone, reduced), checkpoint
    a = job(corpus, tmp_path / "a", model=model, fit={**fit, "checkpoint": str(ck)},
            stop={"rank": 1, "step": 20})
    mpirun(2, [a], tmp_path)
    assert all(r["status"] == "ok" for r in results(a["out"], 2))
    st = CharLM.load(ck).training_state
    assert (st["epoch"], st["batch"], st["step"]) == (0, 20, 20)   # mid-epoch: state carried
    # 1 process (a plain run, no MPI): to mid-epoch 2
    b = CharLM.load(ck)

    class StopAt(Trainer):
        def _after_step(self, st):
            return st.step == 75

    text = Path(corpus).read_text(encoding="utf-8")
    StopAt(b, TrainConfig(**{**a["fit"]})).fit(text, resume=True)
    assert b.training_state["step"] == 75 and b.training_state["batch"] > 0
    b.save(ck)
    # 3 ranks: to the end
    c = job(corpus, tmp_path / "c", model=model, fit={**fit, "checkpoint": str(ck)},
            resume=str(ck))
    mpirun(3, [c], tmp_path)
    res = results(c["out"], 3)
    assert all(r["status"] == "ok" for r in res) and len({r["sha1"] for r in res}) == 1
    got = np.load(c["out"] + ".npy")
    assert maxabs_rel(got, full._flat) <= 1e-10
    back = CharLM.load(ck)                        # the final checkpoint: same model
    np.testing.assert_array_equal(back._flat, got)
    assert back.training_state["epoch"] == 3


# -- faults: every rank stops together -------------------------------------------------

def _loadable(ck, epoch):
    lm = CharLM.load(ck)
    assert lm.training_state["epoch"] == epoch and lm.training_state["batch"] == 0
    return lm


def test_failure_on_one_rank_stops_every_rank(corpus, tmp_path):
    ck = tmp_path / "ck.npz"
    steps = single_steps(job(corpus, None, fit={"epochs": 1}))
    j = job(corpus, tmp_path / "fail", fit={"checkpoint": str(ck)},
            fail={"rank": 1, "step": steps + 3})
    mpirun(3, [j], tmp_path, timeout=120)
    res = results(j["out"], 3)
    assert res[1]["status"].startswith("error: injected failure on rank 1")
    assert res[0]["status"].startswith("peerfailed") and res[2]["status"].startswith("peerfailed")
    _loadable(ck, 1)


def test_nan_on_one_rank_is_a_divergence_of_all(corpus, tmp_path):
    ck = tmp_path / "ck.npz"
    steps = single_steps(job(corpus, None, fit={"epochs": 1}))
    j = job(corpus, tmp_path / "nan", fit={"checkpoint": str(ck)},
            nan={"rank": 1, "step": steps + 2})
    mpirun(2, [j], tmp_path, timeout=120)
    res = results(j["out"], 2)
    assert all(r["status"].startswith("diverged: training diverged at epoch 2") for r in res)
    assert len({r["sha1"] for r in res}) == 1      # all restored the same parameters
    _loadable(ck, 1)


def test_error_outside_the_collectives_aborts_the_job(corpus, tmp_path):
    """An error on the root alone (its epoch callback) ends every rank (MPI_Abort)
    instead of leaving the others waiting in an allreduce."""
    j = job(corpus, tmp_path / "cb", callback_error=True)
    t0 = time.monotonic()
    r = mpirun(2, [j], tmp_path, timeout=120, check=False)
    assert r.returncode != 0
    assert "injected callback error" in r.stderr and "aborting the job" in r.stderr
    assert time.monotonic() - t0 < 100


def _start(n, jobs, tmp_path):
    exe = need_mpi()
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    # a session of its own: the signals sent to mpiexec do not reach pytest
    return subprocess.Popen([exe, "-n", str(n), sys.executable, str(WORKER), str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)


def _wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_sigint_to_mpiexec_stops_every_rank_cleanly(corpus, tmp_path):
    """MPICH's hydra forwards the first SIGINT it receives to every rank (once; a
    second one aborts the job): each rank's flag is OR-reduced at the end of the step,
    all stop after the same minibatch, the root checkpoints, the run resumes exactly."""
    ck = tmp_path / "ck.npz"
    ready = tmp_path / "ready"
    model = {"cell": "gru", "num_layers": 2, "dropout": 0.2}
    j = job(corpus, tmp_path / "int", model=model,
            fit={"checkpoint": str(ck), "epochs": 3}, sleep=0.02, ready_file=str(ready))
    p = _start(2, [j], tmp_path)
    try:
        _wait_for(ready, p)                          # epoch 1 done and checkpointed
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, err[-2000:]
    res = results(j["out"], 2)
    assert all(r["status"].startswith("interrupted: training interrupted at epoch 2")
               for r in res), [r["status"] for r in res]
    st = CharLM.load(ck).training_state
    assert st["epoch"] == 1 and st["batch"] > 0
    # resume with one process: equals an uninterrupted run
    back = CharLM.load(ck)
    text = Path(corpus).read_text(encoding="utf-8")
    back.fit(text, config=TrainConfig(**{**j["fit"], "checkpoint": None}), resume=True)
    full = single(job(corpus, tmp_path / "full", model=model, fit={"epochs": 3}))
    assert maxabs_rel(back._flat, full._flat) <= 1e-10


def test_sigkill_of_one_rank_ends_the_job_and_keeps_the_last_checkpoint(corpus, tmp_path):
    ck = tmp_path / "ck.npz"
    ready = tmp_path / "ready"
    pids = tmp_path / "pid"
    j = job(corpus, tmp_path / "kill", fit={"checkpoint": str(ck), "epochs": 3},
            sleep=0.03, ready_file=str(ready), pid_file=str(pids))
    p = _start(2, [j], tmp_path)
    try:
        _wait_for(ready, p)                          # epoch 1 checkpointed
        time.sleep(0.3)
        os.kill(int(Path(f"{pids}.1").read_text()), signal.SIGKILL)
        t0 = time.monotonic()
        p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode != 0
    assert took < 30
    _loadable(ck, 1)                                 # the previous good checkpoint


# -- the command line ------------------------------------------------------------------

def test_cli_train_distributed(corpus, tmp_path):
    exe = need_mpi()
    out = tmp_path / "m.npz"
    cmd = [exe, "-n", "2", sys.executable, "-m", "fastrnn", "train", "--distributed",
           "--corpus", str(corpus), "--hidden", "8", "--epochs", "2", "--batch", "5",
           "--steps", "6", "--no-progress", "--threads", "1", "--out", str(out),
           "--sample-length", "10", "--seed", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("fastrnn train:") == 1         # rank 0 alone prints
    assert r.stdout.count("epoch 2/2") == 1 and "model saved" in r.stdout
    lm = CharLM.load(out)
    assert len(lm.history) == 2
    # the same run in one process
    one = tmp_path / "one.npz"
    r1 = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--corpus", str(corpus),
                         "--hidden", "8", "--epochs", "2", "--batch", "5", "--steps", "6",
                         "--no-progress", "--threads", "1", "--out", str(one),
                         "--sample-length", "0", "--seed", "1"],
                        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    ref = CharLM.load(one)
    assert normwise(lm._flat, ref._flat.astype(np.float64)) <= 1e-5
