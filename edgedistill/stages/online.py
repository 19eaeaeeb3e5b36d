"""distill, online (distill.mode: online): the pretrained teacher and the student train together, in one
loop on the same batches, each learning from the labels and from the other's softened outputs: Deep
Mutual Learning (Zhang et al., 2018, "Deep Mutual Learning", CVPR), with Hinton's temperature and the
offline stage's response losses (kd, dist) applied both ways (training.losses.mutual_loss). The student's
feature and relation terms (hints, RKD, MiniLM relations) and extra teachers work as offline, toward the
teacher as it is at that step.

It replaces finetune, teach and the offline distill stage (the runner skips them). Its result holds the
student (at its top, as offline distill's) and the teacher it trained (teacher/, as finetune's), so export,
the baseline comparison, quantization and the bundle read it as they read the offline results.

The teacher keeps teacher:'s preset, fine-tuning strategy (which layers train, gradual unfreezing,
frozen BatchNorm), learning rates, weight decay and label smoothing; the loop's settings (epochs, batch
size, schedule, augmentation, precision, early stopping) are distill:'s. The epoch kept (keep_best) is the
student's best; the teacher is kept as it was at that epoch."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from edgedistill import models
from edgedistill.core.config import Strict
from edgedistill.core.errors import DataError
from edgedistill.core.files import write_json
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset
from edgedistill.data.image.augment import resize_float
from edgedistill.models.presets import ModelPreset, load_preset
from edgedistill.stages import distill, finetune
from edgedistill.stages.distill import DistillConfig, Distillee, FeatureTerms, load_extra_teachers, response_loss
from edgedistill.stages.sizes import model_sizes
from edgedistill.training.loop import accuracy, fit, predict, resolve_device, test_and_save
from edgedistill.training.losses import mutual_loss

if TYPE_CHECKING:
    from edgedistill.pipeline import Pipeline


class OnlineTeacher(Strict):
    """What online distillation takes of teacher: (the loop's own settings are distill's)."""

    strategy: Literal["full", "partial", "linear_probe", "gradual"]
    trainable_blocks: int
    unfreeze_every: int
    blocks: str | None
    lr: float
    backbone_lr_factor: float
    weight_decay: float
    label_smoothing: float
    image_size: int | None = Field(ge=8, le=1024)
    """The teacher's input size in pixels, resolved (teacher.image_size or data.image_size); None: text."""


class OnlineConfig(Strict):
    distill: DistillConfig
    teacher: OnlineTeacher
    teacher_model: ModelPreset
    """The resolved teacher preset (its content is part of the key, as finetune's)."""
    model: ModelPreset
    """The resolved student preset."""
    seed: int
    image_size: int | None
    """The student's input size in pixels (None: text)."""
    horizontal_flip: bool = False


def configure(p: Pipeline) -> OnlineConfig:
    teacher_size, student_size = model_sizes(p)
    t = p.teacher
    return OnlineConfig(distill=p.distill, model=distill.student_preset(p), seed=p.seed, image_size=student_size,
                        teacher_model=load_preset(t.preset, "teachers"), horizontal_flip=p.data.horizontal_flip,
                        teacher=OnlineTeacher(image_size=teacher_size, **{k: getattr(t, k) for k in OnlineTeacher.model_fields
                                                                          if k != "image_size"}))


class Cohort(nn.Module):
    """The models that learn from each other, as one module: one optimizer (each model its own parameter
    groups), one checkpoint, one DistributedDataParallel wrapper. forward(x, teacher_x) -> (student
    logits, teacher logits), each model on its own view of the batch."""

    def __init__(self, student: Distillee, teacher: nn.Module):
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x: torch.Tensor, teacher_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(x), self.teacher(teacher_x)


def run(cfg: OnlineConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.channels
    d, t = cfg.distill, cfg.teacher
    device = resolve_device(d.device)
    teacher, teacher_head = models.build(cfg.teacher_model, num_classes, in_channels, pretrained=True, seed=cfg.seed)
    groups, epoch_start = finetune.strategy(teacher, teacher_head, t, pretrained=cfg.teacher_model.weights is not None)
    for g in groups:
        g["weight_decay"] = t.weight_decay
    extra = load_extra_teachers(d, num_classes, device)
    teacher_weights = [d.teacher_weight] + [e.weight for e in d.extra_teachers]
    student, student_head = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)
    terms = FeatureTerms(d, teacher, teacher_head, student, student_head)
    labels = ds.splits["train"][1]
    if not (labels >= 0).any():
        raise DataError("the training split has no labeled example; online distillation needs labels to train the teacher")
    teacher_alpha = d.alpha if d.teacher_alpha is None else d.teacher_alpha
    # both models learn from every image: the labeled ones with both terms, the others from each other
    rows = np.flatnonzero(labels >= 0) if d.alpha == 0 and teacher_alpha == 0 else np.arange(len(labels))
    teacher_size = t.image_size
    extra_sizes = [models.input_size(Path(e.model), teacher_size) for e in d.extra_teachers]
    train = ds.modality.batches(ds, d, rows=rows, seed=cfg.seed, size=cfg.image_size, teacher_size=teacher_size,
                                horizontal_flip=cfg.horizontal_flip)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        x, teacher_x = train.clean_views(np.arange(2))
        teacher.to(device).eval()(teacher_x.to(device) if teacher_x is not None else x.to(device))
        student.to(device).eval()(x.to(device))
        adapters = terms.make_adapters()
    cohort = Cohort(Distillee(student, adapters), teacher)
    student_group = {"params": list(cohort.student.parameters()), "lr": d.lr, "weight_decay": d.weight_decay}
    ctx.log(f"online: teacher and student train together, {d.epochs} epochs of distill's loop (batch {d.batch_size}, "
            f"augment {d.augment}); teacher.epochs and the teacher's other loop settings do not apply")

    def loss_fn(output: tuple[torch.Tensor, torch.Tensor], teacher_x: torch.Tensor, y: torch.Tensor,
                idx: torch.Tensor) -> dict[str, torch.Tensor]:
        student_logits, teacher_logits = output
        if extra:
            with torch.no_grad():
                fixed = [m(resize_float(teacher_x, size)) for m, size in zip(extra, extra_sizes)]
        response = lambda logits, targets, alpha, smoothing, weights=None: response_loss(
            d, logits, targets, y, alpha, smoothing, weights)
        losses = mutual_loss(student_logits, teacher_logits, response, d.alpha, teacher_alpha, d.label_smoothing,
                             t.label_smoothing, extra_targets=fixed if extra else (), weights=teacher_weights)
        losses["student"] = terms.add_to(losses["student"], teacher_x, ds.spec.get("pad_token_id"))
        return losses

    val = ds.split("val", cfg.image_size)
    teacher_val = ds.split("val", teacher_size) if teacher_size != cfg.image_size else val

    def validate(model: Cohort, device: torch.device, batch: int) -> dict[str, float]:
        return {"val_accuracy": accuracy(predict(model.student, val, device, batch=batch), val.labels),
                "teacher_val_accuracy": accuracy(predict(model.teacher, teacher_val, device, batch=batch), val.labels)}

    result = fit(cohort, train, None, cfg=d, param_groups=groups + [student_group], loss_fn=loss_fn, seed=cfg.seed,
                 checkpoint=ctx.work / "checkpoint.pt", desc="distill (online)", progress=ctx.progress,
                 epoch_start=epoch_start, forward=lambda net, x, teacher_x: net(x, teacher_x), validate=validate)
    terms.remove()
    # the teacher's own folder: what finetune writes (model.pt, model.json, metrics.json)
    (out / "teacher").mkdir()
    teacher_test = test_and_save(teacher, cfg.teacher_model, ds, teacher_size, out / "teacher", batch=d.batch_size)
    # each model's own curve, as finetune's and offline distill's (fit's train_loss is the two losses' sum)
    history = {role: [{"epoch": h["epoch"], "train_loss": h[f"train_{role}_loss"], "val_accuracy": h[f"{prefix}val_accuracy"]}
                      for h in result.history] for role, prefix in (("student", ""), ("teacher", "teacher_"))}
    teacher_metrics = {"val_accuracy": history["teacher"][result.final_epoch - 1]["val_accuracy"], "test_accuracy": teacher_test,
                       "params": models.num_params(teacher),
                       "trainable_params": sum(p.numel() for p in teacher.parameters() if p.requires_grad),
                       "train_images": int(len(rows)), "trained_by": "distill (online)", "history": history["teacher"],
                       # its own best epoch; it ends with the weights of the epoch kept for the student
                       "best_epoch": 1 + max(range(len(history["teacher"])), key=lambda i: history["teacher"][i]["val_accuracy"]),
                       "final_epoch": result.final_epoch}
    write_json(out / "teacher" / "metrics.json", teacher_metrics)
    test_acc = test_and_save(student, cfg.model, ds, cfg.image_size, out, batch=d.batch_size)
    params, teacher_params = models.num_params(student), models.num_params(teacher)
    return {"mode": "online", "val_accuracy": result.val_accuracy, "test_accuracy": test_acc,
            "teacher_val_accuracy": teacher_metrics["val_accuracy"], "teacher_test_accuracy": teacher_test,
            "params": params, "teacher_params": teacher_params, "params_ratio": params / teacher_params,
            "losses": [f"mutual_{d.response}" if d.alpha > 0 or teacher_alpha > 0 else "ce"] + terms.names(), "teacher": "online (trained here)",
            "teachers": 1 + len(extra), "teacher_alpha": teacher_alpha,
            "train_images": int(len(rows)), "unlabeled_train_images": int((labels[rows] < 0).sum()),
            "history": history["student"], "best_epoch": result.best_epoch, "final_epoch": result.final_epoch}


def check(p: Pipeline) -> None:
    """Before anything runs: finetune's and offline distill's checks (both models train at their input
    sizes, extra teachers trusted, layer paths exist)."""
    finetune.check(p)
    distill.check(p)


def _sources(cfg: OnlineConfig) -> dict[str, Path]:
    path = models.weights_file(cfg.teacher_model.weights) if cfg.teacher_model.weights else None
    return {**({"weights": path} if path else {}), **distill.teacher_sources(cfg.distill.extra_teachers)}


STAGE = Stage(
    name="distill", version=1, inputs=("dataset",), output="student", parts={"teacher": "teacher"},
    configure=configure, run=run, sources=_sources, check=check, distributed=True,
    key_exclude={"distill": {"device", "channels_last", "compile", "workers", "baseline", "use_stored_teacher_outputs"}},
    skip=lambda p: None if p.distill.mode == "online" else "distill.mode offline",
    headline=lambda m: f"online: student test acc {m['test_accuracy']:.2f}%, teacher {m['teacher_test_accuracy']:.2f}%, "
                       f"{m['params'] / 1e3:.0f}k params ({m['params_ratio']:.1%} of teacher)",
)
