# cython: language_level=3
"""Compiled pieces of the character-level language model (fastrnn.model).

Optimizer updates over the ONE contiguous flat parameter buffer (and the flat
gradient buffer beside it), gradient clipping, and the samplers' random numbers.

Optimizers (``p`` params, ``g`` gradients, all flat, same length ``P``)::

    sgd      p -= lr * g                                          (d2l)
    adagrad  mem += g*g ; p -= lr * g / sqrt(mem + eps)           (min-char-rnn)
    adam     m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g*g
             p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) (Kingma & Ba)

Clipping::

    global norm   g <- min(1, theta / ||g||) g                    (d2l grad_clipping)
    elementwise   g <- min(max(g, -c), c)                         (min-char-rnn, c = 5)

Random numbers for the samplers: xoshiro256** (Blackman & Vigna), seeded through
splitmix64; its 4-word state lives in a caller-owned uint64 array, so generation can
be stopped and continued (streaming) with identical results. The generation loop of
every model is fastrnn._layers.generate_stack (csrc/_sampling.pxd holds the draw).

Every kernel runs without the GIL, allocates nothing (the caller passes the
workspace), and flushes subnormals for its duration, restoring the caller's
floating-point mode. The Python layer (fastrnn.model) validates arguments.
"""
from cython cimport floating
from libc.math cimport sqrt, isfinite, pow
from libc.stdint cimport int32_t, int64_t, uint64_t

from _fpmode cimport fastrnn_fpmode_t, fastrnn_ftz_on, fastrnn_fp_restore

from _rowops cimport fastrnn_sumsq_f32, fastrnn_sumsq_f64
# the sampler's generator (xoshiro256**), shared with fastrnn._layers.generate_stack
from _sampling cimport _xoshiro_next, _uniform


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
