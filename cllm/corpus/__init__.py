"""Stages 1-2: gather source files (``collect``) and web pages (``crawl``) into a corpus, and turn it into clean,
deduplicated documents (``preprocess``)."""

from .collect import collect
from .crawl import crawl
from .preprocess import preprocess

__all__ = ["collect", "crawl", "preprocess"]
