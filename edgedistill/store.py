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

import ctypes
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from .errors import IntegrityError, StoreBusy

META = "meta.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
RUNNER_FILES = (META, METRICS)  # the runner's bookkeeping inside a result, not part of a bundle
# Files left out of a bundle's content identity (what decides its version), though listed with their
# sha256 in the manifest: ONNX Runtime's ORT-format converter does not write the same bytes twice
# for the same model (map order), and model.ort is derived from model.onnx, which does count.
NOT_IN_IDENTITY = ("model.ort",)
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in parent with the permissions mkdir gives under the umask
    (mkdtemp's are 0700, which published bundles must not inherit)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


# ---- bundles, wherever they are --------------------------------------------------------------

def read_manifest(bundle: Path) -> dict:
    """A bundle's manifest.json, checked to have the shape edgedistill writes."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise IntegrityError(f"'{bundle}' is not a bundle (no manifest.json); give a folder like "
                             f"artifacts/bundles/<name>/v1")
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not (isinstance(files, dict) and files and all(isinstance(k, str) and isinstance(v, str) and SHA256.fullmatch(v)
                                                      for k, v in files.items())):
        raise IntegrityError(f"'{path}' is not a manifest edgedistill wrote (no files with sha256)")
    return manifest


def check_bundle(bundle: Path) -> tuple[dict | None, str | None]:
    """(manifest, None) when every file of the bundle matches manifest.json and the manifest lists
    every file; else (the manifest if it could be read, what is wrong)."""
    try:
        manifest = read_manifest(bundle)
    except IntegrityError as e:
        return None, str(e)
    diff = find_difference(bundle, {f: {"sha256": h} for f, h in manifest["files"].items()}, full=True, ignore=(MANIFEST,))
    return manifest, f"'{bundle}' does not match its manifest.json: {diff}" if diff else None


def bundle_problem(bundle: Path) -> str | None:
    """None when the bundle matches its manifest, else what is wrong."""
    return check_bundle(bundle)[1]


def verify_bundle(bundle: Path) -> dict:
    """Check a bundle against its manifest (IntegrityError naming the file that differs); returns the manifest."""
    manifest, problem = check_bundle(bundle)
    if manifest is None:
        raise IntegrityError(problem)
    if problem:
        raise IntegrityError(f"bundle check failed: {problem}; rebuild it with `edgedistill run` or copy it again")
    return manifest


def seal_bundle(folder: Path, manifest: dict) -> None:
    """Write manifest.json listing the sha256 of every other file in folder."""
    files = {f.name: sha256_file(f) for f in sorted(Path(folder).iterdir()) if f.name != MANIFEST}
    write_json(Path(folder) / MANIFEST, dict(manifest, files=files))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE; Python's os has no call for
    it). False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def update_bundle(bundle: Path, new_files: dict[str, str], manifest_changes: dict) -> None:
    """Replace some of a bundle's files and refresh manifest.json, all or nothing.

    A sibling copy is made (hard links for the files that stay), the new files and manifest are
    written into it, then it is exchanged with the bundle in one atomic rename: a crash or SIGKILL at
    any moment leaves the old bundle or the new one, never a mix (where atomic exchange is missing,
    two renames; the copy is complete before either). Symlinks in the bundle are never followed:
    the caller has verified it, and nothing is written through an existing path."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    work = make_dir(bundle.parent, f".{bundle.name}.update-")
    try:
        for f in sorted(bundle.iterdir()):
            if f.name in new_files or f.name == MANIFEST:
                continue
            try:
                os.link(f, work / f.name, follow_symlinks=False)
            except OSError:
                shutil.copy2(f, work / f.name, follow_symlinks=False)
        for name, text in new_files.items():
            (work / name).write_text(text)
        seal_bundle(work, dict(manifest, **manifest_changes))
        os.chmod(work, stat.S_IMODE(os.lstat(bundle).st_mode))
        if _exchange(work, bundle):
            _fsync_dir(bundle.parent)
            shutil.rmtree(work)  # now the old bundle
            return
        old = bundle.with_name(f".{bundle.name}.old-{os.getpid()}")
        os.rename(bundle, old)
        os.rename(work, bundle)
        _fsync_dir(bundle.parent)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


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
        _fsync_dir(final.parent)
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
        _fsync_dir(final.parent)
        return version, final, "restored" if restore else "new"
