"""Document quality filters for preprocess; each returns the reason a document is dropped, or None.

Defaults follow published practice: for source code, The Stack's (BigCode) rules for minified or generated files
(a line over 1,000 characters, a mean line length over 100, under 25% alphanumeric characters); for prose (web
pages, text files) the repetition rules of DeepMind's Gopher corpus (MassiveText): too many duplicate lines, too
much text in duplicate lines, too much text in the most frequent 2-, 3- and 4-grams of words. Every threshold is
a field of ``Thresholds`` and a ``cllm preprocess`` option of the same name.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, fields

__all__ = ["Thresholds", "quality_issue", "threshold_help"]

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Thresholds:
    min_chars: int = 100  # shorter documents are dropped as too_short
    max_chars: int = 2_000_000  # longer ones as too_long
    max_line_chars: int = 1000  # code: any longer line means minified or generated
    max_mean_line_chars: float = 100.0  # code: mean line length above this means minified or generated
    min_alnum_fraction: float = 0.25  # code: fewer letters and digits than this means data, not code
    max_dup_line_fraction: float = 0.30  # prose: duplicate lines / lines
    max_dup_line_char_fraction: float = 0.20  # prose: characters in duplicate lines / characters
    max_top_2gram_fraction: float = 0.20  # prose: characters in the most frequent word 2-gram / characters
    max_top_3gram_fraction: float = 0.18
    max_top_4gram_fraction: float = 0.16
    near_dup_threshold: float = 0.8  # estimated Jaccard similarity of word 5-grams at which a document is a near-dup


HELP = {
    "min_chars": "drop documents shorter than this (characters)",
    "max_chars": "drop documents longer than this (characters)",
    "max_line_chars": "code: drop files with a longer line (minified or generated)",
    "max_mean_line_chars": "code: drop files whose mean line length is above this",
    "min_alnum_fraction": "code: drop files with a smaller fraction of letters and digits",
    "max_dup_line_fraction": "prose: drop pages with a larger fraction of duplicate lines",
    "max_dup_line_char_fraction": "prose: drop pages with a larger fraction of characters in duplicate lines",
    "max_top_2gram_fraction": "prose: drop pages whose most frequent word 2-gram covers more of the characters",
    "max_top_3gram_fraction": "prose: as above, for 3-grams",
    "max_top_4gram_fraction": "prose: as above, for 4-grams",
    "near_dup_threshold": "drop documents at least this similar (MinHash Jaccard of word 5-grams) to a kept one",
}


def threshold_help():
    """(option name, type, default, help) for every threshold, for the command line."""
    return [(f.name, type(f.default), f.default, HELP[f.name]) for f in fields(Thresholds)]


def _code_issue(text: str, lines: list[str], t: Thresholds) -> str | None:
    longest = max(map(len, lines))
    if longest > t.max_line_chars or len(text) / len(lines) > t.max_mean_line_chars:
        return "minified_or_generated"
    if sum(c.isalnum() for c in text) < t.min_alnum_fraction * len(text):
        return "minified_or_generated"
    return None


def _top_ngram_fraction(words: list[str], n: int, total_chars: int) -> float:
    if len(words) < n:
        return 0.0
    grams = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return count * sum(map(len, gram)) / total_chars


def _prose_issue(text: str, lines: list[str], t: Thresholds) -> str | None:
    nonblank = [line for line in lines if line.strip()]
    counts = Counter(nonblank)
    dup_lines = sum(c for c in counts.values() if c > 1)
    if nonblank and dup_lines / len(nonblank) > t.max_dup_line_fraction:
        return "repetitive"
    dup_chars = sum(len(line) * c for line, c in counts.items() if c > 1)
    if dup_chars > t.max_dup_line_char_fraction * len(text):
        return "repetitive"
    words = WORD.findall(text.lower())
    total = sum(map(len, words)) or 1
    for n, limit in ((2, t.max_top_2gram_fraction), (3, t.max_top_3gram_fraction), (4, t.max_top_4gram_fraction)):
        if _top_ngram_fraction(words, n, total) > limit:
            return "repetitive"
    return None


def quality_issue(text: str, kind: str, t: Thresholds) -> str | None:
    """Why a normalised document (kind "code", "text" or "html") is dropped, or None to keep it."""
    if not text.strip():
        return "empty"
    if len(text) < t.min_chars:
        return "too_short"
    if len(text) > t.max_chars:
        return "too_long"
    if text.count("\ufffd") > 0.01 * len(text):
        return "undecodable"
    lines = text.split("\n")
    return _code_issue(text, lines, t) if kind == "code" else _prose_issue(text, lines, t)
