/* Token + position embedding, forward and backward. Compiled once per ISA (simd.h). */
#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

#define SLICE 32 /* channels per work item of the backward: threads own disjoint channels of dwte and dwpe */

/* out[b,t,:] = wte[idx[b,t],:] + wpe[t,:].   idx (B,T), wte (V,C), wpe (>=T,C) or NULL, out (B,T,C) */
int ISA_FN(cllm_embedding_forward)(const int32_t *idx, const float *wte, const float *wpe, float *out, int64_t B,
                                   int64_t T, int64_t C, int num_threads)
{
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t bt = 0; bt < B * T; bt++) {
        const float *e = wte + (int64_t)idx[bt] * C;
        float *o = out + bt * C;
        if (wpe) {
            const float *p = wpe + (bt % T) * C;
            for (int64_t c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            for (int64_t c = 0; c < C; c++) o[c] = e[c];
        }
    }
    return 0;
}

/* dwte[idx[b,t],:] += dout[b,t,:];  dwpe[t,:] += Σ_b dout[b,t,:].   Every sum runs over (b,t) in order. */
int ISA_FN(cllm_embedding_backward)(const float *dout, const int32_t *idx, float *dwte, float *dwpe, int64_t B,
                                    int64_t T, int64_t C, int num_threads)
{
    int64_t slices = cllm_ceil_div(C, SLICE);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t s = 0; s < slices; s++) {
        int64_t c0 = s * SLICE, c1 = cllm_min(C, c0 + SLICE);
        for (int64_t bt = 0; bt < B * T; bt++) {
            const float *d = dout + bt * C;
            float *e = dwte + (int64_t)idx[bt] * C;
            for (int64_t c = c0; c < c1; c++) e[c] += d[c];
        }
        for (int64_t t = 0; t < (dwpe ? T : 0); t++)
            for (int64_t b = 0; b < B; b++) {
                const float *d = dout + (b * T + t) * C;
                float *p = dwpe + t * C;
                for (int64_t c = c0; c < c1; c++) p[c] += d[c];
            }
    }
    return 0;
}
