/* A spinning barrier for the two (or few) threads that split one sequence's
 * recurrence by columns: one wait per time step, ~100 ns when both threads
 * run, and it yields the CPU after a few thousand spins so an oversubscribed
 * machine degrades gracefully instead of burning the time slice.
 */
#ifndef FASTRNN_BARRIER_H
#define FASTRNN_BARRIER_H

#if defined(_WIN32)
#include <windows.h>
#define FASTRNN_YIELD() SwitchToThread()
#else
#include <sched.h>
#define FASTRNN_YIELD() sched_yield()
#endif
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#define FASTRNN_PAUSE() _mm_pause()
#else
#define FASTRNN_PAUSE() ((void)0)
#endif

#if defined(_MSC_VER)
#include <intrin.h>
typedef volatile long fastrnn_atomic_t;
#define FASTRNN_ADD1(p) _InterlockedIncrement(p)
#define FASTRNN_LOAD(p) (*(p))                 /* MSVC volatile: acquire on x86/x64 */
#define FASTRNN_STORE(p, v) _InterlockedExchange((p), (v))
#else
typedef int fastrnn_atomic_t;
#define FASTRNN_ADD1(p) __atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)
#define FASTRNN_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define FASTRNN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#endif

typedef struct {
    fastrnn_atomic_t count;   /* threads arrived in this phase */
    fastrnn_atomic_t sense;   /* flips when a phase completes */
    int n;                    /* threads taking part */
} fastrnn_barrier_t;

static inline void fastrnn_barrier_init(fastrnn_barrier_t *b, int n) {
    b->count = 0;
    b->sense = 0;
    b->n = n;
}

/* local_sense: a per-thread int, 0 before the first wait. */
static inline void fastrnn_barrier_wait(fastrnn_barrier_t *b, int *local_sense) {
    int s = !*local_sense;
    *local_sense = s;
    if (FASTRNN_ADD1(&b->count) == b->n) {
        FASTRNN_STORE(&b->count, 0);
        FASTRNN_STORE(&b->sense, s);
    } else {
        int spins = 0;
        while (FASTRNN_LOAD(&b->sense) != s) {
            FASTRNN_PAUSE();
            if (++spins > 4000) {
                FASTRNN_YIELD();
                spins = 0;
            }
        }
    }
}

#endif
