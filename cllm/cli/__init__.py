"""The ``cllm`` command: one subcommand per pipeline stage, one module per command group (data, train, model,
bench); here the parser is assembled and errors become exit codes.

Exit codes: 0 success; 2 usage error (bad arguments, or inputs that are missing or of the wrong kind); 1 failure
(I/O and system errors, and input files whose content is corrupt: ``BAD_DATA``); 130 after SIGINT and 143 after
SIGTERM, the stage having left whole files (and, where it can resume, its state). Errors are one line on stderr.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading

from .._version import __version__
from ..corpus.preprocess.shards import JsonlError
from ..formats import FormatError
from ..tokenizer.shards import ShardError
from . import bench, data, interop, model, train
from .args import Parser

__all__ = ["BAD_DATA", "build_parser", "main"]

BAD_DATA = (FormatError, JsonlError, ShardError)  # a corrupt input file: a failure (exit 1), not a usage error
# The function name a library message starts with ("generate: top_p must be ..."): the CLI names the command instead.
_LIBRARY_PREFIX = re.compile(r"[A-Za-z_]\w*: ")


class Terminated(SystemExit):
    """SIGTERM, raised where the program is (like KeyboardInterrupt for SIGINT) while ``main`` runs a command.

    A SystemExit, because asyncio (the crawler's event loop) lets only SystemExit and KeyboardInterrupt through
    its transports' and tasks' handlers: any other exception raised in a socket write is logged as a "fatal
    error" on that connection and the crawl goes on, the signal lost."""

    def __init__(self):
        super().__init__(143)


def build_parser() -> Parser:
    """The ``cllm`` parser with every subcommand."""
    parser = Parser(prog="cllm", description="Train small GPT models from source files or web pages.")
    parser.add_argument("--version", action="version", version=f"cllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (data, train, bench, model, interop):
        group.add_parsers(sub)
    return parser


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated inside the block (in the main thread; elsewhere signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Run ``cllm ARGV``; returns the exit code (a usage error in the arguments exits with 2 from argparse)."""
    args = build_parser().parse_args(argv)
    name = f"cllm {args.command}"
    try:
        with _sigterm_raises():
            return args.run(args)
    except BAD_DATA as e:
        print(f"{name}: failed: {_message(e)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:  # bad arguments or inputs, found after parsing
        print(f"{name}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: stopped by SIGINT", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{name}: stopped by SIGTERM", file=sys.stderr)
        return 143
    except (OSError, MemoryError, RuntimeError) as e:
        print(f"{name}: failed: {_message(e)}", file=sys.stderr)
        return 1


def _message(error: Exception) -> str:
    """The error's message without the library function's name it starts with (the CLI prints ``cllm CMD:``)."""
    text = str(error)
    match = _LIBRARY_PREFIX.match(text)
    return text[match.end():] if match else text


if __name__ == "__main__":
    sys.exit(main())
