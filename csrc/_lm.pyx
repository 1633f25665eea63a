# cython: language_level=3
"""Compiled pieces of the character-level language model (fastrnn.model).

Optimizer updates over the ONE contiguous flat parameter buffer (and the flat
gradient buffer beside it), gradient clipping, and the generation loop.

Optimizers (``p`` params, ``g`` gradients, all flat, same length ``P``)::

    sgd      p -= lr * g                                          (d2l)
    adagrad  mem += g*g ; p -= lr * g / sqrt(mem + eps)           (min-char-rnn)
    adam     m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g*g
             p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) (Kingma & Ba)

Clipping::

    global norm   g <- min(1, theta / ||g||) g                    (d2l grad_clipping)
    elementwise   g <- min(max(g, -c), c)                         (min-char-rnn, c = 5)

Generation: the prefix is fed through the recurrence to warm up the state
(d2l's ``predict``), then each step computes ``o = h W_hq + b_q`` and draws the
next id from ``softmax(o / temperature)`` restricted to the ``top_k`` largest
logits (or takes ``argmax o`` when greedy), feeding it back in. Randomness
comes from xoshiro256** (Blackman & Vigna), seeded through splitmix64; its
4-word state lives in a caller-owned uint64 array, so generation can be
stopped and continued (streaming) with identical results. With two threads,
each step's hidden units are split between them as in the training kernels
(csrc/_steps.h), and each thread draws the ids itself from its own copy of the
sampler, so the text is the same for every thread count.

Every kernel runs without the GIL, allocates nothing (the caller passes the
workspace), and flushes subnormals for its duration, restoring the caller's
floating-point mode. The Python layer (fastrnn.model) validates arguments.
"""
from cython cimport floating
from libc.math cimport exp, sqrt, isfinite, pow
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from cython.parallel cimport parallel
from _fpmode cimport fastrnn_fpmode_t, fastrnn_ftz_on, fastrnn_fp_restore
from _omp cimport FASTRNN_OMP_ENABLED, fastrnn_omp_thread_id

# the same vectorised one-row product and tanh as the training kernels (csrc/_rnn.pyx)
from _rowops cimport _vecmat, _tanh_vec, fastrnn_sumsq_f32, fastrnn_sumsq_f64
# the sampler (xoshiro256**, top-k / nucleus draw), shared with fastrnn._layers
from _sampling cimport _xoshiro_next, _uniform, _partial_logits, _draw

from _steps cimport (fastrnn_steps_t, fastrnn_steps_init, fastrnn_steps_claim,
                    fastrnn_steps_done, fastrnn_steps_next, fastrnn_steps_wait,
                    fastrnn_split_point)

cdef enum:
    TANH = 0
    RELU = 1


# ---------------------------------------------------------------------------
# random numbers: splitmix64 (seeding) and xoshiro256** (generation)

cdef inline uint64_t _splitmix64(uint64_t* x) noexcept nogil:
    """Next splitmix64 output; advances x."""
    cdef uint64_t z
    x[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    z = x[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


def rng_seed(uint64_t seed, uint64_t[::1] state):
    """Fill the 4-word xoshiro256** ``state`` from ``seed`` with splitmix64."""
    cdef uint64_t x = seed
    cdef int i
    if state.shape[0] != 4:
        raise ValueError(f"state must have 4 words, got {state.shape[0]}")
    for i in range(4):
        state[i] = _splitmix64(&x)
    if state[0] == 0 and state[1] == 0 and state[2] == 0 and state[3] == 0:
        state[0] = 1  # the all-zero state is a fixed point; splitmix64 never gives it


def rng_next(uint64_t[::1] state, uint64_t[::1] out):
    """Fill ``out`` with raw xoshiro256** outputs, advancing ``state`` (for tests)."""
    cdef Py_ssize_t i
    if state.shape[0] != 4:
        raise ValueError(f"state must have 4 words, got {state.shape[0]}")
    with nogil:
        for i in range(out.shape[0]):
            out[i] = _xoshiro_next(&state[0])


def rng_uniform(uint64_t[::1] state, double[::1] out):
    """Fill ``out`` with the uniforms in [0, 1) the sampler draws (for tests)."""
    cdef Py_ssize_t i
    if state.shape[0] != 4:
        raise ValueError(f"state must have 4 words, got {state.shape[0]}")
    with nogil:
        for i in range(out.shape[0]):
            out[i] = _uniform(&state[0])


# ---------------------------------------------------------------------------
# gradient norm and clipping

cdef double _sumsq(const floating* g, Py_ssize_t n) noexcept nogil:
    """sum_i g_i^2, accumulated in double in 16 fixed lanes (deterministic)."""
    if floating is float:
        return fastrnn_sumsq_f32(g, n)
    else:
        return fastrnn_sumsq_f64(g, n)


def global_norm(const floating[::1] grad):
    """``||g||_2`` over the whole flat gradient buffer, in double precision."""
    cdef double s
    cdef fastrnn_fpmode_t mode
    with nogil:
        mode = fastrnn_ftz_on()
        s = _sumsq(&grad[0], grad.shape[0]) if grad.shape[0] > 0 else 0.0
        fastrnn_fp_restore(mode)
    return sqrt(s)


def clip_global_norm(floating[::1] grad, double max_norm):
    """d2l's ``g <- min(1, max_norm / ||g||) g`` in place; returns ``||g||`` before.

    A non-finite norm leaves ``grad`` untouched (the caller treats it as
    divergence).
    """
    cdef Py_ssize_t i, n = grad.shape[0]
    cdef double norm = 0.0
    cdef floating f
    cdef fastrnn_fpmode_t mode
    with nogil:
        mode = fastrnn_ftz_on()
        if n > 0:
            norm = sqrt(_sumsq(&grad[0], n))
        if isfinite(norm) and norm > max_norm:
            f = <floating>(max_norm / norm)
            for i in range(n):
                grad[i] *= f
        fastrnn_fp_restore(mode)
    return norm


def clip_value(floating[::1] grad, double limit):
    """min-char-rnn's elementwise clip ``g <- min(max(g, -limit), limit)`` in place."""
    cdef Py_ssize_t i, n = grad.shape[0]
    cdef floating c = <floating>limit
    cdef fastrnn_fpmode_t mode
    with nogil:
        mode = fastrnn_ftz_on()
        for i in range(n):
            if grad[i] > c:
                grad[i] = c
            elif grad[i] < -c:
                grad[i] = -c
        fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# optimizer updates over the flat buffers

def sgd_update(floating[::1] param,           # IN/OUT (P,)
               const floating[::1] grad,      # IN (P,)
               double lr):
    """``p -= lr * g`` (d2l's ``sgd`` with the mean-loss gradient)."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef floating a = <floating>lr
    cdef fastrnn_fpmode_t mode
    with nogil:
        mode = fastrnn_ftz_on()
        for i in range(n):
            param[i] -= a * grad[i]
        fastrnn_fp_restore(mode)


def adagrad_update(floating[::1] param,       # IN/OUT (P,)
                   const floating[::1] grad,  # IN (P,)
                   floating[::1] mem,         # IN/OUT (P,) sum of squared gradients
                   double lr, double eps):
    """min-char-rnn's Adagrad: ``mem += g*g ; p -= lr * g / sqrt(mem + eps)``."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef floating g, a = <floating>lr, e = <floating>eps
    cdef fastrnn_fpmode_t mode
    with nogil:
        mode = fastrnn_ftz_on()
        for i in range(n):
            g = grad[i]
            mem[i] += g * g
            param[i] -= a * g / <floating>sqrt(mem[i] + e)
        fastrnn_fp_restore(mode)


def adam_update(floating[::1] param,          # IN/OUT (P,)
                const floating[::1] grad,     # IN (P,)
                floating[::1] m,              # IN/OUT (P,) first moment
                floating[::1] v,              # IN/OUT (P,) second moment
                double lr, double beta1, double beta2, double eps,
                int64_t step):                # IN t >= 1, the number of this update
    """Adam with bias correction (Kingma & Ba, Algorithm 1; PyTorch's form)::

        m = b1 m + (1-b1) g ;  v = b2 v + (1-b2) g*g
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """
    cdef Py_ssize_t i, n = param.shape[0]
    cdef floating g, b1 = <floating>beta1, b2 = <floating>beta2
    cdef floating c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating step_size = <floating>(lr / (1.0 - pow(beta1, <double>step)))
    cdef floating inv_sqrt_bc2 = <floating>(1.0 / sqrt(1.0 - pow(beta2, <double>step)))
    cdef floating e = <floating>eps
    cdef fastrnn_fpmode_t mode
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    with nogil:
        mode = fastrnn_ftz_on()
        for i in range(n):
            g = grad[i]
            m[i] = b1 * m[i] + c1 * g
            v[i] = b2 * v[i] + c2 * g * g
            param[i] -= step_size * m[i] / (<floating>sqrt(v[i]) * inv_sqrt_bc2 + e)
        fastrnn_fp_restore(mode)


cdef inline void _adam_span(floating* param, const floating* grad, floating* m, floating* v,
                            Py_ssize_t i0, Py_ssize_t i1, floating keep, floating b1,
                            floating b2, floating c1, floating c2, floating step_size,
                            floating inv_sqrt_bc2, floating e) noexcept nogil:
    """Adam on param[i0:i1], each entry first multiplied by ``keep`` (AdamW's decay)."""
    cdef Py_ssize_t i
    cdef floating g
    for i in range(i0, i1):
        g = grad[i]
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * g * g
        param[i] = param[i] * keep - step_size * m[i] / (<floating>sqrt(v[i]) * inv_sqrt_bc2 + e)


def adamw_update(floating[::1] param,         # IN/OUT (P,)
                 const floating[::1] grad,    # IN (P,)
                 floating[::1] m,             # IN/OUT (P,) first moment
                 floating[::1] v,             # IN/OUT (P,) second moment
                 const int64_t[:, ::1] decay, # IN (R, 2) sorted [start, stop) ranges decayed
                 double lr, double beta1, double beta2, double eps, double weight_decay,
                 int64_t step):               # IN t >= 1, the number of this update
    """AdamW (Loshchilov & Hutter; PyTorch's ``torch.optim.AdamW``), one pass::

        p *= 1 - lr * weight_decay          # only inside the ``decay`` ranges
        m = b1 m + (1-b1) g ;  v = b2 v + (1-b2) g*g
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    ``decay`` holds the weight matrices' ranges of the flat buffer, sorted and
    disjoint; every other entry (biases) is updated by plain Adam.
    """
    cdef Py_ssize_t r, pos = 0, n = param.shape[0], R = decay.shape[0], a, b
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2
    cdef floating c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating step_size = <floating>(lr / (1.0 - pow(beta1, <double>step)))
    cdef floating inv_sqrt_bc2 = <floating>(1.0 / sqrt(1.0 - pow(beta2, <double>step)))
    cdef floating e = <floating>eps
    cdef floating keep = <floating>(1.0 - lr * weight_decay)
    cdef fastrnn_fpmode_t mode
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if grad.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("param, grad, m and v must have the same length")
    if R and decay.shape[1] != 2:
        raise ValueError("decay must have shape (R, 2)")
    for r in range(R):
        a, b = decay[r, 0], decay[r, 1]
        if a < pos or b < a or b > n:
            raise ValueError(f"decay ranges must be sorted, disjoint and inside [0, {n}]; "
                             f"got [{a}, {b}) after {pos}")
        pos = b
    pos = 0
    with nogil:
        mode = fastrnn_ftz_on()
        for r in range(R):
            a, b = decay[r, 0], decay[r, 1]
            _adam_span(&param[0], &grad[0], &m[0], &v[0], pos, a, <floating>1, b1, b2, c1,
                       c2, step_size, inv_sqrt_bc2, e)
            _adam_span(&param[0], &grad[0], &m[0], &v[0], a, b, keep, b1, b2, c1, c2,
                       step_size, inv_sqrt_bc2, e)
            pos = b
        if pos < n:
            _adam_span(&param[0], &grad[0], &m[0], &v[0], pos, n, <floating>1, b1, b2, c1, c2,
                       step_size, inv_sqrt_bc2, e)
        fastrnn_fp_restore(mode)


# ---------------------------------------------------------------------------
# generation

cdef inline void _step_part(const floating* W_xh, const floating* W_hh, const floating* b_h,
                            int32_t x, const floating* h, floating* hnew, floating* z,
                            Py_ssize_t H, Py_ssize_t j0, Py_ssize_t j1,
                            int nonlin) noexcept nogil:
    """hnew[j0:j1] of H_t = phi(X_t W_xh + H_{t-1} W_hh + b_h) for one token, from
    H_{t-1} = h. With [j0, j1) = [0, H), hnew may be h itself (one thread's step:
    h is read whole before any of it is written)."""
    cdef Py_ssize_t j, nj = j1 - j0
    cdef const floating* w = W_xh + <Py_ssize_t>x * H
    if nj <= 0:
        return
    for j in range(j0, j1):
        z[j] = w[j] + b_h[j]
    _vecmat(h, W_hh + j0, H, z + j0, H, nj, 1)
    if nonlin == TANH:
        _tanh_vec(z + j0, hnew + j0, nj)
    else:
        for j in range(j0, j1):
            hnew[j] = z[j] if z[j] > 0 else 0


cdef inline Py_ssize_t _up64(Py_ssize_t nbytes) noexcept nogil:
    """nbytes rounded up to whole 64-byte cache lines."""
    return (nbytes + 63) // 64 * 64


cdef void _generate_split(
        const floating* W_xh, const floating* W_hh, const floating* b_h,
        const floating* Wq, const floating* bq,       # W_hq, b_q padded to Vp columns
        const int32_t* feed, Py_ssize_t P, int32_t* out, Py_ssize_t n,
        floating* hbuf,            # (2, H): hbuf[0] = H before the first step
        floating* lp,              # (2, 2, Lp): shares of the logits, per step parity
        Py_ssize_t Lp,             #   and part (Lp >= Vp, whole cache lines)
        floating* tw,              # WORK this thread's: z (H), op (Vp), sel (V)
        double* ex,                # WORK this thread's (V,)
        const uint64_t* rng0,      # the sampler's state before the first draw
        Py_ssize_t H, Py_ssize_t V, Py_ssize_t Vp, double inv_temp, Py_ssize_t top_k,
        bint greedy, int nonlin, int me, fastrnn_steps_t* steps) noexcept nogil:
    """Steps 0 .. P+n-2 of generate() on two threads, each step's hidden units in
    two parts claimed as in the training kernels (csrc/_steps.h). Step s feeds
    feed[s] (s < P) or draw s - P, which a thread claiming a part of step s draws
    itself from the state before step s, with its own copy of the sampler advanced
    to that draw: both threads draw the same id. The state before step s is in
    hbuf[s % 2]; the part that computes it also computes its share of that state's
    logits, into lp[s % 2][part], so a draw only adds the two shares. The last
    draw, n - 1, is left to the caller."""
    cdef int S = <int>(P + n - 1), s = 0, i, k, have = -1
    cdef Py_ssize_t cut = fastrnn_split_point(H), drawn = 0, d
    cdef int32_t x = 0
    cdef uint64_t r[4]
    cdef floating* z = tw
    cdef floating* op = tw + H
    cdef floating* sel = op + Vp
    cdef fastrnn_fpmode_t mode = fastrnn_ftz_on()
    for i in range(4):
        r[i] = rng0[i]
    while True:
        s = fastrnn_steps_next(steps, s)
        if s >= S:
            break
        if s > 0:
            fastrnn_steps_wait(steps, s - 1)    # the state before step s is complete
        for i in range(2):
            k = me ^ i
            if not fastrnn_steps_claim(steps, k, s):
                continue
            if have != s:
                if s < P:
                    x = feed[s]
                else:
                    d = s - P
                    if not greedy:
                        while drawn < d:     # skip the draws of steps others took
                            _xoshiro_next(r)
                            drawn += 1
                        drawn += 1           # _draw takes draw d
                    x = _draw(lp + (s % 2) * 2 * Lp, lp + ((s % 2) * 2 + 1) * Lp, bq, op,
                              sel, ex, NULL, V, Vp, inv_temp, top_k, 1.0, greedy, r)
                have = s
            if k == 0 and s >= P:
                out[s - P] = x
            _step_part(W_xh, W_hh, b_h, x, hbuf + (s % 2) * H, hbuf + ((s + 1) % 2) * H,
                       z, H, cut if k else 0, H if k else cut, nonlin)
            if s + 1 >= P:   # the state after step s feeds draw s + 1 - P
                _partial_logits(hbuf + ((s + 1) % 2) * H, Wq, lp + (((s + 1) % 2) * 2 + k) * Lp,
                                cut if k else 0, H if k else cut, Vp)
            fastrnn_steps_done(steps, k, s)
        s += 1
    fastrnn_fp_restore(mode)


# generate() splits its steps across two threads from this hidden size (below it,
# the threads meeting once per step cost more than half a step saves) and this many
# steps (a parallel region costs a few microseconds to start)
cdef Py_ssize_t SPLIT_MIN_H = 125
cdef Py_ssize_t SPLIT_MIN_STEPS = 32


def set_split_thresholds(Py_ssize_t min_hidden, Py_ssize_t min_steps):
    """Set generate()'s thresholds for splitting across two threads; returns the
    old ones (tests set 1, 1 to split every size)."""
    global SPLIT_MIN_H, SPLIT_MIN_STEPS
    old = (SPLIT_MIN_H, SPLIT_MIN_STEPS)
    SPLIT_MIN_H = min_hidden
    SPLIT_MIN_STEPS = min_steps
    return old


def generate(const floating[:, ::1] W_xh,     # IN (V, H)
             const floating[:, ::1] W_hh,     # IN (H, H)
             const floating[::1] b_h,         # IN (H,)
             const floating[:, ::1] W_hq,     # IN (H, V)
             const floating[::1] b_q,         # IN (V,)
             const int32_t[::1] feed,         # IN (P >= 1,) ids fed before the first draw
             int32_t[::1] out,                # OUT (n,) generated ids
             floating[::1] h,                 # IN/OUT (H,) hidden state
             floating[::1] work,              # WORK (H + 2V,)
             uint64_t[::1] rng,               # IN/OUT (4,) xoshiro256** state
             double temperature, Py_ssize_t top_k, bint greedy, str nonlinearity,
             int num_threads=1):
    """Feed ``feed`` through the recurrence, then generate ``len(out)`` ids.

    Each generated id is fed back before the next draw; the last one is not
    fed, so a continuation is ``generate(feed=out[-1:], h=h, rng=rng)``, and
    splitting a run into such pieces gives the same ids as one call.

    With ``num_threads >= 2`` (and OpenMP), long enough runs with H of at least
    125 split each step's hidden units across two threads; the ids, the state
    and the sampler's state are bitwise those of one thread.
    """
    cdef int nonlin
    cdef Py_ssize_t V = W_hq.shape[1], H = W_hh.shape[0], n = out.shape[0]
    cdef Py_ssize_t P = feed.shape[0], i, v
    cdef double inv_temp
    cdef floating* z
    cdef floating* sel
    cdef fastrnn_fpmode_t mode
    cdef fastrnn_steps_t steps
    cdef int tid = 0
    if nonlinearity == "tanh":
        nonlin = TANH
    elif nonlinearity == "relu":
        nonlin = RELU
    else:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if P < 1:
        raise ValueError("feed must hold at least one id")
    if work.shape[0] < H + 2 * V or h.shape[0] != H or rng.shape[0] != 4:
        raise ValueError("work must have H + 2V entries, h H entries, rng 4 words")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if num_threads < 1:
        raise ValueError("num_threads must be >= 1")
    inv_temp = 1.0 / temperature if not greedy else 1.0
    z = &work[0]
    sel = z + H + V               # (work[H:H+V] is unused: the logits live in op below)
    cdef bint split = (FASTRNN_OMP_ENABLED and num_threads >= 2 and n >= 1
                       and H >= SPLIT_MIN_H and P + n - 1 >= SPLIT_MIN_STEPS
                       and P + n < 2147483647)    # steps are counted in C ints
    # W_hq and b_q zero-padded to a multiple of 16 columns, so the output product
    # runs whole vectors (the kept columns are computed exactly as without padding),
    # and the sampler's exponentials: one buffer, allocated once per call. Split
    # runs add both halves of the state and each thread's work area, each on its own
    # cache lines (threads writing one line would pass it back and forth every step).
    cdef Py_ssize_t Vp = (V + 15) // 16 * 16, k
    cdef Py_ssize_t fs = sizeof(floating)
    cdef Py_ssize_t Lp = _up64(Vp * fs) // fs               # a share of the logits
    cdef Py_ssize_t o_wq = _up64(V * sizeof(double))       # byte offsets from base
    cdef Py_ssize_t o_h = _up64(o_wq + (H + 2) * Vp * fs)   # split: state (2, H)
    cdef Py_ssize_t o_lp = _up64(o_h + (2 * H * fs if split else 0))  # shares (2, 2, Lp)
    cdef Py_ssize_t o_t = o_lp + 4 * Lp * fs                # split: thread areas
    cdef Py_ssize_t tb = _up64(V * sizeof(double) + (H + Vp + V) * fs)   # one thread's
    cdef Py_ssize_t cut = fastrnn_split_point(H)
    cdef char* mem = <char*>malloc((o_t + 2 * tb if split else o_t) + 64)
    if mem == NULL:
        raise MemoryError("cannot allocate the sampler's work buffers")
    cdef char* base = mem + (64 - (<size_t>mem) % 64) % 64
    cdef double* ex = <double*>base
    cdef floating* Wq = <floating*>(base + o_wq)
    cdef floating* bq = Wq + H * Vp
    cdef floating* op = bq + Vp
    cdef floating* hbuf = <floating*>(base + o_h)
    cdef floating* lp = <floating*>(base + o_lp)
    for k in range(H):
        for v in range(Vp):
            Wq[k * Vp + v] = W_hq[k, v] if v < V else 0
    for v in range(Vp):
        bq[v] = b_q[v] if v < V else 0
    with nogil:
        if split:
            memcpy(hbuf, &h[0], H * sizeof(floating))
            fastrnn_steps_init(&steps)
            with parallel(num_threads=2):
                tid = fastrnn_omp_thread_id() & 1
                _generate_split(&W_xh[0, 0], &W_hh[0, 0], &b_h[0], Wq, bq, &feed[0], P,
                                &out[0], n, hbuf, lp, Lp,
                                <floating*>(base + o_t + tid * tb + V * sizeof(double)),
                                <double*>(base + o_t + tid * tb), &rng[0], H, V, Vp,
                                inv_temp, top_k, greedy, nonlin, tid, &steps)
            # the state after the last step, and the last draw from it, with the
            # caller's sampler advanced past the draws taken on the threads
            memcpy(&h[0], hbuf + ((P + n - 1) % 2) * H, H * sizeof(floating))
            mode = fastrnn_ftz_on()
            if not greedy:
                for i in range(n - 1):
                    _xoshiro_next(&rng[0])
            k = (P + n - 1) % 2
            out[n - 1] = _draw(lp + 2 * k * Lp, lp + (2 * k + 1) * Lp, bq, op, sel, ex, NULL,
                               V, Vp, inv_temp, top_k, 1.0, greedy, &rng[0])
            fastrnn_fp_restore(mode)
        else:
            mode = fastrnn_ftz_on()
            for i in range(P):
                _step_part(&W_xh[0, 0], &W_hh[0, 0], &b_h[0], feed[i], &h[0], &h[0], z, H,
                           0, H, nonlin)
            for i in range(n):
                if i > 0:
                    _step_part(&W_xh[0, 0], &W_hh[0, 0], &b_h[0], out[i - 1], &h[0], &h[0],
                               z, H, 0, H, nonlin)
                _partial_logits(&h[0], Wq, lp, 0, cut, Vp)
                _partial_logits(&h[0], Wq, lp + Lp, cut, H, Vp)
                out[i] = _draw(lp, lp + Lp, bq, op, sel, ex, NULL, V, Vp, inv_temp, top_k,
                               1.0, greedy, &rng[0])
            fastrnn_fp_restore(mode)
    free(mem)
