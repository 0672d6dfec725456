// Byte-level BPE encoding (the rule and the algorithms are described in encode.hpp).
#include "encode.hpp"
#include "hash.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace cllm_bpe {

namespace {

constexpr size_t kShortPiece = 64;  // pieces up to this many bytes are merged in arrays, longer ones in a heap

}  // namespace

// A direct-mapped cache piece -> ids for pieces of 2..kMaxKey bytes that encode to at most kMaxIds ids.
// One 64-byte slot per hash bucket; a newer piece evicts the older one.
class PieceCache {
  public:
    static constexpr size_t kMaxKey = 22, kMaxIds = 8, kLogSlots = 15;

    PieceCache() : slots_(size_t(1) << kLogSlots) {}

    // Appends the cached ids of piece and returns true, or returns false.
    bool get(const unsigned char *p, size_t n, uint64_t h, std::vector<uint32_t> &out) const
    {
        const Slot &s = slots_[h & (slots_.size() - 1)];
        if (s.hash != h || s.klen != n || std::memcmp(s.key, p, n) != 0) return false;
        out.insert(out.end(), s.ids, s.ids + s.nids);
        return true;
    }
    void put(const unsigned char *p, size_t n, uint64_t h, const uint32_t *ids, size_t nids)
    {
        if (nids > kMaxIds) return;
        Slot &s = slots_[h & (slots_.size() - 1)];
        s.hash = h;
        s.klen = uint8_t(n);
        s.nids = uint8_t(nids);
        std::memcpy(s.key, p, n);
        std::memcpy(s.ids, ids, nids * sizeof(uint32_t));
    }

  private:
    struct Slot {
        uint64_t hash = 0;
        uint8_t klen = 0;  // 0: empty (no cached piece is shorter than 2 bytes)
        uint8_t nids = 0;
        unsigned char key[kMaxKey] = {};
        uint32_t ids[kMaxIds] = {};
    };
    static_assert(sizeof(Slot) == 64, "one cache line per slot");
    std::vector<Slot> slots_;
};

Encoder::Encoder(std::vector<Merge> merges) : merges_(std::move(merges)), byte_rank_(65536, kNoRank)
{
    const size_t m = merges_.size();
    if (m > size_t(kNoRank) - 256) throw std::invalid_argument("Encoder: too many merges");
    size_t cap = 16;
    while (cap < 2 * m + 2) cap *= 2;
    slots_.assign(cap, Slot{0, kNoRank});
    shift_ = 64;
    for (size_t c = cap; c > 1; c >>= 1) shift_--;
    bytes_off_.reserve(256 + m + 1);
    for (int b = 0; b < 256; b++) {
        bytes_off_.push_back(bytes_.size());
        bytes_.push_back(char(b));
    }
    for (size_t i = 0; i < m; i++) {
        const auto [a, b] = merges_[i];
        if (a >= 256 + i || b >= 256 + i)
            throw std::invalid_argument("Encoder: merges[" + std::to_string(i) + "] = (" + std::to_string(a) + ", " +
                                        std::to_string(b) + ") uses an id not defined before it (ids must be < " +
                                        std::to_string(256 + i) + ")");
        uint32_t prev;
        if ((a | b) < 256) {
            prev = byte_rank_[(a << 8) | b];
            if (prev == kNoRank) byte_rank_[(a << 8) | b] = uint32_t(i);
        } else {
            const uint64_t key = (uint64_t(a) << 32) | b;
            size_t j = size_t((key * 0x9E3779B97F4A7C15ULL) >> shift_);
            while (slots_[j].rank != kNoRank && slots_[j].key != key) j = (j + 1) & (cap - 1);
            prev = slots_[j].rank;
            if (prev == kNoRank) slots_[j] = Slot{key, uint32_t(i)};
        }
        if (prev != kNoRank)
            throw std::invalid_argument("Encoder: merges[" + std::to_string(i) + "] = (" + std::to_string(a) + ", " +
                                        std::to_string(b) + ") repeats merges[" + std::to_string(prev) + "]");
        bytes_off_.push_back(bytes_.size());
        std::string_view x = token_bytes(a), y = token_bytes(b);  // views into bytes_ before it grows
        std::string joined;
        joined.reserve(x.size() + y.size());
        joined.append(x).append(y);
        bytes_.append(joined);
    }
    bytes_off_.push_back(bytes_.size());
}

Encoder::~Encoder() = default;

uint32_t Encoder::rank(uint32_t a, uint32_t b) const
{
    if ((a | b) < 256) return byte_rank_[(a << 8) | b];
    const uint64_t key = (uint64_t(a) << 32) | b;
    const size_t mask = slots_.size() - 1;
    for (size_t j = size_t((key * 0x9E3779B97F4A7C15ULL) >> shift_);; j = (j + 1) & mask) {
        const Slot &s = slots_[j];
        if (s.key == key && s.rank != kNoRank) return s.rank;
        if (s.rank == kNoRank) return kNoRank;
    }
}

// Short pieces: the symbols and the ranks of their adjacent pairs in two arrays; each step finds the lowest
// rank (leftmost on ties), merges, and fixes the two ranks beside it.
void Encoder::merge_short(const unsigned char *p, size_t n, std::vector<uint32_t> &out) const
{
    uint32_t ids[kShortPiece], rk[kShortPiece];
    size_t m = n;
    for (size_t i = 0; i < m; i++) ids[i] = p[i];
    for (size_t i = 0; i + 1 < m; i++) rk[i] = byte_rank_[(ids[i] << 8) | ids[i + 1]];
    while (m > 1) {
        uint32_t best = kNoRank;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rk[i] < best) best = rk[i], at = i;
        if (best == kNoRank) break;
        ids[at] = 256 + best;
        std::memmove(ids + at + 1, ids + at + 2, (m - at - 2) * sizeof(uint32_t));
        std::memmove(rk + at, rk + at + 1, (m - at - 2) * sizeof(uint32_t));
        m--;
        if (at + 1 < m) rk[at] = rank(ids[at], ids[at + 1]);
        if (at > 0) rk[at - 1] = rank(ids[at - 1], ids[at]);
    }
    out.insert(out.end(), ids, ids + m);
}

// Long pieces: a doubly linked list of symbols (each named by the position of its first byte) and a min-heap of
// (rank << 32 | position). An entry is current when the symbol at its position is alive and still forms the
// pair of that rank with its successor; positions only grow to the right, so the order of equal ranks stays
// left to right.
void Encoder::merge_long(const unsigned char *p, size_t n, std::vector<uint32_t> &out) const
{
    if (n >= size_t(0xFFFFFFFFu)) throw std::length_error("encode: a pre-token longer than 4 GiB");
    constexpr uint32_t kDead = 0xFFFFFFFFu;
    const uint32_t N = uint32_t(n);
    std::vector<uint32_t> id(p, p + n), next(n), prev(n);
    for (uint32_t i = 0; i < N; i++) next[i] = i + 1, prev[i] = i - 1;  // prev[0] wraps to kDead
    std::vector<uint64_t> heap;
    heap.reserve(n);
    for (uint32_t i = 0; i + 1 < N; i++) {
        uint32_t r = byte_rank_[(id[i] << 8) | id[i + 1]];
        if (r != kNoRank) heap.push_back((uint64_t(r) << 32) | i);
    }
    auto later = std::greater<uint64_t>();
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const uint64_t e = heap.back();
        heap.pop_back();
        const uint32_t r = uint32_t(e >> 32), i = uint32_t(e);
        if (id[i] == kDead) continue;
        const uint32_t j = next[i];
        if (j >= N || rank(id[i], id[j]) != r) continue;
        id[i] = 256 + r;
        id[j] = kDead;
        const uint32_t k = next[j];
        next[i] = k;
        if (k < N) {
            prev[k] = i;
            uint32_t r2 = rank(id[i], id[k]);
            if (r2 != kNoRank) {
                heap.push_back((uint64_t(r2) << 32) | i);
                std::push_heap(heap.begin(), heap.end(), later);
            }
        }
        if (prev[i] != kDead) {
            uint32_t q = prev[i], r2 = rank(id[q], id[i]);
            if (r2 != kNoRank) {
                heap.push_back((uint64_t(r2) << 32) | q);
                std::push_heap(heap.begin(), heap.end(), later);
            }
        }
    }
    for (uint32_t i = 0; i < N; i = next[i]) out.push_back(id[i]);
}

void Encoder::encode_piece(std::string_view piece, std::vector<uint32_t> &out) const
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(piece.data());
    const size_t n = piece.size();
    if (n == 0) return;
    if (n == 1)
        out.push_back(p[0]);
    else if (n <= kShortPiece)
        merge_short(p, n, out);
    else
        merge_long(p, n, out);
}

void Encoder::encode_with(std::string_view text, Pattern pattern, std::vector<uint32_t> &out, PieceCache &cache,
                          std::vector<size_t> &ends) const
{
    ends.clear();
    pretokenize(text, pattern, ends);
    const unsigned char *base = reinterpret_cast<const unsigned char *>(text.data());
    size_t start = 0;
    for (size_t end : ends) {
        const unsigned char *p = base + start;
        const size_t n = end - start;
        start = end;
        if (n == 1) {
            out.push_back(p[0]);
        } else if (n <= PieceCache::kMaxKey) {
            const uint64_t h = hash_bytes(std::string_view(reinterpret_cast<const char *>(p), n));
            if (cache.get(p, n, h, out)) continue;
            const size_t at = out.size();
            merge_short(p, n, out);
            cache.put(p, n, h, out.data() + at, out.size() - at);
        } else {
            encode_piece(std::string_view(reinterpret_cast<const char *>(p), n), out);
        }
    }
}

std::unique_ptr<PieceCache> Encoder::acquire_cache() const
{
    {
        std::lock_guard<std::mutex> lock(pool_mutex_);
        if (!pool_.empty()) {
            std::unique_ptr<PieceCache> c = std::move(pool_.back());
            pool_.pop_back();
            return c;
        }
    }
    return std::unique_ptr<PieceCache>(new PieceCache);
}

void Encoder::release_cache(std::unique_ptr<PieceCache> cache) const
{
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (pool_.size() < 64) pool_.push_back(std::move(cache));
}

void Encoder::encode(std::string_view text, Pattern pattern, std::vector<uint32_t> &out) const
{
    std::unique_ptr<PieceCache> cache = acquire_cache();
    std::vector<size_t> ends;
    ends.reserve(text.size() / 4 + 16);
    encode_with(text, pattern, out, *cache, ends);
    release_cache(std::move(cache));
}

void Encoder::encode_each(const std::vector<std::string_view> &docs, Pattern pattern, int num_threads,
                          const DocDone &done, const ThreadDone &thread_done) const
{
    if (num_threads < 1) throw std::invalid_argument("encode_batch: num_threads must be >= 1");
    int nt = int(std::min<size_t>(size_t(num_threads), std::max<size_t>(docs.size(), 1)));
#ifndef _OPENMP
    nt = 1;
#endif
    size_t total_bytes = 0;
    for (std::string_view d : docs) total_bytes += d.size();
    std::exception_ptr error;
    std::atomic<bool> failed(false);  // once set, the threads skip the documents left
    auto record = [&error, &failed]() {
#ifdef _OPENMP
#pragma omp critical(cllm_bpe_encode_error)
#endif
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
    };
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        std::vector<uint32_t> out;  // the thread's own: vectors side by side would share cache lines
        std::unique_ptr<PieceCache> cache;
        std::vector<size_t> ends;
        try {
            out.reserve(total_bytes / (3 * size_t(nt)) + 1024);  // about 3.6 bytes a token: rarely regrown
            cache = acquire_cache();
        } catch (...) {
            record();
        }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (long long i = 0; i < (long long)docs.size(); i++) {
            if (!cache || failed.load(std::memory_order_relaxed)) continue;
            try {
                const size_t at = out.size();
                encode_with(docs[size_t(i)], pattern, out, *cache, ends);
                done(size_t(i), t, out, at);
            } catch (...) {  // an exception may not leave an OpenMP region: keep the first, rethrow it after
                record();
            }
        }
        if (cache) release_cache(std::move(cache));
        if (thread_done) {
            try {
                thread_done(t, out);
            } catch (...) {
                record();
            }
        }
    }
    if (error) std::rethrow_exception(error);
}

Encoder::BatchIds Encoder::encode_batch(const std::vector<std::string_view> &docs, Pattern pattern,
                                        int num_threads) const
{
    BatchIds ids;
    ids.buffers.resize(size_t(std::max(num_threads, 1)));
    ids.buffer.resize(docs.size());
    ids.begin.resize(docs.size());
    ids.size.resize(docs.size());
    encode_each(
        docs, pattern, num_threads,
        [&ids](size_t i, int t, std::vector<uint32_t> &out, size_t at) {
            ids.buffer[i] = uint32_t(t), ids.begin[i] = at, ids.size[i] = out.size() - at;
        },
        [&ids](int t, std::vector<uint32_t> &out) { ids.buffers[size_t(t)] = std::move(out); });
    return ids;
}

void Encoder::decode(const uint32_t *ids, size_t n, std::string &out) const
{
    const size_t V = vocab_size();
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= V)
            throw std::out_of_range("decode: ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                    " is not a token id (vocab_size " + std::to_string(V) + ")");
        total += bytes_off_[ids[i] + 1] - bytes_off_[ids[i]];
    }
    out.reserve(out.size() + total);
    for (size_t i = 0; i < n; i++) out.append(token_bytes(ids[i]));
}

}  // namespace cllm_bpe
