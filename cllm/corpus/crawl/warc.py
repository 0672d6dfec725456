"""WARC files (ISO 28500, through warcio): the crawler writes them, preprocess reads them.

WARC is what web archives and Common Crawl store pages in, so crawls made here can be read by their tools and
theirs by ``cllm preprocess``. Each page is a request record, a response record (status line, headers, body) and
a metadata record (depth, charset, fetch time, ...). As Common Crawl does, bodies are stored with their content
coding undone (the coding is kept as ``X-Crawler-Content-Encoding``), and a body cut at the size cap has
``WARC-Truncated: length``.
"""

from __future__ import annotations

import io
from pathlib import Path

__all__ = ["WarcWriter", "iter_responses"]

MAX_WARC_BYTES = 1 << 30  # start a new file past this (the usual size of archive files)
RENAMED = {"content-encoding", "content-length", "transfer-encoding"}


class WarcWriter:
    """Appends pages to ``crawl-NNNNN.warc.gz`` files in a folder; ``commit_point`` says how far a file is
    complete, for the frontier to record in the same transaction as the page."""

    def __init__(self, folder: Path, first_index: int, software: str):
        self.folder, self.index, self.software = folder, first_index, software
        self.file = None
        self._open()

    def _open(self):
        from warcio.warcwriter import WARCWriter

        self.name = f"crawl-{self.index:05d}.warc.gz"
        self.file = open(self.folder / self.name, "wb")
        self.writer = WARCWriter(self.file, gzip=True)
        self.writer.write_record(self.writer.create_warcinfo_record(
            self.name, {"software": self.software, "format": "WARC File Format 1.0"}))
        self.file.flush()

    @property
    def commit_point(self) -> tuple[str, int]:
        return self.name, self.file.tell()

    def close(self):
        if self.file:
            self.file.close()
            self.file = None

    def write_page(self, fetched, metadata: dict) -> int:
        """Write request, response and metadata records; returns the response record's offset."""
        from urllib.parse import urlsplit

        from warcio.statusandheaders import StatusAndHeaders

        if self.file.tell() > MAX_WARC_BYTES:
            self.close()
            self.index += 1
            self._open()
        w = self.writer
        headers = [(("X-Crawler-" + k) if k.lower() in RENAMED else k, v) for k, v in fetched.headers]
        headers.append(("Content-Length", str(len(fetched.body))))
        warc_headers = {"WARC-Truncated": "length"} if fetched.truncated else {}
        response = w.create_warc_record(
            fetched.url, "response", payload=io.BytesIO(fetched.body), warc_headers_dict=warc_headers,
            http_headers=StatusAndHeaders(f"{fetched.status} {fetched.reason}".strip(), headers,
                                          protocol=fetched.http_version))
        parts = urlsplit(fetched.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = w.create_warc_record(
            fetched.url, "request", payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders(f"GET {target} HTTP/1.1", [("Host", parts.netloc)] + fetched.request_headers,
                                          is_http_request=True))
        fields = "".join(f"{k}: {v}\r\n" for k, v in metadata.items()).encode("utf-8")
        meta = w.create_warc_record(fetched.url, "metadata", payload=io.BytesIO(fields),
                                    warc_content_type="application/warc-fields")
        record_id = response.rec_headers.get_header("WARC-Record-ID")
        for r in (request, meta):
            r.rec_headers.add_header("WARC-Concurrent-To", record_id)
        offset = self.file.tell()
        for r in (request, response, meta):
            w.write_record(r)
        self.file.flush()
        return offset


def iter_responses(path: Path, max_bytes: int, problems):
    """(url, content type, body, truncated) of every 200 response record of a WARC file, bodies of more than
    max_bytes cut (truncated True). A corrupt or cut-off archive ends the file; ``problems`` (a Counter) counts
    it, and what was read before it is kept."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    try:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                if record.http_headers.get_statuscode() != "200":
                    continue
                body = record.content_stream().read(max_bytes + 1)
                truncated = len(body) > max_bytes or record.rec_headers.get_header("WARC-Truncated") is not None
                yield (record.rec_headers.get_header("WARC-Target-URI"),
                       record.http_headers.get_header("Content-Type"), body[:max_bytes], truncated)
    except (ArchiveLoadFailed, OSError, EOFError, ValueError) as e:
        problems[f"corrupt_archive ({type(e).__name__})"] += 1
