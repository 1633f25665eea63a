/* Elementwise kernels of the RNN, written so the compiler vectorises them.
 *
 * float32 tanh and exp use branch-free polynomial / rational approximations
 * (max error a few ulp, far inside the float32 tolerance of the tests), so the
 * loops vectorise instead of calling libm once per value. float64 uses libm.
 *
 * On x86-64 Linux with GCC the hot loops are compiled for AVX-512, AVX2 and
 * baseline SSE2 and the best is picked at load time (target_clones, an ifunc):
 * no -march=native, so the binary runs on any x86-64 CPU.
 */
#ifndef FASTRNN_ELEMENTWISE_H
#define FASTRNN_ELEMENTWISE_H

#include <math.h>
#include <stddef.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FASTRNN_NO_CLONES)
#define FASTRNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTRNN_CLONES
#endif

/* Floating-point exceptions are never inspected, so compares may be
 * if-converted; without this GCC refuses to vectorise the clamps and selects. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

/* tanh(x) = x P(x^2) / Q(x^2), clamped (Eigen's float rational approximation). */
static inline float fastrnn_tanhf_approx(float x) {
    const float clamp = 7.90531110763549805f;
    float xc = x > clamp ? clamp : (x < -clamp ? -clamp : x);
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float r = p / q;
    /* tiny |x|: tanh(x) = x to float precision (and keeps -0.0, subnormals) */
    return fabsf(x) < 0.0004f ? x : r;
}

/* exp(x) for x <= 0 (softmax after subtracting the max): Cephes-style
 * range reduction x = n ln2 + r, degree-6 polynomial, 2^n from the exponent bits.
 * Values below -87.3 flush to 0. */
static inline float fastrnn_expf_nonpos(float x) {
    const float lo = -87.3365447504f;
    const float round_magic = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    float under = x < lo ? 0.0f : 1.0f;
    x = x < lo ? lo : x;
    float n = (x * 1.44269504088896341f + round_magic) - round_magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s * under;
}

FASTRNN_CLONES
static void fastrnn_tanh_f32_any(const float *restrict z, float *restrict h, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) h[i] = fastrnn_tanhf_approx(z[i]);
}

static void fastrnn_tanh_f64(const double *restrict z, double *restrict h, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) h[i] = tanh(z[i]);
}

/* o[i] = exp(o[i] - m); returns the sum, accumulated in 8 fixed lanes so the
 * loop vectorises and the result does not depend on the CPU's vector width. */
static inline double fastrnn_exp_shift_f32_body(float *restrict o, float m, ptrdiff_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            float e = fastrnn_expf_nonpos(o[i + j] - m);
            o[i + j] = e;
            acc[j] += e;
        }
    }
    if (i < n) {  /* the tail as one padded vector (exp(-inf) = 0): same lanes as above */
        float t[8];
        ptrdiff_t r = n - i;
        for (int j = 0; j < 8; j++) t[j] = j < r ? o[i + j] - m : -INFINITY;
        for (int j = 0; j < 8; j++) {
            t[j] = fastrnn_expf_nonpos(t[j]);
            acc[j] += t[j];
        }
        for (int j = 0; j < r; j++) o[i + j] = t[j];
    }
    return (double)(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                    ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

static double fastrnn_exp_shift_f64(double *restrict o, double m, ptrdiff_t n) {
    double s = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double e = exp(o[i] - m);
        o[i] = e;
        s += e;
    }
    return s;
}

/* Softmax cross-entropy over n rows of V logits, in place: each row becomes
 * (softmax(o) - onehot(y)) * scale, and the summed loss log(sum exp(o - max)) -
 * (o_y - max) is returned (each row's term also stored in rowloss unless it is
 * NULL). One compiled loop over the rows (the max and the normalisation vectorise; the max over 16 lanes, exact whatever the order; the
 * normalisation multiplies by scale / sum, rounded once). */
#define FASTRNN_DEFINE_SOFTMAX_XENT(NAME, T, EXPSHIFT, ATTRS)                            \
ATTRS                                                                                    \
static double NAME(T *restrict O, const int32_t *restrict Y, ptrdiff_t n, ptrdiff_t V,   \
                   T scale, double *restrict rowloss) {                                  \
    double total = 0.0;                                                                  \
    for (ptrdiff_t r = 0; r < n; r++) {                                                  \
        T *o = O + r * V;                                                                \
        T mx[16];                                                                        \
        ptrdiff_t v = 0;                                                                 \
        for (int l = 0; l < 16; l++) mx[l] = o[0];                                       \
        for (; v + 16 <= V; v += 16)                                                     \
            for (int l = 0; l < 16; l++) mx[l] = o[v + l] > mx[l] ? o[v + l] : mx[l];    \
        if (v < V && V >= 16) {  /* the tail as the row's last 16 (a max may overlap) */ \
            const T *t = o + V - 16;                                                     \
            for (int l = 0; l < 16; l++) mx[l] = t[l] > mx[l] ? t[l] : mx[l];            \
        } else                                                                           \
            for (; v < V; v++) mx[0] = o[v] > mx[0] ? o[v] : mx[0];                      \
        for (int l = 0; l < 8; l++) mx[l] = mx[l + 8] > mx[l] ? mx[l + 8] : mx[l];       \
        T m = mx[0];                                                                     \
        for (int l = 1; l < 8; l++) m = mx[l] > m ? mx[l] : m;                           \
        T ly = o[Y[r]] - m;                                                              \
        double s = EXPSHIFT(o, m, V);                                                    \
        double lr = log(s) - (double)ly;                                                 \
        total += lr;                                                                     \
        if (rowloss) rowloss[r] = lr;                                                    \
        T f = (T)((double)scale / s);                                                    \
        if (V > 16 && V % 16) {  /* the tail as the row's last 16, scaled before any  */ \
            T t[16];             /* store: overlapped values come out the same        */ \
            for (int l = 0; l < 16; l++) t[l] = o[V - 16 + l] * f;                       \
            for (v = 0; v + 16 <= V; v += 16)                                            \
                for (int l = 0; l < 16; l++) o[v + l] *= f;                              \
            for (int l = 0; l < 16; l++) o[V - 16 + l] = t[l];                           \
        } else                                                                           \
            for (v = 0; v < V; v++) o[v] *= f;                                           \
        o[Y[r]] -= scale;                                                                \
    }                                                                                    \
    return total;                                                                        \
}
FASTRNN_DEFINE_SOFTMAX_XENT(fastrnn_softmax_xent_f32_any, float, fastrnn_exp_shift_f32_body,
                            FASTRNN_CLONES)
FASTRNN_DEFINE_SOFTMAX_XENT(fastrnn_softmax_xent_f64, double, fastrnn_exp_shift_f64, )

/* The bias gradient and the one-hot input gradient of columns [j0, j1), in one
 * pass over dZ (N x ld): db[j] = sum_r dZ[r, j], and, when ids is given,
 * dW[ids[r], j] += dZ[r, j] (dW's rows ldw apart) over rows r in order, after
 * zeroing dW's D rows in those columns. With accumulate, the sum is added to db and dW is not zeroed
 * (blocks of rows in turn). The column sums run in two interleaved sets of
 * partial sums (even and odd rows, added at the end), so the adds of successive
 * rows overlap; the order is fixed, so results do not depend on the CPU or the
 * number of threads.
 *
 * With GCC or Clang, columns go in 64-byte vectors (GCC vector extensions, split
 * into whatever the clone's registers hold), up to four at a time, with the
 * partial sums in registers, then a 32- and a 16-byte vector, and at most three
 * float (one double) columns one at a time. Written as plain loops over a block of columns,
 * GCC unrolled them early and then kept the sums on the stack and did the
 * scatter one float at a time: about 30 cycles per row at H = 32, 7-9% of a d2l
 * training step. */
#if defined(__GNUC__)
#define FASTRNN_BS_VEC 1
#include "_vectypes.h"
#else
#define FASTRNN_BS_VEC 0
#endif

/* NV vectors of L columns from column jb: every row's sums and scatter */
#define FASTRNN_BS_VBODY(VT, T, L, NV)                                                   \
    do {                                                                                 \
        VT a0[NV], a1[NV], v0, v1, d;                                                    \
        for (int q = 0; q < NV; q++) { a0[q] = (VT){0}; a1[q] = (VT){0}; }              \
        ptrdiff_t r = 0;                                                                 \
        for (; r + 2 <= N; r += 2) {                                                     \
            const T *s0 = dZ + r * ld + jb, *s1 = s0 + ld;                               \
            T *d0 = ids ? dW + (ptrdiff_t)ids[r] * ldw + jb : NULL;                      \
            T *d1 = ids ? dW + (ptrdiff_t)ids[r + 1] * ldw + jb : NULL;                  \
            for (int q = 0; q < NV; q++) {                                               \
                memcpy(&v0, s0 + q * L, sizeof v0);                                      \
                memcpy(&v1, s1 + q * L, sizeof v1);                                      \
                a0[q] += v0;                                                             \
                a1[q] += v1;                                                             \
                if (ids) {                                                               \
                    memcpy(&d, d0 + q * L, sizeof d); d += v0;                           \
                    memcpy(d0 + q * L, &d, sizeof d);                                    \
                    memcpy(&d, d1 + q * L, sizeof d); d += v1;  /* after d0: may alias */ \
                    memcpy(d1 + q * L, &d, sizeof d);                                    \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        if (r < N) {                                                                     \
            const T *s0 = dZ + r * ld + jb;                                              \
            T *d0 = ids ? dW + (ptrdiff_t)ids[r] * ldw + jb : NULL;                      \
            for (int q = 0; q < NV; q++) {                                               \
                memcpy(&v0, s0 + q * L, sizeof v0);                                      \
                a0[q] += v0;                                                             \
                if (ids) {                                                               \
                    memcpy(&d, d0 + q * L, sizeof d); d += v0;                           \
                    memcpy(d0 + q * L, &d, sizeof d);                                    \
                }                                                                        \
            }                                                                            \
        }                                                                                \
        for (int q = 0; q < NV; q++) {                                                   \
            VT s = a0[q] + a1[q];                                                        \
            if (accumulate) { memcpy(&d, db + jb + q * L, sizeof d); s = d + s; }        \
            memcpy(db + jb + q * L, &s, sizeof s);                                       \
        }                                                                                \
        jb += NV * L;                                                                    \
    } while (0)

/* the columns left over, one at a time, in the same order of adds */
#define FASTRNN_BS_SCALAR(T)                                                             \
    for (; jb < j1; jb++) {                                                              \
        T a0 = 0, a1 = 0;                                                                \
        ptrdiff_t r = 0;                                                                 \
        for (; r + 2 <= N; r += 2) {                                                     \
            a0 += dZ[r * ld + jb];                                                       \
            a1 += dZ[(r + 1) * ld + jb];                                                 \
            if (ids) {                                                                   \
                dW[(ptrdiff_t)ids[r] * ldw + jb] += dZ[r * ld + jb];                     \
                dW[(ptrdiff_t)ids[r + 1] * ldw + jb] += dZ[(r + 1) * ld + jb];           \
            }                                                                            \
        }                                                                                \
        if (r < N) {                                                                     \
            a0 += dZ[r * ld + jb];                                                       \
            if (ids) dW[(ptrdiff_t)ids[r] * ldw + jb] += dZ[r * ld + jb];                \
        }                                                                                \
        db[jb] = accumulate ? db[jb] + (a0 + a1) : a0 + a1;                              \
    }

#if FASTRNN_BS_VEC
/* 64-byte vectors, then one 32- and one 16-byte vector for the columns left */
#define FASTRNN_BS_VECTORS(VT, VT32, VT16, T)                                            \
    {                                                                                    \
        const ptrdiff_t L = (ptrdiff_t)(64 / sizeof(T));                                 \
        while (j1 - jb >= 4 * L) FASTRNN_BS_VBODY(VT, T, L, 4);                          \
        if (j1 - jb >= 2 * L) FASTRNN_BS_VBODY(VT, T, L, 2);                             \
        if (j1 - jb >= L) FASTRNN_BS_VBODY(VT, T, L, 1);                                 \
        if (j1 - jb >= L / 2) FASTRNN_BS_VBODY(VT32, T, L / 2, 1);                       \
        if (j1 - jb >= L / 4) FASTRNN_BS_VBODY(VT16, T, L / 4, 1);                       \
    }
#else
#define FASTRNN_BS_VECTORS(VT, VT32, VT16, T)
#endif

#define FASTRNN_DEFINE_BIAS_SCATTER(NAME, T, VT, VT32, VT16)                                         \
FASTRNN_CLONES                                                                           \
static void NAME(const T *restrict dZ, ptrdiff_t N, ptrdiff_t ld, ptrdiff_t j0,          \
                 ptrdiff_t j1, T *restrict db, const int32_t *restrict ids,              \
                 T *restrict dW, ptrdiff_t ldw, ptrdiff_t D, int accumulate) {           \
    if (ids && !accumulate)                                                              \
        for (ptrdiff_t d = 0; d < D; d++)                                                \
            for (ptrdiff_t j = j0; j < j1; j++) dW[d * ldw + j] = (T)0;                  \
    ptrdiff_t jb = j0;                                                                   \
    FASTRNN_BS_VECTORS(VT, VT32, VT16, T)                                                \
    FASTRNN_BS_SCALAR(T)                                                                 \
}
FASTRNN_DEFINE_BIAS_SCATTER(fastrnn_bias_scatter_f32, float, fastrnn_v16f, fastrnn_v8f,
                            fastrnn_v4f)
FASTRNN_DEFINE_BIAS_SCATTER(fastrnn_bias_scatter_f64, double, fastrnn_v8d, fastrnn_v4d,
                            fastrnn_v2d)

/* z[b, :] = W[ids[b], :] + bias for n rows of width H: the one-hot input
 * projection (a row gather of W_xh) plus the hidden bias. */
#define FASTRNN_DEFINE_GATHER(NAME, T)                                                   \
FASTRNN_CLONES                                                                           \
static void NAME(const T *restrict W, const int32_t *restrict ids, const T *restrict bias, \
                 T *restrict z, ptrdiff_t n, ptrdiff_t H) {                              \
    for (ptrdiff_t b = 0; b < n; b++) {                                                  \
        const T *w = W + (ptrdiff_t)ids[b] * H;                                          \
        T *zb = z + b * H;                                                               \
        for (ptrdiff_t j = 0; j < H; j++) zb[j] = w[j] + bias[j];                        \
    }                                                                                    \
}
FASTRNN_DEFINE_GATHER(fastrnn_gather_f32, float)
FASTRNN_DEFINE_GATHER(fastrnn_gather_f64, double)

/* dz = (dz + dh) * (1 - h^2)  (tanh) */
FASTRNN_CLONES
static void fastrnn_dtanh_f32(float *restrict dz, const float *restrict dh,
                              const float *restrict h, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) dz[i] = (dz[i] + dh[i]) * (1.0f - h[i] * h[i]);
}

static void fastrnn_dtanh_f64(double *restrict dz, const double *restrict dh,
                              const double *restrict h, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) dz[i] = (dz[i] + dh[i]) * (1.0 - h[i] * h[i]);
}

/* sum_i g_i^2 in double, in 16 fixed lanes (lane l takes i = l mod 16) combined
 * in a fixed tree: deterministic, and vectorisable, unlike one serial sum whose
 * add latency made a 1M-value norm cost a millisecond. */
#define FASTRNN_SUMSQ_LANES 16
#define FASTRNN_DEFINE_SUMSQ(NAME, T)                                                    \
FASTRNN_CLONES                                                                           \
static double NAME(const T *restrict g, ptrdiff_t n) {                                   \
    double acc[FASTRNN_SUMSQ_LANES] = {0};                                               \
    ptrdiff_t i = 0;                                                                     \
    for (; i + FASTRNN_SUMSQ_LANES <= n; i += FASTRNN_SUMSQ_LANES)                       \
        for (int l = 0; l < FASTRNN_SUMSQ_LANES; l++) {                                  \
            double x = (double)g[i + l];                                                 \
            acc[l] += x * x;                                                             \
        }                                                                                \
    for (int l = 0; i < n; i++, l++) {                                                   \
        double x = (double)g[i];                                                         \
        acc[l] += x * x;                                                                 \
    }                                                                                    \
    for (int w = FASTRNN_SUMSQ_LANES / 2; w > 0; w /= 2)                                 \
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];                                \
    return acc[0];                                                                       \
}
FASTRNN_DEFINE_SUMSQ(fastrnn_sumsq_f32, float)
FASTRNN_DEFINE_SUMSQ(fastrnn_sumsq_f64, double)

/* 1 if every one of n values is finite, else 0. x - x is 0 for a finite x and NaN
 * for an infinity or a NaN, and a NaN stays in its lane's sum: one vectorised
 * pass with no branch, where numpy's isfinite(a).all() makes a temporary array. */
#define FASTRNN_FINITE_LANES 64   /* several vectors of sums: the add latency hides */
#define FASTRNN_DEFINE_ALL_FINITE(NAME, T)                                               \
FASTRNN_CLONES                                                                           \
static int NAME(const T *restrict x, ptrdiff_t n) {                                     \
    T acc[FASTRNN_FINITE_LANES] = {0};                                                   \
    ptrdiff_t i = 0;                                                                     \
    for (; i + FASTRNN_FINITE_LANES <= n; i += FASTRNN_FINITE_LANES)                     \
        for (int l = 0; l < FASTRNN_FINITE_LANES; l++) acc[l] += x[i + l] - x[i + l];   \
    for (int l = 0; i < n; i++, l++) acc[l] += x[i] - x[i];                              \
    int ok = 1;                                                                          \
    for (int l = 0; l < FASTRNN_FINITE_LANES; l++) ok &= acc[l] == 0;                    \
    return ok;                                                                           \
}
FASTRNN_DEFINE_ALL_FINITE(fastrnn_all_finite_f32, float)
FASTRNN_DEFINE_ALL_FINITE(fastrnn_all_finite_f64, double)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* float32 tanh and softmax rows: the AVX-512 intrinsics of _avx512.h where the
 * CPU has them (and FASTRNN_KERNEL_LEVEL does not cap it), else the loops above */
#include "_avx512.h"

static void fastrnn_tanh_f32(const float *restrict z, float *restrict h, ptrdiff_t n) {
#ifdef FASTRNN_PG_X86
    if (fastrnn_pgemm_level() == 2) {
        fastrnn_tanh_f32_avx512(z, h, n);
        return;
    }
#endif
    fastrnn_tanh_f32_any(z, h, n);
}

static double fastrnn_softmax_xent_f32(float *restrict O, const int32_t *restrict Y,
                                       ptrdiff_t n, ptrdiff_t V, float scale,
                                       double *restrict rowloss) {
#ifdef FASTRNN_PG_X86
    if (fastrnn_pgemm_level() == 2)
        return fastrnn_softmax_xent_f32_avx512(O, Y, n, V, scale, rowloss);
#endif
    return fastrnn_softmax_xent_f32_any(O, Y, n, V, scale, rowloss);
}

#endif
