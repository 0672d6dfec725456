// Bindings of the pre-tokenizer (csrc/bpe/pretokenize.hpp).
#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

#include "bpe/pretokenize.hpp"

namespace py = pybind11;

namespace cllm_bpe {

void bind_pretokenize(py::module_ &m)
{
    m.def(
        "pretokenize",
        [](py::bytes data, const std::string &pattern) {
            Pattern p;
            if (!parse_pattern(pattern, p))
                throw py::value_error("pretokenize: pattern must be \"gpt2\" or \"cl100k\" (got \"" + pattern + "\")");
            std::string_view text = data;  // a view of the bytes object, which `data` keeps alive
            std::vector<size_t> ends;
            {
                py::gil_scoped_release release;
                pretokenize(text, p, ends);
            }
            py::list pieces(ends.size());
            size_t start = 0;
            for (size_t i = 0; i < ends.size(); ++i) {
                pieces[i] = py::bytes(text.data() + start, ends[i] - start);
                start = ends[i];
            }
            return pieces;
        },
        py::arg("data"), py::arg("pattern") = "gpt2",
        "Split UTF-8 bytes into pre-tokens as regex.findall does with the GPT-2 (\"gpt2\") or cl100k_base\n"
        "(\"cl100k\") pattern; invalid UTF-8 bytes are code points of their own (as with surrogateescape).\n"
        "The pieces, concatenated, are `data`.");
}

}  // namespace cllm_bpe
