"""What quantization-aware training recovers where post-training quantization is not enough (issue 18).

Case teacher224: the quickstart's MobileNetV2 teacher at 224 px (ImageNet weights, a one-epoch linear
probe on MNIST-5k; benchmarks/quantization_fidelity.py builds and caches it). For each seed:
  1. post-training: quantize.select in auto mode with the x86 recipes (what the quantize stage does),
     its most accurate candidate's drop against FP32 on validation and, once, on test;
  2. QAT: the qat stage's own functions (stages/qat.py: train_qat, quantize_trained) on the PyTorch
     model, emulating the recipe the stage would pick (qat.plan), then ONNX Runtime quantizes it
     twice (ranges recalibrated; learned ranges pinned); each one's drops on validation and test
     against the same FP32 model, its p90 latency beside FP32's (batch 1, 1 thread, this machine),
     and the wall time QAT took per epoch.

    python benchmarks/qat_recovery.py [--seeds 0 1 2] [--epochs 2] [--train-images 1024] [--warmup-epochs 0.5] [--recipe R] [--store DIR]

Run it alone: latencies are taken on this machine. Prints a markdown table (RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from quantization_fidelity import interval, teacher224, teacher224_model  # noqa: E402

from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.models.saved import load_trained
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.runtime.stats import paired_drop
from edgedistill.stages import STAGES, qat, quantize
from edgedistill.stages.qat import QATConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--range-lr", type=float, default=1e-4)
    ap.add_argument("--warmup-epochs", type=float, default=QATConfig().warmup_epochs,
                    help="qat.warmup_epochs (linear warm-up, then cosine; default the stage's)")
    ap.add_argument("--recipe", help="qat.recipe: the recipe emulated (default: the one qat.plan picks, as the stage does)")
    ap.add_argument("--reuse-ptq", action="store_true", help="the post-training results of the last run (same seed)")
    ap.add_argument("--calibrated", action="store_true", help="recalibrate ranges every epoch instead of learning them")
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill-qat")
    a = ap.parse_args()
    store = Store(a.store / "teacher224")
    work = a.store / "work"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in a.seeds:
        saved = work / f"ptq_{seed}.json"  # post-training, as the quantize stage does it (--reuse-ptq: from the last run)
        if a.reuse_ptq and saved.is_file():
            ptq = json.loads(saved.read_text())
        else:
            ptq = teacher224(store, seed, [], work)
            saved.write_text(json.dumps(ptq))
        fp32_path, ds, pipeline = teacher224_model(store, seed, [], work)
        q = quantize.resolve_reduce_range(pipeline.quantize)
        latency = quantize.latency_settings(BenchmarkConfig(threads=1), q)
        t = QATConfig(epochs=a.epochs, lr=a.lr, batch_size=32, train_images=a.train_images, range_lr=a.range_lr,
                      learn_ranges=not a.calibrated, warmup_epochs=a.warmup_epochs, recipe=a.recipe)
        cfg = qat.QATStageConfig(mode="always", qat=t, quantize=q, latency=latency, seed=seed)
        why_not, recipe = qat.plan(cfg, ptq)
        assert why_not is None, why_not
        rq = q.with_recipe(recipe).model_copy(update={"calibrate_method": "minmax"})
        train = ds.split("train", 224)
        calibration = train.subset(quantize.calibration_rows(len(train), q.calibration_samples, seed))
        model = load_trained(Runner(store, STAGES, progress=False).run(pipeline, until="finetune").result("finetune").path)
        val, test = ds.split("val", 224), ds.split("test", 224)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            started = time.monotonic()
            result = qat.train_qat(model, ds, 224, calibration, rq, t, fp32=fp32_path, seed=seed,
                                   checkpoint=Path(tmp) / "checkpoint.pt", log=print, progress=True)
            trained_s = time.monotonic() - started
            ours = [quantize.Candidate(f"qat_{recipe}", path=Path(tmp) / "qat.onnx"),
                    quantize.Candidate(f"qat_{recipe}_pinned", path=Path(tmp) / "qat_pinned.onnx")]
            qat.quantize_trained(model, ds, calibration, test, rq, 18, ours[0].path, ours[1].path, result.ranges,
                                 Path(tmp), log=print)
            p90, _ = quantize.latency_meter(q, latency)
            fp32 = quantize.measure(quantize.Candidate("fp32", path=fp32_path), (val, val.labels), None, p90, seed)
            for c in ours:
                quantize.measure(c, (val, val.labels), fp32.preds, p90, seed)
                c.test_drop = paired_drop(test.labels, ort_predict(fp32_path, test).argmax(1),
                                          ort_predict(c.path, test).argmax(1), seed=seed)
        best = next(x for x in ptq["candidates"] if x["name"] == ptq["recipe"])
        for c in ours:
            rows.append(f"| {seed} | {fp32.val_accuracy:.2f} | {ptq['recipe']} | {interval(best['val_drop'])} | "
                        f"{interval(ptq['test_drop'])} | {best['latency_ms_p90']:.2f} | {c.name} | {interval(c.val_drop)} | "
                        f"{interval(c.test_drop)} | {c.latency_ms_p90:.2f} | {fp32.latency_ms_p90:.2f} | "
                        f"{result.history[-1]['val_accuracy']:.2f} | {trained_s / a.epochs:.0f} |")
        print(*rows[-2:], sep="\n", flush=True)
    print(f"\n{a.epochs} epochs over {a.train_images} training images, lr {a.lr:g}, warm-up {a.warmup_epochs:g} epochs, batch 32, ranges "
          f"{'recalibrated every epoch' if a.calibrated else f'learned (range_lr {a.range_lr:g})'}\n")
    print("| seed | FP32 val % | post-training best | its val drop [95% CI] | its test drop | its p90 ms | QAT | QAT val drop "
          "[95% CI] | QAT test drop | QAT p90 ms | FP32 p90 ms | QAT val % (fake quant, PyTorch) | QAT s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
