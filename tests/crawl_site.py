"""An adversarial web site on 127.0.0.x for the crawler tests: a real HTTP server (http.server, one thread per
connection) that logs every request it receives, so the tests judge the crawler by what reached the server.

Routes: robots.txt (rules and Crawl-delay, or a 404/503/timeout), an index linking to everything, normal pages,
a disallowed folder, redirect loops and an endless redirect chain, an endlessly slow body, a stalled one, a 100 MB
body (streamed, generated, with and without Content-Length), gzip and brotli bombs, non-HTML types, wrong and
missing charsets, malformed HTML, links to other hosts, thousands of generated links, a flaky 503, a meta refresh.
"""

from __future__ import annotations

import functools
import gzip
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli

CHUNK = b"<p>" + b"x" * (64 * 1024 - 7) + b"</p>\n"
HUNDRED_MB = 100 * 1000 * 1000
FRENCH = ("Le cœur a ses raisons que la raison ne connaît point. On le sait en mille choses. Voilà l'été, "
          "déjà fini, où les élèves préféraient la forêt à l'école. ") * 4
RUSSIAN = "Привет, мир! Это страница в кодировке windows-1251, объявленной только в мета-теге. " * 4


@functools.lru_cache(maxsize=None)
def gzip_bomb(n_bytes: int = 200 << 20) -> bytes:
    """n_bytes of zeros, gzip-compressed (about 1,000 times smaller)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join([z.compress(block) for _ in range(n_bytes >> 20)] + [z.flush()])


@functools.lru_cache(maxsize=None)
def brotli_bomb(n_bytes: int = 200 << 20) -> bytes:
    return brotli.compress(bytes(n_bytes), quality=1)


def html_page(title: str, body: str, links=(), head: str = "") -> str:
    anchors = "".join(f'<li><a href="{u}">{u}</a></li>' for u in links)
    return (f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body><h1>{title}</h1>"
            f"<p>{body}</p><ul>{anchors}</ul></body></html>")


class Site:
    """The server and its request log: [[path, host header, start, end, bytes sent]] (end None while the
    response is being sent)."""

    def __init__(self, host: str = "127.0.0.1", robots: str = "rules", crawl_delay: float = 0.05,
                 other_host: str | None = None, pages: int = 30):
        self.robots_mode, self.crawl_delay, self.other_host, self.pages = robots, crawl_delay, other_host, pages
        self.log, self.lock, self.stop = [], threading.Lock(), threading.Event()
        self.flaky_calls = 0
        self.gzip_bomb, self.br_bomb = gzip_bomb(), brotli_bomb()  # 200 MiB of zeros each
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.sent = 0
                entry = [self.path, self.headers.get("Host"), time.monotonic(), None, 0]
                with site.lock:  # logged on arrival: a request that never ends is still seen
                    site.log.append(entry)
                try:
                    site.route(self)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True
                finally:
                    entry[3:] = [time.monotonic(), self.sent]

            def send(self, status, body=b"", content_type="text/html; charset=utf-8", headers=()):
                body = body.encode("utf-8") if isinstance(body, str) else body
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.write(body)

            def write(self, data):
                self.wfile.write(data)
                self.sent += len(data)

            def stream(self, chunks, content_type="text/html; charset=utf-8", length=None):
                """A generated body, chunked (or with Content-Length ``length``); the connection closes after."""
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Connection", "close")
                self.send_header("Content-Length" if length else "Transfer-Encoding",
                                 str(length) if length else "chunked")
                self.end_headers()
                self.close_connection = True
                for chunk in chunks:
                    if site.stop.is_set():
                        return
                    self.write(chunk if length else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if not length:
                    self.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # clients that hang up are the point here
        self.port = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def requests(self, prefix: str = "/") -> list[str]:
        with self.lock:
            return [p for p, *_ in self.log if p.startswith(prefix)]

    # --- routes -------------------------------------------------------------------------------------------------
    def route(self, h):
        path = h.path
        if path == "/robots.txt":
            return self.robots(h)
        if path == "/":
            links = ["/page/0", "/private/secret", "/loop/a", "/chain/0", "/self", "/slow", "/stall", "/big",
                     "/big-length", "/bomb.html", "/bomb-br.html", "/image.png", "/data.bin", "/latin1",
                     "/meta-charset", "/malformed", "/other", "/many", "/flaky", "/refresh", "/notes.md",
                     "/code.py", "/missing", "/error"]
            return h.send(200, html_page("Index", "The index of a test site.", links))
        if path.startswith("/page/"):
            n = int(path.rsplit("/", 1)[1])
            nxt = [f"/page/{n + 1}"] if n + 1 < self.pages else []
            return h.send(200, html_page(f"Page {n}", f"Page number {n} of the site. " * 20, nxt))
        if path.startswith("/private/"):
            return h.send(200, html_page("Secret", "Robots.txt disallows this."))
        if path in ("/loop/a", "/loop/b"):
            return h.send(302, b"", headers=[("Location", "/loop/b" if path == "/loop/a" else "/loop/a")])
        if path.startswith("/chain/"):
            return h.send(302, b"", headers=[("Location", f"/chain/{int(path.rsplit('/', 1)[1]) + 1}")])
        if path == "/self":
            return h.send(301, b"", headers=[("Location", "/self")])
        if path == "/slow":  # a byte every 0.1 s, forever: only a total time limit ends it
            return h.stream(iter(lambda: (time.sleep(0.1), b"<")[1], None))
        if path == "/stall":  # headers, then silence: the read timeout ends it
            h.send_response(200)
            h.send_header("Content-Length", "1000")
            h.end_headers()
            self.stop.wait(30)
            return None
        if path == "/big":
            return h.stream(CHUNK for _ in range(HUNDRED_MB // len(CHUNK)))
        if path == "/big-length":
            return h.stream((CHUNK for _ in range(HUNDRED_MB // len(CHUNK))), length=HUNDRED_MB)
        if path == "/bomb.html":
            return h.send(200, self.gzip_bomb, headers=[("Content-Encoding", "gzip")])
        if path == "/bomb-br.html":
            return h.send(200, self.br_bomb, headers=[("Content-Encoding", "br")])
        if path == "/image.png":
            return h.send(200, b"\x89PNG\r\n\x1a\n" + bytes(2000), content_type="image/png")
        if path == "/data.bin":
            return h.send(200, bytes(range(256)) * 10, content_type="application/octet-stream")
        if path == "/latin1":  # declared utf-8, actually windows-1252, and gzip-compressed
            body = gzip.compress(html_page("Latin", FRENCH).encode("cp1252"))
            return h.send(200, body, content_type="text/html; charset=utf-8", headers=[("Content-Encoding", "gzip")])
        if path == "/meta-charset":  # no charset in the header, only in <meta>
            body = html_page("Russian", RUSSIAN, head='<meta charset="windows-1251">').encode("cp1251")
            return h.send(200, body, content_type="text/html")
        if path == "/malformed":
            return h.send(200, "<html><body><div><p>Unclosed <b>tags <a href='/page/5'>five<table><tr><td>"
                               "cell</span></i></div></div><a href=/malformed-target>t</a><<<>>> &bogus; </p")
        if path == "/malformed-target":
            return h.send(200, html_page("Target", "Reached from malformed HTML."))
        if path == "/other":
            links = [f"http://localhost:{self.port}/page/1", "http://example.invalid/x", "mailto:a@b.c",
                     "javascript:void(0)"] + ([f"http://{self.other_host}/"] if self.other_host else [])
            return h.send(200, html_page("Other hosts", "Links that leave the site.", links))
        if path == "/many":
            return h.send(200, html_page("Many", "Thousands of links.", [f"/gen/{i}" for i in range(3000)]))
        if path.startswith("/gen/"):
            n = int(path.rsplit("/", 1)[1])
            return h.send(200, html_page(f"Gen {n}", "Generated.", [f"/gen/{n * 7 + k}" for k in range(50)]))
        if path == "/flaky":
            with self.lock:
                self.flaky_calls += 1
                first = self.flaky_calls == 1
            if first:
                return h.send(503, b"busy", headers=[("Retry-After", "0")])
            return h.send(200, html_page("Flaky", "Worked the second time."))
        if path == "/error":
            return h.send(500, b"broken", headers=[("Retry-After", "0")])
        if path == "/refresh":
            return h.send(200, html_page("Moved", "See elsewhere.",
                                         head='<meta http-equiv="refresh" content="0; url=/refreshed">'))
        if path == "/refreshed":
            return h.send(200, html_page("Refreshed", "After a meta refresh.",
                                         head='<meta http-equiv="refresh" content="0; url=/refreshed-again">'))
        if path == "/notes.md":
            return h.send(200, "# Notes\n\nMarkdown text.\n", content_type="text/markdown")
        if path == "/code.py":
            return h.send(200, "def f(x):\n    return x + 1\n", content_type="text/x-python")
        return h.send(404, "not found", content_type="text/plain")

    def robots(self, h):
        if self.robots_mode == "rules":
            return h.send(200, f"User-agent: *\nDisallow: /private/\nCrawl-delay: {self.crawl_delay}\n",
                          content_type="text/plain")
        if self.robots_mode == "all-disallowed":
            return h.send(200, "User-agent: *\nDisallow: /\n", content_type="text/plain")
        if self.robots_mode == "missing":
            return h.send(404, "no robots", content_type="text/plain")
        if self.robots_mode == "error":
            return h.send(503, "down", content_type="text/plain")
        if self.robots_mode == "timeout":
            self.stop.wait(30)
            return None
        raise AssertionError(self.robots_mode)
