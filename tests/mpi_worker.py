"""One rank of the MPI tests (tests/test_distributed.py starts it under mpiexec).

    python mpi_worker.py JOBS.json

JOBS.json is a list of jobs, each a dict: ``text`` (path), ``model`` (CharLM keywords),
``fit`` (TrainConfig fields), ``out`` (a path prefix), optional ``resume`` (a
checkpoint path), ``distributed`` (default True) and fault injection:
``fail`` = {"rank", "step"} raises in loss_and_grad, ``nan`` = {"rank", "step"} returns
a NaN loss there, ``stop`` = {"rank", "step"} stops from _after_step on that rank only,
``sleep`` seconds per step (slow runs for signals), ``callback_error`` raises in the
root's epoch callback. Each rank writes ``<out>.rank<k>.json`` (status, history,
eval_history, best_step/best_loss of the training state, sha1 of the parameters,
threads, and ``evaluated``: the tokens this rank fed to the forward pass in the
per-epoch validations and in the step evaluations), rank 0 also ``<out>.npy`` (the
parameters).
"""
import contextlib
import hashlib
import json
import os
import sys
import time

import numpy as np


def run(job):
    from fastrnn import CharLM, TrainConfig
    from fastrnn.train import Trainer, TrainingDiverged, TrainingInterrupted
    from fastrnn.train import trainer as trainer_mod
    from fastrnn.train.dist import PeerFailed, make_dist

    dist = make_dist(job.get("distributed", True))
    rank = dist.rank
    text = open(job["text"], encoding="utf-8").read()
    n_val = job.get("val_chars", 0)
    train, val = (text[:-n_val], text[-n_val:]) if n_val else (text, None)
    lm = CharLM(text, **job["model"])
    real = trainer_mod.loss_and_grad
    calls = {"n": 0}

    def lag(*a, **k):
        step = calls["n"]
        calls["n"] += 1
        if job.get("sleep"):
            time.sleep(job["sleep"])
        f = job.get("fail")
        if f and f["rank"] == rank and f["step"] == step:
            raise RuntimeError(f"injected failure on rank {rank} at step {step}")
        out = real(*a, **k)
        f = job.get("nan")
        if f and f["rank"] == rank and f["step"] == step:
            out = (float("nan"),) + tuple(out[1:])
        return out

    trainer_mod.loss_and_grad = lag
    stop = job.get("stop")
    evaluated, phase = count_evaluations()

    class T(Trainer):
        def _after_step(self, st):
            return (super()._after_step(st)
                    or bool(stop and stop["rank"] == rank and st.step == stop["step"]))

        def _validate(self):
            with phase("epoch"):
                return super()._validate()

        def _block_totals(self, *args, **kwargs):
            with phase("step"):
                return super()._block_totals(*args, **kwargs)

    def cb(model, rec):
        if job.get("callback_error"):
            raise RuntimeError("injected callback error")
        ready = job.get("ready_file")
        if ready:
            open(ready, "w").write(str(rec["epoch"]))

    pids = job.get("pid_file")
    if pids:
        open(f"{pids}.{rank}", "w").write(str(os.getpid()))
    cfg = TrainConfig(**job["fit"])
    status = "ok"
    resume = job.get("resume") or False
    try:
        T(lm, cfg, callbacks=[cb], dist=dist).fit(train, val, resume=resume)
    except TrainingDiverged as exc:
        status = "diverged: " + str(exc)
    except TrainingInterrupted as exc:
        status = "interrupted: " + str(exc)
    except PeerFailed as exc:
        status = "peerfailed: " + str(exc)
    except RuntimeError as exc:
        status = "error: " + str(exc)
    finally:
        trainer_mod.loss_and_grad = real
        phase.restore()
    out = job["out"]
    st = lm.training_state or {}
    res = {"rank": rank, "size": dist.size, "status": status, "history": lm.history,
           "eval_history": lm.eval_history, "evaluated": evaluated,
           "best_step": st.get("best_step"), "best_loss": st.get("best_loss"),
           "sha1": hashlib.sha1(lm._flat.tobytes()).hexdigest(),
           "num_threads": dist.default_num_threads(),
           "local_size": getattr(dist, "local_size", 1),
           "mpi4py_loaded": "mpi4py" in sys.modules}
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump(res, f)
    if rank == 0:
        np.save(f"{out}.npy", lm._flat)


def count_evaluations():
    """Count the tokens fed to ``fastrnn._core.forward`` and ``_core._rnn_ce_sum`` (the
    evaluations' forward passes: the fused cross-entropy scores the Elman windows;
    training uses loss_and_grad) inside ``phase(name)``: ``(counts, phase)``."""
    from fastrnn import _core
    real = _core.forward
    counts = {"epoch": 0, "step": 0}
    current = []

    def forward(params, X, *args, **kwargs):
        if current:
            counts[current[-1]] += int(np.asarray(X).size)
        return real(params, X, *args, **kwargs)

    @contextlib.contextmanager
    def phase(name):
        current.append(name)
        try:
            yield
        finally:
            current.pop()

    real_ce = _core._rnn_ce_sum

    def rnn_ce_sum(p, X_ids, *args, **kwargs):
        if current:
            counts[current[-1]] += int(np.asarray(X_ids).size)
        return real_ce(p, X_ids, *args, **kwargs)

    def restore():
        _core.forward = real
        _core._rnn_ce_sum = real_ce

    _core.forward = forward
    _core._rnn_ce_sum = rnn_ce_sum
    phase.restore = restore
    return counts, phase


def main():
    jobs = json.load(open(sys.argv[1]))
    for job in jobs:
        run(job)


if __name__ == "__main__":
    main()
