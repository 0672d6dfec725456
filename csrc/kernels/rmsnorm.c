/* RMSNorm over the last dimension (weight only, eps given), forward and backward; the Llama / Qwen3 norm, also
 * their QK-norm over each head's q and k (rows of head_size). Compiled once per ISA (simd.h). */
#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"
#include "rmsnorm.h"

#define CHUNK_ROWS 64 /* dw: sums over rows in chunks of this many rows, added up the sphere tree */

/* out = x·rstd·w per row, rstd = 1/sqrt(mean(x²) + eps).   x, out (N,C); w (C); rstd (N) */
int ISA_FN(cllm_rmsnorm_forward)(const float *x, const float *w, float *out, float *rstd, int64_t N, int64_t C,
                                 float eps, int num_threads)
{
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t n = 0; n < N; n++) rstd[n] = rmsnorm_row(x + n * C, w, out + n * C, C, eps);
    return 0;
}

/* With xhat = x·rstd: dx += (dout·w - xhat·mean(dout·w·xhat))·rstd;  dw += Σ_n dout·xhat.
 * dout, x, dx (N,C); w, dw (C); rstd (N) */
int ISA_FN(cllm_rmsnorm_backward)(const float *dout, const float *x, const float *w, const float *rstd, float *dx,
                                  float *dw, int64_t N, int64_t C, int num_threads)
{
    int64_t chunks = cllm_max(1, cllm_ceil_div(N, CHUNK_ROWS));
    float *partial_dw = cllm_alloc(sizeof(float) * chunks * C);
    if (!partial_dw) return CLLM_ENOMEM;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        float *pdw = partial_dw + k * C;
        for (int64_t c = 0; c < C; c++) pdw[c] = 0.0f;
        for (int64_t n = k * CHUNK_ROWS; n < cllm_min(N, (k + 1) * CHUNK_ROWS); n++) {
            const float *d = dout + n * C, *xr = x + n * C;
            float *dxr = dx + n * C;
            float rs = rstd[n];
            vec acc = vzero(), vrs = vset1(rs);
            int64_t c = 0;
            for (; c + VW <= C; c += VW) {
                vec xhat = vmul(vloadu(xr + c), vrs);
                acc = vfmadd(vmul(vloadu(d + c), vloadu(w + c)), xhat, acc);
                vstoreu(pdw + c, vfmadd(vloadu(d + c), xhat, vloadu(pdw + c)));
            }
            float sum_dwx = vhsum(acc); /* Σ dout·w·xhat */
            for (; c < C; c++) {
                float xhat = xr[c] * rs;
                sum_dwx += d[c] * w[c] * xhat;
                pdw[c] += d[c] * xhat;
            }
            float m = sum_dwx / (float)C;
            vec vm = vset1(m);
            for (c = 0; c + VW <= C; c += VW) {
                vec xhat = vmul(vloadu(xr + c), vrs);
                vec g = vsub(vmul(vloadu(d + c), vloadu(w + c)), vmul(xhat, vm));
                vstoreu(dxr + c, vfmadd(g, vrs, vloadu(dxr + c)));
            }
            for (; c < C; c++) dxr[c] += (d[c] * w[c] - xr[c] * rs * m) * rs;
        }
    }
    cllm_tree_reduce(partial_dw, chunks, C, dw, 1, num_threads);
    cllm_free(partial_dw);
    return 0;
}
