/* SwiGLU, the Llama MLP's gate: out = silu(gate)·up (swiglu.h), forward and backward. Compiled once per ISA
 * (simd.h). Parallel over rows; a row's ragged end goes through the same vector code via a padded register, so
 * each element's bits depend on nothing but its values. */
#include <string.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"
#include "swiglu.h"

/* out[m] = silu(gu[m, :H])·gu[m, H:].   gu (M, 2H): each row the gate then the up projection; out (M, H) */
int ISA_FN(cllm_swiglu_forward)(const float *gu, float *out, int64_t M, int64_t H, int num_threads)
{
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *g = gu + m * 2 * H, *u = g + H;
        float *o = out + m * H;
        int64_t i = 0;
        for (; i + VW <= H; i += VW) vstoreu(o + i, swiglu_vec(vloadu(g + i), vloadu(u + i)));
        if (i < H) {
            _Alignas(CLLM_ALIGN) float tg[VW] = {0}, tu[VW] = {0}, to[VW];
            size_t n = sizeof(float) * (size_t)(H - i);
            memcpy(tg, g + i, n);
            memcpy(tu, u + i, n);
            vstoreu(to, swiglu_vec(vloadu(tg), vloadu(tu)));
            memcpy(o + i, to, n);
        }
    }
    return 0;
}

/* dgu[m] = (dout·up·silu'(gate), dout·silu(gate)) (overwritten).   gu, dgu (M, 2H); dout (M, H) */
int ISA_FN(cllm_swiglu_backward)(const float *gu, const float *dout, float *dgu, int64_t M, int64_t H,
                                 int num_threads)
{
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *g = gu + m * 2 * H, *u = g + H, *d = dout + m * H;
        float *dg = dgu + m * 2 * H, *du = dg + H;
        vec vdg, vdu;
        int64_t i = 0;
        for (; i + VW <= H; i += VW) {
            swiglu_grad_vec(vloadu(g + i), vloadu(u + i), vloadu(d + i), &vdg, &vdu);
            vstoreu(dg + i, vdg);
            vstoreu(du + i, vdu);
        }
        if (i < H) {
            _Alignas(CLLM_ALIGN) float tg[VW] = {0}, tu[VW] = {0}, td[VW] = {0}, tdg[VW], tdu[VW];
            size_t n = sizeof(float) * (size_t)(H - i);
            memcpy(tg, g + i, n);
            memcpy(tu, u + i, n);
            memcpy(td, d + i, n);
            swiglu_grad_vec(vloadu(tg), vloadu(tu), vloadu(td), &vdg, &vdu);
            vstoreu(tdg, vdg);
            vstoreu(tdu, vdu);
            memcpy(dg + i, tdg, n);
            memcpy(du + i, tdu, n);
        }
    }
    return 0;
}
