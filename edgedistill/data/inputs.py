"""Model inputs from outside a pipeline (`edgedistill quantize`, `edgedistill bench`): .npy, .npz or
an image folder, read batch by batch."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.data.image.files import decode_image, read_imagefolder
from edgedistill.data.image.spec import to_model_input


@dataclass
class InputSet:
    """Model inputs from outside a pipeline (standalone quantize): read batch by batch."""

    items: "np.ndarray | list[str]"
    to_input: Callable
    """items[i:j] -> float32 model input batch."""
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.items)

    def inputs(self, rows: slice) -> np.ndarray:
        return self.to_input(self.items[rows])


def open_inputs(path: Path, spec: dict | None) -> InputSet:
    """.npy of preprocessed float32 inputs (memory-mapped: streamed), .npz with x (and y for labels),
    or an image folder (one sub-folder per class; decoded per batch as spec, a preprocess.json, says)."""
    path = Path(path)
    if path.is_dir():
        if spec is None:
            raise DataError(f"'{path}' is an image folder: give --preprocess preprocess.json (a bundle has one)")
        notes: list[str] = []
        _, paths, labels = read_imagefolder(path, None, notes)
        for note in notes:
            print(f"edgedistill: {note}", file=sys.stderr)
        resize = spec.get("resize", {})
        shorter, size = resize.get("shorter_side"), resize.get("size", [spec["height"]])[0]
        channels = 1 if spec["color"] == "grayscale" else 3
        decode = lambda paths: to_model_input(np.stack([decode_image(p, size, channels, shorter=shorter)
                                                        for p in paths]), spec)
        return InputSet(list(paths), decode, labels)
    try:
        if path.suffix == ".npy" and path.is_file():
            return InputSet(_model_inputs(np.load(path, mmap_mode="r"), path), np.asarray, None)
        if path.suffix == ".npz" and path.is_file():
            with np.load(path) as z:
                if "x" not in z:
                    raise DataError(f"'{path}' has no array named x (inputs); it has {', '.join(z.files)}")
                x = _model_inputs(z["x"], path)
                y = z["y"] if "y" in z else None
            if y is not None and (y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu"):
                raise DataError(f"'{path}': y must hold one integer label per input ({len(x)}), "
                                f"it is {y.dtype} of shape {y.shape}")
            return InputSet(x, np.asarray, None if y is None else y.astype(np.int64))
    except (ValueError, OSError, EOFError) as e:  # not an array file, pickled objects, truncated
        raise DataError(f"cannot read '{path}' as a numpy array file: {str(e).splitlines()[0][:120]}") from None
    raise DataError(f"'{path}' is not an image folder, a .npy or a .npz file")


def _model_inputs(x: np.ndarray, path: Path) -> np.ndarray:
    """Model inputs must be a non-empty numeric array, one row an input; whether they fit the model
    (rank, sizes, dtype) is checked against the model itself (ortbench.check_feed)."""
    if x.dtype.kind not in "fiub" or x.ndim == 0 or len(x) == 0:
        raise DataError(f"'{path}' holds {x.dtype} of shape {x.shape}; model inputs are a numeric array, one row an "
                        f"input (preprocessed images: float32 (N, C, H, W))")
    return x
