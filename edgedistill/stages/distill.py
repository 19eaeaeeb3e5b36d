"""distill: the student learns from the teacher: soft targets with temperature (Hinton KD) and the
labels, plus, when configured, the teacher's intermediate features (FitNets hints, through learned
adapters) and the relations between the batch's embeddings (RKD distance and angle).

Training images without a label (data.labeled_per_class, data.unlabeled_dir) get the distillation
terms only. With alpha 0 (no distillation term) they are left out. The same student trained without
any teacher is the baseline stage's; export ships the better of the two.
Several teachers (distill.extra_teachers): their tempered soft targets are averaged."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from edgedistill import models
from edgedistill.core.config import PathField, Strict, check_trusted
from edgedistill.core.errors import ConfigError
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset
from edgedistill.data.image.augment import resize_float
from edgedistill.models.presets import ModelPreset, load_preset
from edgedistill.stages.sizes import model_sizes
from edgedistill.training.config import TrainConfig
from edgedistill.training.loop import fit, resolve_device, test_and_save
from edgedistill.training.losses import (
    dist_loss,
    hint_loss,
    kd_loss,
    minilm_relation_loss,
    rkd_angle_loss,
    rkd_distance_loss,
)

if TYPE_CHECKING:
    from edgedistill.pipeline import Pipeline


class StudentConfig(Strict):
    preset: str = "small_cnn"
    """Model preset: a name in models/students/ or a path to a preset YAML; `teacher` for
    self-distillation (a student of the teacher's own architecture and initial weights)."""
    image_size: int | None = Field(None, ge=8, le=1024)
    """The student's input size in pixels: what the bundle's model takes (its preprocess.json says
    how to get there). None: data.image_size. Distillation shows the teacher its own view (at
    teacher.image_size) of the same augmented image."""
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)
    """Constructor arguments that replace the preset's own: the student's size axis, which a sweep can
    search, e.g. {width: 16} for small_cnn (channels of the first block), {width_mult: 0.5} for
    torchvision's MobileNetV2 and MobileNetV3. Empty: the preset as it is."""


class ExtraTeacher(Strict):
    """Another trained teacher whose soft targets are averaged in (multi-teacher distillation)."""

    model: PathField
    """Folder of a trained model: model.pt and model.json, e.g. another pipeline's finetune result
    (<store>/results/finetune/<key>/) with the same classes. Its content is part of the cache key."""
    weight: float = Field(1.0, gt=0)
    """Weight of its soft targets in the average (relative to distill.teacher_weight)."""


class HintConfig(Strict):
    """One FitNets pair: a teacher layer whose output the student's layer learns to match."""

    teacher: str
    """Module path in the teacher (as in model.named_modules(), e.g. features.7)."""
    student: str
    """Module path in the student (e.g. 7 for the eighth layer of an nn.Sequential)."""
    weight: float = Field(1.0, gt=0)
    """Weight of this pair's mean squared error in the loss."""


class DistillConfig(TrainConfig):
    mode: Literal["offline", "online"] = "offline"
    """offline: the teacher is fine-tuned first (finetune), its logits stored (teach), then it teaches
    the student here. online: teacher and student train together in this stage, one loop on the same
    batches, each learning from the labels and from the other's softened outputs (Deep Mutual Learning,
    Zhang et al., 2018); finetune and teach are skipped. The teacher keeps teacher:'s preset, strategy,
    learning rates, weight decay and label smoothing; the loop (epochs, batch size, schedule,
    augmentation, precision) is distill:'s, so teacher.epochs and teacher.augment do not apply."""
    teacher_alpha: float | None = Field(None, ge=0, le=1)
    """online: weight of the teacher's own response term toward the student's softened outputs, and
    (1 - teacher_alpha) of its cross-entropy on the labels. None: alpha, DML's symmetric form (each
    model learns from the other as the other learns from it)."""
    temperature: float = Field(4.0, gt=0)
    """Softmax temperature T for soft targets; the KD term is scaled by T^2 (Hinton et al., 2015)."""
    alpha: float = Field(0.7, ge=0, le=1)
    """Weight of the response (soft-target) term; (1 - alpha) weighs cross-entropy on the labels."""
    response: Literal["kd", "dist"] = "kd"
    """Response-based loss. kd: Hinton's KL divergence between tempered softmaxes. dist: DIST (Huang et
    al., 2022), Pearson-correlation matching between and within classes, meant for teachers much
    stronger than the student."""
    dist_beta: float = Field(1.0, ge=0)
    """dist: weight of the inter-class (per image) relation term."""
    dist_gamma: float = Field(1.0, ge=0)
    """dist: weight of the intra-class (per class, across the batch) relation term."""
    hints: list[HintConfig] = Field(default_factory=list)
    """Feature distillation (FitNets): layer pairs whose outputs the student matches through a learned
    1x1-convolution (or linear) adapter. Paths are checked before training."""
    rkd_distance_weight: float = Field(0.0, ge=0)
    """Relation distillation (RKD): weight of the distance loss on the batch's embeddings (paper: 25)."""
    rkd_angle_weight: float = Field(0.0, ge=0)
    """Relation distillation (RKD): weight of the angle loss (paper: 50)."""
    rkd_teacher_layer: str | None = None
    """Module whose output is the teacher's embedding for RKD; None: the input of its classifier head."""
    rkd_student_layer: str | None = None
    """Module whose output is the student's embedding for RKD; None: the input of its classifier head."""
    relation_weight: float = Field(0.0, ge=0)
    """Transformer students (text): weight of MiniLM's self-attention transfer (Wang et al., 2020): the
    KL divergence between the teacher's and the student's attention distributions and value
    relations, per head, in one layer of each (relation_teacher_layer, relation_student_layer).
    The two models need the same number of attention heads. 0: off."""
    relation_teacher_layer: str | None = None
    """relation_weight: module path of the teacher's self-attention module (with query, key and value
    children), e.g. hf.bert.encoder.layer.5.attention.self; None: its last layer's (MiniLM's choice)."""
    relation_student_layer: str | None = None
    """relation_weight: the same in the student; None: its last layer's."""
    use_stored_teacher_outputs: bool = True
    """Response-only KD reads the teacher's logits stored by the teach stage instead of running the
    teacher every step. False: always run it (hints, RKD and augmentation always do)."""
    extra_teachers: list[ExtraTeacher] = Field(default_factory=list)
    """Multi-teacher KD: the soft targets are the weighted average of the teachers' tempered softmax
    outputs (the pipeline's teacher with teacher_weight, these with theirs)."""
    teacher_weight: float = Field(1.0, gt=0)
    """Weight of the pipeline's own teacher in the multi-teacher average."""
    baseline: bool = True
    """Also train the student alone (the baseline stage: labels only, no teacher, the same seed, data,
    size and schedule) and ship it instead of the distilled student when it is better on validation
    beyond the split's noise (the 95% interval of the distilled student's paired drop against it lies
    above 0), so distillation never ships a student worse than one trained without it; the report
    shows both. false: skip it (saves one student training) and ship the distilled student."""


def teacher_sources(teachers: list[ExtraTeacher]) -> dict[str, Path]:
    """The extra teachers' folders, as stage sources: their content goes into the cache key."""
    return {f"extra_teacher_{i}": Path(e.model) for i, e in enumerate(teachers)}


class DistillStageConfig(Strict):
    distill: DistillConfig
    model: ModelPreset
    """The resolved student preset."""
    seed: int
    image_size: int | None
    """The student's input size in pixels (None: text) (student.image_size, or data.image_size). The teacher takes
    the size it was fine-tuned at (its model.json)."""
    horizontal_flip: bool = False
    """data.horizontal_flip: whether augmentation may mirror images."""


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
    if s.dim() in (2, 3) and t.dim() == s.dim():  # vectors, or token sequences (N, L, hidden)
        return nn.Linear(s.shape[-1], t.shape[-1], bias=False)
    raise ConfigError(f"distill.hints[{i}]: student output {tuple(s.shape)} and teacher output {tuple(t.shape)} "
                      f"cannot be matched; pick two feature maps or two vectors")


class FeatureTerms:
    """The student's feature and relation terms toward a teacher: FitNets hints through learned adapters,
    RKD distance and angle between the batch's embeddings, MiniLM's self-attention relations. Forward
    hooks (models.Taps) on both models, checked when made; the teacher's values are targets (detached)."""

    def __init__(self, d: DistillConfig, teacher: nn.Module, teacher_head: str, student: nn.Module, student_head: str):
        self.d = d
        self.s_taps, self.t_taps = models.Taps(student, "student"), models.Taps(teacher, "teacher")
        for i, h in enumerate(d.hints):
            self.s_taps.add(f"hint{i}", h.student)
            self.t_taps.add(f"hint{i}", h.teacher)
        use_rkd = d.rkd_distance_weight > 0 or d.rkd_angle_weight > 0
        if use_rkd:
            self.s_taps.add("embedding", d.rkd_student_layer or student_head, use_input=d.rkd_student_layer is None)
            self.t_taps.add("embedding", d.rkd_teacher_layer or teacher_head, use_input=d.rkd_teacher_layer is None)
        self.heads = relation_heads(teacher, student, d) if d.relation_weight > 0 else 0
        for taps, model, path in ((self.s_taps, student, d.relation_student_layer),
                                  (self.t_taps, teacher, d.relation_teacher_layer)):
            for part, name in zip(("query", "key", "value"), model.attention_projections() if self.heads else ()):
                taps.add(f"relation_{part}", f"{path or model.last_attention()}.{name}")
        self.adapters = nn.ModuleList()
        self.any = bool(d.hints) or use_rkd or self.heads > 0
        """Whether there is a term: then the teacher's layers are needed on every batch."""

    def make_adapters(self) -> nn.ModuleList:
        """The hints' adapters, shaped after one forward pass of both models (call after it)."""
        self.adapters = nn.ModuleList([make_adapter(i, self.s_taps.values[f"hint{i}"], self.t_taps.values[f"hint{i}"])
                                       for i in range(len(self.d.hints))])
        return self.adapters

    def add_to(self, loss: torch.Tensor, teacher_x: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
        """loss plus the weighted terms of the latest forward pass of both models. teacher_x: the
        teacher's input (token ids, for the relations' padding mask)."""
        d, s = self.d, self.s_taps.values
        t = {k: v.detach() for k, v in self.t_taps.values.items()}
        for i, h in enumerate(d.hints):
            loss = loss + h.weight * hint_loss(s[f"hint{i}"], t[f"hint{i}"], self.adapters[i])
        if d.rkd_distance_weight > 0:
            loss = loss + d.rkd_distance_weight * rkd_distance_loss(s["embedding"], t["embedding"])
        if d.rkd_angle_weight > 0:
            loss = loss + d.rkd_angle_weight * rkd_angle_loss(s["embedding"], t["embedding"])
        if self.heads:  # token ids: the teacher's input is the student's; the mask is what is not padding
            qkv = lambda values: tuple(values[f"relation_{p}"] for p in ("query", "key", "value"))
            loss = loss + d.relation_weight * minilm_relation_loss(qkv(s), qkv(t), self.heads, teacher_x != pad_token_id)
        return loss

    def names(self) -> list[str]:
        """The terms' names for the stage's metrics."""
        d = self.d
        return [f"hint:{h.teacher}->{h.student}" for h in d.hints] + \
            (["rkd_distance"] if d.rkd_distance_weight > 0 else []) + (["rkd_angle"] if d.rkd_angle_weight > 0 else []) + \
            (["minilm_relations"] if self.heads else [])

    def remove(self) -> None:
        self.s_taps.remove()
        self.t_taps.remove()


def response_loss(d: DistillConfig, logits: torch.Tensor, targets: torch.Tensor | list[torch.Tensor], labels: torch.Tensor,
                  alpha: float, label_smoothing: float, weights: list[float] | None = None) -> torch.Tensor:
    """distill.response's loss (kd or dist) of logits toward the targets' tempered outputs, with the labels."""
    if d.response == "dist":
        return dist_loss(logits, targets, labels, d.temperature, alpha, d.dist_beta, d.dist_gamma, label_smoothing, weights)
    return kd_loss(logits, targets, labels, d.temperature, alpha, label_smoothing, weights)


def load_extra_teachers(d: DistillConfig, num_classes: int, device: torch.device) -> list[nn.Module]:
    """distill.extra_teachers, loaded once each has been checked to predict num_classes classes."""
    for e in d.extra_teachers:  # before loading any of them
        if (classes := models.trained_info(Path(e.model))["num_classes"]) != num_classes:
            raise ConfigError(f"distill.extra_teachers: '{e.model}' predicts {classes} classes, the data has {num_classes}")
    return [models.load_trained(Path(e.model)).to(device) for e in d.extra_teachers]


def run(cfg: DistillStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    num_classes, in_channels = len(ds.classes), ds.channels
    d = cfg.distill
    device = resolve_device(d.device)
    teacher = models.load_trained(inputs["teacher"]).to(device)
    teacher_preset = ModelPreset.model_validate(json.loads((inputs["teacher"] / "model.json").read_text())["preset"])
    extra = load_extra_teachers(d, num_classes, device)
    teacher_weights = [d.teacher_weight] + [e.weight for e in d.extra_teachers]
    student, student_head = models.build(cfg.model, num_classes, in_channels, pretrained=True, seed=cfg.seed)
    # feature and relation taps, checked before any training
    terms = FeatureTerms(d, teacher, models.head_path(teacher, teacher_preset), student, student_head)
    labels = ds.splits["train"][1]
    # alpha 0 has no distillation term: images without a label would teach nothing
    rows = np.flatnonzero(labels >= 0) if d.alpha == 0 else np.arange(len(labels))
    # the teacher sees its own view (at the size it was fine-tuned at) of the student's augmented images
    teacher_size = models.input_size(inputs["teacher"], ds.size)
    extra_sizes = [models.input_size(Path(e.model), teacher_size) for e in d.extra_teachers]
    train = ds.modality.batches(ds, d, rows=rows, seed=cfg.seed, size=cfg.image_size, teacher_size=teacher_size,
                                horizontal_flip=cfg.horizontal_flip)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        teacher(torch.from_numpy(ds.split("train", teacher_size).inputs(np.arange(2))).to(device))
        student.to(device).eval()(train.clean(np.arange(2)).to(device))
        adapters = terms.make_adapters()
    distillee = Distillee(student, adapters)

    # Response-only KD on fixed images reads the teachers' stored logits. Hints and RKD need the
    # teacher's layers, and augmented images need the teacher to see the same view as the student
    # (consistent teaching): then the teachers run on every batch.
    online = terms.any or train.random or not d.use_stored_teacher_outputs
    stored = []
    if not online:  # memory-mapped: a batch reads its own rows
        stored = [np.load(inputs["teacher_outputs"] / "train_logits.npy", mmap_mode="r")]
        stored += [np.load(inputs["teacher_outputs"] / f"extra_{i}_train_logits.npy", mmap_mode="r")
                   for i in range(len(extra))]

    def loss_fn(logits: torch.Tensor, teacher_x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if online:
            with torch.no_grad():
                teacher_logits = [m(resize_float(teacher_x, size))
                                  for m, size in zip((teacher, *extra), (teacher_size, *extra_sizes))]
        else:
            teacher_logits = [torch.from_numpy(np.asarray(a[rows[idx.numpy()]])).to(logits.device) for a in stored]
        teachers = teacher_logits[0] if not extra else teacher_logits
        return terms.add_to(response_loss(d, logits, teachers, y, d.alpha, d.label_smoothing, teacher_weights),
                            teacher_x, ds.spec.get("pad_token_id"))

    val = ds.split("val", cfg.image_size)
    result = fit(distillee, train, (val, val.labels), cfg=d,
                  param_groups=[{"params": list(distillee.parameters()), "lr": d.lr}], loss_fn=loss_fn,
                  seed=cfg.seed, checkpoint=ctx.work / "checkpoint.pt", desc="distill", progress=ctx.progress)
    terms.remove()
    test_acc = test_and_save(student, cfg.model, ds, cfg.image_size, out, batch=d.batch_size)
    teacher_params = models.num_params(teacher)
    params = models.num_params(student)
    losses = [d.response if d.alpha > 0 else "ce"] + terms.names()
    return {"val_accuracy": result.val_accuracy, "test_accuracy": test_acc, "params": params,
            "teacher_params": teacher_params, "params_ratio": params / teacher_params, "losses": losses,
            "teacher": "online" if online else "cached", "teachers": 1 + len(extra),
            "train_images": int(len(rows)), "unlabeled_train_images": int((labels[rows] < 0).sum()),
            "history": result.history, "best_epoch": result.best_epoch, "final_epoch": result.final_epoch}


def relation_heads(teacher: nn.Module, student: nn.Module, d: DistillConfig) -> int:
    """The number of attention heads MiniLM's relation transfer compares: both models must be
    transformers (models.HFClassifier) with the same number."""
    if not all(isinstance(m, models.HFClassifier) for m in (teacher, student)):
        raise ConfigError("distill.relation_weight transfers self-attention: the teacher and the student must both be "
                          "transformers (transformers:auto presets)")
    heads = [m.hf.config.num_attention_heads for m in (teacher, student)]
    if heads[0] != heads[1]:
        raise ConfigError(f"distill.relation_weight: the teacher has {heads[0]} attention heads, the student {heads[1]}; "
                          f"MiniLM's relation transfer needs the same number")
    return heads[0]


def check(p: Pipeline) -> None:
    """Before anything runs: the student trains at its input size (models.check_runs), the extra
    teachers are trained model folders whose code is trusted, and the hint and RKD layer paths exist
    in the two models (built without weights; the number of classes does not change module paths)."""
    d = p.distill
    models.check_runs(student_preset(p), 2, p.data.channels, model_sizes(p)[1], "student")
    for e in d.extra_teachers:
        check_trusted(models.trained_info(Path(e.model))["preset"]["arch"], str(Path(e.model) / "model.json"))
    if not d.hints and not d.rkd_teacher_layer and not d.rkd_student_layer:
        return
    student, _ = models.build(student_preset(p), 2, p.data.channels, pretrained=False, seed=0)
    teacher, _ = models.build(load_preset(p.teacher.preset, "teachers"), 2, p.data.channels, pretrained=False, seed=0)
    for h in d.hints:
        models.find_module(teacher, h.teacher, "teacher")
        models.find_module(student, h.student, "student")
    if d.rkd_teacher_layer:
        models.find_module(teacher, d.rkd_teacher_layer, "teacher")
    if d.rkd_student_layer:
        models.find_module(student, d.rkd_student_layer, "student")


def student_preset(p: Pipeline) -> ModelPreset:
    """The student's preset, with student.kwargs over its own; `teacher` is self-distillation: the
    teacher's own architecture and initial weights, trained again from the teacher's soft targets."""
    preset = load_preset(p.teacher.preset, "teachers") if p.student.preset == "teacher" else load_preset(p.student.preset, "students")
    if p.student.kwargs:
        preset = preset.model_copy(update={"kwargs": {**preset.kwargs, **p.student.kwargs}})
    return preset


STAGE = Stage(
    name="distill", version=8, inputs=("dataset", "teacher", "teacher_outputs"), output="student",
    configure=lambda p: DistillStageConfig(distill=p.distill, model=student_preset(p), seed=p.seed,
                                           image_size=model_sizes(p)[1], horizontal_flip=p.data.horizontal_flip),
    run=run, distributed=True, check=check,
    key_exclude={"distill": {"device", "channels_last", "compile", "workers", "baseline", "mode", "teacher_alpha"}},
    skip=lambda p: "distill.mode online: the teacher trains with the student" if p.distill.mode == "online" else None,
    sources=lambda cfg: teacher_sources(cfg.distill.extra_teachers),
    headline=lambda m: f"student test acc {m['test_accuracy']:.2f}%, {m['params'] / 1e3:.0f}k params ({m['params_ratio']:.1%} of teacher)",
)
