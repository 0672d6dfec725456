"""The tokenize stage: documents -> a trained (or given) tokenizer + train/val token shards + stats.json.

Documents come from, per input path: a directory of ``*.jsonl`` shards (the output of ``cllm preprocess``: one
JSON object with a "text" field per line), a single ``.jsonl`` file, a directory of text files (each file one
document), or a file list (any other file: one path per line; blank lines and lines starting with # are skipped).
Each document goes to the validation set when a hash of its bytes falls under ``val_fraction``: deterministic,
independent of the order of the inputs and of the thread count. The tokenizer is trained on the training
documents only. Every document is followed by ``<|endoftext|>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..corpus.preprocess.shards import read_documents
from ..runtime.atomic import atomic_write
from ..runtime.checks import integer, is_number
from ..runtime.progress import progress_iter
from ..runtime.signals import StopSignals
from ..runtime.threads import resolve_num_threads
from .bpe import BATCH_BYTES, END_OF_TEXT as EOT, Tokenizer
from .shards import ShardWriter

__all__ = ["TokenizeOptions", "is_validation", "iter_documents", "tokenize_corpus"]


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    """``tokenize_corpus``'s options, with their defaults: the vocabulary size of the tokenizer to train (or
    ``tokenizer``, a tokenizer.json or Tokenizer to reuse), the fraction of documents held out for validation, the
    pre-tokenization pattern, kernel threads (None: the usable CPUs), tokens per shard file, progress bars."""

    vocab_size: int = 50_000
    val_fraction: float = 0.05
    tokenizer: object = None  # a tokenizer.json path, or a Tokenizer
    pattern: str = "gpt2"
    num_threads: int | None = None
    shard_tokens: int = 100_000_000
    progress: bool = True

    def __post_init__(self):
        if not (is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"tokenize: val_fraction must be in [0, 1) (got {self.val_fraction!r})")
        integer(self.shard_tokens, "tokenize: shard_tokens", 1)


def _document_files(path: Path) -> tuple[list[Path], bool]:
    """(files, are_jsonl) for one input path."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        jsonl = [p for p in files if p.name.endswith(".jsonl")]
        return (jsonl, True) if jsonl else (files, False)
    if path.is_file():
        if path.name.endswith(".jsonl"):
            return [path], True
        lines = path.read_text(encoding="utf-8").splitlines()
        listed = [Path(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]
        missing = [p for p in listed if not p.is_file()]
        if missing:
            raise ValueError(f"tokenize: {path} lists {len(missing)} files that do not exist, e.g. {missing[0]}")
        return listed, False
    raise ValueError(f"tokenize: input {path} does not exist")


def iter_documents(inputs) -> Iterator[bytes]:
    """Every document of the inputs, as bytes, in a fixed order."""
    for path in map(Path, inputs):
        files, jsonl = _document_files(path)
        for f in files:
            if jsonl:
                yield from read_documents(f)
            else:
                yield f.read_bytes()


def is_validation(document: bytes, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split: a hash of its bytes under ``val_fraction``."""
    h = int.from_bytes(hashlib.blake2b(document, digest_size=8).digest(), "little")
    return h < val_fraction * 2**64


def tokenize_corpus(inputs, output, **options) -> dict:
    """Train (or load, with ``tokenizer=`` a tokenizer.json path) a tokenizer and write token shards to output/:
    tokenizer.json, train_NNNN.bin, val_NNNN.bin, stats.json. Returns the stats. Options: see TokenizeOptions."""
    try:
        opts = TokenizeOptions(**options)
    except TypeError as e:
        raise TypeError(f"tokenize: {e}".replace("TokenizeOptions.__init__() ", "")) from None
    nt = resolve_num_threads(opts.num_threads, "tokenize: num_threads")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tok = _tokenizer(inputs, opts, nt)
    tok.save(output / "tokenizer.json")
    trained = time.perf_counter()
    with StopSignals() as stop, contextlib.suppress(_Stopped):
        with contextlib.ExitStack() as stack:  # an exception discards the shards being written, keeps finished ones
            writers = {split: stack.enter_context(ShardWriter(output, split, tok.vocab_size, opts.shard_tokens))
                       for split in ("train", "val")}
            counts = _encode(iter_documents(inputs), tok, writers, opts, nt, stop)
            shards = {split: [p.name for p in w.close()] for split, w in writers.items()}
    if stop.signal:  # every shard on disk is whole, and no stats.json claims a finished run
        signal.raise_signal(getattr(signal, stop.signal))
    if not counts["train"]["documents"]:
        raise ValueError("tokenize: no training documents (empty inputs, or val_fraction too high)")
    stats = {
        "vocab_size": tok.vocab_size, "pattern": tok.pattern, "dtype": writers["train"].dtype.name,
        **{split: {**c, "bytes_per_token": c["bytes"] / max(c["tokens"], 1), "shards": shards[split]}
           for split, c in counts.items()},
        "seconds": {"tokenizer": trained - start, "encoding": time.perf_counter() - trained},
        "threads": nt,
    }
    with atomic_write(output / "stats.json", "w") as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    return stats


def _tokenizer(inputs, opts: TokenizeOptions, nt: int) -> Tokenizer:
    """The tokenizer given by ``opts.tokenizer``, or one trained on the training documents of ``inputs``."""
    if opts.tokenizer is None:
        train_docs = (d for d in iter_documents(inputs) if not is_validation(d, opts.val_fraction))
        return Tokenizer.train(progress_iter(train_docs, opts.progress, "training tokenizer"), opts.vocab_size,
                               special_tokens=(EOT,), pattern=opts.pattern, num_threads=nt)
    # any byte-level BPE tokenizer.json, numbered as cllm numbers it (as cllm import does: the shards then fit the
    # imported model)
    tok = opts.tokenizer if isinstance(opts.tokenizer, Tokenizer) else Tokenizer.load(opts.tokenizer, renumber=True)
    if EOT not in tok.special_tokens:
        raise ValueError(f"tokenize: the tokenizer {opts.tokenizer} has no {EOT} special token (documents are "
                         f"separated by it)")
    return tok


class _Stopped(Exception):
    """Raised by _encode at a safe point after SIGINT or SIGTERM: the shard being written is discarded."""


def _encode(documents, tok: Tokenizer, writers: dict, opts: TokenizeOptions, nt: int, stop: StopSignals) -> dict:
    """Encode the documents in batches of about BATCH_BYTES into their split's writer, each followed by
    <|endoftext|>; returns the documents, bytes and tokens of each split. Raises _Stopped between documents once
    ``stop`` has caught a signal."""
    eot = np.array([tok.special_tokens[EOT]], dtype=np.uint32)
    counts = {split: {"documents": 0, "bytes": 0, "tokens": 0} for split in writers}

    def flush(batch):
        for split, docs in batch.items():
            if docs:
                for ids in tok.encode_batch_to_arrays(docs, nt):
                    writers[split].write(np.concatenate([ids, eot]))
                    counts[split]["tokens"] += ids.size + 1
            docs.clear()

    batch, size = {"train": [], "val": []}, 0
    for doc in progress_iter(documents, opts.progress, "tokenizing"):
        if stop.signal:
            raise _Stopped
        split = "val" if is_validation(doc, opts.val_fraction) else "train"
        batch[split].append(doc)
        counts[split]["documents"] += 1
        counts[split]["bytes"] += len(doc)
        size += len(doc)
        if size >= BATCH_BYTES:
            flush(batch)
            size = 0
    flush(batch)
    if stop.signal:
        raise _Stopped
    return counts
