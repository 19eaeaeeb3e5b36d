"""quantize.mode auto against ONNX Runtime's quantize_static with its defaults and against Hugging Face
Optimum's ORTQuantizer (its avx512_vnni static configuration), on the same FP32 ONNX students and the
same calibration images, and against NNCF's post-training quantization with its defaults (its own Q/DQ
graph, run by ONNX Runtime). Reports test accuracy, p90 latency (batch 1, 1 thread) and size.

    python benchmarks/quantize_vs_peers.py [--students small_cnn mobilenet_v3_small resnet18] [--store artifacts]

The students are distilled by the quickstart pipeline with `student.preset` set (cached in the store
after the first run). Optimum runs in its own environment, .venv-peers (created from
benchmarks/peers/requirements.txt on first use), because it pins versions edgedistill does not use.
Target (issue 4): on every model, auto's accuracy at least theirs and its latency at most theirs.
Target (issue 18): ours not dominated (no peer both 0.5 point more accurate and 5% faster).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.data.dataset import Dataset
from edgedistill.pipeline import load_pipeline
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig, bench_in_child
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.stages import STAGES, quantize
from edgedistill.training.loop import accuracy

PEERS_VENV = ROOT / ".venv-peers"


def peers_python() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEERS_VENV} for optimum (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "benchmarks/peers/requirements.txt")], check=True)
    return python


def student(store: Path, preset: str) -> tuple[Path, Dataset]:
    """FP32 student ONNX and the dataset, from the quickstart pipeline with this student preset."""
    pipeline = load_pipeline(ROOT / "pipelines/quickstart.yaml", [f"student.preset={preset}"])
    report = Runner(Store(store), STAGES, progress=False).run(pipeline, until="export")
    return report.result("export").path / "student.onnx", Dataset.load(report.result("prepare").path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", nargs="+", default=["small_cnn", "mobilenet_v3_small", "resnet18"])
    ap.add_argument("--store", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--calibration-samples", type=int, default=256)
    a = ap.parse_args()
    optimum = peers_python()
    timing = BenchmarkConfig(threads=1, runs=1000, min_duration_s=2.0, throughput_batch=0, profile_runs=0)
    q = QuantizeConfig()  # auto, defaults
    rows = []
    for preset in a.students:
        fp32, ds = student(a.store, preset)
        train = ds.split("train")
        pick = np.sort(np.random.default_rng(0).permutation(len(train))[: a.calibration_samples])
        calib = train.subset(pick)
        x_val, y_val = ds.inputs("val")
        x_test, y_test = ds.inputs("test")
        names = quantize.model_inputs(fp32)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            reader = lambda: quantize.split_reader(calib, names)
            sel = quantize.select(fp32, q, quantize.latency_settings(BenchmarkConfig(threads=1), q), reader,
                                  lambda: quantize.split_reader(calib.subset(slice(0, 64)), names), (x_val, y_val), tmp)
            ours = sel.chosen.path if sel.chosen else fp32
            ours_name = f"auto: {sel.chosen.name if sel.chosen else 'fp32'}"
            defaults = tmp / "ort_defaults.onnx"
            from onnxruntime.quantization import quantize_static

            quantize_static(str(fp32), str(defaults), reader())
            from edgedistill.quantization import nncf_ptq

            nncf_model = tmp / "nncf_defaults.onnx"  # NNCF's own graph: its defaults, every calibration image
            r = reader()
            onnx.save(nncf_ptq.run_nncf(fp32, iter(r.get_next, None)), str(nncf_model))
            np.save(tmp / "calib.npy", calib.inputs(slice(None)))
            out = subprocess.run([str(optimum), str(ROOT / "benchmarks/peers/optimum_static.py"), str(fp32),
                                  str(tmp / "calib.npy"), str(tmp / "optimum")], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"optimum failed on {preset}:\n{out.stderr[-3000:]}")
            theirs = Path(out.stdout.strip().splitlines()[-1])
            for name, path in (("fp32 (reference)", fp32), (ours_name, ours), ("ort quantize_static defaults", defaults),
                               ("optimum avx512_vnni static", theirs), ("nncf post-training defaults", nncf_model)):
                acc = accuracy(ort_predict(path, x_test), y_test)
                p90 = bench_in_child(path, timing)["latency_ms"]["p90"]
                rows.append((preset, name, acc, p90, path.stat().st_size))
                print(f"{preset:20s} {name:32s} acc {acc:6.2f}%  p90 {p90:.4f} ms  {path.stat().st_size / 1024:8.1f} KiB",
                      file=sys.stderr, flush=True)
    print("| student | method | test acc % | p90 ms (1 thread) | size KiB |")
    print("|---|---|---|---|---|")
    for preset, name, acc, p90, size in rows:
        print(f"| {preset} | {name} | {acc:.2f} | {p90:.4f} | {size / 1024:.1f} |")


if __name__ == "__main__":
    main()
