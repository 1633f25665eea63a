/* Single-thread GFLOP/s of the packed micro-kernels in csrc/_pgemm.h, on the shapes
 * one thread sees in benches/compare.py's configurations (2 threads), checked
 * against a double-precision product.
 *
 *     gcc -O3 -fno-math-errno benches/micro/pgemm.c -o /tmp/pgemm -lm && /tmp/pgemm
 *     FASTRNN_KERNEL_LEVEL=1 /tmp/pgemm          # the AVX2+FMA variant
 *
 * For BLAS on the same shapes (one thread), numpy's matmul:
 *     python benches/micro/blas_shapes.py
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../csrc/_pgemm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *rnd(size_t n) {
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = rand() / (float)RAND_MAX - 0.5f;
    return a;
}

/* trans = 0: C(M,N) = A(M,K) B(K,N), B packed (the recurrence and the output layer);
 * trans = 1: C(M,N) = A(K,M)^T B(K,N), read in place (the weight gradients H^T dZ) */
static void run(int trans, const float *A, const float *B, const float *P, float *C, int M,
                int N, int K) {
    if (trans)
        fastrnn_tngemm_f32(M, N, K, A, M, B, N, C, N, 0);
    else
        fastrnn_pgemm_f32(M, N, K, A, K, P, C, N, 0, NULL);
}

static void bench(const char *what, int trans, int M, int N, int K) {
    ptrdiff_t nr = fastrnn_pgemm_nr_f32();
    float *A = rnd((size_t)M * K), *B = rnd((size_t)K * N), *C = calloc((size_t)M * N, 4);
    float *P = trans ? NULL : malloc(sizeof(float) * K * ((N + nr - 1) / nr) * nr);
    if (P) fastrnn_pack_f32(B, N, 0, K, N, nr, P);
    run(trans, A, B, P, C, M, N, K);
    double err = 0, mx = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)A[trans ? (size_t)k * M + i : (size_t)i * K + k] *
                     B[(size_t)k * N + j];
            err = fmax(err, fabs(s - C[(size_t)i * N + j]));
            mx = fmax(mx, fabs(s));
        }
    int n = (int)(2e9 / (2.0 * M * N * K));
    if (n < 3) n = 3;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < n; i++) run(trans, A, B, P, C, M, N, K);
        double dt = (now() - t0) / n;
        if (dt < best) best = dt;
    }
    printf("%-34s %s  M=%5d N=%5d K=%6d  %8.2f us  %6.1f GFLOP/s  rel.err %.1e\n", what,
           trans ? "A^T B" : "A B  ", M, N, K, best * 1e6, 2.0 * M * N * K / best / 1e9,
           err / mx);
    free(A); free(B); free(C); free(P);
}

int main(void) {
    printf("kernel level %d (2 = AVX-512, 1 = AVX2+FMA, 0 = portable)\n", fastrnn_pgemm_level());
    bench("d2l recurrence step", 0, 512, 32, 32);
    bench("d2l output layer", 0, 16384, 28, 32);
    bench("medium recurrence step", 0, 32, 256, 256);
    bench("large recurrence step", 0, 32, 1024, 1024);
    bench("d2l dW_hh", 1, 16, 32, 32768);
    bench("medium dW_hh", 1, 128, 256, 4096);
    bench("large dW_hh (BLAS runs this one)", 1, 512, 1024, 4096);
    return 0;
}
