/* Two parts per time step, claimed by whichever thread gets there first.
 *
 * When one sequence (B = 1) is split across two threads, each step's hidden
 * units are cut into two parts, and a step may start only when both parts of
 * the step before are done. A plain barrier per step stalls the whole sequence
 * whenever the partner thread is not running (another process holds its core):
 * measured here, a B = 1 training step went from 0.63 to 42 ms.
 *
 * Here no thread waits for the other to *start*. Each thread claims its own part
 * of a step, then the other part if it is still unclaimed, so a thread that runs
 * alone does every part of every step (at one thread's speed) instead of waiting
 * for a partner that is descheduled. It waits only for a part the partner has
 * claimed and is computing (about a microsecond), and a late partner skips the
 * steps already claimed. Which thread computes a part never changes the part's
 * arithmetic, so results do not depend on the schedule.
 *
 * Steps are numbered 0, 1, ... in the order they run; claimed[k] and done[k]
 * hold the last step whose part k was claimed / finished (-1 before any).
 */
#ifndef FASTRNN_STEPS_H
#define FASTRNN_STEPS_H

#include <stddef.h>

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
#define FASTRNN_LOAD(p) (*(p))                 /* MSVC volatile: acquire on x86/x64 */
#define FASTRNN_STORE(p, v) _InterlockedExchange((p), (v))
#define FASTRNN_CAS(p, expect, v) (_InterlockedCompareExchange((p), (v), (expect)) == (expect))
#define FASTRNN_ALIGN64 __declspec(align(64))
#else
typedef int fastrnn_atomic_t;
#define FASTRNN_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define FASTRNN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
static inline int fastrnn_cas_(fastrnn_atomic_t *p, int expect, int v) {
    return __atomic_compare_exchange_n(p, &expect, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
#define FASTRNN_CAS(p, expect, v) fastrnn_cas_((p), (expect), (v))
#define FASTRNN_ALIGN64 __attribute__((aligned(64)))
#endif

/* one cache line per part: a thread writes its own part's line and reads the other */
typedef struct {
    FASTRNN_ALIGN64 fastrnn_atomic_t claimed;
    fastrnn_atomic_t done;
    char pad_[64 - 2 * sizeof(fastrnn_atomic_t)];
} fastrnn_part_t;

typedef struct {
    fastrnn_part_t part[2];
} fastrnn_steps_t;

/* Where a step's H hidden units are cut into parts [0, s) and [s, H): the multiple
 * of 64 nearest H/2. The one-row products work in blocks of 64 columns and the
 * vectorised tanh in 16s, both counted from a part's first unit, so with the cut on
 * a multiple of 64 every unit goes through the same code path as without the
 * split, and the results are bitwise those of one thread. */
static inline ptrdiff_t fastrnn_split_point(ptrdiff_t H) {
    ptrdiff_t s = (H / 2 + 32) / 64 * 64;
    return s < H ? s : H;
}

static inline void fastrnn_steps_init(fastrnn_steps_t *s) {
    for (int k = 0; k < 2; k++) {
        s->part[k].claimed = -1;
        s->part[k].done = -1;
    }
}

/* Take part k of step t if nobody has: 1 if this thread now owns it. */
static inline int fastrnn_steps_claim(fastrnn_steps_t *s, int k, int t) {
    if (FASTRNN_LOAD(&s->part[k].claimed) != t - 1)
        return 0;
    return FASTRNN_CAS(&s->part[k].claimed, t - 1, t);
}

/* Part k of step t is finished (its results are visible to the other thread). */
static inline void fastrnn_steps_done(fastrnn_steps_t *s, int k, int t) {
    FASTRNN_STORE(&s->part[k].done, t);
}

/* The first step with a part nobody has claimed: steps before it need no work. */
static inline int fastrnn_steps_next(fastrnn_steps_t *s, int t) {
    int c0 = FASTRNN_LOAD(&s->part[0].claimed), c1 = FASTRNN_LOAD(&s->part[1].claimed);
    int first = (c0 < c1 ? c0 : c1) + 1;
    return first > t ? first : t;
}

/* Wait until both parts of step t are finished (a part being computed by the other
 * thread: microseconds; yields the CPU if that takes long, e.g. the other thread
 * was descheduled in the middle of its part). */
static inline void fastrnn_steps_wait(fastrnn_steps_t *s, int t) {
    int spins = 0;
    while (FASTRNN_LOAD(&s->part[0].done) < t || FASTRNN_LOAD(&s->part[1].done) < t) {
        FASTRNN_PAUSE();
        if (++spins > 4000) {
            FASTRNN_YIELD();
            spins = 0;
        }
    }
}

#endif
