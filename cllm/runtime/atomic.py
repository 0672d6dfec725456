"""Atomic, durable file writes: a crash or SIGKILL at any moment leaves the old file or the new one, never a torn one.

The new content goes to a temporary file in the destination's folder (the same file system, so that the rename
is atomic), which is flushed and fsync'ed, renamed over the destination, and then the folder is fsync'ed so that
the rename itself survives a power cut. A temporary file left by a killed writer is named ``.NAME.*.tmp`` and is
never mistaken for the destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["FILE_MODE", "atomic_write", "fsync_directory"]


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: f.write(...)`` replaces ``path`` only if the block completes."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w' (got {mode!r})")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory) -> None:
    """Make a rename or a new file in ``directory`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; done once, at import, before threads start writing
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()  # what open() would give a new file
