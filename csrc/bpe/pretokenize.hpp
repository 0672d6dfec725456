// Pre-tokenizer: splits UTF-8 text into the pieces that BPE merges never cross, with the split semantics of a
// regex pattern, by a hand-written scanner (no regex library) over generated Unicode tables
// (tools/gen_unicode_tables.py, computed with the Python `regex` module, which is also the tests' oracle).
//
// Pattern::GPT2 is GPT-2's encoder.py pattern:
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Pattern::CL100K is tiktoken's cl100k_base pat_str (tiktoken 0.14, tiktoken_ext/openai_public.py):
//     '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
// The result equals regex.findall(pattern, text) (the `regex` module, not `re`), where invalid UTF-8 is decoded
// with errors="surrogateescape" and the pieces are encoded back the same way.
//
// Linear time, no allocation besides `ends` growing, no mutable state: safe to call from many threads at once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace cllm_bpe {

enum class Pattern { GPT2, CL100K };

// "gpt2" -> GPT2, "cl100k" -> CL100K; false (out untouched) for any other name.
bool parse_pattern(const std::string &name, Pattern &out);

// Appends to `ends` the end offset (exclusive, in bytes) of each pre-token of `text`, in order; pre-token i is
// [ends[i-1] (or 0), ends[i]). text is UTF-8; an invalid byte is one code point of its own, in no class
// (so it behaves like a lone surrogate from errors="surrogateescape" does in the regex module).
void pretokenize(std::string_view text, Pattern pattern, std::vector<size_t> &ends);

}  // namespace cllm_bpe
