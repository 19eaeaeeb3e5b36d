#!/usr/bin/env python3
"""Benchmark one ONNX model with ONNX Runtime on the CPU and write a JSON result.

Standalone on purpose: it needs only python3, numpy and onnxruntime, so the same file runs inside
edgedistill's benchmark stage (as a child process, so that torch's memory is not counted in the peak
resident memory) and on a target device (phone, board, Pi), where every bundle carries it as bench.py:

    python3 bench.py                      # in a bundle folder: benchmarks model.onnx, prints JSON
    python3 bench.py model.onnx --threads 1 --runs 300 --min-seconds 1 --name pi4 --out pi4.json
    python3 bench.py --mlperf ...         # MLPerf single-stream minimums: 1024 runs and 600 s
    python3 bench.py --inputs test_inputs.npy --labels test_labels.npy --logits out.npy
                                          # verify: logits and accuracy on the shipped test inputs, no timing

Protocol: session creation is timed (load), then the first inference (cold start = both), then
`warmup` untimed runs, then timed runs at batch 1 until both `runs` and `min-seconds` are reached.
Peak resident memory is read right after, before anything else (throughput at a larger batch, the
profiler, the accuracy pass) can raise it. Top operators come from ONNX Runtime's own profiler, in a
separate session so profiling overhead never touches the timed runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

MLPERF_MIN_RUNS, MLPERF_MIN_SECONDS = 1024, 600.0  # MLPerf Inference single-stream minimums
OPT_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
# CPU features that decide how fast INT8 and FP16 run (x86: /proc/cpuinfo "flags"; ARM: "Features")
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                     "amx_bf16", "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the feature flags of INTERESTING_FLAGS it has."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not name:
                    name = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), [f for f in INTERESTING_FLAGS if f in flags]


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


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def session_options(threads: int, inter_threads: int, opt_level: str) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    opts.graph_optimization_level = OPT_LEVELS[opt_level]
    return opts


DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
          "tensor(bool)": np.bool_}


def select(names: list, inputs) -> dict:
    """{input name: array} for a model whose inputs are `names`: from a dict (an .npz: one array per
    input name; arrays the model does not take are left out; a lone array goes to a one-input model
    whatever its name), or from a single array for a one-input model. ValueError when one is missing."""
    if isinstance(inputs, dict) or hasattr(inputs, "files"):
        keys = list(inputs.files if hasattr(inputs, "files") else inputs)
        if len(names) == 1 and len(keys) == 1:
            return {names[0]: inputs[keys[0]]}
        missing = [n for n in names if n not in keys]
        if missing:
            raise ValueError(f"--inputs has no array for input(s) {', '.join(missing)} of the model")
        return {n: inputs[n] for n in names}
    if len(names) != 1:
        raise ValueError(f"the model takes {len(names)} inputs ({', '.join(names)}); give --inputs as an .npz with "
                         f"one array per input name")
    return {names[0]: inputs}


def as_feed(session, inputs) -> dict:
    """inputs -> {input name: array} for the session's model (select), or bench.py stops saying why."""
    try:
        return select([m.name for m in session.get_inputs()], inputs)
    except ValueError as e:
        raise SystemExit(f"bench.py: {e}") from None


def feed_rows(session, data: dict, rows) -> dict:
    """Rows of every input (rows: a slice or an index array), contiguous and in the model's dtype."""
    return {m.name: np.ascontiguousarray(data[m.name][rows], dtype=DTYPES.get(m.type, np.float32)) for m in session.get_inputs()}


def make_feed(session, inputs, batch: int, sequence_length: int = 128) -> dict:
    """One batch for timing: rows of the given inputs (repeated when batch > their count), or made up
    from the model's input types: float inputs random normal; integer inputs as a text model takes
    them, at sequence_length where the axis is dynamic (token ids in [1000, 2000), which every
    BERT-family vocabulary holds; 1 for an attention mask, 0 for token type ids)."""
    if inputs is not None:
        data = as_feed(session, inputs)
        first = next(iter(data.values()))
        return feed_rows(session, data, np.resize(np.arange(len(first)), batch))  # repeat samples when batch > N
    rng, feed = np.random.default_rng(0), {}
    for m in session.get_inputs():
        dtype = DTYPES.get(m.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            shape = [batch if i == 0 else (d if isinstance(d, int) else 1) for i, d in enumerate(m.shape)]
            feed[m.name] = rng.standard_normal(shape).astype(dtype)
            continue
        shape = [batch if i == 0 else (d if isinstance(d, int) else sequence_length) for i, d in enumerate(m.shape)]
        name = m.name.lower()
        value = (np.ones(shape) if "mask" in name else np.zeros(shape) if "type" in name
                 else rng.integers(1000, 2000, size=shape))
        feed[m.name] = value.astype(dtype)
    return feed


def top_operators(model: str, opts: ort.SessionOptions, feed: dict, runs: int, top: int = 8) -> list[dict]:
    """Time per operator type from ONNX Runtime's profiler, per inference, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1000.0  # us -> ms
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op_type": op, "ms_per_run": ms / runs, "share": ms / total} for op, ms in ranked]


def benchmark(model: str, threads: int = 1, warmup: int = 20, runs: int = 300, min_seconds: float = 1.0,
              inputs: np.ndarray | None = None, labels: np.ndarray | None = None, inter_threads: int = 1,
              opt_level: str = "all", throughput_batch: int = 8, profile_runs: int = 50, name: str | None = None,
              eval_batch: int = 64, sequence_length: int = 128) -> dict:
    opts = session_options(threads, inter_threads, opt_level)
    t0 = time.perf_counter()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    meta = session.get_inputs()[0]
    feed = make_feed(session, inputs, 1, sequence_length)

    t0 = time.perf_counter()
    session.run(None, feed)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        session.run(None, feed)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs or time.perf_counter() - started < min_seconds:
        t = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t) / 1e6)
    duration = time.perf_counter() - started
    rss = peak_rss_mb()
    lat = np.asarray(times)
    cpu, flags = cpu_info()
    result = {
        "model": os.path.basename(model),
        "sha256": sha256(model),
        "size_bytes": os.path.getsize(model),
        "load_ms": round(load_ms, 3),
        "first_inference_ms": round(first_ms, 3),
        "cold_start_ms": round(load_ms + first_ms, 3),
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "min": float(lat.min()), "mean": float(lat.mean()), "std": float(lat.std()),
        },
        "runs": len(times),
        "duration_s": round(duration, 3),
        "warmup": warmup,
        "batch": 1,
        "peak_rss_mb": round(rss, 2),
        "settings": {"intra_op_threads": threads, "inter_op_threads": inter_threads, "graph_optimization": opt_level},
        "device": {
            "name": name or platform.node(), "cpu": cpu, "flags": flags, "machine": platform.machine(),
            "cores": os.cpu_count(), "threads": threads, "onnxruntime": ort.__version__,
            "providers": session.get_providers(), "python": platform.python_version(),
        },
    }
    tokens = [m.name for m in session.get_inputs() if not np.issubdtype(DTYPES.get(m.type, np.float32), np.floating)]
    if tokens and feed[tokens[0]].ndim > 1:
        result["sequence_length"] = int(feed[tokens[0]].shape[1])  # token ids: the length they were timed at
    if throughput_batch > 1 and (not isinstance(meta.shape[0], int)):
        big = make_feed(session, inputs, throughput_batch, sequence_length)
        session.run(None, big)
        n, t0 = 0, time.perf_counter()
        while n < 20 or time.perf_counter() - t0 < min(min_seconds, 2.0):
            session.run(None, big)
            n += 1
        result["throughput"] = {"batch": throughput_batch, "images_per_s": n * throughput_batch / (time.perf_counter() - t0)}
    if profile_runs > 0:
        result["top_ops"] = top_operators(model, session_options(threads, inter_threads, opt_level), feed, profile_runs)
    if inputs is not None and labels is not None:
        data, correct = as_feed(session, inputs), 0
        for i in range(0, len(labels), eval_batch):
            logits = session.run(None, feed_rows(session, data, slice(i, i + eval_batch)))[0]
            correct += int((logits.argmax(axis=1) == labels[i:i + eval_batch]).sum())
        result["accuracy"] = 100.0 * correct / len(labels)
        result["eval_samples"] = int(len(labels))
    return result


def predict(model: str, inputs: np.ndarray, labels: np.ndarray | None, logits_out: str, threads: int = 1,
            opt_level: str = "all", name: str | None = None, eval_batch: int = 64) -> dict:
    """The verify protocol: the model's logits on every input, saved to logits_out (.npy), and no timing.
    Used where latency means nothing (an emulated CPU) or is not the question (does this device give
    the same answers?)."""
    session = ort.InferenceSession(model, session_options(threads, 1, opt_level), providers=["CPUExecutionProvider"])
    data = as_feed(session, inputs)
    n = len(next(iter(data.values())))
    logits = np.concatenate([session.run(None, feed_rows(session, data, slice(i, i + eval_batch)))[0]
                             for i in range(0, n, eval_batch)])
    np.save(logits_out, logits)
    cpu, flags = cpu_info()
    result = {"model": os.path.basename(model), "sha256": sha256(model), "images": int(n),
              "device": {"name": name or platform.node(), "cpu": cpu, "flags": flags, "machine": platform.machine(),
                         "threads": threads, "onnxruntime": ort.__version__, "python": platform.python_version()}}
    if labels is not None:
        result["accuracy"] = 100.0 * float((logits.argmax(axis=1) == labels).mean())
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="model.onnx", help="ONNX model (default: model.onnx, as in a bundle)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--inter-threads", type=int, default=1, help="inter-op threads (default 1)")
    ap.add_argument("--opt-level", choices=sorted(OPT_LEVELS), default="all", help="graph optimization level")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=300, help="minimum timed runs")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed duration")
    ap.add_argument("--mlperf", action="store_true", help=f"at least {MLPERF_MIN_RUNS} runs and {MLPERF_MIN_SECONDS:g} s")
    ap.add_argument("--throughput-batch", type=int, default=8, help="batch for the throughput figure (0: skip)")
    ap.add_argument("--profile-runs", type=int, default=50, help="runs under ONNX Runtime's profiler (0: skip)")
    ap.add_argument("--inputs", help=".npy of preprocessed inputs (N, C, H, W), or .npz with one array per input name "
                                     "(a text model's input_ids, attention_mask); made up when absent")
    ap.add_argument("--sequence-length", type=int, default=128,
                    help="made-up integer (token id) inputs: this length on a dynamic axis (default 128)")
    ap.add_argument("--labels", help=".npy of int labels, for accuracy")
    ap.add_argument("--name", help="device name recorded in the result (default: the host name)")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--logits", help="verify instead of benchmark: save the logits on --inputs to this .npy; no timing")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.model):
        ap.error(f"no model file '{a.model}'")
    if a.logits and not a.inputs:
        ap.error("--logits needs --inputs")
    runs, seconds = (max(a.runs, MLPERF_MIN_RUNS), max(a.min_seconds, MLPERF_MIN_SECONDS)) if a.mlperf else (a.runs, a.min_seconds)
    inputs = (dict(np.load(a.inputs)) if a.inputs.endswith(".npz") else np.load(a.inputs, mmap_mode="r")) if a.inputs else None
    labels = np.load(a.labels) if a.labels else None
    if a.logits:
        result = predict(a.model, inputs, labels, a.logits, a.threads, a.opt_level, a.name)
    else:
        result = benchmark(a.model, a.threads, a.warmup, runs, seconds, inputs, labels, a.inter_threads, a.opt_level,
                           a.throughput_batch, a.profile_runs, a.name, sequence_length=a.sequence_length)
        result["protocol"] = "mlperf" if a.mlperf else "ci"
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
