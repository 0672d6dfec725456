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

/* ---- linear layers (matmul.c) ---- */
/* y = x · wᵀ + b.   x is (M,K), w is (N,K) (PyTorch nn.Linear layout), b is (N) or NULL, y is (M,N). */
int cllm_linear_forward(const float *x, const float *w, const float *b, float *y,
                        int64_t M, int64_t K, int64_t N, int num_threads);

/* Backward of linear_forward.   dy is (M,N), x is (M,K), w is (N,K).
 *   dx (M,K) = dy · w           (overwritten; NULL to skip)
 *   dw (N,K) = dyᵀ · x          (overwritten, or added to when accumulate; NULL to skip)
 *   db (N)   = Σ_m dy[m,:]      (overwritten, or added to when accumulate; NULL to skip)
 * The sums over M are cut into fixed row chunks (a function of M, N, K only) reduced up the sphere tree. */
int cllm_linear_backward(const float *dy, const float *x, const float *w, float *dx, float *dw, float *db,
                         int64_t M, int64_t K, int64_t N, int accumulate, int num_threads);

#ifdef __cplusplus
}
#endif
#endif
