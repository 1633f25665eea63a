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

/* C(M,N) += A(M,K) B(K,N): the recurrence H_{t-1} W_hh and the output layer */
static void bench_pgemm(const char *what, int M, int N, int K) {
    ptrdiff_t nr = fastrnn_pgemm_nr_f32();
    float *A = rnd((size_t)M * K), *B = rnd((size_t)K * N), *C = calloc((size_t)M * N, 4);
    float *P = malloc(sizeof(float) * K * ((N + nr - 1) / nr) * nr);
    fastrnn_pack_f32(B, N, 0, K, N, nr, P);
    fastrnn_pgemm_f32(M, N, K, A, K, P, C, N, 0, NULL);
    double err = 0, mx = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[(size_t)i * K + k] * B[(size_t)k * N + j];
            err = fmax(err, fabs(s - C[(size_t)i * N + j]));
            mx = fmax(mx, fabs(s));
        }
    int n = (int)(2e9 / (2.0 * M * N * K));
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < (n > 3 ? n : 3); i++) fastrnn_pgemm_f32(M, N, K, A, K, P, C, N, 1, NULL);
        double dt = (now() - t0) / (n > 3 ? n : 3);
        if (dt < best) best = dt;
    }
    printf("%-34s A B    M=%5d N=%5d K=%6d  %8.2f us  %6.1f GFLOP/s  rel.err %.1e\n", what, M,
           N, K, best * 1e6, 2.0 * M * N * K / best / 1e9, err / mx);
    free(A); free(B); free(C); free(P);
}

/* C(M,N) = A(K,M)^T B(K,N): the weight gradients H^T dZ */
static void bench_tngemm(const char *what, int M, int N, int K) {
    float *A = rnd((size_t)K * M), *B = rnd((size_t)K * N), *C = calloc((size_t)M * N, 4);
    fastrnn_tngemm_f32(M, N, K, A, M, B, N, C, N, 0);
    double err = 0, mx = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[(size_t)k * M + i] * B[(size_t)k * N + j];
            err = fmax(err, fabs(s - C[(size_t)i * N + j]));
            mx = fmax(mx, fabs(s));
        }
    int n = (int)(2e9 / (2.0 * M * N * K));
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < (n > 3 ? n : 3); i++) fastrnn_tngemm_f32(M, N, K, A, M, B, N, C, N, 0);
        double dt = (now() - t0) / (n > 3 ? n : 3);
        if (dt < best) best = dt;
    }
    printf("%-34s A^T B  M=%5d N=%5d K=%6d  %8.2f us  %6.1f GFLOP/s  rel.err %.1e\n", what, M,
           N, K, best * 1e6, 2.0 * M * N * K / best / 1e9, err / mx);
    free(A); free(B); free(C);
}

int main(void) {
    printf("kernel level %d (2 = AVX-512, 1 = AVX2+FMA, 0 = portable)\n", fastrnn_pgemm_level());
    bench_pgemm("d2l recurrence step", 512, 32, 32);
    bench_pgemm("d2l output layer", 16384, 28, 32);
    bench_pgemm("medium recurrence step", 32, 256, 256);
    bench_pgemm("large recurrence step", 32, 1024, 1024);
    bench_tngemm("d2l dW_hh", 16, 32, 32768);
    bench_tngemm("medium dW_hh", 128, 256, 4096);
    bench_tngemm("large dW_hh (BLAS runs this one)", 512, 1024, 4096);
    return 0;
}
