/* The one cell table: the elementwise forward and backward step of every recurrent
 * cell over one row of gate pre-activations, float and double.
 *
 * Row-vector convention, gates as column blocks in PyTorch's order (SPEC.md):
 *
 *   A = x W_xh + b_h + h W_hh                      (G*H pre-activations, G gates)
 *   rnn : h' = phi(A)                              (phi = tanh | relu)
 *   gru : r = sig(A_r); z = sig(A_z)               ("linear before reset": the n
 *         n = tanh(xn + r * hn)                     block keeps its input part
 *         h' = (1 - z) * n + z * h                  xn = x W_xn + b_n and recurrent
 *                                                   part hn = h W_hn + b_hn apart)
 *   lstm: i, f, o = sig(A_i, A_f, A_o); g = tanh(A_g)
 *         c' = f * c + i * g; h' = o * tanh(c')
 *
 * The time-loop drivers (csrc/_layers.pyx) do the recurrent product and call
 * these per row, while the row is in cache. What backward needs is kept per row
 * in a gate cache of fastrnn_cell_cache_width(cell, H) values:
 *   rnn : nothing (backward reads h' itself)
 *   gru : [r, z, n, hn]      (4H)
 *   lstm: [i, f, g, o]       (4H; tanh(c') is recomputed from c' with the same
 *                             function, so it is bitwise the forward value)
 *
 * Transcendentals: tanh is fastrnn_tanh_f32/_f64 of csrc/_elementwise.h (the
 * vectorised rational approximation for float, AVX-512 where the CPU has it;
 * libm for double), the same function the Elman kernels and the generator use,
 * and sigmoid(x) = 0.5 + 0.5 tanh(x / 2) (exact identity; one vectorised
 * transcendental for every gate, absolute error a few float ulp of 1). Each value
 * is computed the same way whatever row block or thread it falls in, so results
 * do not depend on how the batch is split. Every loop is elementwise over one row
 * and vectorises (no branches but selects).
 */
#ifndef FASTRNN_CELLS_H
#define FASTRNN_CELLS_H

#include <stddef.h>
#include <string.h>

#include "_pgemm.h"        /* fastrnn_pgemm_level: the tanh dispatch */
#include "_elementwise.h"  /* fastrnn_tanh_f32 / fastrnn_tanh_f64 */

/* the one enum (exposed by fastrnn._layers as CELL_* / NONLIN_*) */
enum { FASTRNN_CELL_RNN = 0, FASTRNN_CELL_GRU = 1, FASTRNN_CELL_LSTM = 2 };
enum { FASTRNN_NONLIN_TANH = 0, FASTRNN_NONLIN_RELU = 1 };

/* gate count G */
static inline ptrdiff_t fastrnn_cell_gates(int cell) {
    return cell == FASTRNN_CELL_GRU ? 3 : cell == FASTRNN_CELL_LSTM ? 4 : 1;
}

/* values per row of the gate cache (see above) */
static inline ptrdiff_t fastrnn_cell_cache_width(int cell, ptrdiff_t H) {
    return cell == FASTRNN_CELL_RNN ? 0 : 4 * H;
}

/* The loops below are compiled for AVX-512, AVX2 and baseline x86-64 and picked at
 * load time (FASTRNN_CLONES of _elementwise.h), as the Elman kernels' loops are; the
 * tanh calls dispatch on their own. Compares may be if-converted (relu, the
 * selects): floating-point exceptions are never inspected. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

#define FASTRNN_DEFINE_CELLS(SFX, T, TANH)                                                \
/* sg[j] = sigmoid(a[j]) for n values, via tanh; a is clobbered (halved) */              \
FASTRNN_CLONES                                                                           \
static void fastrnn_sigmoid_##SFX(T *a, T *sg, ptrdiff_t n) {                           \
    for (ptrdiff_t j = 0; j < n; j++) a[j] *= (T)0.5;                                    \
    TANH(a, sg, n);                                                                      \
    for (ptrdiff_t j = 0; j < n; j++) sg[j] = (T)0.5 + (T)0.5 * sg[j];                   \
}                                                                                        \
                                                                                         \
/* Forward step of n units of one row. Gate k of unit j is at [k * ld + j] in a, g and   \
 * wk (ld = H for a whole row; a part of a row passes its first unit and ld = H);        \
 * the per-unit vectors are indexed 0..n-1.                                              \
 *   a    (G blocks) IN/WORK pre-activations (GRU: the n block holds xn only); clobbered \
 *   hn   (n)   IN  GRU: h W_hn + b_hn (else unused); may point into g's hn block       \
 *   hp   (n)   IN  h_{t-1};  cp (n) IN LSTM c_{t-1}                                     \
 *   h    (n)   OUT h_t (may alias hp);  c (n) OUT LSTM c_t (may alias cp)              \
 *   g    (4 blocks) OUT gate cache, or NULL                                             \
 *   wk   (4 blocks) WORK                                                                \
 * Transcendentals run per gate block, each from the part's first unit, so a unit takes  \
 * the same path whether its row is done whole or in parts cut on multiples of 64. */    \
FASTRNN_CLONES                                                                           \
static void fastrnn_cell_fwd_##SFX(int cell, int nonlin, ptrdiff_t n, ptrdiff_t ld,     \
                                   T *a, const T *hn, const T *hp, const T *cp, T *h,    \
                                   T *c, T *g, T *wk) {                                  \
    ptrdiff_t j;                                                                         \
    if (cell == FASTRNN_CELL_RNN) {                                                      \
        if (nonlin == FASTRNN_NONLIN_TANH)                                               \
            TANH(a, h, n);                                                               \
        else                                                                             \
            for (j = 0; j < n; j++) h[j] = a[j] > 0 ? a[j] : (T)0;                       \
    } else if (cell == FASTRNN_CELL_GRU) {                                               \
        T *s = g ? g : wk;                     /* r, z, n */                             \
        fastrnn_sigmoid_##SFX(a, s, n);                                                  \
        fastrnn_sigmoid_##SFX(a + ld, s + ld, n);                                        \
        const T *r = s, *z = s + ld;                                                     \
        T *xn = a + 2 * ld, *nn = s + 2 * ld;                                            \
        for (j = 0; j < n; j++) xn[j] = xn[j] + r[j] * hn[j];                            \
        TANH(xn, nn, n);                                                                 \
        for (j = 0; j < n; j++) h[j] = ((T)1 - z[j]) * nn[j] + z[j] * hp[j];             \
        if (g && hn != g + 3 * ld) memcpy(g + 3 * ld, hn, (size_t)n * sizeof(T));        \
    } else {                                                                             \
        T *s = g ? g : wk;                     /* i, f, g, o */                          \
        fastrnn_sigmoid_##SFX(a, s, n);                                                  \
        fastrnn_sigmoid_##SFX(a + ld, s + ld, n);                                        \
        TANH(a + 2 * ld, s + 2 * ld, n);                                                 \
        fastrnn_sigmoid_##SFX(a + 3 * ld, s + 3 * ld, n);                                \
        const T *i_ = s, *f_ = s + ld, *g_ = s + 2 * ld, *o_ = s + 3 * ld;               \
        for (j = 0; j < n; j++) c[j] = f_[j] * cp[j] + i_[j] * g_[j];                    \
        TANH(c, a, n);                         /* tanh(c'), a is free now */             \
        for (j = 0; j < n; j++) h[j] = o_[j] * a[j];                                     \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* Backward step of n units of one row (layout as forward).                              \
 *   dh   (n)   IN  dL/dh_t, all of it (from above and from step t+1)                    \
 *   h    (n)   IN  h_t;  hp (n) IN h_{t-1} (GRU)                                        \
 *   c    (n)   IN  LSTM c_t;  cp (n) IN LSTM c_{t-1}                                    \
 *   g    (4 blocks) IN  the gate cache of step t (GRU, LSTM)                            \
 *   dc   (n)   IN/OUT LSTM: dL/dc_t from step t+1 on entry, dL/dc_{t-1} on exit         \
 *   da   (G blocks) OUT dL/dA (GRU n block: dL/d(xn))                                   \
 *   dan  (n)   OUT GRU: dL/d(hn) = da_n * r                                             \
 *   dhp  (n)   OUT GRU: dL/dh_{t-1} through z (dh * z), before the product W_hh^T       \
 *   wk   (n)   WORK */                                                                  \
FASTRNN_CLONES                                                                           \
static void fastrnn_cell_bwd_##SFX(int cell, int nonlin, ptrdiff_t n, ptrdiff_t ld,     \
                                   const T *restrict dh, const T *restrict h,            \
                                   const T *restrict hp, const T *restrict c,            \
                                   const T *restrict cp, const T *restrict g,            \
                                   T *restrict dc, T *restrict da, T *restrict dan,      \
                                   T *restrict dhp, T *restrict wk) {                    \
    ptrdiff_t j;                                                                         \
    if (cell == FASTRNN_CELL_RNN) {                                                      \
        if (nonlin == FASTRNN_NONLIN_TANH)                                               \
            for (j = 0; j < n; j++) da[j] = dh[j] * ((T)1 - h[j] * h[j]);                \
        else                                                                             \
            for (j = 0; j < n; j++) da[j] = h[j] > 0 ? dh[j] : (T)0;                     \
    } else if (cell == FASTRNN_CELL_GRU) {                                               \
        const T *r = g, *z = g + ld, *nn = g + 2 * ld, *hn = g + 3 * ld;                 \
        for (j = 0; j < n; j++) {                                                        \
            T dn = dh[j] * ((T)1 - z[j]);                                                \
            T dz = dh[j] * (hp[j] - nn[j]);                                              \
            T dxn = dn * ((T)1 - nn[j] * nn[j]);                                         \
            da[2 * ld + j] = dxn;                                                        \
            dan[j] = dxn * r[j];                                                         \
            da[j] = dxn * hn[j] * (r[j] * ((T)1 - r[j]));                                \
            da[ld + j] = dz * (z[j] * ((T)1 - z[j]));                                    \
            dhp[j] = dh[j] * z[j];                                                       \
        }                                                                                \
    } else {                                                                             \
        const T *i_ = g, *f_ = g + ld, *g_ = g + 2 * ld, *o_ = g + 3 * ld;               \
        TANH(c, wk, n);                        /* tanh(c_t), as in forward */           \
        for (j = 0; j < n; j++) {                                                        \
            T tc = wk[j];                                                                \
            T dct = dc[j] + dh[j] * o_[j] * ((T)1 - tc * tc);                            \
            da[j] = dct * g_[j] * (i_[j] * ((T)1 - i_[j]));                              \
            da[ld + j] = dct * cp[j] * (f_[j] * ((T)1 - f_[j]));                         \
            da[2 * ld + j] = dct * i_[j] * ((T)1 - g_[j] * g_[j]);                       \
            da[3 * ld + j] = dh[j] * tc * (o_[j] * ((T)1 - o_[j]));                      \
            dc[j] = dct * f_[j];                                                         \
        }                                                                                \
    }                                                                                    \
}

FASTRNN_DEFINE_CELLS(f32, float, fastrnn_tanh_f32)
FASTRNN_DEFINE_CELLS(f64, double, fastrnn_tanh_f64)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
