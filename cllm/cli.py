"""The ``cllm`` command: one subcommand per pipeline stage (more arrive with their stages).

Exit codes: 0 success, 2 usage error (bad arguments or inputs), 1 failure; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from ._version import __version__


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


def _tokenize(args) -> int:
    from .tokenize_stage import tokenize_corpus

    stats = tokenize_corpus(args.input, args.output, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
                            tokenizer=args.tokenizer, pattern=args.pattern, num_threads=args.threads,
                            shard_tokens=args.shard_tokens, progress=not args.quiet)
    t, v = stats["train"], stats["val"]
    print(f"tokenized {t['documents'] + v['documents']} documents ({t['bytes'] + v['bytes']:,} bytes) into "
          f"{t['tokens']:,} train + {v['tokens']:,} val tokens, {t['bytes_per_token']:.2f} bytes/token, "
          f"vocabulary {stats['vocab_size']:,} -> {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cllm", description="Train small GPT models from source files or web pages.")
    parser.add_argument("--version", action="version", version=f"cllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
