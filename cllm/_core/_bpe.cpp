// pybind11 module cllm._core._bpe: the byte-level BPE tokenizer's C++ core (csrc/bpe/), bound by the
// bind_*.cpp files beside this one, and the thread-policy helpers.
#include <pybind11/pybind11.h>

#include "bpe/omp_probe.h"

namespace py = pybind11;

namespace cllm_bpe {
void bind_pretokenize(py::module_ &m);  // bind_pretokenize.cpp
void bind_bpe(py::module_ &m);          // bind_bpe.cpp
}  // namespace cllm_bpe

PYBIND11_MODULE(_bpe, m)
{
    m.doc() = "cllm's C++ BPE core (OpenMP, GIL released around parallel work)";
    m.def("openmp_enabled", &cllm_bpe::openmp_enabled, "True if this module was built with OpenMP.");
    m.def(
        "threads_used",
        [](int num_threads) {
            py::gil_scoped_release release;
            return cllm_bpe::threads_used(num_threads);
        },
        py::arg("num_threads"), "Threads an OpenMP region given num_threads actually ran with.");
    cllm_bpe::bind_pretokenize(m);
    cllm_bpe::bind_bpe(m);
}
