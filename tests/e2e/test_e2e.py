"""The whole pipeline on sklearn digits with tiny models: bundle contents, caching, overrides."""
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedistill.cli import main
from edgedistill.core.files import sha256_file
from edgedistill.core.store import Store
from edgedistill.data.image.spec import to_model_input


def latest_bundle(store):
    return max(Store(store).bundles("tiny"), key=lambda b: b[1])


def test_bundle_has_every_file_and_number(tiny_run):
    _, store = tiny_run
    _, version, path = latest_bundle(store)
    assert version == 1
    names = {p.name for p in path.iterdir()}
    assert names == {"model.onnx", "model.ort", "model.required_operators.config", "labels.json", "preprocess.json",
                     "report.json", "manifest.json", "MODEL_CARD.md", "bench.py", "report.html", "tradeoffs.png", "training.png",
                     "test_inputs.npy", "test_labels.npy"}
    page = (path / "report.html").read_text()
    assert 'src="tradeoffs.png"' in page and 'src="training.png"' in page and "Quantization (fixed)" in page
    for png in ("tradeoffs.png", "training.png"):
        assert (path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (path / png).stat().st_size > 10_000
    ops_config = (path / "model.required_operators.config").read_text()
    assert "ai.onnx;" in ops_config and str(store) not in ops_config and "/tmp" not in ops_config
    report = json.loads((path / "report.json").read_text())
    assert set(report["accuracy"]) == {"teacher", "student_fp32", "student_int8", "student_alone", "model_ort"}
    lat = report["latency_ms"]
    assert set(lat) == {"p50", "p90", "p95", "p99", "min", "mean", "std"}
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] and lat["std"] >= 0
    assert report["benchmark"]["runs"] >= 20 and report["benchmark"]["duration_s"] >= 0.1  # both minimums held
    # latency: the median of benchmark.rounds (3) timings, the models in turn, and the card and page say so
    assert report["benchmark"]["rounds"] == 3
    assert all(len(report["models"][role]["latency_rounds_ms"]) == 3 for role in ("teacher", "student_fp32", "student_int8"))
    assert lat["p90"] == pytest.approx(float(np.median(report["models"]["student_int8"]["latency_rounds_ms"])))
    assert "median of 3 rounds" in (path / "MODEL_CARD.md").read_text() and "median of 3 rounds" in page
    assert report["cold_start_ms"] >= report["load_ms"] > 0
    assert report["throughput"]["batch"] == 8 and report["throughput"]["images_per_s"] > 0
    ops = {o["op_type"] for o in report["top_ops"]}
    assert ops & {"QuantizeLinear", "DequantizeLinear", "Conv", "QLinearConv", "Gemm"}, ops
    shares = [o["share"] for o in report["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-9
    assert report["size_bytes"] == (path / "model.onnx").stat().st_size
    assert set(report["device"]) == {"cpu", "flags", "cores", "threads", "onnxruntime"}
    assert report["parity"]["top1_agreement"] >= 0.99
    # the tiny run ships INT8 (quantize.mode fixed): model.ort is checked by agreement on the whole test
    # split, and both files' accuracy is measured there; the gate reads the lower
    o = report["ort_format"]
    assert report["shipped"] == "student_int8" and o["rule"] == "top-1 agreement" and o["top1_agreement"] >= 0.99
    assert o["samples"] == report["test_samples"] and o["onnx_accuracy"] == pytest.approx(report["accuracy"]["student_int8"], abs=0.5)
    assert report["accuracy"]["model_ort"] == o["accuracy"] and o["max_abs_diff_steps"] is not None
    assert f"`model.ort` {o['accuracy']:.2f}%" in (path / "MODEL_CARD.md").read_text()
    # the tiny models learn something: well above the 10% of chance
    assert report["accuracy"]["teacher"] > 60 and report["accuracy"]["student_int8"] > 40
    # peak RSS is the ONNX Runtime child's own, not the torch parent's (hundreds of MiB)
    assert 5 < report["peak_rss_mb"] < 300

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and manifest["version"] == 1
    for name, digest in manifest["files"].items():
        assert sha256_file(path / name) == digest
    assert set(manifest["results"]) == {"prepare", "finetune", "teach", "distill", "baseline", "export", "quantize", "qat", "benchmark", "bundle"}
    for stage, key in manifest["results"].items():
        assert (store / "results" / stage / key / "meta.json").is_file()
    assert set(manifest["libraries"]) >= {"torch", "onnx", "onnxruntime"}


def test_shipped_model_is_int8_and_runs_from_the_bundle_alone(tiny_run):
    pipeline, store = tiny_run
    _, _, path = latest_bundle(store)
    model = onnx.load(str(path / "model.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert model.graph.input[0].name == "input"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # feed it as a device would, from preprocess.json and raw uint8 pixels
    pre = json.loads((path / "preprocess.json").read_text())
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images[:200] * (255 / 16)).astype(np.uint8)[..., None]
    sess = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {pre["input_name"]: to_model_input(images, pre)})[0]
    labels = json.loads((path / "labels.json").read_text())
    assert logits.shape == (200, len(labels))
    assert (logits.argmax(1) == d.target[:200]).mean() > 0.4


def test_second_run_is_all_cached_and_same_bundle(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    started = time.time()
    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    elapsed = time.time() - started
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in
             ("prepare", "finetune", "teach", "distill", "baseline", "export", "quantize", "qat", "benchmark", "bundle")]
    assert len(table) == 10 and all(row[1] == "cached" for row in table), out
    assert "(v1, unchanged)" in out
    assert [v for _, v, _ in Store(store).bundles("tiny")] == [1]
    # rebuilding the bundle (ORT conversion included) gives the same bytes, so the same version
    assert main(["run", str(pipeline), "--store", str(store), "--force", "bundle"]) == 0
    assert "(v1, unchanged)" in capsys.readouterr().out
    assert elapsed < 30  # generous: the real budget (5 s) is measured by hand, not asserted


def test_set_calibration_samples_reruns_only_quantize_and_after(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    assert main(["plan", str(pipeline), "--store", str(store), "--set", "quantize.calibration_samples=32"]) == 0
    plan = capsys.readouterr().out
    assert "config.quantize.calibration_samples: 64 -> 32" in plan
    assert main(["run", str(pipeline), "--store", str(store), "--set", "quantize.calibration_samples=32"]) == 0
    out = capsys.readouterr().out
    status = {line.split()[0]: line.split()[1] for line in out.splitlines()
              if line.split()[:1] and line.split()[0] in ("prepare", "finetune", "teach", "distill", "baseline", "export", "quantize", "qat", "benchmark", "bundle")}
    assert status == {"prepare": "cached", "finetune": "cached", "teach": "cached", "distill": "cached", "baseline": "cached",
                      "export": "cached",
                      "quantize": "ran", "qat": "ran", "benchmark": "ran", "bundle": "ran"}
    assert "(v2, new)" in out


def test_ls_lists_results_and_bundles(tiny_run, capsys):
    _, store = tiny_run
    assert main(["ls", "--store", str(store), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {r["stage"] for r in listing["results"]} == {"prepare", "finetune", "teach", "distill", "baseline", "export", "quantize", "qat", "benchmark", "bundle"}
    assert listing["bundles"][0]["name"] == "tiny"


def test_training_stages_are_reproducible(tiny_store_copy, capsys):
    """Forcing finetune and distill to run again gives byte-identical weights: same seed, same result."""
    pipeline, store = tiny_store_copy

    def fingerprint():
        results = {s: next((store / "results" / s).iterdir()) for s in ("finetune", "distill")}
        return ({s: sha256_file(p / "model.pt") for s, p in results.items()},
                {s: json.loads((p / "meta.json").read_text())["content_hash"] for s, p in results.items()})

    before = fingerprint()
    assert main(["run", str(pipeline), "--store", str(store), "--force", "finetune", "--force", "distill"]) == 0
    assert fingerprint() == before  # the weights, and the whole content (metrics included)
    out = capsys.readouterr().out
    assert "export     cached" in out  # so nothing downstream is invalidated
