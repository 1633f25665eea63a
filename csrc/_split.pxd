# cython: language_level=3
"""How the compiled kernels (fastrnn._rnn, fastrnn._layers) cut work among threads.

Results never depend on these choices: every kernel computes each output value in
one order fixed by the shapes, whichever chunk or thread it falls in.
"""
from _omp cimport FASTRNN_OMP_ENABLED


cdef inline void _chunk(Py_ssize_t n, int nchunks, int c, Py_ssize_t* lo,
                        Py_ssize_t* hi) noexcept nogil:
    """Rows [lo, hi) of chunk c when n rows are split into nchunks near-equal parts."""
    lo[0] = (n * c) // nchunks
    hi[0] = (n * (c + 1)) // nchunks


cdef inline int _threads_for(int num_threads, double flops, double min_flops,
                             Py_ssize_t max_chunks) noexcept nogil:
    """Threads worth using for a parallel operation of ``flops`` work: at most
    num_threads (one without OpenMP), about one per ``min_flops`` of work, at most
    max_chunks, at least one."""
    cdef double n = flops / min_flops
    cdef int t = num_threads if FASTRNN_OMP_ENABLED else 1
    if n < t:
        t = <int>n if n >= 1 else 1
    if t > max_chunks:
        t = <int>max_chunks
    return t if t >= 1 else 1
