# cython: language_level=3
"""csrc/cllm.h for Cython: the declarations _kernels.pyx calls (Cython reads this file before the .pyx of the
same name). Keep it in step with cllm.h, which is the reference: shapes and meanings are documented there."""

from libc.stdint cimport int32_t, int64_t, uint8_t


cdef extern from "cllm.h" nogil:
    int CLLM_ENOMEM
    int CLLM_PANEL
    int cllm_openmp_enabled()
    int cllm_openmp_version()
    int cllm_max_threads()
    const char *cllm_compiler()
    int cllm_native_build()
    const char *cllm_compiled_isas()
    const char *cllm_cpu_isas()
    const char *cllm_isa()
    int cllm_set_isa(const char *name)
    void cllm_tree_reduce(float *partials, int64_t n, int64_t len, float *out, int accumulate, int num_threads)
    int cllm_linear_forward(const float *x, const float *w, const float *b, const float *residual, float *y,
                            float *gelu_y,
                            int64_t M, int64_t K, int64_t N, int num_threads)
    int cllm_linear_backward(const float *dy, const float *x, const float *w, const float *gelu_x, float *dx,
                             float *dw, float *db,
                             int64_t M, int64_t K, int64_t N, int accumulate, int num_threads)
    int cllm_linear_forward_packed(const float *x, const float *wp, const float *b, float *y, int64_t M, int64_t K,
                                   int64_t N, int num_threads)
    int cllm_embedding_forward(const int32_t *idx, const float *wte, const float *wpe, float *out,
                               int64_t B, int64_t T, int64_t C, int num_threads)
    int cllm_embedding_backward(const float *dout, const int32_t *idx, float *dwte, float *dwpe,
                                int64_t B, int64_t T, int64_t C, int num_threads)
    int cllm_layernorm_forward(const float *x, const float *w, const float *b, float *out, float *mean,
                               float *rstd, int64_t N, int64_t C, int num_threads)
    int cllm_layernorm_backward(const float *dout, const float *x, const float *w, const float *mean,
                                const float *rstd, float *dx, float *dw, float *db, int64_t N, int64_t C,
                                int num_threads)
    int cllm_rmsnorm_forward(const float *x, const float *w, float *out, float *rstd, int64_t N, int64_t C,
                             float eps, int num_threads)
    int cllm_rmsnorm_backward(const float *dout, const float *x, const float *w, const float *rstd, float *dx,
                              float *dw, int64_t N, int64_t C, int num_threads)
    int cllm_rope(const float *x, float *out, const int32_t *pos, const float *cos_t, const float *sin_t,
                  int64_t M, int64_t H, int64_t hs, int inverse, int num_threads)
    int cllm_qk_rotary_forward(const float *inp, float *out, const float *q_norm, const float *k_norm, float *rstd,
                               const int32_t *pos, const float *cos_t, const float *sin_t, int64_t M, int64_t NH,
                               int64_t hs, float eps, int num_threads)
    int cllm_qk_rotary_backward(float *dqkv, const float *inp, const float *q_norm, const float *k_norm,
                                const float *rstd, const int32_t *pos, const float *cos_t, const float *sin_t,
                                float *dq_norm, float *dk_norm, int64_t M, int64_t NH, int64_t hs, int num_threads)
    int cllm_attention_forward(const float *qkv, float *out, float *lse, int64_t B, int64_t T, int64_t C,
                               int64_t NH, int num_threads)
    int cllm_attention_backward(const float *dout, const float *qkv, const float *out, const float *lse,
                                float *dqkv, int64_t B, int64_t T, int64_t C, int64_t NH, int num_threads)
    int cllm_attention_decode(const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot,
                              const int32_t *pos, int64_t M, int64_t C, int64_t NH, int64_t Tk, int num_threads)
    int cllm_attention_cache_store(const float *qkv, float *kcache, float *vcache, int64_t slot, int64_t T,
                                   int64_t C, int64_t NH, int64_t Tk, int num_threads)
    ctypedef struct cllm_gpt_layer:
        const float *ln1_w
        const float *ln1_b
        const float *attn_wp
        const float *attn_b
        const float *attn_proj_wp
        const float *attn_proj_b
        const float *ln2_w
        const float *ln2_b
        const float *fc_wp
        const float *fc_b
        const float *fc_proj_wp
        const float *fc_proj_b
        float *kcache
        float *vcache
    ctypedef struct cllm_gpt:
        int64_t V, C, H, NH, L, S, Tk, Tctx
        const float *wte
        const float *wpe
        const float *lnf_w
        const float *lnf_b
        const float *head_wp
        const cllm_gpt_layer *layers
    int cllm_gpt_decode_step(const cllm_gpt *g, const int32_t *ids, const int32_t *slot, const int32_t *pos,
                             int64_t M, float *scratch, float *logits, int num_threads)
    int cllm_swiglu_forward(const float *gu, float *out, int64_t M, int64_t H, int num_threads)
    int cllm_swiglu_backward(const float *gu, const float *dout, float *dgu, int64_t M, int64_t H, int num_threads)
    int cllm_gelu_forward(const float *x, float *out, int64_t n, int num_threads)
    int cllm_gelu_backward(const float *x, const float *dout, float *dx, int64_t n, int num_threads)
    int cllm_residual_forward(const float *a, const float *b, float *out, int64_t n, int num_threads)
    int cllm_crossentropy_forward_backward(float *logits, const int32_t *targets, float *losses, int64_t N,
                                           int64_t V, float scale, int write_grad, int num_threads)
    int cllm_sum_squares(const float *x, int64_t n, double *out, int num_threads)
    int cllm_adamw_step(float *p, const float *g, float *m, float *v, int64_t n, const int64_t *seg_start,
                        const uint8_t *decay, int64_t nseg, float lr, float beta1, float beta2, float eps,
                        float weight_decay, float bc1, float bc2, float grad_scale, int num_threads)
