/* LayerNorm over the last dimension (eps 1e-5), forward and backward. Compiled once per ISA (simd.h). */
#include <math.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

#define EPS 1e-5f
#define CHUNK_ROWS 64 /* dw, db: sums over rows in chunks of this many rows, added up the sphere tree */

/* Σ x[c] for c < C with VW lane accumulators, then the lanes in a fixed order. */
static float row_sum(const float *x, int64_t C)
{
    vec acc = vzero();
    int64_t c = 0;
    for (; c + VW <= C; c += VW) acc = vadd(acc, vloadu(x + c));
    float s = vhsum(acc);
    for (; c < C; c++) s += x[c];
    return s;
}

/* out = (x - mean)·rstd·w + b per row.   x, out (N,C); w, b (C); mean, rstd (N) */
int ISA_FN(cllm_layernorm_forward)(const float *x, const float *w, const float *b, float *out, float *mean,
                                   float *rstd, int64_t N, int64_t C, int num_threads)
{
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float *o = out + n * C;
        float mu = row_sum(xr, C) / (float)C;
        vec vmu = vset1(mu), acc = vzero();
        int64_t c = 0;
        for (; c + VW <= C; c += VW) {
            vec d = vsub(vloadu(xr + c), vmu);
            acc = vfmadd(d, d, acc);
        }
        float var = vhsum(acc);
        for (; c < C; c++) var += (xr[c] - mu) * (xr[c] - mu);
        float rs = 1.0f / sqrtf(var / (float)C + EPS);
        vec vrs = vset1(rs);
        for (c = 0; c + VW <= C; c += VW)
            vstoreu(o + c, vfmadd(vmul(vsub(vloadu(xr + c), vmu), vrs), vloadu(w + c), vloadu(b + c)));
        for (; c < C; c++) o[c] = (xr[c] - mu) * rs * w[c] + b[c];
        mean[n] = mu;
        rstd[n] = rs;
    }
    return 0;
}

/* dx += (dout·w - mean(dout·w) - xhat·mean(dout·w·xhat))·rstd;  dw += Σ_n dout·xhat;  db += Σ_n dout.
 * dout, x, dx (N,C); w, dw, db (C); mean, rstd (N) */
int ISA_FN(cllm_layernorm_backward)(const float *dout, const float *x, const float *w, const float *mean,
                                    const float *rstd, float *dx, float *dw, float *db, int64_t N, int64_t C,
                                    int num_threads)
{
    int64_t chunks = cllm_max(1, cllm_ceil_div(N, CHUNK_ROWS));
    float *partial_dw = cllm_alloc(sizeof(float) * chunks * C), *partial_db = cllm_alloc(sizeof(float) * chunks * C);
    if (!partial_dw || !partial_db) {
        cllm_free(partial_dw);
        cllm_free(partial_db);
        return CLLM_ENOMEM;
    }
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        float *pdw = partial_dw + k * C, *pdb = partial_db + k * C;
        for (int64_t c = 0; c < C; c++) pdw[c] = pdb[c] = 0.0f;
        for (int64_t n = k * CHUNK_ROWS; n < cllm_min(N, (k + 1) * CHUNK_ROWS); n++) {
            const float *d = dout + n * C, *xr = x + n * C;
            float *dxr = dx + n * C;
            float mu = mean[n], rs = rstd[n];
            float sum_dw = 0.0f, sum_dwx = 0.0f; /* Σ dout·w and Σ dout·w·xhat */
            vec a1 = vzero(), a2 = vzero(), vmu = vset1(mu), vrs = vset1(rs);
            int64_t c = 0;
            for (; c + VW <= C; c += VW) {
                vec xhat = vmul(vsub(vloadu(xr + c), vmu), vrs), dn = vmul(vloadu(d + c), vloadu(w + c));
                a1 = vadd(a1, dn);
                a2 = vfmadd(dn, xhat, a2);
                vstoreu(pdw + c, vfmadd(vloadu(d + c), xhat, vloadu(pdw + c)));
                vstoreu(pdb + c, vadd(vloadu(pdb + c), vloadu(d + c)));
            }
            sum_dw = vhsum(a1);
            sum_dwx = vhsum(a2);
            for (; c < C; c++) {
                float xhat = (xr[c] - mu) * rs, dn = d[c] * w[c];
                sum_dw += dn;
                sum_dwx += dn * xhat;
                pdw[c] += d[c] * xhat;
                pdb[c] += d[c];
            }
            float m1 = sum_dw / (float)C, m2 = sum_dwx / (float)C;
            vec vm1 = vset1(m1), vm2 = vset1(m2);
            for (c = 0; c + VW <= C; c += VW) {
                vec xhat = vmul(vsub(vloadu(xr + c), vmu), vrs);
                vec g = vsub(vsub(vmul(vloadu(d + c), vloadu(w + c)), vm1), vmul(xhat, vm2));
                vstoreu(dxr + c, vfmadd(g, vrs, vloadu(dxr + c)));
            }
            for (; c < C; c++) {
                float xhat = (xr[c] - mu) * rs;
                dxr[c] += (d[c] * w[c] - m1 - xhat * m2) * rs;
            }
        }
    }
    cllm_tree_reduce(partial_dw, chunks, C, dw, 1, num_threads);
    cllm_tree_reduce(partial_db, chunks, C, db, 1, num_threads);
    cllm_free(partial_dw);
    cllm_free(partial_db);
    return 0;
}
