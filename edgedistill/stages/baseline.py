"""baseline: the student trained alone, on the labels only (no teacher), with distillation's seed,
data, input size and schedule. export ships it instead of the distilled student when it is better on
validation beyond the split's noise, so distillation never ships a student worse than one trained
without it; the report shows both. Its own stage, so that changing the teacher or the distillation terms never retrains it.
With distill.baseline false it trains nothing and says so."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill import models
from edgedistill.core.config import Strict
from edgedistill.core.errors import DataError
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset
from edgedistill.models.presets import ModelPreset
from edgedistill.stages.distill import student_preset
from edgedistill.stages.sizes import model_sizes
from edgedistill.training.config import TrainConfig
from edgedistill.training.loop import fit, test_and_save
from edgedistill.training.losses import cross_entropy

if TYPE_CHECKING:
    from edgedistill.pipeline import Pipeline


class BaselineConfig(Strict):
    enabled: bool
    """distill.baseline."""
    train: TrainConfig
    """distill's training settings (epochs, batch_size, lr, augmentation...), not its distillation terms."""
    model: ModelPreset
    """The resolved student preset."""
    seed: int
    image_size: int | None
    """The student's input size in pixels (None: text)."""
    horizontal_flip: bool = False


def configure(p: Pipeline) -> BaselineConfig:
    return BaselineConfig(enabled=p.distill.baseline, model=student_preset(p), seed=p.seed, image_size=model_sizes(p)[1],
                          train=TrainConfig(**{k: getattr(p.distill, k) for k in TrainConfig.model_fields}),
                          horizontal_flip=p.data.horizontal_flip)


def run(cfg: BaselineConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    if not cfg.enabled:
        return {"enabled": False}
    ds = Dataset.load(inputs["dataset"])
    t = cfg.train
    student, _ = models.build(cfg.model, len(ds.classes), ds.channels, pretrained=True, seed=cfg.seed)
    labels = ds.splits["train"][1]
    rows = np.flatnonzero(labels >= 0)  # without a teacher, an image without a label teaches nothing
    if not len(rows):
        raise DataError("the training split has no labeled example; the student alone needs labels")
    train = ds.modality.batches(ds, t, rows=rows, seed=cfg.seed, size=cfg.image_size, teacher_size=None,
                                horizontal_flip=cfg.horizontal_flip)
    val = ds.split("val", cfg.image_size)
    result = fit(student, train, (val, val.labels), cfg=t, param_groups=[{"params": list(student.parameters()), "lr": t.lr}],
                 loss_fn=lambda logits, x, y, idx: cross_entropy(logits, y, t.label_smoothing), seed=cfg.seed,
                 checkpoint=ctx.work / "checkpoint.pt", desc="baseline", progress=ctx.progress)
    test_acc = test_and_save(student, cfg.model, ds, cfg.image_size, out, batch=t.batch_size)
    return {"enabled": True, "val_accuracy": result.val_accuracy, "test_accuracy": test_acc,
            "params": models.num_params(student), "train_images": int(len(rows)), "history": result.history,
            "best_epoch": result.best_epoch, "final_epoch": result.final_epoch}


STAGE = Stage(
    name="baseline", version=1, inputs=("dataset",), output="student_alone", configure=configure, run=run,
    check=lambda p: models.check_runs(student_preset(p), 2, p.data.channels, model_sizes(p)[1], "student"),
    key_exclude={"train": {"device", "channels_last", "compile", "workers"}}, distributed=True,
    headline=lambda m: f"student alone test acc {m['test_accuracy']:.2f}%" if m["enabled"] else "off (distill.baseline: false)",
)
