# cython: language_level=3
"""Fused RNN kernels: forward recurrence, softmax cross-entropy and BPTT.

Model (row vectors, as in the d2l chapter)::

    Z_t = X_t W_xh + H_{t-1} W_hh + b_h        (pre-activation)
    H_t = phi(Z_t)                             (phi = tanh or relu)
    O_t = H_t W_hq + b_q                       (logits)

Buffers are time-major and C-contiguous. Shapes, with dimensions T B H D V:

    X_ids   (T, B)        int32 token ids          (one-hot input = row gather of W_xh)
    X       (T*B, D)      dense inputs
    Hs      (T+1, B, H)   Hs[0] = h0, Hs[t+1] = H_t
    Zs      (T*B, H)      pre-activations; overwritten with dZ by the backward pass
    O       (T*B, V)      logits; overwritten with dO = d loss / d O by the loss

Only H_{t-1} W_hh (forward) and dZ_t W_hh^T (backward) run inside the serial
time loop. The input projection, output layer, softmax-cross-entropy and the
weight gradients are whole-sequence operations. Parallelism: the time loop
splits the batch into one chunk per thread (no barrier per step), and a single
sequence (B = 1) splits each step's hidden units between two threads, which
claim the parts (csrc/_steps.h); the whole-sequence operations split rows or
output columns per thread. BLAS must be
limited to one thread by the caller while these kernels run with more than one
thread. Every thread flushes subnormals for the duration of its work and
restores the caller's floating-point mode.

The Python entry points take memoryviews; the Python layer (fastrnn._core)
validates every argument before calling them. Nothing is allocated inside the
kernels.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.stdint cimport int32_t, int64_t, uint64_t

from _blas cimport gemm
from _omp cimport (FASTRNN_OMP_ENABLED, fastrnn_omp_max_threads, fastrnn_omp_thread_id,
                  fastrnn_omp_num_threads)
from _split cimport _chunk, _threads_for
from _fpmode cimport (fastrnn_fpmode_t, fastrnn_ftz_on, fastrnn_fp_restore, fastrnn_fp_get,
                     FASTRNN_HAVE_FTZ)

from _rowops cimport (_vecmat, _vecmatT, _tanh_vec, fastrnn_softmax_xent_f32,
                     fastrnn_softmax_xent_f64, fastrnn_dtanh_f32, fastrnn_dtanh_f64,
                     fastrnn_bias_scatter_f32, fastrnn_bias_scatter_f64,
                     fastrnn_gather_f32, fastrnn_gather_f64,
                     fastrnn_all_finite_f32, fastrnn_all_finite_f64,
                     _pack_width, _packed_size, _pack, _pgemm, _tngemm,
                     fastrnn_pgemm_level)

from _steps cimport (fastrnn_steps_t, fastrnn_steps_init, fastrnn_steps_claim,
                    fastrnn_steps_done, fastrnn_steps_next, fastrnn_steps_wait,
                    fastrnn_split_point)


cdef enum:
    TANH = 0
    RELU = 1


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTRNN_OMP_ENABLED)


def openmp_max_threads():
    """omp_get_max_threads() (1 in a serial build)."""
    return fastrnn_omp_max_threads()


def ftz_supported():
    """True when the kernels can flush subnormal floats on this platform."""
    return bool(FASTRNN_HAVE_FTZ)


def fp_mode():
    """The calling thread's floating-point control word (for tests)."""
    return fastrnn_fp_get()


# ---------------------------------------------------------------------------
# elementwise helpers

cdef inline void _activate(floating* Z, floating* Hout, Py_ssize_t n,
                           int nonlin) noexcept nogil:
    """Hout = phi(Z), elementwise over n values."""
    cdef Py_ssize_t i
    if nonlin == TANH:
        _tanh_vec(Z, Hout, n)
    else:
        for i in range(n):
            Hout[i] = Z[i] if Z[i] > 0 else 0


# ---------------------------------------------------------------------------
# forward: input projection + recurrence for one batch chunk

cdef inline void _dense_input(const floating* W_xh, const floating* b_h, const floating* x,
                              floating* z, Py_ssize_t nb, Py_ssize_t H,
                              Py_ssize_t D) noexcept nogil:
    """z(nb, H) = x(nb, D) W_xh + b_h: the dense input projection of one step."""
    cdef Py_ssize_t b, j
    for b in range(nb):
        for j in range(H):
            z[b * H + j] = b_h[j]
    if nb == 1:  # the same arithmetic as _forward_split, so B=1 results agree
        _vecmat(x, W_xh, H, z, D, H, 1)
    else:
        gemm(c'N', c'N', <int>nb, <int>H, <int>D, <floating>1.0, x, <int>D, W_xh, <int>H,
             <floating>1.0, z, <int>H)


cdef double _forward_chunk(
        const floating* W_xh,      # IN  (D, H)
        const floating* W_hh,      # IN  (H, H)
        const floating* Wp,        # IN  W_hh packed by _pack, or NULL for BLAS
        const floating* b_h,       # IN  (H,)
        const int32_t* X_ids,      # IN  (T, B) token ids, or NULL
        const floating* X,         # IN  (T*B, D) dense inputs, or NULL
        floating* Hs,              # IN/OUT (T+1, B, H): Hs[0] = h0 on entry
        floating* Zs,              # OUT (T*B, H) pre-activations, or WORK (B, H) if zt == 0
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t D,
        Py_ssize_t b0, Py_ssize_t b1, int nonlin,
        Py_ssize_t zt,             # B: Z_t kept in Zs[t]; 0: one step's rows reused
        # the output layer fused into the time loop, or O == NULL for none here:
        const floating* W_hq,      # IN  (H, V)
        const floating* Wqp,       # IN  W_hq packed, or NULL for BLAS
        const floating* b_q,       # IN  (V,)
        const int32_t* Y,          # IN  (T*B,) targets, or NULL for logits only
        floating* O,               # OUT (T*B, V) logits or dO (see _output_rows)
        Py_ssize_t V, floating scale) noexcept nogil:
    """The recurrence for batch rows [b0, b1); with O, each step's output rows too
    (while H_t is in cache). Returns the summed cross-entropy of those rows."""
    cdef Py_ssize_t t, nb = b1 - b0
    cdef floating* z
    cdef double total = 0.0
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    if nb <= 0:
        fastrnn_fp_restore(mode)
        return 0.0
    # dense input projection for the whole sequence of this chunk (hoisted out of the
    # loop when every Z_t has its own rows; token ids are gathered step by step below,
    # while the rows are in cache)
    for t in range(T if X_ids == NULL and zt != 0 else 0):
        _dense_input(W_xh, b_h, X + (t * B + b0) * D, Zs + (t * B + b0) * H, nb, H, D)
    # the serial recurrence: Z_t += H_{t-1} W_hh ; H_t = phi(Z_t)
    for t in range(T):
        z = Zs + (t * zt + b0) * H
        if X_ids == NULL and zt == 0:
            _dense_input(W_xh, b_h, X + (t * B + b0) * D, z, nb, H, D)
        if X_ids != NULL:
            if floating is float:
                fastrnn_gather_f32(W_xh, X_ids + t * B + b0, b_h, z, nb, H)
            else:
                fastrnn_gather_f64(W_xh, X_ids + t * B + b0, b_h, z, nb, H)
        if nb == 1:
            _vecmat(Hs + (t * B + b0) * H, W_hh, H, z, H, H, 1)
        elif Wp != NULL:
            _pgemm(nb, H, H, Hs + (t * B + b0) * H, H, Wp, z, H, 1, NULL)
        else:
            gemm(c'N', c'N', <int>nb, <int>H, <int>H, <floating>1.0,
                 Hs + (t * B + b0) * H, <int>H, W_hh, <int>H, <floating>1.0, z, <int>H)
        _activate(z, Hs + ((t + 1) * B + b0) * H, nb * H, nonlin)
        if O != NULL:
            total += _output_rows(Hs + ((t + 1) * B + b0) * H, W_hq, Wqp, b_q,
                                  (Y + t * B + b0) if Y != NULL else NULL,
                                  O + (t * B + b0) * V, nb, H, V, scale)
    fastrnn_fp_restore(mode)
    return total


cdef inline void _forward_part(
        const floating* W_xh, const floating* W_hh, const floating* b_h,
        const int32_t* X_ids, const floating* X, floating* Hs, floating* Zs,
        Py_ssize_t t, Py_ssize_t H, Py_ssize_t D, Py_ssize_t j0, Py_ssize_t j1,
        int nonlin) noexcept nogil:
    """Hidden units [j0, j1) of step t of one sequence (B = 1): Z_t and H_t."""
    cdef Py_ssize_t j, nj = j1 - j0
    cdef floating* z = Zs + t * H
    cdef const floating* w
    if nj <= 0:
        return
    if X_ids != NULL:
        w = W_xh + <Py_ssize_t>X_ids[t] * H
        for j in range(j0, j1):
            z[j] = w[j] + b_h[j]
    else:
        for j in range(j0, j1):
            z[j] = b_h[j]
        _vecmat(X + t * D, W_xh + j0, H, z + j0, D, nj, 1)
    _vecmat(Hs + t * H, W_hh + j0, H, z + j0, H, nj, 1)
    _activate(z + j0, Hs + (t + 1) * H + j0, nj, nonlin)


cdef void _forward_split(
        const floating* W_xh,      # IN  (D, H)
        const floating* W_hh,      # IN  (H, H)
        const floating* b_h,       # IN  (H,)
        const int32_t* X_ids,      # IN  (T,) token ids, or NULL
        const floating* X,         # IN  (T, D) dense inputs, or NULL
        floating* Hs,              # IN/OUT (T+1, H): Hs[0] = h0 on entry
        floating* Zs,              # OUT (T, H) pre-activations
        Py_ssize_t T, Py_ssize_t H, Py_ssize_t D, int nonlin,
        int me,                    # this thread's own part (0 or 1)
        fastrnn_steps_t* steps) noexcept nogil:
    """One sequence (B = 1) on two threads: each step's hidden units are cut in two
    parts, and each part is computed by whichever thread claims it (its own part
    first, then the other's if still unclaimed; csrc/_steps.h). A thread running
    alone computes the whole sequence."""
    cdef int t = 0, i, k
    cdef Py_ssize_t cut = fastrnn_split_point(H)
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    while True:
        t = fastrnn_steps_next(steps, t)
        if t >= T:
            break
        if t > 0:
            fastrnn_steps_wait(steps, t - 1)    # H_{t-1} complete
        for i in range(2):
            k = me ^ i
            if fastrnn_steps_claim(steps, k, t):
                _forward_part(W_xh, W_hh, b_h, X_ids, X, Hs, Zs, t, H, D,
                              cut if k else 0, H if k else cut, nonlin)
                fastrnn_steps_done(steps, k, t)
        t += 1
    fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# output layer (+ optional fused softmax cross-entropy) for a block of rows

cdef double _output_rows(
        const floating* Hrows,     # IN  (n, H) hidden states H_t (rows of Hs[1:])
        const floating* W_hq,      # IN  (H, V)
        const floating* Wqp,       # IN  W_hq packed by _pack, or NULL for BLAS
        const floating* b_q,       # IN  (V,)
        const int32_t* Y,          # IN  (n,) targets, or NULL for logits only
        floating* O,               # OUT (n, V) logits, or dO = d mean-loss / dO if Y
        Py_ssize_t n, Py_ssize_t H, Py_ssize_t V, floating scale) noexcept nogil:
    """Logits for n rows; with targets, overwrite them with the loss gradient
    (softmax - onehot) * scale and return the summed cross-entropy."""
    cdef Py_ssize_t r
    cdef double total = 0.0
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    if n <= 0:
        fastrnn_fp_restore(mode)
        return 0.0
    if Wqp != NULL:
        _pgemm(n, V, H, Hrows, H, Wqp, O, V, 0, b_q)
    else:
        for r in range(n):
            memcpy(O + r * V, b_q, V * sizeof(floating))
        gemm(c'N', c'N', <int>n, <int>V, <int>H, <floating>1.0, Hrows, <int>H,
             W_hq, <int>V, <floating>1.0, O, <int>V)
    if Y != NULL:
        if floating is float:
            total = fastrnn_softmax_xent_f32(O, Y, n, V, scale, NULL)
        else:
            total = fastrnn_softmax_xent_f64(O, Y, n, V, scale, NULL)
    fastrnn_fp_restore(mode)
    return total


# ---------------------------------------------------------------------------
# backward through time for one batch chunk

cdef void _backward_chunk(
        const floating* W_hh,      # IN  (H, H)
        const floating* WpT,       # IN  W_hh^T packed by _pack, or NULL for BLAS
        const floating* Hs,        # IN  (T+1, B, H)
        floating* dZs,             # IN/OUT rows of step t at ((t - t_lo) * B + b) * H:
                                   #   dL/dH_t from the output layer on entry (unless
                                   #   dO is given), dL/dZ_t on exit
        floating* dh,              # IN/OUT (B, H): dL/dH_{t_hi - 1} from later steps on
                                   #   entry (zeroed here if init_dh), dL/dH_{t_lo - 1} on
                                   #   exit (dL/dh0 when t_lo = 0)
        Py_ssize_t t_lo, Py_ssize_t t_hi, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t b0, Py_ssize_t b1, int nonlin, bint init_dh,
        # dL/dH_t from the output layer computed here, step by step, when dO != NULL:
        const floating* dO,        # IN  (T*B, V) d loss / d logits
        const floating* W_hq,      # IN  (H, V)
        const floating* WqpT,      # IN  W_hq^T packed, or NULL for BLAS
        Py_ssize_t V) noexcept nogil:
    """Steps t_hi - 1 down to t_lo of BPTT for batch rows [b0, b1)."""
    cdef Py_ssize_t t, i, nb = b1 - b0, n = (b1 - b0) * H
    cdef floating* dz
    cdef const floating* h
    cdef floating* dhc = dh + b0 * H
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    if nb <= 0:
        fastrnn_fp_restore(mode)
        return
    if init_dh:
        memset(dhc, 0, n * sizeof(floating))
    t = t_hi - 1
    while t >= t_lo:
        dz = dZs + ((t - t_lo) * B + b0) * H
        h = Hs + ((t + 1) * B + b0) * H
        if dO != NULL:  # dL/dH_t from O_t = dO_t W_hq^T
            if WqpT != NULL:
                _pgemm(nb, H, V, dO + (t * B + b0) * V, V, WqpT, dz, H, 0, NULL)
            else:
                gemm(c'N', c'T', <int>nb, <int>H, <int>V, <floating>1.0,
                     dO + (t * B + b0) * V, <int>V, W_hq, <int>V, <floating>0.0, dz, <int>H)
        # dZ_t = (dL/dH_t from O_t + dL/dH_t from Z_{t+1}) * phi'(Z_t)
        if nonlin == TANH:
            if floating is float:
                fastrnn_dtanh_f32(dz, dhc, h, n)
            else:
                fastrnn_dtanh_f64(dz, dhc, h, n)
        else:
            for i in range(n):
                dz[i] = (dz[i] + dhc[i]) if h[i] > 0 else 0
        # dL/dH_{t-1} through the recurrence = dZ_t W_hh^T
        if nb == 1:
            _vecmatT(dz, W_hh, dhc, H, H)
        elif WpT != NULL:
            _pgemm(nb, H, H, dz, H, WpT, dhc, H, 0, NULL)
        else:
            gemm(c'N', c'T', <int>nb, <int>H, <int>H, <floating>1.0, dz, <int>H,
                 W_hh, <int>H, <floating>0.0, dhc, <int>H)
        t -= 1
    fastrnn_fp_restore(mode)


cdef inline void _backward_part(
        const floating* W_hh, const floating* Hs, floating* dZs, floating* dh,
        int s, Py_ssize_t T, Py_ssize_t H, Py_ssize_t i0, Py_ssize_t i1,
        int nonlin) noexcept nogil:
    """Hidden units [i0, i1) of stage s of one sequence's BPTT (B = 1): stage s
    takes t = T - 1 - s, forms dL/dH_t[i0:i1] = W_hh[i0:i1] dZ_{t+1} (zero at the
    last step) and then dZ_t[i0:i1]; stage T leaves dL/dh0[i0:i1] in dh."""
    cdef Py_ssize_t i, ni = i1 - i0, t = T - 1 - s
    cdef floating* dz
    cdef const floating* h
    if ni <= 0:
        return
    if s == 0:
        for i in range(i0, i1):
            dh[i] = 0
    else:
        _vecmatT(dZs + (t + 1) * H, W_hh + i0 * H, dh + i0, ni, H)
    if s < T:
        dz = dZs + t * H
        h = Hs + (t + 1) * H
        if nonlin == TANH:
            if floating is float:
                fastrnn_dtanh_f32(dz + i0, dh + i0, h + i0, ni)
            else:
                fastrnn_dtanh_f64(dz + i0, dh + i0, h + i0, ni)
        else:
            for i in range(i0, i1):
                dz[i] = (dz[i] + dh[i]) if h[i] > 0 else 0


cdef void _backward_split(
        const floating* W_hh,      # IN  (H, H)
        const floating* Hs,        # IN  (T+1, H)
        floating* dZs,             # IN/OUT (T, H): dL/dH_t from the output layer -> dL/dZ_t
        floating* dh,              # OUT (H,): dL/dh0 on exit
        Py_ssize_t T, Py_ssize_t H, int nonlin,
        int me,                    # this thread's own part (0 or 1)
        fastrnn_steps_t* steps) noexcept nogil:
    """One sequence (B = 1) on two threads, T + 1 stages of two parts each, claimed
    as in _forward_split."""
    cdef int s = 0, i, k
    cdef Py_ssize_t cut = fastrnn_split_point(H)
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    while True:
        s = fastrnn_steps_next(steps, s)
        if s > T:
            break
        if s > 0:
            fastrnn_steps_wait(steps, s - 1)    # dZ_{t+1} complete
        for i in range(2):
            k = me ^ i
            if fastrnn_steps_claim(steps, k, s):
                _backward_part(W_hh, Hs, dZs, dh, s, T, H, cut if k else 0,
                               H if k else cut, nonlin)
                fastrnn_steps_done(steps, k, s)
        s += 1
    fastrnn_fp_restore(mode)


# The packed micro-kernels (csrc/_pgemm.h) take the recurrence, output-layer and
# (small-H) weight-gradient products on x86-64 with AVX2+FMA or AVX-512; elsewhere
# BLAS does. Decided once, at import (before any thread calls the kernels).
cdef bint USE_PGEMM = fastrnn_pgemm_level() >= 1


# Up to this hidden size the weight gradients H^T dZ and H^T dO run on _tngemm;
# above it BLAS, whose cache blocking wins for the large products (one thread,
# benches/micro: 95 vs 88 GFLOP/s at H=256, 85 vs 99 at H=1024).
cdef Py_ssize_t TNGEMM_MAX_H = 512


# The output layer (and, backward, dO W_hq^T) runs inside each chunk's time loop
# when a chunk has at least this many rows: then the products are big enough per
# step, and a parallel region and a pass over T*B rows are saved.
cdef Py_ssize_t FUSE_MIN_ROWS = 8


cdef int _check_work_rows(Py_ssize_t rows, Py_ssize_t T, Py_ssize_t B,
                          str name) except -1:
    """The Zs work area holds T*B rows (every step), or whole steps below that."""
    if rows != T * B and (rows < B or rows % B != 0):
        raise ValueError(f"{name} must have T*B rows, or a multiple of B below that")
    return 0


cdef inline bint _fuse_output(bint split, Py_ssize_t B, int nc) noexcept nogil:
    """Output layer inside the time loop (forward and backward decide alike)?"""
    return not split and B // nc >= FUSE_MIN_ROWS


cdef void _weight_grads_chunk(
        const floating* Hprev,     # IN  (Nz, H) H_{t-1} for the rows of dZ
        const floating* dZ,        # IN  (Nz, H) dL/dZ_t
        const int32_t* X_ids,      # IN  (Nz,) ids of those rows, or NULL
        const floating* X,         # IN  (Nz, D) dense inputs of those rows, or NULL
        const floating* Hcur,      # IN  (N, H) H_t for every row (with do_hq)
        const floating* dO,        # IN  (N, V) (with do_hq)
        floating* dW_xh,           # OUT (D, H)
        floating* dW_hh,           # OUT (H, H)
        floating* db_h,            # OUT (H,)
        floating* dW_hq,           # OUT (H, V)
        floating* db_q,            # OUT (V,)
        Py_ssize_t Nz, Py_ssize_t N, Py_ssize_t H, Py_ssize_t D, Py_ssize_t V,
        bint accumulate,           # add the dZ terms to dW_hh, db_h, dW_xh (else set)
        bint do_hq,                # also set dW_hq and db_q from all N rows
        int c, int nchunks) noexcept nogil:
    """Chunk c of the weight gradients: each chunk owns a disjoint set of
    output rows/columns, so chunks never write the same memory and the result
    does not depend on the number of chunks."""
    cdef Py_ssize_t i0, i1, j0, j1, v0, v1, d0, d1
    cdef floating beta = 1.0 if accumulate else 0.0
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    # dW_hh[i0:i1] (+)= Hprev[:, i0:i1]^T dZ ;  dW_hq[i0:i1] = Hcur[:, i0:i1]^T dO
    _chunk(H, nchunks, c, &i0, &i1)
    if i1 > i0 and USE_PGEMM and H <= TNGEMM_MAX_H:
        # in place, no packing: faster than BLAS for these shapes (benches/micro)
        _tngemm(i1 - i0, H, Nz, Hprev + i0, H, dZ, H, dW_hh + i0 * H, H, accumulate)
        if do_hq:
            _tngemm(i1 - i0, V, N, Hcur + i0, H, dO, V, dW_hq + i0 * V, V, 0)
    elif i1 > i0:
        gemm(c'T', c'N', <int>(i1 - i0), <int>H, <int>Nz, <floating>1.0, Hprev + i0,
             <int>H, dZ, <int>H, beta, dW_hh + i0 * H, <int>H)
        if do_hq:
            gemm(c'T', c'N', <int>(i1 - i0), <int>V, <int>N, <floating>1.0, Hcur + i0,
                 <int>H, dO, <int>V, <floating>0.0, dW_hq + i0 * V, <int>V)
    # biases: column sums; dW_xh for token ids: scatter-add of dZ rows (one pass)
    _chunk(H, nchunks, c, &j0, &j1)
    if floating is float:
        fastrnn_bias_scatter_f32(dZ, Nz, H, j0, j1, db_h, X_ids, dW_xh, H, D, accumulate)
    else:
        fastrnn_bias_scatter_f64(dZ, Nz, H, j0, j1, db_h, X_ids, dW_xh, H, D, accumulate)
    if do_hq:
        _chunk(V, nchunks, c, &v0, &v1)
        if floating is float:
            fastrnn_bias_scatter_f32(dO, N, V, v0, v1, db_q, NULL, NULL, 0, 0, 0)
        else:
            fastrnn_bias_scatter_f64(dO, N, V, v0, v1, db_q, NULL, NULL, 0, 0, 0)
    if X_ids == NULL:
        _chunk(D, nchunks, c, &d0, &d1)
        if d1 > d0:
            gemm(c'T', c'N', <int>(d1 - d0), <int>H, <int>Nz, <floating>1.0, X + d0,
                 <int>D, dZ, <int>H, beta, dW_xh + d0 * H, <int>H)
    fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# Python entry points (arguments validated by fastrnn._core)

# Below about this many flops per thread, waking another thread for a
# whole-sequence product costs more than it saves (and on a busy machine a
# thread that is not scheduled stalls the whole call).
cdef double MIN_FLOPS_PER_THREAD = 2e6


# On by default. One sequence's steps are shared out by claiming parts
# (csrc/_steps.h), not by a barrier: with a barrier, a partner thread descheduled
# by another process stalled every step (0.63 -> 42 ms per B=1 training step
# here); with claims, the thread that runs does the whole step. Measured by
# compare.make_fastrnn, V=28, B=1, T=64, 2 threads, us per training step,
# serial / split: H=64 114/125, H=128 209/190, H=256 653/470, H=1024 15113/8672;
# H=256 with one busy-looping process beside it, 1848-2124 / 1290-1395.
cdef bint SPLIT_ONE_SEQUENCE = True


def set_split_one_sequence(bint enable):
    """Let B=1 calls split each step's hidden units across two threads (on by
    default; off runs the sequence on one thread). Returns the old setting."""
    global SPLIT_ONE_SEQUENCE
    old = SPLIT_ONE_SEQUENCE
    SPLIT_ONE_SEQUENCE = enable
    return old


cdef inline bint _split_one_sequence(int num_threads, Py_ssize_t B, Py_ssize_t H) noexcept nogil:
    """Split a single sequence's recurrence by hidden units across two threads?
    Only when enabled and each step has enough work (H >= 125 by default) to pay
    for the threads meeting once per step."""
    return (SPLIT_ONE_SEQUENCE and FASTRNN_OMP_ENABLED and B == 1 and num_threads >= 2
            and 2.0 * H * H >= MIN_FLOPS_PER_THREAD / 64)


def set_min_flops_per_thread(double flops):
    """Set the work threshold below which fewer threads are used; returns the old
    value. Tests set 0 so that every requested thread gets a chunk."""
    global MIN_FLOPS_PER_THREAD
    old = MIN_FLOPS_PER_THREAD
    MIN_FLOPS_PER_THREAD = flops if flops > 0 else 1e-300
    return old


cdef inline int _nonlin_code(str nonlinearity) except -1:
    if nonlinearity == "tanh":
        return TANH
    if nonlinearity == "relu":
        return RELU
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def calls_blas(Py_ssize_t H, bint dense):
    """Whether forward()/backward() may call BLAS for hidden size H (and dense
    inputs): without the packed kernels, for the large weight gradients, and for
    the dense input products. Otherwise the caller need not limit BLAS's threads."""
    return not USE_PGEMM or dense or H > TNGEMM_MAX_H


def all_finite_f32(const float[::1] a):
    """True when every value of a (e.g. a C-contiguous array's reshape(-1)) is
    finite: one pass in C, no temporary array."""
    if a.shape[0] == 0:
        return True
    return fastrnn_all_finite_f32(&a[0], a.shape[0]) != 0


def all_finite_f64(const double[::1] a):
    """float64 version of all_finite_f32."""
    if a.shape[0] == 0:
        return True
    return fastrnn_all_finite_f64(&a[0], a.shape[0]) != 0


ctypedef fused ids_t:
    int32_t
    int64_t


def ids_tb(const ids_t[:, ::1] src, int32_t[:, ::1] out):
    """out (T, B) = src (B, T) transposed and narrowed to int32, in one pass that
    also returns src's (min, max): the validation and layout of token ids, which
    numpy does in three passes (min, max, a strided casting copy) at about 3 ns
    an id. The caller checks the range before any kernel reads out (an id outside
    int32 is caught by the min/max, whatever out then holds)."""
    cdef Py_ssize_t B = src.shape[0], T = src.shape[1], b, b0, b1, t
    cdef int64_t lo, hi, v
    cdef const ids_t* s
    cdef int32_t* o
    if out.shape[0] != T or out.shape[1] != B:
        raise ValueError(f"out must have shape {(T, B)}, got {(out.shape[0], out.shape[1])}")
    if B == 0 or T == 0:
        return (0, -1)
    s = &src[0, 0]
    o = &out[0, 0]
    lo = hi = s[0]
    with nogil:
        # 16 rows of src at a time, written as one 64-byte run per step t (a row at
        # a time would write T values 4*B bytes apart: one cache set at B = 1024)
        for b0 in range(0, B, 16):
            b1 = b0 + 16 if b0 + 16 < B else B
            for t in range(T):
                for b in range(b0, b1):
                    v = s[b * T + t]
                    lo = v if v < lo else lo
                    hi = v if v > hi else hi
                    o[t * B + b] = <int32_t>v
    return (lo, hi)


def packed_gemm_level():
    """The hand-written gemm variant this process runs: 2 = AVX-512, 1 = AVX2+FMA,
    0 = none (BLAS does those products). FASTRNN_KERNEL_LEVEL in the environment
    at import caps it."""
    return fastrnn_pgemm_level() if USE_PGEMM else 0


cdef floating* _alloc_packed(Py_ssize_t n, floating dummy) except NULL:
    """Buffer for n values of packed weights (freed by the caller)."""
    cdef floating* p = <floating*>malloc((n if n > 0 else 1) * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"cannot allocate {n * sizeof(floating)} bytes for packed weights")
    return p


def forward(const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,
            const floating[::1] b_h, const floating[:, ::1] W_hq, const floating[::1] b_q,
            const int32_t[:, ::1] X_ids,     # (T, B), or shape (0, 0) for dense input
            const floating[:, ::1] X,               # (T*B, D), or shape (0, 0) for ids
            floating[:, :, ::1] Hs,          # IN/OUT (T+1, B, H), Hs[0] = h0
            floating[:, ::1] Zs,             # OUT (T*B, H)
            floating[:, ::1] O,              # OUT (T*B, V) logits, or (0, 0) to skip
            const int32_t[::1] Y,            # (T*B,) targets, or (0,) for no loss
            floating[::1] loss_parts,        # OUT (nthreads,) float sums per chunk
            str nonlinearity, int num_threads):
    """Forward pass (and, with targets, the softmax cross-entropy).

    With Y, O is overwritten by d(mean loss)/dO and loss_parts[c] holds chunk
    c's summed cross-entropy. Returns nothing; results are in the buffers.
    """
    cdef int nonlin = _nonlin_code(nonlinearity)
    cdef Py_ssize_t T = Hs.shape[0] - 1, B = Hs.shape[1], H = Hs.shape[2]
    cdef Py_ssize_t D = W_xh.shape[0], V = W_hq.shape[1], N = T * B
    cdef const int32_t* ids = &X_ids[0, 0] if X_ids.shape[0] > 0 else NULL
    cdef const floating* xd = &X[0, 0] if X.shape[0] > 0 else NULL
    cdef const int32_t* yp = &Y[0] if Y.shape[0] > 0 else NULL
    cdef bint do_out = O.shape[0] > 0
    cdef floating scale = <floating>(1.0 / N)
    cdef int nc, no
    cdef fastrnn_steps_t steps
    if num_threads < 1:
        raise ValueError("num_threads must be >= 1")
    # the time loop splits the batch; the output layer splits its T*B rows
    nc = _threads_for(num_threads, 2.0 * N * H * (H + 1), MIN_FLOPS_PER_THREAD, B)
    no = _threads_for(num_threads, 2.0 * N * H * V, MIN_FLOPS_PER_THREAD, N)
    # Zs is (T*B, H), or (R*B, H) with R < T: a work area (forward reuses one step's
    # rows; backward() keeps dZ for R steps at a time)
    _check_work_rows(Zs.shape[0], T, B, "Zs")
    cdef bint split = _split_one_sequence(num_threads, B, H) and Zs.shape[0] == T * B
    # packed weights for _pgemm: W_hq for the output layer, and W_hh when some chunk
    # of the time loop has several rows (one row uses _vecmat on W_hh itself)
    cdef bint pack_hh = USE_PGEMM and not split and B > nc
    cdef bint pack_hq = USE_PGEMM and do_out
    cdef Py_ssize_t nq = _packed_size(H, V, <floating>0) if pack_hq else 0
    cdef floating* buf = NULL
    cdef floating* Wqp = NULL
    cdef floating* Wp = NULL
    if pack_hh or pack_hq:
        buf = _alloc_packed(nq + (_packed_size(H, H, <floating>0) if pack_hh else 0),
                            <floating>0)
        Wqp = buf if pack_hq else NULL
        Wp = (buf + nq) if pack_hh else NULL
    fastrnn_steps_init(&steps)
    try:
        with nogil:
            if pack_hq:
                _pack(&W_hq[0, 0], V, 0, H, V, _pack_width(<floating>0), Wqp)
            if pack_hh:
                _pack(&W_hh[0, 0], H, 0, H, H, _pack_width(<floating>0), Wp)
            _forward_regions(W_xh, W_hh, Wp, Wqp, b_h, W_hq, b_q, ids, xd, Hs, Zs, O, yp,
                             loss_parts, T, B, H, D, V, N, nonlin, scale, do_out, split, nc,
                             no, &steps)
    finally:
        free(buf)


cdef void _forward_regions(
        const floating[:, ::1] W_xh, const floating[:, ::1] W_hh, const floating* Wp,
        const floating* Wqp, const floating[::1] b_h, const floating[:, ::1] W_hq,
        const floating[::1] b_q,
        const int32_t* ids, const floating* xd, floating[:, :, ::1] Hs,
        floating[:, ::1] Zs, floating[:, ::1] O, const int32_t* yp,
        floating[::1] loss_parts, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t D,
        Py_ssize_t V, Py_ssize_t N, int nonlin, floating scale, bint do_out, bint split,
        int nc, int no, fastrnn_steps_t* steps) noexcept nogil:
    """forward()'s parallel regions (arguments validated by forward())."""
    cdef int c, tid = 0
    cdef Py_ssize_t lo, hi
    cdef Py_ssize_t zt = B if Zs.shape[0] == T * B else 0
    # with several rows per chunk, each chunk's output rows are computed inside its
    # time loop (no second parallel region, H_t still in cache); one-row chunks and
    # the split single sequence use one whole-sequence output region instead
    cdef bint fuse = do_out and _fuse_output(split, B, nc)
    if split:
        # one sequence: two threads share out each step's hidden units (a thread
        # that runs alone, e.g. when OpenMP gives one, computes every step)
        with parallel(num_threads=2):
            tid = fastrnn_omp_thread_id()
            _forward_split(&W_xh[0, 0], &W_hh[0, 0], &b_h[0], ids, xd, &Hs[0, 0, 0],
                           &Zs[0, 0], T, H, D, nonlin, tid & 1, steps)
    else:
        for c in prange(nc, num_threads=nc, schedule='static'):
            loss_parts[c] = _forward_chunk(
                &W_xh[0, 0], &W_hh[0, 0], Wp, &b_h[0], ids, xd, &Hs[0, 0, 0], &Zs[0, 0],
                T, B, H, D, (B * c) // nc, (B * (c + 1)) // nc, nonlin, zt,
                &W_hq[0, 0], Wqp, &b_q[0], yp, &O[0, 0] if fuse else NULL, V, scale)
    if do_out and not fuse:
        for c in prange(no, num_threads=no, schedule='static'):
            lo = (N * c) // no
            hi = (N * (c + 1)) // no
            loss_parts[c] = _output_rows(
                &Hs[0, 0, 0] + (B + lo) * H, &W_hq[0, 0], Wqp, &b_q[0],
                (yp + lo) if yp != NULL else NULL, &O[0, 0] + lo * V,
                hi - lo, H, V, scale)


def backward(const floating[:, ::1] W_xh, const floating[:, ::1] W_hh,
             const floating[:, ::1] W_hq, const int32_t[:, ::1] X_ids,
             const floating[:, ::1] X,
             floating[:, :, ::1] Hs,         # IN (T+1, B, H) from forward
             floating[:, ::1] dZs,           # WORK (T*B, H), e.g. Zs from forward, or
                                             #   (R*B, H) with R < T: dZ for R steps
             floating[:, ::1] dO,            # IN (T*B, V) d loss / d logits
             floating[:, ::1] dW_xh, floating[:, ::1] dW_hh, floating[::1] db_h,
             floating[:, ::1] dW_hq, floating[::1] db_q,
             floating[:, ::1] dh0,           # OUT (B, H)
             str nonlinearity, int num_threads):
    """Backpropagation through time: fills every gradient buffer.

    With dZs of T*B rows, dZ is formed for the whole sequence and the weight
    gradients are whole-sequence products. With R*B rows (R < T), the sequence is
    taken in blocks of R steps from the end: each block's dZ is formed, then its
    terms are added to the weight gradients (memory R*B*H instead of T*B*H)."""
    cdef int nonlin = _nonlin_code(nonlinearity)
    cdef Py_ssize_t T = Hs.shape[0] - 1, B = Hs.shape[1], H = Hs.shape[2]
    cdef Py_ssize_t D = W_xh.shape[0], V = W_hq.shape[1], N = T * B
    cdef const int32_t* ids = &X_ids[0, 0] if X_ids.shape[0] > 0 else NULL
    cdef const floating* xd = &X[0, 0] if X.shape[0] > 0 else NULL
    cdef int c, nc, no, nw, tid = 0
    cdef Py_ssize_t lo, hi, t_lo, t_hi, R
    cdef bint first
    cdef fastrnn_fpmode_t mode
    cdef fastrnn_steps_t steps
    if num_threads < 1:
        raise ValueError("num_threads must be >= 1")
    _check_work_rows(dZs.shape[0], T, B, "dZs")
    R = dZs.shape[0] // B             # steps of dZ held at a time (T: all of them)
    nc = _threads_for(num_threads, 2.0 * N * H * (H + 1), MIN_FLOPS_PER_THREAD, B)
    no = _threads_for(num_threads, 2.0 * N * H * V, MIN_FLOPS_PER_THREAD, N)
    nw = _threads_for(num_threads, 2.0 * N * H * (H + V + D), MIN_FLOPS_PER_THREAD, max(H, V))
    cdef bint split = _split_one_sequence(num_threads, B, H) and R == T
    # packed W_hq^T for dO W_hq^T, and W_hh^T when some chunk of the time loop has
    # several rows
    cdef bint pack_hh = USE_PGEMM and not split and B > nc
    # dO_t W_hq^T inside each chunk's time loop: with several rows per chunk, and
    # always in blocks (the rows of a block only exist while it is processed)
    cdef bint fuse = _fuse_output(split, B, nc) or (not split and R < T)
    cdef Py_ssize_t nq = _packed_size(V, H, <floating>0) if USE_PGEMM else 0
    cdef floating* WqpT = NULL
    cdef floating* WpT = NULL
    if USE_PGEMM:
        WqpT = _alloc_packed(nq + (_packed_size(H, H, <floating>0) if pack_hh else 0),
                             <floating>0)
        WpT = (WqpT + nq) if pack_hh else NULL
    try:
        with nogil:
            if WqpT != NULL:
                _pack(&W_hq[0, 0], V, 1, V, H, _pack_width(<floating>0), WqpT)
            if pack_hh:
                _pack(&W_hh[0, 0], H, 1, H, H, _pack_width(<floating>0), WpT)
            # dL/dH_t from the output layer, all t at once: dO W_hq^T (rows split),
            # unless each chunk computes its own rows inside its time loop (fuse)
            for c in prange(no if not fuse else 0, num_threads=no, schedule='static'):
                lo = (N * c) // no
                hi = (N * (c + 1)) // no
                mode = fastrnn_ftz_on()
                if WqpT != NULL:
                    _pgemm(hi - lo, H, V, &dO[0, 0] + lo * V, V, WqpT, &dZs[0, 0] + lo * H, H,
                           0, NULL)
                else:
                    gemm(c'N', c'T', <int>(hi - lo), <int>H, <int>V, <floating>1.0,
                         &dO[0, 0] + lo * V, <int>V, &W_hq[0, 0], <int>V, <floating>0.0,
                         &dZs[0, 0] + lo * H, <int>H)
                fastrnn_fp_restore(mode)
            if split:
                fastrnn_steps_init(&steps)
                with parallel(num_threads=2):
                    tid = fastrnn_omp_thread_id()
                    _backward_split(&W_hh[0, 0], &Hs[0, 0, 0], &dZs[0, 0], &dh0[0, 0], T, H,
                                    nonlin, tid & 1, &steps)
                for c in prange(nw, num_threads=nw, schedule='static'):
                    _weight_grads_chunk(&Hs[0, 0, 0], &dZs[0, 0], ids, xd, &Hs[0, 0, 0] + B * H,
                                        &dO[0, 0], &dW_xh[0, 0], &dW_hh[0, 0], &db_h[0],
                                        &dW_hq[0, 0], &db_q[0], N, N, H, D, V, False, True,
                                        c, nw)
            else:
                # blocks of R steps from the end (one block of T steps with full dZs)
                t_hi = T
                first = True
                while t_hi > 0:
                    t_lo = t_hi - R if t_hi > R else 0
                    for c in prange(nc, num_threads=nc, schedule='static'):
                        _backward_chunk(&W_hh[0, 0], WpT, &Hs[0, 0, 0], &dZs[0, 0],
                                        &dh0[0, 0], t_lo, t_hi, B, H, (B * c) // nc,
                                        (B * (c + 1)) // nc, nonlin, first,
                                        &dO[0, 0] if fuse else NULL, &W_hq[0, 0], WqpT, V)
                    for c in prange(nw, num_threads=nw, schedule='static'):
                        _weight_grads_chunk(
                            &Hs[0, 0, 0] + t_lo * B * H, &dZs[0, 0],
                            (ids + t_lo * B) if ids != NULL else NULL,
                            (xd + t_lo * B * D) if xd != NULL else NULL,
                            &Hs[0, 0, 0] + B * H, &dO[0, 0], &dW_xh[0, 0], &dW_hh[0, 0],
                            &db_h[0], &dW_hq[0, 0], &db_q[0], (t_hi - t_lo) * B, N, H, D, V,
                            not first, first, c, nw)
                    first = False
                    t_hi = t_lo
    finally:
        free(WqpT)
