"""cllm preprocess throughput (input MB/s, median of 3 runs) at each of conftest.THREADS worker processes on two
corpora: the Python standard library's .py sources (the running Python's Lib/, site-packages excluded; collected
with cllm collect, default 1 MiB file cap) and a generated HTML corpus (tests/html_corpus.py: 2,000 pages with
navigation, sidebars and footers, in one WARC file). Quick mode: three stdlib packages (email, json, http),
200 pages, one run. Beside it, HTML main-text extraction alone: trafilatura
(ours) against resiliparse (a faster extractor we measured and did not choose), with recall of the article
paragraphs and boilerplate leaked in extra_info.
"""

import os
import sys
import sysconfig

import pytest

from cllm.corpus.collect import collect
from cllm.corpus.preprocess.documents import html_main_text
from cllm.corpus.crawl.fetch import Fetched
from cllm.corpus.preprocess.stage import preprocess
from cllm.corpus.crawl.warc import WarcWriter

from conftest import NOTES, THREADS, quick, settle

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from html_corpus import corpus  # noqa: E402

HTML_PAGES, ROUNDS = quick(2000, 200), quick(3, 1)
STDLIB = sysconfig.get_paths()["stdlib"]
STDLIB_ROOTS = quick([STDLIB], [os.path.join(STDLIB, name) for name in ("email", "json", "http")])


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("stdlib")
    report = collect(STDLIB_ROOTS, out, include=["*.py"], exclude=["site-packages"])
    NOTES.append(f"preprocess stdlib corpus: {report['files'].get('ok', 0)} files, {report['bytes'] / 1e6:.1f} MB")
    return out


@pytest.fixture(scope="module")
def html_pages():
    return corpus(HTML_PAGES, seed=11)


@pytest.fixture(scope="module")
def html_warc(tmp_path_factory, html_pages):
    out = tmp_path_factory.mktemp("html")
    w = WarcWriter(out, 0, "benchmark")
    for i, (html, _) in enumerate(html_pages):
        w.write_page(Fetched(f"http://bench.test/{i}", 200, "OK", headers=[("Content-Type", "text/html")],
                             body=html.encode()), {})
    w.close()
    return out


@pytest.mark.parametrize("name", ["stdlib", "html"])
@pytest.mark.parametrize("workers", THREADS)
def test_preprocess(benchmark, record_rate, request, tmp_path, name, workers):
    source = request.getfixturevalue("stdlib_corpus" if name == "stdlib" else "html_warc")
    settle()
    reports = []

    def run():
        reports.append(preprocess(source, tmp_path / "out", workers=workers, progress=False))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    r = reports[-1]
    rate = r["bytes_in"] / benchmark.stats.stats.median
    benchmark.extra_info.update(kept=r["kept"], documents=r["documents"], dropped=r["dropped"],
                                mb=r["bytes_in"] / 1e6)
    record_rate("preprocess", f"{name} corpus", workers, "cllm", rate, "B", scale=(1e6, "M"))
    NOTES.append(f"preprocess {name} w{workers}: {r['bytes_in'] / 1e6:.1f} MB in {benchmark.stats.stats.median:.2f} s "
                 f"(median of {ROUNDS}), kept {r['kept']} of {r['documents']}, dropped {r['dropped']}")


def _score(texts, pages):
    recall = leaked = n_par = n_bp = 0
    for text, (_, truth) in zip(texts, pages):
        recall += sum(p in text for p in truth["paragraphs"])
        leaked += sum(b in text for b in truth["boilerplate"])
        n_par, n_bp = n_par + len(truth["paragraphs"]), n_bp + len(truth["boilerplate"])
    return recall / n_par, leaked / n_bp


@pytest.mark.parametrize("impl", ["resiliparse", "trafilatura"])
def test_html_extraction(benchmark, record_rate, html_pages, impl):
    pages = html_pages[:500]
    if impl == "resiliparse":
        html2text = pytest.importorskip("resiliparse.extract.html2text")
        from resiliparse.parse.html import HTMLTree

        fn = lambda h: html2text.extract_plain_text(HTMLTree.parse(h), main_content=True, preserve_formatting=True)
    else:
        fn = lambda h: html_main_text(h, None)[0]
    settle()
    texts = []
    benchmark.pedantic(lambda: texts.append([fn(h) for h, _ in pages]), rounds=ROUNDS, iterations=1)
    recall, leaked = _score(texts[-1], pages)
    mb = sum(len(h.encode()) for h, _ in pages)
    benchmark.extra_info.update(paragraph_recall=recall, boilerplate_leaked=leaked)
    record_rate("html_extract", "generated pages", 1, "cllm" if impl == "trafilatura" else impl,
                mb / benchmark.stats.stats.median, "B", scale=(1e6, "M"))
    NOTES.append(f"html_extract {impl}: {mb / 1e6 / benchmark.stats.stats.median:.1f} MB/s, paragraph recall "
                 f"{recall:.3f}, boilerplate leaked {leaked:.3f}")
