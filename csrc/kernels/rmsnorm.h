/* One row's RMSNorm: the one definition that rmsnorm.c and qk_rotary.c's QK-norm share, so that a row (or a head)
 * gets the same bits whichever normalises it. Include after simd.h (compiled once per ISA). */
#ifndef CLLM_RMSNORM_H
#define CLLM_RMSNORM_H

#include <math.h>

#include "runtime/simd.h"

/* out = x·rstd·w over n floats (out may be x); returns rstd = 1/sqrt(mean(x²) + eps). */
static inline float rmsnorm_row(const float *x, const float *w, float *out, int64_t n, float eps)
{
    vec acc = vzero();
    int64_t c = 0;
    for (; c + VW <= n; c += VW) {
        vec v = vloadu(x + c);
        acc = vfmadd(v, v, acc);
    }
    float ss = vhsum(acc);
    for (; c < n; c++) ss += x[c] * x[c];
    float rs = 1.0f / sqrtf(ss / (float)n + eps);
    vec vrs = vset1(rs);
    for (c = 0; c + VW <= n; c += VW) vstoreu(out + c, vmul(vmul(vloadu(x + c), vrs), vloadu(w + c)));
    for (; c < n; c++) out[c] = x[c] * rs * w[c];
    return rs;
}

#endif
