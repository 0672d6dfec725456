/* SiLU and its derivative, one vector at a time: the one definition that swiglu.c's kernels and the decode step
 * share, so that an element gets the same bits whichever computes it. Include after simd.h (compiled once per ISA).
 *
 * silu(g) = g·σ(g), σ(g) = 1/(1 + e^(-g));  silu'(g) = σ(g)·(1 + g·(1 - σ(g))). */
#ifndef CLLM_SWIGLU_H
#define CLLM_SWIGLU_H

#include "runtime/simd.h"

static inline vec sigmoid_vec(vec g) { return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vsub(vzero(), g)))); }

/* silu(g)·u */
static inline vec swiglu_vec(vec g, vec u) { return vmul(vmul(g, sigmoid_vec(g)), u); }

/* (dg, du) = (dout·u·silu'(g), dout·silu(g)) */
static inline void swiglu_grad_vec(vec g, vec u, vec dout, vec *dg, vec *du)
{
    vec s = sigmoid_vec(g);
    vec dsilu = vmul(s, vfmadd(g, vsub(vset1(1.0f), s), vset1(1.0f)));
    *dg = vmul(vmul(dout, u), dsilu);
    *du = vmul(dout, vmul(g, s));
}

#endif
