"""teach: the fine-tuned teacher's logits on the training split, stored once (and those of the extra
teachers of multi-teacher distillation).

The student sees no random augmentation, so the teacher's outputs for each training image never
change: distill reads them from here instead of running the teacher every step, and sweeping the
temperature, alpha or the student never reruns the teacher. (With feature or relation distillation
the teacher's intermediate layers are needed too, and distill runs the teacher online.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from edgedistill.core.config import Strict
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset
from edgedistill.models.saved import input_size, load_trained
from edgedistill.stages.distill import ExtraTeacher, teacher_sources
from edgedistill.training.loop import predict, resolve_device


class TeachConfig(Strict):
    extra_teachers: list[ExtraTeacher]
    """distill.extra_teachers: their logits are stored too (extra_<i>_train_logits.npy)."""
    batch_size: int = 64
    """Examples a forward pass: the teacher's training batch size, so memory stays what fine-tuning
    needed. Not part of the key: the logits do not depend on it."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """teacher.device: where the teacher runs (CUDA when present, by default). Not part of the key."""


def run(cfg: TeachConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])

    device = resolve_device(cfg.device)

    def logits(model: Path) -> np.ndarray:  # each teacher at its own input size, converted to float per batch
        return predict(load_trained(model).to(device), ds.split("train", input_size(model, ds.size)), device,
                       batch=cfg.batch_size).numpy().astype(np.float32)

    teacher_logits = logits(inputs["teacher"])
    np.save(out / "train_logits.npy", teacher_logits)
    for i, e in enumerate(cfg.extra_teachers):
        np.save(out / f"extra_{i}_train_logits.npy", logits(Path(e.model)))
    return {"samples": int(len(teacher_logits)), "classes": int(teacher_logits.shape[1]), "teachers": 1 + len(cfg.extra_teachers)}


STAGE = Stage(
    name="teach", version=3, inputs=("dataset", "teacher"), output="teacher_outputs",
    skip=lambda p: "distill.mode online: the student learns from the teacher as it trains" if p.distill.mode == "online" else None,
    # the weights do not change the stored logits: only the teachers' folders are in the key
    configure=lambda p: TeachConfig(extra_teachers=p.distill.extra_teachers, batch_size=p.teacher.batch_size,
                                    device=p.teacher.device), run=run,
    key_exclude={"extra_teachers": {"__all__": {"weight"}}, "batch_size": True, "device": True},
    sources=lambda cfg: teacher_sources(cfg.extra_teachers),
    headline=lambda m: f"logits of {m.get('teachers', 1)} teacher(s) for {m['samples']} training examples",
)
