# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Raw bindings to the C kernels in csrc/: no validation here (cllm.kernels does it), the GIL released around
every kernel, num_threads passed through to OpenMP per call."""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint8_t


cdef inline int _check(int err, str name) except -1:
    if err == CLLM_ENOMEM:
        raise MemoryError(f"{name}: could not allocate scratch memory")
    return 0


PANEL = CLLM_PANEL  # output columns per panel of linear_forward_packed's weights


def build_info():
    return {
        "openmp": bool(cllm_openmp_enabled()),
        "openmp_version": cllm_openmp_version(),
        "openmp_max_threads": cllm_max_threads(),
        "compiler": cllm_compiler().decode(),
        "native": bool(cllm_native_build()),
        "isa_compiled": cllm_compiled_isas().decode().split(","),
        "isa_supported": cllm_cpu_isas().decode().split(","),
    }


def isa():
    return cllm_isa().decode()


def set_isa(str name):
    if cllm_set_isa(name.encode()) != 0:
        raise ValueError(f"isa must be 'auto' or one of {cllm_cpu_isas().decode()!r} (got {name!r})")


def tree_reduce(float[:, ::1] partials, float[::1] out, bint accumulate, int num_threads):
    with nogil:
        cllm_tree_reduce(&partials[0, 0], partials.shape[0], partials.shape[1], &out[0], accumulate, num_threads)


def linear_forward(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b, const float[:, ::1] residual,
                   float[:, ::1] y, float[:, ::1] gelu_y, int num_threads):
    cdef const float *bp = &b[0] if b is not None else NULL
    cdef const float *rp = &residual[0, 0] if residual is not None else NULL
    cdef float *gp = &gelu_y[0, 0] if gelu_y is not None else NULL
    cdef int err
    with nogil:
        err = cllm_linear_forward(&x[0, 0], &w[0, 0], bp, rp, &y[0, 0], gp, x.shape[0], x.shape[1], w.shape[0],
                                  num_threads)
    _check(err, "linear_forward")


def linear_backward(const float[:, ::1] dy, const float[:, ::1] x, const float[:, ::1] w, const float[:, ::1] gelu_x,
                    float[:, ::1] dx, float[:, ::1] dw, float[::1] db, bint accumulate, int num_threads):
    cdef const float *gp = &gelu_x[0, 0] if gelu_x is not None else NULL
    cdef float *dxp = &dx[0, 0] if dx is not None else NULL
    cdef float *dwp = &dw[0, 0] if dw is not None else NULL
    cdef float *dbp = &db[0] if db is not None else NULL
    cdef int err
    with nogil:
        err = cllm_linear_backward(&dy[0, 0], &x[0, 0], &w[0, 0], gp, dxp, dwp, dbp,
                                   x.shape[0], x.shape[1], w.shape[0], accumulate, num_threads)
    _check(err, "linear_backward")


def linear_forward_packed(const float[:, ::1] x, const float[:, :, ::1] wp, const float[::1] b, float[:, ::1] y,
                          int num_threads):
    cdef const float *bp = &b[0] if b is not None else NULL
    with nogil:
        cllm_linear_forward_packed(&x[0, 0], &wp[0, 0, 0], bp, &y[0, 0], x.shape[0], x.shape[1], y.shape[1],
                                   num_threads)


# The model's layers. Arrays arrive checked (cllm.kernels): C-contiguous, right dtype and shapes, non-empty.

def embedding_forward(const int32_t[:, ::1] idx, const float[:, ::1] wte, const float[:, ::1] wpe,
                      float[:, :, ::1] out, int num_threads):
    cdef const float *pp = &wpe[0, 0] if wpe is not None else NULL
    cdef int err
    with nogil:
        err = cllm_embedding_forward(&idx[0, 0], &wte[0, 0], pp, &out[0, 0, 0], idx.shape[0], idx.shape[1],
                                     wte.shape[1], num_threads)
    _check(err, "embedding_forward")


def embedding_backward(const float[:, :, ::1] dout, const int32_t[:, ::1] idx, float[:, ::1] dwte,
                       float[:, ::1] dwpe, int num_threads):
    cdef float *pp = &dwpe[0, 0] if dwpe is not None else NULL
    cdef int err
    with nogil:
        err = cllm_embedding_backward(&dout[0, 0, 0], &idx[0, 0], &dwte[0, 0], pp, idx.shape[0],
                                      idx.shape[1], dwte.shape[1], num_threads)
    _check(err, "embedding_backward")


def layernorm_forward(const float[:, ::1] x, const float[::1] w, const float[::1] b, float[:, ::1] out,
                      float[::1] mean, float[::1] rstd, int num_threads):
    cdef int err
    with nogil:
        err = cllm_layernorm_forward(&x[0, 0], &w[0], &b[0], &out[0, 0], &mean[0], &rstd[0], x.shape[0], x.shape[1],
                                     num_threads)
    _check(err, "layernorm_forward")


def layernorm_backward(const float[:, ::1] dout, const float[:, ::1] x, const float[::1] w,
                       const float[::1] mean, const float[::1] rstd, float[:, ::1] dx, float[::1] dw,
                       float[::1] db, int num_threads):
    cdef int err
    with nogil:
        err = cllm_layernorm_backward(&dout[0, 0], &x[0, 0], &w[0], &mean[0], &rstd[0], &dx[0, 0], &dw[0], &db[0],
                                      x.shape[0], x.shape[1], num_threads)
    _check(err, "layernorm_backward")


def rmsnorm_forward(const float[:, ::1] x, const float[::1] w, float[:, ::1] out, float[::1] rstd, float eps,
                    int num_threads):
    cdef int err
    with nogil:
        err = cllm_rmsnorm_forward(&x[0, 0], &w[0], &out[0, 0], &rstd[0], x.shape[0], x.shape[1], eps, num_threads)
    _check(err, "rmsnorm_forward")


def rmsnorm_backward(const float[:, ::1] dout, const float[:, ::1] x, const float[::1] w, const float[::1] rstd,
                     float[:, ::1] dx, float[::1] dw, int num_threads):
    cdef int err
    with nogil:
        err = cllm_rmsnorm_backward(&dout[0, 0], &x[0, 0], &w[0], &rstd[0], &dx[0, 0], &dw[0], x.shape[0],
                                    x.shape[1], num_threads)
    _check(err, "rmsnorm_backward")


def rope(const float[:, :, ::1] x, float[:, :, ::1] out, const int32_t[::1] pos, const float[:, ::1] cos_t,
         const float[:, ::1] sin_t, bint inverse, int num_threads):
    cdef int err
    with nogil:
        err = cllm_rope(&x[0, 0, 0], &out[0, 0, 0], &pos[0], &cos_t[0, 0], &sin_t[0, 0], x.shape[0], x.shape[1],
                        x.shape[2], inverse, num_threads)
    _check(err, "rope")


def qk_rotary_forward(const float[:, ::1] inp, float[:, ::1] out, const float[::1] q_norm, const float[::1] k_norm,
                      float[:, ::1] rstd, const int32_t[::1] pos, const float[:, ::1] cos_t, const float[:, ::1] sin_t,
                      int64_t n_heads, float eps, int num_threads):
    cdef const float *qp = &q_norm[0] if q_norm is not None else NULL
    cdef const float *kp = &k_norm[0] if k_norm is not None else NULL
    cdef float *rp = &rstd[0, 0] if rstd is not None else NULL
    cdef int err
    with nogil:
        err = cllm_qk_rotary_forward(&inp[0, 0], &out[0, 0], qp, kp, rp, &pos[0], &cos_t[0, 0], &sin_t[0, 0],
                                     inp.shape[0], n_heads, 2 * cos_t.shape[1], eps, num_threads)
    _check(err, "qk_rotary_forward")


def qk_rotary_backward(float[:, ::1] dqkv, const float[:, ::1] inp, const float[::1] q_norm,
                       const float[::1] k_norm, const float[:, ::1] rstd, const int32_t[::1] pos,
                       const float[:, ::1] cos_t, const float[:, ::1] sin_t, float[::1] dq_norm, float[::1] dk_norm,
                       int64_t n_heads, int num_threads):
    cdef const float *qp = &q_norm[0] if q_norm is not None else NULL
    cdef const float *kp = &k_norm[0] if k_norm is not None else NULL
    cdef const float *rp = &rstd[0, 0] if rstd is not None else NULL
    cdef float *dqp = &dq_norm[0] if dq_norm is not None else NULL
    cdef float *dkp = &dk_norm[0] if dk_norm is not None else NULL
    cdef int err
    with nogil:
        err = cllm_qk_rotary_backward(&dqkv[0, 0], &inp[0, 0], qp, kp, rp, &pos[0], &cos_t[0, 0], &sin_t[0, 0], dqp,
                                      dkp, inp.shape[0], n_heads, 2 * cos_t.shape[1], num_threads)
    _check(err, "qk_rotary_backward")


def attention_forward(const float[:, :, ::1] qkv, float[:, :, ::1] out, float[:, :, ::1] lse, int num_threads):
    cdef int err
    with nogil:
        err = cllm_attention_forward(&qkv[0, 0, 0], &out[0, 0, 0], &lse[0, 0, 0], qkv.shape[0], qkv.shape[1],
                                     out.shape[2], lse.shape[1], num_threads)
    _check(err, "attention_forward")


def attention_backward(const float[:, :, ::1] dout, const float[:, :, ::1] qkv, const float[:, :, ::1] out,
                       const float[:, :, ::1] lse, float[:, :, ::1] dqkv, int num_threads):
    cdef int err
    with nogil:
        err = cllm_attention_backward(&dout[0, 0, 0], &qkv[0, 0, 0], &out[0, 0, 0], &lse[0, 0, 0], &dqkv[0, 0, 0],
                                      qkv.shape[0], qkv.shape[1], out.shape[2], lse.shape[1], num_threads)
    _check(err, "attention_backward")


def attention_decode(const float[:, ::1] qkv, float[:, :, :, ::1] kcache, float[:, :, :, ::1] vcache,
                     float[:, ::1] out, const int32_t[::1] slot, const int32_t[::1] pos, int num_threads):
    cdef int err
    with nogil:
        err = cllm_attention_decode(&qkv[0, 0], &kcache[0, 0, 0, 0], &vcache[0, 0, 0, 0], &out[0, 0], &slot[0],
                                    &pos[0], qkv.shape[0], out.shape[1], kcache.shape[1], kcache.shape[3],
                                    num_threads)
    _check(err, "attention_decode")


def attention_cache_store(const float[:, ::1] qkv, float[:, :, :, ::1] kcache, float[:, :, :, ::1] vcache,
                          int64_t slot, int num_threads):
    with nogil:
        cllm_attention_cache_store(&qkv[0, 0], &kcache[0, 0, 0, 0], &vcache[0, 0, 0, 0], slot, qkv.shape[0],
                                   qkv.shape[1] // 3, kcache.shape[1], kcache.shape[3], num_threads)


cdef const float *_data(a) except NULL:
    """The first float of a C-contiguous float32 array (which the caller keeps alive)."""
    cdef const float[::1] flat = a.reshape(-1)
    return &flat[0]


cdef float *_data_w(a) except NULL:
    cdef float[::1] flat = a.reshape(-1)
    return &flat[0]


cdef class GptDecodeStep:
    """A whole GPT's decode step (csrc/kernels/decode.c) over arrays checked by cllm.kernels.GptDecodeStep, which also
    keeps them alive: this object holds only their addresses, and int32 buffers for a step's ids, slots and
    positions."""
    cdef cllm_gpt g
    cdef cllm_gpt_layer *layers
    cdef int32_t *rows  # ids, slots, positions: 3 × max_rows
    cdef int64_t max_rows
    cdef float[::1] scratch
    cdef float[:, ::1] logits

    def __cinit__(self, dict sizes, dict weights, list layers, int64_t max_rows, float[:, ::1] logits):
        self.layers = <cllm_gpt_layer *> PyMem_Malloc(len(layers) * sizeof(cllm_gpt_layer))
        self.rows = <int32_t *> PyMem_Malloc(3 * max_rows * sizeof(int32_t))
        if self.layers == NULL or self.rows == NULL:
            raise MemoryError("GptDecodeStep: could not allocate its tables")
        self.max_rows, self.logits = max_rows, logits
        for i, w in enumerate(layers):  # a table of cllm.kernels.decode.DECODE_LAYER's fields
            self.layers[i] = cllm_gpt_layer(
                ln1_w=_data(w["ln1"][0]), ln1_b=_data(w["ln1"][1]),
                attn_wp=_data(w["attn"].packed), attn_b=_data(w["attn"].bias),
                attn_proj_wp=_data(w["attn_proj"].packed), attn_proj_b=_data(w["attn_proj"].bias),
                ln2_w=_data(w["ln2"][0]), ln2_b=_data(w["ln2"][1]),
                fc_wp=_data(w["fc"].packed), fc_b=_data(w["fc"].bias),
                fc_proj_wp=_data(w["fc_proj"].packed), fc_proj_b=_data(w["fc_proj"].bias),
                kcache=_data_w(w["cache"][0]), vcache=_data_w(w["cache"][1]))
        self.g = cllm_gpt(V=sizes["V"], C=sizes["C"], H=sizes["H"], NH=sizes["NH"], L=len(layers), S=sizes["S"],
                          Tk=sizes["Tk"], Tctx=sizes["Tctx"], wte=_data(weights["wte"]), wpe=_data(weights["wpe"]),
                          lnf_w=_data(weights["ln_f"][0]), lnf_b=_data(weights["ln_f"][1]),
                          head_wp=_data(weights["head"]), layers=self.layers)

    def __dealloc__(self):
        PyMem_Free(self.layers)
        PyMem_Free(self.rows)

    def set_scratch(self, float[::1] scratch):
        self.scratch = scratch

    def step(self, list ids, list slot, list pos, int num_threads):
        """ids, slot, pos: lists of M <= max_rows ints, checked; the logits go to rows 0 .. M-1 of ``logits``."""
        cdef int64_t m, M = len(ids), R = self.max_rows
        cdef int err
        for m in range(M):
            self.rows[m], self.rows[R + m], self.rows[2 * R + m] = ids[m], slot[m], pos[m]
        with nogil:
            err = cllm_gpt_decode_step(&self.g, self.rows, self.rows + R, self.rows + 2 * R, M, &self.scratch[0],
                                       &self.logits[0, 0], num_threads)
        _check(err, "gpt_decode_step")


def swiglu_forward(const float[:, ::1] gu, float[:, ::1] out, int num_threads):
    cdef int err
    with nogil:
        err = cllm_swiglu_forward(&gu[0, 0], &out[0, 0], out.shape[0], out.shape[1], num_threads)
    _check(err, "swiglu_forward")


def swiglu_backward(const float[:, ::1] gu, const float[:, ::1] dout, float[:, ::1] dgu, int num_threads):
    cdef int err
    with nogil:
        err = cllm_swiglu_backward(&gu[0, 0], &dout[0, 0], &dgu[0, 0], dout.shape[0], dout.shape[1], num_threads)
    _check(err, "swiglu_backward")


def gelu_forward(const float[::1] x, float[::1] out, int num_threads):
    with nogil:
        cllm_gelu_forward(&x[0], &out[0], x.shape[0], num_threads)


def gelu_backward(const float[::1] x, const float[::1] dout, float[::1] dx, int num_threads):
    with nogil:
        cllm_gelu_backward(&x[0], &dout[0], &dx[0], x.shape[0], num_threads)


def residual_forward(const float[::1] a, const float[::1] b, float[::1] out, int num_threads):
    with nogil:
        cllm_residual_forward(&a[0], &b[0], &out[0], a.shape[0], num_threads)


def crossentropy_forward_backward(float[:, ::1] logits, const int32_t[::1] targets, float[::1] losses, float scale,
                                  bint write_grad, int num_threads):
    cdef int err
    with nogil:
        err = cllm_crossentropy_forward_backward(&logits[0, 0], &targets[0], &losses[0], logits.shape[0],
                                                 logits.shape[1], scale, write_grad, num_threads)
    _check(err, "crossentropy_forward_backward")


def sum_squares(const float[::1] x, int num_threads):
    cdef double out = 0.0
    cdef int err
    with nogil:
        err = cllm_sum_squares(&x[0], x.shape[0], &out, num_threads)
    _check(err, "sum_squares")
    return out


def adamw_step(float[::1] p, const float[::1] g, float[::1] m, float[::1] v, const int64_t[::1] seg_start,
               const uint8_t[::1] decay, float lr, float beta1, float beta2, float eps, float weight_decay,
               float bc1, float bc2, float grad_scale, int num_threads):
    with nogil:
        cllm_adamw_step(&p[0], &g[0], &m[0], &v[0], p.shape[0], &seg_start[0], &decay[0], decay.shape[0], lr, beta1,
                        beta2, eps, weight_decay, bc1, bc2, grad_scale, num_threads)
