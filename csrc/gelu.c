/* GELU (tanh approximation) forward/backward, and the residual add. Compiled once per ISA (simd.h).
 *
 * gelu(x) = x·(1 + tanh(z))/2 with z = √(2/π)·(x + 0.044715·x³), computed as x·σ(2z), σ the logistic function,
 * so that one vexp serves: σ(2z) = 1/(1 + e^(-2z)).  gelu'(x) = s + 2·x·s·(1-s)·dz/dx, s = σ(2z).
 * Work is cut into fixed blocks and a ragged end goes through the same vector code via a padded copy, so each
 * element's bits depend on nothing but its value. */
#include <string.h>

#include "cllm.h"
#include "dispatch.h"
#include "memory.h"

#define BLOCK 4096 /* elements per parallel work item: a multiple of every VW */
#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_C 0.044715f

static inline vec sigmoid_2z(vec x) /* σ(2z(x)) */
{
    vec z = vmul(vset1(SQRT_2_OVER_PI), vfmadd(vmul(vset1(GELU_C), vmul(x, x)), x, x));
    return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vmul(vset1(-2.0f), z))));
}

static inline vec gelu_vec(vec x) { return vmul(x, sigmoid_2z(x)); }

static inline vec gelu_grad_vec(vec x, vec dout)
{
    vec s = sigmoid_2z(x);
    vec dz = vmul(vset1(SQRT_2_OVER_PI), vfmadd(vmul(vset1(3.0f * GELU_C), x), x, vset1(1.0f)));
    vec ds = vmul(vmul(vset1(2.0f), s), vsub(vset1(1.0f), s)); /* dσ(2z)/dz */
    return vmul(dout, vfmadd(vmul(x, ds), dz, s));
}

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
