"""Files the store writes and checks: content hashes (a file, a folder's records, a JSON-able object),
comparing a folder with its records, and JSON written atomically (temporary file, fsync, rename)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from edgedistill.core.errors import IntegrityError

SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_records(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file under folder, sorted by path."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return {rel: {"size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in files if (rel := f.relative_to(folder).as_posix()) not in exclude}


def records_hash(records: dict[str, dict]) -> str:
    """One content hash for a set of file records (relative paths and file hashes, sorted)."""
    h = hashlib.sha256()
    for rel in sorted(records):
        h.update(rel.encode() + b"\0" + records[rel]["sha256"].encode() + b"\n")
    return h.hexdigest()


def hash_tree(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """Content hash of a file, or of a folder (relative paths and file contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    return records_hash(file_records(path, exclude))


def find_difference(folder: Path, records: dict[str, dict], full: bool, ignore: tuple[str, ...] = ()) -> str | None:
    """None when folder holds exactly the recorded files, else the first difference, in words.

    records: {relative path: {"sha256", and optionally "size"}}. Cheap (full=False): the same
    regular files, of the recorded sizes. Full: also every sha256. A symbolic link, a device or a
    FIFO is never taken for a file, and nothing is followed out of the folder.
    """
    folder = Path(folder)
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return f"'{folder}' is not a folder"
    except OSError:
        return f"'{folder}' does not exist"
    found: dict[str, os.stat_result] = {}
    for root, dirs, names in os.walk(folder):  # os.walk does not follow symlinked folders
        for name in [*dirs, *names]:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                return f"{rel} is a symbolic link"
            if stat.S_ISREG(st.st_mode):
                if rel not in ignore:
                    found[rel] = st
            elif not stat.S_ISDIR(st.st_mode):
                return f"{rel} is not a regular file"
    for rel in sorted(records):
        if rel not in found:
            return f"{rel} is missing"
    for rel in sorted(found):
        if rel not in records:
            return f"{rel} is not in the record"
    for rel, rec in sorted(records.items()):
        size = rec.get("size")
        if size is not None and found[rel].st_size != size:
            return f"{rel} has {found[rel].st_size} bytes, {size} recorded"
    if full:
        for rel, rec in sorted(records.items()):
            if sha256_file(folder / rel) != rec["sha256"]:
                return f"{rel} differs from its recorded sha256"
    return None


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_obj(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, racing other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file in the same folder, fsync, rename), with the permissions a
    plain open() would give under the umask. Never writes through a symlink: the rename replaces it.
    NaN and infinity are refused: they are not JSON, and no result of ours should hold one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """A JSON file edgedistill wrote; a file that is not JSON is an IntegrityError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"'{path}' is not valid JSON ({e}); it was damaged after it was written") from None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in parent with the permissions mkdir gives under the umask
    (mkdtemp's are 0700, which published bundles must not inherit)."""
    for attempt in range(3):  # another run sharing the store may remove the empty parent between the two calls
        parent.mkdir(parents=True, exist_ok=True)
        try:
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    os.chmod(path, 0o777 & ~current_umask())
    return path
