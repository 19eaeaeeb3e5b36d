"""distill: the student learns from the teacher's soft targets (Hinton KD) and the labels."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import models
from ..config import DistillConfig, ModelPreset, Strict, load_preset
from ..data import Dataset
from ..losses import kd_loss
from ..runner import Context, Stage
from ..train import accuracy, fit, predict, resolve_device


class DistillStageConfig(Strict):
    distill: DistillConfig
    model: ModelPreset
    """The resolved student preset."""
    seed: int


def run(cfg: DistillStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.spec["channels"]
    d = cfg.distill
    device = resolve_device(d.device)
    teacher = models.load_trained(inputs["teacher"]).to(device)
    student, _ = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)
        return kd_loss(logits, teacher_logits, y, d.temperature, d.alpha)

    history = fit(student, ds.inputs("train"), ds.inputs("val"), cfg=d,
                  param_groups=[{"params": list(student.parameters()), "lr": d.lr}], loss_fn=loss_fn,
                  seed=cfg.seed, checkpoint=ctx.work / "checkpoint.pt", desc="distill", progress=ctx.progress)
    x_test, y_test = ds.inputs("test")
    test_acc = accuracy(predict(student, x_test), y_test)
    models.save_trained(student, cfg.model, num_classes, in_channels, out)
    teacher_params = models.num_params(teacher)
    params = models.num_params(student)
    return {"val_accuracy": history[-1]["val_accuracy"], "test_accuracy": test_acc, "params": params,
            "teacher_params": teacher_params, "params_ratio": params / teacher_params, "history": history}


STAGE = Stage(
    name="distill", version=2, inputs=("dataset", "teacher"), output="student",
    configure=lambda p: DistillStageConfig(distill=p.distill, model=load_preset(p.student.preset, "students"), seed=p.seed),
    run=run, key_exclude={"distill": {"device"}},
    headline=lambda m: f"student test acc {m['test_accuracy']:.2f}%, {m['params'] / 1e3:.0f}k params ({m['params_ratio']:.1%} of teacher)",
)
