"""Preprocess's inputs and its per-document work: where documents come from (a collect manifest, WARC files) and
what happens to one document (decode, HTML main text, normalise, filter, hash, MinHash), a pure function of the
document so that any number of worker processes produce the same results.

HTML extraction is trafilatura's: on the generated corpus of tests/html_corpus.py (pages with navigation,
sidebars, cookie banners and footers, half of them in anonymous <div>s) it kept every paragraph and code block and
leaked no boilerplate, where resiliparse kept the footer of every <div> page (7% of boilerplate sentences) at
14 times the speed (docs/data.md has the figures). Our input is a crawl limited by politeness, not by
extraction speed, so quality wins.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from ..crawl.fetch import is_html, media_type
from .filters import Thresholds, quality_issue
from .minhash import signature
from .shards import JsonlError
from ..textclean import charset_from_content_type, decode, normalize, without_xml_declaration

__all__ = ["iter_items", "process_batch", "MAX_RECORD_BYTES"]

MAX_RECORD_BYTES = 32 << 20  # a web page larger than this is not read whole
TEXT_EXTENSIONS = {".md", ".markdown", ".rst", ".txt", ".tex", ".adoc", ""}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
PROSE_TYPES = {"text/plain", "text/markdown", "text/x-markdown", "text/x-rst", "application/x-tex"}


def _warc_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".warc.gz", ".warc")) and p.is_file())


def resolve_inputs(inputs) -> list[tuple[str, Path]]:
    """[("manifest" | "warc", path)] for the inputs: folders (their WARC files, else their manifest.jsonl),
    manifest files and WARC files. Raises ValueError naming an input that is none of these."""
    resolved = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            warcs = _warc_files(path)
            if warcs:
                resolved += [("warc", w) for w in warcs]
            elif (path / "manifest.jsonl").is_file():
                resolved.append(("manifest", path / "manifest.jsonl"))
            else:
                raise ValueError(f"preprocess: input {path} has no manifest.jsonl or *.warc.gz (expected the "
                                 f"output folder of cllm collect or cllm crawl)")
        elif path.is_file() and path.name.endswith((".warc.gz", ".warc")):
            resolved.append(("warc", path))
        elif path.is_file() and path.name.endswith(".jsonl"):
            resolved.append(("manifest", path))
        elif path.exists():
            raise ValueError(f"preprocess: input {path} is not a folder, a manifest .jsonl or a .warc(.gz) file")
        else:
            raise ValueError(f"preprocess: input {path} does not exist")
    return resolved


def _manifest_items(manifest: Path):
    with open(manifest, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                if entry.get("status") != "ok":
                    continue
                path = Path(entry["path"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise JsonlError(f"preprocess: {manifest} line {n} is not a cllm collect manifest entry "
                                 f"(a JSON object with source, path and status)") from None
            path = path if path.is_absolute() else manifest.parent / path
            yield ("file", entry["source"], {"path": entry["path"], "sha256": entry.get("sha256"),
                                             "encoding": entry.get("encoding")}, str(path))


def iter_items(inputs, problems: Counter):
    """Every input document, in a fixed order: (origin, source, meta, payload); payload is a path to read for
    "file" items and the body bytes for "web" items."""
    from ..crawl.warc import iter_responses

    for kind, path in resolve_inputs(inputs):
        if kind == "manifest":
            yield from _manifest_items(path)
            continue
        for url, content_type, body, truncated in iter_responses(path, MAX_RECORD_BYTES, problems):
            meta = {"url": url, "content_type": content_type, **({"truncated": True} if truncated else {})}
            yield "web", url, meta, body


def _file_kind(source: str) -> str:
    suffix = Path(source).suffix.lower()
    return "html" if suffix in HTML_EXTENSIONS else "text" if suffix in TEXT_EXTENSIONS else "code"


def _web_kind(content_type: str | None, body: bytes) -> str:
    if is_html(content_type, body):
        return "html"
    mt = media_type(content_type)
    return "text" if mt in PROSE_TYPES or not mt else "code"


def html_main_text(html: str, url: str | None) -> tuple[str, str | None]:
    """(main text, title) of an HTML page."""
    import lxml.html
    import trafilatura
    from lxml.etree import ParserError

    try:
        tree = lxml.html.document_fromstring(without_xml_declaration(html))
    except (ParserError, ValueError):
        return "", None
    title = tree.findtext(".//title")
    doc = trafilatura.bare_extraction(tree, url=url, include_comments=False, with_metadata=False)
    return (doc.text or "") if doc is not None else "", (title.strip() or None) if title else None


def _process(item, thresholds: Thresholds) -> dict:
    origin, source, meta, payload = item
    out = {"source": source, "meta": meta, "text": None, "drop": None, "bytes": 0}
    if origin == "file":
        try:
            data = Path(payload).read_bytes()
        except OSError:
            out["drop"] = "unreadable"
            return out
        if meta.get("sha256") and hashlib.sha256(data).hexdigest() != meta["sha256"]:
            out["drop"] = "changed_since_collect"
            return out
        kind, declared = _file_kind(source), meta.get("encoding")
    else:
        data = payload
        kind, declared = _web_kind(meta["content_type"], data), charset_from_content_type(meta["content_type"])
    out["bytes"] = len(data)
    text = decode(data, declared, html=kind == "html")
    if text is None or "\0" in text:
        out["drop"] = "binary"
        return out
    meta = {"kind": kind, **meta, "charset": text.encoding}
    if kind == "html":
        text, title = html_main_text(text, meta.get("url"))
        meta["title"] = title
    text = normalize(text)
    out["meta"] = meta
    out["drop"] = quality_issue(text, kind, thresholds)
    if out["drop"] is None:
        out["text"] = text
        out["hash"] = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        out["signature"] = signature(text)
    return out


def process_batch(batch: list, thresholds: Thresholds) -> list[dict]:
    """The worker's task: every item's result; an item that raises is dropped as "error", never the batch."""
    results = []
    for item in batch:
        try:
            results.append(_process(item, thresholds))
        except Exception as e:  # a page that breaks the extractor must not stop the run
            results.append({"source": item[1], "meta": item[2], "text": None, "bytes": 0,
                            "drop": "error", "error": f"{type(e).__name__}: {e}"[:200]})
    return results
