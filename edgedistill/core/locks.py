"""OS file locks for a store that several runs share: flock(2) on a file, shared or exclusive, released by
the kernel when the holder exits, SIGKILL included. (filelock, which the store used while one run held it
whole, has no shared mode.) POSIX only, like the rest of the store's atomic renames; on a network file
system flock needs the server's support (NFSv4 has it)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

POLL_S = 0.1


class FileLock:
    """flock on path: exclusive (one holder) or shared (any number, and no exclusive holder)."""

    def __init__(self, path: Path, exclusive: bool = True):
        self.path, self.exclusive = Path(path), exclusive
        self._fd: int | None = None

    def acquire(self, wait_s: float | None = None, on_wait: Callable[[], None] | None = None) -> bool:
        """Take the lock; wait at most wait_s seconds (None: as long as it takes). on_wait is called once
        when the lock is not free at the first try. Returns whether it was taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: flock needs no write access
            fd = os.open(self.path, os.O_RDONLY)
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = None if wait_s is None else time.monotonic() + wait_s
        waited = False
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    self._fd = fd
                    return True
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    if not waited and on_wait is not None:
                        on_wait()
                    waited = True
                    time.sleep(POLL_S)
        except BaseException:  # Ctrl-C while waiting, or on_wait raised
            if self._fd is None:
                os.close(fd)
            raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def held(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on path for the duration of a with block (waits as long as it takes)."""
    lock = FileLock(path)
    lock.acquire(None, on_wait)
    try:
        yield
    finally:
        lock.release()


HOST = socket.gethostname()
TOKEN = secrets.token_hex(4)
"""Per process: two processes of one host that share a pid (containers in other PID namespaces) differ."""
TAG = re.compile(r"@[^@]*@p[0-9]+@[0-9a-f]+@")


def process_tag() -> str:
    """@<host>@p<pid>@<token>@: names what this process writes in a shared store, and its holder mark."""
    return f"@{HOST}@p{os.getpid()}@{TOKEN}@"


def writer_gone(name: str, holders: Path) -> bool:
    """Whether the process whose tag a file or folder name carries is gone: the kernel says so, its holder
    mark (holders/<tag>, which it keeps flocked while it holds the store) being free. A name without a tag
    (written before stores were shared) counts as gone."""
    m = TAG.search(name)
    if m is None:
        return True
    if not (holders / m.group(0)).exists():
        return True
    mark = FileLock(holders / m.group(0), exclusive=True)
    if mark.acquire(0):
        mark.release()
        return True
    return False
