# The generator's random numbers and sampler, as inline functions: cimported by
# fastrnn._layers.generate_stack (the sampling loop of every cell and depth) and by
# fastrnn._lm (the generator's seeding and the test hooks rng_next / rng_uniform).
# With top_p >= 1, _sample never touches srt.
from cython cimport floating
from libc.math cimport exp
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport qsort

from _rowops cimport _vecmat


cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t _xoshiro_next(uint64_t* s) noexcept nogil:
    """Next xoshiro256** output; advances the 4-word state s."""
    cdef uint64_t result = _rotl(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


cdef inline double _uniform(uint64_t* s) noexcept nogil:
    """Uniform double in [0, 1): the top 53 bits of one xoshiro256** output."""
    return <double>(_xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0)


cdef inline floating _kth_largest(floating* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The k-th largest of a[0:n] (1 <= k <= n) by quickselect; permutes a."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j, target = k - 1
    cdef floating pivot, tmp
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:            # Hoare partition, descending order
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return a[target]
    return a[target]


cdef inline int _cmp_desc(const void* a, const void* b) noexcept nogil:
    cdef double x = (<const double*>a)[0], y = (<const double*>b)[0]
    return (x < y) - (x > y)


cdef inline int32_t _sample(const floating* o,       # IN  (V,) logits
                            floating* work,          # WORK (V,)
                            double* ex,              # WORK (V,) the kept exponentials
                            double* srt,             # WORK (V,) (top_p < 1 only)
                            Py_ssize_t V, double inv_temp, Py_ssize_t top_k, double top_p,
                            bint greedy, uint64_t* rng) noexcept nogil:
    """Draw an id from softmax(o / T) over the logits >= the top_k-th largest, then
    (top_p < 1) over the nucleus: the fewest most likely of those whose probabilities
    sum to at least top_p (every id as likely as the least likely one kept is kept
    too). One uniform per draw, whatever top_k and top_p."""
    cdef Py_ssize_t v, best = 0, m
    cdef floating mx = o[0], thresh
    cdef double total, u, acc, cut = 0.0
    for v in range(1, V):
        if o[v] > mx:             # first maximum on ties, like numpy.argmax
            mx = o[v]
            best = v
    if greedy:
        return <int32_t>best
    if 0 < top_k < V:
        for v in range(V):
            work[v] = o[v]
        thresh = _kth_largest(work, V, top_k)
    else:
        thresh = mx
        for v in range(V):
            if o[v] < thresh:
                thresh = o[v]
    total = 0.0
    for v in range(V):        # each exponential once (libm exp is most of a draw)
        if o[v] >= thresh:
            ex[v] = exp((<double>o[v] - <double>mx) * inv_temp)
            total += ex[v]
    if top_p < 1.0:
        # the nucleus: sorted kept exponentials, cut at the first whose running sum
        # reaches top_p of the total; ids below the cut are dropped
        m = 0
        for v in range(V):
            if o[v] >= thresh:
                srt[m] = ex[v]
                m += 1
        qsort(srt, m, sizeof(double), _cmp_desc)
        acc = 0.0
        cut = srt[m - 1]
        for v in range(m):
            acc += srt[v]
            if acc >= top_p * total:
                cut = srt[v]
                break
        total = 0.0
        for v in range(V):
            if o[v] >= thresh:
                if ex[v] < cut:
                    ex[v] = 0.0       # out of the nucleus: never drawn below
                else:
                    total += ex[v]
    u = _uniform(rng) * total
    acc = 0.0
    for v in range(V):
        if o[v] >= thresh and ex[v] >= cut:
            acc += ex[v]
            best = v              # the last kept id absorbs rounding at the top end
            if u < acc:
                break
    return <int32_t>best


cdef inline void _partial_logits(const floating* h, const floating* Wq, floating* out,
                                 Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t Vp) noexcept nogil:
    """out(Vp) = h[j0:j1] W_hq[j0:j1] over the padded columns: one part's share of
    the logits (zeros for an empty part)."""
    cdef Py_ssize_t v
    if j1 <= j0:
        for v in range(Vp):
            out[v] = 0
        return
    _vecmat(h + j0, Wq + j0 * Vp, Vp, out, j1 - j0, Vp, 0)


cdef inline int32_t _draw(const floating* p0, const floating* p1, const floating* bq,
                          floating* op, floating* sel, double* ex, double* srt, Py_ssize_t V,
                          Py_ssize_t Vp, double inv_temp, Py_ssize_t top_k, double top_p,
                          bint greedy, uint64_t* rng) noexcept nogil:
    """One draw from O = (b_q + p0) + p1 (left in op), p0 and p1 two shares of
    H_t W_hq (_partial_logits)."""
    cdef Py_ssize_t v
    for v in range(Vp):
        op[v] = (bq[v] + p0[v]) + p1[v]
    return _sample(op, sel, ex, srt, V, inv_temp, top_k, top_p, greedy, rng)
