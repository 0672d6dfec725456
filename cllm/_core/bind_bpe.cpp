// Bindings of the BPE trainer and encoder (csrc/bpe/train.hpp, encode.hpp). The GIL is released around all
// heavy work; texts are read in place (bytes, or the UTF-8 buffer of a str) and kept alive by the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bpe/encode.hpp"
#include "bpe/pretokenize.hpp"
#include "bpe/train.hpp"

namespace py = pybind11;

namespace cllm_bpe {

namespace {

Pattern pattern_arg(const char *where, const std::string &name)
{
    Pattern p;
    if (!parse_pattern(name, p))
        throw py::value_error(std::string(where) + ": pattern must be 'gpt2' or 'cl100k' (got '" + name + "')");
    return p;
}

void check_threads(const char *where, long long num_threads)
{
    if (num_threads < 1)
        throw py::value_error(std::string(where) + ": num_threads must be >= 1 (got " + std::to_string(num_threads) +
                              ")");
}

// A bytes or str object as bytes (a str as its UTF-8 encoding, cached by the str itself).
std::string_view bytes_view(const char *where, const char *arg, const py::handle &obj)
{
    if (PyBytes_Check(obj.ptr())) {
        char *data;
        Py_ssize_t n;
        PyBytes_AsStringAndSize(obj.ptr(), &data, &n);
        return std::string_view(data, size_t(n));
    }
    if (PyUnicode_Check(obj.ptr())) {
        Py_ssize_t n;
        const char *data = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
        if (!data) throw py::error_already_set();  // e.g. a lone surrogate
        return std::string_view(data, size_t(n));
    }
    throw py::type_error(std::string(where) + ": " + arg + " must be bytes or str (got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))) + ")");
}

// Views of every item of a sequence of bytes/str; `keep` holds the items alive.
std::vector<std::string_view> texts_arg(const char *where, const py::handle &texts, std::vector<py::object> &keep)
{
    if (PyBytes_Check(texts.ptr()) || PyUnicode_Check(texts.ptr()))
        throw py::type_error(std::string(where) + ": texts must be a sequence of bytes or str, not a single one");
    py::sequence seq = py::reinterpret_borrow<py::sequence>(texts);
    std::vector<std::string_view> views;
    views.reserve(seq.size());
    keep.reserve(seq.size());
    for (size_t i = 0; i < seq.size(); i++) {
        keep.push_back(seq[i]);
        std::string arg = "texts[" + std::to_string(i) + "]";
        views.push_back(bytes_view(where, arg.c_str(), keep.back()));
    }
    return views;
}

// A vector handed to numpy without a copy (the array owns it through a capsule).
py::array_t<uint32_t> to_array(std::vector<uint32_t> &&ids)
{
    auto *owned = new std::vector<uint32_t>(std::move(ids));
    py::capsule free_it(owned, [](void *p) { delete static_cast<std::vector<uint32_t> *>(p); });
    return py::array_t<uint32_t>({owned->size()}, {sizeof(uint32_t)}, owned->data(), free_it);
}

struct PyWordCounter {
    WordCounter counter;
    Pattern pattern;
    std::string pattern_name;
    std::mutex mutex;  // add_texts and train may run with the GIL released, from several Python threads
};

// The lists of encode_batch_lists. Making a Python list needs the GIL, so only one thread can do it: the calling
// thread makes the lists of the documents it encodes itself and, between them, of those the other threads handed
// over, so that this serial part overlaps the encoding instead of following it.
class DocLists {
  public:
    DocLists(const std::vector<py::object> &ints, size_t n)
        : ints_(ints), lists_(n, nullptr), pending_(n), ready_(new std::atomic<bool>[n]) {
        for (size_t i = 0; i < n; i++) ready_[i].store(false, std::memory_order_relaxed);
    }
    ~DocLists() {  // the lists not returned (an exception): the GIL is held again by then
        for (PyObject *l : lists_) Py_XDECREF(l);
    }
    DocLists(const DocLists &) = delete;
    DocLists &operator=(const DocLists &) = delete;

    // Another thread's document i: its ids are copied out of that thread's buffer (no GIL).
    void hand_over(size_t i, const uint32_t *ids, size_t n) {
        pending_[i].assign(ids, ids + n);
        ready_[i].store(true, std::memory_order_release);
    }
    // The list of document i (GIL held).
    void make(size_t i, const uint32_t *ids, size_t n) {
        PyObject *l = PyList_New(Py_ssize_t(n));
        if (!l) throw py::error_already_set();
        for (size_t j = 0; j < n; j++) PyList_SET_ITEM(l, Py_ssize_t(j), ints_[ids[j]].inc_ref().ptr());
        lists_[i] = l;
    }
    // The lists of the handed-over documents, in order up to the first one not ready yet (GIL held).
    void make_ready() {
        for (; next_ < lists_.size(); next_++) {
            if (lists_[next_]) continue;
            if (!ready_[next_].load(std::memory_order_acquire)) break;
            make(next_, pending_[next_].data(), pending_[next_].size());
            std::vector<uint32_t>().swap(pending_[next_]);
        }
    }
    // Every thread has stopped: the lists left, then all of them as one list (GIL held).
    py::list finish() {
        for (size_t i = next_; i < lists_.size(); i++)
            if (!lists_[i]) make(i, pending_[i].data(), pending_[i].size());
        py::list out(lists_.size());
        for (size_t i = 0; i < lists_.size(); i++) {
            PyList_SET_ITEM(out.ptr(), Py_ssize_t(i), lists_[i]);  // the list takes the reference
            lists_[i] = nullptr;
        }
        return out;
    }

  private:
    const std::vector<py::object> &ints_;  // the Python int of every id
    std::vector<PyObject *> lists_;        // owned references, nullptr: not made yet
    std::vector<std::vector<uint32_t>> pending_;
    std::unique_ptr<std::atomic<bool>[]> ready_;
    size_t next_ = 0;  // the documents before it have their lists
};

struct PyEncoder {
    std::unique_ptr<Encoder> encoder;
    Pattern pattern;
    std::string pattern_name;
    std::vector<py::object> ints;  // the Python int of every id, made once (encode_batch_lists)

    // encode_batch() of a sequence of bytes/str, the GIL released while it runs.
    Encoder::BatchIds encode_texts(const char *where, const py::handle &texts, long long num_threads)
    {
        check_threads(where, num_threads);
        std::vector<py::object> keep;
        std::vector<std::string_view> docs = texts_arg(where, texts, keep);
        py::gil_scoped_release release;
        return encoder->encode_batch(docs, pattern, int(num_threads));
    }
};

std::vector<Merge> merges_arg(const py::handle &merges)
{
    py::sequence seq = py::reinterpret_borrow<py::sequence>(merges);
    std::vector<Merge> out;
    out.reserve(seq.size());
    for (size_t i = 0; i < seq.size(); i++) {
        py::object item = seq[i];
        if (!PySequence_Check(item.ptr()) || PyBytes_Check(item.ptr()) || PyUnicode_Check(item.ptr()))
            throw py::type_error("Encoder: merges[" + std::to_string(i) + "] must be a pair of ints (got " +
                                 std::string(py::str(py::type::of(item).attr("__name__"))) + ")");
        py::sequence pair = py::reinterpret_borrow<py::sequence>(item);
        if (pair.size() != 2)
            throw py::value_error("Encoder: merges[" + std::to_string(i) + "] must be a pair of ints (got " +
                                  std::to_string(pair.size()) + " items)");
        long long ab[2];
        for (int k = 0; k < 2; k++) {
            py::object x = pair[k];
            if (!PyIndex_Check(x.ptr()))
                throw py::type_error("Encoder: merges[" + std::to_string(i) + "][" + std::to_string(k) +
                                     "] must be an int (got " +
                                     std::string(py::str(py::type::of(x).attr("__name__"))) + ")");
            ab[k] = PyNumber_AsSsize_t(x.ptr(), nullptr);  // clamped on overflow, then rejected below
            if (ab[k] == -1 && PyErr_Occurred()) throw py::error_already_set();
        }
        const long long a = ab[0], b = ab[1];
        if (a < 0 || b < 0 || a >= 256 + (long long)i || b >= 256 + (long long)i)
            throw py::value_error("Encoder: merges[" + std::to_string(i) + "] = (" + std::to_string(a) + ", " +
                                  std::to_string(b) + ") uses an id not defined before it (ids must be in [0, " +
                                  std::to_string(256 + i) + "))");
        out.emplace_back(uint32_t(a), uint32_t(b));
    }
    return out;
}

}  // namespace

void bind_bpe(py::module_ &m)
{
    py::class_<PyWordCounter>(m, "WordCounter",
                              "Counts the distinct pre-tokens of documents (streaming: add_texts may be called "
                              "repeatedly). The input of train_bpe.")
        .def(py::init([](const std::string &pattern) {
                 auto c = std::make_unique<PyWordCounter>();
                 c->pattern = pattern_arg("WordCounter", pattern);
                 c->pattern_name = pattern;
                 return c;
             }),
             py::arg("pattern") = "gpt2")
        .def(
            "add_texts",
            [](PyWordCounter &self, const py::handle &texts, long long num_threads) {
                check_threads("WordCounter.add_texts", num_threads);
                std::vector<py::object> keep;
                std::vector<std::string_view> docs = texts_arg("WordCounter.add_texts", texts, keep);
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(self.mutex);
                self.counter.add_texts(docs, self.pattern, int(num_threads));
            },
            py::arg("texts"), py::arg("num_threads") = 1,
            "Pre-tokenizes and counts each text (bytes, or str as UTF-8), over num_threads threads.")
        .def(
            "add_word_counts",
            [](PyWordCounter &self, const py::handle &items) {
                py::sequence seq = py::reinterpret_borrow<py::sequence>(items);
                std::lock_guard<std::mutex> lock(self.mutex);
                for (size_t i = 0; i < seq.size(); i++) {
                    py::tuple t = seq[i].cast<py::tuple>();
                    if (t.size() != 2)
                        throw py::value_error("WordCounter.add_word_counts: items[" + std::to_string(i) +
                                              "] must be (bytes, count)");
                    std::string arg = "items[" + std::to_string(i) + "][0]";
                    std::string_view w = bytes_view("WordCounter.add_word_counts", arg.c_str(), t[0]);
                    long long n = t[1].cast<long long>();
                    if (n < 0)
                        throw py::value_error("WordCounter.add_word_counts: items[" + std::to_string(i) +
                                              "] count must be >= 0 (got " + std::to_string(n) + ")");
                    self.counter.add_word(w, uint64_t(n));
                }
            },
            py::arg("items"), "Adds (word bytes, count) pairs as they are (no pre-tokenization).")
        .def_property_readonly("num_words", [](PyWordCounter &self) { return self.counter.num_words(); })
        .def_property_readonly("num_documents", [](PyWordCounter &self) { return self.counter.num_documents(); })
        .def_property_readonly("total_bytes", [](PyWordCounter &self) { return self.counter.total_bytes(); })
        .def_property_readonly("pattern", [](PyWordCounter &self) { return self.pattern_name; })
        .def(
            "word_counts",
            [](PyWordCounter &self) {
                std::lock_guard<std::mutex> lock(self.mutex);
                auto words = self.counter.sorted_words();
                py::list out(words.size());
                for (size_t i = 0; i < words.size(); i++)
                    out[i] = py::make_tuple(py::bytes(words[i].first.data(), words[i].first.size()), words[i].second);
                return out;
            },
            "[(word bytes, count)] sorted by bytes.");

    m.def(
        "train_bpe",
        [](PyWordCounter &counter, long long num_merges, long long min_frequency, long long num_threads,
           const py::object &progress) {
            if (num_merges < 0)
                throw py::value_error("train_bpe: num_merges must be >= 0 (got " + std::to_string(num_merges) + ")");
            if (min_frequency < 0)
                throw py::value_error("train_bpe: min_frequency must be >= 0 (got " + std::to_string(min_frequency) +
                                      ")");
            check_threads("train_bpe", num_threads);
            TrainProgress report;
            if (!progress.is_none())
                report = [&progress](size_t done, size_t total) {
                    py::gil_scoped_acquire gil;
                    progress(done, total);
                };
            std::vector<Merge> merges;
            {
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(counter.mutex);
                merges = train(counter.counter, size_t(num_merges), uint64_t(min_frequency), int(num_threads), report);
            }
            py::list out(merges.size());
            for (size_t i = 0; i < merges.size(); i++) out[i] = py::make_tuple(merges[i].first, merges[i].second);
            return out;
        },
        py::arg("counter"), py::arg("num_merges"), py::arg("min_frequency") = 2, py::arg("num_threads") = 1,
        py::arg("progress") = py::none(),
        "Learns up to num_merges merges [(left id, right id)] from the counter's words (merge i makes id 256 + i); "
        "fewer when no pair is left or the best count is below min_frequency. progress(done, total), if given, is "
        "called every 1000 merges and at the end. The result is the same for every num_threads.");

    py::class_<PyEncoder>(m, "Encoder", "Byte-level BPE encoder over a list of merges (thread-safe).")
        .def(py::init([](const py::handle &merges, const std::string &pattern) {
                 auto e = std::make_unique<PyEncoder>();
                 e->pattern = pattern_arg("Encoder", pattern);
                 e->pattern_name = pattern;
                 std::vector<Merge> list = merges_arg(merges);
                 py::gil_scoped_release release;
                 e->encoder = std::make_unique<Encoder>(std::move(list));  // std::invalid_argument -> ValueError
                 return e;
             }),
             py::arg("merges"), py::arg("pattern") = "gpt2")
        .def_property_readonly("vocab_size", [](PyEncoder &self) { return self.encoder->vocab_size(); })
        .def_property_readonly("pattern", [](PyEncoder &self) { return self.pattern_name; })
        .def_property_readonly("merges",
                               [](PyEncoder &self) {
                                   const auto &ms = self.encoder->merges();
                                   py::list out(ms.size());
                                   for (size_t i = 0; i < ms.size(); i++)
                                       out[i] = py::make_tuple(ms[i].first, ms[i].second);
                                   return out;
                               })
        .def(
            "encode",
            [](PyEncoder &self, const py::handle &data) {
                std::string_view text = bytes_view("Encoder.encode", "data", data);
                std::vector<uint32_t> ids;
                {
                    py::gil_scoped_release release;
                    ids.reserve(text.size() / 3 + 8);
                    self.encoder->encode(text, self.pattern, ids);
                }
                return to_array(std::move(ids));
            },
            py::arg("data"), "Pre-tokenizes and encodes bytes (or str as UTF-8): a uint32 numpy array.")
        .def(
            "encode_batch",
            [](PyEncoder &self, const py::handle &texts, long long num_threads) {
                Encoder::BatchIds ids = self.encode_texts("Encoder.encode_batch", texts, num_threads);
                std::vector<py::array_t<uint32_t>> bases;
                for (std::vector<uint32_t> &b : ids.buffers) bases.push_back(to_array(std::move(b)));
                py::list out(ids.size.size());
                for (size_t i = 0; i < ids.size.size(); i++) {
                    const py::array_t<uint32_t> &base = bases[ids.buffer[i]];
                    out[i] = py::array_t<uint32_t>({ids.size[i]}, {sizeof(uint32_t)}, base.data() + ids.begin[i], base);
                }
                return out;
            },
            py::arg("texts"), py::arg("num_threads") = 1,
            "encode() of each text, texts spread over num_threads threads: a list of uint32 numpy arrays (views into "
            "one buffer per thread, which each keeps alive).")
        .def(
            "encode_batch_lists",
            [](PyEncoder &self, const py::handle &texts, long long num_threads) {
                const char *where = "Encoder.encode_batch_lists";
                check_threads(where, num_threads);
                std::vector<py::object> keep;
                std::vector<std::string_view> docs = texts_arg(where, texts, keep);
                if (self.ints.empty()) {  // filled once, whole: a call running in another thread may read it
                    std::vector<py::object> ints;
                    for (size_t id = 0; id < self.encoder->vocab_size(); id++) ints.push_back(py::int_(id));
                    if (self.ints.empty()) self.ints = std::move(ints);  // making ints can run other threads
                }
                DocLists lists(self.ints, docs.size());
                {
                    py::gil_scoped_release release;
                    self.encoder->encode_each(
                        docs, self.pattern, int(num_threads),
                        [&lists](size_t i, int thread, std::vector<uint32_t> &out, size_t at) {
                            if (thread == 0) {
                                py::gil_scoped_acquire gil;
                                lists.make(i, out.data() + at, out.size() - at);
                                lists.make_ready();
                            } else {
                                lists.hand_over(i, out.data() + at, out.size() - at);
                            }
                            out.clear();
                        });
                }
                return lists.finish();
            },
            py::arg("texts"), py::arg("num_threads") = 1,
            "encode() of each text, texts spread over num_threads threads: a list of lists of ints.")
        .def(
            "encode_piece",
            [](PyEncoder &self, const py::handle &piece) {
                std::string_view p = bytes_view("Encoder.encode_piece", "piece", piece);
                std::vector<uint32_t> ids;
                {
                    py::gil_scoped_release release;
                    self.encoder->encode_piece(p, ids);
                }
                return to_array(std::move(ids));
            },
            py::arg("piece"), "Encodes one piece as it is (no pre-tokenization): a uint32 numpy array.")
        .def(
            "token_bytes",
            [](PyEncoder &self, long long id) {
                if (id < 0 || size_t(id) >= self.encoder->vocab_size())
                    throw py::index_error("Encoder.token_bytes: id " + std::to_string(id) + " is not in [0, " +
                                          std::to_string(self.encoder->vocab_size()) + ")");
                std::string_view b = self.encoder->token_bytes(uint32_t(id));
                return py::bytes(b.data(), b.size());
            },
            py::arg("id"))
        .def(
            "decode_bytes",
            [](PyEncoder &self, const py::array_t<long long, py::array::c_style | py::array::forcecast> &ids) {
                std::vector<uint32_t> v(size_t(ids.size()));
                const long long *p = ids.data();
                const size_t V = self.encoder->vocab_size();
                for (size_t i = 0; i < v.size(); i++) {
                    if (p[i] < 0 || size_t(p[i]) >= V)
                        throw py::index_error("Encoder.decode_bytes: ids[" + std::to_string(i) + "] = " +
                                              std::to_string(p[i]) + " is not in [0, " + std::to_string(V) + ")");
                    v[i] = uint32_t(p[i]);
                }
                std::string out;
                {
                    py::gil_scoped_release release;
                    self.encoder->decode(v.data(), v.size(), out);
                }
                return py::bytes(out);
            },
            py::arg("ids"), "The bytes of the ids, concatenated.");
}

}  // namespace cllm_bpe
