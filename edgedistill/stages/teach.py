"""teach: the fine-tuned teacher's logits on the training split, stored once.

The student sees no random augmentation, so the teacher's outputs for each training image never
change: distill reads them from here instead of running the teacher every step, and sweeping the
temperature, alpha or the student never reruns the teacher. (With feature or relation distillation
the teacher's intermediate layers are needed too, and distill runs the teacher online.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Strict
from ..data import Dataset
from ..models import load_trained
from ..runner import Context, Stage
from ..train import predict


class TeachConfig(Strict):
    """No options: the result depends only on the teacher and the data."""


def run(cfg: TeachConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    x_train, _ = Dataset.load(inputs["dataset"]).inputs("train")
    logits = predict(load_trained(inputs["teacher"]), x_train).numpy().astype(np.float32)
    np.save(out / "train_logits.npy", logits)
    return {"samples": int(len(logits)), "classes": int(logits.shape[1])}


STAGE = Stage(
    name="teach", version=1, inputs=("dataset", "teacher"), output="teacher_outputs",
    configure=lambda p: TeachConfig(), run=run,
    headline=lambda m: f"teacher logits for {m['samples']} training images",
)
