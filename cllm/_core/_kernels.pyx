# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Raw bindings to the C kernels in csrc/: no validation here (cllm.kernels does it), the GIL released around
every kernel, num_threads passed through to OpenMP per call."""

from libc.stdint cimport int64_t


cdef extern from "cllm.h" nogil:
    int CLLM_ENOMEM
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
    int cllm_linear_forward(const float *x, const float *w, const float *b, float *y,
                            int64_t M, int64_t K, int64_t N, int num_threads)
    int cllm_linear_backward(const float *dy, const float *x, const float *w, float *dx, float *dw, float *db,
                             int64_t M, int64_t K, int64_t N, int accumulate, int num_threads)


cdef inline int _check(int err, str name) except -1:
    if err == CLLM_ENOMEM:
        raise MemoryError(f"{name}: could not allocate scratch memory")
    return 0


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


def linear_forward(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b, float[:, ::1] y,
                   int num_threads):
    cdef const float *bp = &b[0] if b is not None else NULL
    cdef int err
    with nogil:
        err = cllm_linear_forward(&x[0, 0], &w[0, 0], bp, &y[0, 0], x.shape[0], x.shape[1], w.shape[0], num_threads)
    _check(err, "linear_forward")


def linear_backward(const float[:, ::1] dy, const float[:, ::1] x, const float[:, ::1] w,
                    float[:, ::1] dx, float[:, ::1] dw, float[::1] db, bint accumulate, int num_threads):
    cdef float *dxp = &dx[0, 0] if dx is not None else NULL
    cdef float *dwp = &dw[0, 0] if dw is not None else NULL
    cdef float *dbp = &db[0] if db is not None else NULL
    cdef int err
    with nogil:
        err = cllm_linear_backward(&dy[0, 0], &x[0, 0], &w[0, 0], dxp, dwp, dbp,
                                   x.shape[0], x.shape[1], w.shape[0], accumulate, num_threads)
    _check(err, "linear_backward")
