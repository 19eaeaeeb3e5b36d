"""Bundles on disk: manifest.json read and checked (every file's sha256, nothing missing or extra, no
links), sealed when published, and updated all or nothing (a full copy, then one atomic exchange)."""
from __future__ import annotations

import ctypes
import os
import shutil
import stat
from pathlib import Path

from edgedistill.core.errors import IntegrityError
from edgedistill.core.files import SHA256, find_difference, fsync_dir, make_dir, read_json, sha256_file, write_json

MANIFEST = "manifest.json"
# Files left out of a bundle's content identity (what decides its version), though listed with their
# sha256 in the manifest: ONNX Runtime's ORT-format converter does not write the same bytes twice
# for the same model (map order), and model.ort is derived from model.onnx, which does count.
NOT_IN_IDENTITY = ("model.ort",)


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
            fsync_dir(bundle.parent)
            shutil.rmtree(work)  # now the old bundle
            return
        old = bundle.with_name(f".{bundle.name}.old-{os.getpid()}")
        os.rename(bundle, old)
        os.rename(work, bundle)
        fsync_dir(bundle.parent)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
