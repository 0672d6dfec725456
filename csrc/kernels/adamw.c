/* The optimizer's kernels: the gradient's squared norm (for clipping) and one fused AdamW step over the flat
 * parameter buffer. Compiled once per ISA (simd.h). */
#include <math.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

#define CHUNK ((int64_t)1 << 16) /* elements per partial sum and per parallel work item */
#define LANES 16 /* independent sums per chunk: vector registers of doubles, enough chains to hide the add latency */

/* *out = Σ x² (n), each chunk summed in double, chunks added up the sphere tree. */
int ISA_FN(cllm_sum_squares)(const float *x, int64_t n, double *out, int num_threads)
{
    int64_t chunks = cllm_max(1, cllm_ceil_div(n, CHUNK));
    double *partials = cllm_alloc(sizeof(double) * chunks);
    if (!partials) return CLLM_ENOMEM;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        double s[LANES] = {0.0};
        int64_t i = k * CHUNK, end = cllm_min(n, i + CHUNK);
        for (; i + LANES <= end; i += LANES)
            for (int r = 0; r < LANES; r++) s[r] += (double)x[i + r] * x[i + r];
        for (; i < end; i++) s[0] += (double)x[i] * x[i];
        for (int w = LANES / 2; w > 0; w /= 2) /* the lanes pairwise: the same order on every ISA */
            for (int r = 0; r < w; r++) s[r] += s[r + w];
        partials[k] = s[0];
    }
    *out = cllm_tree_sum_f64(partials, chunks);
    cllm_free(partials);
    return 0;
}

/* AdamW on p[i0, i1) with decay on or off (PyTorch's formula; see cllm.h). */
static void adamw_range(float *p, const float *g, float *m, float *v, int64_t i0, int64_t i1, float b1, float b2,
                        float eps, float decay_factor, float step_size, float inv_sqrt_bc2, float gs)
{
    vec vb1 = vset1(b1), vb2 = vset1(b2), v1b1 = vset1(1.0f - b1), v1b2 = vset1(1.0f - b2), vgs = vset1(gs);
    vec veps = vset1(eps), vdf = vset1(decay_factor), vss = vset1(step_size), vibc2 = vset1(inv_sqrt_bc2);
    int64_t i = i0;
    for (; i + VW <= i1; i += VW) {
        vec gi = vmul(vloadu(g + i), vgs);
        vec mi = vfmadd(vb1, vloadu(m + i), vmul(v1b1, gi));
        vec vi = vfmadd(vb2, vloadu(v + i), vmul(v1b2, vmul(gi, gi)));
        vec denom = vadd(vmul(vsqrt(vi), vibc2), veps);
        vec pi = vmul(vloadu(p + i), vdf);
        vstoreu(p + i, vsub(pi, vmul(vss, vdiv(mi, denom))));
        vstoreu(m + i, mi);
        vstoreu(v + i, vi);
    }
    for (; i < i1; i++) {
        float gi = g[i] * gs;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * (gi * gi);
        float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
        p[i] = p[i] * decay_factor - step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

int ISA_FN(cllm_adamw_step)(float *p, const float *g, float *m, float *v, int64_t n, const int64_t *seg_start,
                            const uint8_t *decay, int64_t nseg, float lr, float beta1, float beta2, float eps,
                            float weight_decay, float bc1, float bc2, float grad_scale, int num_threads)
{
    float step_size = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2), decayed = 1.0f - lr * weight_decay;
    int64_t chunks = cllm_ceil_div(n, CHUNK);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        int64_t c0 = k * CHUNK, c1 = cllm_min(n, c0 + CHUNK);
        int64_t s = 0; /* the first segment that ends after c0 */
        while (s < nseg && seg_start[s + 1] <= c0) s++;
        for (; s < nseg && seg_start[s] < c1; s++) {
            if (decay[s] > 1) continue; /* another optimizer's segment */
            int64_t i0 = cllm_max(c0, seg_start[s]), i1 = cllm_min(c1, seg_start[s + 1]);
            adamw_range(p, g, m, v, i0, i1, beta1, beta2, eps, decay[s] ? decayed : 1.0f, step_size, inv_sqrt_bc2,
                        grad_scale);
        }
    }
    return 0;
}
