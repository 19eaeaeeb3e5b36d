"""Issue 18's MobileNetV3-Small case: a 224-px MobileNetV3-Small student (hard-swish, squeeze-excitation,
from scratch) distilled from the MobileNetV2 ImageNet teacher on MNIST-5k, then post-training INT8 and
QAT (`quantize.qat: always`). Does the best static INT8 model (post-training or QAT) stay within 1.0 point
of FP32 on test, and is it faster than FP32 here?

Two steps, so the training can run where a GPU is (it is the pipeline itself, `edgedistill run ...
--until qat`, with the settings below; each seed's FP32, post-training and QAT models are copied out):

    python benchmarks/mnv3_qat.py train --seeds 0 1 2 --store DIR --out RUNS [--set KEY=VALUE ...]
    python benchmarks/mnv3_qat.py measure RUNS [--store DIR] [--repeats 3]

`measure` runs here: it rebuilds each seed's splits with the same pipeline (prepare only; the test labels
must hash to what `train` recorded, else it stops), measures validation and test accuracy of the three
models with ONNX Runtime, and times them at batch 1, 1 thread (p90 of 300 runs, the three models
alternating, `--repeats` rounds; the median p90 and the spread are reported), and the models'
disagreement with FP32 on training images calibration did not read (issue 18, part 3: does it bound
the test drop?). `--arm-images N` also runs each model on emulated aarch64 cores (`edgedistill target
setup aarch64`; answers only, never timing). Run it alone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.data.dataset import Dataset
from edgedistill.pipeline import load_pipeline
from edgedistill.quantization.ort_quantize import calibration_rows
from edgedistill.release.report import interval
from edgedistill.runtime import targets
from edgedistill.runtime.benchmark import alternating_timings
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.runtime.ortbench import benchmark
from edgedistill.runtime.stats import disagreement_bound, paired_drop
from edgedistill.stages import STAGES

PIPELINE = ROOT / "pipelines" / "quickstart.yaml"
CASE = ["data.image_size=224", "teacher.image_size=224", "student.preset=mobilenet_v3_small",
        "quantize.qat=always",
        # 7-bit weights, what ONNX Runtime needs on a CPU without VNNI (where seed 0 was measured), whatever
        # CPU training runs on; where `measure` runs on a VNNI CPU: train with --set quantize.reduce_range=auto
        "quantize.reduce_range=true"]
MODELS = {"fp32": "FP32 student", "ptq": "best post-training INT8", "qat": "QAT INT8"}


def labels_hash(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def train(a) -> None:
    import torch

    store = Store(a.store)
    for seed in a.seeds:
        pipeline = load_pipeline(PIPELINE, [f"seed={seed}", *CASE, *a.set])
        started = time.time()
        report = Runner(store, STAGES, progress=False).run(pipeline, until="qat")
        out = a.out / f"seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(report.result("export").path / "student.onnx", out / "fp32.onnx")
        shutil.copy2(report.result("quantize").path / "student_quantized.onnx", out / "ptq.onnx")
        shutil.copy2(report.result("qat").path / "qat_candidate.onnx", out / "qat.onnx")
        ds = Dataset.load(report.result("prepare").path)
        record = {
            "seed": seed, "sets": [f"seed={seed}", *CASE, *a.set], "wall_s": round(time.time() - started, 1),
            "test_labels_sha256": labels_hash(ds.split("test", 224).labels),
            "host": {"machine": platform.machine(), "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "stages": {s.stage: {"status": s.status, "seconds": s.seconds, "headline": s.headline,
                                 "metrics": s.result.meta["metrics"] if s.result else None}
                       for s in report.statuses},
        }
        (out / "record.json").write_text(json.dumps(record, indent=1, default=str))
        print(f"seed {seed}: {record['wall_s']} s; " + "; ".join(
            f"{k} {v['seconds']:.0f} s" for k, v in record["stages"].items()), flush=True)


def arm_answers(model: Path, test, n: int, cpus: list[str], work: Path) -> dict:
    """Top-1 agreement with x86 and max |logit difference| of `model` run by ONNX Runtime on emulated
    aarch64 cores (`edgedistill target setup aarch64`), with the bundle's bench.py in verify mode, on the
    first n test images; and their accuracy there."""
    work.mkdir(parents=True, exist_ok=True)
    x, y = test.inputs(slice(0, n)), test.labels[:n]
    np.save(work / "x.npy", x)
    np.save(work / "y.npy", y)
    host = ort_predict(model, x)
    out = {}
    for cpu in cpus:
        started = time.time()
        logits, _ = targets.predict(targets.default_root(), cpu, ROOT / "edgedistill" / "runtime" / "ortbench.py", model,
                                    work / "x.npy", work / "y.npy")
        out[cpu] = {"agreement": 100.0 * float((logits.argmax(1) == host.argmax(1)).mean()),
                    "max_abs_diff": float(np.abs(logits - host).max()),
                    "accuracy": 100.0 * float((logits.argmax(1) == y).mean()), "images": n,
                    "emulation_s": round(time.time() - started, 1)}
        print(f"{model.name} on {cpu}: {out[cpu]}", flush=True)
    return out


def rebuild(folder: Path, store: Store):
    """What `train` copied to folder, with its pipeline and dataset rebuilt here by the same settings
    (prepare only); stops if the test labels are not the ones it was trained against.
    Returns (record, pipeline, dataset)."""
    rec = json.loads((folder / "record.json").read_text())
    pipeline = load_pipeline(PIPELINE, rec["sets"])
    report = Runner(store, STAGES, progress=False).run(pipeline, until="prepare")
    ds = Dataset.load(report.result("prepare").path)
    if labels_hash(ds.split("test").labels) != rec["test_labels_sha256"]:
        sys.exit(f"error: {folder}'s test split here is not the one it was trained against; stop")
    return rec, pipeline, ds


def measure(a) -> None:
    store = Store(a.store)
    rows = []
    for record in sorted(a.runs.glob("seed*/record.json")):
        folder = record.parent
        rec, pipeline, ds = rebuild(folder, store)
        seed = rec["seed"]
        val, test, train = ds.split("val", 224), ds.split("test", 224), ds.split("train", 224)
        # part 3 of issue 18: disagreement with FP32 on training images calibration did not read (labels
        # unused). The FP32 student trained on them; QAT (train_images: all) trained to agree on them
        unseen = train.subset(np.setdiff1d(np.arange(len(train)), calibration_rows(
            len(train), pipeline.quantize.calibration_samples, seed)))
        paths = {k: folder / f"{k}.onnx" for k in MODELS}
        preds = {k: {s: ort_predict(p, split).argmax(1) for s, split in (("val", val), ("test", test), ("unseen", unseen))}
                 for k, p in paths.items()}
        x = test.inputs(slice(0, 1))
        p90 = alternating_timings(paths, lambda p: benchmark(str(p), threads=1, runs=300, inputs=x, throughput_batch=0,
                                                             profile_runs=0)["latency_ms"]["p90"], a.repeats)
        for k in MODELS:
            row = {"seed": seed, "model": k, "p90_ms": float(np.median(p90[k])), "p90_all": p90[k],
                   "size_kib": paths[k].stat().st_size / 1024}
            for s, split in (("val", val), ("test", test)):
                row[f"{s}_acc"] = 100.0 * float((preds[k][s] == split.labels).mean())
                row[f"{s}_drop"] = None if k == "fp32" else paired_drop(split.labels, preds["fp32"][s], preds[k][s], seed=seed)
            if k != "fp32":
                row["test_disagreement"] = 100.0 - row["test_drop"]["agreement"]
                row["unlabeled"] = disagreement_bound(preds["fp32"]["unseen"], preds[k]["unseen"])
            stages = rec["stages"]
            row["candidate"] = {"fp32": "fp32", "ptq": stages["quantize"]["metrics"]["recipe"],
                                "qat": (stages["qat"]["metrics"].get("qat") or {}).get("candidate")}[k]
            if a.arm_images and a.arm_cpus:  # the answers of emulated ARM cores (never their timing)
                row["arm"] = arm_answers(paths[k], test, a.arm_images, a.arm_cpus, a.runs / f"arm_{seed}")
            rows.append(row)
    out = a.runs / f"measured_{time.strftime('%Y%m%dT%H%M%S')}.json"  # every run kept
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")

    def unlabeled(r):
        u = r.get("unlabeled")
        return "-" if u is None else f"{u['disagreement']:.2f} [{u['upper']:.2f}] of {u['examples']:,} / {r['test_disagreement']:.2f}"

    print("| seed | model | val acc % | val drop [95% CI] | test acc % | test drop [95% CI] | disagreement % with FP32: "
          "training images calibration did not read [95% upper] / test | p90 ms here (min-max) | KiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {MODELS[r['model']]} (`{r['candidate']}`) | {r['val_acc']:.2f} | {interval(r['val_drop'])} | "
              f"{r['test_acc']:.2f} | {interval(r['test_drop'])} | {unlabeled(r)} | {r['p90_ms']:.2f} ({min(r['p90_all']):.2f}-"
              f"{max(r['p90_all']):.2f}) | {r['size_kib']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    t = sub.add_parser("train", help="run the pipeline up to qat for each seed and copy the three models out")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--store", type=Path, default=Path("/tmp/edgedistill_mnv3_qat"))
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more pipeline overrides")
    m = sub.add_parser("measure", help="accuracy and latency here of what train copied out")
    m.add_argument("runs", type=Path)
    m.add_argument("--store", type=Path, default=Path("/tmp/edgedistill_mnv3_qat"))
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--arm-images", type=int, default=0, help="test images run on each emulated ARM core (0: none)")
    m.add_argument("--arm-cpus", nargs="+", default=["cortex-a72", "cortex-a76"], choices=list(targets.CPUS))
    a = ap.parse_args()
    train(a) if a.step == "train" else measure(a)


if __name__ == "__main__":
    main()
