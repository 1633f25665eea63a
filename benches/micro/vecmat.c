/* Time of the one-row product of csrc/_vecmat.h (y = x W) on the shapes of one
 * sequence (B = 1 training, generation): the whole H x H matrix (one thread) and
 * one part of the B = 1 split (H x cut columns, what each of two threads reads per
 * step), with W on a 64-byte cache line (as fastrnn keeps it) and 16 bytes off one
 * (where numpy's allocator may put it). Prints microseconds per product and the
 * rate at which W streams from cache: this product is the floor of a B = 1 step
 * and of a generated character.
 *
 *     gcc -O3 -fno-math-errno benches/micro/vecmat.c -o /tmp/vecmat && /tmp/vecmat
 *     taskset -c 0 /tmp/vecmat & taskset -c 1 /tmp/vecmat   # both cores at once
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../csrc/_steps.h"
#include "../../csrc/_vecmat.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void bench(int H, int N, int offset, const char *what) {
    char *raw = malloc((size_t)H * H * sizeof(float) + 128);
    float *W = (float *)(raw + (64 - (size_t)raw % 64) % 64 + offset);
    float *x = malloc(H * sizeof(float)), *y = malloc(H * sizeof(float));
    for (int i = 0; i < H * H; i++) W[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (int i = 0; i < H; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
    int reps = (int)(2e8 / ((double)H * N)) + 1;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (int i = 0; i < reps; i++) {
            fastrnn_vecmat_f32(x, W, H, y, H, N, 0);
            x[i % H] = 0.5f + y[(i * 7) % N] * 1e-6f;   /* depends on the last product */
        }
        double t = (now() - t0) / reps;
        best = t < best ? t : best;
    }
    printf("%-24s W %2d bytes off a line  H=%5d  columns=%5d  %8.3f us  %6.1f GB/s\n",
           what, offset, H, N, best * 1e6, (double)H * N * sizeof(float) / best / 1e9);
    free(raw); free(x); free(y);
}

int main(void) {
    int sizes[] = {128, 256, 512};
    for (int i = 0; i < 3; i++) {
        int H = sizes[i];
        for (int off = 0; off <= 16; off += 16) {
            bench(H, H, off, "whole W_hh (one thread)");
            bench(H, (int)fastrnn_split_point(H), off, "one part of the split");
        }
    }
    return 0;
}
