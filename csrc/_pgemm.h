/* C(M, N) (+)= A(M, K) @ B(K, N) with B packed once, for the serial time loop.
 *
 * Every step of the recurrence multiplies a few batch rows by the same H x H
 * matrix (W_hh forward, W_hh^T backward). BLAS re-packs that matrix at every
 * call: at H = 1024 that is a 4 MB copy per step and per thread, and for small
 * H the packing and call overhead rival the arithmetic. Here the matrix is
 * packed once per kernel call into column panels of NR values (panel p holds
 * B[k, p*NR .. p*NR + NR) for k = 0..K-1, contiguous, zero-padded past N) and
 * each step runs a register-blocked MR x NR micro-kernel over it, reading A's
 * rows in place (row-major, any leading dimension).
 *
 * Numerics: every C[i, j] is accumulated over k in ascending order, one
 * multiply-add at a time, starting from C, bias[j] or 0, whatever the blocking, the
 * row tile a row falls in or the number of threads. So results are identical
 * for any batch split. Which instruction set runs (AVX-512, AVX2+FMA, or the
 * portable code) is chosen once per process from the CPU, as for the other
 * kernels; no -march flag is needed. fastrnn._rnn uses these kernels only at
 * level >= 1 (AVX2+FMA or AVX-512 on x86-64): elsewhere (other CPUs, other
 * compilers) it calls BLAS as before, whose own kernels are faster than this
 * portable code there.
 */
#ifndef FASTRNN_PGEMM_H
#define FASTRNN_PGEMM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "_vectypes.h"

#if defined(_MSC_VER) && !defined(restrict)
#define restrict __restrict
#endif

#define FASTRNN_PG_KC 128  /* k block: an NR x KC panel slice stays in L1 */

/* ------------------------------------------------------------------------
 * packing (shared by every kernel variant; NR is the chosen kernel's width) */

#define FASTRNN_DEFINE_PACK(NAME, T)                                                     \
/* Pack B (K, N) = src if !trans (src is K x N, row stride ld), else src^T (src is  \
 * N x K, row stride ld), into ceil(N / nr) panels of K x nr. */                         \
static void NAME(const T *restrict src, ptrdiff_t ld, int trans, ptrdiff_t K,           \
                 ptrdiff_t N, ptrdiff_t nr, T *restrict dst) {                           \
    for (ptrdiff_t j0 = 0; j0 < N; j0 += nr) {                                           \
        ptrdiff_t w = N - j0 < nr ? N - j0 : nr;                                         \
        T *p = dst + (j0 / nr) * K * nr;                                                 \
        if (!trans) {                                                                    \
            for (ptrdiff_t k = 0; k < K; k++) {                                          \
                const T *s = src + k * ld + j0;                                          \
                ptrdiff_t c = 0;                                                         \
                for (; c < w; c++) p[k * nr + c] = s[c];                                 \
                for (; c < nr; c++) p[k * nr + c] = (T)0;                                \
            }                                                                            \
        } else { /* k blocks of 64, so the nr x 64 block written stays in L1 */         \
            for (ptrdiff_t k0 = 0; k0 < K; k0 += 64) {                                   \
                ptrdiff_t k1 = K - k0 < 64 ? K : k0 + 64;                                \
                for (ptrdiff_t c = 0; c < nr; c++) {                                     \
                    if (c < w) {                                                         \
                        const T *s = src + (j0 + c) * ld;                                \
                        for (ptrdiff_t k = k0; k < k1; k++) p[k * nr + c] = s[k];        \
                    } else {                                                             \
                        for (ptrdiff_t k = k0; k < k1; k++) p[k * nr + c] = (T)0;        \
                    }                                                                    \
                }                                                                        \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

FASTRNN_DEFINE_PACK(fastrnn_pack_f32, float)
FASTRNN_DEFINE_PACK(fastrnn_pack_f64, double)

/* ------------------------------------------------------------------------
 * the micro-kernel loop nest, generic over the accumulator type.
 *
 * ACC(r, h) is accumulator h (0 or 1, each VW wide) of tile row r; the tile is
 * MR x (2*VW). (_tngemm's tiles: rows past M repeat row M-1, their results are
 * not stored, so every row goes through the same instructions.) */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__)) \
    && !defined(FASTRNN_PG_SCALAR)
#define FASTRNN_PG_VECTOR 1
#endif

#ifdef FASTRNN_PG_VECTOR

/* Partial vectors at the right edge of a matrix (n < VW lanes valid, 0 <= n):
 * through a small buffer in general, masked loads/stores with AVX-512 (a libc
 * memcpy per row was 5% of a d2l step at V = 28). */
#define FASTRNN_PG_LOADN(VT, T, VW, dst, src, n) do {                                    \
    T tmp_[VW] = {0};                                                                    \
    memcpy(tmp_, (src), (size_t)(n) * sizeof(T));                                        \
    memcpy(&(dst), tmp_, sizeof(VT)); } while (0)
#define FASTRNN_PG_STOREN(VT, T, VW, dst, vec, n) do {                                   \
    T tmp_[VW];                                                                          \
    memcpy(tmp_, &(vec), sizeof(VT));                                                    \
    memcpy((dst), tmp_, (size_t)(n) * sizeof(T)); } while (0)

#if defined(__x86_64__) && !defined(FASTRNN_NO_CLONES)
#include <immintrin.h>
#define FASTRNN_PG_LOADN_512F(VT, T, VW, dst, src, n)                                    \
    ((dst) = (VT)_mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (src)))
#define FASTRNN_PG_STOREN_512F(VT, T, VW, dst, vec, n)                                   \
    _mm512_mask_storeu_ps((dst), (__mmask16)((1u << (n)) - 1u), (__m512)(vec))
#define FASTRNN_PG_LOADN_512D(VT, T, VW, dst, src, n)                                    \
    ((dst) = (VT)_mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1u), (src)))
#define FASTRNN_PG_STOREN_512D(VT, T, VW, dst, vec, n)                                   \
    _mm512_mask_storeu_pd((dst), (__mmask8)((1u << (n)) - 1u), (__m512d)(vec))
#endif

/* load/store a 2*VW tile row with w <= 2*VW valid values */
#define FASTRNN_PG_LOADW(VT, T, VW, LOADN, c0, c1, src, w) do {                          \
    if ((w) >= (VW)) {                                                                   \
        memcpy(&(c0), (src), sizeof(VT));                                                \
        LOADN(VT, T, VW, c1, (src) + (VW), (w) - (VW));                                  \
    } else {                                                                             \
        LOADN(VT, T, VW, c0, (src), (w));                                                \
        (c1) = (VT){0};                                                                  \
    } } while (0)
#define FASTRNN_PG_STOREW(VT, T, VW, STOREN, dst, c0, c1, w) do {                        \
    if ((w) >= (VW)) {                                                                   \
        memcpy((dst), &(c0), sizeof(VT));                                                \
        STOREN(VT, T, VW, (dst) + (VW), c1, (w) - (VW));                                 \
    } else {                                                                             \
        STOREN(VT, T, VW, (dst), c0, (w));                                               \
    } } while (0)

/* a tile row (c0, c1) from src (NULL: zeros) / to dst, w <= 2*VW values valid */
#define FASTRNN_PG_TILE_LOAD(VT, T, VW, LOADN, c0, c1, src, w) do {                      \
    if ((src) && (w) == 2 * (VW)) {                                                      \
        memcpy(&(c0), (src), sizeof(VT));                                                \
        memcpy(&(c1), (src) + (VW), sizeof(VT));                                         \
    } else if (src) {                                                                    \
        FASTRNN_PG_LOADW(VT, T, VW, LOADN, c0, c1, (src), w);                            \
    } else {                                                                             \
        (c0) = (VT){0};                                                                  \
        (c1) = (VT){0};                                                                  \
    } } while (0)
#define FASTRNN_PG_TILE_STORE(VT, T, VW, STOREN, dst, c0, c1, w) do {                    \
    if ((w) == 2 * (VW)) {                                                               \
        memcpy((dst), &(c0), sizeof(VT));                                                \
        memcpy((dst) + (VW), &(c1), sizeof(VT));                                         \
    } else {                                                                             \
        FASTRNN_PG_STOREW(VT, T, VW, STOREN, (dst), c0, c1, w);                          \
    } } while (0)

/* one k of the micro-kernel: c[r] += a[r][ka] * (b0, b1) for the MR tile rows (a[r]
 * points at tile row r's values of A, ka is this k's offset from it) */
#define FASTRNN_PG_RANK1(T, MR, c0, c1, b0, b1, a, ka) do {                              \
    for (int r = 0; r < (MR); r++) {                                                     \
        T s_ = (a)[r][ka];                                                               \
        (c0)[r] += s_ * (b0);                                                            \
        (c1)[r] += s_ * (b1);                                                            \
    } } while (0)

/* One MRX x NR tile of C at rows i0.., columns j0.. over this k block (the names
 * A, lda, Bp's panel bp, C, ldc, bias, k0, kc, acc_in, w, NR of the loop nest). */
#define FASTRNN_PG_TILE(T, VT, VW, MRX, LOADN, STOREN) do {                              \
    const T *a[MRX];                                                                     \
    VT c0[MRX], c1[MRX];                                                                 \
    for (int r = 0; r < (MRX); r++) {                                                    \
        a[r] = A + (i0 + r) * lda + k0;                                                  \
        const T *src = (k0 == 0 && bias) ? bias + j0 : acc_in ? C + (i0 + r) * ldc + j0 \
                                                           : NULL;                       \
        FASTRNN_PG_TILE_LOAD(VT, T, VW, LOADN, c0[r], c1[r], src, w);                    \
    }                                                                                    \
    for (ptrdiff_t k = 0; k < kc; k++) {                                                 \
        VT b0, b1;                                                                       \
        memcpy(&b0, bp + k * NR, sizeof(VT));                                            \
        memcpy(&b1, bp + k * NR + (VW), sizeof(VT));                                     \
        FASTRNN_PG_RANK1(T, MRX, c0, c1, b0, b1, a, k);                                  \
    }                                                                                    \
    for (int r = 0; r < (MRX); r++)                                                      \
        FASTRNN_PG_TILE_STORE(VT, T, VW, STOREN, C + (i0 + r) * ldc + j0, c0[r], c1[r], w); \
    } while (0)

/* Whole MR-row tiles, then the last M % MR rows as one tile of exactly that many
 * rows (a padded tile would run MR rows' multiply-adds for them: 20% of the work at
 * 25 rows per thread). Every C value gets the same multiply-adds in the same order
 * whatever tile it falls in, so results do not depend on M or on the split. */
#define FASTRNN_DEFINE_PGEMM(NAME, T, VT, VW, MR, ATTR, LOADN, STOREN)                   \
ATTR static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *restrict A,       \
                      ptrdiff_t lda, const T *restrict Bp, T *restrict C, ptrdiff_t ldc, \
                      int accumulate, const T *restrict bias) {                          \
    enum { NR = 2 * (VW) };                                                              \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTRNN_PG_KC) {                                \
        ptrdiff_t kc = K - k0 < FASTRNN_PG_KC ? K - k0 : FASTRNN_PG_KC;                  \
        int acc_in = accumulate || k0 > 0;                                               \
        for (ptrdiff_t j0 = 0; j0 < N; j0 += NR) {                                       \
            ptrdiff_t w = N - j0 < NR ? N - j0 : NR;                                     \
            const T *bp = Bp + (j0 / NR) * K * NR + k0 * NR;                             \
            ptrdiff_t i0 = 0;                                                            \
            for (; i0 + (MR) <= M; i0 += (MR))                                           \
                FASTRNN_PG_TILE(T, VT, VW, MR, LOADN, STOREN);                           \
            switch (M - i0) {                                                            \
            case 5: FASTRNN_PG_TILE(T, VT, VW, 5, LOADN, STOREN); break;                 \
            case 4: FASTRNN_PG_TILE(T, VT, VW, 4, LOADN, STOREN); break;                 \
            case 3: FASTRNN_PG_TILE(T, VT, VW, 3, LOADN, STOREN); break;                 \
            case 2: FASTRNN_PG_TILE(T, VT, VW, 2, LOADN, STOREN); break;                 \
            case 1: FASTRNN_PG_TILE(T, VT, VW, 1, LOADN, STOREN); break;                 \
            default: break;                                                              \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

/* C(M, N) (+)= A^T B with A (K, M) and B (K, N) row-major, read in place: the
 * weight gradients (K = T*B rows). The same micro-kernel walks k, broadcasting
 * A[k, i0..i0+MR) and loading B[k, j0..j0+NR). A panel that runs past N reads
 * the next row's values into lanes that are never stored (lanes are independent),
 * as long as the read ends by B's last value B[K-1, N-1]; the last rows, where it
 * would not, are copied through a small buffer. (B may be a column block of a
 * wider matrix, ldb > N: the reads never pass its last row's N values.) */
#define FASTRNN_DEFINE_TNGEMM(NAME, T, VT, VW, MR, ATTR, LOADN, STOREN)                 \
ATTR static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *restrict A,       \
                      ptrdiff_t lda, const T *restrict B, ptrdiff_t ldb, T *restrict C,  \
                      ptrdiff_t ldc, int accumulate) {                                   \
    enum { NR = 2 * (VW) };                                                              \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += 4 * FASTRNN_PG_KC) {                            \
        ptrdiff_t kc = K - k0 < 4 * FASTRNN_PG_KC ? K - k0 : 4 * FASTRNN_PG_KC;          \
        int acc_in = accumulate || k0 > 0;                                               \
        for (ptrdiff_t j0 = 0; j0 < N; j0 += NR) {                                       \
            ptrdiff_t w = N - j0 < NR ? N - j0 : NR;                                     \
            /* rows k (global) whose NR-wide read from B[k, j0] ends by B's last value,  \
             * B[K-1, N-1] (B may be a column block of a wider matrix: past that value \
             * there may be nothing)                                                    */ \
            const ptrdiff_t kend_ = (K - 1) * ldb + N;                                   \
            ptrdiff_t kfull = (kend_ - j0 - NR) >= 0 ? (kend_ - j0 - NR) / ldb + 1 : 0;   \
            ptrdiff_t kend = kfull - k0 < kc ? (kfull - k0 > 0 ? kfull - k0 : 0) : kc;   \
            const T *bp = B + k0 * ldb + j0;                                             \
            for (ptrdiff_t i0 = 0; i0 < M; i0 += (MR)) {                                 \
                ptrdiff_t m = M - i0 < (MR) ? M - i0 : (MR);                             \
                const T *a[MR];                                                          \
                VT c0[MR], c1[MR];                                                       \
                for (int r = 0; r < (MR); r++) {                                         \
                    ptrdiff_t i = i0 + (r < m ? r : m - 1);                              \
                    a[r] = A + k0 * lda + i;                                             \
                    const T *src = acc_in ? C + i * ldc + j0 : NULL;                     \
                    FASTRNN_PG_TILE_LOAD(VT, T, VW, LOADN, c0[r], c1[r], src, w);        \
                }                                                                        \
                ptrdiff_t k = 0;                                                         \
                for (; k < kend; k++) {                                                  \
                    VT b0, b1;                                                           \
                    memcpy(&b0, bp + k * ldb, sizeof(VT));                               \
                    memcpy(&b1, bp + k * ldb + (VW), sizeof(VT));                        \
                    FASTRNN_PG_RANK1(T, MR, c0, c1, b0, b1, a, k * lda);                 \
                }                                                                        \
                for (; k < kc; k++) {                                                    \
                    VT b0, b1;                                                           \
                    FASTRNN_PG_LOADW(VT, T, VW, LOADN, b0, b1, bp + k * ldb, w);         \
                    FASTRNN_PG_RANK1(T, MR, c0, c1, b0, b1, a, k * lda);                 \
                }                                                                        \
                for (int r = 0; r < m; r++)                                              \
                    FASTRNN_PG_TILE_STORE(VT, T, VW, STOREN, C + (i0 + r) * ldc + j0,    \
                                          c0[r], c1[r], w);                              \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}

#if defined(__x86_64__) && !defined(FASTRNN_NO_CLONES)
#define FASTRNN_PG_X86 1
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f32_avx512, float, fastrnn_v16f, 16, 6,
                     __attribute__((target("avx512f"))), FASTRNN_PG_LOADN_512F,
                     FASTRNN_PG_STOREN_512F)
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f64_avx512, double, fastrnn_v8d, 8, 6,
                     __attribute__((target("avx512f"))), FASTRNN_PG_LOADN_512D,
                     FASTRNN_PG_STOREN_512D)
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f32_avx2, float, fastrnn_v8f, 8, 6,
                     __attribute__((target("avx2,fma"))), FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f64_avx2, double, fastrnn_v4d, 4, 6,
                     __attribute__((target("avx2,fma"))), FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f32_avx512, float, fastrnn_v16f, 16, 6,
                      __attribute__((target("avx512f"))), FASTRNN_PG_LOADN_512F,
                      FASTRNN_PG_STOREN_512F)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f64_avx512, double, fastrnn_v8d, 8, 6,
                      __attribute__((target("avx512f"))), FASTRNN_PG_LOADN_512D,
                      FASTRNN_PG_STOREN_512D)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f32_avx2, float, fastrnn_v8f, 8, 6,
                      __attribute__((target("avx2,fma"))), FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f64_avx2, double, fastrnn_v4d, 4, 6,
                      __attribute__((target("avx2,fma"))), FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
#endif
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f32_base, float, fastrnn_v4f, 4, 4, , FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_PGEMM(fastrnn_pgemm_f64_base, double, fastrnn_v2d, 2, 4, , FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f32_base, float, fastrnn_v4f, 4, 4, , FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)
FASTRNN_DEFINE_TNGEMM(fastrnn_tngemm_f64_base, double, fastrnn_v2d, 2, 4, , FASTRNN_PG_LOADN, FASTRNN_PG_STOREN)

#else  /* portable C: the same loop nest with scalar accumulators */

#define FASTRNN_DEFINE_PGEMM_SCALAR(NAME, T, NR, MR)                                     \
static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *restrict A,            \
                 ptrdiff_t lda, const T *restrict Bp, T *restrict C, ptrdiff_t ldc,      \
                 int accumulate, const T *restrict bias) {                               \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FASTRNN_PG_KC) {                                \
        ptrdiff_t kc = K - k0 < FASTRNN_PG_KC ? K - k0 : FASTRNN_PG_KC;                  \
        int acc_in = accumulate || k0 > 0;                                               \
        for (ptrdiff_t j0 = 0; j0 < N; j0 += (NR)) {                                     \
            ptrdiff_t w = N - j0 < (NR) ? N - j0 : (NR);                                 \
            const T *bp = Bp + (j0 / (NR)) * K * (NR) + k0 * (NR);                       \
            for (ptrdiff_t i0 = 0; i0 < M; i0 += (MR)) {                                 \
                ptrdiff_t m = M - i0 < (MR) ? M - i0 : (MR);                             \
                T c[MR][NR];                                                             \
                const T *a[MR];                                                          \
                for (int r = 0; r < (MR); r++) {                                         \
                    ptrdiff_t i = i0 + (r < m ? r : m - 1);                              \
                    a[r] = A + i * lda + k0;                                             \
                    for (int q = 0; q < (NR); q++)                                       \
                        c[r][q] = q >= w ? (T)0 : (k0 == 0 && bias) ? bias[j0 + q]      \
                                  : acc_in ? C[i * ldc + j0 + q] : (T)0;                 \
                }                                                                        \
                for (ptrdiff_t k = 0; k < kc; k++)                                       \
                    for (int r = 0; r < (MR); r++) {                                     \
                        T s = a[r][k];                                                   \
                        for (int q = 0; q < (NR); q++) c[r][q] += s * bp[k * (NR) + q];  \
                    }                                                                    \
                for (int r = 0; r < m; r++)                                              \
                    for (ptrdiff_t q = 0; q < w; q++) C[(i0 + r) * ldc + j0 + q] = c[r][q]; \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
}
FASTRNN_DEFINE_PGEMM_SCALAR(fastrnn_pgemm_f32_base, float, 8, 4)
FASTRNN_DEFINE_PGEMM_SCALAR(fastrnn_pgemm_f64_base, double, 4, 4)

#define FASTRNN_DEFINE_TNGEMM_SCALAR(NAME, T)                                            \
static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *restrict A,            \
                 ptrdiff_t lda, const T *restrict B, ptrdiff_t ldb, T *restrict C,       \
                 ptrdiff_t ldc, int accumulate) {                                        \
    for (ptrdiff_t i = 0; i < M; i++) {                                                  \
        T *c = C + i * ldc;                                                              \
        if (!accumulate)                                                                 \
            for (ptrdiff_t j = 0; j < N; j++) c[j] = (T)0;                               \
        for (ptrdiff_t k = 0; k < K; k++) {                                              \
            T s = A[k * lda + i];                                                        \
            const T *b = B + k * ldb;                                                    \
            for (ptrdiff_t j = 0; j < N; j++) c[j] += s * b[j];                          \
        }                                                                                \
    }                                                                                    \
}
FASTRNN_DEFINE_TNGEMM_SCALAR(fastrnn_tngemm_f32_base, float)
FASTRNN_DEFINE_TNGEMM_SCALAR(fastrnn_tngemm_f64_base, double)

#endif

/* ------------------------------------------------------------------------
 * dispatch: one variant per process, chosen from the CPU at first use */

/* 2 = AVX-512, 1 = AVX2+FMA, 0 = portable. The environment variable
 * FASTRNN_KERNEL_LEVEL caps it (tests run every variant this CPU supports). The
 * first call must happen before threads use it (fastrnn._rnn calls it at import). */
static int fastrnn_pgemm_level(void) {
#ifdef FASTRNN_PG_X86
    static int level = -1;
    if (level < 0) {
        const char *cap = getenv("FASTRNN_KERNEL_LEVEL");
        int l;
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f"))
            l = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            l = 1;
        else
            l = 0;
        if (cap && cap[0] >= '0' && cap[0] <= '2' && cap[0] - '0' < l)
            l = cap[0] - '0';
        level = l;
    }
    return level;
#else
    return 0;
#endif
}

/* Panel width NR of the variant this CPU runs (pack with this). */
static ptrdiff_t fastrnn_pgemm_nr_f32(void) {
#ifdef FASTRNN_PG_X86
    int l = fastrnn_pgemm_level();
    return l == 2 ? 32 : l == 1 ? 16 : 8;
#else
    return 8;
#endif
}

static ptrdiff_t fastrnn_pgemm_nr_f64(void) {
#ifdef FASTRNN_PG_X86
    int l = fastrnn_pgemm_level();
    return l == 2 ? 16 : l == 1 ? 8 : 4;
#else
    return 4;
#endif
}

/* NAME(...) runs NAME_avx512, NAME_avx2 or NAME_base by fastrnn_pgemm_level() */
#ifdef FASTRNN_PG_X86
#define FASTRNN_DEFINE_DISPATCH(NAME, PARAMS, ARGS)                                      \
static void NAME PARAMS {                                                                \
    int l_ = fastrnn_pgemm_level();                                                      \
    if (l_ == 2) NAME##_avx512 ARGS;                                                     \
    else if (l_ == 1) NAME##_avx2 ARGS;                                                  \
    else NAME##_base ARGS;                                                               \
}
#else
#define FASTRNN_DEFINE_DISPATCH(NAME, PARAMS, ARGS) static void NAME PARAMS { NAME##_base ARGS; }
#endif

FASTRNN_DEFINE_DISPATCH(fastrnn_pgemm_f32,
    (ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *Bp,
     float *C, ptrdiff_t ldc, int accumulate, const float *bias),
    (M, N, K, A, lda, Bp, C, ldc, accumulate, bias))
FASTRNN_DEFINE_DISPATCH(fastrnn_pgemm_f64,
    (ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda, const double *Bp,
     double *C, ptrdiff_t ldc, int accumulate, const double *bias),
    (M, N, K, A, lda, Bp, C, ldc, accumulate, bias))
FASTRNN_DEFINE_DISPATCH(fastrnn_tngemm_f32,
    (ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
     ptrdiff_t ldb, float *C, ptrdiff_t ldc, int accumulate),
    (M, N, K, A, lda, B, ldb, C, ldc, accumulate))
FASTRNN_DEFINE_DISPATCH(fastrnn_tngemm_f64,
    (ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B,
     ptrdiff_t ldb, double *C, ptrdiff_t ldc, int accumulate),
    (M, N, K, A, lda, B, ldb, C, ldc, accumulate))

#endif
