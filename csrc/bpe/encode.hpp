// Byte-level BPE encoding with a list of merges (the trainer's output, train.hpp): ids 0..255 are the single
// bytes, merge i = (a, b) makes id 256 + i and has rank i.
//
// Inside one pre-token the encoder repeatedly merges the adjacent pair of lowest rank, the leftmost one among
// equal ranks (tiktoken's byte_pair_encode rule, on id pairs rather than bytes). A short piece is merged in a
// small array (quadratic, but n is small); a long one (a 1 MB run of one character is a single pre-token) in a
// linked list with a min-heap of (rank, position), O(n log n). Short pieces are remembered in a per-thread,
// fixed-size, direct-mapped cache.
//
// An Encoder is immutable after construction and safe to use from many threads at once (its pool of caches is
// guarded by a mutex; each call takes a cache of its own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "bpe/pretokenize.hpp"
#include "bpe/train.hpp"

namespace cllm_bpe {

class PieceCache;  // encode.cpp

class Encoder {
  public:
    static constexpr uint32_t kNoRank = 0xFFFFFFFFu;

    // Throws std::invalid_argument when merge i uses an id >= 256 + i or repeats an earlier pair.
    explicit Encoder(std::vector<Merge> merges);
    ~Encoder();
    Encoder(const Encoder &) = delete;
    Encoder &operator=(const Encoder &) = delete;

    size_t vocab_size() const { return 256 + merges_.size(); }
    const std::vector<Merge> &merges() const { return merges_; }
    // The bytes of token `id` (< vocab_size()).
    std::string_view token_bytes(uint32_t id) const
    {
        return std::string_view(bytes_.data() + bytes_off_[id], bytes_off_[id + 1] - bytes_off_[id]);
    }
    // The rank (merge index) of the pair (a, b), or kNoRank.
    uint32_t rank(uint32_t a, uint32_t b) const;

    // Appends the ids of one piece, without pre-tokenization.
    void encode_piece(std::string_view piece, std::vector<uint32_t> &out) const;
    // Pre-tokenizes text with `pattern` and appends the ids of every piece.
    void encode(std::string_view text, Pattern pattern, std::vector<uint32_t> &out) const;
    // The ids of many documents. Each thread appends the documents it encodes to one buffer of its own instead of
    // growing a vector per document (per-document allocations, regrowth copies and page faults do not scale).
    struct BatchIds {
        std::vector<std::vector<uint32_t>> buffers;  // one per thread
        std::vector<uint32_t> buffer;                // document i: buffers[buffer[i]][begin[i] .. begin[i] + size[i])
        std::vector<size_t> begin, size;
    };
    // encode() of every document, documents spread over num_threads (>= 1) threads (dynamic schedule).
    BatchIds encode_batch(const std::vector<std::string_view> &docs, Pattern pattern, int num_threads) const;
    // What encode_each hands over: document `doc`'s ids are out[at ..], in `out`, the buffer of thread `thread`
    // (0: the calling thread) that encoded it. The callback may consume and clear out, or keep it growing.
    using DocDone = std::function<void(size_t doc, int thread, std::vector<uint32_t> &out, size_t at)>;
    // Called once per thread with its buffer after its last document (if given).
    using ThreadDone = std::function<void(int thread, std::vector<uint32_t> &out)>;
    // encode() of every document on min(num_threads, docs) threads (dynamic schedule), each document handed to
    // done() on its thread as soon as it is encoded. The first exception (of the encoding or of a callback) is
    // rethrown once every thread has stopped; the documents after it may or may not have been encoded.
    void encode_each(const std::vector<std::string_view> &docs, Pattern pattern, int num_threads,
                     const DocDone &done, const ThreadDone &thread_done = nullptr) const;
    // Appends the bytes of the ids; throws std::out_of_range for an id >= vocab_size().
    void decode(const uint32_t *ids, size_t n, std::string &out) const;

  private:
    std::vector<Merge> merges_;
    std::vector<uint32_t> byte_rank_;  // 256 x 256: the ranks of the pairs of two bytes
    struct Slot {
        uint64_t key;   // (a << 32) | b
        uint32_t rank;  // kNoRank: empty
    };
    std::vector<Slot> slots_;  // the other pairs: open addressing, load <= 1/2
    int shift_ = 64;
    std::string bytes_;               // token bytes, one after the other
    std::vector<size_t> bytes_off_;   // token id -> offset into bytes_ (vocab_size() + 1 entries)
    mutable std::mutex pool_mutex_;
    mutable std::vector<std::unique_ptr<PieceCache>> pool_;

    void merge_short(const unsigned char *p, size_t n, std::vector<uint32_t> &out) const;
    void merge_long(const unsigned char *p, size_t n, std::vector<uint32_t> &out) const;
    void encode_with(std::string_view text, Pattern pattern, std::vector<uint32_t> &out, PieceCache &cache,
                     std::vector<size_t> &ends) const;
    std::unique_ptr<PieceCache> acquire_cache() const;
    void release_cache(std::unique_ptr<PieceCache> cache) const;
};

}  // namespace cllm_bpe
