"""Text: how good and how fast are the distilled students, and how does the shipped INT8 model compare
with optimum's own quantizer?

For each dataset and seed, the text quickstart pipeline (all-MiniLM-L6-v2 teacher, fine-tuned in full)
runs through the pipeline's own stages with each student:
  minilm_l3        3 of the teacher's 6 pretrained layers (0, 2, 4), KD (T 2, alpha 0.5)
  minilm_l3+hints  the same plus hidden-state hints (teacher layer 5 -> student layer 2, 3 -> 1)
  text_cnn         a 1-D CNN over the token ids (4.1M parameters), KD
Each student's baseline stage is the same student trained alone (labels only). Reported: test
accuracy (PyTorch) of the teacher, the student alone and the distilled student; the FP32 and shipped
models' test accuracy with ONNX Runtime; parameters; size; p50/p90 latency at 32 and 128 tokens (batch
1, 1 thread, bench.py on made-up token ids of that length). Against optimum: ORTQuantizer with
AutoQuantizationConfig.avx512_vnni(is_static=False) on the same FP32 model, its accuracy and latency.

    .venv/bin/python benchmarks/text_quality.py [--datasets rotten_tomatoes bbc_news] [--seeds 0 1 2]
        [--students minilm_l3 minilm_l3+hints text_cnn] [--store DIR]

Prints Markdown tables to paste into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402

from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.data.dataset import Dataset
from edgedistill.pipeline import load_pipeline
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.stages import STAGES

PIPELINE = ROOT / "pipelines" / "text_quickstart.yaml"

DATASETS = {
    # the quickstart's subset: 1,200 snippets a class
    "rotten_tomatoes": ["data.kind=rotten_tomatoes"],
    # all 2,225 articles, the first 128 tokens of each (their headline and opening paragraph)
    "bbc_news": ["data.kind=bbc_news", "data.max_per_class=null", "data.max_length=128"],
}

STUDENTS = {
    "minilm_l3": ["student.preset=minilm_l3"],
    "minilm_l3+hints": ["student.preset=minilm_l3",
                        'distill.hints=[{teacher: hf.bert.encoder.layer.5, student: hf.bert.encoder.layer.2, weight: 1.0}, '
                        '{teacher: hf.bert.encoder.layer.3, student: hf.bert.encoder.layer.1, weight: 1.0}]'],
    # from scratch: a higher learning rate and more epochs (it is 20x cheaper per step)
    "text_cnn": ["student.preset=text_cnn", "distill.lr=0.003", "distill.epochs=6"],
}

SEQUENCE_LENGTHS = (32, 128)


def latency(model: Path, tokens: int) -> dict:
    """bench.py at batch 1, 1 thread, on made-up token ids of this length."""
    out = subprocess.run([sys.executable, str(ROOT / "edgedistill" / "runtime" / "ortbench.py"), str(model), "--threads", "1",
                          "--runs", "200", "--min-seconds", "2", "--warmup", "20", "--throughput-batch", "0",
                          "--profile-runs", "0", "--sequence-length", str(tokens)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["latency_ms"]


def optimum_dynamic(fp32: Path, work: Path) -> Path:
    """optimum's ORTQuantizer, AutoQuantizationConfig.avx512_vnni(is_static=False) (per tensor, its default)."""
    from onnxruntime.quantization import quant_pre_process
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    folder = work / "optimum_in"
    folder.mkdir(parents=True, exist_ok=True)
    # the same FP32 graph with ONNX Runtime's symbolic shape inference run on it (what our quantize stage
    # does first): onnx's own shape inference, which the quantizer uses otherwise, does not type the
    # fused contrib operators (Attention, SkipLayerNormalization) and ORTQuantizer fails on them
    try:
        quant_pre_process(str(fp32), str(folder / "model.onnx"))
    except Exception:  # as the quantize stage does: symbolic shape inference misses the 1-D CNN's Concat
        quant_pre_process(str(fp32), str(folder / "model.onnx"), skip_symbolic_shape=True)
    quantizer = ORTQuantizer.from_pretrained(folder, file_name="model.onnx")
    quantizer.quantize(save_dir=work / "optimum_out", quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False))
    return next((work / "optimum_out").glob("*quantized*.onnx"))


def accuracy(model: Path, test) -> float:
    """Test accuracy as the pipeline measures it: batches of 64, each cut to its longest example."""
    return float((ort_predict(model, test).argmax(1) == test.labels).mean() * 100)


def accuracy_as_sent(model: Path, test) -> float:
    """Test accuracy one example at a time, padded to data.max_length, as a device sends it. Dynamic
    INT8 computes activation ranges per tensor over the whole batch, padding included, so its answers
    depend on what else is in the batch; a float model's do not."""
    from edgedistill.data.text.tokenizer import text_feeds

    ids = np.asarray(test.ids)
    feeds = text_feeds(ids, test.spec["pad_token_id"])
    return float((ort_predict(model, feeds, batch=1).argmax(1) == test.labels).mean() * 100)


def run_one(store: Store, dataset: str, seed: int, student: str, work: Path) -> dict:
    overrides = [*DATASETS[dataset], *STUDENTS[student], f"seed={seed}", "budgets=null"]
    pipeline = load_pipeline(PIPELINE, overrides)
    started = time.time()
    report = Runner(store, STAGES, progress=False).run(pipeline, until="benchmark")
    m = {s: report.result(s).meta["metrics"] for s in ("finetune", "baseline", "distill", "export", "quantize")}
    onnx_dir, quant_dir = report.result("export").path, report.result("quantize").path
    test = Dataset.load(report.result("prepare").path).split("test")
    fp32, int8 = onnx_dir / "student.onnx", quant_dir / "student_quantized.onnx"
    shipped = fp32 if m["quantize"]["choice"] == "fp32" else int8
    theirs = optimum_dynamic(fp32, work / f"{dataset}_{seed}_{student}")
    row = {
        "dataset": dataset, "seed": seed, "student": student, "seconds": time.time() - started,
        "teacher": m["finetune"]["test_accuracy"], "alone": m["baseline"]["test_accuracy"], "kd": m["distill"]["test_accuracy"],
        "exported": m["export"]["student"]["shipped"], "teacher_params": m["finetune"]["params"],
        "params": m["distill"]["params"], "recipe": m["quantize"]["recipe"], "choice": m["quantize"]["choice"],
        "fused": m["export"]["parity"]["student"].get("fused_operators"),
    }
    for name, path in (("fp32", fp32), ("int8", int8), ("shipped", shipped), ("optimum", theirs)):
        row[name] = {"accuracy": accuracy(path, test), "accuracy_batch1": accuracy_as_sent(path, test),
                     "size_bytes": path.stat().st_size,
                     **{f"p{q}_{n}": lat[f"p{q}"] for n in SEQUENCE_LENGTHS for lat in [latency(path, n)] for q in (50, 90)}}
    print(json.dumps(row), flush=True)
    return row


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def tables(rows: list[dict]) -> str:
    out = ["| dataset | student | teacher % | alone % | KD % | KD/teacher | shipped (seeds) | FP32 ONNX % | quantized % | "
           "quantized drop pt | drop pt, batch 1 | params | FP32 MiB | quantized MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["student"]) for r in rows})
    for ds, st in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["student"] == st]
        col = lambda f: mean_sd([f(r) for r in rs])
        out.append(f"| {ds} | {st} | {col(lambda r: r['teacher'])} | {col(lambda r: r['alone'])} | {col(lambda r: r['kd'])} | "
                   f"{statistics.mean(r['kd'] / r['teacher'] for r in rs):.1%} | "
                   f"{', '.join(r['recipe'] if r['choice'] != 'fp32' else 'fp32' for r in rs)} | {col(lambda r: r['fp32']['accuracy'])} | "
                   f"{col(lambda r: r['int8']['accuracy'])} | {col(lambda r: r['fp32']['accuracy'] - r['int8']['accuracy'])} | "
                   f"{col(lambda r: r['fp32']['accuracy_batch1'] - r['int8']['accuracy_batch1'])} | "
                   f"{rs[0]['params'] / 1e6:.1f}M | {rs[0]['fp32']['size_bytes'] / 2**20:.1f} | {rs[0]['int8']['size_bytes'] / 2**20:.1f} |")
    out += ["", "| dataset | student | model | acc % | acc % batch 1 | p50 ms @32 | p90 ms @32 | p50 ms @128 | p90 ms @128 | speed-up @128 (p50) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for ds, st in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["student"] == st]
        for name in ("fp32", "int8", "optimum"):
            col = lambda f: mean_sd([f(r) for r in rs])
            speed = statistics.mean(r["fp32"]["p50_128"] / r[name]["p50_128"] for r in rs)
            label = {"fp32": "FP32", "int8": f"ours, best quantized ({', '.join(r['recipe'] for r in rs)})",
                     "optimum": "optimum avx512_vnni dynamic"}[name]
            out.append(f"| {ds} | {st} | {label} | "
                       f"{col(lambda r: r[name]['accuracy'])} | {col(lambda r: r[name]['accuracy_batch1'])} | {col(lambda r: r[name]['p50_32'])} | {col(lambda r: r[name]['p90_32'])} | "
                       f"{col(lambda r: r[name]['p50_128'])} | {col(lambda r: r[name]['p90_128'])} | {speed:.2f}x |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    ap.add_argument("--store", type=Path, default=None, help="store to reuse (default: a temporary one)")
    ap.add_argument("--rows", type=Path, default=None, help="append each row as JSON to this file")
    a = ap.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(a.store or Path(tmp) / "store")
        for ds in a.datasets:
            for seed in a.seeds:
                for st in a.students:
                    rows.append(run_one(store, ds, seed, st, Path(tmp)))
                    if a.rows:
                        with open(a.rows, "a") as f:
                            f.write(json.dumps(rows[-1]) + "\n")
    print(f"\n{platform.processor() or platform.machine()}, {time.time() - started:.0f} s\n")
    print(tables(rows))


if __name__ == "__main__":
    main()
