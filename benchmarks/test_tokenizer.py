"""BPE training and encoding against HF tokenizers and tiktoken, on the Python standard library's .py sources
(~31 MB of real code; site-packages excluded; invalid bytes decoded with errors="replace").

Thread counts: conftest.THREADS. Quick mode: the first ~3 MB of the corpus, vocab 8,192 only.

Training: vocab 8,192 and 50,000, each implementation in its own process
(benchmarks/tokenizer_worker.py: clean peak RSS, HF's thread pool sized by RAYON_NUM_THREADS); the rate is corpus
MB/s of training, and bytes/token of the whole corpus under each trained tokenizer goes to extra_info.
Encoding: the vocabulary cllm trained at 8,192, loaded into tiktoken as the same ranks (`tiktoken.Encoding` with
GPT-2's pattern); MB/s of encoding every document, ours with encode_batch against tiktoken's
encode_ordinary_batch with the same thread count (ours alone without tiktoken).
"""

import json
import os
import subprocess
import sys

import pytest

import cllm
from cllm.tokenizer import PATTERNS

from conftest import NOTES, THREADS, quick, settle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tokenizer_worker import stdlib_texts  # noqa: E402

MAX_BYTES, CORPUS = quick(None, 3_000_000), quick("stdlib", "stdlib 3 MB")
TRAIN_CASES = [(vocab, threads, impl) for vocab in quick((8192, 50_000), (8192,)) for threads in THREADS
               for impl in ("hf", "cllm")]


def run_worker(impl, vocab, threads, save=None):
    cmd = [sys.executable, os.path.join(HERE, "tokenizer_worker.py"), "--impl", impl, "--vocab-size", str(vocab),
           "--threads", str(threads)] + (["--save", save] if save else [])
    cmd += ["--max-bytes", str(MAX_BYTES)] if MAX_BYTES else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("vocab,threads,impl", TRAIN_CASES, ids=[f"v{v}-t{t}-{i}" for v, t, i in TRAIN_CASES])
def test_train(benchmark, record_rate, vocab, threads, impl):
    if impl == "hf":
        pytest.importorskip("tokenizers")
    settle()
    r = benchmark.pedantic(run_worker, args=(impl, vocab, threads), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    record_rate("bpe_train", f"{CORPUS} vocab {vocab}", threads, impl, r["mb_per_s"] * 1e6, "B", scale=(1e6, "M"))
    NOTES.append(f"bpe_train vocab {vocab} t{threads} {impl}: {r['seconds']:.2f} s, {r['bytes_per_token']:.4f} "
                 f"bytes/token, peak RSS {r['peak_rss_mb']:.0f} MB")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """(our tokenizer trained at vocab 8,192, the same ranks in tiktoken or None without it, the texts)."""
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    run_worker("cllm", 8192, 2, save=path)
    tok, texts = cllm.Tokenizer.load(path), stdlib_texts(MAX_BYTES)
    try:
        import tiktoken
    except ImportError:
        return tok, None, texts
    ranks = {tok.token_bytes(i): i for i in range(tok.vocab_size - len(tok.special_tokens))}
    tt = tiktoken.Encoding(name="cllm-stdlib-8192", pat_str=PATTERNS["gpt2"], mergeable_ranks=ranks,
                           special_tokens=dict(tok.special_tokens))
    assert tok.encode_batch(texts[:50]) == tt.encode_ordinary_batch(texts[:50])  # the same function
    return tok, tt, texts


ENCODE_CASES = [(threads, impl) for threads in THREADS for impl in ("tiktoken", "cllm")]


@pytest.mark.parametrize("threads,impl", ENCODE_CASES, ids=[f"t{t}-{i}" for t, i in ENCODE_CASES])
def test_encode(benchmark, record, encoders, threads, impl):
    """Lists of ids, as both libraries return them (building 8.6 M Python ints is serial work for both)."""
    tok, tt, texts = encoders
    if impl == "tiktoken" and tt is None:
        pytest.skip("tiktoken is not installed (pip install tiktoken)")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    if impl == "cllm":
        fn = lambda: tok.encode_batch(texts, num_threads=threads)
    elif threads == 1:
        fn = lambda: [tt.encode_ordinary(t) for t in texts]
    else:
        fn = lambda: tt.encode_ordinary_batch(texts, num_threads=threads)
    settle()
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    record("bpe_encode", f"{CORPUS} vocab 8192", threads, impl, n_bytes, "B", scale=(1e6, "M"))


@pytest.mark.parametrize("threads", THREADS)
def test_encode_to_arrays(benchmark, record, encoders, threads):
    """The bulk path (numpy arrays, what `cllm tokenize` uses): how our encoder itself scales with threads."""
    tok, _, texts = encoders
    data = [t.encode("utf-8") for t in texts]
    settle()
    benchmark.pedantic(lambda: tok.encode_batch_to_arrays(data, num_threads=threads), rounds=3, iterations=1,
                       warmup_rounds=1)
    record("bpe_encode_arrays", f"{CORPUS} vocab 8192", threads, "cllm", sum(map(len, data)), "B", scale=(1e6, "M"))
