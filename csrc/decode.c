/* One decode step of a whole GPT over its KV cache, as one call. Compiled once per ISA (simd.h).
 *
 * The step is the sequence of cllm/model.py's forward for M rows, each row one new token of its own sequence at its
 * own position, made of this ISA's kernels (matrix-vector products over packed weights, attention over the cache),
 * so its logits have the bits Model.forward gives those positions. Done in C because the step is small: from
 * Python, its 43 checked kernel calls would add about 40% to the step (340 µs on top of ~0.85 ms for "small").
 *
 * Shapes: x, ln, att, tmp (M,C) the residual stream and temporaries, qkv (M,3C), fc (M,H), mean, rstd (M).
 * Cheap row-wise ops on a few rows run on one thread (a parallel region would cost more than the op); the matrix
 * products and the attention use num_threads. Every kernel gives the same bits for any thread count. */
#include "cllm.h"
#include "dispatch.h"
#include "memory.h"

#define SERIAL_ELEMENTS 16384 /* row-wise ops on up to this many elements run on the calling thread */

int ISA_FN(cllm_gpt_decode_step)(const cllm_gpt *g, const int32_t *ids, const int32_t *slot, const int32_t *pos,
                                 int64_t M, float *scratch, float *logits, int num_threads)
{
    int64_t C = g->C, H = g->H;
    float *x = scratch, *ln = x + M * C, *qkv = ln + M * C, *att = qkv + 3 * M * C, *tmp = att + M * C;
    float *fc = tmp + M * C, *mean = fc + M * H, *rstd = mean + M;
    int nt = num_threads, rows_nt = M * H <= SERIAL_ELEMENTS ? 1 : num_threads;
    for (int64_t m = 0; m < M; m++) /* x[m] = wte[ids[m]] + wpe[pos[m]] */
        ISA_FN(cllm_embedding_forward)(ids + m, g->wte, g->wpe + (int64_t)pos[m] * C, x + m * C, 1, 1, C, 1);
    for (int64_t l = 0; l < g->L; l++) {
        const cllm_gpt_layer *w = &g->layers[l];
        ISA_FN(cllm_layernorm_forward)(x, w->ln1_w, w->ln1_b, ln, mean, rstd, M, C, rows_nt);
        ISA_FN(cllm_linear_forward_packed)(ln, w->attn_wp, w->attn_b, qkv, M, C, 3 * C, nt);
        if (ISA_FN(cllm_attention_decode)(qkv, w->kcache, w->vcache, att, slot, pos, M, C, g->NH, g->Tk, nt))
            return CLLM_ENOMEM;
        ISA_FN(cllm_linear_forward_packed)(att, w->attn_proj_wp, w->attn_proj_b, tmp, M, C, C, nt);
        ISA_FN(cllm_residual_forward)(x, tmp, x, M * C, rows_nt);
        ISA_FN(cllm_layernorm_forward)(x, w->ln2_w, w->ln2_b, ln, mean, rstd, M, C, rows_nt);
        ISA_FN(cllm_linear_forward_packed)(ln, w->fc_wp, w->fc_b, fc, M, C, H, nt);
        ISA_FN(cllm_gelu_forward)(fc, fc, M * H, rows_nt);
        ISA_FN(cllm_linear_forward_packed)(fc, w->fc_proj_wp, w->fc_proj_b, tmp, M, H, C, nt);
        ISA_FN(cllm_residual_forward)(x, tmp, x, M * C, rows_nt);
    }
    ISA_FN(cllm_layernorm_forward)(x, g->lnf_w, g->lnf_b, ln, mean, rstd, M, C, rows_nt);
    ISA_FN(cllm_linear_forward_packed)(ln, g->head_wp, NULL, logits, M, C, g->V, nt);
    return 0;
}
