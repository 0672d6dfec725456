"""One bounded HTTP fetch for the crawler: whatever a server does, a fetch ends within its time limits and holds at
most ``max_bytes`` of body.

The client is httpx (asynchronous): its ``aiter_raw`` streams the body exactly as sent, so the content coding is
undone here, under our cap, instead of inside the client where a compression bomb would be inflated whole before
we see it; its timeouts are separate for connect, read, write and pool; and it is pure Python with few
dependencies. aiohttp would do as well and is faster at hundreds of connections per host, which a polite crawler
(one connection per host by default, with a delay) never opens.

Limits: ``timeout`` for connecting and between two reads, ``page_timeout`` for the whole response, ``max_bytes``
on Content-Length (refused before reading), on the bytes read and on the bytes after gzip/deflate/br decoding
(cut off there: ``truncated``). Retries with exponential backoff on 429 and 5xx and connection errors, never
sooner than Retry-After says, and not at all when it says more than ``max_retry_wait``.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import time
import zlib
from dataclasses import dataclass, field

__all__ = ["Limits", "Fetched", "fetch", "ACCEPTED_TYPES", "media_type", "is_html"]

# HTML, plain text, markdown and source code; a missing Content-Type is accepted and sniffed by the reader
ACCEPTED_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "text/x-*", "text/javascript",
                  "application/javascript", "application/x-sh", "application/x-python", "application/x-tex")
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,text/markdown;q=0.9,text/*;q=0.8,*/*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate, br"
RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class Limits:
    timeout: float = 10.0  # connect, and between two reads
    page_timeout: float = 30.0  # the whole response, retries not included
    max_bytes: int = 5_000_000
    retries: int = 2
    backoff: float = 1.0  # first retry wait when the server gives no Retry-After; doubles each time
    max_retry_wait: float = 60.0


@dataclass
class Fetched:
    """A response (status > 0) or a failure (status 0 and ``error``), or a response not read (``skipped``)."""

    url: str
    status: int = 0
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: list = field(default_factory=list)  # [(name, value)] as received, str
    request_headers: list = field(default_factory=list)
    body: bytes = b""
    truncated: bool = False
    error: str | None = None  # timeout, page_timeout, connect_error, protocol_error, decode_error
    skipped: str | None = None  # too_large, content_type, unsupported_encoding
    attempts: int = 1
    seconds: float = 0.0

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_html(content_type: str | None, body: bytes) -> bool:
    """HTML by its media type, or, when there is none, by how the body starts."""
    mt = media_type(content_type)
    if mt:
        return mt in ("text/html", "application/xhtml+xml")
    return body[:512].lstrip().lower().startswith((b"<!doctype html", b"<html"))


def accepted(content_type: str | None) -> bool:
    mt = media_type(content_type)
    return not mt or any(fnmatch.fnmatchcase(mt, p) for p in ACCEPTED_TYPES)


class _Decoder:
    """Undoes a Content-Encoding chunk by chunk, never producing more than the room it is given."""

    def __init__(self, coding: str):
        self.coding = coding
        if coding in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self.z, self.raw_fallback = zlib.decompressobj(), True  # zlib-wrapped as specified, raw as often sent
        elif coding == "br":
            import brotli

            self.br = brotli.Decompressor()
        elif coding not in ("", "identity"):
            raise ValueError(coding)

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Decoded bytes of chunk, at most room (>= 1) of them."""
        if self.coding in ("", "identity"):
            return chunk[:room]
        if self.coding == "br":
            out = self.br.process(chunk, output_buffer_limit=room)
            return out[:room]
        try:
            out = self.z.decompress(chunk, room)
        except zlib.error:
            if self.coding != "deflate" or not self.raw_fallback:
                raise
            self.z, self.raw_fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
            out = self.z.decompress(chunk, room)
        self.raw_fallback = False
        return out


async def _read_body(response, limits: Limits, result: Fetched):
    coding = (response.headers.get("content-encoding") or "").strip().lower()
    try:
        decoder = _Decoder(coding)
    except ValueError:
        result.skipped = "unsupported_encoding"
        return
    body, raw = bytearray(), 0
    async for chunk in response.aiter_raw():
        raw += len(chunk)
        try:
            body += decoder.feed(chunk, limits.max_bytes + 1 - len(body))
        except Exception:  # zlib.error, brotli.error (a plain Exception): a corrupt stream, keep what decoded
            result.error = "decode_error"
            break
        if len(body) > limits.max_bytes or raw > limits.max_bytes:
            result.truncated = True
            break
    result.body = bytes(body[:limits.max_bytes])


async def _attempt(client, url: str, limits: Limits, headers: dict) -> Fetched:
    import httpx

    result = Fetched(url, request_headers=list(headers.items()))
    try:
        async with client.stream("GET", url, headers=headers) as response:
            result.status, result.reason = response.status_code, response.reason_phrase
            result.http_version = response.http_version
            result.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limits.max_bytes:
                result.skipped = "too_large"
            elif response.status_code == 200 and not accepted(response.headers.get("content-type")):
                result.skipped = "content_type"
            elif response.status_code < 300 or response.status_code >= 400:
                await _read_body(response, limits, result)
    except httpx.TimeoutException:
        result.error = "timeout"
    except (httpx.ConnectError, httpx.NetworkError):
        result.error = "connect_error"
    except (httpx.HTTPError, httpx.InvalidURL):
        result.error = "protocol_error"
    return result


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


async def fetch(client, url: str, limits: Limits, headers: dict) -> Fetched:
    """GET url within the limits (see the module docstring), retrying 429, 5xx and connection errors."""
    start = time.monotonic()
    for attempt in range(limits.retries + 1):
        try:
            result = await asyncio.wait_for(_attempt(client, url, limits, headers), limits.page_timeout)
        except asyncio.TimeoutError:
            result = Fetched(url, request_headers=list(headers.items()), error="page_timeout")
        result.attempts = attempt + 1
        retryable = result.status in RETRY_STATUSES or result.error == "connect_error"
        if not retryable or attempt == limits.retries:
            break
        wait = _retry_after(result.header("retry-after"))
        if wait is None:
            wait = limits.backoff * 2 ** attempt
        if wait > limits.max_retry_wait:
            break
        await asyncio.sleep(wait)
    result.seconds = time.monotonic() - start
    return result
