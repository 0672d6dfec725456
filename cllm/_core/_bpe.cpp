// pybind11 module cllm._core._bpe: the byte-level BPE tokenizer's C++ core (filled by the tokenizer work);
// for now the thread-policy helpers it will use.
#include <pybind11/pybind11.h>

#include "bpe/omp_probe.h"

namespace py = pybind11;

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
}
