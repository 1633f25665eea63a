/* Flush-to-zero / denormals-are-zero for the calling thread, restorable.
 *
 * Vanishing gradients in long BPTT produce subnormal floats, which are
 * 10-100x slower on x86. Kernels call fastrnn_ftz_on() at the start of each
 * thread's work and fastrnn_fp_restore() at the end, so the caller's mode is
 * never changed. On platforms without a known control register both are no-ops.
 */
#ifndef FASTRNN_FPMODE_H
#define FASTRNN_FPMODE_H

typedef unsigned long long fastrnn_fpmode_t;

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <xmmintrin.h>
static inline fastrnn_fpmode_t fastrnn_ftz_on(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);  /* FTZ (bit 15) | DAZ (bit 6) */
    return (fastrnn_fpmode_t)old;
}
static inline void fastrnn_fp_restore(fastrnn_fpmode_t old) { _mm_setcsr((unsigned int)old); }
static inline fastrnn_fpmode_t fastrnn_fp_get(void) { return (fastrnn_fpmode_t)_mm_getcsr(); }
#define FASTRNN_HAVE_FTZ 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
static inline fastrnn_fpmode_t fastrnn_fp_get(void) {
    unsigned long long v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static inline fastrnn_fpmode_t fastrnn_ftz_on(void) {
    unsigned long long old = fastrnn_fp_get(), v = old | (1ULL << 24); /* FZ */
    __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
    return old;
}
static inline void fastrnn_fp_restore(fastrnn_fpmode_t old) {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
}
#define FASTRNN_HAVE_FTZ 1
#else
static inline fastrnn_fpmode_t fastrnn_ftz_on(void) { return 0; }
static inline void fastrnn_fp_restore(fastrnn_fpmode_t old) { (void)old; }
static inline fastrnn_fpmode_t fastrnn_fp_get(void) { return 0; }
#define FASTRNN_HAVE_FTZ 0
#endif

#endif
