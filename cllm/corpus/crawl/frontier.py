"""The crawler's memory, on disk: every URL seen (queued or done, with its outcome) and the committed length of
every WARC file, in one SQLite database in the output folder.

Why SQLite: the frontier of a crawl grows by every link of every page, so it cannot be held in memory; and one
transaction per page ("these records are in the WARC up to byte N, this URL is done, these links are queued")
means a crawl killed at any instant resumes exactly where its last page ended: nothing done is fetched again,
nothing queued is lost, and WARC bytes written after the last commit are cut off on reopening.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

__all__ = ["Frontier"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    id INTEGER PRIMARY KEY, url TEXT UNIQUE NOT NULL, host TEXT NOT NULL, depth INTEGER NOT NULL,
    chain TEXT NOT NULL DEFAULT '[]', done INTEGER NOT NULL DEFAULT 0, requested INTEGER NOT NULL DEFAULT 0,
    result TEXT);
CREATE INDEX IF NOT EXISTS queued ON urls (host, depth, id) WHERE done = 0;
CREATE TABLE IF NOT EXISTS warcs (name TEXT PRIMARY KEY, committed INTEGER NOT NULL);
"""


class Frontier:
    """URLs by host in breadth-first order; ``chain`` is the list of URLs that redirected to this one."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")  # a killed process loses no committed transaction
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self):
        self.db.close()

    # --- WARC files -------------------------------------------------------------------------------------------
    def repair_warcs(self, folder: Path) -> list[str]:
        """Cut every WARC file back to its last committed byte (what a kill left after it is a partial page)."""
        names = []
        for name, committed in self.db.execute("SELECT name, committed FROM warcs ORDER BY name"):
            path = folder / name
            if path.exists() and path.stat().st_size > committed:
                os.truncate(path, committed)
            names.append(name)
        return names

    def register_warc(self, name: str, committed: int):
        self.db.execute("INSERT OR REPLACE INTO warcs VALUES (?, ?)", (name, committed))

    # --- URLs ---------------------------------------------------------------------------------------------------
    def add(self, rows):
        """Queue (url, host, depth, chain) rows whose URL was never seen; returns how many were new."""
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO urls (url, host, depth, chain) VALUES (?, ?, ?, ?)",
                            [(u, h, d, json.dumps(c)) for u, h, d, c in rows])
        return self.db.total_changes - before

    def queued_by_host(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT host, COUNT(*) FROM urls WHERE done = 0 GROUP BY host"))

    def next_for(self, host: str, exclude: set[int]):
        """(id, url, depth, chain) of the host's next URL not in ``exclude`` (those in flight), or None."""
        skip = ",".join("?" * len(exclude))
        row = self.db.execute(f"SELECT id, url, depth, chain FROM urls WHERE done = 0 AND host = ? "
                              f"{f'AND id NOT IN ({skip})' if exclude else ''} ORDER BY depth, id LIMIT 1",
                              (host, *exclude)).fetchone()
        return None if row is None else (row[0], row[1], row[2], json.loads(row[3]))

    def is_seen(self, url: str) -> bool:
        return self.db.execute("SELECT 1 FROM urls WHERE url = ?", (url,)).fetchone() is not None

    def finish(self, url_id: int, result: dict, requested: bool, links=(), warc: tuple[str, int] | None = None):
        """In one transaction: the URL's outcome (``requested``: it cost a request), the links it queued and the
        WARC file's new committed length."""
        self.db.execute("BEGIN")
        try:
            self.db.execute("UPDATE urls SET done = 1, requested = ?, result = ? WHERE id = ?",
                            (int(requested), json.dumps(result), url_id))
            self.add(links)
            if warc:
                self.register_warc(*warc)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def results(self):
        """Every finished URL's outcome, sorted by URL."""
        for url, result in self.db.execute("SELECT url, result FROM urls WHERE done = 1 ORDER BY url"):
            yield {"url": url, **json.loads(result)}

    def count_fetched(self) -> int:
        """Pages that cost a request (the budget of --max-pages), over every run of this crawl."""
        return self.db.execute("SELECT COUNT(*) FROM urls WHERE requested = 1").fetchone()[0]
