"""The preprocess stage: a collect or crawl output -> clean, deduplicated JSONL document shards + report.json.

Per document (``cllm.documents``, in worker processes): decode, HTML main text, normalise, quality filters,
hashes. In the main process, in input order: exact dedup (a hash of the normalised text), near-dedup (MinHash
LSH, ``cllm.minhash``), and the shard writer. Because every decision that depends on other documents is taken
in input order in one process, the output is byte-identical for any number of workers.

Workers are started with forkserver (spawn where there is none), never fork: a process that has run an OpenMP
region (cllm's kernels) deadlocks in a forked child. A worker that crashes (a segfault in a parser) costs its
batch a retry one document at a time, and the document that crashes again is dropped as ``worker_crash``.

Output: ``docs-NNNNN.jsonl`` shards (one ``{"text", "source", "meta"}`` object per line, written and read by
``shards.py``; what ``cllm tokenize`` reads), each written with ``atomic_write``, so an interrupted run leaves only
whole shards (and a report saying it was interrupted); ``report.json`` with documents kept and dropped by reason.
SIGINT and SIGTERM stop the run between two documents; once the files are whole the signal is raised again.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from ...runtime.atomic import atomic_write
from ...runtime.checks import integer
from ...runtime.progress import progress_bar
from ...runtime.signals import StopSignals, ignore_sigint
from ...runtime.threads import resolve_num_threads
from .documents import iter_items, process_batch, resolve_inputs
from .filters import Thresholds
from .minhash import LSHIndex
from .shards import JsonlShards

__all__ = ["PreprocessOptions", "preprocess"]

BATCH_BYTES = 1 << 20  # work sent to a worker at a time
BATCH_ITEMS = 256
DEFAULT_SHARD_BYTES = 256 << 20


def _batches(items):
    batch, size = [], 0
    for item in items:
        batch.append(item)
        size += len(item[3]) if isinstance(item[3], bytes) else 4096
        if size >= BATCH_BYTES or len(batch) >= BATCH_ITEMS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _pool(workers: int) -> ProcessPoolExecutor:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=ignore_sigint)


def _results(batches, workers: int, thresholds: Thresholds):
    """Every item's result, in input order; batches run in up to ``workers`` processes (inline for 1)."""
    if workers == 1:
        for batch in batches:
            yield from process_batch(batch, thresholds)
        return
    pool = _pool(workers)
    pending = deque()
    try:
        for batch in batches:
            pending.append((batch, pool.submit(process_batch, batch, thresholds)))
            while len(pending) > 2 * workers:
                pool = yield from _drain_one(pending, pool, workers, thresholds)
        while pending:
            pool = yield from _drain_one(pending, pool, workers, thresholds)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _drain_one(pending: deque, pool, workers: int, thresholds: Thresholds):
    batch, future = pending.popleft()
    try:
        yield from future.result()
        return pool
    except BrokenProcessPool:
        pass
    pool.shutdown(wait=False, cancel_futures=True)  # a worker died: isolate the document that killed it
    single = _pool(1)
    for item in batch:
        try:
            yield from single.submit(process_batch, [item], thresholds).result()
        except BrokenProcessPool:
            yield {"source": item[1], "meta": item[2], "text": None, "bytes": 0, "drop": "worker_crash"}
            single.shutdown(wait=False, cancel_futures=True)
            single = _pool(1)
    single.shutdown(wait=False, cancel_futures=True)
    pool = _pool(workers)
    for i, (b, _) in enumerate(pending):  # the batches that were in flight in the dead pool
        pending[i] = (b, pool.submit(process_batch, b, thresholds))
    return pool


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """``preprocess``'s options, with their defaults: worker processes (None: the usable CPUs), the quality filters'
    thresholds, near-duplicate removal (exact duplicates always go), bytes per shard, a progress bar."""

    workers: int | None = None
    thresholds: Thresholds = Thresholds()
    near_dedup: bool = True
    shard_bytes: int = DEFAULT_SHARD_BYTES
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.thresholds, Thresholds):
            raise ValueError(f"preprocess: thresholds must be a Thresholds (got {self.thresholds!r})")
        if not 0.0 < self.thresholds.near_dup_threshold <= 1.0:
            raise ValueError(f"preprocess: near_dup_threshold must be in (0, 1] (got "
                             f"{self.thresholds.near_dup_threshold})")
        integer(self.shard_bytes, "preprocess: shard_bytes", 1)


def preprocess(inputs, output, **options) -> dict:
    """Preprocess ``inputs`` (collect/crawl output folders, manifests, WARC files) into ``output``; returns the
    report (also written to output/report.json). Options: see PreprocessOptions. After SIGINT or SIGTERM it stops
    between two documents, writes whole shards and the report, and then lets the signal act."""
    try:
        opts = PreprocessOptions(**options)
    except TypeError as e:
        raise TypeError(f"preprocess: {e}".replace("PreprocessOptions.__init__() ", "")) from None
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise ValueError("preprocess: give at least one input")
    resolve_inputs(inputs)  # bad inputs are usage errors before any work
    workers = resolve_num_threads(opts.workers, "preprocess: workers")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"preprocess: output {output} exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    problems, run = Counter(), _Run(opts)
    with StopSignals() as stop:
        try:
            run.documents(_results(_batches(iter_items(inputs, problems)), workers, opts.thresholds), output, stop)
        finally:
            seconds = time.perf_counter() - start
            report = {**run.stats, "dropped": dict(sorted(run.dropped.items())),
                      "problems": dict(sorted(problems.items())), "errors": run.errors, "shards": run.names,
                      "workers": workers, "seconds": round(seconds, 3),
                      "mb_per_s": round(run.stats["bytes_in"] / 1e6 / max(seconds, 1e-9), 2),
                      "thresholds": asdict(opts.thresholds), "near_dedup": opts.near_dedup,
                      "interrupted": stop.signal is not None, "inputs": [str(p) for p in inputs]}
            with atomic_write(output / "report.json", "w") as f:
                f.write(json.dumps(report, indent=2) + "\n")
    if stop.signal:
        signal.raise_signal(getattr(signal, stop.signal))  # now that every file is whole
    if not run.stats["documents"]:
        raise ValueError(f"preprocess: no documents in {', '.join(map(str, inputs))} "
                         f"(problems: {dict(problems) or 'none'})")
    if not run.stats["kept"]:
        raise ValueError(f"preprocess: every document was dropped ({dict(run.dropped)}); see "
                         f"{output / 'report.json'}")
    return report


class _Run:
    """The main process's part, in input order: exact and near dedup, the shard writer, the counts."""

    def __init__(self, opts: PreprocessOptions):
        self.opts = opts
        self.stats = {"documents": 0, "kept": 0, "bytes_in": 0, "chars_out": 0}
        self.dropped, self.errors, self.names = Counter(), [], []
        self.seen, self.index = set(), LSHIndex(opts.thresholds.near_dup_threshold)

    def documents(self, results, output: Path, stop: StopSignals) -> None:
        """Keep or drop each result; stops between documents on a signal (Ctrl-C / SIGTERM), every shard whole."""
        shards = JsonlShards(output, self.opts.shard_bytes)
        bar = progress_bar(self.opts.progress, unit="doc", desc="preprocessing")
        try:
            for r in results:
                if stop.signal:
                    break
                self._document(r, shards)
                bar.update(1)
        finally:
            bar.close()
            self.names = shards.close()

    def _document(self, r: dict, shards: JsonlShards) -> None:
        self.stats["documents"] += 1
        self.stats["bytes_in"] += r["bytes"]
        drop = r["drop"]
        if drop is None and r["hash"] in self.seen:
            drop = "exact_duplicate"
        elif drop is None and self.opts.near_dedup and not self.index.add_if_new(r["signature"]):
            drop = "near_duplicate"
        if drop is not None:
            self.dropped[drop] += 1
            if "error" in r and len(self.errors) < 20:
                self.errors.append(f"{r['source']}: {r['error']}")
            return
        self.seen.add(r["hash"])
        shards.write({"text": r["text"], "source": r["source"], "meta": r["meta"]})
        self.stats["kept"] += 1
        self.stats["chars_out"] += len(r["text"])
