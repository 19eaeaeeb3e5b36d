"""Bad input and damaged files, as a careful user and an attacker would try them (issue 7).

One table: each row sets something up, runs one command in-process, and says what must happen:
the exit code (2 for bad input, with one line on stderr of at most ~300 characters naming the
problem; 0 where edgedistill must recover on its own), a pattern that line (or the output, for
0) must hold, and a check of what must not have been lost or touched afterwards. Every row failed
on main before the fix.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from edgedistill.cli import main
from edgedistill.core.files import sha256_file
from edgedistill.core.store import Store

from conftest import write_pipeline

MAX_ERROR = 300  # edgedistill.cli.MAX_ERROR, the longest error line ("one line, ~300 characters")


def verify_bundle(path: Path) -> None:
    from edgedistill.core.bundles import verify_bundle as verify

    verify(path)

# ---- what a row can set up ----------------------------------------------------------------------


@dataclass
class Env:
    tmp: Path
    tiny_run: tuple
    monkeypatch: pytest.MonkeyPatch
    cleanups: list[Callable] = field(default_factory=list)
    saved: dict = field(default_factory=dict)

    def tiny(self) -> tuple[Path, Path]:
        """A private copy of the tiny pipeline's folder and finished store (every stage cached)."""
        if "tiny" not in self.saved:
            pipeline, store = self.tiny_run
            shutil.copytree(store, self.tmp / "store")
            shutil.copytree(pipeline.parent, self.tmp / "p")
            self.saved["tiny"] = (self.tmp / "p" / pipeline.name, self.tmp / "store")
        return self.saved["tiny"]

    def bundle(self) -> Path:
        """A copy of the tiny pipeline's published bundle."""
        if "bundle" not in self.saved:
            shutil.copytree(self.tiny_run[1] / "bundles" / "tiny" / "v1", self.tmp / "v1")
            self.saved["bundle"] = self.tmp / "v1"
        return self.saved["bundle"]

    def pipeline(self, **sections) -> Path:
        """A tiny digits pipeline in its own folder (store: tmp/s)."""
        return write_pipeline(self.tmp / "p2", **sections)

    def result(self, bundle: Path, name: str = "pi4", **changes) -> Path:
        """A device's bench.py result for this bundle's model (the bundle's own benchmark of it), changed."""
        report = json.loads((bundle / "report.json").read_text())
        result = json.loads(json.dumps(report["models"][report["shipped"]]))
        result["device"]["name"] = name
        for dotted, value in changes.items():
            node = result
            *parents, last = dotted.split("__")
            for p in parents:
                node = node[p]
            node[last] = value
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(result))
        return path

    def images(self, root: Path, classes: dict[str, int], size: int = 12) -> Path:
        for c, n in classes.items():
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((size, size), (37 * i + 11 * len(c)) % 256, np.uint8)).save(root / c / f"{i}.png")
        return root


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def finetune_result(store: Path) -> Path:
    return next((store / "results" / "finetune").iterdir())


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (a decompression bomb's shape) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# ---- the rows' set-ups: each returns the command line ---------------------------------------------

def ingest_through_symlink(env):
    b = env.bundle()
    env.saved["victim"] = env.tmp / "victim.txt"
    env.saved["victim"].write_text("precious")
    (b / "MODEL_CARD.md").unlink()
    (b / "MODEL_CARD.md").symlink_to(env.saved["victim"])
    return ["ingest", str(env.result(b)), str(b)]


def victim_untouched(env):
    assert env.saved["victim"].read_text() == "precious"


def preset_calls_code(env):
    env.saved["victim"] = env.tmp / "victim.txt"
    env.saved["victim"].write_text("precious")
    preset = env.tmp / "evil.yaml"
    preset.write_text(yaml.safe_dump({"arch": "python:logging:basicConfig",
                                      "kwargs": {"filename": str(env.saved["victim"]), "filemode": "w"}}))
    return ["run", str(env.pipeline(teacher={"preset": str(preset)})), "--store", str(env.tmp / "s"), "--until", "finetune"]


def stored_model_json_calls_code(env):
    pipeline, store = env.tiny()
    env.saved["victim"] = env.tmp / "victim.txt"
    env.saved["victim"].write_text("precious")
    folder = env.tmp / "other_teacher"
    shutil.copytree(finetune_result(store), folder)
    info = json.loads((folder / "model.json").read_text())
    info["preset"] = {"arch": "python:logging:basicConfig", "kwargs": {"filename": str(env.saved["victim"]), "filemode": "w"}}
    (folder / "model.json").write_text(json.dumps(info))
    return ["run", str(pipeline), "--store", str(store), "--set", f"distill.extra_teachers=[{{model: {folder}}}]"]


def gate_on_flipped_model(env):
    b = env.bundle()
    flip_byte(b / "model.onnx")
    return ["gate", str(b), "--budgets", str(env.tiny_run[0].parent / "budgets.yaml")]


def bench_on_flipped_model(env):
    b = env.bundle()
    flip_byte(b / "model.onnx")
    return ["bench", str(b), "--runs", "5", "--min-seconds", "0"]


def ingest_into_flipped_model(env):
    b = env.bundle()
    result = env.result(b)  # measured on the original model
    flip_byte(b / "model.onnx")
    env.saved["manifest"] = (b / "manifest.json").read_text()
    return ["ingest", str(result), str(b)]


def manifest_unchanged(env):
    assert (env.bundle() / "manifest.json").read_text() == env.saved["manifest"]


def published_bundle_replaced(env):
    pipeline, store = env.tiny()
    (store / "bundles" / "tiny" / "v1" / "model.onnx").write_bytes(b"garbage")
    return ["run", str(pipeline), "--store", str(store)]


def published_bundle_restored(env):
    verify_bundle(env.tiny()[1] / "bundles" / "tiny" / "v1")


def cached_result_file_deleted(env):
    pipeline, store = env.tiny()
    (finetune_result(store) / "model.pt").unlink()
    return ["plan", str(pipeline), "--store", str(store)]


def cached_result_file_deleted_run(env):
    pipeline, store = env.tiny()
    (finetune_result(store) / "model.pt").unlink()
    return ["run", str(pipeline), "--store", str(store)]


def result_recomputed(env):
    store = env.tiny()[1]
    assert (finetune_result(store) / "model.pt").is_file()
    assert [p for p in (store / "damaged").iterdir()]  # what was wrong is kept for a look


def cached_result_corrupted_then_read(env):
    pipeline, store = env.tiny()
    flip_byte(finetune_result(store) / "model.pt", offset=-20)  # same size: only a full check sees it
    return ["run", str(pipeline), "--store", str(store), "--set", "distill.temperature=2"]


def verify_store_with_corruption(env):
    pipeline, store = env.tiny()
    flip_byte(finetune_result(store) / "model.pt", offset=-20)
    return ["verify", "--store", str(store)]


def ingest_string_p90(env):
    b = env.bundle()
    env.saved["manifest"] = (b / "manifest.json").read_text()
    return ["ingest", str(env.result(b, latency_ms__p90="0.5")), str(b)]


def bundle_still_verifies(env):
    verify_bundle(env.bundle())
    assert "pi4" not in json.loads((env.bundle() / "report.json").read_text())["devices"]


def ingest_negative_p90(env):
    b = env.bundle()
    return ["ingest", str(env.result(b, latency_ms__p90=-1.0)), str(b)]


def gate_on_corrupt_report(env):
    b = env.bundle()
    (b / "report.json").write_text("{")
    return ["gate", str(b), "--budgets", str(env.tiny_run[0].parent / "budgets.yaml")]


def gate_with_nothing_to_check(env):
    budgets = env.tmp / "b.yaml"
    budgets.write_text(yaml.safe_dump({"regression": {"max_size_increase_pct": 5}}))
    return ["gate", str(env.bundle()), "--budgets", str(budgets)]


def one_class(env):
    root = env.images(env.tmp / "imgs", {"only": 14})
    p = env.pipeline(data={"kind": "imagefolder", "train_dir": str(root), "channels": 1, "mean": [0.5], "std": [0.5]})
    return ["run", str(p), "--store", str(env.tmp / "s"), "--until", "prepare"]


def class_with_one_image(env):
    train = env.images(env.tmp / "train", {"a": 10, "b": 1})
    test = env.images(env.tmp / "test", {"a": 2, "b": 2})
    p = env.pipeline(data={"kind": "imagefolder", "train_dir": str(train), "test_dir": str(test), "channels": 1,
                           "mean": [0.5], "std": [0.5]})
    return ["run", str(p), "--store", str(env.tmp / "s"), "--until", "prepare"]


def zero_std(env):
    return ["plan", str(env.pipeline()), "--store", str(env.tmp / "s"), "--set", "data.std=[0]"]


def nan_loss(env):
    return ["run", str(env.pipeline()), "--store", str(env.tmp / "s"), "--until", "finetune", "--set", "teacher.lr=1.0e+30"]


def nothing_cached_for_finetune(env):
    assert not (env.tmp / "s" / "results" / "finetune").exists()


def decompression_bomb(env):
    root = env.images(env.tmp / "imgs", {"a": 8, "b": 8})
    png_header_only(root / "b" / "bomb.png", 60_000, 60_000)
    p = env.pipeline(data={"kind": "imagefolder", "train_dir": str(root), "channels": 1, "mean": [0.5], "std": [0.5]})
    return ["run", str(p), "--store", str(env.tmp / "s"), "--until", "prepare"]


def calib_object_npy(env):
    np.save(env.tmp / "calib.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return ["quantize", str(env.bundle() / "model.onnx"), "--calib", str(env.tmp / "calib.npy"), "--mode", "fixed",
            "--out", str(env.tmp / "q.onnx")]


def calib_wrong_rank(env):
    np.save(env.tmp / "calib.npy", np.zeros((10, 8), np.float32))
    return ["quantize", str(env.bundle() / "model.onnx"), "--calib", str(env.tmp / "calib.npy"), "--mode", "fixed",
            "--out", str(env.tmp / "q.onnx")]


def corrupt_checkpoint(env):
    from edgedistill.core.runner import Runner
    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages import STAGES

    p, store = env.pipeline(), env.tmp / "s"
    assert main(["run", str(p), "--store", str(store), "--until", "prepare"]) == 0
    key = {s.stage: s.key for s in Runner(Store(store), STAGES).plan(load_pipeline(p))}["finetune"]
    (store / "work" / "finetune" / key).mkdir(parents=True)
    (store / "work" / "finetune" / key / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    return ["run", str(p), "--store", str(store), "--until", "finetune", "--force", "finetune"]


def corrupt_meta_json(env):
    pipeline, store = env.tiny()
    (finetune_result(store) / "meta.json").write_text("{")
    return ["ls", "--store", str(store)]


def wait_nan(env):
    pipeline, store = env.tiny()
    return ["run", str(pipeline), "--store", str(store), "--wait", "nan"]


def wait_negative(env):
    pipeline, store = env.tiny()
    return ["run", str(pipeline), "--store", str(store), "--wait", "-1"]


def empty_path_from_set(env):
    empty = env.tmp / "cwd"
    empty.mkdir()
    env.monkeypatch.chdir(empty)  # on main the empty value became this folder
    return ["plan", str(env.pipeline()), "--store", str(env.tmp / "s"), "--set", "data.kind=imagefolder",
            "--set", "data.train_dir="]


def yaml_alias_bomb(env):
    path = env.tmp / "bomb.yaml"
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path.write_text("\n".join(lines + ["name: [*f]"]) + "\n")
    return ["plan", str(path), "--store", str(env.tmp / "s")]


def unknown_student_in_plan(env):
    return ["plan", str(env.pipeline()), "--store", str(env.tmp / "s"), "--set", "student.preset=no_such_student"]


def disk_full(env):
    mount = env.tmp / "small_disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN) to fill a disk")
    env.cleanups.append(lambda: subprocess.run(["umount", "-l", str(mount)], check=False))
    return ["run", str(env.pipeline()), "--store", str(mount / "s"), "--until", "prepare"]


def disk_full_left_nothing(env):
    store = env.tmp / "small_disk" / "s"
    assert not (store / "results").exists() and not any((store / "tmp").iterdir())


def bundle_folder_without_manifest(env):
    pipeline, store = env.tiny()
    (store / "bundles" / "tiny" / "v1" / "manifest.json").unlink()
    return ["run", str(pipeline), "--store", str(store)]


def umask_022(env):
    pipeline, store = env.tiny()
    shutil.rmtree(store / "bundles")
    old = os.umask(0o022)
    env.cleanups.append(lambda: os.umask(old))
    return ["run", str(pipeline), "--store", str(store)]


def published_with_umask_modes(env):
    v1 = env.tiny()[1] / "bundles" / "tiny" / "v1"
    assert oct(v1.stat().st_mode & 0o777) == oct(0o755)
    assert {oct(f.stat().st_mode & 0o777) for f in v1.iterdir()} == {oct(0o644)}


def device_string_injection(env):
    b = env.bundle()
    return ["ingest", str(env.result(b, device__cpu="Evil | <script>alert(1)</script> [x](http://a)")), str(b)]


def card_escaped(env):
    card = (env.bundle() / "MODEL_CARD.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;" in card and "Evil \\| " in card and "\\[x\\]" in card


def class_name_injection(env):
    root = env.images(env.tmp / "imgs", {"a|b": 30, "<img src=x onerror=alert(1)>": 30})
    # no budgets: two classes of flat gray images teach the tiny models little, and the gate is not the question here
    p = env.pipeline(data={"kind": "imagefolder", "train_dir": str(root), "channels": 1, "mean": [0.5], "std": [0.5]},
                     quantize={"mode": "fixed", "calibration_samples": 16}, budgets=None)
    return ["run", str(p), "--store", str(env.tmp / "s")]


def class_names_escaped(env):
    (bundle,) = (env.tmp / "s" / "bundles" / "tiny").iterdir()
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "<img" not in card and "a\\|b" in card and "&lt;img src=x onerror=alert(1)&gt;" in card


def ssh_user_is_an_option(env):
    b = env.bundle()
    env.monkeypatch.chdir(env.tmp)
    return ["bench", str(b), "--target", "ssh://-oProxyCommand=touch${IFS}pwned@127.0.0.1", "--runs", "5"]


def no_command_ran(env):
    assert not list(env.tmp.glob("pwned*"))


def bench_arguments_checked_first(env):
    import edgedistill.runtime.benchmark

    env.saved["benchmarked"] = []
    env.monkeypatch.setattr(edgedistill.runtime.benchmark, "bench_in_child",
                            lambda *a, **k: env.saved["benchmarked"].append(a) or {})
    return ["bench", str(env.bundle()), "--ingest", "--name", "not a name!"]


def nothing_benchmarked(env):
    assert env.saved["benchmarked"] == []


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env], list[str]]
    code: int
    pattern: str
    """Regex: in the error line (exit 2) or in the output (exit 0)."""
    after: Callable[[Env], None] = lambda env: None


CASES = [
    # --- bundles and device results
    Case("ingest never writes through a symlink", ingest_through_symlink, 2, r"MODEL_CARD\.md is a symbolic link", victim_untouched),
    Case("gate checks the manifest", gate_on_flipped_model, 2, r"model\.onnx differs from its recorded sha256"),
    Case("bench checks the manifest", bench_on_flipped_model, 2, r"model\.onnx differs from its recorded sha256"),
    Case("ingest checks the manifest", ingest_into_flipped_model, 2, r"model\.onnx differs", manifest_unchanged),
    Case("published bundle replaced in the store", published_bundle_replaced, 0, r"v1, restored", published_bundle_restored),
    Case("ingest: string p90, all or nothing", ingest_string_p90, 2, r"latency_ms\.p90: Input should be a valid number",
         bundle_still_verifies),
    Case("ingest: negative p90", ingest_negative_p90, 2, r"latency_ms\.p90: Input should be greater than or equal to 0",
         bundle_still_verifies),
    Case("gate on a corrupt report.json", gate_on_corrupt_report, 2, r"report\.json differs from its recorded sha256"),
    Case("gate with nothing to check", gate_with_nothing_to_check, 2, r"no budget that applies"),
    Case("bundle folder without manifest", bundle_folder_without_manifest, 0, r"v2, new"),
    Case("published files follow the umask", umask_022, 0, r"v1, new", published_with_umask_modes),
    Case("device strings escaped in the card", device_string_injection, 0, r"recorded device 'pi4'", card_escaped),
    Case("class names escaped in the card", class_name_injection, 0, r"bundle: ", class_names_escaped),
    Case("ssh user starting with '-'", ssh_user_is_an_option, 2, r"user '-oProxyCommand=touch\$\{IFS\}pwned' is not a plain user name",
         no_command_ran),
    Case("bench arguments checked before it runs", bench_arguments_checked_first, 2, r"device name 'not a name!' is not usable",
         nothing_benchmarked),
    # --- the store
    Case("cached result with a file deleted: plan", cached_result_file_deleted, 0, r"damaged \(model\.pt is missing\)"),
    Case("cached result with a file deleted: run", cached_result_file_deleted_run, 0,
         r"finetune result \w+ is damaged \(model\.pt is missing\); set aside", result_recomputed),
    Case("corrupted result, read by a stage", cached_result_corrupted_then_read, 0,
         r"finetune result \w+ is damaged \(model\.pt differs from its recorded sha256\)", result_recomputed),
    Case("verify --store finds a corrupted result", verify_store_with_corruption, 2, r"1 of \d+ items .* are damaged \(results/finetune/"),
    Case("corrupt checkpoint, --force", corrupt_checkpoint, 0, r"checkpoint .* cannot be read .*set aside as checkpoint\.pt\.damaged-"),
    Case("corrupt meta.json: ls", corrupt_meta_json, 0, r"DAMAGED: meta\.json is unreadable"),
    Case("disk full", disk_full, 2, r"no space left on device while writing \S+", disk_full_left_nothing),
    # --- configs
    Case("preset YAML calls code", preset_calls_code, 2, r"would import and run Python module 'logging'.*--trust-code logging",
         victim_untouched),
    Case("stored model.json calls code", stored_model_json_calls_code, 2, r"model\.json: arch 'python:logging:basicConfig' would import",
         victim_untouched),
    Case("--wait nan", wait_nan, 2, r"--wait: 'nan' must be a finite number of seconds"),
    Case("--wait -1", wait_negative, 2, r"--wait: '-1' must be a finite number of seconds, 0 or more"),
    Case("--set path=''", empty_path_from_set, 2, r"data\.train_dir: is empty"),
    Case("YAML alias bomb", yaml_alias_bomb, 2, r"more than 100,000 values \(nested YAML aliases\?\)"),
    Case("unknown student preset in plan", unknown_student_in_plan, 2, r"unknown student preset 'no_such_student'"),
    # --- data and training
    Case("one class", one_class, 2, r"the dataset has 1 class \(only\); a classifier needs at least 2"),
    Case("a class with one training image", class_with_one_image, 2, r"cannot hold out a val split from the 11 training examples"),
    Case("data.std 0", zero_std, 2, r"data\.std must be positive"),
    Case("non-finite loss", nan_loss, 2, r"finetune: the training loss became nan in epoch 1", nothing_cached_for_finetune),
    Case("decompression bomb", decompression_bomb, 2, r"bomb\.png' has more pixels than data\.max_image_pixels \(89,478,485\)"),
    Case("calibration .npy of objects", calib_object_npy, 2, r"cannot read '.*calib\.npy' as a numpy array file"),
    Case("calibration .npy of the wrong rank", calib_wrong_rank, 2,
         r"--calib '.*calib\.npy' gives float32 \(10, 8\) for input 'input', which takes float32 \(batch, 1, 8, 8\)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, tiny_run, monkeypatch, capsys):
    env = Env(tmp_path, tiny_run, monkeypatch)
    try:
        argv = case.setup(env)
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        if case.code == 2:
            last = err.strip().splitlines()[-1] if err.strip() else ""
            assert code == 2 and last.startswith("edgedistill: error: "), err[-2000:]
            assert len(last) <= len("edgedistill: error: ") + MAX_ERROR, last
            assert "Traceback" not in err
            assert re.search(case.pattern, last), last
        else:
            assert code == case.code, err[-2000:]
            assert re.search(case.pattern, out + err), (out + err)[-3000:]
        case.after(env)
    finally:
        for cleanup in reversed(env.cleanups):
            cleanup()


# ---- verify and gc, as a user runs them --------------------------------------------------------

def test_verify_a_good_bundle_and_store(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    assert main(["verify", str(store / "bundles" / "tiny" / "v1")]) == 0
    assert "files match manifest.json" in capsys.readouterr().out
    assert main(["verify", "--store", str(store)]) == 0
    assert "every file matches its record" in capsys.readouterr().out


def test_gc_keeps_what_the_latest_run_and_bundles_need(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    assert main(["run", str(pipeline), "--store", str(store), "--set", "distill.temperature=2"]) == 0
    old_distill = {p.name for p in (store / "results" / "distill").iterdir()}
    assert len(old_distill) == 2 and len(list(Store(store).bundles("tiny"))) == 2
    capsys.readouterr()
    assert main(["gc", "--store", str(store), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "would remove results/distill/" in dry and "would free" in dry
    assert len(list((store / "results" / "distill").iterdir())) == 2  # a dry run removes nothing
    assert main(["gc", "--store", str(store)]) == 0  # keep 1: v1's own distill result goes
    assert "removed results/distill/" in capsys.readouterr().out
    assert len(list((store / "results" / "distill").iterdir())) == 1
    assert [v for _, v, _ in Store(store).bundles("tiny")] == [1, 2]  # bundles are never removed
    assert main(["run", str(pipeline), "--store", str(store), "--set", "distill.temperature=2"]) == 0
    assert "done" not in capsys.readouterr().err  # everything the latest run needs was kept: all cached
    assert main(["verify", "--store", str(store)]) == 0


def test_damaged_bundle_with_other_content_is_set_aside_and_not_reused(tmp_path):
    store = Store(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"m1")
    store.publish_bundle("x", src, {})
    (tmp_path / "bundles" / "x" / "v1" / "model.onnx").write_bytes(b"tampered")
    (src / "model.onnx").write_bytes(b"m2")
    warnings = []
    version, path, status = store.publish_bundle("x", src, {}, warn=warnings.append)
    assert (version, status) == (2, "new") and "v1 is damaged" in warnings[0]
    assert not (tmp_path / "bundles" / "x" / "v1").exists() and sha256_file(path / "model.onnx") == sha256_file(src / "model.onnx")
