// Byte-level BPE training: count the distinct pre-tokens ("words") of a corpus, then learn merges with the
// incremental algorithm of HF tokenizers' BpeTrainer (each distinct word is merged once per merge that touches
// it, pair counts and a pair -> words index are updated in place, and a lazily refreshed max-heap picks the
// next pair), never a full recount per merge.
//
// Token ids: 0..255 are the single bytes; merge i (0-based) creates id 256 + i.
//
// Choice of the next merge (deterministic, documented so that a reference trainer can reproduce it):
//   1. the pair (a, b) with the largest count: the sum over words of (word count) x (number of adjacent
//      positions holding a, b in the word), overlaps included ("aaa" holds a, a twice), as minbpe's get_stats
//      and HF's trainer count;
//   2. among equal counts, the pair whose merged token bytes(a) + bytes(b) is lexicographically smallest
//      (bytes compared as unsigned; a proper prefix sorts first);
//   3. among equal merged bytes (e.g. "ab"+"c" and "a"+"bc"), the smaller (a, b) by id, a first.
// Training stops early, returning fewer merges, when no pair is left or the best count is below min_frequency.
// A merge replaces, in every word, each occurrence of a b from left to right ("aaa" with a+a -> [aa, a]), which
// is also what the encoder does (lowest rank first, leftmost first), so encoding a training word reproduces
// the word's symbols at the end of training.
//
// Determinism: the result depends only on the multiset of (word, count), never on the thread count, on the
// order of the documents or on how add_texts calls were batched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bpe/pretokenize.hpp"

namespace cllm_bpe {

struct WordTable;  // train.cpp: arena-backed hash map word bytes -> count

// Counts the distinct pre-tokens of documents. add_texts may be called repeatedly (streaming batches).
// Not safe for concurrent calls on one object.
class WordCounter {
  public:
    WordCounter();
    ~WordCounter();
    WordCounter(WordCounter &&) noexcept;
    WordCounter &operator=(WordCounter &&) noexcept;

    // Pre-tokenizes each document with `pattern` and counts the pieces; documents are spread over num_threads
    // (>= 1) threads, each with its own table, and the tables are summed into this counter.
    void add_texts(const std::vector<std::string_view> &docs, Pattern pattern, int num_threads);
    // Adds `count` occurrences of one word (already a pre-token). Counts no document or byte.
    void add_word(std::string_view word, uint64_t count);

    size_t num_words() const;        // distinct words
    uint64_t num_documents() const;  // documents seen by add_texts
    uint64_t total_bytes() const;    // bytes of those documents
    // The distinct words and their counts, sorted by bytes. The views point into this counter.
    std::vector<std::pair<std::string_view, uint64_t>> sorted_words() const;

  private:
    std::unique_ptr<WordTable> table_;
    uint64_t num_documents_ = 0;
    uint64_t total_bytes_ = 0;
};

using Merge = std::pair<uint32_t, uint32_t>;  // (left id, right id); merge i makes id 256 + i

// Called from the training thread every so many merges and at the end: (merges done, merges asked for).
using TrainProgress = std::function<void(size_t, size_t)>;

// Learns up to num_merges merges from the words of `counter` (see the rule above). min_frequency: the smallest
// pair count that may still be merged (0 and 1 both mean any pair that occurs). num_threads (>= 1) is used for
// the initial pair count only; the result is the same for every value.
std::vector<Merge> train(const WordCounter &counter, size_t num_merges, uint64_t min_frequency, int num_threads,
                         const TrainProgress &progress = {});

// The same on an explicit word list (words need not be sorted or distinct; equal words are summed).
std::vector<Merge> train_words(const std::vector<std::pair<std::string_view, uint64_t>> &words, size_t num_merges,
                               uint64_t min_frequency, int num_threads, const TrainProgress &progress = {});

}  // namespace cllm_bpe
