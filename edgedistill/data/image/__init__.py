"""The image modality: decoded to uint8 at the model's size, augmented with torchvision transforms v2,
fed as float NCHW. Its parts: files (image files to arrays), spec (preprocess.json and its arithmetic),
augment (training batches); this module is the face the stages call (data.modality's interface)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.data.config import DataConfig
from edgedistill.data.image.files import decoder_pool, list_unlabeled, write_images
from edgedistill.data.image.spec import check_image_spec, preprocess_spec, to_model_input, view_spec
from edgedistill.data.modality import MODALITIES
from edgedistill.data.splits import SPLITS, NpyWriter, sources


def write_image_splits(cfg: DataConfig, segments: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray], out: Path,
                       workers: int = 1, progress: bool = False) -> None:
    """Each split's images (uint8, written as they are decoded) and labels, and preprocess.json.
    Decoded arrays keep their channels; files are decoded to data.channels (unlabeled: as the labeled)."""
    first = segments["train"][0]
    channels = first.shape[-1] if first.dtype == np.uint8 else cfg.channels
    with decoder_pool(workers) as pool:
        for name in SPLITS:
            write_images(out / f"{name}_x.npy", segments[name], cfg, channels, pool, f"prepare {name}", progress)
            np.save(out / f"{name}_y.npy", labels[name])
    (out / "preprocess.json").write_text(json.dumps(preprocess_spec(cfg, channels, from_files=first.dtype != np.uint8), indent=2))


@dataclass
class Split:
    """One split as a model sees it, converted to float one batch at a time: len(), labels, inputs(rows)."""

    images: np.ndarray
    """uint8 (N, H, W, C), memory-mapped."""
    labels: np.ndarray
    spec: dict

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, rows: slice | np.ndarray) -> np.ndarray:
        """The model's float32 input for these rows (a slice or an index array)."""
        return to_model_input(self.images[rows], self.spec)

    def subset(self, rows: slice | np.ndarray) -> "Split":
        """These rows only (a slice stays memory-mapped; an index array is read into memory)."""
        return Split(self.images[rows], self.labels[rows], self.spec)

    def feeds(self, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
        """These rows as the ONNX model takes them: {input name: array}."""
        return {self.spec.get("input_name", "input"): self.inputs(rows)}

    def save_inputs(self, path: Path, rows: slice = slice(None), batch: int = 256) -> Path:
        """The model inputs of these rows into path (.npy, float32), written a batch at a time, for
        bench.py (which reads it memory-mapped). Returns the file written."""
        idx = np.arange(len(self))[rows]
        path = Path(path).with_suffix(".npy")
        with NpyWriter(path, np.float32, (len(idx), *self.inputs(idx[:1]).shape[1:])) as x:
            for i in range(0, len(idx), batch):
                x.write(self.inputs(idx[i:i + batch]))
        return path


class ImageModality:
    name = "image"
    kinds = ("mnist5k", "digits", "imagefolder")
    recipes = "x86"
    sized = True

    def data_config(self, data, *, stored_size, teacher_preset):
        return data.model_copy(update={"image_size": stored_size})

    def sources(self, cfg) -> dict[str, Path]:
        return sources(cfg)

    def list_unlabeled(self, root: Path, notes: list[str]) -> np.ndarray:
        return list_unlabeled(root, notes)

    def write_splits(self, cfg, segments, labels, out: Path, workers: int = 1, progress: bool = False) -> None:
        write_image_splits(cfg, segments, labels, out, workers=workers, progress=progress)

    def check_spec(self, spec: dict, path: Path) -> dict:
        return check_image_spec(spec, path)

    def describe_input(self, pre: dict) -> str:
        decode = pre.get("decode")
        decoded = ("Decode a file or camera frame as a viewer shows it: " + "; ".join(decode.values()) + ". "
                   if decode else "")
        return (f"{decoded}Input `{pre['input_name']}`: {pre['dtype']} {pre['layout']} 1x{pre['channels']}x{pre['height']}x"
                f"{pre['width']}, {pre['color']} image: {pre['resize'].get('text', 'resized to height x width')}; then "
                f"`{pre['formula']}` with scale {pre['scale']:.6f}, mean {pre['mean']}, std {pre['std']} (see preprocess.json).")

    def view(self, items, labels, spec: dict, size: int | None) -> Split:
        return Split(items, labels, view_spec(spec, size))

    def batches(self, ds, cfg, *, rows, seed, size, teacher_size, horizontal_flip):
        from edgedistill.data.image.augment import Batches

        images, labels = ds.splits["train"]
        return Batches(images, labels, ds.spec, cfg, horizontal_flip, len(ds.classes), rows=rows, seed=seed, size=size,
                       teacher_size=teacher_size)

    def export(self, model, example: np.ndarray, path: Path, opset: int, log=print) -> dict:
        from edgedistill.runtime.onnx_utils import export_onnx

        export_onnx(model, example, path, opset, input_name="input")
        return {}

    def bundle_files(self, dataset: Path, test: Any, onnx_path: Path, out: Path) -> dict:
        return {}  # preprocess.json says it all


MODALITIES.register("image")(ImageModality())
