"""robots.txt for the crawler (RFC 9309, parsed by protego): fetched once per origin and kept for the run.

The RFC's three cases: a robots.txt that exists is obeyed (Allow/Disallow, and Crawl-delay or Request-rate as the
host's minimum delay); one that is "unavailable" (4xx) allows everything; one that is "unreachable" (5xx, 429,
a timeout or a connection error) disallows the whole origin for the run, and the report says so. Redirects are
followed (up to 5, as the RFC asks) and at most 512 KiB are parsed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .fetch import Limits, fetch
from ..textclean import decode

__all__ = ["Robots", "RobotsRules"]

MAX_ROBOTS_BYTES = 512 * 1024
MAX_ROBOTS_REDIRECTS = 5


@dataclass
class RobotsRules:
    status: str  # "parsed", "missing" (4xx: allow all), "unreachable" (disallow all), "ignored"
    parser: object = None
    delay: float = 0.0  # Crawl-delay or Request-rate, seconds between requests
    detail: str = ""

    def allows(self, url: str, user_agent: str) -> bool:
        if self.status == "unreachable":
            return False
        return self.parser is None or self.parser.can_fetch(url, user_agent)


class Robots:
    """Per-origin robots.txt rules, fetched on first use (concurrent callers wait for the one fetch)."""

    def __init__(self, client, limits: Limits, headers: dict, user_agent: str, ignore: bool = False):
        self.client, self.headers, self.user_agent, self.ignore = client, headers, user_agent, ignore
        self.limits = Limits(timeout=limits.timeout, page_timeout=limits.page_timeout,
                             max_bytes=MAX_ROBOTS_BYTES, retries=0)
        self.rules: dict[str, RobotsRules] = {}
        self.pending: dict[str, asyncio.Future] = {}

    async def get(self, origin: str) -> tuple[RobotsRules, bool]:
        """(rules, whether this call made requests to the origin)."""
        if self.ignore:
            return RobotsRules("ignored"), False
        if origin in self.rules:
            return self.rules[origin], False
        if origin in self.pending:
            return await asyncio.shield(self.pending[origin]), False
        future = self.pending[origin] = asyncio.get_running_loop().create_future()
        try:
            rules = await self._fetch(origin)
        except Exception as e:  # never let one host's robots.txt stop the crawl: treat as unreachable
            rules = RobotsRules("unreachable", detail=f"{type(e).__name__}: {e}")
        self.rules[origin] = rules
        future.set_result(rules)
        del self.pending[origin]
        return rules, True

    async def _fetch(self, origin: str) -> RobotsRules:
        from protego import Protego

        from .urls import canonical

        url = origin + "/robots.txt"
        for _ in range(MAX_ROBOTS_REDIRECTS + 1):
            got = await fetch(self.client, url, self.limits, self.headers)
            location = got.header("location") if 300 <= got.status < 400 else None
            if not location or not canonical(location, url):
                break
            url = canonical(location, url)
        if got.error or got.status >= 500 or got.status == 429:
            return RobotsRules("unreachable", detail=f"{url}: {got.error or f'HTTP {got.status}'}")
        if got.status >= 300:  # 4xx, or a redirect chain that did not end
            return RobotsRules("missing", detail=f"{url}: HTTP {got.status}")
        text = decode(got.body, None) or ""
        parser = Protego.parse(text)
        delay = parser.crawl_delay(self.user_agent) or 0.0
        rate = parser.request_rate(self.user_agent)
        if rate is not None and rate.requests:
            delay = max(delay, rate.seconds / rate.requests)
        return RobotsRules("parsed", parser, float(delay))
