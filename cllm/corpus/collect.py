"""The collect stage: source trees -> a folder of text files + ``manifest.jsonl`` (the seed's ``find`` step, made
safe to point at anything).

Walks each root in sorted order, pruning version-control and build folders; keeps files whose name matches an
``--include`` pattern and no ``--exclude`` pattern (and, with ``gitignore=True``, that no ``.gitignore`` on the
way down ignores); reads each kept file once (at most ``max_bytes``) and sorts it into ``ok`` or a skip reason:
``too_large``, ``binary`` (a NUL byte), ``undecodable``, ``unreadable`` (permission or I/O error). Symbolic links
are not followed unless ``follow_symlinks`` (like ``find``); when they are, a directory reached twice (a loop or
a second link to it) is skipped as ``symlink_loop``.

Output folder: ``manifest.jsonl`` (one JSON object per file, sorted by source: source, path, bytes, sha256,
encoding, status), ``files/<root name>/<relative path>`` copies of the ``ok`` files (unless ``copy=False``: then
``path`` is the original's absolute path) and ``report.json`` (counts by status, and of pruned folders and
unmatched files). Copies are made from the bytes that were hashed, so the manifest describes the copies exactly.
The output appears at the end: the copies are made in a hidden staging folder and renamed into place, then
manifest.jsonl and report.json are written with ``atomic_write`` (fsync'ed, renamed when whole).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime.atomic import atomic_write
from ..runtime.checks import is_integer
from .textclean import decode

__all__ = ["CollectOptions", "DEFAULT_INCLUDE", "SKIP_DIRS", "collect"]

DEFAULT_INCLUDE = ("*.c", "*.h", "*.cc", "*.cpp", "*.cxx", "*.hpp", "*.hh", "*.cu", "*.py", "*.pyi", "*.pyx",
                   "*.rs", "*.go", "*.java", "*.kt", "*.scala", "*.swift", "*.js", "*.ts", "*.rb", "*.pl", "*.lua",
                   "*.sh", "*.bash", "*.zsh", "*.sql", "*.md", "*.rst", "*.txt", "*.tex")
# Folders that hold history, dependencies or build products, never the sources themselves
SKIP_DIRS = (".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", "__pycache__", "node_modules", ".tox", ".nox",
             ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs", "*.egg-info", "build", "dist",
             ".ipynb_checkpoints", ".idea", ".vscode")
DEFAULT_MAX_BYTES = 1 << 20  # larger source files are almost always generated or data


def _patterns(values) -> tuple[str, ...]:
    """Comma-separated and repeated pattern options -> one tuple; a pattern with "/" matches the relative path."""
    out = []
    if isinstance(values, str):
        values = [values]
    for value in values or ():
        out += [p.strip() for p in str(value).split(",") if p.strip()]
    return tuple(out)


def _matches(rel: str, patterns) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel if "/" in p else name, p) for p in patterns)


class _GitIgnores:
    """The .gitignore files from a root down to the current folder; git's rule: the deepest match wins."""

    def __init__(self):
        self.specs = []  # (folder relative to the root, with trailing "/" or "", GitIgnoreSpec)

    def enter(self, folder: Path, rel: str) -> int:
        from pathspec import GitIgnoreSpec

        depth = len(self.specs)
        try:
            lines = (folder / ".gitignore").read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return depth
        self.specs.append((rel + "/" if rel else "", GitIgnoreSpec.from_lines(lines)))
        return depth

    def leave(self, depth: int):
        del self.specs[depth:]

    def ignored(self, rel: str, is_dir: bool) -> bool:
        verdict = False
        for base, spec in self.specs:
            if rel.startswith(base):
                result = spec.check_file(rel[len(base):] + ("/" if is_dir else ""))
                if result.include is not None:
                    verdict = result.include
        return verdict


@dataclass
class _Walk:
    include: tuple
    exclude: tuple
    max_bytes: int
    follow_symlinks: bool
    gitignore: _GitIgnores | None
    counts: Counter = field(default_factory=Counter)
    seen_dirs: set = field(default_factory=set)
    pruned: set = field(default_factory=set)  # (device, inode) of folders never to enter: the output folder

    def files(self, root: Path):
        """(path, relative posix path) of every candidate file under root, in sorted order."""
        self.seen_dirs.add(_identity(root))
        yield from self._walk(root, "")

    def _walk(self, folder: Path, rel: str):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            self.counts["unreadable_dirs"] += 1
            return
        depth = self.gitignore.enter(folder, rel) if self.gitignore else 0
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if not _utf8(child):  # a name in no encoding cannot be written to the manifest
                self.counts["undecodable_names"] += 1
                continue
            try:
                is_link = entry.is_symlink()
                if is_link and not self.follow_symlinks:
                    self.counts["symlinks_not_followed"] += 1
                    continue
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                self.counts["unreadable"] += 1
                continue
            if self.gitignore and entry.name != ".git" and self.gitignore.ignored(child, is_dir):
                self.counts["gitignored"] += 1
            elif is_dir:
                yield from self._enter(Path(entry.path), child)
            elif not is_file:  # sockets, fifos, devices, broken links
                self.counts["not_regular_files"] += 1
            elif not _matches(child, self.include) or _matches(child, self.exclude):
                self.counts["not_matched"] += 1
            else:
                yield Path(entry.path), child
        if self.gitignore:
            self.gitignore.leave(depth)

    def _enter(self, folder: Path, rel: str):
        if _matches(rel, SKIP_DIRS) or _matches(rel, self.exclude):
            self.counts["pruned_dirs"] += 1
            return
        try:
            identity = _identity(folder)
        except OSError:
            self.counts["unreadable_dirs"] += 1
            return
        if identity in self.pruned:
            self.counts["pruned_dirs"] += 1
            return
        if identity in self.seen_dirs:
            self.counts["symlink_loop"] += 1
            return
        self.seen_dirs.add(identity)
        yield from self._walk(folder, rel)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _identity(folder: Path) -> tuple[int, int]:
    st = folder.stat()
    return st.st_dev, st.st_ino


def _read(path: Path, max_bytes: int) -> tuple[bytes | None, str, int]:
    """(bytes or None, status, size): reads at most max_bytes + 1 bytes, so a file that grows is still capped."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None, "unreadable", size
            if size > max_bytes:
                return None, "too_large", size
            data = f.read(max_bytes + 1)
    except OSError:
        return None, "unreadable", 0
    if len(data) > max_bytes:
        return None, "too_large", len(data)
    return data, "ok", len(data)


def _root_names(roots: list[Path]) -> list[str]:
    """A distinct folder name per root (the root's own name, with -2, -3... when two roots share it)."""
    names, used = [], Counter()
    for root in roots:
        base = root.resolve().name or "root"
        used[base] += 1
        names.append(base if used[base] == 1 else f"{base}-{used[base]}")
    return names


@dataclass(frozen=True)
class CollectOptions:
    """``collect``'s options, with their defaults: ``include`` / ``exclude`` file name patterns (a string of
    comma-separated patterns or a list of them; include None: DEFAULT_INCLUDE), the largest file kept, whether
    to obey .gitignore files and to follow symbolic links, and whether to copy the files or record their paths."""

    include: object = None
    exclude: object = None
    max_bytes: int = DEFAULT_MAX_BYTES
    gitignore: bool = False
    follow_symlinks: bool = False
    copy: bool = True

    def __post_init__(self):
        if not is_integer(self.max_bytes) or self.max_bytes < 1:
            raise ValueError(f"collect: max_bytes must be a positive number of bytes (got {self.max_bytes!r})")


def collect(roots, output, **options) -> dict:
    """Collect the text files under ``roots`` into ``output`` (see the module docstring); returns the report.
    Options: see CollectOptions."""
    try:
        opts = CollectOptions(**options)
    except TypeError as e:
        raise TypeError(f"collect: {e}".replace("CollectOptions.__init__() ", "")) from None
    roots = [Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])]
    if not roots:
        raise ValueError("collect: give at least one root folder")
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"collect: root {root} is not a folder" if root.exists()
                             else f"collect: root {root} does not exist")
    include, exclude = _patterns(opts.include) or DEFAULT_INCLUDE, _patterns(opts.exclude)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"collect: output {output} exists and is not a folder")
    start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".collect-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    walk = _Walk(include, exclude, opts.max_bytes, opts.follow_symlinks, _GitIgnores() if opts.gitignore else None)
    walk.pruned.add(_identity(output))  # collecting a folder into itself must not collect the copies
    entries = []
    try:
        for root, name in zip(roots, _root_names(roots)):
            for path, rel in walk.files(root):
                entries.append(_collect_file(path, f"{name}/{rel}", opts.max_bytes, staging if opts.copy else None))
        entries.sort(key=lambda e: e["source"])
        status = Counter(e["status"] for e in entries)
        report = {"roots": [str(r.resolve()) for r in roots], "files": dict(sorted(status.items())),
                  "bytes": sum(e["bytes"] for e in entries if e["status"] == "ok"),
                  "walk": dict(sorted(walk.counts.items())), "include": list(include), "exclude": list(exclude),
                  "max_bytes": opts.max_bytes, "copied": opts.copy, "seconds": round(time.perf_counter() - start, 3)}
        if not status["ok"]:
            raise ValueError(f"collect: no text files found under {', '.join(map(str, roots))} "
                             f"(include {','.join(include)}; skipped: {dict(status) or 'nothing matched'})")
        _publish(staging, output, entries, report)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _collect_file(path: Path, source: str, max_bytes: int, staging: Path | None) -> dict:
    data, status, size = _read(path, max_bytes)
    entry = {"source": source, "path": None, "bytes": size, "sha256": None, "encoding": None, "status": status}
    if data is None:
        return entry
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    text = decode(data)
    if text is None or "\0" in text:  # NUL bytes: binary (decode already refuses them in the first 8 KiB)
        entry["status"] = "binary" if text is not None or b"\0" in data else "undecodable"
        return entry
    entry["encoding"] = text.encoding
    if staging is None:
        entry["path"] = str(path.resolve())
    else:
        entry["path"] = f"files/{source}"
        target = staging / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return entry


def _publish(staging: Path, output: Path, entries: list[dict], report: dict):
    """Replace output's files/ by the staged one (the old one is moved into the staging folder, which the caller
    removes), then write manifest.jsonl and report.json with atomic_write."""
    staging.mkdir(parents=True, exist_ok=True)
    if (output / "files").exists():
        os.replace(output / "files", staging / "old-files")
    if (staging / "files").exists():
        os.replace(staging / "files", output / "files")
    with atomic_write(output / "manifest.jsonl", "w") as f:
        for e in entries:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    with atomic_write(output / "report.json", "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
