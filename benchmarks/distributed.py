"""Data-parallel scaling on this machine: tokens/s of `cllm train` (preset small, the same global batch) with
1 rank x 1 and x N threads and with N ranks x 1 thread under mpiexec; and whether the loss curves are the same
bits. Prints a Markdown table (docs/distributed.md has the figures).

    python benchmarks/distributed.py [--ranks 2] [--steps 12] [--batch 16] [--micro 8] [--repeats 3]

Data: the Python files of this interpreter's standard library, tokenized once (vocabulary 8,192) into a temporary
folder. tokens/s: the median over the steps after the first two of metrics.jsonl's per-step figure, then the
median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def tokens_folder(root: Path) -> Path:
    from cllm.tokenizer.stage import tokenize_corpus

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    listing = root / "files.txt"
    listing.write_text("\n".join(map(str, files)) + "\n")
    tokenize_corpus([listing], root / "tokens", vocab_size=8192, val_fraction=0.02, progress=False)
    return root / "tokens"


def run(tokens: Path, out: Path, ranks: int, threads: int, args) -> list[dict]:
    """One training run; its step records."""
    argv = [sys.executable, "-m", "cllm", "train", "--data", str(tokens), "--model", "small", "--seq-len", "256",
            "--batch-size", str(args.batch), "--micro-batch", str(args.micro), "--max-steps", str(args.steps),
            "--eval-every", str(10 * args.steps), "--output", str(out), "--no-resume", "--quiet"]
    if ranks > 1:
        argv = ["mpiexec", "-n", str(ranks), "--oversubscribe", "--host", f"127.0.0.1:{ranks}", *argv]
    env = {k: v for k, v in os.environ.items() if k not in ("CLLM_NUM_THREADS", "OMP_NUM_THREADS")}
    subprocess.run(argv, check=True, timeout=1800, capture_output=True, env={**env, **MPI_ENV,
                                                                               "CLLM_NUM_THREADS": str(threads)})
    return [r for r in map(json.loads, (out.parent / "metrics.jsonl").read_text().splitlines()) if r["type"] == "step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tokens = tokens_folder(Path(tmp))
        cases = [(1, 1), (1, args.ranks), (args.ranks, 1)]
        rates, losses = {}, {}
        for repeat in range(args.repeats):
            for ranks, threads in cases:
                steps = run(tokens, Path(tmp) / f"r{ranks}t{threads}" / "m.cllm", ranks, threads, args)
                rates.setdefault((ranks, threads), []).append(statistics.median(r["tokens_per_s"] for r in steps[2:]))
                losses[(ranks, threads)] = [r["loss"] for r in steps]
    print(f"preset small, batch {args.batch} x 256 tokens, micro-batch {args.micro}, {args.steps} steps, "
          f"median of {args.repeats} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| ranks x threads | tokens/s | each run |\n|---|---|---|")
    for (ranks, threads), values in rates.items():
        print(f"| {ranks} x {threads} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
    same = len({tuple(v) for v in losses.values()}) == 1
    print(f"loss curves of the {len(cases)} cases: {'bitwise identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
