// Byte-level BPE training (the algorithm and the tie-break rule are in train.hpp).
//
// Data layout of the trainer:
//   words   the symbols of all words in one flat uint32 array (word w at sym[off[w] .. off[w] + len[w])),
//           merged in place, so a word only shrinks; count[w] is its number of occurrences
//   pairs   pair (a, b) <-> dense index p through an open-addressing table; per p its count (int64), its key,
//           the first 8 bytes of its merged token, and the words where it was created, in the order met (a word
//           may appear twice, or no longer hold the pair: the merge visits each word once per step and leaves
//           a word without the pair unchanged)
//   heap    (count, prefix, p) entries, a max-heap by the order of train.hpp; an entry whose count differs from
//           the pair's current count is stale: it is dropped, or pushed back with the current count when that is
//           lower (a pair whose count grows gets a fresh entry after the merge step that grew it)
// Only the initial count of the byte pairs runs on several threads; the merge loop is sequential, so the result
// cannot depend on the thread count.
#include "hash.hpp"
#include "train.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace cllm_bpe {

namespace {

// Compares the byte strings x1+x2 and y1+y2 (unsigned bytes, a proper prefix first): <0, 0, >0.
int compare_concat(std::string_view x1, std::string_view x2, std::string_view y1, std::string_view y2)
{
    for (;;) {
        if (x1.empty()) {
            if (x2.empty()) return (y1.empty() && y2.empty()) ? 0 : -1;
            x1 = x2;
            x2 = {};
            continue;
        }
        if (y1.empty()) {
            if (y2.empty()) return 1;
            y1 = y2;
            y2 = {};
            continue;
        }
        size_t n = std::min(x1.size(), y1.size());
        if (int c = std::memcmp(x1.data(), y1.data(), n)) return c;
        x1.remove_prefix(n);
        y1.remove_prefix(n);
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// WordTable: word bytes -> count, open addressing (linear probing, load <= 1/2), the bytes in one arena.

struct WordTable {
    struct Slot {
        uint64_t hash;
        uint64_t count;  // 0: empty slot
        uint64_t off;    // into arena
        uint64_t len;
    };
    std::vector<Slot> slots;
    std::string arena;
    size_t used = 0;

    WordTable() : slots(1024) {}

    std::string_view word(const Slot &s) const { return std::string_view(arena.data() + s.off, s.len); }

    void grow()
    {
        std::vector<Slot> old(slots.size() * 2);
        old.swap(slots);
        size_t mask = slots.size() - 1;
        for (const Slot &s : old) {
            if (!s.count) continue;
            size_t i = s.hash & mask;
            while (slots[i].count) i = (i + 1) & mask;
            slots[i] = s;
        }
    }

    void add(std::string_view w, uint64_t h, uint64_t count)
    {
        if (!count) return;
        if ((used + 1) * 2 > slots.size()) grow();
        size_t mask = slots.size() - 1;
        size_t i = h & mask;
        while (slots[i].count) {
            Slot &s = slots[i];
            if (s.hash == h && s.len == w.size() && std::memcmp(arena.data() + s.off, w.data(), w.size()) == 0) {
                s.count += count;
                return;
            }
            i = (i + 1) & mask;
        }
        slots[i] = Slot{h, count, arena.size(), w.size()};
        arena.append(w.data(), w.size());
        used++;
    }

    void add_all(const WordTable &other)
    {
        for (const Slot &s : other.slots)
            if (s.count) add(other.word(s), s.hash, s.count);
    }
};

WordCounter::WordCounter() : table_(new WordTable) {}
WordCounter::~WordCounter() = default;
WordCounter::WordCounter(WordCounter &&) noexcept = default;
WordCounter &WordCounter::operator=(WordCounter &&) noexcept = default;

namespace {

void count_document(std::string_view doc, Pattern pattern, std::vector<size_t> &ends, WordTable &table)
{
    ends.clear();
    pretokenize(doc, pattern, ends);
    size_t start = 0;
    for (size_t end : ends) {
        std::string_view piece = doc.substr(start, end - start);
        table.add(piece, hash_bytes(piece), 1);
        start = end;
    }
}

}  // namespace

void WordCounter::add_texts(const std::vector<std::string_view> &docs, Pattern pattern, int num_threads)
{
    if (num_threads < 1) throw std::invalid_argument("add_texts: num_threads must be >= 1");
    int nt = int(std::min<size_t>(size_t(num_threads), std::max<size_t>(docs.size(), 1)));
#ifndef _OPENMP
    nt = 1;
#endif
    if (nt == 1) {
        std::vector<size_t> ends;
        for (std::string_view doc : docs) count_document(doc, pattern, ends, *table_);
    } else {
        std::exception_ptr error;
        auto record = [&error]() {
#ifdef _OPENMP
#pragma omp critical(cllm_bpe_word_counter_error)
#endif
            if (!error) error = std::current_exception();
        };
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
        {
            WordTable local;
            std::vector<size_t> ends;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
            for (long long i = 0; i < (long long)docs.size(); i++) {
                try {
                    count_document(docs[i], pattern, ends, local);
                } catch (...) {  // an exception may not leave an OpenMP region: keep the first, rethrow it after
                    record();
                }
            }
#ifdef _OPENMP
#pragma omp critical(cllm_bpe_word_counter)
#endif
            {
                try {
                    if (!error) table_->add_all(local);  // integer sums: the order of the threads does not matter
                } catch (...) {
                    if (!error) error = std::current_exception();
                }
            }
        }
        if (error) std::rethrow_exception(error);
    }
    num_documents_ += docs.size();
    for (std::string_view doc : docs) total_bytes_ += doc.size();
}

void WordCounter::add_word(std::string_view word, uint64_t count) { table_->add(word, hash_bytes(word), count); }

size_t WordCounter::num_words() const { return table_->used; }
uint64_t WordCounter::num_documents() const { return num_documents_; }
uint64_t WordCounter::total_bytes() const { return total_bytes_; }

std::vector<std::pair<std::string_view, uint64_t>> WordCounter::sorted_words() const
{
    std::vector<std::pair<std::string_view, uint64_t>> out;
    out.reserve(table_->used);
    for (const WordTable::Slot &s : table_->slots)
        if (s.count) out.emplace_back(table_->word(s), s.count);
    std::sort(out.begin(), out.end(), [](const auto &x, const auto &y) { return x.first < y.first; });
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The trainer.

namespace {

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }

// Pair key -> dense pair index. Open addressing, linear probing, load <= 1/2; keys are never removed.
class PairIndex {
  public:
    PairIndex() { rehash(1 << 16); }

    uint32_t find(uint64_t key) const
    {
        for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
            const Slot &s = slots_[i];
            if (s.index == kNone) return kNone;
            if (s.key == key) return s.index;
        }
    }

    // The index of key, inserting it with index `next` if absent (inserted is then true).
    uint32_t find_or_insert(uint64_t key, uint32_t next, bool &inserted)
    {
        if ((used_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
        for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
            Slot &s = slots_[i];
            if (s.index == kNone) {
                s.key = key;
                s.index = next;
                used_++;
                inserted = true;
                return next;
            }
            if (s.key == key) {
                inserted = false;
                return s.index;
            }
        }
    }

  private:
    struct Slot {
        uint64_t key;
        uint32_t index;  // kNone: empty
    };
    std::vector<Slot> slots_;
    size_t mask_ = 0, used_ = 0;
    int shift_ = 0;

    size_t slot_of(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ULL) >> shift_); }

    void rehash(size_t n)
    {
        std::vector<Slot> old(n, Slot{0, kNone});
        old.swap(slots_);
        mask_ = n - 1;
        shift_ = 64;
        for (size_t m = n; m > 1; m >>= 1) shift_--;  // n is a power of two: shift_ = 64 - log2(n)
        for (const Slot &s : old) {
            if (s.index == kNone) continue;
            size_t i = slot_of(s.key);
            while (slots_[i].index != kNone) i = (i + 1) & mask_;
            slots_[i] = s;
        }
    }
};

struct HeapEntry {
    int64_t count;
    uint64_t prefix;  // the first 8 merged bytes, big-endian, zero-padded: most ties end here
    uint32_t pair;
};

// The first 8 bytes of x + y as a big-endian integer (zero-padded): comparing two of these orders the byte strings
// as far as they differ in their first 8 bytes.
uint64_t prefix_of(std::string_view x, std::string_view y)
{
    uint64_t v = 0;
    int k = 0;
    for (size_t i = 0; i < x.size() && k < 8; i++, k++) v = (v << 8) | (unsigned char)x[i];
    for (size_t i = 0; i < y.size() && k < 8; i++, k++) v = (v << 8) | (unsigned char)y[i];
    return k == 8 ? v : v << (8 * (8 - k));  // k >= 1: tokens are never empty
}

class Trainer {
  public:
    Trainer(const std::vector<std::pair<std::string_view, uint64_t>> &words, int num_threads);
    std::vector<Merge> run(size_t num_merges, uint64_t min_frequency, const TrainProgress &progress);

  private:
    // words
    std::vector<uint32_t> sym_;
    std::vector<uint64_t> off_;
    std::vector<uint32_t> len_;
    std::vector<int64_t> wcount_;
    std::vector<uint32_t> wstamp_;  // the last merge step that visited the word
    // pairs
    PairIndex index_;
    std::vector<uint64_t> pkey_;
    std::vector<int64_t> pcount_;
    std::vector<uint64_t> pprefix_;
    std::vector<std::vector<uint32_t>> pwords_;
    std::vector<uint32_t> pstamp_;  // the last merge step that raised the count
    std::vector<uint32_t> raised_;  // pairs whose count rose in this merge step
    // tokens and the queue
    std::vector<std::string> tok_;
    std::vector<HeapEntry> heap_;
    uint32_t step_ = 0;

    // x before y in the heap order (train.hpp): larger count, then smaller merged bytes, then smaller pair.
    bool before(const HeapEntry &x, const HeapEntry &y) const
    {
        if (x.count != y.count) return x.count > y.count;
        if (x.prefix != y.prefix) return x.prefix < y.prefix;
        uint64_t kx = pkey_[x.pair], ky = pkey_[y.pair];
        int c = compare_concat(tok_[kx >> 32], tok_[uint32_t(kx)], tok_[ky >> 32], tok_[uint32_t(ky)]);
        if (c) return c < 0;
        return kx < ky;
    }
    void push(int64_t count, uint32_t pair)
    {
        heap_.push_back(HeapEntry{count, pprefix_[pair], pair});
        std::push_heap(heap_.begin(), heap_.end(), [this](const HeapEntry &x, const HeapEntry &y) { return before(y, x); });
    }
    HeapEntry pop()
    {
        std::pop_heap(heap_.begin(), heap_.end(), [this](const HeapEntry &x, const HeapEntry &y) { return before(y, x); });
        HeapEntry e = heap_.back();
        heap_.pop_back();
        return e;
    }

    uint32_t new_pair(uint64_t key)
    {
        bool inserted;
        uint32_t p = index_.find_or_insert(key, uint32_t(pkey_.size()), inserted);
        if (inserted) {
            pkey_.push_back(key);
            pcount_.push_back(0);
            pprefix_.push_back(prefix_of(tok_[key >> 32], tok_[uint32_t(key)]));
            pwords_.emplace_back();
            pstamp_.push_back(0);
        }
        return p;
    }
    void lower(uint32_t a, uint32_t b, int64_t by) { pcount_[index_.find(pair_key(a, b))] -= by; }
    void raise(uint32_t a, uint32_t b, int64_t by, uint32_t w)
    {
        uint32_t p = new_pair(pair_key(a, b));
        pcount_[p] += by;
        std::vector<uint32_t> &ws = pwords_[p];
        if (ws.empty() || ws.back() != w) ws.push_back(w);
        if (pstamp_[p] != step_) {
            pstamp_[p] = step_;
            raised_.push_back(p);
        }
    }
    void count_pairs(int num_threads);
    bool next_best(uint64_t min_count, uint32_t &best);
    void apply(uint32_t p, uint32_t c);
};

Trainer::Trainer(const std::vector<std::pair<std::string_view, uint64_t>> &words, int num_threads)
{
    tok_.reserve(512);
    for (int b = 0; b < 256; b++) tok_.emplace_back(1, char(b));
    size_t total = 0, n = 0;
    for (const auto &[w, c] : words)
        if (w.size() >= 2 && c) total += w.size(), n++;  // a word of one byte has no pair
    sym_.reserve(total);
    off_.reserve(n);
    len_.reserve(n);
    wcount_.reserve(n);
    for (const auto &[w, c] : words) {
        if (w.size() < 2 || !c) continue;
        if (c > uint64_t(std::numeric_limits<int64_t>::max())) throw std::overflow_error("train: word count overflow");
        if (w.size() > std::numeric_limits<uint32_t>::max()) throw std::length_error("train: word longer than 4 GiB");
        off_.push_back(sym_.size());
        len_.push_back(uint32_t(w.size()));
        wcount_.push_back(int64_t(c));
        for (unsigned char ch : w) sym_.push_back(ch);
    }
    wstamp_.assign(off_.size(), 0);
    count_pairs(num_threads);
}

// The initial pairs are all byte pairs: count them in a dense 256 x 256 table, words split over the threads in
// contiguous ranges, each thread with its own table and word lists, joined in range order (so each list is
// ascending and the same for every thread count).
void Trainer::count_pairs(int num_threads)
{
    const size_t W = off_.size();
    int nt = int(std::max<size_t>(1, std::min<size_t>(size_t(std::max(num_threads, 1)), W / 4096 + 1)));
#ifndef _OPENMP
    nt = 1;
#endif
    std::vector<std::vector<int64_t>> counts(nt);
    std::vector<std::vector<std::vector<uint32_t>>> lists(nt);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (int t = 0; t < nt; t++) {
        std::vector<int64_t> &cnt = counts[t];
        std::vector<std::vector<uint32_t>> &lst = lists[t];
        cnt.assign(65536, 0);
        lst.resize(65536);
        size_t lo = W * size_t(t) / nt, hi = W * size_t(t + 1) / nt;
        for (size_t w = lo; w < hi; w++) {
            const uint32_t *s = &sym_[off_[w]];
            for (uint32_t i = 0; i + 1 < len_[w]; i++) {
                uint32_t k = (s[i] << 8) | s[i + 1];
                cnt[k] += wcount_[w];
                std::vector<uint32_t> &l = lst[k];
                if (l.empty() || l.back() != uint32_t(w)) l.push_back(uint32_t(w));
            }
        }
    }
    for (uint32_t k = 0; k < 65536; k++) {
        int64_t c = 0;
        size_t m = 0;
        for (int t = 0; t < nt; t++) c += counts[t][k], m += lists[t][k].size();
        if (!c) continue;
        uint32_t p = new_pair(pair_key(k >> 8, k & 255));
        pcount_[p] = c;
        std::vector<uint32_t> &ws = pwords_[p];
        ws.reserve(m);
        for (int t = 0; t < nt; t++) {
            ws.insert(ws.end(), lists[t][k].begin(), lists[t][k].end());
            std::vector<uint32_t>().swap(lists[t][k]);
        }
        heap_.push_back(HeapEntry{c, pprefix_[p], p});
    }
    std::make_heap(heap_.begin(), heap_.end(), [this](const HeapEntry &x, const HeapEntry &y) { return before(y, x); });
}

// Pops the best pair whose entry is current; false when none is left or the best count is below min_count.
bool Trainer::next_best(uint64_t min_count, uint32_t &best)
{
    while (!heap_.empty()) {
        HeapEntry e = pop();
        int64_t now = pcount_[e.pair];
        if (now == e.count) {
            if (uint64_t(now) < min_count) return false;
            best = e.pair;
            return true;
        }
        if (now > 0 && now < e.count) push(now, e.pair);  // a larger count has its own, fresher entry
    }
    return false;
}

// Merges pair p into the new symbol c in every word that holds it, updating the neighbouring pairs.
void Trainer::apply(uint32_t p, uint32_t c)
{
    const uint32_t a = uint32_t(pkey_[p] >> 32), b = uint32_t(pkey_[p]);
    std::vector<uint32_t> words;
    words.swap(pwords_[p]);
    raised_.clear();
    for (uint32_t w : words) {
        if (wstamp_[w] == step_) continue;
        wstamp_[w] = step_;
        uint32_t *s = &sym_[off_[w]];
        const uint32_t n = len_[w];
        const int64_t cnt = wcount_[w];
        uint32_t r = 0, out = 0;
        while (r < n) {
            if (r + 1 < n && s[r] == a && s[r + 1] == b) {
                if (out > 0) {  // the symbol before, already rewritten
                    lower(s[out - 1], a, cnt);
                    raise(s[out - 1], c, cnt, w);
                }
                if (r + 2 < n) {
                    lower(b, s[r + 2], cnt);
                    raise(c, s[r + 2], cnt, w);
                }
                pcount_[p] -= cnt;
                s[out++] = c;
                r += 2;
            } else {
                s[out++] = s[r++];
            }
        }
        len_[w] = out;
    }
    pcount_[p] = 0;  // every occurrence was merged (and a, b never meet again: no merge recreates a or b)
    for (uint32_t q : raised_)
        if (pcount_[q] > 0) push(pcount_[q], q);
}

std::vector<Merge> Trainer::run(size_t num_merges, uint64_t min_frequency, const TrainProgress &progress)
{
    std::vector<Merge> merges;
    merges.reserve(std::min<size_t>(num_merges, 1 << 20));
    const uint64_t min_count = std::max<uint64_t>(min_frequency, 1);
    const size_t every = 1000;
    while (merges.size() < num_merges) {
        uint32_t p;
        if (!next_best(min_count, p)) break;
        const uint32_t a = uint32_t(pkey_[p] >> 32), b = uint32_t(pkey_[p]);
        const uint32_t c = uint32_t(tok_.size());
        merges.emplace_back(a, b);
        tok_.push_back(tok_[a] + tok_[b]);
        step_++;
        apply(p, c);
        if (progress && merges.size() % every == 0) progress(merges.size(), num_merges);
    }
    if (progress) progress(merges.size(), num_merges);
    return merges;
}

}  // namespace

std::vector<Merge> train_words(const std::vector<std::pair<std::string_view, uint64_t>> &words, size_t num_merges,
                               uint64_t min_frequency, int num_threads, const TrainProgress &progress)
{
    if (num_threads < 1) throw std::invalid_argument("train: num_threads must be >= 1");
    if (num_merges > size_t(std::numeric_limits<uint32_t>::max()) - 256)
        throw std::invalid_argument("train: num_merges must be < 2**32 - 256");
    if (num_merges == 0) return {};
    Trainer trainer(words, num_threads);
    return trainer.run(num_merges, min_frequency, progress);
}

std::vector<Merge> train(const WordCounter &counter, size_t num_merges, uint64_t min_frequency, int num_threads,
                         const TrainProgress &progress)
{
    return train_words(counter.sorted_words(), num_merges, min_frequency, num_threads, progress);
}

}  // namespace cllm_bpe
