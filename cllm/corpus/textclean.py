"""Bytes -> clean text, shared by collect, crawl and preprocess so that a file or a page decodes the same way in
every stage.

Decoding follows the order browsers and crawlers use: a byte-order mark, then the charset the server declared,
then a ``<meta charset>`` in the first bytes of an HTML page, then detection (charset-normalizer). A declared
charset is only believed when the bytes decode with it: servers often send ``charset=iso-8859-1`` for UTF-8 pages,
and a wrong declaration must not turn a page into mojibake or an error.

Normalisation makes equal texts equal bytes (for exact dedup and a stable tokenizer input): Unicode NFC, every
newline convention turned into ``\\n``, control characters removed (tab and newline kept), trailing whitespace
trimmed on every line, blank lines at both ends dropped.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

__all__ = ["Decoded", "decode", "normalize", "is_binary", "charset_from_content_type", "meta_charset",
           "without_xml_declaration"]

# UTF-32 first: its little-endian mark starts with UTF-16's
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Labels that mean "I did not think about it": WHATWG maps them to windows-1252, which accepts any byte, so they
# would hide a UTF-8 page; valid UTF-8 with non-ASCII bytes is taken as UTF-8 instead.
WEAK_LABELS = {"iso-8859-1", "latin-1", "latin1", "ascii", "us-ascii", "windows-1252", "cp1252", "iso8859-1"}
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
CONTENT_TYPE_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
# C0 and C1 controls and DEL, except tab and newline; NEL, LS and PS are newlines (handled before)
CONTROL = dict.fromkeys([c for c in range(0x20) if c not in (0x09, 0x0A)] + [0x7F] + list(range(0x80, 0xA0)))
NEWLINES = re.compile("\r\n|[\r\x0b\x85\u2028\u2029]")
TRAILING_SPACE = re.compile(r"[ \t\u00a0\u3000]+$", re.MULTILINE)
XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
DETECT_BYTES = 64 * 1024  # charset-normalizer looks at this much: enough, and bounded time on large inputs


class Decoded(str):
    """A decoded text that remembers its encoding and whether bytes had to be replaced."""

    encoding: str
    replaced: bool

    def __new__(cls, text: str, encoding: str, replaced: bool = False):
        self = super().__new__(cls, text)
        self.encoding, self.replaced = encoding, replaced
        return self


def _codec(label) -> str | None:
    """Python's codec name for a charset label, or None when the label names nothing Python knows."""
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().strip("\"'").lower()).name
    except LookupError:
        return None


def charset_from_content_type(content_type: str | None) -> str | None:
    m = CONTENT_TYPE_CHARSET.search(content_type or "")
    return m.group(1) if m else None


def meta_charset(data: bytes) -> str | None:
    """The charset an HTML page declares in its first 4 KiB (``<meta charset>`` or ``http-equiv``)."""
    m = META_CHARSET.search(data[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


def is_binary(data: bytes) -> bool:
    """Git's heuristic: a NUL byte in the first 8 KiB (text in UTF-16/32 has a BOM and is decoded before this)."""
    return b"\0" in data[:8192]


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _detect(data: bytes) -> str | None:
    """charset-normalizer's best guess, except that windows-1252 wins when it reads the bytes as cleanly: single-
    byte Latin encodings are indistinguishable on short texts, and 1252 is by far the commonest on the web."""
    from charset_normalizer import from_bytes

    sample = data[:DETECT_BYTES]
    best = from_bytes(sample).best()
    if best is None:
        return None
    if best.encoding != "cp1252":
        western = from_bytes(sample, cp_isolation=["cp1252"]).best()
        if western is not None and western.chaos <= best.chaos + 0.02:
            return "cp1252"
    return _codec(best.encoding)


def decode(data: bytes, declared: str | None = None, *, html: bool = False) -> Decoded | None:
    """Decode ``data``: BOM, then the ``declared`` charset (e.g. from Content-Type), then ``<meta charset>`` when
    ``html``, then UTF-8, then detection. Returns None for binary data (NUL bytes without a UTF-16/32 BOM) or
    bytes no candidate decodes; a detected charset decodes with replacement if the sample it was chosen on does
    not cover a bad byte further on (``.replaced`` is then True)."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            text = data[len(bom):].decode(codec, "replace")
            return Decoded(text, codec, "\ufffd" in text)
    if is_binary(data):
        return None
    candidates = [declared] + ([meta_charset(data)] if html else [])
    for label in candidates:
        codec = _codec(label)
        if codec is None:
            continue
        if label.strip().lower() in WEAK_LABELS or codec in ("latin-1", "ascii", "cp1252"):
            utf8 = _strict(data, "utf-8")
            if utf8 is not None:
                return Decoded(utf8, "utf-8")
        text = _strict(data, codec)
        if text is not None:
            return Decoded(text, codec)
    text = _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8")
    codec = _detect(data)
    if codec is None:
        return None
    text = data.decode(codec, "replace")
    return Decoded(text, codec, "\ufffd" in text)


def normalize(text: str) -> str:
    """NFC, ``\\n`` newlines, no control characters but tab and newline, no trailing whitespace on any line, no
    blank lines at either end."""
    text = unicodedata.normalize("NFC", text)
    text = NEWLINES.sub("\n", text).translate(CONTROL).replace("\ufeff", "")
    text = TRAILING_SPACE.sub("", text)
    return text.strip("\n")


def without_xml_declaration(html: str) -> str:
    """An XHTML page as a str without its ``<?xml encoding=...?>`` line, which lxml refuses in decoded text."""
    return XML_DECLARATION.sub("", html, count=1)
