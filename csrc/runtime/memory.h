/* 64-byte aligned scratch memory for packed panels and partial sums. */
#ifndef CLLM_MEMORY_H
#define CLLM_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CLLM_ALIGN 64
#define CLLM_HUGE ((size_t)2 << 20)    /* a transparent huge page (x86-64; arm64 with 4 KiB pages) */
#define CLLM_HUGE_FROM ((size_t)1 << 20) /* buffers of this size or more are made of whole huge pages */

#if defined(_MSC_VER) && !defined(__cplusplus)
#define restrict __restrict
#endif
#if defined(_MSC_VER)
#define CLLM_THREAD_LOCAL __declspec(thread)
#else
#define CLLM_THREAD_LOCAL _Thread_local
#endif

static inline void *cllm_alloc(size_t bytes)
{
    if (bytes == 0) bytes = CLLM_ALIGN;
    bytes = (bytes + CLLM_ALIGN - 1) / CLLM_ALIGN * CLLM_ALIGN;
#if defined(_MSC_VER)
    return _aligned_malloc(bytes, CLLM_ALIGN);
#else
    void *p = NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= CLLM_HUGE_FROM) { /* whole 2 MiB pages: fewer page walks (costly in a VM) for big buffers */
        bytes = (bytes + CLLM_HUGE - 1) / CLLM_HUGE * CLLM_HUGE;
        if (posix_memalign(&p, CLLM_HUGE, bytes) != 0) return NULL;
        madvise(p, bytes, MADV_HUGEPAGE);
        return p;
    }
#endif
    return posix_memalign(&p, CLLM_ALIGN, bytes) == 0 ? p : NULL;
#endif
}

static inline void cllm_free(void *p)
{
#if defined(_MSC_VER)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* Hints to bring the cache line holding p into the caches (for writing, where the compiler can say so): cllm_prefetch
 * into all levels, for use soon; cllm_prefetch_l2 into L2, for use after other work. No effect on results. */
#if defined(_MSC_VER)
#include <intrin.h>
#define cllm_prefetch(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#define cllm_prefetch_l2(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#else
#define cllm_prefetch(p) __builtin_prefetch((p), 1, 3)
#define cllm_prefetch_l2(p) __builtin_prefetch((p), 0, 2)
#endif

/* Every cache line of rows × cols floats, rows ld apart, into L2. */
static inline void cllm_prefetch_rows_l2(const float *p, int64_t ld, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c += 16) cllm_prefetch_l2(p + r * ld + c);
}

static inline int64_t cllm_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t cllm_round_up(int64_t a, int64_t b) { return cllm_ceil_div(a, b) * b; }
static inline int64_t cllm_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cllm_max(int64_t a, int64_t b) { return a > b ? a : b; }

#endif
