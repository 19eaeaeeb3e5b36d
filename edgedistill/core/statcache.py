"""Content hashes of source files (the data a run reads: image folders, CSVs, weights) that do not
re-read unchanged files: DVC's state database, kept in the store. A file's sha256 is reused while its
size, modification and change times and inode are the ones recorded with it; any write changes the
change time (ctime), so a changed file is hashed again even when its mtime was set back.

Without it every run read every image of a folder to key `prepare` (6,000 photos, 328 MiB, from a cold
page cache: 1.72 s, against 0.35 s with it; benchmarks/source_hashing.py); at 10^5-10^6 images that is
minutes a run, and a sweep pays it once a trial.

The database is SQLite (the standard library's sqlite3): runs sharing a store read and write it at once
under SQLite's own locking (unreliable on NFS: there a run may find it locked and read the files). It is
a cache: deleting it costs one full read; a damaged one is set aside and rebuilt. Caveat, as for DVC and
git: a file system whose change time is coarse or not kept (FAT, some SMB and FUSE mounts) could hide a
same-size rewrite within one clock tick.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from edgedistill.core.files import records_hash, sha256_file


class StatCache:
    """sha256 of files by (path, size, mtime_ns, ctime_ns, inode), in an SQLite file. Any trouble with the
    database (damaged, read-only, locked past its timeout) costs speed, never a wrong hash: a damaged file
    is set aside and the files are read."""

    def __init__(self, db: Path):
        self.db = Path(db)
        self._conn: sqlite3.Connection | None = None
        self._off = False
        self.hashed = 0
        """Files read and hashed since this object was made (the rest came from the cache)."""

    def _open(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._off:
            try:
                self.db.parent.mkdir(parents=True, exist_ok=True)
                if not self.db.exists():  # the umask's permissions (sqlite3 would make it 0644): a shared store
                    os.close(os.open(self.db, os.O_CREAT | os.O_RDWR, 0o666))
                self._conn = sqlite3.connect(self.db, timeout=60)
                self._conn.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                                   "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, sha256 TEXT)")
            except (OSError, sqlite3.Error) as e:
                self._give_up(e)
        return self._conn

    def _give_up(self, e: BaseException) -> None:
        """No cache for this object's life; a database that is not one (damaged) is moved aside."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._off = True
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            for f in (self.db, self.db.with_name(self.db.name + "-journal")):
                if f.exists():
                    os.replace(f, f.with_name(f.name + ".damaged"))

    def _rows(self, query: str, args: tuple) -> list[tuple]:
        conn = self._open()
        if conn is None:
            return []
        try:
            return conn.execute(query, args).fetchall()
        except sqlite3.Error as e:
            self._give_up(e)
            return []

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        return self._hashes(path.parent, [path.name], exact=True)[path.name]

    def _hashes(self, root: Path, rels: list[str], exact: bool = False) -> dict[str, str]:
        """{rel: sha256} of files under root (resolved), reading only those whose stat changed. A folder's
        rows are read in one query: one query a file costs more than hashing a small file whose pages are
        in memory."""
        prefix = str(root).rstrip("/") + "/"
        select = "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM files WHERE "
        rows = self._rows(select + "path = ?", (prefix + rels[0],)) if exact else self._rows(
            select + "path >= ? AND path < ?", (prefix, prefix[:-1] + "0"))  # "0" follows "/": all under prefix
        known = {row[0][len(prefix):]: row[1:] for row in rows}
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
        conn = self._open() if fresh else None
        if conn is not None:
            try:
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", fresh)
            except sqlite3.Error as e:  # read-only, or locked past the timeout: not cached this time
                self._give_up(e)
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
