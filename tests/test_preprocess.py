"""cllm preprocess: cleaning, decoding, filters, dedup, determinism across worker counts, WARC and collect inputs,
the chain collect -> preprocess -> tokenize, interruption and bad input."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cllm.cli import main
from cllm.corpus.collect import collect
from cllm.corpus.crawl.fetch import Fetched
from cllm.corpus.preprocess.filters import Thresholds, quality_issue
from cllm.corpus.preprocess.minhash import LSHIndex, signature
from cllm.corpus.preprocess.stage import preprocess
from cllm.corpus.textclean import decode, normalize
from cllm.tokenizer.stage import iter_documents
from cllm.corpus.crawl.warc import WarcWriter

from crawl_site import FRENCH
from html_corpus import WORDS, corpus, page


def cli(args) -> int:
    """The exit code of ``cllm ARGS`` (argparse's usage errors exit with SystemExit(2) from parse_args)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code


def prose(seed, n_words=400):
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + ".\n"


def code_file(seed):
    rng = random.Random(seed)
    body = "".join(f"    v{i} = x * {rng.randrange(100)} + {rng.choice(WORDS[20:])}_{i}(y)\n" for i in range(30))
    return f"def f{seed}(x, y):\n{body}    return x\n"


def write_warc(folder, pages):
    """A crawl-like folder: one WARC file of (url, content type, body bytes) responses."""
    folder.mkdir(parents=True, exist_ok=True)
    w = WarcWriter(folder, 0, "test")
    for url, ctype, body in pages:
        w.write_page(Fetched(url, 200, "OK", headers=[("Content-Type", ctype)], body=body), {"depth": 0})
    w.close()
    return folder


def read_docs(folder):
    return [json.loads(line) for f in sorted(Path(folder).glob("docs-*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines()]


def test_normalize():
    assert normalize("e\u0301t\u00e9\r\nline  \t\rnext\x85\u2028x\x07\x1b[0m\ufeff\n\n\n") == "\u00e9t\u00e9\nline\nnext\n\nx[0m"
    assert normalize("\tkeep\ttabs\n\n\n  indented\n\n") == "\tkeep\ttabs\n\n\n  indented"


def test_decode_order():
    assert decode("\ufeffhello".encode("utf-16")).encoding.startswith("utf-16")  # BOM first
    french = FRENCH
    assert decode(french.encode("utf-8"), "iso-8859-1") == french  # a weak label loses to valid UTF-8
    assert decode(french.encode("cp1252"), "utf-8") == french  # a false declaration is not believed
    meta = b'<html><head><meta charset="koi8-r"></head><body>' + "\u043f\u0440\u0438\u0432\u0435\u0442".encode("koi8-r")
    assert "\u043f\u0440\u0438\u0432\u0435\u0442" in decode(meta, None, html=True)
    assert decode(b"\x00\x01\x02binary") is None


def test_xhtml_with_xml_declaration():
    from cllm.corpus.preprocess.documents import html_main_text
    from cllm.corpus.crawl.urls import extract_links

    html = '<?xml version="1.0" encoding="iso-8859-1"?>\n<html><body><a href="/x">x</a><p>' + prose(1) + "</p>"
    assert extract_links(html, "http://h.test/")[0] == ["http://h.test/x"]
    assert html_main_text(html, None)[0].startswith(prose(1)[:40])


def test_filters():
    t = Thresholds()
    assert quality_issue("", "text", t) == "empty"
    assert quality_issue("short", "text", t) == "too_short"
    assert quality_issue("var a=1;" * 400, "code", t) == "minified_or_generated"  # one 3,200-character line
    assert quality_issue(code_file(1), "code", t) is None
    assert quality_issue("Subscribe to our newsletter now\n" * 20 + prose(1, 50), "html", t) == "repetitive"
    assert quality_issue(prose(1), "html", t) is None
    assert quality_issue("\ufffd" * 50 + prose(2), "text", t) == "undecodable"


def test_minhash_near_duplicates():
    rng = random.Random(0)
    base = [rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(3000)]

    def variant(changed):
        words = list(base)
        for i in rng.sample(range(len(words)), int(changed * len(words))):
            words[i] = "zz" + str(rng.randrange(10**6))
        return " ".join(words)

    index = LSHIndex(0.8)
    assert index.add_if_new(signature(" ".join(base)))
    assert not index.add_if_new(signature(variant(0.01)))  # Jaccard of 5-grams ~0.9: a near-duplicate
    assert index.add_if_new(signature(variant(0.15)))  # ~0.3: kept
    assert signature("same text here").dtype == np.uint32 and (signature("x y") == signature("x y")).all()


def make_sources(root):
    """Code, prose, exact and near duplicates, a minified file, a binary one."""
    (root / "src").mkdir(parents=True)
    for i in range(40):
        (root / "src" / f"m{i}.py").write_text(code_file(i))
        (root / "src" / f"doc{i}.md").write_text(prose(i))
    (root / "src" / "copy.py").write_text(code_file(3))  # exact duplicate of m3.py
    words = code_file(5).split(" ")
    words[40] = "changed"
    (root / "src" / "near.py").write_text(" ".join(words))  # one word changed: a near-duplicate of m5.py
    (root / "src" / "min.js").write_text("function a(b){return b+1};" * 200)
    (root / "src" / "tiny.py").write_text("x = 1\n")
    return root


def test_collect_then_preprocess_reasons(tmp_path):
    collect([make_sources(tmp_path / "proj")], tmp_path / "corpus")
    report = preprocess(tmp_path / "corpus", tmp_path / "clean", workers=1, progress=False)
    assert report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1, "minified_or_generated": 1,
                                 "too_short": 1}
    docs = read_docs(tmp_path / "clean")
    assert report["kept"] == len(docs) == 80
    sources = [d["source"] for d in docs]
    assert sources == sorted(sources) and "proj/src/copy.py" in sources and "proj/src/m3.py" not in sources
    assert {d["meta"]["kind"] for d in docs} == {"code", "text"}
    assert json.loads((tmp_path / "clean" / "report.json").read_text())["kept"] == 80


def test_warc_input_html_extraction(tmp_path):
    pages = [(f"http://site.test/{i}", "text/html; charset=utf-8", html.encode()) for i, (html, _) in
             enumerate(corpus(12, seed=3))]
    pages.append(("http://site.test/dup", "text/html", pages[0][2]))
    pages.append(("http://site.test/latin", "text/html; charset=utf-8",  # the header lies
                  page(99, seed=3)[0].replace("Article", "Caf\u00e9 article").encode("cp1252")))
    pages.append(("http://site.test/bin", "text/html", b"\x00\x01" * 500))
    pages.append(("http://site.test/code.py", "text/x-python", code_file(7).encode()))
    report = preprocess(write_warc(tmp_path / "crawl", pages), tmp_path / "clean", workers=1, progress=False)
    docs = {d["source"]: d for d in read_docs(tmp_path / "clean")}
    assert report["dropped"] == {"binary": 1, "exact_duplicate": 1}
    first_html, truth = page(0, seed=3)
    d = docs["http://site.test/0"]
    assert d["meta"]["title"] == truth["title"] and d["meta"]["kind"] == "html"
    assert all(p in d["text"] for p in truth["paragraphs"]) and truth["code"] in d["text"]
    assert not any(b in d["text"] for b in truth["boilerplate"])
    assert "Caf\u00e9 article" in docs["http://site.test/latin"]["text"]
    assert docs["http://site.test/code.py"]["meta"]["kind"] == "code"


def test_deterministic_for_any_worker_count(tmp_path):
    make_sources(tmp_path / "proj")
    collect([tmp_path / "proj"], tmp_path / "corpus")
    pages = [(f"http://s.test/{i}", "text/html", html.encode()) for i, (html, _) in enumerate(corpus(60, seed=5))]
    write_warc(tmp_path / "crawl", pages)
    outputs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        preprocess([tmp_path / "corpus", tmp_path / "crawl"], out, workers=workers, progress=False,
                   shard_bytes=50_000)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.glob("docs-*.jsonl"))})
    assert len(outputs[0]) > 2 and outputs[0] == outputs[1] == outputs[2]


def test_chain_collect_preprocess_tokenize(tmp_path):
    collect([make_sources(tmp_path / "proj")], tmp_path / "corpus")
    assert cli(["preprocess", "--input", str(tmp_path / "corpus"), "--output", str(tmp_path / "clean"),
                 "--workers", "2", "--quiet"]) == 0
    docs = read_docs(tmp_path / "clean")
    assert [d.decode() for d in iter_documents([tmp_path / "clean"])] == [d["text"] for d in docs]
    assert cli(["tokenize", "--input", str(tmp_path / "clean"), "--output", str(tmp_path / "tokens"),
                 "--vocab-size", "300", "--val-fraction", "0.1", "--quiet"]) == 0
    stats = json.loads((tmp_path / "tokens" / "stats.json").read_text())
    assert stats["train"]["documents"] + stats["val"]["documents"] == len(docs)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_whole_shards(tmp_path, sig, code):
    """Ctrl-C (SIGINT), or SIGTERM as from a job scheduler, in the middle: every shard on disk is complete JSONL,
    the report says interrupted, the exit code is 130 / 143 with one line on stderr."""
    pages = [(f"http://s.test/{i}", "text/html", html.encode()) for i, (html, _) in
             enumerate(corpus(3000, seed=7, paragraphs=4, links=10))]
    write_warc(tmp_path / "crawl", pages)
    cmd = [sys.executable, "-m", "cllm", "preprocess", "--input", str(tmp_path / "crawl"), "--output",
           str(tmp_path / "clean"), "--workers", "1", "--shard-bytes", "20000", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "clean").glob("docs-*.jsonl"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err.strip() == f"cllm preprocess: stopped by {sig.name}"
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["interrupted"] and 0 < report["kept"] < 3000
    docs = read_docs(tmp_path / "clean")  # every line parses
    assert len(docs) == report["kept"]
    assert not list((tmp_path / "clean").glob(".*.tmp"))


def test_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    collect([make_sources(tmp_path / "proj")], tmp_path / "corpus", include=["tiny.py"])
    cases = [(["--input", str(tmp_path / "missing")], "does not exist"),
             (["--input", str(tmp_path / "empty")], "no manifest.jsonl or *.warc.gz"),
             (["--input", str(tmp_path / "file.txt")], "not a folder, a manifest"),
             (["--input", str(tmp_path / "corpus")], "every document was dropped"),
             (["--input", str(tmp_path / "corpus"), "--workers", "0"], "expected a positive integer"),
             (["--input", str(tmp_path / "corpus"), "--min-chars", "x"], "expected a positive integer")]
    for args, message in cases:
        assert cli(["preprocess", *args, "--output", str(tmp_path / "out"), "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and err.startswith("cllm preprocess: error:"), err
