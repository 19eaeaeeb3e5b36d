"""Modalities: what differs between image and text pipelines, behind one interface the stages call.

The stages stay the stages (prepare, finetune, teach, baseline, distill, export, quantize, benchmark,
bundle); a modality supplies reading and writing the data, the splits and training batches as
models see them, the ONNX export, the bundle's preprocessing files, and sane quantization recipes.
Add a modality by adding its module, registering it in MODALITIES and naming it in
data.dataset.MODALITY_MODULES: nothing in the stages branches on it.

A prepared dataset says its modality in preprocess.json ("modality"; absent: image, as stores
written before text existed).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgedistill.core.registry import Registry

if TYPE_CHECKING:
    from edgedistill.data.config import DataConfig
    from edgedistill.data.dataset import Dataset


class AugmentSettings(Protocol):
    """What a modality's training batches read of a training config (training.config.TrainConfig has it)."""
    augment: str
    mixup_alpha: float
    cutmix_alpha: float


class Modality(Protocol):
    name: str
    kinds: tuple[str, ...]
    """The data.kind values it reads."""
    recipes: str
    """The quantize.recipes set used when the pipeline names none."""
    sized: bool
    """Whether models take an input size (image_size in pixels); text models take any length."""

    def data_config(self, data: "DataConfig", *, stored_size: int | None, teacher_preset: str) -> "DataConfig":
        """The pipeline's data section as prepare needs it, with what it depends on resolved: the size images
        are stored at (the larger model's, stages.sizes), the tokenizer (the teacher preset's)."""

    def sources(self, cfg: "DataConfig") -> dict[str, Path]:
        """Files and folders the prepared data is made of: their content is part of prepare's key."""

    def list_unlabeled(self, root: Path, notes: list[str]) -> np.ndarray:
        """The items of data.unlabeled_dir; files left out go into notes with the reason."""

    def write_splits(self, cfg: "DataConfig", segments: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray],
                     out: Path, workers: int = 1, progress: bool = False) -> None:
        """<split>_x.npy, <split>_y.npy and preprocess.json (and whatever else the modality keeps) into out."""

    def check_spec(self, spec: dict, path: Path) -> dict:
        """A preprocess.json of this modality, checked to hold what its splits read."""

    def describe_input(self, pre: dict) -> str:
        """The model card's paragraph on how to make the model's input."""

    def view(self, items: np.ndarray, labels: np.ndarray, spec: dict, size: int | None) -> Any:
        """A split as a model sees it: len(), labels, spec, inputs(rows) (the torch model's input),
        feeds(rows) (the ONNX model's {name: array}), save_inputs(path) (for bench.py)."""

    def batches(self, ds: "Dataset", cfg: AugmentSettings, *, rows: np.ndarray | None, seed: int, size: int | None,
                teacher_size: int | None, horizontal_flip: bool) -> Any:
        """Training batches of the training split (image.augment.Batches's interface)."""

    def export(self, model: Any, example: np.ndarray, path: Path, opset: int, log=print) -> dict:
        """model to ONNX at path; returns what the export did worth recording (may be empty)."""

    def bundle_files(self, dataset: Path, test: Any, onnx_path: Path, out: Path) -> dict:
        """Files beyond the model that an app needs to make the model's input (tokenizer, golden
        vectors), written into the bundle folder; returns what to record."""


MODALITIES: Registry[Modality] = Registry("modality")
