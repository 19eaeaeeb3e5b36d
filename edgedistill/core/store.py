"""The artifact store: immutable stage results, bundles, and the locks that let runs share it.

Layout under the store root (``./artifacts`` by default)::

    results/<stage>/<key>/        one finished stage result; meta.json inside; never modified
    work/<stage>/<key>/           checkpoints of a stage that has not finished (resume from here)
    tmp/                          results being written; renamed into results/ on success
    bundles/<name>/v<N>/          published bundles, manifest.json inside
    runs/<pipeline>.json          the cache key of each stage in the latest run of a pipeline (for gc)
    runs/sweep@<name>@<trial>.json  the same for each trial of a sweep, kept while sweeps/<name>/ has the trial
    sweeps/<name>/                a sweep's trials, its Pareto page and Ray Tune's experiment (edgedistill.sweep)
    damaged/                      results and bundles that failed their check, set aside for a look
    lock, holders/                runs hold `lock` shared, gc exclusive; holders/ says who (pid, since)
    locks/                        one lock per result being computed, per bundle name, per runs file
    cache/stat.sqlite             sha256 of source files by stat (core.statcache): unchanged ones are not read

Every result is written to tmp/ and renamed into place in one ``os.rename``, so after a crash or
SIGKILL at any moment a result either exists whole or not at all. Leftovers in tmp/ of a process that
is gone are garbage, removed by the next run on this host (or gc).

Several runs (a sweep's trials, two people) can use one store at once: each holds the store's lock
shared; a result is computed under its own lock, so a second run that needs it waits and reuses it;
bundles of one name are published one at a time. gc takes the store's lock exclusive: it waits for the
runs (or refuses at once), and no run starts while it deletes.

Nothing read back is trusted without a check. meta.json records every file of a result with its
size and sha256: a reused result is checked cheaply (the same files, the same sizes) on every run,
and fully (every sha256) before a stage reads it and by ``edgedistill verify``. A bundle's
manifest.json lists the sha256 of each of its files; gate, bench, ingest and publishing check it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
from edgedistill.core.locks import FileLock, held, process_tag, writer_gone

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


class StoreLock:
    """The store's lock and this process's holder mark, released together (`with`, or release())."""

    def __init__(self, lock: FileLock, mark: FileLock):
        self.lock, self.mark = lock, mark

    def release(self) -> None:
        self.mark.release()  # the mark file stays (another thread of this process may hold it); gc removes it
        self.lock.release()

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- locks ------------------------------------------------------------------------------
    def lock(self, wait_s: float = 0.0, exclusive: bool = False, what: str = "run") -> StoreLock:
        """Take the store's lock: shared for a run (runs share a store), exclusive for gc and a forced run.
        Raises StoreBusy naming the holders when it is not free within wait_s seconds. A process killed
        with SIGKILL releases it (an OS file lock). Cleans what gone writers left in tmp/."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / "lock", exclusive=exclusive)
        if not lock.acquire(wait_s):
            holders = self.holders()
            raise StoreBusy(
                f"store '{self.root}' is in use by {', '.join(holders) or 'another edgedistill process'}; "
                + (f"{what} needs it alone: wait for them to finish, or pass --wait SECONDS" if exclusive else
                   "wait for it to finish, pass --wait SECONDS, or use another --store"))
        try:
            self._clean_tmp()  # before this process's own mark: what it left earlier is not under way
            mark = FileLock(self.root / "holders" / process_tag(), exclusive=False)
            mark.acquire(None)  # held while this process holds the store: writer_gone() asks the kernel
            mark.path.write_text(f"{what} pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        except BaseException:
            lock.release()
            raise
        return StoreLock(lock, mark)

    def holders(self) -> list[str]:
        """Who holds the store's lock: 'run pid N since HH:MM:SS', live processes only."""
        folder = self.root / "holders"
        out = []
        for mark in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not writer_gone(mark.name, folder):
                with contextlib.suppress(OSError):
                    out.append(mark.read_text().strip() or mark.name)
        return out

    def _clean_tmp(self) -> None:
        """What writers that are gone left half-written in tmp/ (the kernel's locks say which are gone)."""
        tmp = self.root / "tmp"
        for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
            if writer_gone(entry.name, self.root / "holders"):
                shutil.rmtree(entry, ignore_errors=True)
        with contextlib.suppress(OSError):  # gone when nothing is under way (make_dir copes with the race)
            tmp.rmdir()

    def computing(self, stage: str, key: str, on_wait=None) -> "contextlib.AbstractContextManager[None]":
        """The lock under which one run computes a result: another run that needs it waits (on_wait is
        told), then finds it in the store."""
        return held(self.root / "locks" / f"{stage}-{key}", on_wait)

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
        try:
            os.rename(path, holder / path.name)
        except FileNotFoundError:  # another run found it damaged first and moved it
            shutil.rmtree(holder, ignore_errors=True)
            return path
        (holder / "problem.txt").write_text(problem + "\n")
        return holder

    def new_tmp(self, stage: str) -> Path:
        return make_dir(self.root / "tmp", f"{stage}{process_tag()}")

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
        with held(self.root / "locks" / f"runs-{pipeline}"):  # two runs of one pipeline: no update lost
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

    def _trial_gone(self, run: str) -> bool:
        """Whether a runs file is a sweep trial's (runs/sweep@<name>@<trial>.json: no pipeline name has an @)
        whose folder is gone (sweep@<name>@shared: the stages all its trials share, kept with the sweep)."""
        parts = run.split("@")
        if len(parts) != 3 or parts[0] != "sweep":
            return False
        _, sweep, trial = parts
        folder = self.root / "sweeps" / sweep
        return not (folder if trial == "shared" else folder / "trials" / trial).is_dir()

    def garbage(self, keep: int) -> list[Path]:
        """What `edgedistill gc` removes: results and checkpoints that neither the latest run of any
        pipeline nor the `keep` newest versions of any bundle came from, leftovers of killed runs,
        and what was set aside as damaged. Published bundles are releases: never garbage. A sweep's trial
        keeps its results while its folder (sweeps/<name>/trials/<trial>/) is there."""
        runs = self.runs()
        gone = [name for name in runs if self._trial_gone(name)]  # a sweep's trial whose folder was removed
        needed = {(stage, key) for name, keys in runs.items() if name not in gone for stage, key in keys.items()}
        for name in {n for n, _, _ in self.bundles()}:
            for _, _, path in sorted(self.bundles(name), key=lambda b: -b[1])[:keep]:
                try:
                    needed |= {(s, k) for s, k in read_manifest(path).get("results", {}).items()}
                except IntegrityError:
                    continue
        out = [r.path for r in self.results() if (r.stage, r.key) not in needed]
        for d in self._groups("work", None):
            out += [p for p in sorted(d.iterdir()) if (d.name, p.name) not in needed]
        out += [self.root / "runs" / f"{name}.json" for name in gone]
        for kind in ("damaged", "tmp"):
            if (self.root / kind).is_dir():
                out += sorted((self.root / kind).iterdir())
        for d in self._groups("bundles", None):  # what a killed update_bundle left beside a version that exists
            out += sorted(p for p in d.iterdir() if (m := re.fullmatch(r"\.(v[0-9]+)\.(update|old)-.*", p.name))
                          and (d / m.group(1) / MANIFEST).is_file())
        return out

    def tidy_locks(self) -> None:
        """Lock files of results, bundles and runs files, and the holder marks of other processes: only
        with the store's lock held exclusive (gc), when no other process can hold or wait for one."""
        shutil.rmtree(self.root / "locks", ignore_errors=True)
        for mark in sorted((self.root / "holders").iterdir()) if (self.root / "holders").is_dir() else []:
            if mark.name != process_tag():
                mark.unlink(missing_ok=True)

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
        held this content, it is published again under its own number ("restored"). Runs publishing
        bundles of one name at once take turns."""
        with held(self.root / "locks" / f"bundle-{name}"):
            return self._publish_bundle(name, src, manifest, warn)

    def _publish_bundle(self, name: str, src: Path, manifest: dict, warn) -> tuple[int, Path, str]:
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
