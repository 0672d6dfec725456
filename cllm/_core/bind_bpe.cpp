// Bindings of the BPE trainer and encoder (csrc/bpe/train.hpp, encode.hpp).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace cllm_bpe {
void bind_bpe(py::module_ &m) { (void)m; }
}  // namespace cllm_bpe
