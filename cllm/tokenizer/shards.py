"""Token shards: the output of ``cllm tokenize`` and the input of training.

A shard file holds one stream of token ids, documents separated by the ``<|endoftext|>`` token:

    offset  size  field
    0       8     magic b"CLLMTOK\\0"
    8       4     format version (uint32 little-endian, 1)
    12      4     bytes per token (uint32: 2 = uint16 ids, 4 = uint32 ids; uint32 when the vocabulary > 65,536)
    16      8     number of tokens (uint64)
    24      40    zero (reserved); the tokens start at byte 64, little-endian

``read_shard`` maps the tokens without reading them (numpy memmap) and checks the header against the file size.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..runtime.atomic import atomic_write

__all__ = ["HEADER_BYTES", "ShardError", "ShardWriter", "TokenData", "read_shard", "token_dtype"]

MAGIC = b"CLLMTOK\0"
VERSION = 1
HEADER_BYTES = 64
_HEADER = struct.Struct("<8sIIQ")


class ShardError(ValueError):
    """A file that is not a valid token shard, or shards that do not match their tokenizer: bad input data."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    """Appends token arrays to numbered shard files ``{prefix}_{k:04d}.bin`` of at most ``shard_tokens`` tokens,
    each written with ``atomic_write`` (a crash never leaves a torn shard). As a context manager, an exception
    discards the shard being written and keeps the finished ones."""

    def __init__(self, directory, prefix: str, vocab_size: int, shard_tokens: int = 100_000_000):
        self.directory, self.prefix, self.shard_tokens = Path(directory), prefix, int(shard_tokens)
        self.dtype = token_dtype(vocab_size)
        self.paths: list[Path] = []
        self.tokens = 0
        self._file = self._writing = None  # the open file and atomic_write context of the shard being written
        self._count = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and self._writing is not None:
            self._writing.__exit__(*exc)  # removes the partial shard's temporary file
            self._file = self._writing = None

    def write(self, ids: np.ndarray) -> None:
        """Append the tokens of ``ids``, starting a new shard whenever one is full."""
        ids = np.asarray(ids)
        while ids.size:
            if self._file is None:
                self._open()
            room = self.shard_tokens - self._count
            part, ids = ids[:room], ids[room:]
            self._file.write(part.astype(self.dtype, copy=False).tobytes())
            self._count += part.size
            self.tokens += part.size
            if self._count >= self.shard_tokens:
                self._close()

    def _open(self) -> None:
        path = self.directory / f"{self.prefix}_{len(self.paths):04d}.bin"
        self._writing = atomic_write(path)
        self._file = self._writing.__enter__()
        self._file.write(bytes(HEADER_BYTES))
        self._count = 0
        self.paths.append(path)

    def _close(self) -> None:
        self._file.seek(0)
        self._file.write(_HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self._count))
        self._writing.__exit__(None, None, None)  # flush, fsync, rename
        self._file = self._writing = None

    def close(self) -> list[Path]:
        """Finish the last shard; returns every shard written (none if no token was written)."""
        if self._file is not None:
            self._close()
        return self.paths


def read_shard(path) -> np.ndarray:
    """The tokens of a shard, memory-mapped (uint16 or uint32). ShardError for a file that is not a valid shard."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except OSError as e:
        raise ValueError(f"read_shard: cannot read {path}: {e.strerror}") from None
    if len(head) < _HEADER.size or size < HEADER_BYTES:
        raise ShardError(f"read_shard: {path} is too short to be a token shard ({size} bytes)")
    magic, version, width, count = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ShardError(f"read_shard: {path} is not a cllm token shard (magic {magic!r})")
    if version > VERSION:
        raise ShardError(f"read_shard: {path} has format version {version}; this cllm reads up to {VERSION}")
    if width not in (2, 4):
        raise ShardError(f"read_shard: {path} has {width} bytes per token (expected 2 or 4)")
    if HEADER_BYTES + count * width != size:
        raise ShardError(f"read_shard: {path} says {count} tokens of {width} bytes but holds "
                         f"{size - HEADER_BYTES} bytes of tokens")
    if count == 0:
        return np.zeros(0, dtype=f"<u{width}")
    return np.memmap(path, dtype=f"<u{width}", mode="r", offset=HEADER_BYTES, shape=(count,))


# --- reading a tokens/ folder for training ---------------------------------------------------------------------

class TokenData:
    """A ``cllm tokenize`` output folder: its tokenizer and its train/val shards (memory-mapped).

    Training reads non-overlapping windows of ``seq_len + 1`` tokens (inputs and next-token targets; consecutive
    windows share one boundary token), never across a shard boundary.
    """

    def __init__(self, directory):
        from .bpe import Tokenizer

        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"train: data {self.directory} is not a folder (expected the output of cllm tokenize)")
        tokenizer = self.directory / "tokenizer.json"
        if not tokenizer.is_file():
            raise ValueError(f"train: data {self.directory} has no tokenizer.json (expected the output of "
                             f"cllm tokenize)")
        self.tokenizer = Tokenizer.load(tokenizer)
        self.train = [read_shard(p) for p in sorted(self.directory.glob("train_*.bin"))]
        self.val = [read_shard(p) for p in sorted(self.directory.glob("val_*.bin"))]
        if not sum(s.size for s in self.train):
            raise ValueError(f"train: data {self.directory} has no training tokens (no train_*.bin shards, or "
                             f"empty ones)")
        top = max(int(s.max()) for s in self.train + self.val if s.size)
        if top >= self.tokenizer.vocab_size:
            raise ShardError(f"train: data {self.directory} holds token id {top}, outside its tokenizer's "
                             f"{self.tokenizer.vocab_size} tokens: shards and tokenizer.json do not match")

    def fingerprint(self) -> dict:
        """What identifies this data for a resumed run: the shards' names and sizes and the vocabulary size."""
        return {"vocab_size": self.tokenizer.vocab_size,
                "train": [[Path(s.filename).name, int(s.size)] for s in self.train if isinstance(s, np.memmap)],
                "val": [[Path(s.filename).name, int(s.size)] for s in self.val if isinstance(s, np.memmap)]}

    def token_bytes(self) -> np.ndarray:
        """[vocab] UTF-8 bytes each token stands for (0 for special tokens): for bits per byte."""
        special = set(self.tokenizer.special_tokens.values())
        return np.array([0 if i in special else len(self.tokenizer.token_bytes(i))
                         for i in range(self.tokenizer.vocab_size)], dtype=np.int64)
