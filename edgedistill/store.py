"""The artifact store: immutable stage results, bundles, and the lock.

Layout under the store root (``./artifacts`` by default)::

    results/<stage>/<key>/        one finished stage result; meta.json inside; never modified
    work/<stage>/<key>/           checkpoints of a stage that has not finished (resume from here)
    tmp/                          results being written; renamed into results/ on success
    bundles/<name>/v<N>/          published bundles
    lock, lock.owner              one run at a time

Every result is written to tmp/ and renamed into place in one ``os.rename``, so after a crash or
SIGKILL at any moment a result either exists whole or not at all. Leftovers in tmp/ are garbage
and are removed by the next run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from .errors import StoreBusy

META = "meta.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
RUNNER_FILES = (META, METRICS)  # the runner's bookkeeping inside a result, not part of a bundle
# Files left out of a bundle's content identity (what decides its version), though listed with their
# sha256 in the manifest: ONNX Runtime's ORT-format converter does not write the same bytes twice
# for the same model (map order), and model.ort is derived from model.onnx, which does count.
NOT_IN_IDENTITY = ("model.ort",)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """Content hash of a file, or of a folder (relative paths and file contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel in exclude:
            continue
        h.update(rel.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_obj(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Result:
    """A finished stage result."""

    stage: str
    key: str
    path: Path
    meta: dict

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- lock -------------------------------------------------------------------------------
    def lock(self, wait_s: float = 0.0) -> "FileLock":
        """Take the store's lock, or raise StoreBusy naming the holder. The lock is an OS file lock,
        so a run killed with SIGKILL releases it."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / "lock"))
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            owner = (self.root / "lock.owner").read_text().strip() if (self.root / "lock.owner").exists() else "?"
            raise StoreBusy(
                f"store '{self.root}' is in use by another edgedistill run ({owner}); "
                f"wait for it to finish, pass --wait SECONDS, or use another --store"
            ) from None
        (self.root / "lock.owner").write_text(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        self._clean_tmp()
        return lock

    def _clean_tmp(self) -> None:
        """Results half-written by a killed run; only called while holding the lock."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)

    # ---- results ----------------------------------------------------------------------------
    def result_path(self, stage: str, key: str) -> Path:
        return self.root / "results" / stage / key

    def work_dir(self, stage: str, key: str) -> Path:
        """Checkpoints of an unfinished result; kept across crashes, removed when it finishes."""
        return self.root / "work" / stage / key

    def get(self, stage: str, key: str) -> Result | None:
        path = self.result_path(stage, key)
        if not (path / META).is_file():
            return None
        return Result(stage, key, path, read_json(path / META))

    def new_tmp(self, stage: str) -> Path:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=self.root / "tmp"))

    def commit(self, stage: str, key: str, tmp: Path, meta: dict, replace: bool = False) -> Result:
        """Seal a finished result: content hash, meta.json, then one rename into results/."""
        meta = dict(meta, content_hash=hash_tree(tmp, exclude=(META,)))
        write_json(tmp / META, meta)
        final = self.result_path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            if not replace:
                raise FileExistsError(final)
            # --force: move the old result aside first so the swap never leaves no result behind
            # for longer than two renames; a crash between them leaves the old copy in tmp/.
            old = self.new_tmp(f"{stage}-replaced")
            os.rename(final, old / key)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        shutil.rmtree(self.work_dir(stage, key), ignore_errors=True)
        return Result(stage, key, final, meta)

    def _groups(self, kind: str, name: str | None) -> list[Path]:
        """Folders under results/ (one per stage) or bundles/ (one per name), or just the named one."""
        base = self.root / kind
        folders = [base / name] if name else sorted(base.iterdir()) if base.is_dir() else []
        return [d for d in folders if d.is_dir()]

    def results(self, stage: str | None = None) -> Iterator[Result]:
        for d in self._groups("results", stage):
            for p in sorted(d.iterdir()):
                if (p / META).is_file():
                    yield Result(d.name, p.name, p, read_json(p / META))

    def latest(self, stage: str, pipeline: str) -> Result | None:
        """The most recently finished result of a stage for a pipeline (to explain a cache miss)."""
        mine = [r for r in self.results(stage) if r.meta.get("pipeline") == pipeline]
        return max(mine, key=lambda r: r.meta.get("finished", ""), default=None)

    # ---- bundles ----------------------------------------------------------------------------
    def bundle_dir(self, name: str) -> Path:
        return self.root / "bundles" / name

    def bundles(self, name: str | None = None) -> Iterator[tuple[str, int, Path]]:
        for d in self._groups("bundles", name):
            versions = sorted(int(p.name[1:]) for p in d.iterdir() if p.name[1:].isdigit() and (p / MANIFEST).is_file())
            for v in versions:
                yield d.name, v, d / f"v{v}"

    def publish_bundle(self, name: str, src: Path, manifest: dict) -> tuple[int, Path, bool]:
        """Copy a bundle result to bundles/<name>/v<N>/. N grows only when the content changes:
        content already published under some version returns that version (new=False)."""
        content = hash_tree(src, exclude=RUNNER_FILES + NOT_IN_IDENTITY)
        published = list(self.bundles(name))
        for _, v, path in published:
            if read_json(path / MANIFEST).get("content_sha256") == content:
                return v, path, False
        version = max((v for _, v, _ in published), default=0) + 1
        tmp = self.new_tmp(f"bundle-{name}")
        for f in sorted(src.iterdir()):
            if f.name not in RUNNER_FILES:
                shutil.copy2(f, tmp / f.name)
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, dict(manifest, name=name, version=version, content_sha256=content, files=files))
        final = self.bundle_dir(name) / f"v{version}"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        return version, final, True
