"""ARM targets: bundles carry their test inputs, and `edgedistill verify BUNDLE --target aarch64:CPU` runs
them with ONNX Runtime for aarch64 under QEMU, records the answers and the gate reads them."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from edgedistill.cli import main
from edgedistill.core.errors import ConfigError
from edgedistill.core.files import sha256_file
from edgedistill.runtime import targets


@pytest.fixture(scope="session")
def aarch64():
    """The emulated aarch64 target, built once (about a minute; cached in ~/.cache/edgedistill/targets).
    Skipped, saying why, only where this machine cannot build or run one; a build that fails here fails."""
    root = targets.default_root()
    try:
        targets.status(root, same_versions=True)
    except ConfigError:
        missing = [tool for tool in ("qemu-aarch64-static", "debootstrap", "dpkg-deb") if not shutil.which(tool)]
        if missing:
            pytest.skip(f"no emulated aarch64 target: {', '.join(missing)} not installed (.ci/run installs qemu-user-static "
                        f"and debootstrap with apt)")
        if os.geteuid() != 0:
            pytest.skip("no emulated aarch64 target: building one needs root once (`sudo edgedistill target setup aarch64`)")
        targets.setup(root, log=lambda m: None)
    return root


def test_a_bundle_carries_its_test_inputs_and_bench_py_measures_accuracy_on_them(bundle, tmp_path):
    x, y = np.load(bundle / "test_inputs.npy"), np.load(bundle / "test_labels.npy")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"test_inputs.npy", "test_labels.npy"} <= set(manifest["files"])
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert x.dtype == np.float32 and x.shape[1:] == (pre["channels"], pre["height"], pre["width"]) and len(x) == len(y) > 0
    proc = subprocess.run([sys.executable, "-I", "bench.py", "--inputs", "test_inputs.npy", "--labels", "test_labels.npy",
                           "--logits", str(tmp_path / "logits.npy"), "--out", str(tmp_path / "r.json")],
                          cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result, logits = json.loads((tmp_path / "r.json").read_text()), np.load(tmp_path / "logits.npy")
    assert "latency_ms" not in result and result["images"] == len(y)  # verify mode times nothing
    assert result["accuracy"] == pytest.approx(100 * (logits.argmax(1) == y).mean())


def test_no_test_inputs_when_include_test_set_is_0(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    assert main(["run", str(pipeline), "--store", str(store), "--set", "bundle.include_test_set=0"]) == 0
    v2 = store / "bundles" / "tiny" / "v2"
    assert not (v2 / "test_inputs.npy").exists()
    assert main(["verify", str(v2), "--target", "aarch64", "--no-record"]) == 2
    assert "carries no test inputs" in capsys.readouterr().err


@pytest.mark.parametrize("target, message", [("aarch64:cortex-a75", "did you mean 'cortex-a76'"),
                                             ("x86_64", "unknown target 'x86_64'")])
def test_unknown_targets_are_clear_errors(bundle, capsys, target, message):
    assert main(["verify", str(bundle), "--target", target]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_target_says_how_to_build_it(bundle, tmp_path, capsys):
    assert main(["verify", str(bundle), "--target", "aarch64:cortex-a72", "--root", str(tmp_path / "none")]) == 2
    assert "edgedistill target setup aarch64" in capsys.readouterr().err


def test_a_target_built_for_other_versions_is_refused(bundle, tmp_path, capsys):
    """A comparison must be of the CPU, not of two onnxruntime releases."""
    root = tmp_path / "aarch64"
    root.mkdir()
    (root / "target.json").write_text(json.dumps({"arch": "aarch64", "onnxruntime": "1.0.0", "numpy": "1.0.0"}))
    assert main(["verify", str(bundle), "--target", "aarch64:cortex-a72", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "built for other versions (onnxruntime 1.0.0 there" in err and "target setup aarch64 --force" in err


def reference_agreement(bundle) -> float:
    """Top-1 agreement (%) of model.onnx on this machine with itself run without graph optimizations
    (ONNX Runtime then computes the QDQ graph as written: dequantize, float op, quantize)."""
    import onnxruntime as ort

    x = np.load(bundle / "test_inputs.npy")
    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level, opts.intra_op_num_threads = level, 1
        sess = ort.InferenceSession(str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        runs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1))
    return 100.0 * float((runs[0] == runs[1]).mean())


@pytest.mark.slow
def test_verify_on_emulated_aarch64_records_the_answers_and_the_gate_reads_them(bundle, aarch64, tmp_path, capsys):
    version = json.loads((bundle / "manifest.json").read_text())["content_sha256"]
    devices = tmp_path / "devices.yaml"  # a device of the devices file, recorded under its own name
    devices.write_text(yaml.safe_dump({"phone": {"target": "aarch64:cortex-a76", "notes": "a Cortex-A76 phone, emulated"}}))
    assert main(["verify", str(bundle), "--target", "aarch64:cortex-a53", "--device", "phone", "--devices", str(devices),
                 "--root", str(aarch64)]) == 0
    out = capsys.readouterr().out
    assert "aarch64-a53" in out and "phone" in out
    report = json.loads((bundle / "report.json").read_text())
    assert report["devices"]["phone"]["target"] == "aarch64:cortex-a76"
    for name in ("aarch64-a53", "phone"):
        d = report["devices"][name]
        assert d["emulated"] is True and d["device"]["machine"] == "aarch64" and "latency_ms" not in d
        assert set(d["models"]) == {"model.onnx", "model.ort"} and d["images"] == len(np.load(bundle / "test_labels.npy"))
        assert 0 <= d["top1_agreement"] <= 100 and d["max_abs_diff"] >= 0 and 0 <= d["accuracy"] <= 100
        # the emulated cores differ from this machine no more than this machine's own integer kernels differ
        # from ONNX Runtime's reference QDQ arithmetic (optimizations off): on this tiny, near-tied INT8 model
        # that is 94% top-1 here (AVX-512 VNNI); the ARM cores give the reference's answers
        assert d["top1_agreement"] >= min(95.0, reference_agreement(bundle)) - 1e-9, d
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert all(sha256_file(bundle / f) == digest for f, digest in manifest["files"].items())
    assert manifest["content_sha256"] == version  # a verification is recorded, the bundle's content is unchanged
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "| aarch64-a53 | cortex-a53 (QEMU, emulated) | - | - |" in card
    budgets = tmp_path / "b.yaml"
    budgets.write_text(yaml.safe_dump({"devices": {"aarch64-a53": {"min_top1_agreement": 90.0, "min_accuracy": 10.0}}}))
    assert main(["gate", str(bundle), "--budgets", str(budgets)]) == 0
    budgets.write_text(yaml.safe_dump({"devices": {"aarch64-a53": {"max_latency_ms_p90": 100.0},
                                                   "aarch64-a72": {"min_top1_agreement": 99.5}}}))
    assert main(["gate", str(bundle), "--budgets", str(budgets)]) == 1
    out = capsys.readouterr().out
    assert "emulated: no latency" in out and "aarch64-a72.top1_agreement" in out and "no result" in out
