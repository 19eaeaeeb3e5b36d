"""The artifact store: immutable stage results, bundles, and the lock.

Layout under the store root (``./artifacts`` by default)::

    results/<stage>/<key>/        one finished stage result; meta.json inside; never modified
    work/<stage>/<key>/           checkpoints of a stage that has not finished (resume from here)
    tmp/                          results being written; renamed into results/ on success
    bundles/<name>/v<N>/          published bundles, manifest.json inside
    runs/<pipeline>.json          the cache key of each stage in the latest run of a pipeline (for gc)
    damaged/                      results and bundles that failed their check, set aside for a look
    lock, lock.owner              one run at a time

Every result is written to tmp/ and renamed into place in one ``os.rename``, so after a crash or
SIGKILL at any moment a result either exists whole or not at all. Leftovers in tmp/ are garbage
and are removed by the next run.

Nothing read back is trusted without a check. meta.json records every file of a result with its
size and sha256: a reused result is checked cheaply (the same files, the same sizes) on every run,
and fully (every sha256) before a stage reads it and by ``edgedistill verify``. A bundle's
manifest.json lists the sha256 of each of its files; gate, bench, ingest and publishing check it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from edgedistill.core.bundles import MANIFEST, NOT_IN_IDENTITY, check_bundle, read_manifest, seal_bundle
from edgedistill.core.errors import IntegrityError, StoreBusy
from edgedistill.core.files import (
    file_records,
    find_difference,
    fsync_dir,
    hash_tree,
    make_dir,
    records_hash,
    write_json,
)

META = "meta.json"
METRICS = "metrics.json"
RUNNER_FILES = (META, METRICS)  # the runner's bookkeeping inside a result, not part of a bundle


# ---- the store ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """A stage result in the store. problem: None when its cheap check passed, else what is wrong."""

    stage: str
    key: str
    path: Path
    meta: dict
    problem: str | None = None

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]


def _check_meta(meta: Any) -> str | None:
    if not isinstance(meta, dict) or not isinstance(meta.get("content_hash"), str):
        return "meta.json is not one edgedistill wrote"
    files = meta.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(r, dict) and isinstance(r.get("size"), int) and isinstance(r.get("sha256"), str) for r in files.values())):
        return "meta.json's file records are malformed"
    return None


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

    def _load(self, stage: str, path: Path) -> Result:
        """The result in path, cheaply checked: meta.json readable, the recorded files, the recorded sizes."""
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            return Result(stage, path.name, path, {}, "meta.json is missing")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return Result(stage, path.name, path, {}, "meta.json is unreadable")
        problem = _check_meta(meta)
        if problem is None and meta.get("files") is not None:
            problem = find_difference(path, meta["files"], full=False, ignore=(META,))
        return Result(stage, path.name, path, meta if isinstance(meta, dict) else {}, problem)

    def get(self, stage: str, key: str) -> Result | None:
        """The result under this key (its problem set when its cheap check fails), or None."""
        path = self.result_path(stage, key)
        return self._load(stage, path) if path.is_dir() else None

    def full_check(self, result: Result) -> str | None:
        """Every file's sha256 against meta.json (results written before file records: the content hash)."""
        if result.problem:
            return result.problem
        files = result.meta.get("files")
        if files is None:
            return None if hash_tree(result.path, exclude=(META,)) == result.content_hash else "its content hash differs"
        return find_difference(result.path, files, full=True, ignore=(META,))

    def set_aside(self, path: Path, problem: str) -> Path:
        """Move a damaged result or bundle out of the way, into damaged/, with a note of what was wrong."""
        rel = path.relative_to(self.root).as_posix().replace("/", "-")
        holder = make_dir(self.root / "damaged", f"{rel}-{time.strftime('%Y%m%dT%H%M%S')}-")
        os.rename(path, holder / path.name)
        (holder / "problem.txt").write_text(problem + "\n")
        return holder

    def new_tmp(self, stage: str) -> Path:
        return make_dir(self.root / "tmp", f"{stage}-")

    def commit(self, stage: str, key: str, tmp: Path, meta: dict, replace: bool = False) -> Result:
        """Seal a finished result: file records and content hash in meta.json, then one rename into results/."""
        files = file_records(tmp, exclude=(META,))
        meta = dict(meta, files=files, content_hash=records_hash(files))
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
        fsync_dir(final.parent)
        shutil.rmtree(self.work_dir(stage, key), ignore_errors=True)
        return Result(stage, key, final, meta)

    def _groups(self, kind: str, name: str | None) -> list[Path]:
        """Folders under results/ (one per stage) or bundles/ (one per name), or just the named one."""
        base = self.root / kind
        folders = [base / name] if name else sorted(base.iterdir()) if base.is_dir() else []
        return [d for d in folders if d.is_dir()]

    def results(self, stage: str | None = None) -> Iterator[Result]:
        """Every result, damaged ones too (their problem set)."""
        for d in self._groups("results", stage):
            for p in sorted(d.iterdir()):
                if p.is_dir():
                    yield self._load(d.name, p)

    def latest(self, stage: str, pipeline: str) -> Result | None:
        """The most recently finished result of a stage for a pipeline (to explain a cache miss)."""
        mine = [r for r in self.results(stage) if not r.problem and r.meta.get("pipeline") == pipeline]
        return max(mine, key=lambda r: r.meta.get("finished", ""), default=None)

    # ---- runs (what gc keeps) -------------------------------------------------------------------
    def record_run(self, pipeline: str, stage: str, key: str) -> None:
        """Note that the latest run of pipeline uses this key for stage (gc keeps it, and its checkpoints)."""
        path = self.root / "runs" / f"{pipeline}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            keys = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            keys = {}
        if not isinstance(keys, dict) or keys.get(stage) != key:
            write_json(path, dict(keys if isinstance(keys, dict) else {}, **{stage: key}))

    def runs(self) -> dict[str, dict[str, str]]:
        out = {}
        for path in sorted((self.root / "runs").glob("*.json")):
            try:
                keys = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(keys, dict):
                out[path.stem] = {str(k): str(v) for k, v in keys.items()}
        return out

    def garbage(self, keep: int) -> list[Path]:
        """What `edgedistill gc` removes: results and checkpoints that neither the latest run of any
        pipeline nor the `keep` newest versions of any bundle came from, leftovers of killed runs,
        and what was set aside as damaged. Published bundles are releases: never garbage."""
        needed = {(stage, key) for keys in self.runs().values() for stage, key in keys.items()}
        for name in {n for n, _, _ in self.bundles()}:
            for _, _, path in sorted(self.bundles(name), key=lambda b: -b[1])[:keep]:
                try:
                    needed |= {(s, k) for s, k in read_manifest(path).get("results", {}).items()}
                except IntegrityError:
                    continue
        out = [r.path for r in self.results() if (r.stage, r.key) not in needed]
        for d in self._groups("work", None):
            out += [p for p in sorted(d.iterdir()) if (d.name, p.name) not in needed]
        for kind in ("damaged", "tmp"):
            if (self.root / kind).is_dir():
                out += sorted((self.root / kind).iterdir())
        for d in self._groups("bundles", None):  # what a killed update_bundle left beside a version that exists
            out += sorted(p for p in d.iterdir() if (m := re.fullmatch(r"\.(v[0-9]+)\.(update|old)-.*", p.name))
                          and (d / m.group(1) / MANIFEST).is_file())
        return out

    # ---- bundles ----------------------------------------------------------------------------
    def bundle_dir(self, name: str) -> Path:
        return self.root / "bundles" / name

    def _versions(self, name: str) -> dict[int, Path]:
        d = self.bundle_dir(name)
        return {int(p.name[1:]): p for p in d.iterdir() if re.fullmatch(r"v[0-9]+", p.name)} if d.is_dir() else {}

    def bundles(self, name: str | None = None, with_manifest: bool = True) -> Iterator[tuple[str, int, Path]]:
        """(name, version, folder) of the published bundles; with_manifest=False: every v<N> folder."""
        for d in self._groups("bundles", name):
            for v, p in sorted(self._versions(d.name).items()):
                if not with_manifest or (p / MANIFEST).is_file():
                    yield d.name, v, p

    def publish_bundle(self, name: str, src: Path, manifest: dict,
                       warn=lambda msg: None) -> tuple[int, Path, str]:
        """Copy a bundle result to bundles/<name>/v<N>/. N grows only when the content changes:
        content already published under some version returns that version ("unchanged").
        A published version that no longer matches its manifest is set aside (warn says so); if it
        held this content, it is published again under its own number ("restored")."""
        content = hash_tree(src, exclude=RUNNER_FILES + NOT_IN_IDENTITY)
        versions = self._versions(name)
        restore = None
        for v, path in sorted(versions.items()):
            published, problem = check_bundle(path)
            if problem is None:
                if published.get("content_sha256") == content:
                    return v, path, "unchanged"
                continue
            was = published.get("content_sha256") if published else None
            aside = self.set_aside(path, problem)
            warn(f"published bundle {name} v{v} is damaged ({problem}); set aside in {aside}")
            if was == content:
                restore = v
        version = restore or max(versions, default=0) + 1
        tmp = self.new_tmp(f"bundle-{name}")
        for f in sorted(src.iterdir()):
            if f.name not in RUNNER_FILES:
                shutil.copy2(f, tmp / f.name)
        seal_bundle(tmp, dict(manifest, name=name, version=version, content_sha256=content))
        final = self.bundle_dir(name) / f"v{version}"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return version, final, "restored" if restore else "new"
