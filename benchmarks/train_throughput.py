"""Training throughput of the distill stage on the quickstart (MobileNetV2 teacher, small CNN student,
MNIST-5k at 32 px, batch 64, CPU threads as torch sets them).

1. The distill stage's loop (edgedistill.training.loop.fit, stored teacher logits) against a bare PyTorch loop
   on the same student, data, batch, optimizer and loss: images per second (target: within 10%).
2. A distill epoch with the stored teacher outputs against one with the teacher run online
   (target: at most 0.6 of the time).

    python benchmarks/train_throughput.py [--store artifacts] [--epochs 2]

Times are marginal per epoch (a run of 1 + N epochs minus a run of 1 epoch, over N), so loading data and
models, the final test pass and saving are not charged to the loop.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgedistill import models
from edgedistill.core.runner import Runner
from edgedistill.core.stage import Context
from edgedistill.core.store import Store
from edgedistill.data.dataset import Dataset
from edgedistill.models.presets import load_preset
from edgedistill.pipeline import load_pipeline
from edgedistill.stages import STAGES, distill
from edgedistill.training.losses import kd_loss


def stage_seconds(inputs: dict, epochs: int, stored: bool) -> float:
    """The distill stage itself, whole (set-up included), precise BN off (a bare loop has none)."""
    pipeline = load_pipeline(ROOT / "pipelines/quickstart.yaml",
                             [f"distill.epochs={epochs}", "distill.precise_bn_batches=0",
                              f"distill.use_stored_teacher_outputs={str(stored).lower()}"])
    return timed_stage(distill.run, distill.STAGE.configure(pipeline), inputs)


def timed_stage(run, cfg, inputs: dict) -> float:
    """Seconds of one stage function, run into a fresh output and work folder (kept out of the time)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        out.mkdir()
        work.mkdir()
        started = time.perf_counter()
        run(cfg, inputs, out, Context(work=work, progress=False))
        return time.perf_counter() - started


def bare_seconds(inputs: dict, epochs: int) -> float:
    """The same training written as the plain PyTorch loop one would write by hand."""
    pipeline = load_pipeline(ROOT / "pipelines/quickstart.yaml")
    d = pipeline.distill
    ds = Dataset.load(inputs["dataset"])
    x, y = (torch.from_numpy(a) for a in ds.inputs("train"))
    x_val, _ = ds.inputs("val")
    teacher_logits = torch.from_numpy(np.load(inputs["teacher_outputs"] / "train_logits.npy"))
    student, _ = models.build(load_preset(pipeline.student.preset, "students"), len(ds.classes), 3, seed=0)
    steps = len(y) // d.batch_size
    opt = torch.optim.AdamW(student.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps))))
    started = time.perf_counter()
    for epoch in range(epochs):
        student.train()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for i in range(steps):
            idx = order[i * d.batch_size:(i + 1) * d.batch_size]
            loss = kd_loss(student(x[idx]), teacher_logits[idx], y[idx], d.temperature, d.alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        student.eval()
        with torch.no_grad():  # the stage evaluates on validation every epoch; so does this loop
            torch.cat([student(torch.from_numpy(x_val[j:j + 256])) for j in range(0, len(x_val), 256)])
    return time.perf_counter() - started


def per_epoch(timed, inputs: dict, epochs: int, **kw) -> float:
    """Marginal seconds per epoch: (time of 1 + epochs) - (time of 1), over epochs, so set-up (loading
    data and models, the final test pass, saving) is not charged to the training loop."""
    return (timed(inputs, 1 + epochs, **kw) - timed(inputs, 1, **kw)) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    report = Runner(Store(a.store), STAGES, progress=False).run(load_pipeline(ROOT / "pipelines/quickstart.yaml"), until="teach")
    inputs = {"dataset": report.result("prepare").path, "teacher": report.result("finetune").path,
              "teacher_outputs": report.result("teach").path}
    n = len(Dataset.load(inputs["dataset"]).splits["train"][1]) // 64 * 64
    # warm-up, discarded: the first optimizer step in a process pays ~1.5 s of lazy imports inside torch
    stage_seconds(inputs, 1, stored=True)
    ours = per_epoch(stage_seconds, inputs, a.epochs, stored=True)
    bare = per_epoch(bare_seconds, inputs, a.epochs)
    online = per_epoch(stage_seconds, inputs, a.epochs, stored=False)
    print(f"torch threads: {torch.get_num_threads()}, {n} training images a epoch, batch 64; "
          f"marginal time of {a.epochs} epochs\n")
    print("| loop | s / epoch | images / s | ratio |")
    print("|---|---|---|---|")
    print(f"| bare PyTorch loop (stored teacher logits) | {bare:.2f} | {n / bare:.0f} | 1.00 |")
    print(f"| distill stage, stored teacher logits | {ours:.2f} | {n / ours:.0f} | {bare / ours:.2f} of bare throughput |")
    print(f"| distill stage, teacher run online | {online:.2f} | {n / online:.0f} | stored/online time: {ours / online:.2f} |")


if __name__ == "__main__":
    main()
