/* Deterministic reductions: chunk partials are added up the sphere tree (ARCHITECTURE.md "Threads"); and a
 * spinning barrier for parallel regions whose threads meet every few microseconds.
 *
 * The tree is a heap with fan-out CLLM_SPHERE_FANOUT: node p's children are 12p+1 .. 12p+12, so its depth is
 * ⌈log₁₂ n⌉ rather than the n-1 of a chain, and the order of additions depends only on n. cllm.threads.sphere_tree
 * is the same tree in Python and cllm.threads.tree_sum the same order, used as the test oracle. */
#include <string.h>
#if defined(_MSC_VER)
#include <intrin.h>
#include <windows.h>
#define cpu_relax() _mm_pause()
#define cpu_yield() SwitchToThread()
#define load_acquire(p) _InterlockedOr64((volatile long long *)(p), 0)
#define increment_acq_rel(p) _InterlockedIncrement64((volatile long long *)(p))
#define store_release(p, v) _InterlockedExchange64((volatile long long *)(p), (v))
#else
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif
#define cpu_yield() sched_yield()
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define increment_acq_rel(p) __atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#endif

#include "cllm.h"
#include "memory.h"

#define SPIN_BEFORE_YIELD 20000 /* pauses (~0.1 ms here) before a waiting thread starts yielding its core */

/* Elements per parallel work item: large enough to amortise scheduling, small enough to spread short vectors. */
#define REDUCE_BLOCK 4096

void cllm_tree_reduce(float *partials, int64_t n, int64_t len, float *out, int accumulate, int num_threads)
{
    if (n <= 0) { /* an empty sum */
        if (!accumulate) memset(out, 0, sizeof(float) * (size_t)len);
        return;
    }
    int64_t blocks = cllm_ceil_div(len, REDUCE_BLOCK);
    int64_t last_parent = (n - 2) / CLLM_SPHERE_FANOUT; /* the highest node that has a child (n >= 2) */
#pragma omp parallel for num_threads(num_threads) schedule(static) if (blocks > 1)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t e0 = blk * REDUCE_BLOCK, e1 = cllm_min(len, e0 + REDUCE_BLOCK);
        for (int64_t p = n >= 2 ? last_parent : -1; p >= 0; p--) {
            float *dst = partials + p * len;
            for (int64_t c = CLLM_SPHERE_FANOUT * p + 1; c <= CLLM_SPHERE_FANOUT * p + CLLM_SPHERE_FANOUT && c < n; c++) {
                const float *src = partials + c * len;
                for (int64_t e = e0; e < e1; e++) dst[e] += src[e];
            }
        }
        if (accumulate)
            for (int64_t e = e0; e < e1; e++) out[e] += partials[e];
        else if (out != partials)
            memcpy(out + e0, partials + e0, sizeof(float) * (size_t)(e1 - e0));
    }
}

double cllm_tree_sum_f64(double *partials, int64_t n)
{
    if (n <= 0) return 0.0;
    for (int64_t p = (n - 2) / CLLM_SPHERE_FANOUT; n >= 2 && p >= 0; p--)
        for (int64_t c = CLLM_SPHERE_FANOUT * p + 1; c <= CLLM_SPHERE_FANOUT * p + CLLM_SPHERE_FANOUT && c < n; c++)
            partials[p] += partials[c];
    return partials[0];
}

void cllm_spin_barrier_wait(cllm_spin_barrier *b, int64_t nthreads)
{
    if (nthreads <= 1) return;
    int64_t generation = load_acquire(&b->generation);
    if (increment_acq_rel(&b->count) == nthreads) { /* the last one in opens the barrier for the next use */
        store_release(&b->count, 0);
        store_release(&b->generation, generation + 1);
        return;
    }
    for (int64_t spins = 0; load_acquire(&b->generation) == generation; spins++) {
        if (spins < SPIN_BEFORE_YIELD) cpu_relax();
        else cpu_yield(); /* an oversubscribed machine: let whoever holds the core finish */
    }
}
