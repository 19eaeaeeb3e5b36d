"""Training images/s of the finetune stage at 224 px, with augmentation and DataLoader workers, against
a bare loop that does the same work with plain torch: the same memory-mapped uint8 arrays, a plain
`torch.utils.data.DataLoader` (map-style dataset, batch_size, shuffle, the same number of persistent
workers) with the same torchvision transforms (RandomResizedCrop 224, horizontal flip, to float,
normalize), the same model, optimizer, schedule and loss, and a validation pass every epoch as the stage
does.

Two cases: the MobileNetV2 teacher as a linear probe (ImageNet weights, frozen backbone: the forward
pass dominates) and a MobileNetV3-Small student trained in full at 224 px (a cheap model, 56 MFLOPs:
the data pipeline's share of the time is largest).

    python benchmarks/loader_throughput.py [--images 1000] [--epochs 2] [--workers 2] [--repeats 2]

Times are marginal per epoch (a run of 1 + N epochs minus a run of 1 epoch, over N), so loading data and
models, the final test pass and saving are not charged to the loop; ours and bare alternate, `--repeats`
times. Run it alone: another heavy process on the machine slows both ~10x.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from data_scale import make_folder  # noqa: E402
from train_throughput import timed_stage  # noqa: E402

from edgedistill import models
from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.data.dataset import Dataset
from edgedistill.models.presets import load_preset
from edgedistill.pipeline import load_pipeline
from edgedistill.stages import STAGES, finetune

CASES = {
    "MobileNetV2 linear probe": {"preset": "mobilenet_v2_imagenet", "strategy": "linear_probe", "lr": 0.005},
    "MobileNetV3-Small, full, from scratch": {"preset": str(ROOT / "models/students/mobilenet_v3_small.yaml"),
                                              "strategy": "full", "lr": 0.003},
}


def pipeline_file(folder: Path, tmp: Path, workers: int) -> Path:
    path = tmp / "pipeline.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "name": "loader_throughput", "seed": 0,
        "data": {"kind": "imagefolder", "train_dir": str(folder), "image_size": 224, "channels": 3,
                 "horizontal_flip": True},
        "teacher": {"batch_size": 64, "augment": "light", "workers": workers, "precise_bn_batches": 0},
    }))
    return path


def stage_seconds(path: Path, inputs: dict, case: dict, epochs: int) -> float:
    """The finetune stage itself, whole (set-up included)."""
    sets = [f"teacher.{k}={v}" for k, v in case.items()] + [f"teacher.epochs={epochs}"]
    return timed_stage(finetune.run, finetune.STAGE.configure(load_pipeline(path, sets)), inputs)


class Images(torch.utils.data.Dataset):
    """The map-style dataset one writes by hand: one image, transformed, per item."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, torch.from_numpy(y), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(torch.from_numpy(np.array(self.x[i])).permute(2, 0, 1)), self.y[i]


def bare_seconds(path: Path, inputs: dict, case: dict, epochs: int) -> float:
    """The same fine-tuning as a plain PyTorch loop over a plain DataLoader."""
    from torchvision.transforms import v2

    p = load_pipeline(path, [f"teacher.{k}={v}" for k, v in case.items()])
    t = p.teacher
    ds = Dataset.load(inputs["dataset"])
    preset = load_preset(t.preset, "teachers")
    started = time.perf_counter()
    model, head_name = models.build(preset, len(ds.classes), 3, pretrained=True, seed=0)
    head = model.get_submodule(head_name)
    if t.strategy == "linear_probe":
        for q in model.parameters():
            q.requires_grad_(False)
        for q in head.parameters():
            q.requires_grad_(True)
        groups = [{"params": list(head.parameters()), "lr": t.lr}]
    else:
        groups = [{"params": list(model.parameters()), "lr": t.lr}]
    frozen_bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and not any(q.requires_grad for q in m.parameters())]
    transform = v2.Compose([v2.RandomResizedCrop(224, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.data.mean, p.data.std)])
    x, y = ds.splits["train"]
    loader = torch.utils.data.DataLoader(Images(x, y, transform), batch_size=t.batch_size, shuffle=True, drop_last=True,
                                         num_workers=t.workers, persistent_workers=t.workers > 0)
    steps = len(y) // t.batch_size
    opt = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps))))
    x_val, _ = ds.splits["val"]
    mean = torch.tensor(p.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(p.data.std).view(1, 3, 1, 1)
    for epoch in range(epochs):
        model.train()
        for m in frozen_bn:
            m.eval()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():  # the stage evaluates on validation every epoch; so does this loop
            for j in range(0, len(x_val), 256):
                model((torch.from_numpy(np.array(x_val[j:j + 256])).permute(0, 3, 1, 2).float() / 255 - mean) / std)
    return time.perf_counter() - started


def per_epoch(timed, *args, epochs: int) -> float:
    """Marginal seconds per epoch: (time of 1 + epochs) - (time of 1), over epochs."""
    return (timed(*args, epochs=1 + epochs) - timed(*args, epochs=1)) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill_data_scale",
                    help="where the JPEG folder is made (kept between runs)")
    a = ap.parse_args()
    folder = make_folder(a.data, a.images)
    with tempfile.TemporaryDirectory(dir=a.data) as tmp:
        path = pipeline_file(folder, Path(tmp), a.workers)
        report = Runner(Store(Path(tmp) / "store"), STAGES, progress=False).run(load_pipeline(path), until="prepare")
        inputs = {"dataset": report.result("prepare").path}
        n = len(Dataset.load(inputs["dataset"]).splits["train"][1]) // 64 * 64
        print(f"torch threads {torch.get_num_threads()}, {a.workers} loader workers, {n} training images an epoch at "
              f"224 px, batch 64, augment light; marginal time of {a.epochs} epochs\n")
        print("| case | repeat | bare: s/epoch (img/s) | stage: s/epoch (img/s) | stage / bare throughput |")
        print("|---|---|---|---|---|")
        for name in a.cases:
            case = CASES[name]
            stage_seconds(path, inputs, case, epochs=1)  # warm-up, discarded: lazy imports inside torch
            for r in range(a.repeats):
                bare = per_epoch(bare_seconds, path, inputs, case, epochs=a.epochs)
                ours = per_epoch(stage_seconds, path, inputs, case, epochs=a.epochs)
                print(f"| {name} | {r + 1} | {bare:.1f} ({n / bare:.1f}) | {ours:.1f} ({n / ours:.1f}) | {bare / ours:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
