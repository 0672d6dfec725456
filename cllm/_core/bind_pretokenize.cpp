// Bindings of the pre-tokenizer (csrc/bpe/pretokenize.hpp).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace cllm_bpe {
void bind_pretokenize(py::module_ &m) { (void)m; }
}  // namespace cllm_bpe
