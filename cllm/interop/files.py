"""Writing an export's files like every other cllm output: atomically, world-readable, synced."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._version import __version__
from ..runtime.atomic import FILE_MODE, atomic_write

__all__ = ["write_json", "write_safetensors", "write_through"]


def write_json(path: Path, doc: dict) -> Path:
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
    return path


def write_through(path: Path, write) -> Path:
    """Call ``write(tmp)`` for a library that writes to a path of its own (safetensors, gguf), then move the file
    into place: synced, mode 0644 (safetensors creates it 0600), and nothing left behind on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_safetensors(path: Path, tensors: dict) -> Path:
    """``tensors`` (name -> array) as a safetensors file, through ``write_through``, cllm named as its producer."""
    from safetensors.numpy import save_file

    metadata = {"format": "pt", "producer": f"cllm {__version__}"}
    return write_through(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
