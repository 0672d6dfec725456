"""``cllm bench``: the benchmark suites against their peers, as tables."""

from __future__ import annotations

import sys

from ..evaluate.bench import default_threads, run, to_text
from ..runtime.threads import effective_cpu_count
from .args import thread_counts

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    """Add ``bench`` to ``sub`` (the subparsers of ``cllm``)."""
    p = sub.add_parser("bench", help="run the benchmarks against their peers; tables as text, JSON and Markdown",
                       description="Run the pytest-benchmark suites of benchmarks/ (a source checkout with .[test]; "
                                   "install .[peers] to measure PyTorch, HF tokenizers and tiktoken beside cllm) "
                                   "and print one table of cllm vs its peers and a thread-scaling table of the "
                                   "training step; write them to --output as bench.json and bench.md.")
    p.add_argument("--threads", type=thread_counts, default=None, metavar="N,N,...",
                   help="thread counts to measure, e.g. 1,2,4 (default: 1, 2, 4, ... up to the CPUs and one "
                        "power of two above them)")
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and corpora, fewer rounds: a smoke test of a few minutes")
    p.add_argument("--output", default="bench", metavar="DIR", help="default: %(default)s")
    p.add_argument("-k", metavar="EXPR", help="only the benchmarks whose names match (pytest -k), e.g. train_step")
    p.set_defaults(run=_bench)


def _bench(args) -> int:
    threads = args.threads or default_threads(effective_cpu_count())
    report, code = run(threads, args.quick, args.output, keyword=args.k)
    print(to_text(report))
    print(f"wrote {args.output}/bench.json, bench.md and pytest-benchmark.json (every timing)")
    if code:
        print(f"cllm bench: failed: some benchmarks failed (pytest exit code {code}, its report is above); "
              "the tables hold the others", file=sys.stderr)
        return 1
    return 0
