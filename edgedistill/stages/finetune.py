"""finetune: a pretrained teacher gets a new head for the task's classes and is trained on it."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill import models
from edgedistill.core.config import Strict
from edgedistill.core.errors import ConfigError, DataError
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset
from edgedistill.models.presets import ModelPreset, load_preset
from edgedistill.stages.sizes import model_sizes
from edgedistill.training.config import TrainConfig
from edgedistill.training.loop import fit, test_and_save


class TeacherConfig(TrainConfig):
    preset: str = "mobilenet_v2_imagenet"
    """Model preset: a name in models/teachers/ or a path to a preset YAML."""
    strategy: Literal["full", "partial", "linear_probe", "gradual"] = "full"
    """full: train every layer. partial: train the last `trainable_blocks` blocks of the backbone and the
    head. linear_probe: freeze the pretrained backbone, train only the new head (little data).
    gradual: start with the head alone and unfreeze one more backbone block, from the top down, every
    `unfreeze_every` epochs (ULMFiT's gradual unfreezing)."""
    trainable_blocks: int = Field(2, ge=1)
    """partial: how many of the backbone's last blocks train."""
    unfreeze_every: int = Field(1, ge=1)
    """gradual: epochs between two unfreezings (epoch 1 trains the head only)."""
    blocks: str | None = None
    """partial, gradual: module path of the container whose children are the backbone's blocks (default:
    the model's `features` Sequential when it has one, as torchvision's MobileNets and EfficientNets do;
    else the model's top-level children)."""
    backbone_lr_factor: float = Field(0.1, gt=0, le=1)
    """Backbone learning rate as a fraction of lr (pretrained features move less than the new head)."""
    image_size: int | None = Field(None, ge=8, le=1024)
    """The teacher's input size in pixels. None: data.image_size. Pretrained teachers usually do best
    near the resolution they were trained at (224 for ImageNet weights), the student at the device's."""


class FinetuneConfig(Strict):
    teacher: TeacherConfig
    """The pipeline's teacher section, with image_size resolved."""
    model: ModelPreset
    """The resolved preset (its content, not its name, is part of the cache key)."""
    seed: int
    horizontal_flip: bool = False
    """data.horizontal_flip: whether augmentation may mirror images."""


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def backbone_blocks(model: nn.Module, head_name: str, path: str | None) -> list[nn.Module]:
    """The backbone's blocks in order, the unit partial and gradual fine-tuning unfreeze: the children
    of `path`, or the model's own list (a transformer: embeddings, then its layers), or else found
    for any architecture: the model's children that hold parameters, the head left out (the other
    layers of a classifier that holds it, AlexNet's and VGG's hidden fully connected layers, are
    blocks), then every plain list of layers (nn.Sequential, nn.ModuleList: MobileNet's features,
    ResNet's layer4) and every block holding more than half of all the blocks' parameters split into
    its children, until none is (a ViT's encoder into its layers, a RegNet's trunk into its stages).
    Written here: torchvision has no notion of a model's blocks."""
    if path is not None:
        return [m for m in models.find_module(model, path, "teacher").children() if _params(m)]
    if hasattr(model, "backbone_blocks"):
        return model.backbone_blocks()

    def children(module: nn.Module, prefix: str) -> list[nn.Module]:
        out = []
        for name, child in module.named_children():
            full = prefix + name
            if full == head_name:
                continue
            if head_name.startswith(full + "."):  # holds the head: its other layers are blocks
                out += children(child, full + ".")
            elif _params(child):
                out.append(child)
        return out

    blocks = children(model, "")
    while True:
        total = sum(_params(b) for b in blocks)
        split = next((i for i, b in enumerate(blocks) if any(_params(c) for c in b.children())
                      and (type(b) in (nn.Sequential, nn.ModuleList) or 2 * _params(b) > total)), None)
        if split is None:
            return blocks
        blocks[split:split + 1] = [c for c in blocks[split].children() if _params(c)]


def strategy(model: nn.Module, head_name: str, t: TeacherConfig, pretrained: bool):
    """The fine-tuning strategy as optimizer groups and an epoch hook: (param_groups, epoch_start).
    What trains besides the head: everything (full), the last trainable_blocks backbone blocks
    (partial), nothing (linear_probe), more and more blocks from the top down (gradual).
    epoch_start(epoch) sets requires_grad for that epoch and returns the BatchNorm modules that stay in
    eval mode (frozen layers keep their statistics). ConfigError when the strategy cannot apply."""
    if t.strategy != "full" and not pretrained:
        raise ConfigError(f"teacher.strategy '{t.strategy}' freezes pretrained layers: it needs a preset with weights")
    head = model.get_submodule(head_name)
    blocks = backbone_blocks(model, head_name, t.blocks) if t.strategy in ("partial", "gradual") else []
    if t.strategy in ("partial", "gradual") and not blocks:
        raise ConfigError(f"teacher.strategy '{t.strategy}': the model has no backbone blocks to unfreeze; name their "
                          f"container with teacher.blocks")
    trainable = {"full": [model], "partial": blocks[-t.trainable_blocks:], "gradual": blocks}.get(t.strategy, [])
    head_params = {id(p) for p in head.parameters()}
    backbone = [p for m in trainable for p in m.parameters() if id(p) not in head_params]
    groups = [{"params": list(head.parameters()), "lr": t.lr}]
    if backbone:  # a backbone trained from scratch gets the head's learning rate
        groups.append({"params": backbone, "lr": t.lr * (t.backbone_lr_factor if pretrained else 1.0)})

    def epoch_start(epoch: int) -> tuple[nn.Module, ...]:
        if t.strategy == "gradual":  # epoch 0: the head alone; then one more block every unfreeze_every
            unfrozen = blocks[len(blocks) - min(len(blocks), epoch // t.unfreeze_every):] if epoch else []
        else:
            unfrozen = trainable
        on = head_params | {id(p) for m in unfrozen for p in m.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in on)
        # frozen layers keep their BatchNorm statistics: every BN with no trainable parameter of its own
        return tuple(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                     and not any(p.requires_grad for p in m.parameters()))

    return groups, epoch_start


def run(cfg: FinetuneConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.channels
    model, head_name = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)
    t = cfg.teacher
    groups, epoch_start = strategy(model, head_name, t, pretrained=cfg.model.weights is not None)
    y = ds.splits["train"][1]
    labeled = np.flatnonzero(y >= 0)  # the teacher learns from labeled examples only; the rest is distill's transfer set
    if not len(labeled):
        raise DataError("the training split has no labeled example; the teacher needs labels to fine-tune")
    train = ds.modality.batches(ds, t, rows=labeled, seed=cfg.seed, size=t.image_size, teacher_size=None,
                                horizontal_flip=cfg.horizontal_flip)
    val = ds.split("val", t.image_size)
    result = fit(model, train, (val, val.labels), cfg=t, param_groups=groups, seed=cfg.seed,
                 checkpoint=ctx.work / "checkpoint.pt", desc="finetune", epoch_start=epoch_start, progress=ctx.progress,
                 loss_fn=lambda logits, x, y, idx: F.cross_entropy(logits, y, label_smoothing=t.label_smoothing))
    test_acc = test_and_save(model, cfg.model, ds, t.image_size, out, batch=t.batch_size)
    return {"val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "params": models.num_params(model),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "train_images": int(len(labeled)),
            "history": result.history, "best_epoch": result.best_epoch, "final_epoch": result.final_epoch}


def _sources(cfg: FinetuneConfig) -> dict[str, Path]:
    path = models.weights_file(cfg.model.weights) if cfg.model.weights else None
    return {"weights": path} if path else {}


def check(p) -> None:
    """Before anything runs: the teacher trains at its input size (models.check_runs)."""
    models.check_runs(load_preset(p.teacher.preset, "teachers"), 2, p.data.channels, model_sizes(p)[0], "teacher")


STAGE = Stage(
    name="finetune", version=7, check=check, inputs=("dataset",), output="teacher",
    skip=lambda p: "distill.mode online: the teacher trains with the student in distill" if p.distill.mode == "online" else None,
    configure=lambda p: FinetuneConfig(teacher=p.teacher.model_copy(update={"image_size": model_sizes(p)[0]}),
                                       model=load_preset(p.teacher.preset, "teachers"), seed=p.seed,
                                       horizontal_flip=p.data.horizontal_flip),
    run=run, sources=_sources, key_exclude={"teacher": {"device", "channels_last", "compile", "workers"}}, distributed=True,
    headline=lambda m: f"teacher test acc {m['test_accuracy']:.2f}%, {m['params'] / 1e6:.2f}M params",
)
