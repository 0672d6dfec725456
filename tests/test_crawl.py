"""cllm crawl against a real HTTP server on 127.0.0.1 (tests/crawl_site.py), judged by the server's request log,
the manifest, the report and the WARC files."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from cllm.cli import main
from cllm.corpus.crawl import CrawlOptions, crawl
from cllm.corpus.crawl.fetch import Limits
from cllm.corpus.textclean import decode
from cllm.corpus.crawl.urls import canonical
from cllm.corpus.crawl.warc import iter_responses

from crawl_site import FRENCH, RUSSIAN, Site


def cli(args) -> int:
    """The exit code of ``cllm ARGS`` (argparse's usage errors exit with SystemExit(2) from parse_args)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code

FAST = Limits(timeout=0.5, page_timeout=1.5, max_bytes=1_000_000, retries=1, backoff=0.01)


def manifest(folder) -> dict:
    lines = Path(folder, "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {urlpath(e["url"]): e for e in map(json.loads, lines)}


def urlpath(url):
    return "/" + url.split("/", 3)[3]


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory):
    """One crawl of the whole adversarial site (shared by the tests below: it is the slow part)."""
    out = tmp_path_factory.mktemp("crawl")
    with Site("127.0.0.2", robots="missing") as other, Site(other_host=f"127.0.0.2:{other.port}") as site:
        tracemalloc.start()
        start = time.monotonic()
        report = crawl([site.base + "/"], out, CrawlOptions(max_pages=70, max_depth=3, delay=0.01, limits=FAST))
        seconds = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        yield {"out": out, "site": site, "other": other, "report": report, "seconds": seconds, "peak": peak,
               "manifest": manifest(out), "log": [tuple(e) for e in site.log if e[3] is not None]}


def test_finishes_within_limits(adversarial):
    a = adversarial
    requested = [p for p in a["site"].requests() if p != "/robots.txt"]
    assert len(set(requested)) <= 70 and len(requested) <= 70 + 2  # max_pages; /flaky and /error retried once
    assert a["report"]["pages"]["fetched"] >= 30
    assert a["seconds"] < 30
    slow = a["manifest"]["/slow"]
    assert (slow["status"], slow["reason"]) == ("failed", "page_timeout") and slow["seconds"] < 2.5
    stall = a["manifest"]["/stall"]
    assert (stall["status"], stall["reason"]) == ("failed", "timeout")


def test_size_caps_and_bombs(adversarial):
    m = adversarial["manifest"]
    for path in ("/big", "/bomb.html", "/bomb-br.html"):
        assert (m[path]["status"], m[path]["bytes"]) == ("truncated", 1_000_000), path
    assert (m["/big-length"]["status"], m["/big-length"]["reason"]) == ("skipped", "too_large")
    sent = {p: b for p, _, _, _, b in adversarial["log"]}
    assert sent["/big"] < 20_000_000  # the server could not push much more than the cap into the socket
    assert adversarial["peak"] < 40_000_000, f"traced peak {adversarial['peak'] / 1e6:.1f} MB"


def test_robots_scope_and_redirects(adversarial):
    a = adversarial
    site_requests, m = a["site"].requests(), a["manifest"]
    assert not a["site"].requests("/private")
    assert m["/private/secret"]["reason"] == "robots_disallowed"
    assert site_requests.count("/robots.txt") == 1
    assert a["other"].log == []  # another host: never contacted
    assert {host for _, host, *_ in a["log"]} == {f"127.0.0.1:{a['site'].port}"}  # not localhost:PORT
    assert site_requests.count("/loop/a") == 1 and site_requests.count("/loop/b") == 1
    assert m["/loop/b"]["reason"] == "redirect_loop" and m["/self"]["reason"] == "redirect_loop"
    assert len([p for p in site_requests if p.startswith("/chain/")]) == 6  # the first request and 5 redirects
    assert m["/chain/5"]["reason"] == "too_many_redirects"
    assert m["/refreshed"]["status"] == "fetched" and "/refreshed-again" not in m  # meta refresh: once
    assert "/malformed-target" in m and m["/malformed"]["status"] == "fetched"


def test_politeness(adversarial):
    """One request at a time to the host, and at least the robots.txt Crawl-delay (0.05 s) between them."""
    normal = sorted((s, e) for p, _, s, e, _ in adversarial["log"]
                    if p.startswith(("/page/", "/gen/", "/loop/", "/chain/", "/latin1", "/many")))
    gaps = [b[0] - a[1] for a, b in zip(normal, normal[1:])]
    assert len(gaps) > 10 and min(gaps) >= 0.045, min(gaps)


def test_types_charsets_retries(adversarial):
    m = adversarial["manifest"]
    for path in ("/image.png", "/data.bin"):
        assert (m[path]["status"], m[path]["reason"]) == ("skipped", "content_type")
    assert m["/notes.md"]["status"] == m["/code.py"]["status"] == "fetched"
    assert m["/flaky"]["status"] == "fetched" and m["/flaky"]["attempts"] == 2
    assert m["/error"]["http_status"] == 500 and m["/error"]["attempts"] == 2
    assert m["/missing"]["http_status"] == 404
    bodies = {}
    problems = Counter()
    for warc in sorted(adversarial["out"].glob("*.warc.gz")):
        for url, ctype, body, _ in iter_responses(warc, 10_000_000, problems):
            bodies[urlpath(url)] = (ctype, body)
    assert not problems
    latin = decode(bodies["/latin1"][1], "utf-8", html=True)  # the header lies; the body is windows-1252
    assert FRENCH.split(".")[0] in latin
    russian = decode(bodies["/meta-charset"][1], None, html=True)
    assert RUSSIAN.split(",")[0] in russian and m["/meta-charset"]["charset"] == "cp1251"


def _crawl_cli(*args):
    return cli(["crawl", *map(str, args), "--quiet"])


@pytest.mark.parametrize("mode,reason", [("error", "robots_unreachable"), ("timeout", "robots_unreachable"),
                                         ("all-disallowed", "robots_disallowed")])
def test_robots_that_forbid(tmp_path, capsys, mode, reason):
    with Site(robots=mode) as site:
        assert _crawl_cli(site.base + "/", "--output", tmp_path, "--delay", 0, "--timeout", 0.3) == 0
        assert site.requests() == ["/robots.txt"]
    assert manifest(tmp_path)["/"]["reason"] == reason
    out = capsys.readouterr().out
    assert ("robots.txt unreachable" in out) == (mode != "all-disallowed")


def test_missing_robots_allows_and_ignore_robots(tmp_path):
    with Site(robots="missing", pages=3) as site:
        crawl([site.base + "/page/0"], tmp_path / "a", CrawlOptions(delay=0, limits=FAST))
        assert site.requests() == ["/robots.txt", "/page/0", "/page/1", "/page/2"]
    with Site(robots="all-disallowed", pages=2) as site:
        crawl([site.base + "/private/x"], tmp_path / "b", CrawlOptions(delay=0, ignore_robots=True, limits=FAST))
        assert site.requests() == ["/private/x"]


def test_allow_domain_widens_scope(tmp_path):
    with Site("127.0.0.2", robots="missing", pages=2) as other, \
            Site(other_host=f"127.0.0.2:{other.port}", crawl_delay=0) as site:
        crawl([site.base + "/other"], tmp_path,
              CrawlOptions(max_depth=1, delay=0, allow_domains=("127.0.0.2",), limits=FAST))
        assert "/" in other.requests() and not site.requests("/page/")  # localhost:PORT stays out


def test_resume_after_kill_does_not_refetch(tmp_path):
    """SIGKILL a crawl mid-way, run it again: pages committed before the kill are not requested again."""
    import sqlite3

    with Site(robots="missing", pages=60) as site:
        cmd = [sys.executable, "-m", "cllm", "crawl", site.base + "/page/0", "--output", str(tmp_path),
               "--delay", "0.03", "--max-depth", "100", "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while len(site.requests("/page/")) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first_run = site.requests("/page/")
        db = sqlite3.connect(tmp_path / "crawl-state.sqlite")
        done = {canonical(u) for (u,) in db.execute("SELECT url FROM urls WHERE done = 1")}
        db.close()
        assert 10 <= len(done) < 60
        del site.log[:]
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        second_run = site.requests("/page/")
    refetched = {p for p in second_run if site.base + p in done}
    assert not refetched
    assert sorted(set(first_run) | set(second_run)) == sorted(f"/page/{i}" for i in range(60))
    urls, problems = [], Counter()
    for warc in sorted(tmp_path.glob("*.warc.gz")):
        urls += [u for u, *_ in iter_responses(warc, 10**6, problems)]
    assert not problems and sorted(urls) == sorted(f"{site.base}/page/{i}" for i in range(60))
    assert len(manifest(tmp_path)) == 60


@pytest.mark.parametrize("args,message", [
    (["ftp://example.com/"], "not an absolute http"),
    (["not a url"], "not an absolute http"),
])
def test_bad_urls_are_usage_errors(tmp_path, capsys, args, message):
    assert _crawl_cli(*args, "--output", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("cllm crawl: error:")


@pytest.mark.parametrize("option", [["--max-pages", "0"], ["--delay", "-1"], ["--timeout", "0"],
                                    ["--concurrency", "x"], ["--max-depth", "-2"]])
def test_bad_options_are_usage_errors(tmp_path, capsys, option):
    assert cli(["crawl", "http://127.0.0.1:9/", "--output", str(tmp_path), *option]) == 2
    assert "error" in capsys.readouterr().err


def test_output_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert _crawl_cli("http://127.0.0.1:9/", "--output", f) == 2
    assert "not a folder" in capsys.readouterr().err


def test_sigterm_inside_an_asyncio_callback_is_not_swallowed():
    """SIGTERM landing inside asyncio's socket callbacks (where a crawl spends its time) must stop the run: asyncio
    logs and drops any exception there but SystemExit and KeyboardInterrupt."""
    from cllm.cli import Terminated, _sigterm_raises

    class Client(asyncio.Protocol):
        def data_received(self, data):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the transport's read callback
            time.sleep(0.01)

    async def run():
        server = await asyncio.start_server(lambda r, w: w.write(b"x" * 10), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await asyncio.get_running_loop().create_connection(Client, "127.0.0.1", port)
        await asyncio.sleep(2)  # reached only if the signal was swallowed

    with pytest.raises(Terminated), _sigterm_raises():
        asyncio.run(run())


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exits_with_its_code_and_the_crawl_resumes(tmp_path, sig, code):
    """SIGINT / SIGTERM mid-crawl: exit 130 / 143 with one line on stderr, a whole manifest and report, and the
    same command then finishes the crawl."""
    with Site(robots="missing", pages=40) as site:
        cmd = [sys.executable, "-m", "cllm", "crawl", site.base + "/page/0", "--output", str(tmp_path),
               "--delay", "0.03", "--max-depth", "100", "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while len(site.requests("/page/")) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert err.strip() == f"cllm crawl: stopped by {sig.name}"
        assert 0 < len(manifest(tmp_path)) < 40 and json.loads((tmp_path / "report.json").read_text())["pages"]
        assert not list(tmp_path.glob(".*.tmp"))
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    assert {e["status"] for e in manifest(tmp_path).values()} == {"fetched"} and len(manifest(tmp_path)) == 40
