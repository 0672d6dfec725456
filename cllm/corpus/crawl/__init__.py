"""The crawler: start URLs -> WARC files, politely (robots.txt, per-host delays) and within limits; resumable."""

from .crawler import CrawlOptions, crawl

__all__ = ["CrawlOptions", "crawl"]
