"""finetune: a pretrained teacher gets a new head for the task's classes and is trained on it."""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F

from .. import models
from ..config import ModelPreset, Strict, TeacherConfig, load_preset
from ..data import Dataset
from ..errors import ConfigError
from ..runner import Context, Stage
from ..train import accuracy, fit, predict


class FinetuneConfig(Strict):
    teacher: TeacherConfig
    model: ModelPreset
    """The resolved preset (its content, not its name, is part of the cache key)."""
    seed: int


def run(cfg: FinetuneConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.spec["channels"]
    model, head_name = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)
    head = model.get_submodule(head_name)
    head_params = {id(p) for p in head.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_params]
    t = cfg.teacher
    groups = [{"params": list(head.parameters()), "lr": t.lr}]
    frozen: tuple = ()
    if t.strategy == "linear_probe":
        if cfg.model.weights is None:
            raise ConfigError("teacher.strategy 'linear_probe' needs a preset with pretrained weights")
        for p in backbone:
            p.requires_grad_(False)
        frozen = tuple(m for n, m in model.named_children() if n != head_name.split(".")[0])
    else:  # a backbone trained from scratch gets the head's learning rate
        groups.append({"params": backbone, "lr": t.lr * (t.backbone_lr_factor if cfg.model.weights else 1.0)})

    train, val = ds.inputs("train"), ds.inputs("val")
    history = fit(model, train, val, cfg=t, param_groups=groups, seed=cfg.seed, checkpoint=ctx.work / "checkpoint.pt",
                  loss_fn=lambda logits, x, y, idx: F.cross_entropy(logits, y), desc="finetune", frozen=frozen,
                  progress=ctx.progress)
    x_test, y_test = ds.inputs("test")
    test_acc = accuracy(predict(model, x_test), y_test)
    models.save_trained(model, cfg.model, num_classes, in_channels, out)
    return {"val_accuracy": history[-1]["val_accuracy"], "test_accuracy": test_acc,
            "params": models.num_params(model), "history": history}


def _sources(cfg: FinetuneConfig) -> dict[str, Path]:
    path = models.weights_file(cfg.model.weights) if cfg.model.weights else None
    return {"weights": path} if path else {}


STAGE = Stage(
    name="finetune", version=3, inputs=("dataset",), output="teacher",
    configure=lambda p: FinetuneConfig(teacher=p.teacher, model=load_preset(p.teacher.preset, "teachers"), seed=p.seed),
    run=run, sources=_sources, key_exclude={"teacher": {"device"}},
    headline=lambda m: f"teacher test acc {m['test_accuracy']:.2f}%, {m['params'] / 1e6:.2f}M params",
)
