"""The preprocess stage: a collect or crawl output -> clean, deduplicated JSONL document shards + report.json.

Per document (``cllm.documents``, in worker processes): decode, HTML main text, normalise, quality filters,
hashes. In the main process, in input order: exact dedup (a hash of the normalised text), near-dedup (MinHash
LSH, ``cllm.minhash``), and the shard writer. Because every decision that depends on other documents is taken
in input order in one process, the output is byte-identical for any number of workers.

Workers are started with forkserver (spawn where there is none), never fork: a process that has run an OpenMP
region (cllm's kernels) deadlocks in a forked child. A worker that crashes (a segfault in a parser) costs its
batch a retry one document at a time, and the document that crashes again is dropped as ``worker_crash``.

Output: ``docs-NNNNN.jsonl`` shards (one ``{"text", "source", "meta"}`` object per line; what ``cllm tokenize``
reads), each written to a hidden temporary file and renamed when complete, so an interrupted run leaves only
whole shards (and a report saying it was interrupted); ``report.json`` with documents kept and dropped by reason.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from .documents import iter_items, process_batch, resolve_inputs
from .filters import Thresholds
from ...runtime.atomic import atomic_write
from .minhash import LSHIndex
from ...runtime.signals import StopSignals, ignore_sigint
from ...runtime.threads import resolve_num_threads

__all__ = ["preprocess"]

BATCH_BYTES = 1 << 20  # work sent to a worker at a time
BATCH_ITEMS = 256
DEFAULT_SHARD_BYTES = 256 << 20


class JsonlShards:
    """``docs-NNNNN.jsonl`` files of at most ~shard_bytes each, every one complete or absent."""

    def __init__(self, folder: Path, shard_bytes: int):
        self.folder, self.shard_bytes = folder, shard_bytes
        self.names, self.file, self.size = [], None, 0
        for old in folder.glob("docs-*.jsonl"):  # a previous run's shards would be read with ours
            old.unlink()

    def write(self, document: dict):
        if self.file is None:
            name = f"docs-{len(self.names):05d}.jsonl"
            self.names.append(name)
            self.file, self.size = open(self.folder / f".{name}.tmp", "w", encoding="utf-8"), 0
        line = json.dumps(document, ensure_ascii=False) + "\n"
        self.file.write(line)
        self.size += len(line)
        if self.size >= self.shard_bytes:
            self._finish()

    def _finish(self):
        self.file.close()
        name = self.names[-1]
        os.replace(self.folder / f".{name}.tmp", self.folder / name)
        self.file = None

    def close(self) -> list[str]:
        if self.file is not None:
            self._finish()
        return self.names


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


def preprocess(inputs, output, *, workers=None, thresholds: Thresholds = Thresholds(), near_dedup: bool = True,
               shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True) -> dict:
    """Preprocess ``inputs`` (collect/crawl output folders, manifests, WARC files) into ``output``; returns the
    report (also written to output/report.json)."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise ValueError("preprocess: give at least one --input")
    resolve_inputs(inputs)  # bad inputs are usage errors before any work
    workers = resolve_num_threads(workers, "preprocess: workers")
    if not 0.0 < thresholds.near_dup_threshold <= 1.0:
        raise ValueError(f"preprocess: near_dup_threshold must be in (0, 1] (got {thresholds.near_dup_threshold})")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"preprocess: --output {output} exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    problems, dropped, seen, index = Counter(), Counter(), set(), LSHIndex(thresholds.near_dup_threshold)
    shards = JsonlShards(output, shard_bytes)
    stats = {"documents": 0, "kept": 0, "bytes_in": 0, "chars_out": 0}
    errors = []
    interrupted = False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="doc", desc="preprocessing", dynamic_ncols=True)
    with StopSignals() as stop:
        try:
            for r in _results(_batches(iter_items(inputs, problems)), workers, thresholds):
                if stop.signal:  # Ctrl-C / SIGTERM: stop between documents, every shard whole
                    interrupted = True
                    break
                stats["documents"] += 1
                stats["bytes_in"] += r["bytes"]
                if bar is not None:
                    bar.update(1)
                drop = r["drop"]
                if drop is None and r["hash"] in seen:
                    drop = "exact_duplicate"
                elif drop is None and near_dedup and not index.add_if_new(r["signature"]):
                    drop = "near_duplicate"
                if drop is not None:
                    dropped[drop] += 1
                    if "error" in r and len(errors) < 20:
                        errors.append(f"{r['source']}: {r['error']}")
                    continue
                seen.add(r["hash"])
                shards.write({"text": r["text"], "source": r["source"], "meta": r["meta"]})
                stats["kept"] += 1
                stats["chars_out"] += len(r["text"])
        finally:
            if bar is not None:
                bar.close()
            names = shards.close()
            seconds = time.perf_counter() - start
            report = {**stats, "dropped": dict(sorted(dropped.items())), "problems": dict(sorted(problems.items())),
                      "errors": errors, "shards": names, "workers": workers, "seconds": round(seconds, 3),
                      "mb_per_s": round(stats["bytes_in"] / 1e6 / max(seconds, 1e-9), 2),
                      "thresholds": asdict(thresholds), "near_dedup": near_dedup, "interrupted": interrupted,
                      "inputs": [str(p) for p in inputs]}
            with atomic_write(output / "report.json", "w") as f:
                f.write(json.dumps(report, indent=2) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    if not stats["documents"]:
        raise ValueError(f"preprocess: no documents in {', '.join(map(str, inputs))} "
                         f"(problems: {dict(problems) or 'none'})")
    if not stats["kept"]:
        raise ValueError(f"preprocess: every document was dropped ({dict(dropped)}); see {output / 'report.json'}")
    return report
