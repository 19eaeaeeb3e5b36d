#!/usr/bin/env python3
"""Benchmark one ONNX model with ONNX Runtime on the CPU and print a JSON result.

Standalone on purpose: it needs only python3, numpy and onnxruntime, so the same file runs inside
edgedistill's benchmark stage (as a child process, so that torch's memory is not counted in the
peak resident memory) and on a target device (phone, board, Pi) by hand.

    python3 ortbench.py model.onnx --threads 1 --warmup 20 --runs 300 [--inputs x.npy --labels y.npy]

Peak resident memory is read after the timed runs and before the accuracy pass, so it covers the
session and batch-1 inference, not the evaluation set.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import onnxruntime as ort


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    On Linux this is VmHWM of the current address space: ru_maxrss is carried across execve, so a
    child started from a big parent (torch) would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


def benchmark(model: str, threads: int, warmup: int, runs: int, inputs: np.ndarray | None,
              labels: np.ndarray | None, eval_batch: int = 64) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    meta = session.get_inputs()[0]
    if inputs is not None:
        sample = np.ascontiguousarray(inputs[:1], dtype=np.float32)
    else:  # no data given: a random input of the model's shape, batch 1
        shape = [1 if not isinstance(d, int) else d for d in meta.shape]
        sample = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {meta.name: sample}

    t0 = time.perf_counter()
    session.run(None, feed)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    result = {
        "model": os.path.basename(model),
        "size_bytes": os.path.getsize(model),
        "load_ms": round(load_ms, 3),
        "first_inference_ms": round(first_ms, 3),
        "latency_ms": {
            "p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
            "p99": float(np.percentile(times, 99)), "min": float(times.min()),
            "mean": float(times.mean()), "std": float(times.std()),
        },
        "runs": runs,
        "warmup": warmup,
        "batch": 1,
        "peak_rss_mb": round(peak_rss_mb(), 2),
        "device": {
            "cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "onnxruntime": ort.__version__, "providers": session.get_providers(),
        },
    }
    if inputs is not None and labels is not None:
        correct = 0
        for i in range(0, len(inputs), eval_batch):
            logits = session.run(None, {meta.name: np.ascontiguousarray(inputs[i:i + eval_batch], dtype=np.float32)})[0]
            correct += int((logits.argmax(axis=1) == labels[i:i + eval_batch]).sum())
        result["accuracy"] = 100.0 * correct / len(labels)
        result["eval_samples"] = int(len(labels))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--inputs", help=".npy of preprocessed float32 inputs (N, C, H, W)")
    ap.add_argument("--labels", help=".npy of int labels, for accuracy")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    a = ap.parse_args(argv)
    inputs = np.load(a.inputs, mmap_mode="r") if a.inputs else None
    labels = np.load(a.labels) if a.labels else None
    result = benchmark(a.model, a.threads, a.warmup, a.runs, inputs, labels)
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
