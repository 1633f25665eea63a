"""How far above PyTorch can a gated training step go on this machine?

For each gated configuration of ``benches/compare.py`` this measures, on ONE core
(one thread everywhere, CPU time, implementations interleaved):

- the float32 gemm rate of BLAS (numpy ``@`` on 2048 x 2048, one thread): about
  80% of the core's peak multiply-add rate, and what the best large products reach;
- fastrnn's training step and PyTorch's (the faster of oneDNN on and off);
- the **ceiling**: PyTorch's step time over the time the step's flops
  (``compare.gated_train_flops``, every product of forward and backward) would take
  at that gemm rate. No implementation of the same arithmetic gets above it without
  running its whole step, elementwise work and memory traffic included, faster than
  BLAS runs one large square product.

    python benches/ceiling.py [--configs lstm-medium,gru-medium] [--rounds 5]

The ceiling says which of the issue's "x times the faster PyTorch" targets are
reachable on this machine at all. Needs torch.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the configurations, the problems and the step makers)

TRAIN = [k for k, v in compare.GATED_CONFIGS.items() if v[5] is not None]


def cpu_seconds(fn, rounds, block=0.5):
    """Median CPU seconds per call over ``rounds`` blocks of about ``block`` s."""
    t0 = time.process_time()
    fn()
    reps = max(1, int(block / max(time.process_time() - t0, 1e-6)))
    per = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        per.append((time.process_time() - t0) / reps)
    return statistics.median(per)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(TRAIN),
                    help=f"comma-separated subset of {','.join(TRAIN)}")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    bad = [c for c in names if c not in TRAIN]
    if bad:
        ap.error(f"unknown configurations: {bad}")
    if compare.torch is None:
        raise SystemExit("benches/ceiling.py needs torch (pip install torch==2.13.0)")
    compare.torch.set_num_threads(1)
    with threadpool_limits(1):
        rate = compare.gemm_rate(1) * 1e9
        cpu = compare.cpu_model()
        print(f"cpu: {cpu['model']}, avx512f={cpu['avx512f']}, {os.cpu_count()} cpus "
              f"({platform.machine()}); one thread; float32 gemm rate {rate / 1e9:.1f} "
              f"GFLOP/s (one core)")
        print(f"{'config':<14}{'fastrnn ms':>11}{'torch ms':>10}{'floor ms':>10}"
              f"{'fastrnn/torch':>15}{'ceiling':>9}{'fastrnn %gemm':>15}")
        for name in names:
            cell, V, H, L, B, T = compare.GATED_CONFIGS[name]
            p, X, Y, _ = compare.gated_problem(cell, V, H, L, B, T)
            times = {}
            for k, mk in compare.gated_makers(cell, L, True).items():
                step, _ = mk(p, X, Y, 1)
                times[k] = cpu_seconds(step, args.rounds)
            t_fast = times.pop("fastrnn")
            t_torch = min(times.values())
            floor = compare.gated_train_flops(cell, V, H, L) * B * T / rate
            print(f"{name:<14}{t_fast * 1e3:>11.2f}{t_torch * 1e3:>10.2f}{floor * 1e3:>10.2f}"
                  f"{t_torch / t_fast:>14.2f}x{t_torch / floor:>8.2f}x"
                  f"{100 * floor / t_fast:>14.1f}%", flush=True)


if __name__ == "__main__":
    main()
