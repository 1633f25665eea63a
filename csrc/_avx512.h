/* AVX-512 float32 tanh and softmax cross-entropy rows, written with intrinsics.
 *
 * _elementwise.h's portable loops are compiled for AVX-512 too (target_clones),
 * but two things there cost more than the arithmetic:
 *  - tanh's rational approximation divides, and vdivps is slow and, on a shared
 *    core, contended. Here 1/Q comes from vrcp14ps and one Newton step (about
 *    2^-28 relative error, under the rounding of the product that follows).
 *  - A softmax row of V = 28 logits is too short for GCC's loops: the max came
 *    out as a chain of scalar maxss, the exponentials in 8-wide vectors and the
 *    log and the division once per row through libm. Here each row is two
 *    16-wide vectors (the tail masked), and the log of the row sums and the
 *    scale / sum run once per 16 rows, vectorised across rows.
 * Measured: a d2l forward pass (B = 1024, H = 32, V = 28, T = 32) spent 40% of
 * its time in the softmax rows and libm's log.
 *
 * The functions here are chosen at run time when the CPU has AVX-512F (the level
 * of csrc/_pgemm.h, so FASTRNN_KERNEL_LEVEL=1 runs the portable loops instead);
 * no -march flag is involved. */
#ifndef FASTRNN_AVX512_H
#define FASTRNN_AVX512_H

#include "_pgemm.h"

#ifdef FASTRNN_PG_X86
#include <immintrin.h>
#include <stdint.h>

#define FASTRNN_A512 __attribute__((target("avx512f")))

/* exp(x) for x <= 0, as fastrnn_expf_nonpos: x = n ln2 + r, the same degree-6
 * polynomial, then p * 2^n; below -87.3 (and -inf) gives 0, NaN stays NaN. */
FASTRNN_A512 static inline __m512 fastrnn_exp512_nonpos(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3365447504f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
    x = _mm512_max_ps(lo, x);                      /* NaN in x passes through */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

/* log(x) for x > 0 (Cephes logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)), and
 * log(m) = f - f^2/2 + f^3 P(f), f = m - 1. About 1 ulp. */
FASTRNN_A512 static inline __m512 fastrnn_log512_pos(__m512 x) {
    __m512 e = _mm512_getexp_ps(x);
    __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356237f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    e = _mm512_mask_add_ps(e, big, e, _mm512_set1_ps(1.0f));
    __m512 f = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
    __m512 z = _mm512_mul_ps(f, f);
    __m512 y = _mm512_set1_ps(7.0376836292e-2f);
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.1514610310e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.1676998740e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.2420140846e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.4249322787e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.6668057665e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.0000714765e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-2.4999993993e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(3.3333331174e-1f));
    y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
    y = _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, y);
    __m512 r = _mm512_add_ps(f, y);
    return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), r);
}

/* h = tanh(z): fastrnn_tanhf_approx's clamp and rational function, with P * (1/Q)
 * from vrcp14ps and a Newton step instead of P / Q. */
FASTRNN_A512 static void fastrnn_tanh_f32_avx512(const float *restrict z, float *restrict h,
                                                 ptrdiff_t n) {
    const __m512 clamp = _mm512_set1_ps(7.90531110763549805f);
    const __m512 nclamp = _mm512_set1_ps(-7.90531110763549805f);
    const __m512 tiny = _mm512_set1_ps(0.0004f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(k, z + i);
        __m512 xc = _mm512_min_ps(clamp, _mm512_max_ps(nclamp, x));   /* NaN passes */
        __m512 x2 = _mm512_mul_ps(xc, xc);
        __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
        p = _mm512_mul_ps(p, xc);
        __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));
        __m512 rq = _mm512_rcp14_ps(q);                       /* q >= 0.0049 */
        rq = _mm512_fmadd_ps(rq, _mm512_fnmadd_ps(q, rq, one), rq);
        __m512 r = _mm512_mul_ps(p, rq);
        /* tiny |x|: tanh(x) = x to float precision (keeps -0.0 and subnormals) */
        __mmask16 small = _mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_LT_OQ);
        _mm512_mask_storeu_ps(h + i, k, _mm512_mask_mov_ps(r, small, x));
    }
}

/* fastrnn_softmax_xent_f32 for AVX-512: rows of V logits become
 * (softmax(o) - onehot(y)) * scale; returns the summed log(sum exp(o - max)) -
 * (o_y - max), and stores each row's term in rowloss unless it is NULL. Rows go in
 * blocks of 16, in passes over the block (so that the long dependency chains of
 * different rows overlap): each row's max; exp(o - max)
 * in place; each row's sum; log of the 16 sums and scale / sum across the rows;
 * then each row scaled, the target's "- scale" applied in the vector holding it.
 * A row's tail (V % 16 columns, V > 16) is done as the row's last 16 values,
 * loaded before the row's first store, so the stores of the values it overlaps
 * write the same numbers; a masked store there would stall the next row's load
 * (measured: most of this function's time went to that). */
FASTRNN_A512 static double fastrnn_softmax_xent_f32_avx512(float *restrict O,
                                                           const int32_t *restrict Y,
                                                           ptrdiff_t n, ptrdiff_t V,
                                                           float scale,
                                                           double *restrict rowloss) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512 sc = _mm512_set1_ps(scale);
    const ptrdiff_t nfull = V / 16, tl = V - 16;
    const __mmask16 tm = (__mmask16)((1u << (V % 16)) - 1);   /* 0 when V % 16 == 0 */
    const int ovl = tm && V > 16;      /* tail as the overlapping last 16 values */
    __m512d tot = _mm512_setzero_pd();
    float ms[16], sums[16], lys[16], fs[16];
    for (ptrdiff_t r0 = 0; r0 < n; r0 += 16) {
        int nr = n - r0 < 16 ? (int)(n - r0) : 16;
        for (int i = 0; i < nr; i++) {
            const float *o = O + (r0 + i) * V;
            __m512 mx = ninf;
            ptrdiff_t c;
            for (c = 0; c < nfull; c++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(o + 16 * c));
            if (ovl) mx = _mm512_max_ps(mx, _mm512_loadu_ps(o + tl));
            else if (tm) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, tm, o + 16 * c));
            ms[i] = _mm512_reduce_max_ps(mx);
            lys[i] = o[Y[r0 + i]] - ms[i];
        }
        for (int i = 0; i < nr; i++) {
            float *o = O + (r0 + i) * V;
            __m512 mv = _mm512_set1_ps(ms[i]);
            __m512 tv = ovl ? _mm512_loadu_ps(o + tl) : ninf;
            ptrdiff_t c;
            for (c = 0; c < nfull; c++)
                _mm512_storeu_ps(o + 16 * c, fastrnn_exp512_nonpos(
                    _mm512_sub_ps(_mm512_loadu_ps(o + 16 * c), mv)));
            if (ovl)
                _mm512_storeu_ps(o + tl, fastrnn_exp512_nonpos(_mm512_sub_ps(tv, mv)));
            else if (tm)   /* V < 16; masked lanes: -inf - m = -inf, exp 0 */
                _mm512_mask_storeu_ps(o + 16 * c, tm, fastrnn_exp512_nonpos(
                    _mm512_sub_ps(_mm512_mask_loadu_ps(ninf, tm, o + 16 * c), mv)));
        }
        for (int i = 0; i < nr; i++) {
            const float *o = O + (r0 + i) * V;
            __m512 acc = _mm512_setzero_ps();
            ptrdiff_t c;
            for (c = 0; c < nfull; c++) acc = _mm512_add_ps(acc, _mm512_loadu_ps(o + 16 * c));
            if (tm) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tm, o + 16 * c));
            sums[i] = _mm512_reduce_add_ps(acc);
        }
        __mmask16 rk = nr == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
        __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), rk, sums);
        __m512 l = _mm512_maskz_sub_ps(rk, fastrnn_log512_pos(s),
                                       _mm512_maskz_loadu_ps(rk, lys));
        if (rowloss) {   /* each row's loss as the n = 1 call would return it */
            float ls[16];
            _mm512_storeu_ps(ls, l);
            for (int i = 0; i < nr; i++) rowloss[r0 + i] = (double)ls[i];
        }
        tot = _mm512_add_pd(tot, _mm512_cvtps_pd(_mm512_castps512_ps256(l)));
        tot = _mm512_add_pd(tot, _mm512_cvtps_pd(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(l), 1))));
        _mm512_storeu_ps(fs, _mm512_div_ps(sc, s));
        for (int i = 0; i < nr; i++) {
            float *o = O + (r0 + i) * V;
            __m512 f = _mm512_set1_ps(fs[i]);
            __m512 tv = ovl ? _mm512_loadu_ps(o + tl) : ninf;
            ptrdiff_t y = Y[r0 + i], c;
            for (c = 0; c < nfull; c++) {
                __mmask16 ym = (y >> 4) == c ? (__mmask16)(1u << (y & 15)) : 0;
                __m512 t = _mm512_mul_ps(_mm512_loadu_ps(o + 16 * c), f);
                _mm512_storeu_ps(o + 16 * c, _mm512_mask_sub_ps(t, ym, t, sc));
            }
            if (ovl) {
                __mmask16 ym = y >= tl ? (__mmask16)(1u << (y - tl)) : 0;
                __m512 t = _mm512_mul_ps(tv, f);
                _mm512_storeu_ps(o + tl, _mm512_mask_sub_ps(t, ym, t, sc));
            } else if (tm) {
                __mmask16 ym = (y >> 4) == c ? (__mmask16)(1u << (y & 15)) : 0;
                __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(tm, o + 16 * c), f);
                _mm512_mask_storeu_ps(o + 16 * c, tm, _mm512_mask_sub_ps(t, ym, t, sc));
            }
        }
    }
    return _mm512_reduce_add_pd(tot);
}
#endif /* FASTRNN_PG_X86 */

#endif
