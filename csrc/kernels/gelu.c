/* GELU (tanh approximation, gelu.h) forward/backward, and the residual add. Compiled once per ISA (simd.h).
 * Work is cut into fixed blocks and a ragged end goes through the same vector code via a padded copy, so each
 * element's bits depend on nothing but its value. */
#include <string.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "gelu.h"
#include "runtime/memory.h"

#define BLOCK 4096 /* elements per parallel work item: a multiple of every VW */

/* Apply op to n elements (n < VW) through one padded register. */
#define RAGGED(n, body)                                                                                           \
    do {                                                                                                          \
        _Alignas(CLLM_ALIGN) float ta[VW] = {0}, tb[VW] = {0}, tout[VW];                                          \
        (void)ta;                                                                                                 \
        (void)tb;                                                                                                 \
        body;                                                                                                     \
    } while (0)

/* out = gelu(x).   x, out (n) */
int ISA_FN(cllm_gelu_forward)(const float *x, float *out, int64_t n, int num_threads)
{
    int64_t blocks = cllm_ceil_div(n, BLOCK);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < blocks; k++) {
        int64_t i = k * BLOCK, end = cllm_min(n, i + BLOCK);
        for (; i + VW <= end; i += VW) vstoreu(out + i, gelu_vec(vloadu(x + i)));
        if (i < end)
            RAGGED(end - i, {
                memcpy(ta, x + i, sizeof(float) * (size_t)(end - i));
                vstoreu(tout, gelu_vec(vloadu(ta)));
                memcpy(out + i, tout, sizeof(float) * (size_t)(end - i));
            });
    }
    return 0;
}

/* dx = dout·gelu'(x).   x, dout, dx (n); dx may be dout */
int ISA_FN(cllm_gelu_backward)(const float *x, const float *dout, float *dx, int64_t n, int num_threads)
{
    int64_t blocks = cllm_ceil_div(n, BLOCK);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < blocks; k++) {
        int64_t i = k * BLOCK, end = cllm_min(n, i + BLOCK);
        for (; i + VW <= end; i += VW) vstoreu(dx + i, gelu_grad_vec(vloadu(x + i), vloadu(dout + i)));
        if (i < end)
            RAGGED(end - i, {
                memcpy(ta, x + i, sizeof(float) * (size_t)(end - i));
                memcpy(tb, dout + i, sizeof(float) * (size_t)(end - i));
                vstoreu(tout, gelu_grad_vec(vloadu(ta), vloadu(tb)));
                memcpy(dx + i, tout, sizeof(float) * (size_t)(end - i));
            });
    }
    return 0;
}

/* out = a + b.   a, b, out (n) */
int ISA_FN(cllm_residual_forward)(const float *a, const float *b, float *out, int64_t n, int num_threads)
{
    int64_t blocks = cllm_ceil_div(n, BLOCK);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < blocks; k++)
        for (int64_t i = k * BLOCK; i < cllm_min(n, (k + 1) * BLOCK); i++) out[i] = a[i] + b[i];
    return 0;
}
