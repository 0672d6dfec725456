/* One head's rotary rotation, HF Llama's half-split form: the one definition that rope.c and qk_rotary.c share,
 * so that a head gets the same bits whichever applies it. Include after simd.h (compiled once per ISA).
 *
 * The pairs (a, b) = (x[i], x[i + half]) with c, s = c_row[i], s_row[i]: forward (a·c - b·s, b·c + a·s), inverse
 * (a·c + b·s, b·c - a·s). o may be x: each pair is read before it is written. */
#ifndef CLLM_ROPE_H
#define CLLM_ROPE_H

#include "runtime/simd.h"

static inline void rope_head(const float *x, float *o, const float *c, const float *s, int64_t half, int inverse)
{
    const float *xb = x + half;
    float *ob = o + half;
    int64_t i = 0;
    for (; i + VW <= half; i += VW) {
        vec a = vloadu(x + i), b = vloadu(xb + i), vc = vloadu(c + i), vs = vloadu(s + i);
        if (inverse) vs = vsub(vzero(), vs);
        vstoreu(o + i, vsub(vmul(a, vc), vmul(b, vs)));
        vstoreu(ob + i, vadd(vmul(b, vc), vmul(a, vs)));
    }
    for (; i < half; i++) {
        float a = x[i], b = xb[i], si = inverse ? -s[i] : s[i];
        o[i] = a * c[i] - b * si;
        ob[i] = b * c[i] + a * si;
    }
}

#endif
