/* The attention's q and k made ready: optional QK-norm (Qwen3's RMSNorm over each head, weight of head size),
 * then the rotary position embedding (rope.h), v copied; forward and backward. Compiled once per ISA (simd.h).
 * One pass over the projection's output writes the attention's input, and the backward undoes both in place. */
#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"
#include "rmsnorm.h"
#include "rope.h"

#define CHUNK_ROWS 64 /* the norm weights' gradients: sums over rows in chunks of this many rows, up the sphere tree */

/* Row m's q heads then k heads (2·NH of hs): normalised (when q_norm, k_norm are given) by rmsnorm.h's row, then
 * rotated at pos[m]; v copied.
 * in, out (M, 3·NH·hs): q, k, v, heads contiguous; q_norm, k_norm (hs) or both NULL; rstd (M, 2·NH) (unused
 * without norms); pos (M); cos_t, sin_t (P, hs/2) */
int ISA_FN(cllm_qk_rotary_forward)(const float *in, float *out, const float *q_norm, const float *k_norm,
                                   float *rstd, const int32_t *pos, const float *cos_t, const float *sin_t, int64_t M,
                                   int64_t NH, int64_t hs, float eps, int num_threads)
{
    const int64_t half = hs / 2, C = NH * hs;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *c = cos_t + (int64_t)pos[m] * half, *s = sin_t + (int64_t)pos[m] * half;
        for (int64_t j = 0; j < 2 * NH; j++) {
            const float *x = in + m * 3 * C + j * hs;
            float *o = out + m * 3 * C + j * hs;
            const float *w = j < NH ? q_norm : k_norm;
            if (w) {
                rstd[m * 2 * NH + j] = rmsnorm_row(x, w, o, hs, eps);
                rope_head(o, o, c, s, half, 0);
            } else {
                rope_head(x, o, c, s, half, 0);
            }
        }
        for (int64_t i = 2 * C; i < 3 * C; i++) out[m * 3 * C + i] = in[m * 3 * C + i];
    }
    return 0;
}

/* In place, dqkv's q and k heads go from the gradient of out to that of in: rotated back, then through the norm
 * (dx = (d·w - xhat·mean(d·w·xhat))·rstd with xhat = x·rstd); dv unchanged. dq_norm, dk_norm (hs) += Σ over rows
 * of d·xhat (NULL, with the norms, when there are none).   dqkv, in (M, 3·NH·hs); rstd (M, 2·NH) */
int ISA_FN(cllm_qk_rotary_backward)(float *dqkv, const float *in, const float *q_norm, const float *k_norm,
                                    const float *rstd, const int32_t *pos, const float *cos_t, const float *sin_t,
                                    float *dq_norm, float *dk_norm, int64_t M, int64_t NH, int64_t hs,
                                    int num_threads)
{
    const int64_t half = hs / 2, C = NH * hs;
    const int norms = q_norm != NULL;
    int64_t chunks = cllm_max(1, cllm_ceil_div(M, CHUNK_ROWS));
    float *partial = norms ? cllm_alloc(sizeof(float) * chunks * 2 * hs) : NULL;
    float *total = norms ? cllm_alloc(sizeof(float) * 2 * hs) : NULL;
    if (norms && (!partial || !total)) {
        cllm_free(partial);
        cllm_free(total);
        return CLLM_ENOMEM;
    }
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        float *pdw = norms ? partial + k * 2 * hs : NULL; /* [q_norm's hs | k_norm's hs] */
        if (norms)
            for (int64_t i = 0; i < 2 * hs; i++) pdw[i] = 0.0f;
        for (int64_t m = k * CHUNK_ROWS; m < cllm_min(M, (k + 1) * CHUNK_ROWS); m++) {
            const float *c = cos_t + (int64_t)pos[m] * half, *s = sin_t + (int64_t)pos[m] * half;
            for (int64_t j = 0; j < 2 * NH; j++) {
                float *d = dqkv + m * 3 * C + j * hs;
                rope_head(d, d, c, s, half, 1);
                if (!norms) continue;
                const float *x = in + m * 3 * C + j * hs, *w = j < NH ? q_norm : k_norm;
                float *pw = pdw + (j < NH ? 0 : hs);
                float rs = rstd[m * 2 * NH + j];
                vec acc = vzero(), vrs = vset1(rs);
                int64_t i = 0;
                for (; i + VW <= hs; i += VW) {
                    vec xhat = vmul(vloadu(x + i), vrs), vd = vloadu(d + i);
                    acc = vfmadd(vmul(vd, vloadu(w + i)), xhat, acc);
                    vstoreu(pw + i, vfmadd(vd, xhat, vloadu(pw + i)));
                }
                float sum_dwx = vhsum(acc);
                for (; i < hs; i++) {
                    float xhat = x[i] * rs;
                    sum_dwx += d[i] * w[i] * xhat;
                    pw[i] += d[i] * xhat;
                }
                vec vm = vset1(sum_dwx / (float)hs);
                for (i = 0; i + VW <= hs; i += VW) {
                    vec xhat = vmul(vloadu(x + i), vrs);
                    vstoreu(d + i, vmul(vsub(vmul(vloadu(d + i), vloadu(w + i)), vmul(xhat, vm)), vrs));
                }
                for (; i < hs; i++) d[i] = (d[i] * w[i] - x[i] * rs * (sum_dwx / (float)hs)) * rs;
            }
        }
    }
    if (norms) {
        cllm_tree_reduce(partial, chunks, 2 * hs, total, 0, num_threads);
        for (int64_t i = 0; i < hs; i++) {
            dq_norm[i] += total[i];
            dk_norm[i] += total[hs + i];
        }
    }
    cllm_free(partial);
    cllm_free(total);
    return 0;
}
