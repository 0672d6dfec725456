"""The ``cllm`` command: one subcommand per pipeline stage (more arrive with their stages).

Exit codes: 0 success, 2 usage error (bad arguments or inputs), 1 failure; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from .._version import __version__
from ..model.config import PRESETS
from ..pipeline import PipelineOptions  # its defaults are the command's (the module imports little)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``cllm crawl: error: argument --delay: ...``); --help has the rest."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (got {text!r})") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (got {text!r})")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (got {text!r})") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 (got {text!r})")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 (got {text!r})")
    return value


def _collect(args) -> int:
    from ..corpus.collect import collect

    report = collect(args.roots, args.output, include=args.include, exclude=args.exclude, max_bytes=args.max_bytes,
                     gitignore=args.gitignore, follow_symlinks=args.follow_symlinks, copy=not args.reference)
    files = report["files"]
    skipped = ", ".join(f"{n} {k}" for k, n in files.items() if k != "ok") or "none"
    print(f"collected {files.get('ok', 0)} files ({report['bytes']:,} bytes) -> {args.output} "
          f"(skipped: {skipped})")
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (got {text!r})")
    return value


def _crawl(args) -> int:
    from ..corpus.crawl.crawler import CrawlOptions, crawl
    from ..corpus.crawl.fetch import Limits

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


def _preprocess(args) -> int:
    from ..corpus.preprocess.filters import Thresholds, threshold_help
    from ..corpus.preprocess.stage import preprocess

    thresholds = Thresholds(**{name: getattr(args, name) for name, *_ in threshold_help()})
    report = preprocess(args.input, args.output, workers=args.workers, thresholds=thresholds,
                        near_dedup=not args.no_near_dedup, shard_bytes=args.shard_bytes, progress=not args.quiet)
    dropped = ", ".join(f"{n} {k}" for k, n in report["dropped"].items()) or "none"
    print(f"kept {report['kept']} of {report['documents']} documents ({report['chars_out']:,} characters) -> "
          f"{args.output} in {report['seconds']:.1f} s ({report['mb_per_s']} MB/s, {report['workers']} workers); "
          f"dropped: {dropped}")
    return 0


def _tokenize(args) -> int:
    from ..tokenizer.stage import tokenize_corpus

    stats = tokenize_corpus(args.input, args.output, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                            tokenizer=args.tokenizer, pattern=args.pattern, num_threads=args.threads,
                            shard_tokens=args.shard_tokens, progress=not args.quiet)
    t, v = stats["train"], stats["val"]
    print(f"tokenized {t['documents'] + v['documents']} documents ({t['bytes'] + v['bytes']:,} bytes) into "
          f"{t['tokens']:,} train + {v['tokens']:,} val tokens, {t['bytes_per_token']:.2f} bytes/token, "
          f"vocabulary {stats['vocab_size']:,} -> {args.output}")
    return 0


def _train(args) -> int:
    from ..model.config import ModelConfig
    from ..train.distributed import world
    from ..train.trainer import train

    options = {k: getattr(args, k) for k in (
        "batch_size", "seq_len", "epochs", "max_steps", "time_budget", "lr", "min_lr", "warmup",
        "schedule", "weight_decay", "grad_clip", "micro_batch", "eval_every", "eval_tokens", "patience",
        "checkpoint_every", "keep_checkpoints", "output", "resume", "seed")}
    if args.config:
        try:
            options["model"] = ModelConfig(**json.loads(open(args.config, encoding="utf-8").read()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"--config {args.config}: expected a JSON object of ModelConfig fields ({e})") from None
    else:
        options["model"] = args.model
    if args.time_budget is not None:
        options["time_budget"] = args.time_budget * 60
    options["grad_clip"] = args.grad_clip or None  # 0: no clipping
    options["num_threads"] = args.threads
    result = train(args.data, progress=not args.quiet, **options)
    code = {"SIGINT": 130, "SIGTERM": 143}.get(result.stopped, 0)
    if world().rank:  # under mpiexec rank 0 speaks for all
        return code
    if code:
        print(f"cllm train: stopped by {result.stopped} at step {result.steps}; checkpoint written to "
              f"{result.checkpoint}. Run the same command again to resume.", file=sys.stderr)
        return code
    val = "" if result.val_loss is None else (f", val loss {result.val_loss:.4f} (perplexity {result.perplexity:.2f}, "
                                              f"{result.bits_per_byte:.4f} bits/byte)")
    print(f"trained {result.steps} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
          f"({result.tokens_per_second:,.0f} tokens/s; stopped: {result.stopped}): train loss "
          f"{result.train_loss:.4f}{val} -> {result.output}; report {result.report}")
    return 0


def _pipeline(args) -> int:
    from ..pipeline import pipeline, print_summary

    options = PipelineOptions(sources=tuple(args.source or ()), workdir=args.workdir, time_budget=args.budget * 60,
                              num_threads=args.threads, vocab_size=args.vocab_size, model=args.model,
                              progress=not args.quiet)
    print_summary(pipeline(options))
    return 0


def _thread_counts(text: str) -> list[int]:
    from ..evaluate.bench import parse_threads

    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bench(args) -> int:
    from ..evaluate.bench import default_threads, run, to_text
    from ..runtime.threads import effective_cpu_count

    threads = args.threads or default_threads(effective_cpu_count())
    report, code = run(threads, args.quick, args.output, keyword=args.k)
    print(to_text(report))
    print(f"wrote {args.output}/bench.json, bench.md and pytest-benchmark.json (every timing)")
    if code:
        print(f"cllm bench: failed: some benchmarks failed (pytest exit code {code}, its report is above); "
              "the tables hold the others", file=sys.stderr)
        return 1
    return 0


def _info(args) -> int:
    from ..model import read

    f = read(args.file, mmap=True, verify=not args.no_verify)
    summary = _describe(f, verified=not args.no_verify)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    m, c = summary["model"], summary["model"]["config"]
    print(f"{f.path}: .cllm format {summary['format_version']}, {summary['file_bytes']:,} bytes")
    print(f"model:      GPT-2, {m['parameters']:,} parameters ({m['parameter_bytes'] / 1e6:.1f} MB float32): "
          f"vocab {c['vocab_size']}, context {c['context_length']}, d_model {c['d_model']}, {c['n_layers']} layers, "
          f"{c['n_heads']} heads, MLP {c['mlp_ratio']}x")
    t = summary["tokenizer"]
    print("tokenizer:  none" if t is None else
          f"tokenizer:  byte-level BPE, {t['vocab_size']:,} tokens ({t['merges']:,} merges), pattern {t['pattern']}, "
          f"special {', '.join(t['special_tokens']) or 'none'}")
    training = summary["training"]
    print("training:   " + (", ".join(f"{k} {v}" for k, v in training.items()) if training else "no summary"))
    if summary["checkpoint"]:
        ck = summary["checkpoint"]
        opt = f"AdamW at step {ck['optimizer_step']}" if ck["optimizer_step"] is not None else "no optimizer state"
        print(f"checkpoint: {opt}; trainer state: {', '.join(ck['trainer_keys']) or 'none'}")
    print(f"tensors:    {summary['tensors']}, checksums {summary['checksums']}")
    return 0


def _describe(f, verified: bool) -> dict:
    """What `cllm info` shows, as a JSON-able dict."""
    model, tok = f.model, f.model.tokenizer
    checkpoint = f.header.get("checkpoint") or {}
    return {
        "path": str(f.path), "format_version": ".".join(map(str, f.version)), "file_bytes": f.path.stat().st_size,
        "model": {"config": model.config.to_dict(), "parameters": model.n_params, "parameter_bytes": 4 * model.n_params},
        "tokenizer": None if tok is None else {"vocab_size": tok.vocab_size, "merges": len(tok.merges),
                                               "pattern": tok.pattern, "special_tokens": list(tok.special_tokens)},
        "training": model.training_summary,
        "checkpoint": {"optimizer_step": f.optimizer["step"] if f.optimizer else None,
                       "trainer_keys": sorted(f.trainer_state or {})} if checkpoint else None,
        "tensors": len(f.header["tensors"]), "checksums": "OK" if verified else "not verified (--no-verify)",
    }


def _export(args) -> int:
    from ..model.export import export

    written = export(args.file, args.directory, to=args.to)
    print(f"exported {args.file} -> " + ", ".join(str(p) for p in written))
    return 0


def _load(args):
    """The model of args.file, with args.threads applied."""
    from ..model import load
    from ..runtime.threads import set_num_threads

    if args.threads is not None:
        set_num_threads(args.threads)
    return load(args.file)


def _generate(args) -> int:
    model = _load(args)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    repetition_penalty=args.repetition_penalty, seed=args.seed)
    if args.stream:
        for piece in model.generate_stream(args.prompt, args.max_tokens, **sampling):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(model.generate(args.prompt, args.max_tokens, **sampling))
    return 0


def _eval(args) -> int:
    from ..evaluate import evaluate

    r = evaluate(_load(args), args.data if len(args.data) > 1 else args.data[0], max_tokens=args.max_tokens,
                 batch_size=args.batch_size)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    print(f"{args.file} on {r['data']}: {r['tokens']:,} tokens, {r['bytes']:,} bytes ({r['seconds']:.1f} s)")
    print(f"loss         {r['loss']:.4f} nats/token   perplexity {r['perplexity']:.2f}")
    print(f"bits/byte    {fmt(r['bits_per_byte'])}   (same bytes: xz -9e {fmt(r['xz_bits_per_byte'])}, "
          f"gzip -9 {fmt(r['gzip_bits_per_byte'])})")
    print(f"accuracy     top-1 {r['top1']:.1%}   top-5 {r['top5']:.1%}")
    return 0


def _complete(args) -> int:
    from ..evaluate import complete

    r = complete(_load(args), args.source, positions=args.positions, seed=args.seed, max_new_tokens=args.max_tokens,
                 examples=args.examples)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{args.file}: {r['positions']} held-out lines, exact match {r['exact_match']:.1%}, "
          f"character similarity {r['similarity']:.1%} ({r['seconds']:.1f} s)")
    for case in r["examples"]:
        print(f"\n{case['file']}:{case['line']}  (similarity {case['similarity']:.2f})")
        print(f"  expected:  {case['target']}")
        print(f"  predicted: {case['predicted']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cllm", description="Train small GPT models from source files or web pages.")
    parser.add_argument("--version", action="version", version=f"cllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    p.add_argument("--max-bytes", type=_positive_int, default=1 << 20, help="skip larger files (default 1 MiB)")
    p.add_argument("--gitignore", action="store_true", help="skip what the trees' .gitignore files ignore")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="follow symbolic links (folders reached twice are skipped)")
    p.add_argument("--reference", action="store_true",
                   help="record the files' absolute paths instead of copying them")
    p.set_defaults(run=_collect)

    from ..corpus.crawl.crawler import USER_AGENT

    p = sub.add_parser("crawl", help="fetch web pages politely into WARC files",
                       description="Crawl from the URLs, within their hosts (and --allow-domain), obeying robots.txt "
                                   "and a per-host delay, into WARC files + manifest.jsonl + report.json in "
                                   "--output. Re-running with the same --output resumes the crawl.")
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--max-pages", type=_positive_int, default=1000, help="requests, over all runs (default 1000)")
    p.add_argument("--max-depth", type=_non_negative_int, default=5, help="links away from a start URL (default 5)")
    p.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                   help="also crawl this domain and its subdomains; repeatable")
    p.add_argument("--delay", type=_non_negative_float, default=1.0,
                   help="seconds between requests to one host; a larger robots.txt Crawl-delay wins (default 1)")
    p.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight in all (default 8)")
    p.add_argument("--host-concurrency", type=_positive_int, default=1, help="requests in flight per host (default 1)")
    p.add_argument("--user-agent", default=USER_AGENT, metavar="UA")
    p.add_argument("--timeout", type=_positive_float, default=10.0,
                   help="connect and read timeout in seconds (default 10)")
    p.add_argument("--page-timeout", type=_positive_float, default=30.0,
                   help="seconds for a whole response (default 30)")
    p.add_argument("--max-bytes", type=_positive_int, default=5_000_000,
                   help="body size cap, before and after decompression (default 5,000,000)")
    p.add_argument("--retries", type=_non_negative_int, default=2, help="retries on 429, 5xx, connection errors")
    p.add_argument("--ignore-robots", action="store_true", help="do not fetch or obey robots.txt (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_crawl)

    from ..corpus.preprocess.filters import threshold_help

    p = sub.add_parser("preprocess", help="extract, clean, filter and deduplicate documents into JSONL shards",
                       description="Turn a cllm collect or cllm crawl output (or manifests, or WARC files) into "
                                   "docs-NNNNN.jsonl shards of {text, source, meta} and report.json: HTML main "
                                   "text, decoding, Unicode NFC, cleaning, quality filters, exact and MinHash "
                                   "near-duplicate removal. Deterministic for any --threads.")
    p.add_argument("--input", required=True, action="append", metavar="DIR|MANIFEST|WARC",
                   help="a collect or crawl output folder, a manifest.jsonl, or a .warc(.gz) file; repeatable")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: the CPUs)")
    p.add_argument("--shard-bytes", type=_positive_int, default=256 << 20, help="bytes per shard (default 256 MiB)")
    p.add_argument("--no-near-dedup", action="store_true", help="keep near-duplicates (exact ones still go)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, kind, default, text in threshold_help():
        convert = {int: _positive_int, float: _non_negative_float}[kind]
        p.add_argument("--" + name.replace("_", "-"), type=convert, default=default,
                       help=f"{text} (default {default})")
    p.set_defaults(run=_preprocess)

    p = sub.add_parser("tokenize", help="train a BPE tokenizer and write train/val token shards",
                       description="Train a byte-level BPE tokenizer on documents (or reuse one) and write "
                                   "train/val token shards, tokenizer.json and stats.json to --output.")
    p.add_argument("--input", required=True, action="append", metavar="DIR|FILELIST",
                   help="a folder of *.jsonl (cllm preprocess output) or of text files, a .jsonl file, or a file "
                        "listing text files one per line; repeatable")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--vocab-size", type=_positive_int, default=50_000)
    p.add_argument("--val-fraction", type=_fraction, default=0.05)
    p.add_argument("--tokenizer", metavar="FILE", help="reuse this tokenizer.json instead of training one")
    p.add_argument("--pattern", choices=("gpt2", "cl100k"), default="gpt2", help="pre-tokenization pattern")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--shard-tokens", type=_positive_int, default=100_000_000, help="tokens per shard file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_tokenize)

    p = sub.add_parser("train", help="train a GPT on token shards (the output of cllm tokenize)",
                       description="Train a GPT-2 style model on the token shards in --data, with warmup + cosine "
                                   "learning rate, checkpoints every so often (resumed automatically), metrics.jsonl, "
                                   "and report.md + loss.png beside --output. Under mpiexec -n R the R ranks train "
                                   "data-parallel (docs/distributed.md).")
    p.add_argument("--data", required=True, metavar="DIR", help="output folder of cllm tokenize")
    p.add_argument("--output", default="model.cllm", metavar="FILE", help="the trained model (default: %(default)s)")
    p.add_argument("--model", choices=tuple(PRESETS), default="small",
                   help="preset size (vocabulary from the data, context = --seq-len; default: %(default)s)")
    p.add_argument("--config", metavar="JSON", help="a JSON file of ModelConfig fields instead of --model")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="kernel threads (default: the usable CPUs; under mpiexec, this rank's share of its node's)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="sequences per step, all ranks together "
                                                                         "(default: %(default)s)")
    p.add_argument("--micro-batch", type=_positive_int, default=None, help="sequences per forward/backward "
                                                                          "(default: chosen to fit memory)")
    p.add_argument("--seq-len", type=_positive_int, default=512)
    p.add_argument("--epochs", type=_positive_int, default=1)
    p.add_argument("--max-steps", type=_positive_int, default=None)
    p.add_argument("--time-budget", type=_positive_float, default=None, metavar="MINUTES")
    p.add_argument("--lr", type=_positive_float, default=6e-4)
    p.add_argument("--min-lr", type=float, default=None, help="default: lr / 10")
    p.add_argument("--warmup", type=int, default=None, help="steps (default: 5%% of the run, at most 1000)")
    p.add_argument("--schedule", choices=("cosine", "linear", "constant", "wsd"), default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--eval-every", type=_positive_int, default=None, help="steps (default: every tenth of the run)")
    p.add_argument("--eval-tokens", type=_positive_int, default=32_768)
    p.add_argument("--patience", type=_positive_int, default=None, help="stop after this many evaluations "
                                                                       "without a better validation loss")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None,
                   help="steps (default: every tenth of the run)")
    p.add_argument("--keep-checkpoints", type=_positive_int, default=3)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the newest checkpoint beside --output (default); --no-resume starts over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("pipeline", help="the main job: collect, preprocess, tokenize, train, evaluate, sample",
                       description="Run every stage on --source (default: the Python standard library's sources) "
                                   "in --workdir within --budget minutes; stages that are up to date are skipped, "
                                   "an interrupted run continues where it stopped.")
    p.add_argument("--source", action="append", metavar="DIR|URL", help="repeatable (default: the standard library)")
    p.add_argument("--workdir", default="cllm-run", metavar="DIR", help="default: %(default)s")
    p.add_argument("--budget", type=_positive_float, default=15.0, metavar="MINUTES",
                   help="the whole run's time (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--vocab-size", type=_positive_int, default=PipelineOptions.vocab_size,
                   help="default: the tuned %(default)s")
    p.add_argument("--model", choices=tuple(PRESETS), default=PipelineOptions.model,
                   help="preset size (default: the tuned %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_pipeline)

    p = sub.add_parser("bench", help="run the benchmarks against their peers; tables as text, JSON and Markdown",
                       description="Run the pytest-benchmark suites of benchmarks/ (a source checkout with .[test]; "
                                   "install .[peers] to measure PyTorch, HF tokenizers and tiktoken beside cllm) "
                                   "and print one table of cllm vs its peers and a thread-scaling table of the "
                                   "training step; write them to --output as bench.json and bench.md.")
    p.add_argument("--threads", type=_thread_counts, default=None, metavar="N,N,...",
                   help="thread counts to measure, e.g. 1,2,4 (default: 1, 2, 4, ... up to the CPUs and one "
                        "power of two above them)")
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and corpora, fewer rounds: a smoke test of a few minutes")
    p.add_argument("--output", default="bench", metavar="DIR", help="default: %(default)s")
    p.add_argument("-k", metavar="EXPR", help="only the benchmarks whose names match (pytest -k), e.g. train_step")
    p.set_defaults(run=_bench)

    p = sub.add_parser("info", help="describe a .cllm file and verify its checksums",
                       description="Show a .cllm file's format version, model config and size, tokenizer, training "
                                   "summary and checkpoint contents, after checking its structure and checksums.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the checksums (which read the whole file)")
    p.set_defaults(run=_info)

    p = sub.add_parser("export", help="export a .cllm model to safetensors + config.json + tokenizer.json",
                       description="Write the model's weights (state-dict names, nn.Linear layouts) as "
                                   "model.safetensors, its config as config.json and its tokenizer as tokenizer.json.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--to", choices=("safetensors",), default="safetensors", help="output format")
    p.add_argument("directory", metavar="DIR")
    p.set_defaults(run=_export)

    p = sub.add_parser("generate", help="generate text from a prompt",
                       description="Print the text a .cllm model generates after --prompt (the prompt itself is not "
                                   "repeated). Temperature 0 is greedy; a fixed --seed reproduces the output.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--prompt", required=True, help="the text to continue ('' starts a new document)")
    p.add_argument("--max-tokens", type=_non_negative_int, default=256)
    p.add_argument("--temperature", type=_non_negative_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=_positive_int, default=None)
    p.add_argument("--top-p", type=_positive_float, default=None, help="in (0, 1]")
    p.add_argument("--repetition-penalty", type=_positive_float, default=1.0, help="1 = none")
    p.add_argument("--seed", type=_non_negative_int, default=None)
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.set_defaults(run=_generate)

    p = sub.add_parser("eval", help="validation loss, perplexity, bits per byte and accuracy",
                       description="Evaluate a .cllm model on the val shards of a `cllm tokenize` folder or on text "
                                   "files: loss, perplexity, bits per byte (beside xz -9e and gzip -9 on the same "
                                   "bytes), top-1 and top-5 next-token accuracy.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="a tokens/ folder (its val_*.bin), or text files and folders of them")
    p.add_argument("--max-tokens", type=_positive_int, default=None, help="predict at most this many tokens")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="windows per forward pass")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.set_defaults(run=_eval)

    p = sub.add_parser("complete", help="complete held-out lines of source files",
                       description="At --positions line starts chosen at random (--seed) in the source files, "
                                   "complete the line greedily from the code before it; report the exact-match rate "
                                   "and the character similarity, with examples.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--source", required=True, action="append", metavar="PATH",
                   help="a source file, or a folder (its *.py files); repeatable")
    p.add_argument("--positions", type=_positive_int, default=20)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--max-tokens", type=_positive_int, default=64, help="longest completion, in tokens")
    p.add_argument("--examples", type=_non_negative_int, default=5, help="cases to print")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.set_defaults(run=_complete)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits with code 2 here, after one line on stderr
    try:
        return args.run(args)
    except (ValueError, TypeError) as e:  # bad arguments or inputs, found after parsing
        print(f"cllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cllm {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError, RuntimeError) as e:
        print(f"cllm {args.command}: failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
