"""The ``clean/`` document shards: ``docs-NNNNN.jsonl`` files of one ``{"text", "source", "meta"}`` JSON object per
line, the output of ``cllm preprocess`` and the input of ``cllm tokenize``. Their one writer and their one reader.

Each shard is written with ``atomic_write`` (a hidden temporary file, fsync'ed and renamed when complete), so an
interrupted or killed run leaves only whole shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ...runtime.atomic import atomic_write

__all__ = ["JsonlError", "JsonlShards", "read_documents"]


class JsonlError(ValueError):
    """A line of a JSONL input (a document shard, a manifest) that is not what it should be: bad input data."""


class JsonlShards:
    """``docs-NNNNN.jsonl`` files of at most ~shard_bytes each, every one complete or absent."""

    def __init__(self, folder: Path, shard_bytes: int):
        self.folder, self.shard_bytes = folder, shard_bytes
        self.names, self.file, self.size = [], None, 0
        self._writing = None  # the open atomic_write context of the shard being written
        for old in [*folder.glob("docs-*.jsonl"), *folder.glob(".docs-*.tmp")]:  # a previous run's shards would be
            old.unlink()  # read with ours; a killed writer's temporary files are litter

    def write(self, document: dict):
        """Append one document ({"text", "source", "meta"}); a shard that reaches shard_bytes is finished."""
        if self.file is None:
            name = f"docs-{len(self.names):05d}.jsonl"
            self.names.append(name)
            self._writing = atomic_write(self.folder / name, "w")
            self.file, self.size = self._writing.__enter__(), 0
        line = json.dumps(document, ensure_ascii=False) + "\n"
        self.file.write(line)
        self.size += len(line)
        if self.size >= self.shard_bytes:
            self._finish()

    def _finish(self):
        self._writing.__exit__(None, None, None)
        self.file = self._writing = None

    def close(self) -> list[str]:
        """Finish the last shard; returns the names of every shard written."""
        if self.file is not None:
            self._finish()
        return self.names


def read_documents(path) -> Iterator[bytes]:
    """The "text" of every document of one .jsonl file, in file order, as UTF-8 bytes (lone surrogates kept, as
    ``surrogatepass`` encodes them); blank lines are skipped. JsonlError, naming the file and the line, for a
    line that is not a JSON object with a "text" string."""
    path = Path(path)
    with open(path, "rb") as lines:
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)["text"].encode("utf-8", "surrogatepass")
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise JsonlError(f"read_documents: {path} line {n} is not a JSON object with a \"text\" "
                                     f"string") from None
