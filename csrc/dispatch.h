/* The kernels that exist once per ISA (simd.h) and the table dispatch.c chooses among at run time.
 * To add an ISA kernel: declare it in CLLM_DECLARE_ISA, add it to cllm_kernel_table and CLLM_TABLE_ENTRY,
 * and give it a public wrapper in dispatch.c. */
#ifndef CLLM_DISPATCH_H
#define CLLM_DISPATCH_H

#include <stdint.h>

#define CLLM_DECLARE_ISA_(isa)                                                                                    \
    int cllm_linear_forward_##isa(const float *x, const float *w, const float *b, float *y, int64_t M, int64_t K,  \
                                  int64_t N, int num_threads);                                                     \
    int cllm_linear_backward_##isa(const float *dy, const float *x, const float *w, float *dx, float *dw,         \
                                   float *db, int64_t M, int64_t K, int64_t N, int accumulate, int num_threads);
#define CLLM_DECLARE_ISA(isa) CLLM_DECLARE_ISA_(isa)

typedef struct {
    const char *name;
    int (*linear_forward)(const float *, const float *, const float *, float *, int64_t, int64_t, int64_t, int);
    int (*linear_backward)(const float *, const float *, const float *, float *, float *, float *, int64_t, int64_t,
                           int64_t, int, int);
} cllm_kernel_table;

#define CLLM_TABLE_ENTRY(isa) {#isa, cllm_linear_forward_##isa, cllm_linear_backward_##isa}

/* Each ISA source checks its definitions against these declarations. */
#ifdef CLLM_ISA
CLLM_DECLARE_ISA(CLLM_ISA)
#endif

#endif
