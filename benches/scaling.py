"""Thread scaling and time per step against T.

    python benches/scaling.py

- 1 vs 2 threads for a training step at `medium` and `large` (the batch split
  across threads), at `b1` (one sequence: each step's hidden units split across
  two threads) and for generation (B = 1, 10,000 characters, split likewise);
- time per training step against T at `medium`.

Medians of repeated calls; 1- and 2-thread calls alternate, so a change in the
machine's load affects both alike.
"""
import time

import numpy as np

import fastrnn


def median_times(fns, repeats):
    """Median seconds per call of each function in fns, calls interleaved."""
    for f in fns:
        f()  # warm-up (buffers, packed weights, thread pool)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for ts, f in zip(times, fns):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) for ts in times]


def main():
    rng = np.random.default_rng(0)
    configs = {"medium": (28, 256, 64, 64, 15), "large": (96, 1024, 64, 64, 5),
               "b1": (28, 256, 1, 64, 201)}
    for name, (V, H, B, T, repeats) in configs.items():
        p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
        X = rng.integers(0, V, (B, T))
        Y = rng.integers(0, V, (B, T))
        t1, t2 = median_times([lambda: fastrnn.loss_and_grad(p, X, Y, num_threads=1),
                               lambda: fastrnn.loss_and_grad(p, X, Y, num_threads=2)],
                              repeats)
        unit, f = ("ms", 1e3) if t1 > 1e-3 else ("us", 1e6)
        print(f"{name}: 1 thread {t1 * f:.1f} {unit}, 2 threads {t2 * f:.1f} {unit}, "
              f"speedup {t1 / t2:.2f}x")

    lm = fastrnn.CharLM(fastrnn.Vocab("abcdefghijklmnopqrstuvwxyz "), 256, dtype="float32",
                        seed=0, init="uniform")
    n = 10_000
    t1, t2 = median_times([lambda: lm.generate("the ", n, seed=1, num_threads=1),
                           lambda: lm.generate("the ", n, seed=1, num_threads=2)], 15)
    print(f"generation (H=256): 1 thread {t1 / n * 1e6:.2f} us/char, 2 threads "
          f"{t2 / n * 1e6:.2f} us/char, speedup {t1 / t2:.2f}x")

    V, H, B = 28, 256, 64
    p = fastrnn.init_params(V, H, dtype="float32", seed=0, init="uniform")
    for T in (16, 32, 64, 128, 256):
        X = rng.integers(0, V, (B, T))
        t, = median_times([lambda: fastrnn.loss_and_grad(p, X, X, num_threads=2)], 9)
        print(f"medium T={T}: {t * 1e3:.2f} ms, {t / T * 1e6:.1f} us per step")


if __name__ == "__main__":
    main()
