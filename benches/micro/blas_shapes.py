"""numpy (OpenBLAS) matmul, one thread, on the shapes of benches/micro/pgemm.c.

    python benches/micro/blas_shapes.py
"""
import timeit

import numpy as np
from threadpoolctl import threadpool_limits

SHAPES = [  # (label, M, N, K, transposed A)
    ("d2l recurrence step", 512, 32, 32, False),
    ("d2l output layer", 16384, 28, 32, False),
    ("medium recurrence step", 32, 256, 256, False),
    ("large recurrence step", 32, 1024, 1024, False),
    ("d2l dW_hh", 16, 32, 32768, True),
    ("medium dW_hh", 128, 256, 4096, True),
    ("large dW_hh (BLAS runs this one)", 512, 1024, 4096, True),
]

rng = np.random.default_rng(0)
with threadpool_limits(1):
    for label, M, N, K, trans in SHAPES:
        A = rng.random((K, M) if trans else (M, K), dtype=np.float32)
        B = rng.random((K, N), dtype=np.float32)
        f = (lambda: A.T @ B) if trans else (lambda: A @ B)
        n = max(3, int(1e9 / (2 * M * N * K)))
        t = min(timeit.repeat(f, number=n, repeat=5)) / n
        print(f"{label:34s} {'A^T B' if trans else 'A B  '}  M={M:5d} N={N:5d} K={K:6d}  "
              f"{t * 1e6:8.2f} us  {2 * M * N * K / t / 1e9:6.1f} GFLOP/s")
