/* One decode step of a whole GPT over its KV cache, as one call. Compiled once per ISA (simd.h).
 *
 * The step is the sequence of cllm/model.py's forward for M rows, each row one new token of its own sequence at its
 * own position, made of this ISA's kernels (matrix-vector products over packed weights, attention over the cache),
 * so its logits have the bits Model.forward gives those positions. Done in C because the step is small: from
 * Python, its 43 checked kernel calls would add about 40% to the step (340 µs on top of ~0.85 ms for "small").
 *
 * One parallel region for the whole step. Threads split the output columns of every matrix product and the
 * (row, head) units of the attention; the cheap row-wise ops (embedding, residual adds, LayerNorms) every thread
 * does for itself on its own copy of the residual stream, so that no thread waits while another works alone: the
 * only synchronisation is a barrier after each product and after the attention, which all threads reach together.
 * The barriers spin (cllm_spin_barrier): with a short OpenMP spin (GOMP_SPINCOUNT=3000, cllm's default) waiting
 * threads would sleep at each of the ~5 barriers a layer and cost ~4 µs each to wake, 20% of a 2-thread step.
 *
 * Shared: qkv (M,3C), att, tmp (M,C), fc (M,H). Each thread's own: x, ln (M,C) the residual stream and its
 * normalisation, mean, rstd (M), the attention's scratch. */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

/* x (M,C) += y (M,C) and ln = LayerNorm(x) with (w, b): a thread's own rows, on the calling thread. */
static void add_and_normalise(float *x, const float *y, const float *w, const float *b, float *ln, float *mean,
                              float *rstd, int64_t M, int64_t C)
{
    if (y) ISA_FN(cllm_residual_forward)(x, y, x, M * C, 1);
    ISA_FN(cllm_layernorm_forward)(x, w, b, ln, mean, rstd, M, C, 1);
}

int ISA_FN(cllm_gpt_decode_step)(const cllm_gpt *g, const int32_t *ids, const int32_t *slot, const int32_t *pos,
                                 int64_t M, float *scratch, float *logits, int num_threads)
{
    int64_t C = g->C, H = g->H, hs = C / g->NH;
    float *qkv = scratch, *att = qkv + 3 * M * C, *tmp = att + M * C, *fc = tmp + M * C;
    float *own_base = fc + M * H;
    int64_t own_size = M * (2 * C + 2) + CLLM_DECODE_UNIT_SCRATCH(hs);
    cllm_spin_barrier barrier = {0, 0};
#pragma omp parallel num_threads(num_threads)
    {
        int64_t t = 0, nt = 1, cols[2];
#ifdef _OPENMP
        t = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        float *x = own_base + t * own_size, *ln = x + M * C, *mean = ln + M * C, *rstd = mean + M;
        float *unit_scratch = rstd + M;
        for (int64_t m = 0; m < M; m++) /* x[m] = wte[ids[m]] + wpe[pos[m]] */
            ISA_FN(cllm_embedding_forward)(ids + m, g->wte, g->wpe + (int64_t)pos[m] * C, x + m * C, 1, 1, C, 1);
        for (int64_t l = 0; l < g->L; l++) {
            const cllm_gpt_layer *w = &g->layers[l];
            add_and_normalise(x, NULL, w->ln1_w, w->ln1_b, ln, mean, rstd, M, C);
            ISA_FN(cllm_linear_packed_part)(ln, w->attn_wp, w->attn_b, qkv, M, C, 3 * C, t, nt, cols);
            cllm_spin_barrier_wait(&barrier, nt);
            for (int64_t u = t; u < M * g->NH; u += nt) /* stores this layer's k, v */
                ISA_FN(cllm_attention_decode_unit)(qkv, w->kcache, w->vcache, att, slot, pos, C, g->NH, g->Tk, u,
                                                   unit_scratch);
            cllm_spin_barrier_wait(&barrier, nt);
            ISA_FN(cllm_linear_packed_part)(att, w->attn_proj_wp, w->attn_proj_b, tmp, M, C, C, t, nt, cols);
            cllm_spin_barrier_wait(&barrier, nt);
            add_and_normalise(x, tmp, w->ln2_w, w->ln2_b, ln, mean, rstd, M, C);
            ISA_FN(cllm_linear_packed_part)(ln, w->fc_wp, w->fc_b, fc, M, C, H, t, nt, cols);
            for (int64_t m = 0; m < M && cols[1] > cols[0]; m++) /* GELU on this thread's own columns */
                ISA_FN(cllm_gelu_forward)(fc + m * H + cols[0], fc + m * H + cols[0], cols[1] - cols[0], 1);
            cllm_spin_barrier_wait(&barrier, nt);
            ISA_FN(cllm_linear_packed_part)(fc, w->fc_proj_wp, w->fc_proj_b, tmp, M, H, C, t, nt, cols);
            cllm_spin_barrier_wait(&barrier, nt);
            ISA_FN(cllm_residual_forward)(x, tmp, x, M * C, 1);
        }
        add_and_normalise(x, NULL, g->lnf_w, g->lnf_b, ln, mean, rstd, M, C);
        ISA_FN(cllm_linear_packed_part)(ln, g->head_wp, NULL, logits, M, C, g->V, t, nt, cols);
    }
    return 0;
}
