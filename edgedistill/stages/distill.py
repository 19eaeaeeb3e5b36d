"""distill: the student learns from the teacher: soft targets with temperature (Hinton KD) and the
labels, plus, when configured, the teacher's intermediate features (FitNets hints, through learned
adapters) and the relations between the batch's embeddings (RKD distance and angle)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import models
from ..config import DistillConfig, ModelPreset, Strict, load_preset
from ..data import Dataset
from ..errors import ConfigError
from ..losses import hint_loss, kd_loss, rkd_angle_loss, rkd_distance_loss
from ..runner import Context, Stage
from ..train import accuracy, fit, predict, resolve_device


class DistillStageConfig(Strict):
    distill: DistillConfig
    model: ModelPreset
    """The resolved student preset."""
    seed: int


class Distillee(nn.Module):
    """The student with the adapters its hint losses train: one module, so the training loop
    optimizes and checkpoints both. Only the student is saved at the end."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleList):
        super().__init__()
        self.student, self.adapters = student, adapters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def make_adapter(i: int, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
    if s.dim() == 4 and t.dim() == 4:
        return nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
    if s.dim() == 2 and t.dim() == 2:
        return nn.Linear(s.shape[1], t.shape[1], bias=False)
    raise ConfigError(f"distill.hints[{i}]: student output {tuple(s.shape)} and teacher output {tuple(t.shape)} "
                      f"cannot be matched; pick two feature maps or two vectors")


def run(cfg: DistillStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.spec["channels"]
    d = cfg.distill
    device = resolve_device(d.device)
    teacher = models.load_trained(inputs["teacher"]).to(device)
    teacher_preset = ModelPreset.model_validate(json.loads((inputs["teacher"] / "model.json").read_text())["preset"])
    student, student_head = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)

    # feature and relation taps, checked before any training
    s_taps, t_taps = models.Taps(student, "student"), models.Taps(teacher, "teacher")
    for i, h in enumerate(d.hints):
        s_taps.add(f"hint{i}", h.student)
        t_taps.add(f"hint{i}", h.teacher)
    use_rkd = d.rkd_distance_weight > 0 or d.rkd_angle_weight > 0
    if use_rkd:
        s_taps.add("embedding", d.rkd_student_layer or student_head, use_input=d.rkd_student_layer is None)
        t_taps.add("embedding", d.rkd_teacher_layer or models.head_path(teacher, teacher_preset),
                   use_input=d.rkd_teacher_layer is None)
    x_train, y_train = ds.inputs("train")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        example = torch.from_numpy(x_train[:2]).to(device)
        teacher(example)
        student.to(device).eval()(example)
        adapters = nn.ModuleList([make_adapter(i, s_taps.values[f"hint{i}"], t_taps.values[f"hint{i}"])
                                  for i in range(len(d.hints))])
    distillee = Distillee(student, adapters)

    # response-only KD reads the teacher's stored logits; hints and RKD need its layers, so it runs
    online = bool(d.hints) or use_rkd or not d.use_stored_teacher_outputs
    cached = None if online else torch.from_numpy(np.load(inputs["teacher_outputs"] / "train_logits.npy"))

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if online:
            with torch.no_grad():
                teacher_logits = teacher(x)
        else:
            teacher_logits = cached[idx].to(logits.device)
        loss = kd_loss(logits, teacher_logits, y, d.temperature, d.alpha, d.label_smoothing)
        for i, h in enumerate(d.hints):
            loss = loss + h.weight * hint_loss(s_taps.values[f"hint{i}"], t_taps.values[f"hint{i}"], adapters[i])
        if d.rkd_distance_weight > 0:
            loss = loss + d.rkd_distance_weight * rkd_distance_loss(s_taps.values["embedding"], t_taps.values["embedding"])
        if d.rkd_angle_weight > 0:
            loss = loss + d.rkd_angle_weight * rkd_angle_loss(s_taps.values["embedding"], t_taps.values["embedding"])
        return loss

    result = fit(distillee, (x_train, y_train), ds.inputs("val"), cfg=d,
                  param_groups=[{"params": list(distillee.parameters()), "lr": d.lr}], loss_fn=loss_fn,
                  seed=cfg.seed, checkpoint=ctx.work / "checkpoint.pt", desc="distill", progress=ctx.progress)
    s_taps.remove()
    t_taps.remove()
    x_test, y_test = ds.inputs("test")
    test_acc = accuracy(predict(student, x_test), y_test)
    models.save_trained(student, cfg.model, num_classes, in_channels, out)
    teacher_params = models.num_params(teacher)
    params = models.num_params(student)
    losses = ["kd"] + [f"hint:{h.teacher}->{h.student}" for h in d.hints] + \
             (["rkd_distance"] if d.rkd_distance_weight > 0 else []) + (["rkd_angle"] if d.rkd_angle_weight > 0 else [])
    return {"val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "params": params,
            "teacher_params": teacher_params, "params_ratio": params / teacher_params, "losses": losses,
            "teacher": "online" if online else "cached",
            "history": result.history, "best_epoch": result.best_epoch, "final_epoch": result.final_epoch}


STAGE = Stage(
    name="distill", version=5, inputs=("dataset", "teacher", "teacher_outputs"), output="student",
    configure=lambda p: DistillStageConfig(distill=p.distill, model=load_preset(p.student.preset, "students"), seed=p.seed),
    run=run, key_exclude={"distill": {"device"}},
    headline=lambda m: f"student test acc {m['test_accuracy']:.2f}%, {m['params'] / 1e3:.0f}k params ({m['params_ratio']:.1%} of teacher)",
)
