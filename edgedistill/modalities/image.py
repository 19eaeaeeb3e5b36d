"""Images: decoded to uint8 at the model's size, augmented with torchvision transforms v2, fed as
float NCHW (edgedistill.data and edgedistill.augment hold the code; this is the modality's face)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import data
from . import MODALITIES


class ImageModality:
    name = "image"
    kinds = ("mnist5k", "digits", "imagefolder")
    recipes = "x86"
    sized = True

    def data_config(self, p):
        from ..config import stored_size

        return p.data.model_copy(update={"image_size": stored_size(p)})

    def sources(self, cfg) -> dict[str, Path]:
        return data.sources(cfg)

    def list_unlabeled(self, root: Path, notes: list[str]) -> np.ndarray:
        return data.list_unlabeled(root, notes)

    def write_splits(self, cfg, segments, labels, out: Path, workers: int = 1, progress: bool = False) -> None:
        data.write_image_splits(cfg, segments, labels, out, workers=workers, progress=progress)

    def check_spec(self, spec: dict, path: Path) -> dict:
        return data.check_image_spec(spec, path)

    def describe_input(self, pre: dict) -> str:
        decode = pre.get("decode")
        decoded = ("Decode a file or camera frame as a viewer shows it: " + "; ".join(decode.values()) + ". "
                   if decode else "")
        return (f"{decoded}Input `{pre['input_name']}`: {pre['dtype']} {pre['layout']} 1x{pre['channels']}x{pre['height']}x"
                f"{pre['width']}, {pre['color']} image: {pre['resize'].get('text', 'resized to height x width')}; then "
                f"`{pre['formula']}` with scale {pre['scale']:.6f}, mean {pre['mean']}, std {pre['std']} (see preprocess.json).")

    def view(self, items, labels, spec: dict, size: int | None) -> data.Split:
        return data.Split(items, labels, data.view_spec(spec, size))

    def batches(self, ds, cfg, *, rows, seed, size, teacher_size, horizontal_flip):
        from ..augment import Batches

        images, labels = ds.splits["train"]
        return Batches(images, labels, ds.spec, cfg, horizontal_flip, len(ds.classes), rows=rows, seed=seed, size=size,
                       teacher_size=teacher_size)

    def export(self, model, example: np.ndarray, path: Path, opset: int, log=print) -> dict:
        from ..onnx_utils import export_onnx

        export_onnx(model, example, path, opset, input_name="input")
        return {}

    def bundle_files(self, dataset: Path, test: Any, onnx_path: Path, out: Path) -> dict:
        return {}  # preprocess.json says it all


MODALITIES.register("image")(ImageModality())
