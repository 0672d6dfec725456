"""``cllm collect | crawl | preprocess | tokenize``: the data stages' options (their defaults read from the stages'
options dataclasses) and one-line summaries."""

from __future__ import annotations

from ..corpus.collect import CollectOptions, collect
from ..corpus.crawl.crawler import CrawlOptions, crawl
from ..corpus.crawl.fetch import Limits
from ..corpus.preprocess.filters import Thresholds, threshold_help
from ..corpus.preprocess.stage import PreprocessOptions, preprocess
from ..formats.container import MAGIC
from ..model import load
from ..tokenizer.bpe import PATTERNS
from ..tokenizer.stage import TokenizeOptions, tokenize_corpus
from .args import bytes_text, fraction, non_negative_float, non_negative_int, positive_float, positive_int

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    """Add the data stages' subcommands to ``sub`` (the subparsers of ``cllm``)."""
    _add_collect(sub)
    _add_crawl(sub)
    _add_preprocess(sub)
    _add_tokenize(sub)


def _add_collect(sub) -> None:
    p = sub.add_parser("collect", help="gather the text files of source trees into a corpus folder",
                       description="Walk source trees and copy (or reference) their text files into --output, with "
                                   "a sorted manifest.jsonl (source, path, bytes, sha256, encoding, status) and "
                                   "report.json. Skips version-control and build folders, binary, undecodable and "
                                   "oversized files; unreadable files are counted, never fatal.")
    p.add_argument("roots", nargs="+", metavar="ROOT", help="folders to walk")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--include", action="append", metavar="GLOBS",
                   help="comma-separated file name patterns to keep (a pattern with / matches the path relative "
                        "to the root); repeatable; default: common source and text extensions")
    p.add_argument("--exclude", action="append", metavar="GLOBS", help="patterns of files or folders to skip")
    p.add_argument("--max-bytes", type=positive_int, default=CollectOptions.max_bytes,
                   help=f"skip larger files (default {bytes_text(CollectOptions.max_bytes)})")
    p.add_argument("--gitignore", action="store_true", help="skip what the trees' .gitignore files ignore")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symbolic links (folders reached twice are skipped)")
    p.add_argument("--reference", action="store_true",
                   help="record the files' absolute paths instead of copying them")
    p.set_defaults(run=_collect)


def _collect(args) -> int:
    report = collect(args.roots, args.output, include=args.include, exclude=args.exclude, max_bytes=args.max_bytes,
                     gitignore=args.gitignore, follow_symlinks=args.follow_symlinks, copy=not args.reference)
    files = report["files"]
    skipped = ", ".join(f"{n} {k}" for k, n in files.items() if k != "ok") or "none"
    print(f"collected {files.get('ok', 0)} files ({report['bytes']:,} bytes) -> {args.output} "
          f"(skipped: {skipped})")
    return 0


def _add_crawl(sub) -> None:
    p = sub.add_parser("crawl", help="fetch web pages politely into WARC files",
                       description="Crawl from the URLs, within their hosts (and --allow-domain), obeying robots.txt "
                                   "and a per-host delay, into WARC files + manifest.jsonl + report.json in "
                                   "--output. Re-running with the same --output resumes the crawl.")
    o = CrawlOptions
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--max-pages", type=positive_int, default=o.max_pages,
                   help="requests, over all runs (default %(default)s)")
    p.add_argument("--max-depth", type=non_negative_int, default=o.max_depth,
                   help="links away from a start URL (default %(default)s)")
    p.add_argument("--allow-domain", action="append", default=list(o.allow_domains), metavar="DOMAIN",
                   help="also crawl this domain and its subdomains; repeatable")
    p.add_argument("--delay", type=non_negative_float, default=o.delay,
                   help=f"seconds between requests to one host; a larger robots.txt Crawl-delay wins "
                        f"(default {o.delay:g})")
    p.add_argument("--concurrency", type=positive_int, default=o.concurrency,
                   help="requests in flight in all (default %(default)s)")
    p.add_argument("--host-concurrency", type=positive_int, default=o.host_concurrency,
                   help="requests in flight per host (default %(default)s)")
    p.add_argument("--user-agent", default=o.user_agent, metavar="UA")
    p.add_argument("--timeout", type=positive_float, default=Limits.timeout,
                   help=f"connect and read timeout in seconds (default {Limits.timeout:g})")
    p.add_argument("--page-timeout", type=positive_float, default=Limits.page_timeout,
                   help=f"seconds for a whole response (default {Limits.page_timeout:g})")
    p.add_argument("--max-bytes", type=positive_int, default=Limits.max_bytes,
                   help=f"body size cap, before and after decompression (default {Limits.max_bytes:,})")
    p.add_argument("--retries", type=non_negative_int, default=Limits.retries,
                   help="retries on 429, 5xx, connection errors (default %(default)s)")
    p.add_argument("--ignore-robots", action="store_true", help="do not fetch or obey robots.txt (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_crawl)


def _crawl(args) -> int:
    limits = Limits(timeout=args.timeout, page_timeout=args.page_timeout, max_bytes=args.max_bytes,
                    retries=args.retries)
    options = CrawlOptions(max_pages=args.max_pages, max_depth=args.max_depth, allow_domains=tuple(args.allow_domain),
                           delay=args.delay, concurrency=args.concurrency, host_concurrency=args.host_concurrency,
                           user_agent=args.user_agent, ignore_robots=args.ignore_robots, limits=limits)
    report = crawl(args.urls, args.output, options, progress=not args.quiet)
    pages = report["pages"]
    reasons = ", ".join(f"{n} {k}" for k, n in report["reasons"].items()) or "none"
    print(f"crawled {pages.get('fetched', 0) + pages.get('truncated', 0)} pages ({report['bytes']:,} bytes) -> "
          f"{args.output} ({', '.join(f'{n} {k}' for k, n in pages.items())}; reasons: {reasons})")
    if report["unreachable_robots"]:
        print(f"robots.txt unreachable, hosts skipped for this run: {', '.join(report['unreachable_robots'])}")
    return 0


def _add_preprocess(sub) -> None:
    p = sub.add_parser("preprocess", help="extract, clean, filter and deduplicate documents into JSONL shards",
                       description="Turn a cllm collect or cllm crawl output (or manifests, or WARC files) into "
                                   "docs-NNNNN.jsonl shards of {text, source, meta} and report.json: HTML main "
                                   "text, decoding, Unicode NFC, cleaning, quality filters, exact and MinHash "
                                   "near-duplicate removal. Deterministic for any --workers.")
    o = PreprocessOptions
    p.add_argument("--input", required=True, action="append", metavar="DIR|MANIFEST|WARC",
                   help="a collect or crawl output folder, a manifest.jsonl, or a .warc(.gz) file; repeatable")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--workers", type=positive_int, default=o.workers, help="worker processes (default: the CPUs)")
    p.add_argument("--shard-bytes", type=positive_int, default=o.shard_bytes,
                   help=f"bytes per shard (default {bytes_text(o.shard_bytes)})")
    p.add_argument("--no-near-dedup", action="store_false", dest="near_dedup", default=o.near_dedup,
                   help="keep near-duplicates (exact ones still go)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, kind, default, text in threshold_help():
        convert = {int: positive_int, float: non_negative_float}[kind]
        p.add_argument("--" + name.replace("_", "-"), type=convert, default=default,
                       help=f"{text} (default {default})")
    p.set_defaults(run=_preprocess)


def _preprocess(args) -> int:
    thresholds = Thresholds(**{name: getattr(args, name) for name, *_ in threshold_help()})
    report = preprocess(args.input, args.output, workers=args.workers, thresholds=thresholds,
                        near_dedup=args.near_dedup, shard_bytes=args.shard_bytes, progress=not args.quiet)
    dropped = ", ".join(f"{n} {k}" for k, n in report["dropped"].items()) or "none"
    print(f"kept {report['kept']} of {report['documents']} documents ({report['chars_out']:,} characters) -> "
          f"{args.output} in {report['seconds']:.1f} s ({report['mb_per_s']} MB/s, {report['workers']} workers); "
          f"dropped: {dropped}")
    return 0


def _add_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="train a BPE tokenizer and write train/val token shards",
                       description="Train a byte-level BPE tokenizer on documents (or reuse one) and write "
                                   "train/val token shards, tokenizer.json and stats.json to --output.")
    o = TokenizeOptions
    p.add_argument("--input", required=True, action="append", metavar="DIR|FILELIST",
                   help="a folder of *.jsonl (cllm preprocess output) or of text files, a .jsonl file, or a file "
                        "listing text files one per line; repeatable")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--vocab-size", type=positive_int, default=o.vocab_size, help="default: %(default)s")
    p.add_argument("--val-fraction", type=fraction, default=o.val_fraction,
                   help="documents held out for validation (default: %(default)s)")
    p.add_argument("--tokenizer", default=o.tokenizer, metavar="FILE",
                   help="reuse this tokenizer (a tokenizer.json, or a .cllm model's, as cllm train --init needs) "
                        "instead of training one")
    p.add_argument("--pattern", choices=tuple(PATTERNS), default=o.pattern,
                   help="pre-tokenization pattern (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=o.num_threads,
                   help="kernel threads (default: the usable CPUs)")
    p.add_argument("--shard-tokens", type=positive_int, default=o.shard_tokens,
                   help="tokens per shard file (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_tokenize)


def _tokenizer(path):
    """--tokenizer: a tokenizer.json path as it is, or the tokenizer of a .cllm model."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            is_model = f.read(len(MAGIC)) == MAGIC
    except OSError as e:
        raise ValueError(f"--tokenizer {path}: {e.strerror}") from None
    if not is_model:
        return path
    tok = load(path).tokenizer
    if tok is None:
        raise ValueError(f"--tokenizer {path}: this model file has no tokenizer")
    return tok


def _tokenize(args) -> int:
    stats = tokenize_corpus(args.input, args.output, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                            tokenizer=_tokenizer(args.tokenizer), pattern=args.pattern, num_threads=args.threads,
                            shard_tokens=args.shard_tokens, progress=not args.quiet)
    t, v = stats["train"], stats["val"]
    print(f"tokenized {t['documents'] + v['documents']} documents ({t['bytes'] + v['bytes']:,} bytes) into "
          f"{t['tokens']:,} train + {v['tokens']:,} val tokens, {t['bytes_per_token']:.2f} bytes/token, "
          f"vocabulary {stats['vocab_size']:,} -> {args.output}")
    return 0
