"""URL canonicalisation, scope and link extraction for the crawler.

Two spellings of one page must be one URL before the frontier sees them, or the crawler fetches it twice:
``canonical`` lower-cases the scheme and host, encodes international host names (IDNA), drops the default port,
the fragment and the user info, resolves ``.`` and ``..`` path segments, and spells percent-escapes one way
(unreserved characters decoded, the rest upper-case hex). The query keeps its order (its meaning can depend on
it). Only http and https URLs are kept.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

__all__ = ["canonical", "host_of", "origin_of", "in_scope", "extract_links"]

DEFAULT_PORTS = {"http": 80, "https": 443}
# what may stay unescaped in a path or query (RFC 3986 pchar and query sets), "%" kept for the re-escape below
PATH_SAFE = "/:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + "?"
ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _requote(part: str, safe: str) -> str:
    """Decode every escape that was not needed and escape everything that must be, upper-case hex."""
    pieces = re.split(r"(%2[Ff]|%3[Ff]|%23|%25|%26|%3[Dd]|%2[Bb])", part)  # escapes that change the meaning
    return "".join(p.upper() if i % 2 else quote(unquote(p), safe=safe) for i, p in enumerate(pieces))


def canonical(url: str, base: str | None = None) -> str | None:
    """The canonical form of ``url`` (resolved against ``base``), or None if it is not a usable http(s) URL."""
    try:
        url = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        host = parts.hostname.rstrip(".")
        host = host.encode("idna").decode("ascii") if not host.isascii() else host.lower()
        port = parts.port
    except (ValueError, UnicodeError):
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path or "/"
    trailing = path.endswith("/")
    path = posixpath.normpath(path) if path not in ("/", "") else "/"
    path = "/" + path.lstrip("/") + ("/" if trailing and path != "/" else "")
    return urlunsplit((scheme, netloc, _requote(path, PATH_SAFE), _requote(parts.query, QUERY_SAFE), ""))


def host_of(url: str) -> str:
    """host[:port] of a canonical URL: the unit of politeness (delays, concurrency) and of scope."""
    return urlsplit(url).netloc


def origin_of(url: str) -> str:
    """scheme://host[:port]: the unit robots.txt applies to (RFC 9309)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def in_scope(url: str, start_hosts: frozenset, allow_domains: tuple) -> bool:
    """A start host exactly (host and port), or a host name that is an allowed domain or a subdomain of one."""
    parts = urlsplit(url)
    if parts.netloc in start_hosts:
        return True
    name = (parts.hostname or "").lower()
    return any(name == d or name.endswith("." + d) for d in allow_domains)


def extract_links(html: str, base_url: str) -> tuple[list[str], str | None]:
    """(canonical links of <a href> and <area href>, the meta-refresh target or None), honouring <base href> and
    rel=nofollow. Malformed HTML is parsed as browsers would (lxml's HTML parser recovers)."""
    import lxml.html
    from lxml.etree import ParserError

    from ..textclean import without_xml_declaration

    try:
        tree = lxml.html.document_fromstring(without_xml_declaration(html))
    except (ParserError, ValueError):
        return [], None
    base = tree.find(".//base[@href]")
    base_url = canonical(base.get("href"), base_url) or base_url if base is not None else base_url
    links = []
    for a in tree.iterfind(".//a[@href]"):
        if "nofollow" not in (a.get("rel") or "").lower():
            links.append(a.get("href"))
    links += [a.get("href") for a in tree.iterfind(".//area[@href]")]
    refresh = None
    for meta in tree.iterfind(".//meta[@http-equiv]"):
        if meta.get("http-equiv", "").lower() == "refresh":
            m = re.search(r"url\s*=\s*['\"]?([^'\"\s]+)", meta.get("content") or "", re.IGNORECASE)
            if m:
                refresh = canonical(m.group(1), base_url)
                break
    out = list(dict.fromkeys(filter(None, (canonical(h, base_url) for h in links))))
    return out, refresh
