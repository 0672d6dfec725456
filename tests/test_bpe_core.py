"""The BPE trainer and encoder of cllm._core._bpe (csrc/bpe/train.cpp, encode.cpp) against pure-Python references.

- ref_train: minbpe's steps on word counts (count every adjacent pair, take the best by the documented rule,
  merge left to right, repeat), with the tie-break of train.hpp: larger count, then smaller merged bytes,
  then smaller (left id, right id).
- ref_encode_piece: tiktoken's byte_pair_encode on id pairs (merge the lowest rank, leftmost on ties).
- oracle_pieces: the GPT-2 pattern by the `regex` module (bytes read with surrogateescape), so that these tests
  rely on the pre-tokenizer only through its own oracle.
"""

import gc
import random
import sysconfig
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm._core import _bpe

THREAD_COUNTS = (1, 2, 3, 4, 8)
GPT2 = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ENGLISH = b"""The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away, and then
the fox comes back: there is nothing the dog can do about it. Isn't it? They'll see. We've 3 dogs and 12 foxes,
1234 hens, 5678 eggs.   Spaces    everywhere\tand\ttabs\n\n\nand newlines.\r\n"""
CODE = b"""def encode(self, text):
    ids = []
    for piece in self.split(text):
        if piece in self.cache:
            ids.extend(self.cache[piece])
        else:
            ids.extend(self.bpe(piece))
    return ids
"""
UNICODE = "Grüße aus Köln! Ελληνικά κείμενα. 日本語のテキスト、そして中文文本。 ünïcödé ëvërÿwhërë €€€ 😀😀😀".encode()


# ------------------------------------------------------------------------------------------------------------------
# references


def oracle_pieces(data: bytes) -> list:
    text = data.decode("utf-8", "surrogateescape")
    return [p.encode("utf-8", "surrogateescape") for p in GPT2.findall(text)]


def merge_ids(ids, pair, new):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def ref_train(word_counts, num_merges, min_frequency=2):
    words = [list(w) for w, _ in word_counts]
    counts = [c for _, c in word_counts]
    tok = [bytes([b]) for b in range(256)]
    merges = []
    while len(merges) < num_merges:
        stats = Counter()
        for w, c in zip(words, counts):
            for pair in zip(w, w[1:]):
                stats[pair] += c
        if not stats:
            break
        best = min(stats, key=lambda p: (-stats[p], tok[p[0]] + tok[p[1]], p))
        if stats[best] < max(min_frequency, 1):
            break
        new = 256 + len(merges)
        merges.append(best)
        tok.append(tok[best[0]] + tok[best[1]])
        words = [merge_ids(w, best, new) for w in words]
    return merges


def ranks_of(merges):
    return {tuple(pair): r for r, pair in enumerate(merges)}


def ref_encode_piece(piece: bytes, ranks) -> list:
    ids = list(piece)
    while len(ids) >= 2:
        best = None
        for i in range(len(ids) - 1):
            r = ranks.get((ids[i], ids[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        r, i = best
        ids[i : i + 2] = [256 + r]
    return ids


def ref_encode(data: bytes, ranks) -> list:
    return [t for piece in oracle_pieces(data) for t in ref_encode_piece(piece, ranks)]


def vocab_bytes(merges):
    tok = [bytes([b]) for b in range(256)]
    for a, b in merges:
        tok.append(tok[a] + tok[b])
    return tok


def decode(ids, tok):
    return b"".join(tok[i] for i in ids)


def counter_of(texts, num_threads=1):
    c = _bpe.WordCounter("gpt2")
    c.add_texts(texts, num_threads)
    return c


def stdlib_sample(max_bytes, seed=0):
    files = sorted(p for p in STDLIB.glob("*.py"))
    random.Random(seed).shuffle(files)
    out, total = [], 0
    for f in files:
        data = f.read_bytes()
        out.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return out


@pytest.fixture(scope="module")
def corpus():
    """About 1 MB of standard-library sources, one document per file."""
    return stdlib_sample(1 << 20)


@pytest.fixture(scope="module")
def trained(corpus):
    merges = _bpe.train_bpe(counter_of(corpus, 2), 3000, min_frequency=2, num_threads=2)
    return merges, _bpe.Encoder(merges)


# ------------------------------------------------------------------------------------------------------------------
# word counting


def test_word_counts_match_oracle():
    texts = [ENGLISH, CODE, UNICODE, b"\xff\xfe invalid \x80 bytes \xc3"]
    c = counter_of(texts)
    want = Counter(p for t in texts for p in oracle_pieces(t))
    assert c.word_counts() == sorted(want.items())
    assert c.num_words == len(want)
    assert c.num_documents == len(texts)
    assert c.total_bytes == sum(map(len, texts))


@pytest.mark.parametrize("num_threads", THREAD_COUNTS)
def test_word_counts_same_for_threads_and_batches(corpus, num_threads):
    whole = counter_of(corpus, 1).word_counts()
    c = _bpe.WordCounter()
    for i in range(0, len(corpus), 5):  # streaming batches
        c.add_texts(corpus[i : i + 5], num_threads)
    assert c.word_counts() == whole
    assert c.num_documents == len(corpus)
    assert c.total_bytes == sum(map(len, corpus))


def test_word_counter_accepts_str_and_word_counts():
    c = _bpe.WordCounter()
    c.add_texts(["héllo wörld", b" w\xc3\xb6rld"], 1)
    c.add_word_counts([(b"xyz", 5), ("héllo", 2)])
    assert dict(c.word_counts()) == {"héllo".encode(): 3, " wörld".encode(): 2, b"xyz": 5}


# ------------------------------------------------------------------------------------------------------------------
# training against the reference


@pytest.mark.parametrize("texts", [[ENGLISH], [CODE], [UNICODE], [ENGLISH, CODE, UNICODE],
                                   [b"a" * 50 + b" " + b"ab" * 40 + b" aaaa aaa aa a abab ba"]])
@pytest.mark.parametrize("min_frequency", [0, 2])
def test_train_matches_reference(texts, min_frequency):
    c = counter_of(texts)
    got = _bpe.train_bpe(c, 150, min_frequency=min_frequency)
    want = ref_train(c.word_counts(), 150, min_frequency)
    assert [tuple(m) for m in got] == want


words_strategy = st.lists(
    st.tuples(st.binary(min_size=1, max_size=12).map(lambda b: bytes(x % 5 + 97 for x in b)) | st.binary(max_size=8),
              st.integers(1, 6)),
    min_size=1, max_size=30)


@SETTINGS
@given(words=words_strategy, num_merges=st.integers(0, 40), min_frequency=st.integers(0, 4))
def test_train_matches_reference_hypothesis(words, num_merges, min_frequency):
    c = _bpe.WordCounter()
    c.add_word_counts(words)
    got = _bpe.train_bpe(c, num_merges, min_frequency=min_frequency)
    assert [tuple(m) for m in got] == ref_train(c.word_counts(), num_merges, min_frequency)


@SETTINGS
@given(text=st.text(alphabet="ab cd'é€\n\t1", max_size=200))
def test_train_from_text_matches_reference_hypothesis(text):
    c = counter_of([text.encode()])
    got = _bpe.train_bpe(c, 30, min_frequency=1)
    assert [tuple(m) for m in got] == ref_train(c.word_counts(), 30, 1)


def test_train_same_for_threads_and_runs(corpus):
    c = counter_of(corpus, 2)
    want = _bpe.train_bpe(c, 2000, min_frequency=2, num_threads=1)
    assert len(want) == 2000
    for t in THREAD_COUNTS:
        assert _bpe.train_bpe(c, 2000, min_frequency=2, num_threads=t) == want
    assert _bpe.train_bpe(counter_of(corpus, 3), 2000, 2, 3) == want  # counted again, other thread count


def test_train_tie_break_by_merged_bytes():
    c = _bpe.WordCounter()
    c.add_word_counts([(b"zy", 3), (b"ba", 3), (b"ca", 3)])
    assert _bpe.train_bpe(c, 10, min_frequency=1) == [(98, 97), (99, 97), (122, 121)]
    # after a+b -> 256, (256, z) = "abz" and (b, a) = "ba" both count 3: the bytes decide, not the ids
    c = _bpe.WordCounter()
    c.add_word_counts([(b"ab", 10), (b"abz", 3), (b"ba", 3)])
    assert _bpe.train_bpe(c, 10, min_frequency=1) == [(97, 98), (256, 122), (98, 97)]


def test_min_frequency_and_zero_merges():
    c = counter_of([ENGLISH])
    assert _bpe.train_bpe(c, 0) == []
    merges = _bpe.train_bpe(c, 10_000, min_frequency=3)
    assert 0 < len(merges) < 10_000  # stopped early
    assert [tuple(m) for m in merges] == ref_train(c.word_counts(), 10_000, 3)
    # every merge had a count >= 3, and the next best pair has less
    allm = _bpe.train_bpe(c, 10_000, min_frequency=1)
    assert allm[: len(merges)] == merges and len(allm) > len(merges)
    assert len(_bpe.train_bpe(_bpe.WordCounter(), 100)) == 0  # no words, no pairs


def test_train_progress():
    calls = []
    merges = _bpe.train_bpe(counter_of(stdlib_sample(200_000)), 2500, progress=lambda d, t: calls.append((d, t)))
    assert calls[:2] == [(1000, 2500), (2000, 2500)] and calls[-1] == (len(merges), 2500)


def test_training_words_encode_to_their_final_symbols():
    c = counter_of([ENGLISH, CODE])
    words = c.word_counts()
    merges = _bpe.train_bpe(c, 60, min_frequency=1)
    enc = _bpe.Encoder(merges)
    ranks = ranks_of(merges)
    for w, _ in words:
        # the trainer's rewriting of w, applied merge by merge, equals the encoder's result
        ids = list(w)
        for i, m in enumerate(merges):
            ids = merge_ids(ids, tuple(m), 256 + i)
        assert enc.encode_piece(w).tolist() == ids == ref_encode_piece(w, ranks)


def test_bad_arguments():
    c = counter_of([ENGLISH])
    with pytest.raises(ValueError, match="pattern"):
        _bpe.WordCounter("gpt3")
    with pytest.raises(ValueError, match="num_merges"):
        _bpe.train_bpe(c, -1)
    with pytest.raises(ValueError, match="num_threads"):
        _bpe.train_bpe(c, 10, num_threads=0)
    with pytest.raises(ValueError, match="min_frequency"):
        _bpe.train_bpe(c, 10, min_frequency=-1)
    with pytest.raises(ValueError, match="num_threads"):
        c.add_texts([b"x"], 0)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        c.add_texts([b"x", 3], 1)
    with pytest.raises(ValueError, match=r"merges\[1\]"):
        _bpe.Encoder([(97, 98), (97, 257)])
    with pytest.raises(ValueError, match=r"merges\[0\]"):
        _bpe.Encoder([(-1, 98)])
    with pytest.raises(ValueError, match=r"merges\[1\].*repeats"):
        _bpe.Encoder([(97, 98), (97, 98)])
    with pytest.raises(ValueError, match="pattern"):
        _bpe.Encoder([], pattern="nope")
    enc = _bpe.Encoder([(97, 98)])
    with pytest.raises(ValueError, match="num_threads"):
        enc.encode_batch([b"ab"], 0)
    with pytest.raises(IndexError):
        enc.decode_bytes([257])
    with pytest.raises(TypeError):
        enc.encode(12)


# ------------------------------------------------------------------------------------------------------------------
# encoding against the reference


def test_encoder_basics(trained):
    merges, enc = trained
    assert enc.vocab_size == 256 + len(merges)
    assert enc.merges == merges
    tok = vocab_bytes(merges)
    assert all(enc.token_bytes(i) == tok[i] for i in range(0, enc.vocab_size, 7))
    ids = enc.encode(CODE)
    assert ids.dtype == np.uint32 and ids.ndim == 1
    assert enc.decode_bytes(ids) == decode(ids.tolist(), tok) == CODE
    assert len(ids) < len(CODE) / 2  # the merges do compress
    assert enc.encode(b"").tolist() == [] and enc.encode_piece(b"").tolist() == []
    assert enc.encode("déf x").tolist() == enc.encode("déf x".encode()).tolist()


texts = st.text(max_size=300) | st.binary(max_size=300) | st.text(alphabet=" \t\nabcdefg(){}=._:'é\u00a0", max_size=300)


@SETTINGS
@given(data=texts)
def test_encode_matches_reference(trained, data):
    merges, enc = trained
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    got = enc.encode(data).tolist()
    assert got == ref_encode(data, ranks_of(merges))
    assert decode(got, vocab_bytes(merges)) == data


@SETTINGS
@given(piece=st.binary(min_size=0, max_size=400) | st.binary(min_size=60, max_size=400).map(
    lambda b: bytes(b" ef_s"[x % 5] for x in b)))
def test_encode_piece_matches_reference(trained, piece):
    # pieces longer than 64 bytes take the heap path, shorter ones the array path
    merges, enc = trained
    got = enc.encode_piece(piece).tolist()
    assert got == ref_encode_piece(piece, ranks_of(merges))
    assert enc.decode_bytes(got) == piece


def test_encode_long_runs_match_reference():
    text = b" ".join(b"a" * n for n in range(1, 80)) + b" " + b"  " * 40 + b"ab" * 100
    merges = _bpe.train_bpe(counter_of([text]), 200, min_frequency=1)
    enc, ranks = _bpe.Encoder(merges), ranks_of(merges)
    for piece in [b"a" * 1000, b"a" * 257, b" " * 999, b"ab" * 300 + b"a", b" aaaa" * 50]:
        assert enc.encode_piece(piece).tolist() == ref_encode_piece(piece, ranks)


@pytest.mark.parametrize("num_threads", THREAD_COUNTS)
def test_encode_batch_equals_encode(trained, corpus, num_threads):
    _, enc = trained
    docs = corpus[:30] + [b"", b"x", UNICODE, b"\xff\x00\xc3(" * 10]
    want = [enc.encode(d).tolist() for d in docs]
    got = enc.encode_batch(docs, num_threads)
    assert len(got) == len(docs)
    assert [g.tolist() for g in got] == want


@pytest.mark.parametrize("num_threads", THREAD_COUNTS)
def test_encode_batch_lists_equals_encode(trained, corpus, num_threads):
    # the calling thread makes the lists, its own documents' and those the other threads hand over, in any order
    _, enc = trained
    docs = corpus[:30] + [b"", b"x", UNICODE, b"\xff\x00\xc3(" * 10] + [b"a b"] * 50
    want = [enc.encode(d).tolist() for d in docs]
    assert enc.encode_batch_lists(docs, num_threads) == want
    assert enc.encode_batch_lists([], num_threads) == []


def test_encode_batch_lists_from_concurrent_python_threads(trained, corpus):
    # each call's calling thread takes the GIL back between its documents while other Python threads hold it
    from concurrent.futures import ThreadPoolExecutor

    _, enc = trained
    docs = corpus[:40]
    want = [enc.encode(d).tolist() for d in docs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda nt: enc.encode_batch_lists(docs, nt), [1, 2, 3, 4, 8, 2, 3, 4]))
    assert all(r == want for r in results)


def test_encode_batch_arrays_outlive_the_batch(trained, corpus):
    # the arrays are views into one buffer per thread: each must keep its buffer alive on its own
    _, enc = trained
    docs = corpus[:40]
    want = enc.encode(docs[7]).tolist()
    kept = enc.encode_batch(docs, 3)[7]
    gc.collect()
    enc.encode_batch(docs, 3)  # would reuse the buffer's memory, were it freed
    assert kept.dtype == np.uint32 and kept.tolist() == want


def test_encode_concurrent_python_threads(trained, corpus):
    from concurrent.futures import ThreadPoolExecutor

    _, enc = trained
    docs = corpus[:16]
    want = [enc.encode(d).tolist() for d in docs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda d: enc.encode(d).tolist(), docs))
    assert got == want


@pytest.mark.parametrize("name,data", [
    ("one character", b"a" * (1 << 20)),
    ("spaces", b" " * (1 << 20)),
    ("random bytes", bytes(random.Random(0).getrandbits(8) for _ in range(1 << 20))),
])
def test_pathological_inputs_are_fast(name, data):
    text = b" ".join(b"a" * n for n in range(1, 300)) + b" " * 300 + b"x" + b"  " * 300
    merges = _bpe.train_bpe(counter_of([text, CODE, ENGLISH]), 500, min_frequency=1)
    enc = _bpe.Encoder(merges)
    t = time.perf_counter()
    ids = enc.encode(data)
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, f"{name}: {elapsed:.2f} s"
    assert enc.decode_bytes(ids) == data
    t = time.perf_counter()
    ids2 = enc.encode_piece(data)
    assert time.perf_counter() - t < 2.0
    assert enc.decode_bytes(ids2) == data


# ------------------------------------------------------------------------------------------------------------------
# cross-check with HF tokenizers


def test_token_count_close_to_hf():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    docs = stdlib_sample(600_000, seed=1)
    train_docs, held_out = docs[:-3], b"".join(docs[-3:])
    vocab_size = 2000
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([d.decode("utf-8", "replace") for d in train_docs], trainer)
    assert hf.get_vocab_size() == vocab_size

    merges = _bpe.train_bpe(counter_of(train_docs, 2), vocab_size - 256, min_frequency=2, num_threads=2)
    assert len(merges) == vocab_size - 256
    enc = _bpe.Encoder(merges)
    text = held_out.decode("utf-8", "replace")
    ours = len(enc.encode(text))
    theirs = len(hf.encode(text).ids)
    assert abs(ours - theirs) / theirs < 0.03, (ours, theirs)
