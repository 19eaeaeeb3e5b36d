"""Content hashes of source files (the data a run reads: image folders, CSVs, weights) that do not
re-read unchanged files: DVC's state database, kept in the store. A file's sha256 is reused while its
size, modification and change times and inode are the ones recorded with it; any write changes the
change time (ctime), so a changed file is hashed again even when its mtime was set back.

Without it every run read every image of a folder to key `prepare` (6,000 photos, 151 MB: 5.5 s); at
10^5-10^6 images that is minutes a run, and a sweep pays it once a trial.

The database is SQLite (the standard library's sqlite3): runs sharing a store read and write it at once
under SQLite's own locking. It is a cache: deleting it costs one full read, and a damaged one is rebuilt.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from edgedistill.core.files import records_hash, sha256_file


class StatCache:
    """sha256 of files by (path, size, mtime_ns, ctime_ns, inode), in an SQLite file."""

    def __init__(self, db: Path):
        self.db = Path(db)
        self._conn: sqlite3.Connection | None = None
        self.hashed = 0
        """Files read and hashed since this object was made (the rest came from the cache)."""

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self.db.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._connect()
            except sqlite3.DatabaseError:  # not a database (damaged): a cache, so start a new one
                self.db.unlink(missing_ok=True)
                self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db, timeout=60)
        conn.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                     "ctime_ns INTEGER, inode INTEGER, sha256 TEXT)")
        return conn

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        return self._hashes(path.parent, [path.name])[path.name]

    def _hashes(self, root: Path, rels: list[str]) -> dict[str, str]:
        """{rel: sha256} of files under root (resolved), reading only those whose stat changed. The rows
        under root are read in one query: a per-file one costs more than hashing a small file whose
        pages are in memory."""
        conn = self._open()
        prefix = str(root).rstrip("/") + "/"
        known = {row[0][len(prefix):]: row[1:] for row in conn.execute(
            "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM files WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"))}  # "0" follows "/": every path under the prefix
        out: dict[str, str] = {}
        fresh = []
        for rel in rels:
            full = prefix + rel
            st = os.stat(full)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            row = known.get(rel)
            if row is not None and tuple(row[:4]) == stamp:
                out[rel] = row[4]
                continue
            out[rel] = sha256_file(Path(full))
            self.hashed += 1
            after = os.stat(full)
            if (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino) == stamp:  # not written meanwhile
                fresh.append((full, *stamp, out[rel]))
        if fresh:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", fresh)
        return out

    def hash_tree(self, path: Path) -> str:
        """The same content hash as files.hash_tree (a file's sha256, or a folder's records hash), from the cache."""
        path = Path(path)
        if path.is_file():
            return self.sha256(path)
        root = path.resolve()
        rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        hashes = self._hashes(root, rels)
        return records_hash({rel: {"sha256": hashes[rel]} for rel in rels})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

