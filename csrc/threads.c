/* Deterministic reductions: chunk partials are added up the sphere tree (ARCHITECTURE.md "Threads").
 *
 * The tree is a heap with fan-out CLLM_SPHERE_FANOUT: node p's children are 12p+1 .. 12p+12, so its depth is
 * ⌈log₁₂ n⌉ rather than the n-1 of a chain, and the order of additions depends only on n. cllm.threads.sphere_tree
 * is the same tree in Python and cllm.threads.tree_sum the same order, used as the test oracle. */
#include <string.h>

#include "cllm.h"
#include "memory.h"

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
