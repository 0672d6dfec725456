"""cllm.Tokenizer (the Python face of the C++ BPE), its tokenizer.json files, token shards and `cllm tokenize`."""

import json
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm import Tokenizer
from cllm.tokenizer.shards import ShardWriter, read_shard
from cllm.tokenizer.stage import is_validation

from conftest import THREAD_COUNTS

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS = sorted(STDLIB.glob("*.py"))[:60]  # real code, a few MB


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, vocab_size=1000)


def test_train_on_paths_and_texts(tok):
    assert tok.vocab_size == 1000 and tok.special_tokens == {"<|endoftext|>": 999}
    assert len(tok.merges) == 1000 - 256 - 1
    texts = [p.read_text(encoding="utf-8", errors="surrogateescape") for p in CORPUS]
    assert Tokenizer.train(texts, vocab_size=1000).merges == tok.merges  # str texts or paths: the same counts
    sample = CORPUS[0].read_bytes()
    assert len(tok.encode_bytes(sample)) < len(sample) / 2  # it compresses real code (~2.2 bytes/token here)


def test_same_merges_for_every_thread_count(tok):
    for nt in THREAD_COUNTS:
        assert Tokenizer.train(CORPUS, vocab_size=1000, num_threads=nt).merges == tok.merges


def test_vocab_size_validation_and_early_stop():
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 256 \+ 1 special tokens = 257 \(got 200\)"):
        Tokenizer.train(["abc"], vocab_size=200)
    with pytest.warns(RuntimeWarning, match="allows only .* merges"):
        small = Tokenizer.train(["aaaa bbbb"] * 3, vocab_size=5000)
    assert small.vocab_size < 5000
    with pytest.raises(TypeError, match="not a single one"):
        Tokenizer.train("just a string", vocab_size=300)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_decode_encode_roundtrip(tok, text):
    assert tok.decode(tok.encode_ordinary(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_bytes_roundtrip(tok, data):
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(), max_size=12))
def test_encode_batch_equals_encode(tok, texts):
    expected = [tok.encode_ordinary(t) for t in texts]
    for nt in (1, 3, 8):
        assert tok.encode_batch(texts, num_threads=nt, allowed_special="all") == [tok.encode(t, "all") for t in texts]
        assert [a.tolist() for a in tok.encode_batch_to_arrays(texts, num_threads=nt)] == expected


def test_encode_batch_lone_surrogate_and_special_text(tok):
    # str is read in place as UTF-8; a lone surrogate has no UTF-8 form and takes the surrogatepass copy
    texts = ["ab\ud800cd", "plain", "x<|endoftext|>y"]
    assert tok.encode_batch(texts, allowed_special="all") == [tok.encode(t, "all") for t in texts]


def test_special_tokens(tok):
    text = "a<|endoftext|>b"
    with pytest.raises(ValueError, match="special token '<|endoftext|>' at offset 1"):
        tok.encode(text)
    ids = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == tok.encode_ordinary("a") + [999] + tok.encode_ordinary("b")
    assert tok.encode(text, allowed_special="all") == ids
    assert 999 not in tok.encode_ordinary(text)  # never produced from ordinary text
    assert tok.decode(ids) == text and tok.token_bytes(999) == b"<|endoftext|>"
    assert tok.encode_batch([text, "x"], allowed_special="all") == [ids, tok.encode("x")]
    with pytest.raises(ValueError, match="unknown tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match=r"token id 1000 is outside \[0, 1000\)"):
        tok.decode([1, 1000])


def test_pathological_input_is_not_quadratic(tok):
    import time

    for data in (b"a" * 1_000_000, b" " * 1_000_000, bytes(range(256)) * 4000):
        start = time.perf_counter()
        ids = tok.encode_to_array(data)
        assert time.perf_counter() - start < 2.0
        assert tok.decode_bytes(ids.tolist()) == data


def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert again.merges == tok.merges and again.special_tokens == tok.special_tokens
    with pytest.raises(ValueError, match="cannot read"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"model": {"type": "WordPiece"}}')
    with pytest.raises(ValueError, match="not a byte-level BPE tokenizer.json"):
        Tokenizer.load(tmp_path / "bad.json")


def test_hf_tokenizers_loads_and_encodes_identically(tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok.to_hf_json(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = [p.read_text(encoding="utf-8") for p in sorted(STDLIB.glob("*.py"))[60:80]]
    texts += ["Hello  world!\n\n\tIt's 2026 — ünïcödé 中文 😀👍🏽", "<|endoftext|>between<|endoftext|>"]
    for text in texts:
        assert hf.encode(text).ids == tok.encode(text, allowed_special="all")
    assert hf.decode(tok.encode(texts[0])) == texts[0]


def test_cl100k_pattern(tmp_path):
    tok = Tokenizer.train(CORPUS[:20], vocab_size=600, pattern="cl100k")
    text = "x = 12345  # It'S fine\r\n"
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json").pattern == "cl100k"
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "t.json"))
    for path in CORPUS[20:30]:
        code = path.read_text(encoding="utf-8") + "\r\n  It'S 中文 ١٢٣٤٥ 😀\n"
        assert hf.encode(code).ids == tok.encode(code)


# --- token shards and `cllm tokenize` --------------------------------------------------------------------

def test_shard_writer_and_reader(tmp_path):
    w = ShardWriter(tmp_path, "train", vocab_size=70_000, shard_tokens=1000)
    w.write(np.arange(2500, dtype=np.uint32))
    paths = w.close()
    assert [p.name for p in paths] == ["train_0000.bin", "train_0001.bin", "train_0002.bin"]
    joined = np.concatenate([read_shard(p) for p in paths])
    np.testing.assert_array_equal(joined, np.arange(2500))
    assert read_shard(paths[0]).dtype == np.uint32
    raw = paths[0].read_bytes()
    (tmp_path / "short.bin").write_bytes(raw[:100])
    with pytest.raises(ValueError, match="says 1000 tokens of 4 bytes but holds 36 bytes"):
        read_shard(tmp_path / "short.bin")
    (tmp_path / "junk.bin").write_bytes(b"x" * 80)
    with pytest.raises(ValueError, match="not a cllm token shard"):
        read_shard(tmp_path / "junk.bin")


def test_cli_tokenize_end_to_end(tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(p) for p in CORPUS[:30]) + "\n")
    out = tmp_path / "tokens"
    cmd = [sys.executable, "-m", "cllm", "tokenize", "--input", str(listing), "--output", str(out),
           "--vocab-size", "700", "--val-fraction", "0.2", "--threads", "2", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"]["documents"] + stats["val"]["documents"] == 30 and stats["val"]["documents"] > 0
    tok = Tokenizer.load(out / "tokenizer.json")
    train = np.concatenate([read_shard(out / name) for name in stats["train"]["shards"]])
    eot = tok.special_tokens["<|endoftext|>"]
    assert train.dtype == np.uint16 and int((train == eot).sum()) == stats["train"]["documents"]
    expected = [d for d in (p.read_bytes() for p in CORPUS[:30]) if not is_validation(d, 0.2)]
    assert tok.decode_bytes(train.tolist()).split(b"<|endoftext|>")[:-1] == expected
    # the split is by content: the same again, whatever the thread count
    out2 = tmp_path / "again"
    cmd2 = cmd[:cmd.index("--output") + 1] + [str(out2)] + cmd[cmd.index("--output") + 2:]
    cmd2[cmd2.index("--threads") + 1] = "1"
    assert subprocess.run(cmd2, capture_output=True, timeout=300).returncode == 0
    assert (out / "train_0000.bin").read_bytes() == (out2 / "train_0000.bin").read_bytes()


@pytest.mark.parametrize("args,message", [
    (["--input", "/nonexistent/dir", "--output", "x"], "does not exist"),
    (["--input", ".", "--output", "x", "--vocab-size", "0"], "expected a positive integer"),
    (["--input", ".", "--output", "x", "--val-fraction", "1.5"], r"expected a number in \[0, 1\)"),
])
def test_cli_tokenize_bad_input(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "cllm", "tokenize", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) >= 1 and __import__("re").search(message, proc.stderr)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_tokenize_signal_leaves_whole_shards(tok, tmp_path, sig, code):
    """SIGINT / SIGTERM while encoding: exit 130 / 143 with one line on stderr; the shards on disk are whole, the
    one being written is discarded, and no stats.json claims a finished run."""
    docs = tmp_path / "docs"
    docs.mkdir()
    text = b"".join(p.read_bytes() for p in CORPUS)
    for i in range(-(-(48 << 20) // len(text))):  # three batches of BATCH_BYTES
        (docs / f"{i:03d}.py").write_bytes(text)
    tok.save(tmp_path / "tokenizer.json")
    out = tmp_path / "tokens"
    cmd = [sys.executable, "-m", "cllm", "tokenize", "--input", str(docs), "--output", str(out), "--tokenizer",
           str(tmp_path / "tokenizer.json"), "--val-fraction", "0", "--shard-tokens", "100000", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "train_0000.bin").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip() == f"cllm tokenize: stopped by {sig.name}"
    shards = sorted(out.glob("train_*.bin"))
    assert shards and all(read_shard(p).size == 100_000 for p in shards)
    assert not list(out.glob(".*.tmp")) and not (out / "stats.json").exists()


def test_cli_tokenize_corrupt_jsonl_is_a_failure(tmp_path, capsys):
    """A bad line in a document shard is corrupt input data: exit code 1, one line naming the file and line."""
    from cllm.cli import main

    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "docs-00000.jsonl").write_text('{"text": "fine"}\n\n{"text": 3}\n', encoding="utf-8")
    assert main(["tokenize", "--input", str(tmp_path / "clean"), "--output", str(tmp_path / "tokens"),
                 "--vocab-size", "300", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cllm tokenize: failed: /")
    assert "docs-00000.jsonl line 3 is not a JSON object with a \"text\" string" in err
