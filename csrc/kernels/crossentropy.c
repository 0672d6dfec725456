/* Fused softmax + cross-entropy: loss and gradient in one sweep over each row of logits. Once per ISA (simd.h). */
#include <math.h>
#include <string.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

/* Σ e^(z[j] - mx) over a row, writing the exponentials to e (which may be z). Vector lanes, then the ragged end
 * through one padded register whose padding is dropped. */
static float exp_sum(const float *z, float *e, int64_t V, float mx)
{
    vec acc = vzero(), vmx = vset1(mx);
    int64_t j = 0;
    for (; j + VW <= V; j += VW) {
        vec x = vexp(vsub(vloadu(z + j), vmx));
        vstoreu(e + j, x);
        acc = vadd(acc, x);
    }
    float s = vhsum(acc);
    if (j < V) {
        _Alignas(CLLM_ALIGN) float t[VW] = {0};
        memcpy(t, z + j, sizeof(float) * (size_t)(V - j));
        vstoreu(t, vexp(vsub(vloadu(t), vmx)));
        for (int64_t r = 0; r < V - j; r++) s += t[r];
        memcpy(e + j, t, sizeof(float) * (size_t)(V - j));
    }
    return s;
}

static float row_max(const float *z, int64_t V)
{
    float mx = z[0];
    int64_t j = 0;
    if (V >= VW) {
        vec m = vloadu(z);
        for (j = VW; j + VW <= V; j += VW) m = vmax(m, vloadu(z + j));
        mx = vhmax(m);
    }
    for (; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    return mx;
}

/* losses[n] = logsumexp(z_n) - z_n[target]; with write_grad, z_n = (softmax(z_n) - onehot)·scale.
 * logits (N,V), targets (N) in [0,V) or -1, losses (N) */
int ISA_FN(cllm_crossentropy_forward_backward)(float *logits, const int32_t *targets, float *losses, int64_t N,
                                               int64_t V, float scale, int write_grad, int num_threads)
{
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *scratch = write_grad ? NULL : cllm_alloc(sizeof(float) * V); /* exponentials when z must stay */
        if (!write_grad && !scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            float *z = logits + n * V;
            int32_t target = targets[n];
            if (target < 0) {
                losses[n] = 0.0f;
                if (write_grad) memset(z, 0, sizeof(float) * (size_t)V);
                continue;
            }
            if (!write_grad && !scratch) continue;
            float mx = row_max(z, V), zt = z[target];
            float *e = write_grad ? z : scratch;
            float sum = exp_sum(z, e, V, mx);
            losses[n] = logf(sum) + mx - zt;
            if (write_grad) {
                vec k = vset1(scale / sum);
                int64_t j = 0;
                for (; j + VW <= V; j += VW) vstoreu(z + j, vmul(vloadu(z + j), k));
                for (; j < V; j++) z[j] = z[j] * (scale / sum);
                z[target] -= scale;
            }
        }
        cllm_free(scratch);
    }
    return failed ? CLLM_ENOMEM : 0;
}
