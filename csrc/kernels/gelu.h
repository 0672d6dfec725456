/* GELU with the tanh approximation, one vector at a time: the one definition that gelu.c's kernels and the
 * matmul's fused epilogues share, so that an element gets the same bits whichever computes it. Include after
 * simd.h (compiled once per ISA).
 *
 * gelu(x) = x·(1 + tanh(z))/2 with z = √(2/π)·(x + 0.044715·x³), computed as x·σ(2z), σ the logistic function,
 * so that one vexp serves: σ(2z) = 1/(1 + e^(-2z)).  gelu'(x) = s + 2·x·s·(1-s)·dz/dx, s = σ(2z). */
#ifndef CLLM_GELU_H
#define CLLM_GELU_H

#include "runtime/simd.h"

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_C 0.044715f

static inline vec sigmoid_2z(vec x) /* σ(2z(x)) */
{
    vec z = vmul(vset1(SQRT_2_OVER_PI), vfmadd(vmul(vset1(GELU_C), vmul(x, x)), x, x));
    return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vmul(vset1(-2.0f), z))));
}

static inline vec gelu_vec(vec x) { return vmul(x, sigmoid_2z(x)); }

/* dout·gelu'(x) */
static inline vec gelu_grad_vec(vec x, vec dout)
{
    vec s = sigmoid_2z(x);
    vec dz = vmul(vset1(SQRT_2_OVER_PI), vfmadd(vmul(vset1(3.0f * GELU_C), x), x, vset1(1.0f)));
    vec ds = vmul(vmul(vset1(2.0f), s), vsub(vset1(1.0f), s)); /* dσ(2z)/dz */
    return vmul(dout, vfmadd(vmul(x, ds), dz, s));
}

#endif
