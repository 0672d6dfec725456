"""The crawl stage: start URLs -> WARC files + ``manifest.jsonl`` + ``report.json``, politely and within limits.

Politeness: robots.txt per origin (``cllm.robots``); per host at most ``host_concurrency`` requests at a time
(default 1) and, after each, a pause of the larger of ``delay`` and the site's Crawl-delay (a site asking for
more than ``MAX_CRAWL_DELAY`` is left out of the run: it would stall it). Scope: the start URLs' hosts
(host and port), widened by ``allow_domains`` (a domain and its subdomains). Frontier: breadth first per host,
every URL canonical (``cllm.urls``) and seen only once; links deeper than ``max_depth`` are dropped; redirects
and a meta refresh (followed once) go back to the frontier as the next hop of a chain of at most 5, so every hop
is checked against scope, robots and politeness like any URL, and a hop back into its own chain is a loop.

Every page outcome is committed to the frontier database with the WARC bytes written for it, so a crawl killed
at any moment resumes (same command, same ``--output``) without fetching a finished page again. The manifest
(one line per URL: status, reason, HTTP status, bytes, sha256, content type, charset, WARC file and offset) and
the report (counts by status and reason, robots.txt per origin) are rewritten at the end of each run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..._version import __version__
from ...runtime.atomic import atomic_write
from ...runtime.checks import is_integer
from ...runtime.progress import progress_bar
from .fetch import ACCEPT, ACCEPT_ENCODING, Fetched, Limits, fetch, is_html
from .frontier import Frontier
from .robots import Robots
from ..textclean import charset_from_content_type, decode
from .urls import canonical, extract_links, host_of, in_scope, origin_of
from .warc import WarcWriter

__all__ = ["crawl", "CrawlOptions"]

USER_AGENT = f"cllm/{__version__} (a small-LM data crawler; obeys robots.txt)"
MAX_REDIRECTS = 5
MAX_CRAWL_DELAY = 60.0
STATE_FILE = "crawl-state.sqlite"


@dataclass
class CrawlOptions:
    max_pages: int = 1000
    max_depth: int = 5
    allow_domains: tuple = ()
    delay: float = 1.0
    concurrency: int = 8  # requests in flight, all hosts together
    host_concurrency: int = 1
    user_agent: str = USER_AGENT
    ignore_robots: bool = False
    limits: Limits = field(default_factory=Limits)


class Crawler:
    def __init__(self, output: Path, start_urls: list[str], options: CrawlOptions, progress=None):
        self.output, self.options, self.progress = output, options, progress
        self.start_hosts = frozenset(host_of(u) for u in start_urls)
        self.allow = tuple(d.lower().strip(".") for d in options.allow_domains)
        self.frontier = Frontier(output / STATE_FILE)
        warcs = self.frontier.repair_warcs(output)
        self.frontier.add([(u, host_of(u), 0, []) for u in start_urls])
        self.headers = {"User-Agent": options.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        self.warc = WarcWriter(output, len(warcs), f"cllm/{__version__}")
        self.frontier.register_warc(*self.warc.commit_point)
        self.queued = self.frontier.queued_by_host()
        self.fetched = self.frontier.count_fetched()
        self.active: dict[str, set[int]] = {}  # host -> ids in flight
        self.ready_at: dict[str, float] = {}
        self.host_delay: dict[str, float] = {}
        self.run_counts = Counter()
        self.robots = None

    async def run(self):
        import httpx

        limits = self.options.limits
        timeout = httpx.Timeout(limits.timeout)
        pool = httpx.Limits(max_connections=self.options.concurrency, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=timeout, limits=pool, follow_redirects=False) as client:
            self.client = client
            self.robots = Robots(client, limits, self.headers, self.options.user_agent, self.options.ignore_robots)
            tasks: set[asyncio.Task] = set()
            try:
                while True:
                    self._dispatch(tasks)
                    if not tasks:
                        if not self._waiting_hosts():
                            break
                    wake = self._next_wake()
                    if tasks:
                        await asyncio.wait(tasks, timeout=wake, return_when=asyncio.FIRST_COMPLETED)
                        for t in [t for t in tasks if t.done()]:
                            tasks.discard(t)
                            t.result()  # a bug in page handling must surface, not vanish
                    else:
                        await asyncio.sleep(wake or 0.01)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _budget_left(self) -> int:
        in_flight = sum(len(ids) for ids in self.active.values())
        return self.options.max_pages - self.fetched - in_flight

    def _waiting_hosts(self) -> list[str]:
        if self._budget_left() <= 0:
            return []
        return sorted(h for h, n in self.queued.items() if n > 0)

    def _next_wake(self) -> float | None:
        now = time.monotonic()
        times = [self.ready_at.get(h, 0) - now for h in self._waiting_hosts()
                 if len(self.active.get(h, ())) < self.options.host_concurrency]
        return max(0.0, min(times)) if times else None

    def _dispatch(self, tasks: set):
        now = time.monotonic()
        for host in self._waiting_hosts():
            active = self.active.setdefault(host, set())
            while (len(tasks) < self.options.concurrency and len(active) < self.options.host_concurrency
                   and self.ready_at.get(host, 0) <= now and self._budget_left() > 0 and self.queued[host] > 0):
                row = self.frontier.next_for(host, active)
                if row is None:
                    self.queued[host] = 0
                    break
                active.add(row[0])
                self.queued[host] -= 1
                tasks.add(asyncio.ensure_future(self._page(host, *row)))

    async def _page(self, host: str, url_id: int, url: str, depth: int, chain: list):
        requested = asked = False
        try:
            rules, asked = await self.robots.get(origin_of(url))
            delay = max(self.options.delay, rules.delay)
            self.host_delay[host] = delay
            if asked:  # the robots.txt request counts for politeness
                await asyncio.sleep(delay)
            if rules.delay > MAX_CRAWL_DELAY:
                result = {"status": "skipped", "reason": "crawl_delay_too_long"}
            elif not rules.allows(url, self.options.user_agent):
                result = {"status": "skipped", "reason": "robots_" + rules.status.replace("parsed", "disallowed")}
            else:
                requested = True
                got = await fetch(self.client, url, self.options.limits, self.headers)
                result, links = self._handle(got, depth, chain)
                self.frontier.finish(url_id, result, True, links, self.warc.commit_point)
                self._count(result, requested)
                return
            self.frontier.finish(url_id, result, False)
            self._count(result, requested)
        finally:
            self.active[host].discard(url_id)
            self.fetched += requested
            if requested or asked:  # a URL refused without a request does not make the host wait
                self.ready_at[host] = time.monotonic() + self.host_delay.get(host, self.options.delay)

    def _count(self, result: dict, requested: bool):
        self.run_counts[result["status"] + (f":{result['reason']}" if result.get("reason") else "")] += 1
        if self.progress is not None and requested:
            self.progress.update(1)

    def _handle(self, got: Fetched, depth: int, chain: list) -> tuple[dict, list]:
        """Record a response in the WARC file and the manifest entry; returns (entry, links to queue)."""
        result = {"http_status": got.status, "attempts": got.attempts, "depth": depth,
                  "seconds": round(got.seconds, 3)}
        if got.error or got.skipped:
            return {**result, "status": "skipped" if got.skipped else "failed",
                    "reason": got.skipped or got.error}, []
        content_type = got.header("content-type")
        charset, text, links, hop = None, None, [], None
        if got.status == 200 and is_html(content_type, got.body):
            text = decode(got.body, charset_from_content_type(content_type), html=True)
            if text is not None:
                charset = text.encoding
                try:
                    links, refresh = extract_links(text, got.url)
                except Exception as e:  # a page that breaks the parser is still a page; its links are lost
                    links, refresh, result["link_error"] = [], None, f"{type(e).__name__}: {e}"[:200]
                if refresh and not any(via == "refresh" for _, via in chain):
                    hop = (refresh, "refresh")
        elif got.status == 200:
            text = decode(got.body, charset_from_content_type(content_type))
            charset = text.encoding if text is not None else None
        elif 300 <= got.status < 400 and got.header("location"):
            hop = (canonical(got.header("location"), got.url), "redirect")
        metadata = {"depth": depth, "fetchTimeMs": int(got.seconds * 1000), "charset": charset or "",
                    "attempts": got.attempts, "via": ",".join(f"{via} {u}" for u, via in chain)}
        offset = self.warc.write_page(got, metadata)
        status = "redirect" if 300 <= got.status < 400 else "truncated" if got.truncated else "fetched"
        result.update(status=status, bytes=len(got.body),
                      sha256=hashlib.sha256(got.body).hexdigest(), content_type=content_type, charset=charset,
                      warc=self.warc.name, offset=offset)
        queue = []
        if hop is not None:
            result["reason"], entry = self._hop(got.url, hop, depth, chain)
            queue += [entry] if entry else []
        if depth < self.options.max_depth:
            queue += [(u, host_of(u), depth + 1, []) for u in links if in_scope(u, self.start_hosts, self.allow)]
        return result, self._count_new(queue)

    def _hop(self, url: str, hop: tuple, depth: int, chain: list):
        """(reason, frontier row or None) for a redirect or meta refresh from url to hop[0]."""
        target, via = hop
        if target is None:
            return "bad_location", None
        chain = chain + [[url, via]]
        if target == url or any(target == u for u, _ in chain):
            return "redirect_loop", None
        if len(chain) > MAX_REDIRECTS:
            return "too_many_redirects", None
        if not in_scope(target, self.start_hosts, self.allow):
            return "redirect_out_of_scope", None
        if self.frontier.is_seen(target):
            return "redirect_to_seen", None
        return via, (target, host_of(target), depth, chain)

    def _count_new(self, rows: list) -> list:
        """The rows whose URL is new to the frontier, counted into the per-host queue sizes."""
        unique = {}
        for r in rows:
            unique.setdefault(r[0], r)
        new = [r for r in unique.values() if not self.frontier.is_seen(r[0])]
        for r in new:
            self.queued[r[1]] = self.queued.get(r[1], 0) + 1
        return new

    def close(self):
        self.warc.close()
        self.frontier.close()


def _report(crawler: Crawler, start: float, start_urls: list[str]) -> dict:
    by_status, by_reason, total_bytes = Counter(), Counter(), 0
    with atomic_write(crawler.output / "manifest.jsonl", "w") as f:
        for entry in crawler.frontier.results():
            by_status[entry["status"]] += 1
            if entry.get("reason"):
                by_reason[entry["reason"]] += 1
            total_bytes += entry.get("bytes", 0)
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    rules = crawler.robots.rules if crawler.robots else {}
    robots = {origin: {"status": r.status, "crawl_delay": r.delay, **({"detail": r.detail} if r.detail else {})}
              for origin, r in sorted(rules.items())}
    report = {"start_urls": start_urls, "pages": dict(sorted(by_status.items())),
              "reasons": dict(sorted(by_reason.items())), "bytes": total_bytes,
              "queued_left": sum(crawler.frontier.queued_by_host().values()), "robots": robots,
              "unreachable_robots": sorted(o for o, r in robots.items() if r["status"] == "unreachable"),
              "this_run": dict(sorted(crawler.run_counts.items())), "seconds": round(time.monotonic() - start, 3)}
    with atomic_write(crawler.output / "report.json", "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    return report


def crawl(urls, output, options: CrawlOptions | None = None, progress: bool = False) -> dict:
    """Crawl from ``urls`` into the folder ``output`` (resuming the crawl already there); returns the report."""
    options = options or CrawlOptions()
    start_urls = []
    for u in urls:
        c = canonical(u)
        if c is None:
            raise ValueError(f"crawl: URL {u!r} is not an absolute http:// or https:// URL")
        start_urls.append(c)
    if not start_urls:
        raise ValueError("crawl: give at least one URL")
    for name in ("max_pages", "concurrency", "host_concurrency", "max_depth"):
        value = getattr(options, name)
        if not is_integer(value) or value < (0 if name == "max_depth" else 1):
            raise ValueError(f"crawl: {name} must be a {'non-negative' if name == 'max_depth' else 'positive'} "
                             f"integer (got {value!r})")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"crawl: output {output} exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    crawler = Crawler(output, start_urls, options)
    bar = crawler.progress = progress_bar(progress, total=options.max_pages, initial=crawler.fetched, unit="page",
                                          desc="crawling")
    try:
        try:
            asyncio.run(crawler.run())
        finally:  # also after Ctrl-C: the manifest and report then describe what was committed
            report = _report(crawler, start, start_urls)
        return report
    finally:
        bar.close()
        crawler.close()
