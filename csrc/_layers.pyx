# cython: language_level=3
"""Compiled recurrent time loops of one layer, for every cell (csrc/_cells.h).

The layer stack driver (fastrnn, Python) does the whole-sequence products: the
input projection XW = X W_xh + b_h before the loop (for token ids, layer_forward_ids
adds the rows W_xh[id] + b_h into each step's pre-activations itself), the weight
gradients
dW_hh = H_prev^T dA_rec, dW_xh = X^T dA, the biases and the input gradient
dX = dA W_xh^T after it. Only the recurrent product and the cell's elementwise
step run here, in the serial time loop::

    forward   A_t = XW_t + h_{t-1} W_hh (GRU: n block kept as xn and hn apart)
              h_t, c_t, gate cache = cell(A_t, h_{t-1}, c_{t-1})
    backward  dA_t = cell'(dL/dh_t, dL/dc_t, cache)
              dL/dh_{t-1} = dA_rec_t W_hh^T (+ dh_t z_t for GRU)

Buffers are time-major, C-contiguous, float32 or float64 (all the same), allocated
by the caller (shapes: SPEC.md, and the docstrings below). Parallelism: the batch is
cut into one chunk of rows per thread and each chunk's whole time loop runs in one
prange iteration (no barrier per step). The recurrent product is the packed gemm of
csrc/_pgemm.h with W_hh (forward) or W_hh^T (backward) packed once per call; its
sums are in a fixed order for any row count, and the cell step is elementwise. One
sequence (B = 1) takes the one-row products of csrc/_vecmat.h on W_hh in place (the
packed kernel computes a tile of 6 rows for one), and with two threads each step's
hidden units are cut in two parts (on a multiple of 64) that the threads claim
(csrc/_steps.h, as fastrnn._rnn does for the Elman cell). Every result is bitwise
the same for any thread count. No BLAS is called here, so
the caller need not limit BLAS's threads for these kernels. Every thread flushes
subnormals for its work and restores the caller's floating-point mode. Nothing is
allocated per step (the packed weights and a work area, once per call).

Generation: generate_stack runs the whole sampling loop for any cell and depth
(see its docstring).
"""
import numpy as np

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from libc.stdint cimport int32_t, uint64_t, uintptr_t

from _omp cimport FASTRNN_OMP_ENABLED
from _split cimport _chunk, _threads_for
from _fpmode cimport fastrnn_fpmode_t, fastrnn_ftz_on, fastrnn_fp_restore
from _omp cimport fastrnn_omp_thread_id
from _steps cimport (fastrnn_steps_t, fastrnn_steps_init, fastrnn_steps_claim,
                    fastrnn_steps_done, fastrnn_steps_next, fastrnn_steps_wait,
                    fastrnn_split_point)
from _rowops cimport (_pack_width, _packed_size, _pack, _pgemm, _tngemm, _vecmat, _vecmatT,
                     fastrnn_pgemm_level, fastrnn_gather_f32, fastrnn_gather_f64)


cdef extern from "_cells.h" nogil:
    enum:
        FASTRNN_CELL_RNN
        FASTRNN_CELL_GRU
        FASTRNN_CELL_LSTM
        FASTRNN_NONLIN_TANH
        FASTRNN_NONLIN_RELU
    Py_ssize_t fastrnn_cell_gates(int cell) noexcept
    Py_ssize_t fastrnn_cell_cache_width(int cell, Py_ssize_t H) noexcept
    void fastrnn_cell_fwd_f32(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld, float* a,
                              const float* hn, const float* hp, const float* cp, float* h,
                              float* c, float* g, float* wk) noexcept
    void fastrnn_cell_fwd_f64(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld, double* a,
                              const double* hn, const double* hp, const double* cp, double* h,
                              double* c, double* g, double* wk) noexcept
    void fastrnn_cell_bwd_f32(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld,
                              const float* dh, const float* h, const float* hp, const float* c,
                              const float* cp, const float* g, float* dc, float* da,
                              float* dan, float* dhp, float* wk) noexcept
    void fastrnn_cell_bwd_f64(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld,
                              const double* dh, const double* h, const double* hp,
                              const double* c, const double* cp, const double* g, double* dc,
                              double* da, double* dan, double* dhp, double* wk) noexcept


# the kernel variant (and tanh's) is chosen once, at import, before any thread runs
cdef int _LEVEL = fastrnn_pgemm_level()

_I32 = np.dtype(np.int32)
_U64 = np.dtype(np.uint64)

CELL_RNN = FASTRNN_CELL_RNN
CELL_GRU = FASTRNN_CELL_GRU
CELL_LSTM = FASTRNN_CELL_LSTM
NONLIN_TANH = FASTRNN_NONLIN_TANH
NONLIN_RELU = FASTRNN_NONLIN_RELU


def gate_count(int cell):
    """Gates G of a cell (rnn 1, gru 3, lstm 4)."""
    _check_cell(cell, FASTRNN_NONLIN_TANH)
    return fastrnn_cell_gates(cell)


def gate_cache_width(int cell, Py_ssize_t H):
    """Values per (t, b) row of layer_forward's gate cache Gs: rnn 0 (pass Gs=None),
    gru 4H (r, z, n, hn), lstm 4H (i, f, g, o)."""
    _check_cell(cell, FASTRNN_NONLIN_TANH)
    if H < 0:
        raise ValueError(f"H must be >= 0, got {H}")
    return fastrnn_cell_cache_width(cell, H)


# ---------------------------------------------------------------------------
# cell step wrappers (fused float/double)

cdef inline void _cell_fwd(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld, floating* a,
                           const floating* hn, const floating* hp, const floating* cp,
                           floating* h, floating* c, floating* g, floating* wk) noexcept nogil:
    """Forward cell step of n units (gate blocks ld apart); csrc/_cells.h."""
    if floating is float:
        fastrnn_cell_fwd_f32(cell, nonlin, n, ld, a, hn, hp, cp, h, c, g, wk)
    else:
        fastrnn_cell_fwd_f64(cell, nonlin, n, ld, a, hn, hp, cp, h, c, g, wk)


cdef inline void _cell_bwd(int cell, int nonlin, Py_ssize_t n, Py_ssize_t ld,
                           const floating* dh, const floating* h, const floating* hp,
                           const floating* c, const floating* cp, const floating* g,
                           floating* dc, floating* da, floating* dan, floating* dhp,
                           floating* wk) noexcept nogil:
    """Backward cell step of n units (gate blocks ld apart); csrc/_cells.h."""
    if floating is float:
        fastrnn_cell_bwd_f32(cell, nonlin, n, ld, dh, h, hp, c, cp, g, dc, da, dan, dhp, wk)
    else:
        fastrnn_cell_bwd_f64(cell, nonlin, n, ld, dh, h, hp, c, cp, g, dc, da, dan, dhp, wk)


cdef inline void _xw_rows(const floating* XW, const int32_t* ids, const floating* W_x,
                          const floating* b_x, Py_ssize_t i0, Py_ssize_t n, Py_ssize_t GH,
                          floating* a) noexcept nogil:
    """a (n, G*H) = rows i0.. of the input projection: XW's, or with token ids the
    rows W_x[ids[i]] + b_x gathered here (what gather_rows would have stored in XW,
    bit for bit: one add each)."""
    if ids == NULL:
        memcpy(a, XW + i0 * GH, n * GH * sizeof(floating))
    elif floating is float:
        fastrnn_gather_f32(W_x, ids + i0, b_x, a, n, GH)
    else:
        fastrnn_gather_f64(W_x, ids + i0, b_x, a, n, GH)


# ---------------------------------------------------------------------------
# forward time loop of one batch chunk

cdef void _forward_chunk(
        int cell, int nonlin,
        const floating* XW,        # IN  (T, B, G*H), or NULL with ids
        const int32_t* ids,        # IN  (T, B) token ids: XW_t = W_x[ids_t] + b_x; or NULL
        const floating* W_x,       # IN  (D, G*H) with ids, else NULL
        const floating* b_x,       # IN  (G*H,) with ids, else NULL
        const floating* Wp,        # IN  W_hh (GRU: its r, z columns) packed by _pack
        const floating* Wpn,       # IN  GRU: W_hh's n columns packed, else NULL
        const floating* b_hn,      # IN  (H,) GRU, else NULL
        const floating* h0,        # IN  (B, H)
        const floating* c0,        # IN  (B, H) LSTM, else NULL
        floating* Hs,              # OUT (T, B, H)
        floating* Cs,              # OUT (T, B, H) LSTM, else NULL
        floating* Gs,              # OUT (T, B, 4H) gate cache (GRU, LSTM), or NULL
        floating* wa,              # WORK (B, G*H) pre-activations of a step
        floating* whn,             # WORK (B, H) GRU hn when Gs is NULL
        floating* wk,              # WORK (4H,) this thread's
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t b0, Py_ssize_t b1) noexcept nogil:
    """Steps 0..T-1 of batch rows [b0, b1): the recurrent product for the rows, then
    each row's cell step while it is in cache (B >= 2; one sequence: _forward_part)."""
    cdef Py_ssize_t t, r, nb = b1 - b0, G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t CW = fastrnn_cell_cache_width(cell, H), ldhn
    cdef const floating* hp
    cdef const floating* cp
    cdef floating* a = wa + b0 * GH
    cdef floating* hn = NULL
    cdef floating* g
    cdef fastrnn_fpmode_t mode
    if nb <= 0:
        return
    mode = fastrnn_ftz_on()
    for t in range(T):
        hp = h0 + b0 * H
        if t > 0:
            hp = Hs + ((t - 1) * B + b0) * H
        cp = NULL
        if cell == FASTRNN_CELL_LSTM:
            cp = c0 + b0 * H
            if t > 0:
                cp = Cs + ((t - 1) * B + b0) * H
        _xw_rows(XW, ids, W_x, b_x, t * B + b0, nb, GH, a)
        if cell == FASTRNN_CELL_GRU:
            # r, z: A += h W_hh[:, :2H];  hn = b_hn + h W_hh[:, 2H:] (kept apart)
            if Gs != NULL:
                hn = Gs + (t * B + b0) * CW + 3 * H
                ldhn = CW
            else:
                hn = whn + b0 * H
                ldhn = H
            _pgemm(nb, 2 * H, H, hp, H, Wp, a, GH, 1, NULL)
            _pgemm(nb, H, H, hp, H, Wpn, hn, ldhn, 0, b_hn)
        else:
            _pgemm(nb, GH, H, hp, H, Wp, a, GH, 1, NULL)
            ldhn = 0
        for r in range(nb):
            g = (Gs + (t * B + b0 + r) * CW) if Gs != NULL else NULL
            _cell_fwd(cell, nonlin, H, H, a + r * GH, (hn + r * ldhn) if hn != NULL else NULL,
                      hp + r * H, (cp + r * H) if cp != NULL else NULL,
                      Hs + (t * B + b0 + r) * H,
                      (Cs + (t * B + b0 + r) * H) if Cs != NULL else NULL, g, wk)
    fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# backward time loop of one batch chunk

cdef void _backward_chunk(
        int cell, int nonlin,
        floating* dHs,             # IN/WORK (T, B, H) dL/dh_t from above; overwritten
        const floating* Hs,        # IN  (T, B, H)
        const floating* Cs,        # IN  (T, B, H) LSTM, else NULL
        const floating* Gs,        # IN  (T, B, 4H) gate cache (GRU, LSTM), else NULL
        const floating* h0,        # IN  (B, H)
        const floating* c0,        # IN  (B, H) LSTM, else NULL
        const floating* WpT,       # IN  W_hh^T (GRU: of its r, z columns) packed
        const floating* WpTn,      # IN  GRU: W_hh[:, 2H:]^T packed, else NULL
        floating* dA,              # OUT (T, B, G*H)
        floating* dAn,             # OUT (T, B, H) GRU dL/dhn, else NULL
        floating* dh0,             # OUT (B, H): the carried dL/dh_{t-1}, dL/dh0 at the end
        floating* dc0,             # OUT (B, H): LSTM's carried dL/dc_{t-1}, else NULL
        floating* wk,              # WORK (H,) this thread's
        floating* wda,             # WORK (4H,) this thread's, with inplace
        bint inplace,              # dA is Gs: each row's [dA | GRU's dAn] goes over its
                                   # cache row once that is read (dAn is then unused)
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
        Py_ssize_t b0, Py_ssize_t b1) noexcept nogil:
    """Steps T-1 down to 0 of BPTT for batch rows [b0, b1) (B >= 2; one sequence:
    _backward_part)."""
    cdef Py_ssize_t t, r, i, nb = b1 - b0, G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t CW = fastrnn_cell_cache_width(cell, H)
    cdef Py_ssize_t lda = CW if inplace else GH, ldn = CW if inplace else H
    cdef floating* dhc = dh0 + b0 * H
    cdef floating* dcc = (dc0 + b0 * H) if dc0 != NULL else NULL
    cdef floating* dh
    cdef floating* da
    cdef const floating* hp
    cdef const floating* cp
    cdef fastrnn_fpmode_t mode
    if nb <= 0:
        return
    mode = fastrnn_ftz_on()
    memset(dhc, 0, nb * H * sizeof(floating))
    if dcc != NULL:
        memset(dcc, 0, nb * H * sizeof(floating))
    t = T - 1
    while t >= 0:
        dh = dHs + (t * B + b0) * H
        da = dA + (t * B + b0) * lda
        for i in range(nb * H):             # all of dL/dh_t
            dh[i] = dh[i] + dhc[i]
        hp = h0 + b0 * H
        if t > 0:
            hp = Hs + ((t - 1) * B + b0) * H
        cp = NULL
        if cell == FASTRNN_CELL_LSTM:
            cp = c0 + b0 * H
            if t > 0:
                cp = Cs + ((t - 1) * B + b0) * H
        for r in range(nb):
            _cell_bwd(cell, nonlin, H, H, dh + r * H, Hs + (t * B + b0 + r) * H, hp + r * H,
                      (Cs + (t * B + b0 + r) * H) if Cs != NULL else NULL,
                      (cp + r * H) if cp != NULL else NULL,
                      (Gs + (t * B + b0 + r) * CW) if Gs != NULL else NULL,
                      (dcc + r * H) if dcc != NULL else NULL,
                      wda if inplace else da + r * GH,
                      (wda + GH) if inplace and cell == FASTRNN_CELL_GRU else
                      (dAn + (t * B + b0 + r) * H) if dAn != NULL else NULL,
                      dhc + r * H, wk)
            if inplace:                     # the row's cache has been read: overwrite
                memcpy(da + r * lda, wda, CW * sizeof(floating))
        # dL/dh_{t-1} = dA_rec_t W_hh^T (+ dh_t * z_t for GRU, left in dhc above)
        if cell == FASTRNN_CELL_GRU:
            _pgemm(nb, H, 2 * H, da, lda, WpT, dhc, H, 1, NULL)
            _pgemm(nb, H, H, (da + 3 * H) if inplace else dAn + (t * B + b0) * H, ldn, WpTn,
                   dhc, H, 1, NULL)
        else:
            _pgemm(nb, H, GH, da, lda, WpT, dhc, H, 0, NULL)
        t -= 1
    fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# one sequence (B = 1): one-row products on W_hh in place, each step's hidden units
# in two parts that two threads claim (csrc/_steps.h), as fastrnn._rnn does for the
# Elman cell. The packed kernel would compute a whole tile of rows for one row.

cdef inline void _rec_part(int cell, const floating* hp, const floating* W_hh, floating* a,
                           floating* hn, Py_ssize_t H, Py_ssize_t j0,
                           Py_ssize_t j1) noexcept nogil:
    """Units [j0, j1) of every gate: a += hp W_hh (GRU: its n gate into hn instead),
    gate by gate, each from the part's first unit (_vecmat's blocks of 64 columns then
    fall alike whether the row is cut in parts on a multiple of 64 or not)."""
    cdef Py_ssize_t g, G = fastrnn_cell_gates(cell), GH = G * H, nj = j1 - j0
    for g in range(G):
        if cell == FASTRNN_CELL_GRU and g == 2:
            _vecmat(hp, W_hh + 2 * H + j0, GH, hn + j0, H, nj, 1)
        else:
            _vecmat(hp, W_hh + g * H + j0, GH, a + g * H + j0, H, nj, 1)


cdef void _forward_part(
        int cell, int nonlin,
        const floating* XW,        # IN  (T, G*H), or NULL with ids
        const int32_t* ids,        # IN  (T,) token ids, or NULL (as _forward_chunk)
        const floating* W_x,       # IN  (D, G*H) with ids
        const floating* b_x,       # IN  (G*H,) with ids
        const floating* W_hh,      # IN  (H, G*H)
        const floating* b_hn,      # IN  (H,) GRU, else NULL
        const floating* h0,        # IN  (H,)
        const floating* c0,        # IN  (H,) LSTM, else NULL
        floating* Hs,              # OUT (T, H)
        floating* Cs,              # OUT (T, H) LSTM, else NULL
        floating* Gs,              # OUT (T, 4H) or NULL
        floating* wa,              # WORK (G*H,) shared by the parts (disjoint units)
        floating* whn,             # WORK (H,) GRU hn when Gs is NULL
        floating* wk,              # WORK (4H,) this thread's
        Py_ssize_t t, Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Hidden units [j0, j1) of step t of one sequence."""
    cdef Py_ssize_t g, i, G = fastrnn_cell_gates(cell), GH = G * H, nj = j1 - j0
    cdef Py_ssize_t CW = fastrnn_cell_cache_width(cell, H)
    cdef const floating* w
    cdef const floating* hp = h0
    cdef const floating* cp = NULL
    cdef floating* gc = (Gs + t * CW) if Gs != NULL else NULL
    cdef floating* hn = NULL
    if nj <= 0:
        return
    if t > 0:
        hp = Hs + (t - 1) * H
    if cell == FASTRNN_CELL_LSTM:
        cp = c0
        if t > 0:
            cp = Cs + (t - 1) * H
    for g in range(G):
        if ids == NULL:
            memcpy(wa + g * H + j0, XW + t * GH + g * H + j0, nj * sizeof(floating))
        else:                           # as gather_rows: one add
            w = W_x + <Py_ssize_t>ids[t] * GH + g * H
            for i in range(j0, j1):
                wa[g * H + i] = w[i] + b_x[g * H + i]
    if cell == FASTRNN_CELL_GRU:
        hn = (gc + 3 * H) if gc != NULL else whn
        memcpy(hn + j0, b_hn + j0, nj * sizeof(floating))
    _rec_part(cell, hp, W_hh, wa, hn, H, j0, j1)
    _cell_fwd(cell, nonlin, nj, H, wa + j0, (hn + j0) if hn != NULL else NULL, hp + j0,
              (cp + j0) if cp != NULL else NULL, Hs + t * H + j0,
              (Cs + t * H + j0) if Cs != NULL else NULL, (gc + j0) if gc != NULL else NULL,
              wk + j0)


cdef void _forward_split(
        int cell, int nonlin, const floating* XW, const int32_t* ids, const floating* W_x,
        const floating* b_x, const floating* W_hh,
        const floating* b_hn, const floating* h0, const floating* c0, floating* Hs,
        floating* Cs, floating* Gs, floating* wa, floating* whn,
        floating* wk,              # WORK (4H,) this thread's
        Py_ssize_t T, Py_ssize_t H, Py_ssize_t cut,
        int me,                    # this thread's own part (0 or 1)
        fastrnn_steps_t* steps) noexcept nogil:
    """One sequence on two threads: each step's units [0, cut) and [cut, H) are
    computed by whichever thread claims them (its own part first); a thread running
    alone computes every step. cut is 0 or H for a serial run."""
    cdef int t = 0, i, k
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    while True:
        t = fastrnn_steps_next(steps, t)
        if t >= T:
            break
        if t > 0:
            fastrnn_steps_wait(steps, t - 1)    # h_{t-1} complete
        for i in range(2):
            k = me ^ i
            if fastrnn_steps_claim(steps, k, t):
                _forward_part(cell, nonlin, XW, ids, W_x, b_x, W_hh, b_hn, h0, c0, Hs, Cs,
                              Gs, wa, whn, wk, t, H, cut if k else 0, H if k else cut)
                fastrnn_steps_done(steps, k, t)
        t += 1
    fastrnn_fp_restore(mode)


cdef void _backward_part(
        int cell, int nonlin,
        floating* dHs,             # IN/WORK (T, H)
        const floating* Hs, const floating* Cs, const floating* Gs,
        const floating* h0, const floating* c0,
        const floating* W_hh,      # IN  (H, G*H)
        floating* dA,              # OUT (T, G*H)
        floating* dAn,             # OUT (T, H) GRU, else NULL
        floating* dh,              # OUT (H,) carried dL/dh_t; dL/dh0 after stage T
        floating* dc,              # OUT (H,) LSTM carried dL/dc_t; dL/dc0 at the end
        floating* wrec,            # WORK (2, G*H) GRU: dA_rec of the last two stages
        floating* wk,              # WORK (2H,) this thread's
        floating* wda,             # WORK (4H,) this thread's, with inplace
        bint inplace,              # dA is Gs ([dA | GRU's dAn] rows; dAn unused)
        Py_ssize_t s, Py_ssize_t T, Py_ssize_t H, Py_ssize_t i0,
        Py_ssize_t i1) noexcept nogil:
    """Units [i0, i1) of stage s of one sequence's BPTT: stage s takes t = T-1-s,
    forms dL/dh_t[i0:i1] (the recurrent part: W_hh[i0:i1] dA_rec_{t+1}, which needs
    every unit of stage s-1), then dA_t of those units. Stage T leaves dL/dh0."""
    cdef Py_ssize_t i, g, G = fastrnn_cell_gates(cell), GH = G * H, ni = i1 - i0
    cdef Py_ssize_t t = T - 1 - s, CW = fastrnn_cell_cache_width(cell, H)
    cdef Py_ssize_t lda = CW if inplace else GH
    cdef floating* dan_t = NULL         # GRU: row t of dL/dhn
    cdef const floating* hp
    cdef const floating* cp = NULL
    cdef floating* d
    cdef floating* x
    if ni <= 0:
        return
    if s == 0:
        memset(dh + i0, 0, ni * sizeof(floating))
        if dc != NULL:
            memset(dc + i0, 0, ni * sizeof(floating))
    elif cell == FASTRNN_CELL_GRU:       # dh holds dh_{t+1} z_{t+1} (stage s-1)
        _vecmatT(wrec + ((s - 1) % 2) * GH, W_hh + i0 * GH, wk + H + i0, ni, GH)
        for i in range(i0, i1):
            dh[i] = dh[i] + wk[H + i]
    else:
        _vecmatT(dA + (t + 1) * lda, W_hh + i0 * GH, dh + i0, ni, GH)
    if s == T:
        return
    if cell == FASTRNN_CELL_GRU:
        dan_t = (dA + t * lda + 3 * H) if inplace else (dAn + t * H)
    d = dHs + t * H
    for i in range(i0, i1):
        d[i] = d[i] + dh[i]
    hp = h0
    if t > 0:
        hp = Hs + (t - 1) * H
    if cell == FASTRNN_CELL_LSTM:
        cp = c0
        if t > 0:
            cp = Cs + (t - 1) * H
    _cell_bwd(cell, nonlin, ni, H, d + i0, Hs + t * H + i0, hp + i0,
              (Cs + t * H + i0) if Cs != NULL else NULL, (cp + i0) if cp != NULL else NULL,
              (Gs + t * CW + i0) if Gs != NULL else NULL, (dc + i0) if dc != NULL else NULL,
              (wda + i0) if inplace else (dA + t * GH + i0),
              ((wda + GH + i0) if inplace else (dan_t + i0)) if cell == FASTRNN_CELL_GRU
              else NULL, dh + i0, wk + i0)
    if inplace:                          # this part's cache columns have been read
        for g in range(CW // H):
            memcpy(dA + t * lda + g * H + i0, wda + g * H + i0, ni * sizeof(floating))
    if cell == FASTRNN_CELL_GRU:         # dA_rec_t = [dA_r, dA_z, dAn] for stage s+1
        x = wrec + (s % 2) * GH
        memcpy(x + i0, dA + t * lda + i0, ni * sizeof(floating))
        memcpy(x + H + i0, dA + t * lda + H + i0, ni * sizeof(floating))
        memcpy(x + 2 * H + i0, dan_t + i0, ni * sizeof(floating))


cdef void _backward_split(
        int cell, int nonlin, floating* dHs, const floating* Hs, const floating* Cs,
        const floating* Gs, const floating* h0, const floating* c0, const floating* W_hh,
        floating* dA, floating* dAn, floating* dh, floating* dc, floating* wrec,
        floating* wk,              # WORK (2H,) this thread's
        floating* wda,             # WORK (G*H,) this thread's, with inplace
        bint inplace,
        Py_ssize_t T, Py_ssize_t H, Py_ssize_t cut, int me,
        fastrnn_steps_t* steps) noexcept nogil:
    """One sequence's T + 1 stages on two threads, parts claimed as in forward."""
    cdef int s = 0, i, k
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    while True:
        s = fastrnn_steps_next(steps, s)
        if s > T:
            break
        if s > 0:
            fastrnn_steps_wait(steps, s - 1)    # dA_{t+1} complete
        for i in range(2):
            k = me ^ i
            if fastrnn_steps_claim(steps, k, s):
                _backward_part(cell, nonlin, dHs, Hs, Cs, Gs, h0, c0, W_hh, dA, dAn, dh, dc,
                               wrec, wk, wda, inplace, s, T, H, cut if k else 0,
                               H if k else cut)
                fastrnn_steps_done(steps, k, s)
        s += 1
    fastrnn_fp_restore(mode)


# One sequence splits each step across two threads when a step has at least this much
# work (G * H * H multiply-adds; _rnn's rule for the Elman cell is H >= 125).
cdef Py_ssize_t SPLIT_MIN_WORK = 15625


def set_split_min_work(Py_ssize_t work):
    """Set the per-step work (G*H*H) from which one sequence (B = 1) is split across
    two threads; returns the old value (tests set 0 to split every size). Results
    do not depend on it."""
    global SPLIT_MIN_WORK
    old = SPLIT_MIN_WORK
    SPLIT_MIN_WORK = work
    return old


cdef inline bint _split(int cell, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                        int num_threads) noexcept nogil:
    return (FASTRNN_OMP_ENABLED and B == 1 and num_threads >= 2 and T < 2147483647
            and fastrnn_cell_gates(cell) * H * H >= SPLIT_MIN_WORK)


# ---------------------------------------------------------------------------
# argument checking (the Python driver validates first; this keeps C safe)

cdef int _check_cell(int cell, int nonlin) except -1:
    if cell != FASTRNN_CELL_RNN and cell != FASTRNN_CELL_GRU and cell != FASTRNN_CELL_LSTM:
        raise ValueError(f"cell must be CELL_RNN (0), CELL_GRU (1) or CELL_LSTM (2), got {cell}")
    if nonlin != FASTRNN_NONLIN_TANH and nonlin != FASTRNN_NONLIN_RELU:
        raise ValueError(f"nonlin must be NONLIN_TANH (0) or NONLIN_RELU (1), got {nonlin}")
    if cell != FASTRNN_CELL_RNN and nonlin != FASTRNN_NONLIN_TANH:
        raise ValueError("nonlin applies to CELL_RNN only; gated cells take NONLIN_TANH")
    return 0


cdef str _nm(object name):
    """An argument's name: a str, or (k, name) for layer k's parameter (formatted only
    for an error message)."""
    return name if isinstance(name, str) else f"layers[{name[0]}] {name[1]}"


cdef object _arr(object name, object a, object dtype, tuple shape, bint out, list seen):
    """a checked as a C-contiguous, aligned ndarray of dtype (a numpy.dtype) and shape
    (writable when out); outputs must not overlap any other buffer (checked by
    _no_overlap once every argument is in seen). Returns a."""
    cdef uintptr_t lo
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape
            and a.flags.c_contiguous and a.flags.aligned and (a.flags.writeable or not out)):
        _arr_error(_nm(name), a, dtype, shape, out)
    lo = _addr(a)
    seen.append((name, lo, lo + <uintptr_t>a.nbytes, out))
    return a


cdef int _arr_error(str name, object a, object dtype, tuple shape, bint out) except -1:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype.name}, got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not a.flags.c_contiguous or not a.flags.aligned:
        raise ValueError(f"{name} must be C-contiguous and aligned")
    raise ValueError(f"{name} must be writable")


cdef int _no_overlap(list seen) except -1:
    """No output buffer shares a byte with another buffer (inputs may overlap each
    other: they can all be views of one flat parameter vector)."""
    cdef Py_ssize_t i, j, n = len(seen)
    cdef uintptr_t lo1, hi1, lo2, hi2
    cdef bint o1, o2
    for i in range(n):
        _, lo1, hi1, o1 = seen[i]
        if not o1 or lo1 == hi1:
            continue
        for j in range(n):
            _, lo2, hi2, o2 = seen[j]
            if j != i and lo2 < hi1 and lo1 < hi2 and (j > i or not o2):
                raise ValueError(f"{_nm(seen[i][0])} must not overlap {_nm(seen[j][0])}")
    return 0


cdef object _opt(object name, object a, bint needed, str when, object dtype, tuple shape,
                 bint out, list seen):
    """An argument that is given exactly when needed (else None)."""
    if needed:
        if a is None:
            raise ValueError(f"{_nm(name)} is required {when}")
        return _arr(name, a, dtype, shape, out, seen)
    if a is not None:
        raise ValueError(f"{_nm(name)} must be None except {when}")
    return None


cdef uintptr_t _addr(object a) except? 0:
    """Data pointer of a checked C-contiguous ndarray (0 for None or an empty one),
    through the buffer protocol (numpy's __array_interface__ builds a dict: several
    microseconds, per array, per call)."""
    cdef Py_buffer view
    cdef uintptr_t p
    if a is None:
        return 0
    PyObject_GetBuffer(a, &view, PyBUF_C_CONTIGUOUS)
    p = <uintptr_t>view.buf if view.len > 0 else 0
    PyBuffer_Release(&view)   # the caller's array keeps the memory alive
    return p


cdef floating* _alloc(Py_ssize_t n, floating dummy) except NULL:
    cdef floating* p = <floating*>malloc((n if n > 0 else 1) * sizeof(floating))
    if p == NULL:
        raise MemoryError(f"cannot allocate {n * sizeof(floating)} bytes of kernel workspace")
    return p


cdef inline int _nchunks(int num_threads, Py_ssize_t B) noexcept nogil:
    """One chunk of rows per thread (results do not depend on this)."""
    cdef int n = num_threads if FASTRNN_OMP_ENABLED else 1
    if n > B:
        n = <int>B
    return n if n >= 1 else 1


# ---------------------------------------------------------------------------
# Python entry points

def layer_forward(int cell, int nonlin, XW, W_hh, b_hn, h0, c0, Hs, Cs, Gs,
                  int num_threads):
    """Recurrent time loop of one layer: fills Hs (and Cs, Gs).

    Parameters (T steps, B rows, H units, G gates; all arrays C-contiguous, one
    float dtype)::

        cell, nonlin  CELL_RNN | CELL_GRU | CELL_LSTM; NONLIN_TANH | NONLIN_RELU (rnn)
        XW    (T, B, G*H)  IN   x_t W_xh + b_h for every step
        W_hh  (H, G*H)     IN
        b_hn  (H,)         IN   GRU only, else None
        h0    (B, H)       IN
        c0    (B, H)       IN   LSTM only, else None
        Hs    (T, B, H)    OUT  h_t
        Cs    (T, B, H)    OUT  LSTM c_t, else None
        Gs    (T, B, gate_cache_width(cell, H))  OUT  what layer_backward needs
                           (GRU r, z, n, hn; LSTM i, f, g, o); None for rnn, and
                           may be None for GRU/LSTM when no backward follows
        num_threads        >= 1; the results do not depend on it
    """
    return _layer_forward(cell, nonlin, XW, None, None, None, W_hh, b_hn, h0, c0, Hs, Cs,
                          Gs, num_threads)


def layer_forward_ids(int cell, int nonlin, ids, W_xh, b_h, W_hh, b_hn, h0, c0, Hs, Cs, Gs,
                      int num_threads):
    """layer_forward of a layer whose input is token ids: the input projection
    XW_t = W_xh[ids_t] + b_h is gathered into each step's pre-activations inside the
    time loop instead of being stored whole (T*B*G*H values written, then read once).
    The results are bitwise those of gather_rows followed by layer_forward.

        ids   (T, B) int32 in [0, D)   IN
        W_xh  (D, G*H)                 IN
        b_h   (G*H,)                   IN
        (the rest as layer_forward)
    """
    return _layer_forward(cell, nonlin, None, ids, W_xh, b_h, W_hh, b_hn, h0, c0, Hs, Cs,
                          Gs, num_threads)


cdef object _layer_forward(int cell, int nonlin, XW, ids, W_xh, b_h, W_hh, b_hn, h0, c0,
                           Hs, Cs, Gs, int num_threads):
    _check_cell(cell, nonlin)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not isinstance(W_hh, np.ndarray) or W_hh.ndim != 2:
        raise ValueError("W_hh must be a (H, G*H) numpy.ndarray")
    cdef Py_ssize_t G = fastrnn_cell_gates(cell)
    cdef Py_ssize_t T, B, D = 0, H = W_hh.shape[0]
    if ids is None:
        if not isinstance(XW, np.ndarray) or XW.ndim != 3:
            raise ValueError("XW must be a (T, B, G*H) numpy.ndarray")
        if XW.dtype != np.float32 and XW.dtype != np.float64:
            raise ValueError(f"XW must be float32 or float64, got {XW.dtype}")
        dt = XW.dtype
        T, B = XW.shape[0], XW.shape[1]
    else:
        if not isinstance(ids, np.ndarray) or ids.ndim != 2:
            raise ValueError("ids must be a (T, B) int32 numpy.ndarray")
        if not isinstance(W_xh, np.ndarray) or W_xh.ndim != 2:
            raise ValueError("W_xh must be a (D, G*H) numpy.ndarray")
        dt = _float_dtype("W_xh", W_xh)
        T, B, D = ids.shape[0], ids.shape[1], W_xh.shape[0]
    gru, lstm = cell == FASTRNN_CELL_GRU, cell == FASTRNN_CELL_LSTM
    seen = []
    if ids is None:
        _arr("XW", XW, dt, (T, B, G * H), False, seen)
    else:
        _arr("ids", ids, _I32, (T, B), False, seen)
        _check_ids("ids", ids.reshape(T * B), T * B, D, [])
        _arr("W_xh", W_xh, dt, (D, G * H), False, seen)
        _arr("b_h", b_h, dt, (G * H,), False, seen)
    _arr("W_hh", W_hh, dt, (H, G * H), False, seen)
    _opt("b_hn", b_hn, gru, "with CELL_GRU", dt, (H,), False, seen)
    _arr("h0", h0, dt, (B, H), False, seen)
    _opt("c0", c0, lstm, "with CELL_LSTM", dt, (B, H), False, seen)
    _arr("Hs", Hs, dt, (T, B, H), True, seen)
    _opt("Cs", Cs, lstm, "with CELL_LSTM", dt, (T, B, H), True, seen)
    if Gs is not None or cell == FASTRNN_CELL_RNN:
        _opt("Gs", Gs, cell != FASTRNN_CELL_RNN, "with CELL_GRU or CELL_LSTM", dt,
             (T, B, fastrnn_cell_cache_width(cell, H)), True, seen)
    _no_overlap(seen)
    if T == 0 or B == 0 or H == 0:
        return
    if dt == np.float32:
        _forward_run(cell, nonlin, <float*>_addr(XW), <int32_t*>_addr(ids),
                     <float*>_addr(W_xh), <float*>_addr(b_h), <float*>_addr(W_hh),
                     <float*>_addr(b_hn), <float*>_addr(h0), <float*>_addr(c0),
                     <float*>_addr(Hs), <float*>_addr(Cs), <float*>_addr(Gs),
                     T, B, H, num_threads)
    else:
        _forward_run(cell, nonlin, <double*>_addr(XW), <int32_t*>_addr(ids),
                     <double*>_addr(W_xh), <double*>_addr(b_h), <double*>_addr(W_hh),
                     <double*>_addr(b_hn), <double*>_addr(h0), <double*>_addr(c0),
                     <double*>_addr(Hs), <double*>_addr(Cs), <double*>_addr(Gs),
                     T, B, H, num_threads)


cdef int _forward_run(int cell, int nonlin, const floating* XW, const int32_t* ids,
                      const floating* W_x, const floating* b_x, const floating* W_hh,
                      const floating* b_hn, const floating* h0, const floating* c0,
                      floating* Hs, floating* Cs, floating* Gs,
                      Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, int num_threads) except -1:
    cdef Py_ssize_t G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t nr = _pack_width(<floating>0)
    cdef Py_ssize_t Gr = 2 if cell == FASTRNN_CELL_GRU else G    # gates in the first pack
    cdef Py_ssize_t n1 = _packed_size(H, Gr * H, <floating>0)
    cdef Py_ssize_t n2 = _packed_size(H, H, <floating>0) if cell == FASTRNN_CELL_GRU else 0
    cdef int nc = _nchunks(num_threads, B), c, tid = 0
    cdef bint one = B == 1              # one sequence: W_hh read in place, not packed
    cdef bint split = _split(cell, T, B, H, num_threads)
    cdef Py_ssize_t cut = fastrnn_split_point(H) if split else H
    cdef fastrnn_steps_t steps
    cdef fastrnn_fpmode_t mode
    if one:
        n1 = n2 = 0
        nc = 2                          # two threads' work rows
    # one buffer: packed W_hh (first Gr gates, then GRU's n columns), the step's
    # pre-activations (B, G*H), GRU's hn (B, H), and each thread's 4H work row
    cdef Py_ssize_t total = n1 + n2 + B * GH + B * H + nc * 4 * H
    cdef floating* buf = _alloc(total, <floating>0)
    cdef floating* Wp = buf
    cdef floating* Wpn = buf + n1
    cdef floating* wa = buf + n1 + n2
    cdef floating* whn = wa + B * GH
    cdef floating* wk = whn + B * H
    try:
        with nogil:
            if split:
                fastrnn_steps_init(&steps)
                with parallel(num_threads=2):
                    tid = fastrnn_omp_thread_id() & 1
                    _forward_split(cell, nonlin, XW, ids, W_x, b_x, W_hh, b_hn, h0, c0, Hs, Cs,
                                   Gs, wa, whn, wk + tid * 4 * H, T, H, cut, tid, &steps)
            elif one:
                mode = fastrnn_ftz_on()
                for c in range(T):
                    _forward_part(cell, nonlin, XW, ids, W_x, b_x, W_hh, b_hn, h0, c0, Hs, Cs,
                                  Gs, wa, whn, wk, c, H, 0, H)
                fastrnn_fp_restore(mode)
            else:
                _pack(W_hh, GH, 0, H, Gr * H, nr, Wp)
                if cell == FASTRNN_CELL_GRU:
                    _pack(W_hh + 2 * H, GH, 0, H, H, nr, Wpn)
                for c in prange(nc, num_threads=nc, schedule='static'):
                    _forward_chunk(cell, nonlin, XW, ids, W_x, b_x, Wp,
                                   Wpn if cell == FASTRNN_CELL_GRU else NULL, b_hn, h0, c0,
                                   Hs, Cs, Gs, wa, whn, wk + c * 4 * H, T, B, H,
                                   (B * c) // nc, (B * (c + 1)) // nc)
    finally:
        free(buf)
    return 0


def layer_backward(int cell, int nonlin, dHs, Hs, Cs, Gs, h0, c0, W_hh, dA, dAn_rec,
                   dh0, dc0, int num_threads):
    """Backpropagation through the time loop of one layer: fills dA (and dAn_rec,
    dh0, dc0).

    Parameters (as layer_forward's; Hs, Cs, Gs are its outputs)::

        dHs      (T, B, H)    IN   dL/dh_t from above (head or next layer); overwritten
        Hs       (T, B, H)    IN
        Cs       (T, B, H)    IN   LSTM only, else None
        Gs       (T, B, gate_cache_width(cell, H))  IN  GRU/LSTM, else None
        h0, c0   (B, H)       IN   (c0 LSTM only, else None)
        W_hh     (H, G*H)     IN
        dA       (T, B, G*H)  OUT  dL/d(pre-activation) of every gate = dL/dXW. It may
                                   be Gs itself (the same array; GRU: dAn_rec too):
                                   each row's dA (GRU: [dA | dAn_rec]) is written over
                                   its gate cache row once that is read (saves a
                                   (T, B, 4H) array)
        dAn_rec  (T, B, H)    OUT  GRU only: dL/dhn (= dA_n * r), else None
        dh0      (B, H)       OUT
        dc0      (B, H)       OUT  LSTM only, else None

    The caller forms the weight gradients: dW_hh = H_prev^T dA_rec with dA_rec = dA
    (GRU: its n block replaced by dAn_rec), db_hn = sum dAn_rec, and from dA those
    of W_xh, b_h and the layer input.
    """
    _check_cell(cell, nonlin)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not isinstance(dHs, np.ndarray) or dHs.ndim != 3:
        raise ValueError("dHs must be a (T, B, H) numpy.ndarray")
    if dHs.dtype != np.float32 and dHs.dtype != np.float64:
        raise ValueError(f"dHs must be float32 or float64, got {dHs.dtype}")
    dt = dHs.dtype
    cdef Py_ssize_t G = fastrnn_cell_gates(cell)
    cdef Py_ssize_t T = dHs.shape[0], B = dHs.shape[1], H = dHs.shape[2]
    gru, lstm = cell == FASTRNN_CELL_GRU, cell == FASTRNN_CELL_LSTM
    # dA may be Gs itself (LSTM; GRU with dAn_rec Gs too): [dA | dAn] rows over the cache
    cdef bint inplace = (lstm or gru) and dA is not None and dA is Gs and (
        not gru or dAn_rec is Gs)
    seen = []
    _arr("dHs", dHs, dt, (T, B, H), True, seen)
    _arr("Hs", Hs, dt, (T, B, H), False, seen)
    _opt("Cs", Cs, lstm, "with CELL_LSTM", dt, (T, B, H), False, seen)
    _opt("Gs", Gs, cell != FASTRNN_CELL_RNN, "with CELL_GRU or CELL_LSTM", dt,
         (T, B, fastrnn_cell_cache_width(cell, H)), False, seen)
    _arr("h0", h0, dt, (B, H), False, seen)
    _opt("c0", c0, lstm, "with CELL_LSTM", dt, (B, H), False, seen)
    _arr("W_hh", W_hh, dt, (H, G * H), False, seen)
    if inplace:                         # Gs (checked above, in seen) must be writeable too
        _arr("dA", dA, dt, (T, B, fastrnn_cell_cache_width(cell, H)), True, [])
    else:
        _arr("dA", dA, dt, (T, B, G * H), True, seen)
        _opt("dAn_rec", dAn_rec, gru, "with CELL_GRU", dt, (T, B, H), True, seen)
    _arr("dh0", dh0, dt, (B, H), True, seen)
    _opt("dc0", dc0, lstm, "with CELL_LSTM", dt, (B, H), True, seen)
    _no_overlap(seen)
    if B == 0 or H == 0:
        return
    if T == 0:
        dh0[...] = 0
        if dc0 is not None:
            dc0[...] = 0
        return
    if dt == np.float32:
        _backward_run(cell, nonlin, <float*>_addr(dHs), <float*>_addr(Hs), <float*>_addr(Cs),
                      <float*>_addr(Gs), <float*>_addr(h0), <float*>_addr(c0),
                      <float*>_addr(W_hh), <float*>_addr(dA),
                      NULL if inplace else <float*>_addr(dAn_rec),
                      <float*>_addr(dh0), <float*>_addr(dc0), T, B, H, num_threads, inplace)
    else:
        _backward_run(cell, nonlin, <double*>_addr(dHs), <double*>_addr(Hs),
                      <double*>_addr(Cs), <double*>_addr(Gs), <double*>_addr(h0),
                      <double*>_addr(c0), <double*>_addr(W_hh), <double*>_addr(dA),
                      NULL if inplace else <double*>_addr(dAn_rec), <double*>_addr(dh0),
                      <double*>_addr(dc0), T, B, H, num_threads, inplace)


cdef int _backward_run(int cell, int nonlin, floating* dHs, const floating* Hs,
                       const floating* Cs, const floating* Gs, const floating* h0,
                       const floating* c0, const floating* W_hh, floating* dA, floating* dAn,
                       floating* dh0, floating* dc0, Py_ssize_t T, Py_ssize_t B,
                       Py_ssize_t H, int num_threads, bint inplace) except -1:
    cdef Py_ssize_t G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t nr = _pack_width(<floating>0)
    cdef Py_ssize_t Gr = 2 if cell == FASTRNN_CELL_GRU else G
    cdef Py_ssize_t n1 = _packed_size(Gr * H, H, <floating>0)
    cdef Py_ssize_t n2 = _packed_size(H, H, <floating>0) if cell == FASTRNN_CELL_GRU else 0
    cdef int nc = _nchunks(num_threads, B), c, tid = 0
    cdef bint one = B == 1              # one sequence: W_hh read in place, not packed
    cdef bint split = _split(cell, T, B, H, num_threads)
    cdef Py_ssize_t cut = fastrnn_split_point(H) if split else H
    cdef fastrnn_steps_t steps
    cdef fastrnn_fpmode_t mode
    if one:
        n1 = n2 = 0
        nc = 2                          # two threads' work rows
    # packed W_hh^T, each thread's 2H work row, GRU's two dA_rec rows (one sequence),
    # each thread's dA row (inplace)
    cdef Py_ssize_t nw = fastrnn_cell_cache_width(cell, H) if inplace else 0
    cdef floating* buf = _alloc(n1 + n2 + nc * 2 * H + 2 * GH + nc * nw, <floating>0)
    cdef floating* WpT = buf
    cdef floating* WpTn = buf + n1
    cdef floating* wk = buf + n1 + n2
    cdef floating* wrec = wk + nc * 2 * H
    cdef floating* wda = wrec + 2 * GH
    try:
        with nogil:
            if split:
                fastrnn_steps_init(&steps)
                with parallel(num_threads=2):
                    tid = fastrnn_omp_thread_id() & 1
                    _backward_split(cell, nonlin, dHs, Hs, Cs, Gs, h0, c0, W_hh, dA, dAn, dh0,
                                    dc0, wrec, wk + tid * 2 * H, wda + tid * nw, inplace, T, H,
                                    cut, tid, &steps)
            elif one:
                mode = fastrnn_ftz_on()
                for c in range(T + 1):
                    _backward_part(cell, nonlin, dHs, Hs, Cs, Gs, h0, c0, W_hh, dA, dAn, dh0,
                                   dc0, wrec, wk, wda, inplace, c, T, H, 0, H)
                fastrnn_fp_restore(mode)
            else:
                # W_hh^T (the first Gr gates' columns as rows), GRU: then the n columns'
                _pack(W_hh, GH, 1, Gr * H, H, nr, WpT)
                if cell == FASTRNN_CELL_GRU:
                    _pack(W_hh + 2 * H, GH, 1, H, H, nr, WpTn)
                for c in prange(nc, num_threads=nc, schedule='static'):
                    _backward_chunk(cell, nonlin, dHs, Hs, Cs, Gs, h0, c0, WpT,
                                    WpTn if cell == FASTRNN_CELL_GRU else NULL, dA, dAn, dh0,
                                    dc0, wk + c * 2 * H, wda + c * nw, inplace, T, B, H,
                                    (B * c) // nc, (B * (c + 1)) // nc)
    finally:
        free(buf)
    return 0


# ---------------------------------------------------------------------------
# generation over a stack of layers

from _sampling cimport _xoshiro_next, _draw, _partial_logits


cdef void _gen_part(
        int cell, int nonlin,
        const floating* W_xh,      # IN  (D, G*H) layer 0 (row gather), (H, G*H) above
        const floating* W_hh,      # IN  (H, G*H)
        const floating* b_h,       # IN  (G*H,)
        const floating* b_hn,      # IN  (H,) GRU, else NULL
        int32_t x_id,              # IN  the token (layer 0), when x is NULL
        const floating* x,         # IN  (H,) the layer below's new state, or NULL
        const floating* hp,        # IN  (H,) this layer's state before the step
        const floating* cp,        # IN  (H,) LSTM cell state before, else NULL
        floating* h,               # OUT (H,) units [j0, j1) of the new state (not hp)
        floating* c,               # OUT (H,) LSTM, units [j0, j1) (not cp), else NULL
        floating* a,               # WORK (G*H,) this thread's
        floating* hn,              # WORK (H,) this thread's
        floating* wk,              # WORK (4H,) this thread's
        Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Units [j0, j1) of one step of one layer for one sequence: every gate's columns
    of those units, W_xh's and W_hh's read in place (GRU: W_hh's n columns into hn).
    Products and transcendentals run gate by gate from the part's first unit, as in
    layer_forward's one sequence, so with j0 on a multiple of 64 each unit's value
    is bitwise that of a step done whole (and of layer_forward's one-sequence
    step on the same inputs)."""
    cdef Py_ssize_t j, g, G = fastrnn_cell_gates(cell), GH = G * H, nj = j1 - j0
    cdef const floating* w
    if nj <= 0:
        return
    for g in range(G):
        if x == NULL:
            w = W_xh + <Py_ssize_t>x_id * GH + g * H
            for j in range(j0, j1):
                a[g * H + j] = w[j] + b_h[g * H + j]
        else:
            memcpy(a + g * H + j0, b_h + g * H + j0, nj * sizeof(floating))
            _vecmat(x, W_xh + g * H + j0, GH, a + g * H + j0, H, nj, 1)
    if cell == FASTRNN_CELL_GRU:
        memcpy(hn + j0, b_hn + j0, nj * sizeof(floating))
    _rec_part(cell, hp, W_hh, a, hn, H, j0, j1)
    _cell_fwd(cell, nonlin, nj, H, a + j0, (hn + j0) if cell == FASTRNN_CELL_GRU else NULL,
              hp + j0, (cp + j0) if cp != NULL else NULL, h + j0,
              (c + j0) if c != NULL else NULL, NULL, wk + j0)


cdef inline Py_ssize_t _up64(Py_ssize_t nbytes) noexcept nogil:
    """nbytes rounded up to whole 64-byte cache lines."""
    return (nbytes + 63) // 64 * 64


cdef struct _gen_t:
    # what every thread of a generation reads (set once per call; pointers as
    # addresses so one struct serves float and double)
    int cell
    int nonlin
    Py_ssize_t nL
    const uintptr_t* lp        # (nL, 4) addresses of W_xh, W_hh, b_h, b_hn per layer
    uintptr_t Wq               # (H, Vp) W_hq zero-padded to Vp columns
    uintptr_t bq               # (Vp,)
    uintptr_t hbuf             # (2, nL, H) the state before step s is hbuf[s % 2]
    uintptr_t cbuf             # (2, nL, H) LSTM cell states, else 0
    uintptr_t lsh              # (2, 2, Lp) logit shares of the top state, per parity, part
    uintptr_t logits           # (n, V) OUT or 0
    Py_ssize_t H
    Py_ssize_t V
    Py_ssize_t Vp
    Py_ssize_t Lp
    Py_ssize_t cut             # the parts' boundary (fastrnn_split_point(H))
    double inv_temp
    Py_ssize_t top_k
    double top_p
    bint greedy


cdef void _gen_steps(const _gen_t* q, const int32_t* feed, Py_ssize_t P, int32_t* out,
                     Py_ssize_t S,                # steps (S >= P), sub-steps S * nL < 2^31
                     char* tw,                  # WORK this thread's area (_gen_call)
                     const uint64_t* rng0,      # the sampler's state before the first draw
                     int me, fastrnn_steps_t* steps, floating dummy) noexcept nogil:
    """Steps 0 .. S-1 of a generation: with S = P + n - 1, all but the last draw
    (n - 1), which is left to the caller. By one thread or two. Sub-step u = s * nL + k is layer k of step s; each one's
    hidden units [0, cut) and [cut, H) are two parts claimed as in the training
    kernels (csrc/_steps.h): a thread takes its own part first, then the other if it
    is still free, so a thread alone (me = 0 outside a parallel region) does every
    part. Step s feeds feed[s] (s < P) or draw s - P, which each thread claiming a
    part of layer 0 of step s draws itself, from the logit shares of the state
    before step s, with its own copy of the sampler advanced to that draw: both draw
    the same id. The top layer's parts add their shares of the new state's logits."""
    cdef Py_ssize_t H = q.H, nL = q.nL, GH = fastrnn_cell_gates(q.cell) * H
    cdef Py_ssize_t V = q.V, Vp = q.Vp, Lp = q.Lp, cut = q.cut, fs = sizeof(floating)
    cdef Py_ssize_t U = S * nL, s, k, j0, j1, d, drawn = 0, have = -1
    cdef int u = 0, i, part
    cdef int32_t x = 0
    cdef uint64_t r[4]
    cdef const uintptr_t* lay
    cdef floating* hbuf = <floating*>q.hbuf
    cdef floating* cbuf = <floating*>q.cbuf
    cdef floating* lsh = <floating*>q.lsh
    cdef floating* Wq = <floating*>q.Wq
    cdef floating* bq = <floating*>q.bq
    cdef floating* logits = <floating*>q.logits
    cdef double* ex = <double*>tw
    cdef double* srt = ex + V
    cdef floating* a = <floating*>(tw + _up64(2 * V * sizeof(double)))
    cdef floating* hn = a + GH
    cdef floating* wk = hn + H
    cdef floating* op = wk + 4 * H
    cdef floating* sel = op + Vp
    cdef floating* sh
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    for i in range(4):
        r[i] = rng0[i]
    while True:
        u = fastrnn_steps_next(steps, u)
        if u >= U:
            break
        if u > 0:
            fastrnn_steps_wait(steps, u - 1)    # every state this sub-step reads is done
        s = u // nL
        k = u - s * nL
        lay = q.lp + 4 * k
        for i in range(2):
            part = me ^ i
            if not fastrnn_steps_claim(steps, part, u):
                continue
            if k == 0 and have != s:
                if s < P:
                    x = feed[s]
                else:
                    d = s - P
                    if not q.greedy:
                        while drawn < d:        # skip the draws of steps others took
                            _xoshiro_next(r)
                            drawn += 1
                        drawn += 1              # _draw takes draw d
                    sh = lsh + (s % 2) * 2 * Lp
                    x = _draw(sh, sh + Lp, bq, op, sel, ex, srt, V, Vp, q.inv_temp, q.top_k,
                              q.top_p, q.greedy, r)
                have = s
            if k == 0 and part == 0 and s >= P:
                out[s - P] = x
                if logits != NULL:
                    memcpy(logits + (s - P) * V, op, V * fs)
            j0 = cut if part else 0
            j1 = H if part else cut
            _gen_part(q.cell, q.nonlin, <const floating*>lay[0], <const floating*>lay[1],
                      <const floating*>lay[2], <const floating*>lay[3], x,
                      (hbuf + ((s + 1) % 2 * nL + k - 1) * H) if k > 0 else NULL,
                      hbuf + (s % 2 * nL + k) * H,
                      (cbuf + (s % 2 * nL + k) * H) if cbuf != NULL else NULL,
                      hbuf + ((s + 1) % 2 * nL + k) * H,
                      (cbuf + ((s + 1) % 2 * nL + k) * H) if cbuf != NULL else NULL,
                      a, hn, wk, H, j0, j1)
            if k == nL - 1 and s + 1 >= P:      # the new top state feeds draw s + 1 - P
                _partial_logits(hbuf + ((s + 1) % 2 * nL + k) * H, Wq,
                                lsh + ((s + 1) % 2 * 2 + part) * Lp, j0, j1, Vp)
            fastrnn_steps_done(steps, part, u)
        u += 1
    fastrnn_fp_restore(mode)


# generate_stack splits each step across two threads when a step reads at least this
# many weights (G*H*H; measured on a 2-core Xeon: LSTM H = 96 gains 1.13x, GRU H = 80
# loses 4%, both gain 1.2x at H = 128 and 1.3-1.5x at H = 256) and the run has at least
# this many sub-steps (steps times layers; a parallel region costs a few microseconds)
cdef Py_ssize_t GEN_SPLIT_MIN_WORK = 32768
cdef Py_ssize_t GEN_SPLIT_MIN_STEPS = 32
# sub-steps per piece: the step counters are C ints
cdef Py_ssize_t GEN_PIECE = 1 << 30


def set_gen_split_thresholds(Py_ssize_t min_work, Py_ssize_t min_steps):
    """Set generate_stack's thresholds for splitting across two threads (work G*H*H
    per step, sub-steps per run); returns the old ones (tests set 0, 1 to split every
    run). The ids never depend on them."""
    global GEN_SPLIT_MIN_WORK, GEN_SPLIT_MIN_STEPS
    old = (GEN_SPLIT_MIN_WORK, GEN_SPLIT_MIN_STEPS)
    GEN_SPLIT_MIN_WORK = min_work
    GEN_SPLIT_MIN_STEPS = min_steps
    return old


def _set_gen_piece(Py_ssize_t steps):
    """Set the sub-steps per piece (tests: a long run cut into pieces gives the ids
    of one); returns the old value."""
    global GEN_PIECE
    old = GEN_PIECE
    GEN_PIECE = max(steps, 1)
    return old


def generate_stack(int cell, int nonlin, layers, W_hq, b_q, feed, out, h, c, rng,
                   double temperature, Py_ssize_t top_k, double top_p, bint greedy,
                   int num_threads=1, logits=None):
    """Feed ``feed`` through a stack of layers, then generate ``len(out)`` ids.

    Parameters (L layers, H units, G gates, V classes; arrays C-contiguous, one
    float dtype)::

        cell, nonlin  as layer_forward
        layers   sequence of L tuples (W_xh, W_hh, b_h, b_hn): layer 0's W_xh (D, G*H)
                 is gathered by token id (D >= V), layer k >= 1's is (H, G*H);
                 W_hh (H, G*H), b_h (G*H,), b_hn (H,) for GRU, else None
        W_hq (H, V), b_q (V,)  IN  the head on the top layer
        feed     (P >= 1,) int32  IN   ids fed before the first draw, in [0, D)
        out      (n,) int32       OUT  the generated ids
        h        (L, H)           IN/OUT  the state of every layer
        c        (L, H)           IN/OUT  LSTM cell states, else None
        rng      (4,) uint64      IN/OUT  xoshiro256** state (fastrnn._lm.rng_seed)
        temperature  > 0 (ignored when greedy)
        top_k    0 = all ids, else the top_k largest logits (ties kept)
        top_p    in (0, 1]: nucleus sampling after top_k; 1 = off
        greedy   argmax instead of a draw
        num_threads  with 2 or more (and OpenMP), long enough runs with G*H*H of
                 at least 32,768 split each step's hidden units across two
                 threads; the ids, states, logits and the sampler's state are
                 bitwise those of one thread
        logits   (n, V) OUT or None: the logits each draw was made from

    Each generated id is fed back before the next draw, except the last, so a
    continuation is ``generate_stack(..., feed=out[-1:], h=h, c=c, rng=rng)``
    and pieces give the same ids as one call. It is the sampling loop of every
    model (fastrnn 0.2.0's separate Elman loop, fastrnn._lm.generate, drew the same
    ids).
    """
    _check_cell(cell, nonlin)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not isinstance(W_hq, np.ndarray) or W_hq.ndim != 2:
        raise ValueError("W_hq must be a (H, V) numpy.ndarray")
    if W_hq.dtype != np.float32 and W_hq.dtype != np.float64:
        raise ValueError(f"W_hq must be float32 or float64, got {W_hq.dtype}")
    dt = W_hq.dtype
    cdef Py_ssize_t H = W_hq.shape[0], V = W_hq.shape[1], G = fastrnn_cell_gates(cell)
    cdef Py_ssize_t nL, k, D, P, n
    layers = list(layers)
    nL = len(layers)
    if nL < 1:
        raise ValueError("layers must hold at least one layer")
    if H < 1 or V < 1:
        raise ValueError(f"W_hq must have H >= 1 and V >= 1, got shape {W_hq.shape}")
    seen = []
    _arr("W_hq", W_hq, dt, (H, V), False, seen)
    _arr("b_q", b_q, dt, (V,), False, seen)
    addrs = np.zeros((nL, 4), np.uintp)
    gru = cell == FASTRNN_CELL_GRU
    for k in range(nL):
        lay = layers[k]
        if not isinstance(lay, (tuple, list)) or len(lay) != 4:
            raise ValueError(f"layers[{k}] must be a tuple (W_xh, W_hh, b_h, b_hn)")
        W_xh = lay[0]
        if k == 0:
            if not isinstance(W_xh, np.ndarray) or W_xh.ndim != 2:
                raise ValueError("layers[0]: W_xh must be a (D, G*H) numpy.ndarray")
            D = W_xh.shape[0]
            if D < V:
                raise ValueError(f"layers[0]: W_xh has {D} rows, fewer than V = {V} "
                                 "(generated ids are fed back as its rows)")
        _arr((k, "W_xh"), W_xh, dt, (D if k == 0 else H, G * H), False, seen)
        _arr((k, "W_hh"), lay[1], dt, (H, G * H), False, seen)
        _arr((k, "b_h"), lay[2], dt, (G * H,), False, seen)
        _opt((k, "b_hn"), lay[3], gru, "with CELL_GRU", dt, (H,), False, seen)
        addrs[k, 0] = _addr(W_xh)
        addrs[k, 1] = _addr(lay[1])
        addrs[k, 2] = _addr(lay[2])
        addrs[k, 3] = _addr(lay[3])
    if not isinstance(feed, np.ndarray) or feed.ndim != 1 or feed.shape[0] < 1:
        raise ValueError("feed must be a 1-d numpy.ndarray of at least one id")
    P = feed.shape[0]
    _arr("feed", feed, _I32, (P,), False, seen)
    cdef const int32_t[::1] fd = feed
    for k in range(P):
        if fd[k] < 0 or fd[k] >= D:
            raise ValueError(f"feed ids must be in [0, {D}), got {fd[k]} at {k}")
    if not isinstance(out, np.ndarray) or out.ndim != 1:
        raise ValueError("out must be a 1-d int32 numpy.ndarray")
    n = out.shape[0]
    _arr("out", out, _I32, (n,), True, seen)
    _arr("h", h, dt, (nL, H), True, seen)
    _opt("c", c, cell == FASTRNN_CELL_LSTM, "with CELL_LSTM", dt, (nL, H), True, seen)
    _arr("rng", rng, _U64, (4,), True, seen)
    if logits is not None:
        _arr("logits", logits, dt, (n, V), True, seen)
    _no_overlap(seen)
    if n == 0:
        return
    if P + n >= (1 << 62):
        raise ValueError("too many steps")
    if dt == np.float32:
        _gen_call(cell, nonlin, addrs, W_hq, b_q, feed, out, h, c, rng, logits,
                  <float*>_addr(W_hq), <float*>_addr(b_q), <float*>_addr(h), <float*>_addr(c),
                  <float*>_addr(logits), H, V, temperature, top_k, top_p, greedy,
                  num_threads)
    else:
        _gen_call(cell, nonlin, addrs, W_hq, b_q, feed, out, h, c, rng, logits,
                  <double*>_addr(W_hq), <double*>_addr(b_q), <double*>_addr(h),
                  <double*>_addr(c), <double*>_addr(logits), H, V, temperature, top_k,
                  top_p, greedy, num_threads)


cdef int _gen_call(int cell, int nonlin, object addrs, object W_hq, object b_q, object feed,
                   object out, object h, object c, object rng, object logits,
                   const floating* Whq, const floating* b_qp, floating* hp, floating* cp,
                   floating* lg, Py_ssize_t H, Py_ssize_t V, double temperature,
                   Py_ssize_t top_k, double top_p, bint greedy, int num_threads) except -1:
    cdef Py_ssize_t G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t nL = addrs.shape[0], P = feed.shape[0], n = out.shape[0]
    cdef Py_ssize_t Vp = (V + 15) // 16 * 16, fs = sizeof(floating), k, v
    cdef Py_ssize_t Lp = _up64(Vp * fs) // fs
    cdef Py_ssize_t cut = fastrnn_split_point(H)
    cdef bint lstm = cell == FASTRNN_CELL_LSTM
    cdef bint can_split = (FASTRNN_OMP_ENABLED and num_threads >= 2 and 0 < cut < H
                           and G * H * H >= GEN_SPLIT_MIN_WORK)
    # One buffer, allocated once per call, every piece on its own cache lines (threads
    # writing one line would pass it back and forth every step): W_hq and b_q
    # zero-padded to Vp columns (whole vectors for the head), the double-buffered states, the
    # logit shares, then each thread's work area (the doubles ex, srt; the floats a,
    # hn, wk, op, sel).
    cdef Py_ssize_t o_wq = 0
    cdef Py_ssize_t o_h = _up64((H + 1) * Vp * fs)
    cdef Py_ssize_t o_c = o_h + _up64(2 * nL * H * fs)
    cdef Py_ssize_t o_l = o_c + (_up64(2 * nL * H * fs) if lstm else 0)
    cdef Py_ssize_t o_t = o_l + 4 * Lp * fs
    cdef Py_ssize_t tb = _up64(2 * V * sizeof(double)) + _up64((GH + 5 * H + Vp + V) * fs)
    cdef char* mem = <char*>malloc(o_t + (2 if can_split else 1) * tb + 64)
    if mem == NULL:
        raise MemoryError("cannot allocate the sampler's work buffers")
    cdef char* base = mem + (64 - (<size_t>mem) % 64) % 64
    cdef floating* Wq = <floating*>(base + o_wq)
    cdef floating* bq = Wq + H * Vp
    cdef floating* hbuf = <floating*>(base + o_h)
    cdef floating* cbuf = <floating*>(base + o_c) if lstm else NULL
    cdef floating* lsh = <floating*>(base + o_l)
    cdef char* tw0 = base + o_t
    cdef double* ex = <double*>tw0
    cdef double* srt = ex + V
    cdef floating* op = <floating*>(tw0 + _up64(2 * V * sizeof(double))) + GH + 5 * H
    cdef floating* sel = op + Vp
    cdef uintptr_t[:, ::1] av = addrs
    cdef const int32_t* fv = <const int32_t*>_addr(feed)
    cdef int32_t* ov = <int32_t*>_addr(out)
    cdef uint64_t* rv = <uint64_t*>_addr(rng)
    cdef _gen_t q
    cdef fastrnn_steps_t steps
    cdef Py_ssize_t maxs = max(GEN_PIECE // nL, 1), fpos = 0, opos = 0, Pp, np_, S, i
    cdef const int32_t* fp
    cdef bint split, feeding
    cdef int tid = 0
    cdef fastrnn_fpmode_t mode
    q.cell = cell
    q.nonlin = nonlin
    q.nL = nL
    q.lp = &av[0, 0]
    q.Wq = <uintptr_t>Wq
    q.bq = <uintptr_t>bq
    q.hbuf = <uintptr_t>hbuf
    q.cbuf = <uintptr_t>cbuf
    q.lsh = <uintptr_t>lsh
    q.H = H
    q.V = V
    q.Vp = Vp
    q.Lp = Lp
    q.cut = cut
    q.inv_temp = 1.0 / temperature if not greedy else 1.0
    q.top_k = top_k
    q.top_p = top_p
    q.greedy = greedy
    try:
        with nogil:
            for k in range(H):
                for v in range(Vp):
                    Wq[k * Vp + v] = Whq[k * V + v] if v < V else 0
            for v in range(Vp):
                bq[v] = b_qp[v] if v < V else 0
            # pieces of at most maxs steps (each a continuation of the one before,
            # which gives the ids of one run): feed-only pieces while the feed is
            # longer than a piece, then pieces that each end with a draw here
            while fpos < P or opos < n:
                feeding = fpos < P
                if P - fpos > maxs:
                    fp, Pp, np_, S = fv + fpos, maxs, 0, maxs
                elif fpos < P:
                    fp, Pp = fv + fpos, P - fpos
                    np_ = min(n, maxs - Pp + 1)
                    S = Pp + np_ - 1
                else:
                    fp, Pp = ov + opos - 1, 1
                    np_ = min(n - opos, maxs)
                    S = np_
                q.logits = <uintptr_t>(lg + opos * V) if lg != NULL else 0
                memcpy(hbuf, hp, nL * H * fs)
                if lstm:
                    memcpy(cbuf, cp, nL * H * fs)
                fastrnn_steps_init(&steps)
                split = can_split and S * nL >= GEN_SPLIT_MIN_STEPS
                if split:
                    with parallel(num_threads=2):
                        tid = fastrnn_omp_thread_id() & 1
                        _gen_steps(&q, fp, Pp, ov + opos, S, tw0 + tid * tb, rv, tid, &steps,
                                   <floating>0)
                elif S > 0:
                    _gen_steps(&q, fp, Pp, ov + opos, S, tw0, rv, 0, &steps, <floating>0)
                memcpy(hp, hbuf + (S % 2) * nL * H, nL * H * fs)
                if lstm:
                    memcpy(cp, cbuf + (S % 2) * nL * H, nL * H * fs)
                if feeding:
                    fpos += Pp
                if np_ > 0:
                    # the last draw of the piece, from the state after its last step,
                    # with the caller's sampler advanced past the draws the steps took
                    mode = fastrnn_ftz_on()
                    if not greedy:
                        for i in range(np_ - 1):
                            _xoshiro_next(rv)
                    k = S % 2
                    ov[opos + np_ - 1] = _draw(lsh + 2 * k * Lp, lsh + (2 * k + 1) * Lp, bq,
                                               op, sel, ex, srt, V, Vp, q.inv_temp, top_k,
                                               top_p, greedy, rv)
                    if lg != NULL:
                        memcpy(lg + (opos + np_ - 1) * V, op, V * fs)
                    fastrnn_fp_restore(mode)
                    opos += np_
    finally:
        free(mem)
    return 0


# ---------------------------------------------------------------------------
# whole-sequence products of the layer stack (input projection, output head and
# softmax cross-entropy, weight gradients), so that the stack driver calls no BLAS
# and our OpenMP threads are the only thread owner for the whole step (a numpy
# product between two parallel regions woke BLAS's own threads, which then spun
# against ours: 107 ms against 78 ms per lstm-medium step). Every output value is
# computed by one thread in an order fixed by the shapes (the packed gemm's
# ascending k, _tngemm's ascending rows, bias_scatter's rows in turn), so results
# do not depend on the thread count.

from _blas cimport gemm
from _rowops cimport (_tngemm, fastrnn_bias_scatter_f32, fastrnn_bias_scatter_f64,
                     fastrnn_softmax_xent_f32, fastrnn_softmax_xent_f64)

# below about this many flops per thread a parallel region costs more than it saves
cdef double SEQ_MIN_FLOPS_PER_THREAD = 2e6
# The BLAS products go in blocks (of rows of the output for seq_matmul, of columns
# for the weight gradients) whose sizes follow from the shapes alone, never from the
# thread count, and threads take the blocks in turn: so every BLAS call, and its
# rounding, is the same for any thread count (BLAS's summation order may depend on
# a call's sizes). At most 8 blocks of at least 256: each block re-packs the
# operand that is not cut, 5-10% of the product at these sizes.
cdef inline Py_ssize_t _blk_width(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t w = ((n + 7) // 8 + 63) // 64 * 64
    return w if w > 256 else 256


cdef inline Py_ssize_t _blk_count(Py_ssize_t n) noexcept nogil:
    return (n + _blk_width(n) - 1) // _blk_width(n) if n > 0 else 0


# The weight gradients' column blocks are at least 512 wide: each block re-packs the
# whole H_prev (or X) operand, the column blocks of dA are packed once whatever the
# width. Measured on one core (Intel Xeon AVX-512, layer_weight_grads alone):
# lstm-medium 21.1 ms with blocks of 256, 19.7 with 512, 19.3 with one block of 1024;
# lstm-charrnn's dense layer 91.5 / 86.1 / 83.7. 512 keeps two blocks (two threads'
# work) for a 1024-column gradient. With fewer than 4 blocks in all, the sum over the
# T*B rows is cut in pieces too (_wgrad_ksplit), so that two threads share the work:
# before, an Elman gradient of H <= 512 (one block) ran on one thread, and GRU
# H = 256's blocks of 512 and 256 columns split the work 2:1 (two threads, Xeon
# AVX-512: Elman H = 256 4.26 -> 2.28 ms, GRU 8.8 -> 6.7 ms).
cdef inline Py_ssize_t _wblk_width(Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t w = ((n + 7) // 8 + 63) // 64 * 64
    return w if w > 512 else 512


cdef inline Py_ssize_t _wblk_count(Py_ssize_t n) noexcept nogil:
    return (n + _wblk_width(n) - 1) // _wblk_width(n) if n > 0 else 0


def set_seq_min_flops_per_thread(double flops):
    """Set the work per thread below which the whole-sequence products use fewer
    threads; returns the old value (tests set 0 so every thread gets a share).
    Results do not depend on it."""
    global SEQ_MIN_FLOPS_PER_THREAD
    old = SEQ_MIN_FLOPS_PER_THREAD
    SEQ_MIN_FLOPS_PER_THREAD = flops if flops > 0 else 1e-300
    return old


cdef object _float_dtype(str name, object a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    return a.dtype


cdef int _check_ids(str name, object ids, Py_ssize_t n, Py_ssize_t D, list seen) except -1:
    """int32 (n,) ids in [0, D): checked here, since the gather and the scatter index
    with them."""
    cdef const int32_t[::1] v
    cdef Py_ssize_t i
    cdef int32_t lo = 0, hi = 0
    _arr(name, ids, _I32, (n,), False, seen)
    if n == 0:
        return 0
    v = ids
    with nogil:
        lo = hi = v[0]
        for i in range(n):
            if v[i] < lo:
                lo = v[i]
            if v[i] > hi:
                hi = v[i]
    if lo < 0 or hi >= D:
        raise ValueError(f"{name} must lie in [0, {D}), got values in [{lo}, {hi}]")
    return 0


def gather_rows(W, b, ids, out, int num_threads):
    """out[i] = W[ids[i]] + b: the one-hot input projection of every step.

    W (D, N), b (N,), ids (M,) int32 in [0, D), out (M, N); one float dtype."""
    dt = _float_dtype("W", W)
    if not isinstance(W, np.ndarray) or W.ndim != 2:
        raise ValueError("W must be 2-D")
    cdef Py_ssize_t D = W.shape[0], N = W.shape[1]
    cdef Py_ssize_t M = ids.shape[0] if isinstance(ids, np.ndarray) and ids.ndim == 1 else -1
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    seen = []
    _arr("W", W, dt, (D, N), False, seen)
    _arr("b", b, dt, (N,), False, seen)
    if M < 0:
        raise ValueError("ids must be a 1-D int32 numpy.ndarray")
    _check_ids("ids", ids, M, D, seen)
    _arr("out", out, dt, (M, N), True, seen)
    _no_overlap(seen)
    if M == 0 or N == 0:
        return
    if dt == np.float32:
        _gather_run(<float*>_addr(W), <float*>_addr(b), <int32_t*>_addr(ids),
                    <float*>_addr(out), M, N, num_threads)
    else:
        _gather_run(<double*>_addr(W), <double*>_addr(b), <int32_t*>_addr(ids),
                    <double*>_addr(out), M, N, num_threads)


cdef void _gather_run(const floating* W, const floating* b, const int32_t* ids, floating* out,
                      Py_ssize_t M, Py_ssize_t N, int num_threads) noexcept nogil:
    cdef int nc = _threads_for(num_threads, 16.0 * M * N, SEQ_MIN_FLOPS_PER_THREAD,
                                 M), c
    for c in prange(nc, num_threads=nc, schedule='static'):
        _gather_chunk(W, b, ids, out, M, N, c, nc)


# (each parallel loop's body is a function of its own: a variable of a prange body
# that is assigned through a pointer is shared by Cython, not made private)
cdef void _gather_chunk(const floating* W, const floating* b, const int32_t* ids,
                        floating* out, Py_ssize_t M, Py_ssize_t N, int c,
                        int nc) noexcept nogil:
    cdef Py_ssize_t i0, i1
    _chunk(M, nc, c, &i0, &i1)
    if floating is float:
        fastrnn_gather_f32(W, ids + i0, b, out + i0 * N, i1 - i0, N)
    else:
        fastrnn_gather_f64(W, ids + i0, b, out + i0 * N, i1 - i0, N)


def seq_matmul(A, W, b, out, bint trans_w, int num_threads, Py_ssize_t k=-1):
    """out = A @ W (+ b), or A @ W.T with trans_w, over row blocks in parallel, each by
    one-thread BLAS (the caller limits BLAS to one thread when num_threads > 1).

    A (M, K), W (K, N) (trans_w: (N, K)), b (N,) or None, out (M, N). With k >= 0, A
    is (M, lda) with lda >= k and only its first K = k columns are used (GRU's dA
    inside the gate cache)."""
    dt = _float_dtype("A", A)
    if A.ndim != 2 or not isinstance(W, np.ndarray) or W.ndim != 2:
        raise ValueError("A and W must be 2-D numpy.ndarrays")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef Py_ssize_t M = A.shape[0], lda = A.shape[1], K = A.shape[1] if k < 0 else k
    cdef Py_ssize_t N = W.shape[0] if trans_w else W.shape[1]
    if K > lda:
        raise ValueError(f"k = {k} is more than A's {lda} columns")
    seen = []
    _arr("A", A, dt, (M, lda), False, seen)
    _arr("W", W, dt, (N, K) if trans_w else (K, N), False, seen)
    if b is not None:
        _arr("b", b, dt, (N,), False, seen)
    _arr("out", out, dt, (M, N), True, seen)
    _no_overlap(seen)
    if M > 2147483647 or N > 2147483647 or K > 2147483647:
        raise ValueError("seq_matmul: the sizes must fit BLAS's int")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[...] = 0 if b is None else b
        return
    if dt == np.float32:
        _matmul_run(<float*>_addr(A), <float*>_addr(W), <float*>_addr(b), <float*>_addr(out),
                    M, N, K, lda, trans_w, num_threads)
    else:
        _matmul_run(<double*>_addr(A), <double*>_addr(W), <double*>_addr(b),
                    <double*>_addr(out), M, N, K, lda, trans_w, num_threads)


cdef int _matmul_run(const floating* A, const floating* W, const floating* b, floating* out,
                     Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t lda,
                     bint trans_w, int num_threads) except -1:
    cdef int nc = _threads_for(num_threads, 2.0 * M * N * K, SEQ_MIN_FLOPS_PER_THREAD,
                                 _blk_count(M)), c
    with nogil:
        for c in prange(nc, num_threads=nc, schedule='static'):
            _matmul_chunk(A, W, b, out, M, N, K, lda, trans_w, c, nc)
    return 0


cdef void _matmul_chunk(const floating* A, const floating* W, const floating* b,
                        floating* out, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        Py_ssize_t lda, bint trans_w, int c, int nc) noexcept nogil:
    """Thread c's blocks of rows of out (_blk_width), each by one one-thread BLAS
    call: these products have thousands of rows, where BLAS's cache blocking beats
    the packed kernel made for a step's few rows (lstm-charrnn's layer-1 products:
    2.4x faster). The blocks are the same for any thread count, so each BLAS call,
    and its rounding, is too (BLAS's summation order may depend on the row count)."""
    cdef Py_ssize_t i0, i1, r, blk, nblk = _blk_count(M), bw = _blk_width(M)
    cdef floating beta = 0.0
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    blk = c
    while blk < nblk:
        i0 = blk * bw
        i1 = min(M, i0 + bw)
        beta = 0.0
        if b != NULL:
            for r in range(i0, i1):
                memcpy(out + r * N, b, N * sizeof(floating))
            beta = 1.0
        gemm(c'N', c'T' if trans_w else c'N', <int>(i1 - i0), <int>N, <int>K, <floating>1.0,
             A + i0 * lda, <int>lda, W, <int>(K if trans_w else N), beta, out + i0 * N,
             <int>N)
        blk += nc
    fastrnn_fp_restore(mode)


def head_xent(Hh, W_hq, b_q, Y, O, int num_threads):
    """The output head of N rows, with the softmax cross-entropy when Y is given.

    Hh (N, H), W_hq (H, V), b_q (V,), Y (N,) int32 in [0, V) or None, O (N, V) out.
    Without Y, O = Hh W_hq + b_q (logits) and None is returned. With Y, O becomes
    d(mean loss)/dO = (softmax - onehot) / N and the summed cross-entropy (float) is
    returned, summed over rows in order (whatever the thread count)."""
    dt = _float_dtype("Hh", Hh)
    if Hh.ndim != 2 or not isinstance(W_hq, np.ndarray) or W_hq.ndim != 2:
        raise ValueError("Hh and W_hq must be 2-D numpy.ndarrays")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef Py_ssize_t N = Hh.shape[0], H = Hh.shape[1], V = W_hq.shape[1]
    seen = []
    _arr("Hh", Hh, dt, (N, H), False, seen)
    _arr("W_hq", W_hq, dt, (H, V), False, seen)
    _arr("b_q", b_q, dt, (V,), False, seen)
    if Y is not None:
        _check_ids("Y", Y, N, V, seen)
    _arr("O", O, dt, (N, V), True, seen)
    _no_overlap(seen)
    if N == 0 or V == 0:
        return 0.0 if Y is not None else None
    rowloss = np.empty(N if Y is not None else 0, np.float64)
    cdef double[::1] rl = rowloss
    cdef double* prl = &rl[0] if Y is not None else NULL
    if dt == np.float32:
        _head_run(<float*>_addr(Hh), <float*>_addr(W_hq), <float*>_addr(b_q),
                  <int32_t*>_addr(Y), <float*>_addr(O), prl, N, H, V, num_threads)
    else:
        _head_run(<double*>_addr(Hh), <double*>_addr(W_hq), <double*>_addr(b_q),
                  <int32_t*>_addr(Y), <double*>_addr(O), prl, N, H, V, num_threads)
    if Y is None:
        return None
    cdef double total = 0.0
    cdef Py_ssize_t i
    with nogil:
        for i in range(N):
            total = total + prl[i]
    return total


cdef int _head_run(const floating* Hh, const floating* W_hq, const floating* b_q,
                   const int32_t* Y, floating* O, double* rowloss, Py_ssize_t N,
                   Py_ssize_t H, Py_ssize_t V, int num_threads) except -1:
    cdef Py_ssize_t nr = _pack_width(<floating>0)
    cdef int nc = _threads_for(num_threads, 2.0 * N * H * V + 30.0 * N * V,
                                 SEQ_MIN_FLOPS_PER_THREAD, N), c
    cdef floating* Wp = _alloc(_packed_size(H, V, <floating>0), <floating>0)
    cdef floating scale = <floating>1.0 / <floating>N
    try:
        with nogil:
            _pack(W_hq, V, 0, H, V, nr, Wp)
            for c in prange(nc, num_threads=nc, schedule='static'):
                _head_chunk(Hh, Wp, b_q, Y, O, rowloss, N, H, V, scale, c, nc)
    finally:
        free(Wp)
    return 0


cdef void _head_chunk(const floating* Hh, const floating* Wp, const floating* b_q,
                      const int32_t* Y, floating* O, double* rowloss, Py_ssize_t N,
                      Py_ssize_t H, Py_ssize_t V, floating scale, int c,
                      int nc) noexcept nogil:
    cdef Py_ssize_t i0, i1
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    _chunk(N, nc, c, &i0, &i1)
    if i1 > i0:
        _pgemm(i1 - i0, V, H, Hh + i0 * H, H, Wp, O + i0 * V, V, 0, b_q)
        if Y != NULL:                           # each row's loss apart (summed in
            if floating is float:               # order by the caller)
                fastrnn_softmax_xent_f32(O + i0 * V, Y + i0, i1 - i0, V, scale, rowloss + i0)
            else:
                fastrnn_softmax_xent_f64(O + i0 * V, Y + i0, i1 - i0, V, scale, rowloss + i0)
    fastrnn_fp_restore(mode)


def head_backward(Hh, dO, W_hq, dW_hq, db_q, dH, int num_threads):
    """Gradients through the output head: dW_hq = Hh^T dO, db_q = column sums of dO,
    dH = dO W_hq^T. For H > HEAD_TN_MAX_H (512) dW_hq calls BLAS from each thread: the
    caller limits BLAS to one thread (fastrnn._core.blas_single_thread).

    Hh (N, H), dO (N, V), W_hq (H, V) in; dW_hq (H, V), db_q (V,), dH (N, H) out."""
    dt = _float_dtype("Hh", Hh)
    if Hh.ndim != 2 or not isinstance(dO, np.ndarray) or dO.ndim != 2:
        raise ValueError("Hh and dO must be 2-D numpy.ndarrays")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef Py_ssize_t N = Hh.shape[0], H = Hh.shape[1], V = dO.shape[1]
    seen = []
    _arr("Hh", Hh, dt, (N, H), False, seen)
    _arr("dO", dO, dt, (N, V), False, seen)
    _arr("W_hq", W_hq, dt, (H, V), False, seen)
    _arr("dW_hq", dW_hq, dt, (H, V), True, seen)
    _arr("db_q", db_q, dt, (V,), True, seen)
    _arr("dH", dH, dt, (N, H), True, seen)
    _no_overlap(seen)
    if H == 0 or V == 0:
        dH[...] = 0
        dW_hq[...] = 0
        db_q[...] = 0
        return
    if dt == np.float32:
        _head_back_run(<float*>_addr(Hh), <float*>_addr(dO), <float*>_addr(W_hq),
                       <float*>_addr(dW_hq), <float*>_addr(db_q), <float*>_addr(dH),
                       N, H, V, num_threads)
    else:
        _head_back_run(<double*>_addr(Hh), <double*>_addr(dO), <double*>_addr(W_hq),
                       <double*>_addr(dW_hq), <double*>_addr(db_q), <double*>_addr(dH),
                       N, H, V, num_threads)


cdef int _head_back_run(const floating* Hh, const floating* dO, const floating* W_hq,
                        floating* dW_hq, floating* db_q, floating* dH, Py_ssize_t N,
                        Py_ssize_t H, Py_ssize_t V, int num_threads) except -1:
    cdef Py_ssize_t nr = _pack_width(<floating>0)
    cdef int nc = _threads_for(num_threads, 4.0 * N * H * V, SEQ_MIN_FLOPS_PER_THREAD,
                                 max(N, H)), c
    cdef floating* WpT = _alloc(_packed_size(V, H, <floating>0), <floating>0)
    try:
        with nogil:
            _pack(W_hq, V, 1, V, H, nr, WpT)
            for c in prange(nc, num_threads=nc, schedule='static'):
                _head_back_chunk(Hh, dO, WpT, dW_hq, db_q, dH, N, H, V, c, nc)
    finally:
        free(WpT)
    return 0


# dW_hq = Hh^T dO runs on _tngemm up to this H (as fastrnn._rnn's TNGEMM_MAX_H), on
# one-thread BLAS in blocks of 256 rows above it. head_backward alone, one thread,
# Xeon AVX-512, two alternating runs each: 4096 rows, H 1024, V 96 (Elman large)
# 23.2 / 27.6 ms -> 16.5 / 23.8 ms; V 65 (lstm-large) 21.3 / 22.6 -> 13.3 / 18.3.
cdef Py_ssize_t HEAD_TN_MAX_H = 512


cdef void _head_back_chunk(const floating* Hh, const floating* dO, const floating* WpT,
                           floating* dW_hq, floating* db_q, floating* dH, Py_ssize_t N,
                           Py_ssize_t H, Py_ssize_t V, int c, int nc) noexcept nogil:
    cdef Py_ssize_t i0, i1, b
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    _chunk(N, nc, c, &i0, &i1)           # dH rows
    if i1 > i0:
        _pgemm(i1 - i0, H, V, dO + i0 * V, V, WpT, dH + i0 * H, H, 0, NULL)
    if _LEVEL >= 1 and H <= HEAD_TN_MAX_H:
        _chunk(H, nc, c, &i0, &i1)       # dW_hq rows: _tngemm, any split
        if i1 > i0:
            _tngemm(i1 - i0, V, N, Hh + i0, H, dO, V, dW_hq + i0 * V, V, 0)
    else:                                # BLAS in row blocks fixed by the shapes
        b = c
        while b * 256 < H:
            i0 = b * 256
            i1 = min(H, i0 + 256)
            _tn(i1 - i0, V, N, Hh + i0, H, dO, V, False, dW_hq + i0 * V, V, 0)
            b += nc
    _chunk(V, nc, c, &i0, &i1)           # db_q columns
    if floating is float:
        fastrnn_bias_scatter_f32(dO, N, V, i0, i1, db_q, NULL, NULL, 0, 0, 0)
    else:
        fastrnn_bias_scatter_f64(dO, N, V, i0, i1, db_q, NULL, NULL, 0, 0, 0)
    fastrnn_fp_restore(mode)


def layer_weight_grads(int cell, h0, Hs, dA, dAn, ids, X, dW_xh, dW_hh, db_h, db_hn,
                       int num_threads):
    """A layer's weight gradients from its BPTT (layer_backward's dA, dAn_rec).

    The products call BLAS from each thread: the caller limits BLAS to one thread
    (fastrnn._core.blas_single_thread) when num_threads > 1.

        h0       (B, H)       IN   the initial state (H_{-1})
        Hs       (T, B, H)    IN   h_t
        dA       (T, B, G*H)  IN
        dAn      (T, B, H)    IN   GRU only (dL/dhn), else None. GRU: both may be the
                                   gate cache Gs (T, B, 4H) that layer_backward wrote
                                   them into (dA, dAn given as the same array): rows
                                   [dA | dAn]
        ids      (T*B,) int32 IN   token ids of the input (layer 0 with ids), or None
        X        (T*B, D)     IN   dense input, or None (exactly one of ids, X)
        dW_xh    (D, G*H)     OUT  X^T dA, or the rows of dA added at their ids
        dW_hh    (H, G*H)     OUT  H_prev^T dA_rec (GRU: the n block from dAn)
        db_h     (G*H,)       OUT  column sums of dA
        db_hn    (H,)         OUT  GRU: column sums of dAn, else None
    """
    _check_cell(cell, FASTRNN_NONLIN_TANH)
    dt = _float_dtype("dA", dA)
    if dA.ndim != 3 or not isinstance(dW_hh, np.ndarray) or dW_hh.ndim != 2:
        raise ValueError("dA must be (T, B, G*H) and dW_hh (H, G*H)")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef Py_ssize_t G = fastrnn_cell_gates(cell)
    cdef Py_ssize_t T = dA.shape[0], B = dA.shape[1], H = dW_hh.shape[0], D
    gru = cell == FASTRNN_CELL_GRU
    if (ids is None) == (X is None):
        raise ValueError("give exactly one of ids and X")
    if ids is not None:
        if not isinstance(dW_xh, np.ndarray) or dW_xh.ndim != 2:
            raise ValueError("dW_xh must be a 2-D numpy.ndarray")
        D = dW_xh.shape[0]
    else:
        if not isinstance(X, np.ndarray) or X.ndim != 2:
            raise ValueError("X must be a 2-D numpy.ndarray")
        D = X.shape[1]
    seen = []
    _arr("h0", h0, dt, (B, H), False, seen)
    _arr("Hs", Hs, dt, (T, B, H), False, seen)
    cdef bint packed = gru and dAn is not None and dAn is dA
    cdef Py_ssize_t lda = 4 * H if packed else G * H, ldn = 4 * H if packed else H
    if packed:
        _arr("dA", dA, dt, (T, B, 4 * H), False, seen)
    else:
        _arr("dA", dA, dt, (T, B, G * H), False, seen)
        _opt("dAn", dAn, gru, "with CELL_GRU", dt, (T, B, H), False, seen)
    if ids is not None:
        _check_ids("ids", ids, T * B, D, seen)
    else:
        _arr("X", X, dt, (T * B, D), False, seen)
    _arr("dW_xh", dW_xh, dt, (D, G * H), True, seen)
    _arr("dW_hh", dW_hh, dt, (H, G * H), True, seen)
    _arr("db_h", db_h, dt, (G * H,), True, seen)
    _opt("db_hn", db_hn, gru, "with CELL_GRU", dt, (H,), True, seen)
    _no_overlap(seen)
    if T * B > 2147483647 or D * G * H > 2147483647:
        raise ValueError("layer_weight_grads: T*B and the sizes must fit BLAS's int")
    if T * B == 0 or H == 0:
        dW_xh[...] = 0
        dW_hh[...] = 0
        db_h[...] = 0
        if db_hn is not None:
            db_hn[...] = 0
        return
    if dt == np.float32:
        _wgrad_run(cell, <float*>_addr(h0), <float*>_addr(Hs), <float*>_addr(dA),
                   (<float*>_addr(dA) + 3 * H) if packed else <float*>_addr(dAn),
                   <int32_t*>_addr(ids), <float*>_addr(X),
                   <float*>_addr(dW_xh), <float*>_addr(dW_hh), <float*>_addr(db_h),
                   <float*>_addr(db_hn), T, B, H, D, lda, ldn, num_threads)
    else:
        _wgrad_run(cell, <double*>_addr(h0), <double*>_addr(Hs), <double*>_addr(dA),
                   (<double*>_addr(dA) + 3 * H) if packed else <double*>_addr(dAn),
                   <int32_t*>_addr(ids), <double*>_addr(X),
                   <double*>_addr(dW_xh), <double*>_addr(dW_hh), <double*>_addr(db_h),
                   <double*>_addr(db_hn), T, B, H, D, lda, ldn, num_threads)


cdef inline Py_ssize_t _wgrad_ksplit(Py_ssize_t ncol, Py_ssize_t T, Py_ssize_t B) noexcept nogil:
    """How many pieces of the time axis the weight-gradient products' sum over T*B rows
    is cut into, from the shapes alone: enough for at least 4 products in all, so that
    two (or three) threads get near-equal work even when the gradient has one or two
    column blocks (Elman H <= 512; GRU and LSTM H = 256), and pieces of at least 256
    rows. Each piece's product goes to its own buffer; the pieces are added in order."""
    cdef Py_ssize_t nk = 1 if ncol >= 4 else (4 + ncol - 1) // ncol
    if nk > T:
        nk = T
    if nk > (T * B) // 256:
        nk = (T * B) // 256
    return nk if nk >= 1 else 1


cdef int _wgrad_run(int cell, const floating* h0, const floating* Hs, const floating* dA,
                    const floating* dAn, const int32_t* ids, const floating* X,
                    floating* dW_xh, floating* dW_hh, floating* db_h, floating* db_hn,
                    Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t D,
                    Py_ssize_t lda, Py_ssize_t ldn, int num_threads) except -1:
    """The products are a list of items (column block, piece of the time axis), fixed
    by the shapes: threads take them as they come free (each item's BLAS call and its
    rounding are the same whichever thread runs it). Pieces after the first write to
    scratch copies of dW_hh (and of a dense dW_xh); a second region adds them in order
    and does the bias sums (and the ids' scatter-add into dW_xh) by columns."""
    cdef Py_ssize_t G = fastrnn_cell_gates(cell), GH = G * H, N = T * B
    cdef Py_ssize_t Gr = 2 if cell == FASTRNN_CELL_GRU else G
    cdef Py_ssize_t ncol = (_wblk_count(Gr * H) + (_wblk_count(H) if Gr != G else 0)
                            + (_wblk_count(GH) if ids == NULL else 0))
    cdef Py_ssize_t nk = _wgrad_ksplit(ncol, T, B), nitems = ncol * nk, item
    cdef Py_ssize_t per = H * GH + (D * GH if ids == NULL else 0)   # one piece's scratch
    cdef double flops = 2.0 * N * H * GH * (1 if ids != NULL else 2)
    cdef int nc = _threads_for(num_threads, flops, SEQ_MIN_FLOPS_PER_THREAD, nitems), c
    cdef floating* scratch = _alloc((nk - 1) * per, <floating>0) if nk > 1 else NULL
    try:
        with nogil:
            for item in prange(nitems, num_threads=nc, schedule='dynamic'):
                _wgrad_item(cell, h0, Hs, dA, dAn, X, dW_xh, dW_hh, scratch, per, T, B, H,
                            D, lda, ldn, item // nk, item % nk, nk)
            for c in prange(nc, num_threads=nc, schedule='static'):
                _wgrad_sums(cell, dA, dAn, ids, dW_xh, dW_hh, db_h, db_hn, scratch, per, T,
                            B, H, D, lda, ldn, nk, c, nc)
    finally:
        free(scratch)
    return 0


# Weight-gradient products C = A^T B with at most this many rows of C (A's columns:
# H, or D for a dense input) run on _tngemm, which reads A and B in place; above, on
# BLAS, which packs A (a transposing copy of all K rows, for every column block: at
# H = 32 OpenBLAS spent as long packing as multiplying). layer_weight_grads, BLAS vs
# _tngemm, Xeon AVX-512 1 / 2 threads:
# lstm H=32 B=1024 T=32 5.26 / 4.63 and 3.39 / 3.09 ms; gru H=32 4.63 / 3.82 and
# 2.47 / 2.00; lstm H=64 B=512 7.12 / 7.28 and 3.63 / 2.89; lstm H=128 11.0 / 14.8;
# lstm H=256 20.1 / 49.0. Only the shapes choose, so results stay the same for any
# thread count.
cdef Py_ssize_t WGRAD_TN_MAX_M = 64


def _set_wgrad_tn_max_m(Py_ssize_t m):
    """Test/bench hook: the WGRAD_TN_MAX_M above; returns the old value."""
    global WGRAD_TN_MAX_M
    old = WGRAD_TN_MAX_M
    WGRAD_TN_MAX_M = m
    return old


cdef inline void _tn(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                     Py_ssize_t lda, const floating* B, Py_ssize_t ldb, bint acc,
                     floating* C, Py_ssize_t ldc, Py_ssize_t max_m=-1) noexcept nogil:
    """C(M, N) (+)= A^T B, A (K, M), B (K, N) row-major: _tngemm when M <= max_m
    (default WGRAD_TN_MAX_M), else one-thread BLAS."""
    if max_m < 0:
        max_m = WGRAD_TN_MAX_M
    if _LEVEL >= 1 and M <= max_m:
        _tngemm(M, N, K, A, lda, B, ldb, C, ldc, acc)
    else:
        gemm(c'T', c'N', <int>M, <int>N, <int>K, <floating>1.0, A, <int>lda, B, <int>ldb,
             <floating>(1.0 if acc else 0.0), C, <int>ldc)


cdef void _wgrad_item(int cell, const floating* h0, const floating* Hs, const floating* dA,
                      const floating* dAn, const floating* X, floating* dW_xh,
                      floating* dW_hh, floating* scratch, Py_ssize_t per, Py_ssize_t T,
                      Py_ssize_t B, Py_ssize_t H, Py_ssize_t D, Py_ssize_t lda,
                      Py_ssize_t ldn, Py_ssize_t j, Py_ssize_t k,
                      Py_ssize_t nk) noexcept nogil:
    """Column block j, steps [t0, t1) of piece k: dW_hh (+)= H_prev^T dA_rec, GRU's n
    block from dAn; or, for a dense input, dW_xh = X^T dA. Each product is _tn's: BLAS
    (held at one thread by the caller) or, for at most WGRAD_TN_MAX_M rows, _tngemm."""
    cdef Py_ssize_t G = fastrnn_cell_gates(cell), GH = G * H
    cdef Py_ssize_t Gr = 2 if cell == FASTRNN_CELL_GRU else G
    cdef Py_ssize_t n1 = _wblk_count(Gr * H)
    cdef Py_ssize_t nn = _wblk_count(H) if cell == FASTRNN_CELL_GRU else 0
    cdef Py_ssize_t t0 = T * k // nk, t1 = T * (k + 1) // nk, i0, i1, ld, off
    cdef const floating* src
    cdef floating* out_hh = dW_hh if k == 0 else scratch + (k - 1) * per
    cdef floating* out_xh = out_hh + H * GH if k > 0 else dW_xh
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    if j < n1 + nn:
        if j < n1:                                  # r, z (GRU) or every gate: from dA
            i0 = j * _wblk_width(Gr * H)
            i1 = min(Gr * H, i0 + _wblk_width(Gr * H))
            src, ld, off = dA + i0, lda, i0
        else:                                       # GRU's n block: from dAn
            i0 = (j - n1) * _wblk_width(H)
            i1 = min(H, i0 + _wblk_width(H))
            src, ld, off = dAn + i0, ldn, 2 * H + i0
        if t0 == 0:                                 # H_{-1} = h0, then Hs[0:t1-1]
            _tn(H, i1 - i0, B, h0, H, src, ld, False, out_hh + off, GH)
            if t1 > 1:
                _tn(H, i1 - i0, (t1 - 1) * B, Hs, H, src + B * ld, ld, True, out_hh + off, GH)
        else:
            _tn(H, i1 - i0, (t1 - t0) * B, Hs + (t0 - 1) * B * H, H, src + t0 * B * ld, ld,
                False, out_hh + off, GH)
    else:                                           # dense input: dW_xh = X^T dA
        i0 = (j - n1 - nn) * _wblk_width(GH)
        i1 = min(GH, i0 + _wblk_width(GH))
        _tn(D, i1 - i0, (t1 - t0) * B, X + t0 * B * D, D, dA + t0 * B * lda + i0, lda, False,
            out_xh + i0, GH)
    fastrnn_fp_restore(mode)


cdef inline void _add_pieces(floating* d, const floating* s, Py_ssize_t per, Py_ssize_t nk,
                             Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """d[i0:i1] += the same values of pieces 1 .. nk-1 (s, s + per, ...), in order."""
    cdef Py_ssize_t k, e
    cdef const floating* p
    for k in range(1, nk):
        p = s + (k - 1) * per
        for e in range(i0, i1):
            d[e] = d[e] + p[e]


cdef void _wgrad_sums(int cell, const floating* dA, const floating* dAn, const int32_t* ids,
                      floating* dW_xh, floating* dW_hh, floating* db_h, floating* db_hn,
                      const floating* scratch, Py_ssize_t per, Py_ssize_t T, Py_ssize_t B,
                      Py_ssize_t H, Py_ssize_t D, Py_ssize_t lda, Py_ssize_t ldn,
                      Py_ssize_t nk, int c, int nc) noexcept nogil:
    """Chunk c of: the pieces' sums (dW_hh, a dense dW_xh: rows, pieces added in
    order), db_h columns (with the ids' scatter-add into dW_xh) and GRU's db_hn."""
    cdef Py_ssize_t GH = fastrnn_cell_gates(cell) * H, N = T * B, i0, i1
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    if nk > 1:
        _chunk(H * GH, nc, c, &i0, &i1)
        _add_pieces(dW_hh, scratch, per, nk, i0, i1)
        if ids == NULL:
            _chunk(D * GH, nc, c, &i0, &i1)
            _add_pieces(dW_xh, scratch + H * GH, per, nk, i0, i1)
    _chunk(GH, nc, c, &i0, &i1)
    if floating is float:
        fastrnn_bias_scatter_f32(dA, N, lda, i0, i1, db_h, ids, dW_xh, GH, D, 0)
    else:
        fastrnn_bias_scatter_f64(dA, N, lda, i0, i1, db_h, ids, dW_xh, GH, D, 0)
    if cell == FASTRNN_CELL_GRU:
        _chunk(H, nc, c, &i0, &i1)
        if floating is float:
            fastrnn_bias_scatter_f32(dAn, N, ldn, i0, i1, db_hn, NULL, NULL, 0, 0, 0)
        else:
            fastrnn_bias_scatter_f64(dAn, N, ldn, i0, i1, db_hn, NULL, NULL, 0, 0, 0)
    fastrnn_fp_restore(mode)
