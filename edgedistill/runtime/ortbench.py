#!/usr/bin/env python3
"""Benchmark one ONNX model with ONNX Runtime on the CPU and write a JSON result.

One module of over 400 lines on purpose: it ships as one file, bench.py, in every bundle.
Standalone on purpose: it needs only python3, numpy and onnxruntime, so the same file runs inside
edgedistill's benchmark stage (as a child process, so that torch's memory is not counted in the peak
resident memory) and on a target device (phone, board, Pi), where every bundle carries it as bench.py:

    python3 bench.py                      # in a bundle folder: benchmarks model.onnx, prints JSON
    python3 bench.py model.onnx --threads 1 --runs 300 --min-seconds 1 --name pi4 --out pi4.json
    python3 bench.py --mlperf ...         # MLPerf single-stream minimums: 1024 runs and 600 s
    python3 bench.py m.onnx --shape 1x3x224x224   # a model with dynamic height and width: the size to time
    python3 bench.py --inputs test_inputs.npy --labels test_labels.npy --logits out.npy
                                          # verify: logits and accuracy on the shipped test inputs, no timing

Protocol: session creation is timed (load), then the first inference (cold start = both), then
`warmup` untimed runs, then timed runs at batch 1 (or the model's fixed batch) until both `runs` and
`min-seconds` are reached, on one row of --inputs or on a made-up input of the model's shape (a
dynamic dimension needs --shape; token ids take --sequence-length); the result says the shape timed
(input_shapes), and its size and sha256 cover a model's external data files.
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


def _varint(buf, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start, end) of the length-delimited fields of one protobuf message."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            i = _varint(buf, i)[1]
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            yield key >> 3, i, i + n
            i += n
        else:
            raise ValueError(f"not an ONNX model (protobuf wire type {wire})")


def external_data(model: str) -> list[str]:
    """Paths (beside the model) of the external data files an ONNX model's tensors live in, in the
    order first named. Read from the protobuf directly (ModelProto.graph -> initializers, Constant
    tensors and subgraphs -> TensorProto.external_data 'location'), because bench.py runs where only
    numpy and onnxruntime are installed; edgedistill's tests check it against onnx's own reading."""
    if model.endswith(".ort"):  # ONNX Runtime's own format (a flatbuffer) keeps its weights inside
        return []
    with open(model, "rb") as f:
        buf = memoryview(f.read())
    found: list[str] = []

    def tensor(start: int, end: int) -> None:
        for field, a, b in _fields(buf, start, end):
            if field == 13:  # external_data: StringStringEntryProto {key = 1, value = 2}
                entry = {k: bytes(buf[x:y]).decode("utf-8", "replace") for k, x, y in _fields(buf, a, b)}
                if entry.get(1) == "location" and 2 in entry and entry[2] not in found:
                    found.append(entry[2])

    def graph(start: int, end: int) -> None:
        for field, a, b in _fields(buf, start, end):
            if field == 5:  # initializer
                tensor(a, b)
            elif field == 1:  # node -> attribute (5) -> t (5), g (6), tensors (10), graphs (11)
                for nf, na, nb in _fields(buf, a, b):
                    if nf == 5:
                        for af, x, y in _fields(buf, na, nb):
                            if af in (5, 10):
                                tensor(x, y)
                            elif af in (6, 11):
                                graph(x, y)

    try:
        for field, a, b in _fields(buf, 0, len(buf)):
            if field == 7:  # graph
                graph(a, b)
    except (ValueError, IndexError):  # not a protobuf ONNX model: ONNX Runtime says so when it loads it
        return []
    folder = os.path.dirname(os.path.abspath(model))
    return [os.path.join(folder, name) for name in found]


def model_files(model: str) -> list[str]:
    """The model file and its external data files: what a device needs, and what size and hash cover."""
    return [model, *external_data(model)]


def model_size(model: str) -> int:
    """Bytes of the model with its external data (a model saved with weights in a .onnx.data file is
    that file's size, not the few hundred bytes of its graph)."""
    return sum(os.path.getsize(p) for p in model_files(model))


def sha256(model: str) -> str:
    """sha256 of the model file followed by its external data files, in the order the model names
    them: for a model without external data, the file's own sha256."""
    h = hashlib.sha256()
    for path in model_files(model):
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


class InputMismatch(ValueError):
    """Arrays that do not fit the model's inputs (rank, size, channels, layout, dtype), or a dynamic
    dimension with no size given: the message names both shapes."""


def select(names: list, inputs) -> dict:
    """{input name: array} for a model whose inputs are `names`: from a dict (an .npz: one array per
    input name; arrays the model does not take are left out; a lone array goes to a one-input model
    whatever its name), or from a single array for a one-input model. InputMismatch when one is missing."""
    if isinstance(inputs, dict) or hasattr(inputs, "files"):
        keys = list(inputs.files if hasattr(inputs, "files") else inputs)
        if len(names) == 1 and len(keys) == 1:
            return {names[0]: inputs[keys[0]]}
        missing = [n for n in names if n not in keys]
        if missing:
            raise InputMismatch(f"--inputs has no array for input(s) {', '.join(missing)} of the model")
        return {n: inputs[n] for n in names}
    if len(names) != 1:
        raise InputMismatch(f"the model takes {len(names)} inputs ({', '.join(names)}); give --inputs as an .npz with "
                            f"one array per input name")
    return {names[0]: inputs}


def describe(shape) -> str:
    """A shape as people write it: (batch, 3, 224, 224); an unnamed dynamic dimension is '?'."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def fixed_batch(inputs: list) -> int | None:
    """The batch size a model's inputs (session.get_inputs()) are fixed to (ONNX Model Zoo models
    often take exactly 1), or None when the first axis is dynamic."""
    dims = {m.shape[0] for m in inputs if m.shape and isinstance(m.shape[0], int) and m.shape[0] > 0}
    return dims.pop() if len(dims) == 1 else None


def check_feed(inputs: list, data: dict, what: str = "--inputs") -> None:
    """InputMismatch unless every array of data fits its model input (inputs: session.get_inputs()):
    the same rank, the size of every fixed dimension but the batch (a fixed batch is met by feeding
    that many rows at a time), and a dtype of the same kind (float for float, integer for integer: a
    cast that keeps the values; uint8 pixels for a float input are refused, they need the
    preprocessing). The message names both shapes and, for channels-last data given to a
    channels-first model (or back), the transpose."""
    kind = lambda t: "f" if np.issubdtype(t, np.floating) else "b" if t == np.bool_ else "i"
    for m in inputs:
        a = data[m.name]
        want = np.dtype(DTYPES.get(m.type, np.float32))
        shape, given = list(m.shape), tuple(a.shape)
        fits = len(given) == len(shape) and not any(isinstance(d, int) and d > 0 and d != g
                                                     for d, g in zip(shape[1:], given[1:]))
        same_kind = kind(np.dtype(a.dtype)) == kind(want)
        if fits and same_kind:
            continue
        hints = []
        if not fits and len(given) == len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
            if given[1:] == (shape[2], shape[3], shape[1]):
                hints.append("the data is channels-last (NHWC), the model channels-first (NCHW): x.transpose(0, 3, 1, 2)")
            elif given[1:] == (shape[3], shape[1], shape[2]):
                hints.append("the data is channels-first (NCHW), the model channels-last (NHWC): x.transpose(0, 2, 3, 1)")
        if not same_kind:
            hints.append(f"and its values must be {want.name}" + (" (preprocess them as preprocess.json says)"
                                                                    if kind(want) == "f" else ""))
        raise InputMismatch(f"{what} gives {np.dtype(a.dtype).name} {describe(given)} for input '{m.name}', which "
                            f"takes {want.name} {describe(shape)}" + "".join(f"; {h}" for h in hints))


def as_feed(session, inputs, what: str = "--inputs") -> dict:
    """inputs -> {input name: array} for the session's model (select), checked to fit (check_feed)."""
    data = select([m.name for m in session.get_inputs()], inputs)
    check_feed(session.get_inputs(), data, what)
    return data


def feed_rows(session, data: dict, rows) -> dict:
    """Rows of every input (rows: a slice or an index array), contiguous and in the model's dtype."""
    return {m.name: np.ascontiguousarray(data[m.name][rows], dtype=DTYPES.get(m.type, np.float32)) for m in session.get_inputs()}


def pad_rows(feed: dict, rows: int) -> dict:
    """feed with its last row repeated up to `rows` rows (a model whose batch is fixed takes exactly
    that many); its outputs for the padding are to be dropped."""
    n = len(next(iter(feed.values())))
    return feed if n >= rows else {k: np.concatenate([v, np.repeat(v[-1:], rows - n, axis=0)]) for k, v in feed.items()}


def run_rows(session, data: dict, batch: int = 64) -> np.ndarray:
    """The first output for every row of data ({input name: array}, checked by check_feed), `batch`
    rows at a time; a model whose batch is fixed gets exactly that many, the last run padded by
    repeating its last row (the padding's outputs dropped)."""
    n = len(next(iter(data.values())))
    fixed = fixed_batch(session.get_inputs())
    step = fixed or batch
    out = []
    for i in range(0, n, step):
        feed = feed_rows(session, data, slice(i, i + step))
        rows = len(next(iter(feed.values())))
        out.append(session.run(None, pad_rows(feed, fixed or rows))[0][:rows])
    return np.concatenate(out)


def parse_shapes(specs: list[str], names: list[str]) -> dict:
    """--shape values, NAME=1x3x224x224 (or just 1x3x224x224 for a one-input model) -> {name: dims}."""
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise InputMismatch(f"--shape '{spec}': the model takes {len(names)} inputs ({', '.join(names)}); "
                                    f"write NAME=1x3x224x224")
            name = names[0]
        if name not in names:
            raise InputMismatch(f"--shape '{spec}': the model has no input '{name}'; its inputs: {', '.join(names)}")
        try:
            shapes[name] = [int(d) for d in dims.replace(",", "x").split("x")]
        except ValueError:
            raise InputMismatch(f"--shape '{spec}': write the dimensions as 1x3x224x224") from None
        if any(d < 1 for d in shapes[name]):
            raise InputMismatch(f"--shape '{spec}': every dimension must be 1 or more")
    return shapes


def is_token_input(m) -> bool:
    """An integer input of rank 2, (batch, sequence): token ids, an attention mask, token types. An
    integer input of another rank is an image (a mobile model's uint8 NHWC pixels, say)."""
    return not np.issubdtype(DTYPES.get(m.type, np.float32), np.floating) and len(m.shape) == 2


def made_up_shape(m, batch: int, shapes: dict, sequence_length: int) -> list[int]:
    """The shape a made-up input is timed at: the model's fixed dimensions; the batch (`batch`, or the
    model's fixed one); a dynamic dimension from --shape, or for integer (token id) inputs the
    sequence length. A float input with a dynamic dimension and no --shape is an InputMismatch:
    timing a made-up 1x1 image would measure nothing."""
    dims = list(m.shape)
    if m.name in shapes:
        given = shapes[m.name]
        if len(given) != len(dims) or any(isinstance(d, int) and d > 0 and d != g for d, g in zip(dims[1:], given[1:])):
            raise InputMismatch(f"--shape {m.name}={'x'.join(map(str, given))} does not fit input '{m.name}' "
                                f"{describe(dims)}")
        return [batch, *given[1:]]  # timed at batch 1 (or the model's fixed batch)
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif i == 0:
            out.append(batch)
        elif is_token_input(m):
            out.append(sequence_length)
        else:
            raise InputMismatch(f"input '{m.name}' {describe(dims)} has a dynamic dimension '{d or '?'}': give the shape to "
                                f"time with --shape {m.name}=1x3x224x224, or real inputs with --inputs")
    return out


def make_feed(session, inputs, batch: int, sequence_length: int = 128, shapes: dict | None = None) -> dict:
    """One batch for timing: rows of the given inputs (repeated when batch > their count), or made up
    at made_up_shape: float inputs random normal; (batch, sequence) integer inputs as a text model
    takes them (token ids in [1000, 2000), which every BERT-family vocabulary holds; 1 for an
    attention mask, 0 for token type ids); other integer inputs (uint8 pixels) uniform in 0..255. A
    model whose batch is fixed is timed at that batch."""
    batch = fixed_batch(session.get_inputs()) or batch
    if inputs is not None:
        data = as_feed(session, inputs)
        first = next(iter(data.values()))
        return feed_rows(session, data, np.resize(np.arange(len(first)), batch))  # repeat samples when batch > N
    rng, feed = np.random.default_rng(0), {}
    for m in session.get_inputs():
        dtype = DTYPES.get(m.type, np.float32)
        shape = made_up_shape(m, batch, shapes or {}, sequence_length)
        if np.issubdtype(dtype, np.floating):
            feed[m.name] = rng.standard_normal(shape).astype(dtype)
            continue
        if not is_token_input(m):  # integer pixels: anything in the type's range
            info = np.iinfo(dtype) if dtype != np.bool_ else None
            feed[m.name] = (rng.integers(0, 2, size=shape) if info is None
                            else rng.integers(max(info.min, 0), min(info.max, 255) + 1, size=shape)).astype(dtype)
            continue
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
              eval_batch: int = 64, sequence_length: int = 128, shapes: list[str] = ()) -> dict:
    """Time the model at batch 1 (or its fixed batch) on one input: a row of `inputs`, or made up at
    the model's shape (dynamic dimensions from `shapes`, --shape values; the sequence length for token
    ids; a float input with a dynamic dimension and no shape is an InputMismatch). The result says
    the shape of every input timed (input_shapes). Raises InputMismatch for inputs that do not fit."""
    opts = session_options(threads, inter_threads, opt_level)
    t0 = time.perf_counter()
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    shapes = parse_shapes(list(shapes), [m.name for m in session.get_inputs()])
    feed = make_feed(session, inputs, 1, sequence_length, shapes)

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
    files = model_files(model)
    result = {
        "model": os.path.basename(model),
        "sha256": sha256(model),
        "size_bytes": model_size(model),
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
        "batch": int(len(next(iter(feed.values())))),
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "inputs": "given" if inputs is not None else "made up",
        "peak_rss_mb": round(rss, 2),
        "settings": {"intra_op_threads": threads, "inter_op_threads": inter_threads, "graph_optimization": opt_level},
        "device": {
            "name": name or platform.node(), "cpu": cpu, "flags": flags, "machine": platform.machine(),
            "cores": os.cpu_count(), "threads": threads, "onnxruntime": ort.__version__,
            "providers": session.get_providers(), "python": platform.python_version(),
        },
    }
    if len(files) > 1:
        result["files"] = [{"name": os.path.basename(p), "size_bytes": os.path.getsize(p)} for p in files]
    tokens = [m.name for m in session.get_inputs() if is_token_input(m)]
    if tokens:
        result["sequence_length"] = int(feed[tokens[0]].shape[1])  # token ids: the length they were timed at
    if throughput_batch > 1 and fixed_batch(session.get_inputs()) is None:
        big = make_feed(session, inputs, throughput_batch, sequence_length, shapes)
        session.run(None, big)
        n, t0 = 0, time.perf_counter()
        while n < 20 or time.perf_counter() - t0 < min(min_seconds, 2.0):
            session.run(None, big)
            n += 1
        result["throughput"] = {"batch": throughput_batch, "images_per_s": n * throughput_batch / (time.perf_counter() - t0)}
    if profile_runs > 0:
        result["top_ops"] = top_operators(model, session_options(threads, inter_threads, opt_level), feed, profile_runs)
    if inputs is not None and labels is not None:
        logits = run_rows(session, as_feed(session, inputs), eval_batch)
        result["accuracy"] = 100.0 * float((logits.argmax(axis=1) == labels[:len(logits)]).mean())
        result["eval_samples"] = int(len(labels))
    return result


def predict(model: str, inputs: np.ndarray, labels: np.ndarray | None, logits_out: str, threads: int = 1,
            opt_level: str = "all", name: str | None = None, eval_batch: int = 64) -> dict:
    """The verify protocol: the model's logits on every input, saved to logits_out (.npy), and no timing.
    Used where latency means nothing (an emulated CPU) or is not the question (does this device give
    the same answers?). Raises InputMismatch for inputs that do not fit the model."""
    session = ort.InferenceSession(model, session_options(threads, 1, opt_level), providers=["CPUExecutionProvider"])
    logits = run_rows(session, as_feed(session, inputs), eval_batch)
    np.save(logits_out, logits)
    cpu, flags = cpu_info()
    result = {"model": os.path.basename(model), "sha256": sha256(model), "images": int(len(logits)),
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
    ap.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                    help="made-up inputs: the shape to time an input with dynamic dimensions at (repeatable); "
                         "the batch is always 1 (or the model's fixed batch)")
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
    try:
        if a.logits:
            result = predict(a.model, inputs, labels, a.logits, a.threads, a.opt_level, a.name)
        else:
            result = benchmark(a.model, a.threads, a.warmup, runs, seconds, inputs, labels, a.inter_threads, a.opt_level,
                               a.throughput_batch, a.profile_runs, a.name, sequence_length=a.sequence_length, shapes=a.shape)
            result["protocol"] = "mlperf" if a.mlperf else "ci"
    except InputMismatch as e:  # bad input: one line, exit 2 (argparse's convention)
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
