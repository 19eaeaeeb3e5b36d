"""Does edgedistill's benchmark measure what a bare ONNX Runtime loop measures, and how repeatable is it?

For each model: 5 runs of our benchmark (ortbench.py in a child process, the benchmark stage's code
path) and 5 runs of a bare loop (a child process that creates a session with the same threads and
times session.run with time.perf_counter, nothing else), alternating so drift hits both alike.
Reports the median p50 of each, their ratio (target: within 5%), and the spread of our p90 over the
5 runs ((max - min) / median).

    .venv/bin/python benchmarks/bench_agreement.py MODEL.onnx [MODEL.onnx ...] [--threads 1]

With no models given, it uses the FP32 and INT8 students of the newest quickstart results in ./artifacts.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgedistill.runtime.benchmark import BenchmarkConfig, bench_in_child

BARE = textwrap.dedent("""
    import json, sys, time
    import numpy as np, onnxruntime as ort
    path, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([1 if not isinstance(d, int) else d for d in i.shape]).astype(np.float32)
    for _ in range(20): s.run(None, {i.name: x})
    t = []
    for _ in range(runs):
        a = time.perf_counter(); s.run(None, {i.name: x}); t.append((time.perf_counter() - a) * 1e3)
    print(json.dumps({"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90))}))
""")


def bare(model: Path, threads: int, runs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", BARE, str(model), str(threads), str(runs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def default_models() -> list[Path]:
    results = Path("artifacts/results")
    newest = lambda stage, name: max((results / stage).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return [newest("export", "student.onnx"), newest("quantize", "student_quantized.onnx")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    settings = BenchmarkConfig(threads=a.threads, runs=a.runs, min_duration_s=0, throughput_batch=0, profile_runs=0)
    print(f"| model | ours p50 ms | bare loop p50 ms | ours / bare | our p90 ms (median of {a.repeats}) | p90 spread |")
    print("|---|---|---|---|---|---|")
    for model in a.models or default_models():
        ours, theirs = [], []
        for _ in range(a.repeats):
            ours.append(bench_in_child(model, settings)["latency_ms"])
            theirs.append(bare(model, a.threads, a.runs))
        p50, p50_bare = statistics.median(r["p50"] for r in ours), statistics.median(r["p50"] for r in theirs)
        p90s = [r["p90"] for r in ours]
        spread = (max(p90s) - min(p90s)) / statistics.median(p90s)
        print(f"| {model.parent.parent.name}/{model.name} | {p50:.4f} | {p50_bare:.4f} | {p50 / p50_bare:.3f} | "
              f"{statistics.median(p90s):.4f} | {spread:.1%} |")


if __name__ == "__main__":
    main()
