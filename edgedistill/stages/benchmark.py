"""benchmark: ONNX Runtime on the CPU, batch 1: latency percentiles, session load time, peak resident
memory, file size and test accuracy of the teacher, the FP32 student and the INT8 student.

Batch-1 latency is timed benchmark.rounds times per model, the models alternating (teacher, FP32, INT8,
teacher, ...), and each percentile is the median over the rounds: a slow second of the machine then hits
every model alike, and the FP32-against-INT8 comparison a card shows is not one timing against another.
Load time, cold start, memory, throughput, the profile and (text) the latency at other lengths are the
first round's, one timing each.

Each model is measured in its own child process running ortbench.py, which imports only numpy and
onnxruntime: torch's memory does not count, and no model's allocations leak into the next one's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset, read_preprocess
from edgedistill.runtime.benchmark import BenchmarkConfig, alternating_timings, bench_in_child, rounds_line

MODELS = {"teacher": ("onnx", "teacher.onnx", "teacher"), "student_fp32": ("onnx", "student.onnx", "student"),
          "student_int8": ("quantized", "student_quantized.onnx", "student")}


def run(cfg: BenchmarkConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    y_path = ctx.work / "test_labels.npy"
    np.save(y_path, ds.splits["test"][1])
    x_paths: dict[str, Path] = {}
    for model in ("teacher", "student"):  # each model's test inputs at its own size (text: data.max_length tokens)
        test = ds.split("test", read_preprocess(inputs["onnx"] / f"{model}_preprocess.json").get("height"))
        x_paths[model] = test.save_inputs(ctx.work / f"{model}_test_inputs")
    results = {}
    models = {role: (inputs[artifact] / filename, x_paths[model]) for role, (artifact, filename, model) in MODELS.items()}
    for role, (path, x_path) in tqdm(models.items(), desc="benchmark", unit="model", disable=not ctx.progress, leave=False):
        r = bench_in_child(path, cfg, x_path, y_path)
        ctx.log(f"{role}: p50 {r['latency_ms']['p50']:.3f} ms, p90 {r['latency_ms']['p90']:.3f} ms, "
                f"{r['size_bytes'] / 1024:.0f} KiB, peak RSS {r['peak_rss_mb']:.0f} MiB, test acc {r['accuracy']:.2f}%"
                + (f" ({r['sequence_length']} tokens)" if "sequence_length" in r else ""))
        if not ds.modality.sized:  # text: the latency at other lengths too, on made-up token ids
            timing = cfg.model_copy(update={"throughput_batch": 0, "profile_runs": 0})
            r["latency_ms_by_length"] = {str(n): bench_in_child(path, timing, sequence_length=n)["latency_ms"]
                                         for n in cfg.sequence_lengths}
            ctx.log("    " + ", ".join(f"{n} tokens p50 {v['p50']:.3f} ms" for n, v in r["latency_ms_by_length"].items()))
        results[role] = r
    retime(results, models, cfg, ctx)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2))
    return {role: {"latency_ms_p90": r["latency_ms"]["p90"], "accuracy": r["accuracy"], "size_bytes": r["size_bytes"]}
            for role, r in results.items()}


def retime(results: dict[str, dict], models: dict[str, tuple[Path, Path]], cfg: BenchmarkConfig, ctx: Context) -> None:
    """Rounds 2..benchmark.rounds of every model's latency (the first came with its full benchmark),
    latency only, the models alternating; each result's latency_ms becomes the median of its rounds,
    figure by figure, and latency_rounds_ms the p90 of every round."""
    timing = cfg.model_copy(update={"throughput_batch": 0, "profile_runs": 0})
    rounds = alternating_timings(models, lambda m: bench_in_child(m[0], timing, m[1])["latency_ms"], cfg.rounds,
                                 {role: [r["latency_ms"]] for role, r in results.items()})
    for role, r in results.items():
        r["latency_rounds_ms"] = [t["p90"] for t in rounds[role]]
        r["latency_ms"] = {k: float(np.median([t[k] for t in rounds[role]])) for k in r["latency_ms"]}
    if cfg.rounds > 1:
        ctx.log(f"timed {cfg.rounds} times, alternating (median p90, range): "
                + rounds_line({role: r["latency_rounds_ms"] for role, r in results.items()}))


def configure(p) -> BenchmarkConfig:
    """benchmark, with one round under protocol mlperf (its minimum runs and duration are the protocol;
    rounds then does not change the result, nor its cache key)."""
    return p.benchmark.model_copy(update={"rounds": 1}) if p.benchmark.protocol == "mlperf" else p.benchmark


STAGE = Stage(
    name="benchmark", version=7, inputs=("dataset", "onnx", "quantized"), output="benchmark",
    configure=configure, run=run,
    headline=lambda m: f"p90 teacher {m['teacher']['latency_ms_p90']:.2f} ms, student FP32 "
                       f"{m['student_fp32']['latency_ms_p90']:.2f} ms, INT8 {m['student_int8']['latency_ms_p90']:.2f} ms",
)
