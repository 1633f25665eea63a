/* y(N) = x(K) @ W(K, N) (+ y), W row-major with leading dimension ldw: the one-row
 * matrix product of the recurrence when a thread owns a single sequence
 * (B = 1 training, generation).
 *
 * BLAS gemv is tuned for large matrices; for the H x H recurrence (H in the
 * hundreds, W resident in L2) this streaming form, which keeps a 64-wide
 * block of y in registers while walking down the rows of W, is about twice
 * as fast. Summation order is fixed (k ascending, 4 rows per step), so the
 * result does not depend on the CPU's vector width.
 */
#ifndef FASTRNN_VECMAT_H
#define FASTRNN_VECMAT_H

#include <stddef.h>

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FASTRNN_NO_CLONES)
#define FASTRNN_VM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTRNN_VM_CLONES
#endif

#define FASTRNN_VM_BLOCK 64

#define FASTRNN_DEFINE_VECMAT(NAME, T)                                                   \
FASTRNN_VM_CLONES                                                                        \
static void NAME(const T *restrict x, const T *restrict W, ptrdiff_t ldw,              \
                 T *restrict y, ptrdiff_t K, ptrdiff_t N, int accumulate) {              \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += FASTRNN_VM_BLOCK) {                             \
        ptrdiff_t nb = N - j0 < FASTRNN_VM_BLOCK ? N - j0 : FASTRNN_VM_BLOCK;            \
        T acc[FASTRNN_VM_BLOCK];                                                         \
        if (nb == FASTRNN_VM_BLOCK) {                                                    \
            for (int j = 0; j < FASTRNN_VM_BLOCK; j++)                                   \
                acc[j] = accumulate ? y[j0 + j] : (T)0;                                  \
            ptrdiff_t k = 0;                                                             \
            for (; k + 4 <= K; k += 4) {                                                 \
                const T *w0 = W + k * ldw + j0, *w1 = w0 + ldw, *w2 = w1 + ldw,         \
                        *w3 = w2 + ldw;                                          \
                T a0 = x[k], a1 = x[k + 1], a2 = x[k + 2], a3 = x[k + 3];               \
                for (int j = 0; j < FASTRNN_VM_BLOCK; j++)                               \
                    acc[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j]);     \
            }                                                                            \
            for (; k < K; k++) {                                                         \
                const T *w0 = W + k * ldw + j0;                                          \
                T a0 = x[k];                                                             \
                for (int j = 0; j < FASTRNN_VM_BLOCK; j++) acc[j] += a0 * w0[j];         \
            }                                                                            \
            for (int j = 0; j < FASTRNN_VM_BLOCK; j++) y[j0 + j] = acc[j];               \
        } else {                                                                         \
            for (ptrdiff_t j = 0; j < nb; j++)                                           \
                acc[j] = accumulate ? y[j0 + j] : (T)0;                                  \
            ptrdiff_t k = 0;                                                             \
            for (; k + 4 <= K; k += 4) {                                                 \
                const T *w0 = W + k * ldw + j0, *w1 = w0 + ldw, *w2 = w1 + ldw,         \
                        *w3 = w2 + ldw;                                          \
                T a0 = x[k], a1 = x[k + 1], a2 = x[k + 2], a3 = x[k + 3];               \
                for (ptrdiff_t j = 0; j < nb; j++)                                       \
                    acc[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j]);     \
            }                                                                            \
            for (; k < K; k++) {                                                         \
                const T *w0 = W + k * ldw + j0;                                          \
                T a0 = x[k];                                                             \
                for (ptrdiff_t j = 0; j < nb; j++) acc[j] += a0 * w0[j];                 \
            }                                                                            \
            for (ptrdiff_t j = 0; j < nb; j++) y[j0 + j] = acc[j];                       \
        }                                                                                \
    }                                                                                    \
}

/* y(M) = W(M, N) @ x(N), i.e. the row vector x @ W^T: 4 rows at a time, each a
 * dot product accumulated in 16 fixed lanes (vectorisable, order fixed). */
#define FASTRNN_LANES 16
#define FASTRNN_DEFINE_MATVEC(NAME, T)                                                   \
FASTRNN_VM_CLONES                                                                        \
static void NAME(const T *restrict W, const T *restrict x, T *restrict y,               \
                 ptrdiff_t M, ptrdiff_t N) {                                             \
    ptrdiff_t nv = N - N % FASTRNN_LANES;                                                \
    ptrdiff_t i = 0;                                                                     \
    for (; i + 4 <= M; i += 4) {                                                         \
        const T *w0 = W + i * N, *w1 = w0 + N, *w2 = w1 + N, *w3 = w2 + N;               \
        T a0[FASTRNN_LANES] = {0}, a1[FASTRNN_LANES] = {0};                              \
        T a2[FASTRNN_LANES] = {0}, a3[FASTRNN_LANES] = {0};                              \
        for (ptrdiff_t j = 0; j < nv; j += FASTRNN_LANES) {                              \
            for (int l = 0; l < FASTRNN_LANES; l++) {                                    \
                T xv = x[j + l];                                                         \
                a0[l] += w0[j + l] * xv;                                                 \
                a1[l] += w1[j + l] * xv;                                                 \
                a2[l] += w2[j + l] * xv;                                                 \
                a3[l] += w3[j + l] * xv;                                                 \
            }                                                                            \
        }                                                                                \
        for (ptrdiff_t j = nv; j < N; j++) {                                             \
            a0[0] += w0[j] * x[j]; a1[0] += w1[j] * x[j];                                \
            a2[0] += w2[j] * x[j]; a3[0] += w3[j] * x[j];                                \
        }                                                                                \
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                \
        for (int l = 0; l < FASTRNN_LANES; l++) {                                        \
            s0 += a0[l]; s1 += a1[l]; s2 += a2[l]; s3 += a3[l];                          \
        }                                                                                \
        y[i] = s0; y[i + 1] = s1; y[i + 2] = s2; y[i + 3] = s3;                          \
    }                                                                                    \
    for (; i < M; i++) {                                                                 \
        const T *w0 = W + i * N;                                                         \
        T a0[FASTRNN_LANES] = {0};                                                       \
        for (ptrdiff_t j = 0; j < nv; j += FASTRNN_LANES)                                \
            for (int l = 0; l < FASTRNN_LANES; l++) a0[l] += w0[j + l] * x[j + l];       \
        for (ptrdiff_t j = nv; j < N; j++) a0[0] += w0[j] * x[j];                        \
        T s0 = 0;                                                                        \
        for (int l = 0; l < FASTRNN_LANES; l++) s0 += a0[l];                             \
        y[i] = s0;                                                                       \
    }                                                                                    \
}

FASTRNN_DEFINE_VECMAT(fastrnn_vecmat_f32, float)
FASTRNN_DEFINE_VECMAT(fastrnn_vecmat_f64, double)
FASTRNN_DEFINE_MATVEC(fastrnn_matvec_f32, float)
FASTRNN_DEFINE_MATVEC(fastrnn_matvec_f64, double)

#endif
