"""Data-parallel training over MPI: throughput, allreduce cost, and a scaling model.

    python benches/distributed.py                 # 1 rank x 2 threads vs 2 ranks x 1 thread
    python benches/distributed.py --configs medium lstm-medium --steps 5
    python benches/distributed.py --allreduce     # allreduce time vs gradient size, 2 ranks
    python benches/distributed.py --model         # efficiency table, 2-64 machines (modelled)
    python benches/distributed.py --model --step-time large=1.9 --step-time medium=0.12

Needs ``pip install "fastrnn[mpi]"`` (mpiexec on PATH, or beside this Python).

**Throughput** (measured). For each configuration the script starts ``mpiexec -n 1``
with 2 threads and ``mpiexec -n 2`` with 1 thread per rank; each runs the steps of
:class:`fastrnn.train.Trainer` on a global batch of B rows (float32, token ids): its
rows of the forward/BPTT (``row_offset`` as the trainer passes it), the in-place
allreduce of the flat gradient weighted by its row share, global-norm clipping and the
SGD update. Tokens/s = B*T / (median step time of the slowest rank); the ratio column
is 2 ranks / 1 rank (the allreduce's share of a step shows up as a ratio below 1).

**Allreduce** (measured). ``MPI_Allreduce`` (in place, sum) of float32 buffers from
1 K to 16 M values on 2 ranks of this machine: median time and bytes/s.

**Model** (modelled, not measured). Given one machine's measured step time ``t`` for a
configuration (measured here with all cores in one process, or given with
``--step-time NAME=SECONDS``) and its P parameters, a ring allreduce over N machines
moves ``2 (N-1)/N * 4P`` bytes per machine per step and takes ``2 (N-1)`` latency
hops (``--latency``, default 20 us), no overlap with computation (the trainer reduces
after the backward pass)::

    t_comm(N, bw)     = 2 (N-1)/N * 4P / bw + 2 (N-1) * latency
    weak scaling      (batch B per machine, global batch N*B):
                      efficiency = t / (t + t_comm)
    strong scaling    (global batch B, B/N rows per machine, compute assumed to
                      shrink as 1/N, which small per-machine batches will not reach):
                      efficiency = (t/N) / (t/N + t_comm)

for 2-64 machines on 10 and 100 Gbit/s links, and the bandwidth below which the
allreduce takes longer than the computation (``8P / t`` bytes/s for large N).
Timings on a shared or loaded machine mean little: run it on the hardware you care about.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {  # name: (cell, V, H, B, T); Elman ones as benches/compare.py's
    "medium": ("rnn", 28, 256, 64, 64),
    "large": ("rnn", 96, 1024, 64, 64),
    "lstm-medium": ("lstm", 28, 256, 64, 64),
    "lstm-large": ("lstm", 96, 512, 64, 64),
}
MACHINES = (2, 4, 8, 16, 32, 64)
LINKS = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}   # bytes/s


def _model(name):
    from fastrnn import CharLM
    cell, V, H, B, T = CONFIGS[name]
    text = "".join(chr(0x21 + i) for i in range(V))
    return CharLM(text, hidden_size=H, cell=cell, dtype="float32", seed=0), (V, B, T)


class Steps:
    """The trainer's step on this rank's rows of one global batch (comm may be None)."""

    def __init__(self, name, threads, comm=None):
        from fastrnn import _core
        from fastrnn._core import loss_and_grad
        from fastrnn.train.dist import split_rows
        self.lm, (V, B, T) = _model(name)
        self.B, self.T, self.threads, self.comm = B, T, threads, comm
        rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
        self.r0, self.r1 = split_rows(B, size, rank)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, V, (B, T + 1))
        self.X, self.Y = ids[self.r0:self.r1, :-1], ids[self.r0:self.r1, 1:]
        self.gflat = np.zeros_like(self.lm._flat)
        self.grads = self.lm._views(self.gflat)
        self.kw = self.lm._fn_kw()
        self.lag = loss_and_grad
        self.core = _core
        from fastrnn import _lm
        self._lm = _lm

    def step(self):
        loss, _, _ = self.lag(self.lm.params, self.X, self.Y, None, num_threads=self.threads,
                              row_offset=self.r0, out=self.grads, **self.kw)
        if self.comm is not None:
            from mpi4py import MPI
            self.gflat *= np.float32(self.X.shape[0] / self.B)
            self.comm.Allreduce(MPI.IN_PLACE, self.gflat, op=MPI.SUM)
        self._lm.clip_global_norm(self.gflat, 1.0)
        self.lm._flat -= np.float32(0.01) * self.gflat

    def time(self, steps, warmup=1):
        with self.core.blas_single_thread():
            for _ in range(warmup):
                self.step()
            times = []
            for _ in range(steps):
                if self.comm is not None:
                    self.comm.Barrier()
                t0 = time.perf_counter()
                self.step()
                dt = time.perf_counter() - t0
                if self.comm is not None:
                    dt = self.comm.allreduce(dt, op=__import__("mpi4py").MPI.MAX)
                times.append(dt)
        return statistics.median(times)


# -- MPI workers --------------------------------------------------------------------------

def worker_throughput(args):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    out = {}
    for name in args.configs:
        s = Steps(name, args.threads, comm)
        t = s.time(args.steps)
        out[name] = {"step_s": t, "tokens_per_s": s.B * s.T / t,
                     "params": int(s.lm._flat.size)}
    if comm.Get_rank() == 0:
        Path(args.result).write_text(json.dumps(out))


def worker_allreduce(args):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    out = []
    n = 1024
    while n <= args.max_size:
        buf = np.ones(n, np.float32)
        reps = max(3, min(200, int(2e7 // n)))
        times = []
        for _ in range(reps):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        out.append({"values": n, "bytes": 4 * n, "seconds": statistics.median(times)})
        n *= 4
    if comm.Get_rank() == 0:
        Path(args.result).write_text(json.dumps(out))


# -- driver -------------------------------------------------------------------------------

def _mpiexec():
    exe = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                       f"{os.environ.get('PATH', '')}")
    if exe is None:
        sys.exit("mpiexec not found: pip install 'fastrnn[mpi]'")
    return exe


def _launch(n, extra):
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "result.json"
        cmd = [_mpiexec(), "-n", str(n), sys.executable, __file__, "--result", str(res),
               *extra]
        env = {k: v for k, v in os.environ.items()
               if k not in ("FASTRNN_NUM_THREADS", "OMP_NUM_THREADS")}
        subprocess.run(cmd, check=True, env=env)
        return json.loads(res.read_text())


def throughput(args):
    rows = []
    for name in args.configs:
        base = ["--worker", "throughput", "--configs", name, "--steps", str(args.steps)]
        one = _launch(1, base + ["--threads", "2"])[name]
        two = _launch(2, base + ["--threads", "1"])[name]
        rows.append((name, one, two))
    print(f"{'config':<12} {'params':>10} {'1 rank x 2 thr tok/s':>21} "
          f"{'2 ranks x 1 thr tok/s':>22} {'ratio':>6}")
    for name, one, two in rows:
        print(f"{name:<12} {one['params']:>10,} {one['tokens_per_s']:>21,.0f} "
              f"{two['tokens_per_s']:>22,.0f} {two['tokens_per_s'] / one['tokens_per_s']:>6.2f}")
    return {name: {"1x2": one, "2x1": two} for name, one, two in rows}


def allreduce(args):
    res = _launch(2, ["--worker", "allreduce", "--max-size", str(args.max_size)])
    print(f"{'float32 values':>15} {'bytes':>12} {'median time':>12} {'bytes/s':>10}")
    for r in res:
        print(f"{r['values']:>15,} {r['bytes']:>12,} {r['seconds'] * 1e3:>10.3f} ms "
              f"{r['bytes'] / r['seconds'] / 1e9:>7.2f} GB/s")
    return res


def model(args):
    given = dict(s.split("=", 1) for s in args.step_time)
    threads = args.threads or len(os.sched_getaffinity(0))
    out = {}
    print("Modelled efficiency of synchronous data parallelism (ring allreduce, no overlap),")
    print(f"from a step time per machine ({'given' if given else 'measured here'}); "
          f"latency {args.latency * 1e6:g} us per hop.\n")
    for name in args.configs:
        cell, V, H, B, T = CONFIGS[name]
        if name in given:
            t, how = float(given[name]), "given"
            P = _model(name)[0]._flat.size
        else:
            s = Steps(name, threads)
            t, how, P = s.time(args.steps), f"measured, 1 process x {threads} threads", \
                s.lm._flat.size
        bw_dom = 8 * P / t
        print(f"### {name}: {cell}, V={V}, H={H}, batch {B} x {T}, P = {P:,} parameters; "
              f"step time t = {t * 1e3:.1f} ms ({how})\n")
        print(f"Allreduce per step per machine: 2(N-1)/N x {4 * P / 1e6:.1f} MB; it takes "
              f"longer than the computation when bandwidth < 8P/t = "
              f"{bw_dom * 8 / 1e9:.2f} Gbit/s (weak scaling, large N).\n")
        head = "| machines N | " + " | ".join(
            f"weak {k}" for k in LINKS) + " | " + " | ".join(f"strong {k}" for k in LINKS) + " |"
        print(head)
        print("|" + "---|" * (1 + 2 * len(LINKS)))
        table = []
        for N in MACHINES:
            comm = {k: 2 * (N - 1) / N * 4 * P / bw + 2 * (N - 1) * args.latency
                    for k, bw in LINKS.items()}
            weak = [t / (t + c) for c in comm.values()]
            strong = [(t / N) / (t / N + c) for c in comm.values()]
            note = "" if B >= N else " (B < N)"
            print(f"| {N}{note} | " + " | ".join(f"{e:.0%}" for e in weak) + " | "
                  + " | ".join(f"{e:.0%}" for e in strong) + " |")
            table.append({"N": N, "weak": weak, "strong": strong})
        print()
        out[name] = {"step_s": t, "how": how, "params": int(P), "table": table}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--allreduce", action="store_true")
    ap.add_argument("--max-size", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--model", action="store_true")
    ap.add_argument("--step-time", action="append", default=[], metavar="NAME=SECONDS")
    ap.add_argument("--latency", type=float, default=20e-6, metavar="SECONDS")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", choices=("throughput", "allreduce"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "throughput":
        return worker_throughput(args)
    if args.worker == "allreduce":
        return worker_allreduce(args)
    if args.model:
        res = model(args)
    elif args.allreduce:
        res = allreduce(args)
    else:
        res = throughput(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
