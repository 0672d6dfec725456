/* Rotary position embedding, HF Llama's half-split form (rotate_half), and its inverse (the backward).
 * Compiled once per ISA (simd.h). */
#include "cllm.h"
#include "runtime/dispatch.h"

/* Each head's pair (a, b) = (x[i], x[i + hs/2]) at row m, with c, s = cos_t, sin_t[pos[m], i]:
 * forward (a·c - b·s, b·c + a·s); inverse (a·c + b·s, b·c - a·s).
 * x, out (M, H, hs), out may be x; pos (M); cos_t, sin_t (P, hs/2) */
int ISA_FN(cllm_rope)(const float *x, float *out, const int32_t *pos, const float *cos_t, const float *sin_t,
                      int64_t M, int64_t H, int64_t hs, int inverse, int num_threads)
{
    const int64_t half = hs / 2;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *c = cos_t + (int64_t)pos[m] * half, *s = sin_t + (int64_t)pos[m] * half;
        for (int64_t h = 0; h < H; h++) {
            const float *xa = x + (m * H + h) * hs, *xb = xa + half;
            float *oa = out + (m * H + h) * hs, *ob = oa + half;
            int64_t i = 0;
            for (; i + VW <= half; i += VW) {
                vec a = vloadu(xa + i), b = vloadu(xb + i), vc = vloadu(c + i), vs = vloadu(s + i);
                if (inverse) vs = vsub(vzero(), vs);
                vstoreu(oa + i, vsub(vmul(a, vc), vmul(b, vs)));
                vstoreu(ob + i, vadd(vmul(b, vc), vmul(a, vs)));
            }
            for (; i < half; i++) {
                float a = xa[i], b = xb[i], si = inverse ? -s[i] : s[i];
                oa[i] = a * c[i] - b * si;
                ob[i] = b * c[i] + a * si;
            }
        }
    }
    return 0;
}
