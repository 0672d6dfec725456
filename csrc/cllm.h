/* cllm's C kernels: every signature, with tensor shapes in comments.
 *
 * Conventions (as in llm.c): row-major float32, short dimension names (M rows, K inputs, N outputs), gradients
 * named d<tensor>. Every kernel takes num_threads (>= 1) and passes it to OpenMP per call; results are bitwise
 * identical for every num_threads: threads split output elements, and where a sum must be split it is cut into
 * chunks whose size depends only on the shapes, added up the sphere tree (threads.c) in a fixed order.
 * Functions returning int give 0 on success and CLLM_ENOMEM when scratch memory could not be allocated.
 */
#ifndef CLLM_H
#define CLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLLM_ENOMEM (-1)
#define CLLM_SPHERE_FANOUT 12 /* children per sphere in the reduction tree: a fan-out, not a thread count */

/* ---- build and dispatch (dispatch.c) ---- */
int cllm_openmp_enabled(void);      /* 1 if built with OpenMP */
int cllm_openmp_version(void);      /* _OPENMP (yyyymm), 0 without OpenMP */
int cllm_max_threads(void);         /* omp_get_max_threads(), 1 without OpenMP */
const char *cllm_compiler(void);    /* compiler name and version */
int cllm_native_build(void);        /* 1 if built with CLLM_NATIVE=1 (-march=native) */
const char *cllm_compiled_isas(void); /* comma-separated ISA paths built into this binary, e.g. "baseline,avx2,avx512" */
const char *cllm_cpu_isas(void);    /* those of them this CPU (and OS) can run */
const char *cllm_isa(void);         /* the path in use */
int cllm_set_isa(const char *name); /* choose a path ("auto" = best supported); 0 ok, -1 unknown or unsupported */

/* ---- thread helpers (threads.c) ---- */
/* Sum n partials of len floats each (partials[i*len .. i*len+len)) up the sphere tree, in place, then
 * out = partial total (accumulate=0) or out += partial total (accumulate=1). The order of additions depends only on
 * n: for p from the last internal node down to 0, for each child c = 12p+1 .. 12p+12 (< n): partial[p] += partial[c].
 * Parallel over element ranges, so every thread count gives the same bits. partials[n, len], out[len]. */
void cllm_tree_reduce(float *partials, int64_t n, int64_t len, float *out, int accumulate, int num_threads);
/* The same order for n double scalars: returns their sum; partials[n] is overwritten. */
double cllm_tree_sum_f64(double *partials, int64_t n);

/* A barrier for the nthreads threads of one parallel region, which spin (then yield the core) rather than sleep:
 * for regions whose threads meet every few microseconds (decode.c), where waking a sleeping thread costs more than
 * the work between two meetings. Zero-initialised, shared by the team; memory written before it is visible after. */
typedef struct {
    int64_t count, generation;
} cllm_spin_barrier;
void cllm_spin_barrier_wait(cllm_spin_barrier *b, int64_t nthreads);

/* ---- scratch.c: a large temporary kept between calls (64-byte aligned); NULL when out of memory ---- */
void *cllm_scratch_get(size_t bytes);
void cllm_scratch_put(void *p);

/* ---- linear layers (matmul.c) ---- */
/* y = x · wᵀ + b.   x is (M,K), w is (N,K) (PyTorch nn.Linear layout), b is (N) or NULL, y is (M,N).
 * Fused, at most one of (NULL for none): residual (M,N): y = residual + (x · wᵀ + b), the bits of
 * cllm_residual_forward's add;  gelu_y (M,N): also gelu_y = gelu(y), the bits of cllm_gelu_forward. */
int cllm_linear_forward(const float *x, const float *w, const float *b, const float *residual, float *y,
                        float *gelu_y, int64_t M, int64_t K, int64_t N, int num_threads);

/* Backward of linear_forward.   dy is (M,N), x is (M,K), w is (N,K).
 *   dx (M,K) = dy · w           (overwritten; NULL to skip); with gelu_x (M,K) not NULL, dx = (dy · w)·gelu'(gelu_x),
 *                               the bits of cllm_gelu_backward: the gradient through a GELU that gave x = gelu(gelu_x)
 *   dw (N,K) = dyᵀ · x          (overwritten, or added to when accumulate; NULL to skip)
 *   db (N)   = Σ_m dy[m,:]      (overwritten, or added to when accumulate; NULL to skip)
 * The sums over M are cut into fixed row chunks (a function of M, N, K only) reduced up the sphere tree. */
int cllm_linear_backward(const float *dy, const float *x, const float *w, const float *gelu_x, float *dx, float *dw,
                         float *db, int64_t M, int64_t K, int64_t N, int accumulate, int num_threads);

/* Decode: y = x · wᵀ + b for a few rows, with w packed once by panels of CLLM_PANEL output columns:
 * wp is (ceil(N/CLLM_PANEL), K, CLLM_PANEL), wp[p][k][c] = w[p·CLLM_PANEL + c][k] (0 past N). x is (M,K), b (N) or
 * NULL, y (M,N). Each row gets exactly the bits cllm_linear_forward gives it (same K-block order), for any M. */
#define CLLM_PANEL 32
int cllm_linear_forward_packed(const float *x, const float *wp, const float *b, float *y, int64_t M, int64_t K,
                               int64_t N, int num_threads);

/* ---- the GPT layers: one forward/backward pair per file, backward gradients added (+=) unless noted ---- */
/* embedding.c: out[b,t,:] = wte[idx[b,t],:] + wpe[t,:] (wpe NULL: no position embedding, as Llama's).   idx is (B,T) int32 in [0,V), wte is (V,C),
 * wpe is (>=T,C), out is (B,T,C). */
int cllm_embedding_forward(const int32_t *idx, const float *wte, const float *wpe, float *out, int64_t B, int64_t T,
                           int64_t C, int num_threads);
/* dwte[idx[b,t],:] += dout[b,t,:] and dwpe[t,:] += Σ_b dout[b,t,:] (dwpe NULL: none), each sum in (b,t) order: threads split the
 * channels, so there are no races and no order that depends on them. */
int cllm_embedding_backward(const float *dout, const int32_t *idx, float *dwte, float *dwpe, int64_t B, int64_t T,
                            int64_t C, int num_threads);

/* layernorm.c: out = (x - mean)·rstd·w + b per row, eps 1e-5.   x, out are (N,C); w, b are (C);
 * mean, rstd are (N), saved for the backward. */
int cllm_layernorm_forward(const float *x, const float *w, const float *b, float *out, float *mean, float *rstd,
                           int64_t N, int64_t C, int num_threads);
/* dx (N,C) +=; dw, db (C) += their sums over rows (fixed row chunks up the sphere tree). */
int cllm_layernorm_backward(const float *dout, const float *x, const float *w, const float *mean,
                            const float *rstd, float *dx, float *dw, float *db, int64_t N, int64_t C,
                            int num_threads);

/* rmsnorm.c: out = x·rstd·w per row, rstd = 1/sqrt(mean(x²) + eps) (Llama's norm; QK-norm with C = head size).
 * x, out are (N,C); w is (C); rstd is (N), saved for the backward. */
int cllm_rmsnorm_forward(const float *x, const float *w, float *out, float *rstd, int64_t N, int64_t C, float eps,
                         int num_threads);
/* dx (N,C) +=; dw (C) += its sum over rows (fixed row chunks up the sphere tree). */
int cllm_rmsnorm_backward(const float *dout, const float *x, const float *w, const float *rstd, float *dx, float *dw,
                          int64_t N, int64_t C, int num_threads);

/* rope.c: rotary position embedding, HF Llama's half-split form: each head's (a, b) = (x[i], x[i + hs/2]) becomes
 * (a·c - b·s, b·c + a·s) with c, s = cos_t, sin_t[pos[m], i]; inverse = 1 applies the inverse rotation (the
 * backward: dx from dout). x, out are (M,H,hs), out may be x, hs even; pos is (M); cos_t, sin_t are (P, hs/2). */
int cllm_rope(const float *x, float *out, const int32_t *pos, const float *cos_t, const float *sin_t, int64_t M,
              int64_t H, int64_t hs, int inverse, int num_threads);

/* qk_rotary.c: the attention's input from the q/k/v projection's output: each q and k head optionally RMS-normalised
 * (QK-norm: q_norm, k_norm (hs) both given, or both NULL; rstd (M, 2·NH) saved for the backward, as
 * cllm_rmsnorm_forward computes it) then rotated at its row's position as cllm_rope does; v copied.
 * in, out are (M, 3·NH·hs): rows of q, k, v, head h at h·hs .. h·hs+hs of each; pos (M); cos_t, sin_t (P, hs/2). */
int cllm_qk_rotary_forward(const float *in, float *out, const float *q_norm, const float *k_norm, float *rstd,
                           const int32_t *pos, const float *cos_t, const float *sin_t, int64_t M, int64_t NH,
                           int64_t hs, float eps, int num_threads);
/* dqkv (M, 3·NH·hs), in place: the gradient of out becomes the gradient of in (q, k rotated back and through the
 * norm; v unchanged); dq_norm, dk_norm (hs) += their sums over rows (fixed row chunks up the sphere tree). */
int cllm_qk_rotary_backward(float *dqkv, const float *in, const float *q_norm, const float *k_norm,
                            const float *rstd, const int32_t *pos, const float *cos_t, const float *sin_t,
                            float *dq_norm, float *dk_norm, int64_t M, int64_t NH, int64_t hs, int num_threads);

/* attention.c: causal multi-head self-attention, blocked with an online softmax (no T×T matrix).
 * qkv is (B,T,3C): q, k, v in that order, head h at columns h·hs .. h·hs+hs of each (hs = C/NH);
 * out is (B,T,C); lse is (B,NH,T): each softmax row's log-sum-exp, saved for the backward. */
int cllm_attention_forward(const float *qkv, float *out, float *lse, int64_t B, int64_t T, int64_t C, int64_t NH,
                           int num_threads);
/* dqkv (B,T,3C) = the gradient through attention of dout (B,T,C) (overwritten, not added); the backward
 * recomputes the scores from qkv and lse. One thread per (b, head): no races, a fixed order. */
int cllm_attention_backward(const float *dout, const float *qkv, const float *out, const float *lse, float *dqkv,
                            int64_t B, int64_t T, int64_t C, int64_t NH, int num_threads);

/* The decode step over a KV cache, per sequence slot s and head h: kcache (S,NH,hs,Tk) holds the keys transposed
 * (key j's d-th value at [s,h,d,j]), vcache (S,NH,Tk,hs) the values as rows; Tk is a multiple of 16.
 * attention_decode: qkv (M,3C) holds one new token of each of M sequences; row m uses slot[m] (distinct) and sits at
 * position pos[m] < Tk (the tokens cached before it). Stores its k and v there, then out (M,C) = its causal
 * attention over positions 0 .. pos[m]: the bits attention_forward gives that row. One thread per (row, head). */
int cllm_attention_decode(const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot,
                          const int32_t *pos, int64_t M, int64_t C, int64_t NH, int64_t Tk, int num_threads);
/* Prefill: stores the k and v of one sequence's qkv (T,3C), T <= Tk, in cache slot `slot` at positions 0 .. T-1
 * (and zero keys after them). */
int cllm_attention_cache_store(const float *qkv, float *kcache, float *vcache, int64_t slot, int64_t T, int64_t C,
                               int64_t NH, int64_t Tk, int num_threads);

/* decode.c: one decode step of a whole GPT (the layers of cllm/model.py in order), as one call over the kernels
 * above, so that its logits have the bits Model.forward gives the same positions. The weights are pointers into the
 * caller's buffers, with the state dict's shapes; the four matrices of each layer and the tied head (wte) packed as
 * linear_forward_packed wants them. */
typedef struct {
    const float *ln1_w, *ln1_b;             /* (C) (C) */
    const float *attn_wp, *attn_b;          /* packed (3C,C), (3C) */
    const float *attn_proj_wp, *attn_proj_b; /* packed (C,C), (C) */
    const float *ln2_w, *ln2_b;             /* (C) (C) */
    const float *fc_wp, *fc_b;              /* packed (H,C), (H) */
    const float *fc_proj_wp, *fc_proj_b;    /* packed (C,H), (C) */
    float *kcache, *vcache;                 /* this layer's KV cache: (S,NH,hs,Tk), (S,NH,Tk,hs) */
} cllm_gpt_layer;
typedef struct {
    int64_t V, C, H, NH, L, S, Tk, Tctx; /* vocabulary, d_model, MLP width, heads, layers, cache slots and capacity,
                                          * positions (wpe's rows) */
    const float *wte, *wpe, *lnf_w, *lnf_b, *head_wp; /* (V,C) (Tctx,C) (C) (C) packed(V,C) */
    const cllm_gpt_layer *layers;                     /* (L) */
} cllm_gpt;
/* Scratch floats gpt_decode_step needs for M rows on nt threads (hs = C/NH): shared (M,5C+H), per thread
 * (M,2C+2) + 64 + hs. */
#define CLLM_GPT_DECODE_SCRATCH(M, C, H, hs, nt) ((M) * (5 * (C) + (H)) + (nt) * ((M) * (2 * (C) + 2) + 64 + (hs)))
/* ids (M) in [0,V): the next token of the sequence in cache slot slot[m] (distinct, < S), at position pos[m]
 * (< Tk and < Tctx: the tokens cached before it). Stores each layer's k and v there; logits (M,V).
 * scratch: CLLM_GPT_DECODE_SCRATCH(M, C, H, hs, num_threads) floats. */
int cllm_gpt_decode_step(const cllm_gpt *g, const int32_t *ids, const int32_t *slot, const int32_t *pos, int64_t M,
                         float *scratch, float *logits, int num_threads);

/* swiglu.c: the Llama MLP's gate, out = silu(gate)·up with silu(g) = g·σ(g).   gu is (M, 2H): each row the gate
 * projection's H values then the up projection's; out is (M, H). */
int cllm_swiglu_forward(const float *gu, float *out, int64_t M, int64_t H, int num_threads);
/* dgu (M, 2H) = (dout·up·silu'(gate), dout·silu(gate)) (overwritten; not gu).   dout is (M, H). */
int cllm_swiglu_backward(const float *gu, const float *dout, float *dgu, int64_t M, int64_t H, int num_threads);

/* gelu.c: out = x·Φ(x) with GELU's tanh approximation, and the residual add.   x, out are (n). */
int cllm_gelu_forward(const float *x, float *out, int64_t n, int num_threads);
/* dx = dout · gelu'(x) (overwritten; dx may be dout). */
int cllm_gelu_backward(const float *x, const float *dout, float *dx, int64_t n, int num_threads);
/* out = a + b.   (n); out may be a or b. The backward is the identity: the model adds gradients in place. */
int cllm_residual_forward(const float *a, const float *b, float *out, int64_t n, int num_threads);

/* crossentropy.c: fused softmax + cross-entropy.   logits is (N,V), targets (N) int32 in [0,V) or -1 (ignored).
 * losses[n] = logsumexp(logits[n]) - logits[n,target] (0 for ignored rows); with write_grad, logits is overwritten
 * by its gradient (softmax - onehot(target))·scale (0 for ignored rows). */
int cllm_crossentropy_forward_backward(float *logits, const int32_t *targets, float *losses, int64_t N, int64_t V,
                                       float scale, int write_grad, int num_threads);

/* adamw.c: *out = Σ x² over x (n), in double, fixed chunks added up the sphere tree. */
int cllm_sum_squares(const float *x, int64_t n, double *out, int num_threads);
/* One AdamW step over flat buffers p, g, m, v (n), PyTorch's formula with g scaled by grad_scale (clipping):
 *   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  p -= lr·wd·p (decayed segments);  p -= (lr/bc1)·m/(√v/√bc2 + eps)
 * Segment s is [seg_start[s], seg_start[s+1]) (seg_start has nseg+1 entries); decay[s] is 1 if it is decayed, 0 if
 * not, 2 if AdamW leaves it alone (Muon's matrices). */
int cllm_adamw_step(float *p, const float *g, float *m, float *v, int64_t n, const int64_t *seg_start,
                    const uint8_t *decay, int64_t nseg, float lr, float beta1, float beta2, float eps,
                    float weight_decay, float bc1, float bc2, float grad_scale, int num_threads);

#ifdef __cplusplus
}
#endif
#endif
