/* The kernels that exist once per ISA (simd.h) and the table dispatch.c chooses among at run time.
 *
 * CLLM_ISA_KERNELS is the one list: X(name, parameters, arguments). From it come each ISA's declarations
 * (cllm_<name>_<isa>), the table's fields and entries, and the public cllm_<name> wrappers of cllm.h.
 * To add a kernel: declare cllm_<name> in cllm.h, add its line here, define ISA_FN(cllm_<name>) in an ISA source.
 * Every ISA kernel returns int: 0, or CLLM_ENOMEM. */
#ifndef CLLM_DISPATCH_H
#define CLLM_DISPATCH_H

#include <stdint.h>

#include "cllm.h"

#define CLLM_ISA_KERNELS(X)                                                                                        \
    X(linear_forward,                                                                                              \
      (const float *x, const float *w, const float *b, const float *residual, float *y, float *gelu_y, int64_t M,  \
       int64_t K, int64_t N, int num_threads),                                                                     \
      (x, w, b, residual, y, gelu_y, M, K, N, num_threads))                                                        \
    X(linear_backward,                                                                                             \
      (const float *dy, const float *x, const float *w, const float *gelu_x, float *dx, float *dw, float *db,      \
       int64_t M, int64_t K, int64_t N, int accumulate, int num_threads),                                          \
      (dy, x, w, gelu_x, dx, dw, db, M, K, N, accumulate, num_threads))                                            \
    X(linear_forward_packed,                                                                                       \
      (const float *x, const float *wp, const float *b, float *y, int64_t M, int64_t K, int64_t N, int num_threads),\
      (x, wp, b, y, M, K, N, num_threads))                                                                         \
    X(embedding_forward,                                                                                           \
      (const int32_t *idx, const float *wte, const float *wpe, float *out, int64_t B, int64_t T, int64_t C,        \
       int num_threads),                                                                                           \
      (idx, wte, wpe, out, B, T, C, num_threads))                                                                  \
    X(embedding_backward,                                                                                          \
      (const float *dout, const int32_t *idx, float *dwte, float *dwpe, int64_t B, int64_t T, int64_t C,           \
       int num_threads),                                                                                           \
      (dout, idx, dwte, dwpe, B, T, C, num_threads))                                                               \
    X(layernorm_forward,                                                                                           \
      (const float *x, const float *w, const float *b, float *out, float *mean, float *rstd, int64_t N, int64_t C, \
       int num_threads),                                                                                           \
      (x, w, b, out, mean, rstd, N, C, num_threads))                                                               \
    X(layernorm_backward,                                                                                          \
      (const float *dout, const float *x, const float *w, const float *mean, const float *rstd, float *dx,         \
       float *dw, float *db, int64_t N, int64_t C, int num_threads),                                               \
      (dout, x, w, mean, rstd, dx, dw, db, N, C, num_threads))                                                     \
    X(rmsnorm_forward,                                                                                             \
      (const float *x, const float *w, float *out, float *rstd, int64_t N, int64_t C, float eps, int num_threads),  \
      (x, w, out, rstd, N, C, eps, num_threads))                                                                   \
    X(rmsnorm_backward,                                                                                            \
      (const float *dout, const float *x, const float *w, const float *rstd, float *dx, float *dw, int64_t N,      \
       int64_t C, int num_threads),                                                                                \
      (dout, x, w, rstd, dx, dw, N, C, num_threads))                                                               \
    X(rope,                                                                                                        \
      (const float *x, float *out, const int32_t *pos, const float *cos_t, const float *sin_t, int64_t M,          \
       int64_t H, int64_t hs, int inverse, int num_threads),                                                       \
      (x, out, pos, cos_t, sin_t, M, H, hs, inverse, num_threads))                                                 \
    X(qk_rotary_forward,                                                                                           \
      (const float *in, float *out, const float *q_norm, const float *k_norm, float *rstd, const int32_t *pos,     \
       const float *cos_t, const float *sin_t, int64_t M, int64_t NH, int64_t hs, float eps, int num_threads),     \
      (in, out, q_norm, k_norm, rstd, pos, cos_t, sin_t, M, NH, hs, eps, num_threads))                             \
    X(qk_rotary_backward,                                                                                          \
      (float *dqkv, const float *in, const float *q_norm, const float *k_norm, const float *rstd,                  \
       const int32_t *pos, const float *cos_t, const float *sin_t, float *dq_norm, float *dk_norm, int64_t M,     \
       int64_t NH, int64_t hs, int num_threads),                                                                   \
      (dqkv, in, q_norm, k_norm, rstd, pos, cos_t, sin_t, dq_norm, dk_norm, M, NH, hs, num_threads))              \
    X(attention_forward,                                                                                           \
      (const float *qkv, float *out, float *lse, int64_t B, int64_t T, int64_t C, int64_t NH, int num_threads),    \
      (qkv, out, lse, B, T, C, NH, num_threads))                                                                   \
    X(attention_backward,                                                                                          \
      (const float *dout, const float *qkv, const float *out, const float *lse, float *dqkv, int64_t B, int64_t T, \
       int64_t C, int64_t NH, int num_threads),                                                                    \
      (dout, qkv, out, lse, dqkv, B, T, C, NH, num_threads))                                                       \
    X(attention_decode,                                                                                            \
      (const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot, const int32_t *pos,        \
       int64_t M, int64_t C, int64_t NH, int64_t Tk, int num_threads),                                             \
      (qkv, kcache, vcache, out, slot, pos, M, C, NH, Tk, num_threads))                                            \
    X(attention_cache_store,                                                                                       \
      (const float *qkv, float *kcache, float *vcache, int64_t slot, int64_t T, int64_t C, int64_t NH, int64_t Tk, \
       int num_threads),                                                                                           \
      (qkv, kcache, vcache, slot, T, C, NH, Tk, num_threads))                                                      \
    X(gpt_decode_step,                                                                                             \
      (const cllm_gpt *g, const int32_t *ids, const int32_t *slot, const int32_t *pos, int64_t M, float *scratch,  \
       float *logits, int num_threads),                                                                            \
      (g, ids, slot, pos, M, scratch, logits, num_threads))                                                        \
    X(swiglu_forward, (const float *gu, float *out, int64_t M, int64_t H, int num_threads),                        \
      (gu, out, M, H, num_threads))                                                                                \
    X(swiglu_backward, (const float *gu, const float *dout, float *dgu, int64_t M, int64_t H, int num_threads),    \
      (gu, dout, dgu, M, H, num_threads))                                                                          \
    X(gelu_forward, (const float *x, float *out, int64_t n, int num_threads), (x, out, n, num_threads))            \
    X(gelu_backward, (const float *x, const float *dout, float *dx, int64_t n, int num_threads),                   \
      (x, dout, dx, n, num_threads))                                                                               \
    X(residual_forward, (const float *a, const float *b, float *out, int64_t n, int num_threads),                  \
      (a, b, out, n, num_threads))                                                                                 \
    X(crossentropy_forward_backward,                                                                               \
      (float *logits, const int32_t *targets, float *losses, int64_t N, int64_t V, float scale, int write_grad,    \
       int num_threads),                                                                                           \
      (logits, targets, losses, N, V, scale, write_grad, num_threads))                                             \
    X(sum_squares, (const float *x, int64_t n, double *out, int num_threads), (x, n, out, num_threads))           \
    X(adamw_step,                                                                                                  \
      (float *p, const float *g, float *m, float *v, int64_t n, const int64_t *seg_start, const uint8_t *decay,    \
       int64_t nseg, float lr, float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,       \
       float grad_scale, int num_threads),                                                                         \
      (p, g, m, v, n, seg_start, decay, nseg, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale,           \
       num_threads))

/* Declarations and table entries for the ISA that CLLM_ISA_NAME(name) currently names (dispatch.c redefines it
 * once per ISA; an ISA source defines it from its own CLLM_ISA). */
#define CLLM_DECLARE(name, params, args) int CLLM_ISA_NAME(name) params;
#define CLLM_ENTRY(name, params, args) CLLM_ISA_NAME(name),

typedef struct {
    const char *name;
#define CLLM_FIELD(name, params, args) int(*name) params;
    CLLM_ISA_KERNELS(CLLM_FIELD)
#undef CLLM_FIELD
} cllm_kernel_table;

#ifdef CLLM_ISA /* in an ISA source: check its definitions against the list */
#include "simd.h"
#define CLLM_ISA_NAME(name) ISA_FN(cllm_##name)
CLLM_ISA_KERNELS(CLLM_DECLARE)
#undef CLLM_ISA_NAME

/* Pieces of kernels that one thread runs, for decode.c's single parallel region (per ISA, not dispatched). */
/* linear_forward_packed's part `part` of `parts` (see matmul.c); cols: the output columns it wrote, [c0, c1). */
void ISA_FN(cllm_linear_packed_part)(const float *x, const float *wp, const float *b, float *y, int64_t M, int64_t K,
                                     int64_t N, int64_t part, int64_t parts, int64_t cols[2]);
/* attention_decode's unit u = (row u / NH, head u % NH); scratch: CLLM_DECODE_UNIT_SCRATCH(hs) floats. */
#define CLLM_DECODE_UNIT_SCRATCH(hs) (64 + (hs))
void ISA_FN(cllm_attention_decode_unit)(const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot,
                                        const int32_t *pos, int64_t C, int64_t NH, int64_t Tk, int64_t u,
                                        float *scratch);
#endif

#endif
