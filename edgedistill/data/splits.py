"""What every modality's data shares: the dataset and source registries, the seeded stratified split,
splits written incrementally (NpyWriter) and read back memory-mapped, so memory follows the batch and
never the data set, and the base of training batches (MapsByName).

A prepared dataset is one pair of .npy files a split: the items (images: uint8 (N, H, W, C) at the
larger of the two models' input sizes, what a device has after decoding and resizing a camera frame;
text: int64 token ids (N, L)) and int64 labels. The modalities (data.image, data.text) read and write
their items; data.dataset reads a prepared dataset back through its modality."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.core.registry import Registry
from edgedistill.data.config import DataConfig


def default_workers() -> int:
    """Decoding processes when data.workers is not set: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class RawData:
    """A dataset as listed: items and labels, either one labeled pool to split, or given splits. Items
    are decoded uint8 images (N, H, W, C) for the small built-in datasets, image file paths (decoded
    only when a split is written, in worker processes), or texts (an object array of str)."""

    classes: list[str]
    pool: tuple[np.ndarray, np.ndarray] | None = None
    splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    notes: list[str] = field(default_factory=list)
    """What the listing left out and why (files that are not images, blank CSV rows): said by prepare."""


Loader = Callable[[DataConfig], RawData]
DATASETS: Registry[Loader] = Registry("dataset")
SOURCES: dict[str, Callable[[DataConfig], dict[str, Path]]] = {}


def sources(cfg: DataConfig) -> dict[str, Path]:
    """Files the prepared dataset is made of: their content is part of the prepare stage's key."""
    out = SOURCES[cfg.kind](cfg)
    if cfg.unlabeled_dir is not None:
        out["unlabeled"] = Path(cfg.unlabeled_dir)
    return out


def _cap_per_class(x: np.ndarray, y: np.ndarray, cap: int | None, rng: np.random.Generator):
    if cap is None:
        return x, y
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:cap] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


SPLITS = ("train", "val", "test")


def split(raw: RawData, cfg: DataConfig, seed: int) -> tuple[list[str], dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """The seeded stratified split of any modality's items: (classes, items a split as a list of
    segments, labels a split), with labeled_per_class applied. Chosen on item indices and labels alone."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if raw.pool is not None:
        x, y = _cap_per_class(*raw.pool, cfg.max_per_class, rng)
        n_test = max(len(raw.classes), int(round(len(y) * cfg.test_fraction)))
        n_val = max(len(raw.classes), int(round(len(y) * cfg.val_fraction)))
        try:
            i_rest, i_test, y_rest, y_test = train_test_split(np.arange(len(y)), y, test_size=n_test, stratify=y, random_state=seed)
            i_tr, i_val, y_tr, y_val = train_test_split(i_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed)
        except ValueError as e:
            raise DataError(f"cannot split {len(y)} examples into train/val/test: {e}") from None
        splits = {"train": (x[i_tr], y_tr), "val": (x[i_val], y_val), "test": (x[i_test], y_test)}
    else:
        assert raw.splits is not None
        splits = {k: _cap_per_class(*v, cfg.max_per_class, rng) for k, v in raw.splits.items()}
        x, y = splits["train"]
        held = [k for k in ("val", "test") if k not in splits]
        for name in held:  # one given folder, the other carved out of train
            frac = cfg.val_fraction if name == "val" else cfg.test_fraction
            try:
                i_keep, i_held, y, y_h = train_test_split(np.arange(len(y)), y, test_size=frac, stratify=y, random_state=seed)
            except ValueError as e:
                raise DataError(f"cannot hold out a {name} split from the {len(y)} training examples: {e}") from None
            x, splits[name] = x[i_keep], (x[i_held], y_h)
        splits["train"] = (x, y)
    check_splits(raw.classes, splits)
    if cfg.labeled_per_class is not None:
        splits["train"] = (splits["train"][0], _hide_labels(splits["train"][1], cfg.labeled_per_class, rng))
    return raw.classes, {k: [v[0]] for k, v in splits.items()}, {k: v[1] for k, v in splits.items()}


class NpyWriter:
    """A .npy file written front to back, a chunk at a time, with plain writes: on a full disk a write
    through a memory map kills the process (SIGBUS), where a plain write raises ENOSPC. Worker processes
    may fill a range of rows themselves (reserve, then pwrite at row_offset)."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape, self.rows = Path(path), np.dtype(dtype), shape, 0
        self.file = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": shape})
        self.data_offset = self.file.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def write(self, rows: np.ndarray) -> None:
        self.file.write(memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B"))
        self.rows += len(rows)

    def reserve(self, n: int) -> int:
        """Hand the next n rows to other writers (pwrite at row_offset); returns the first row."""
        self.file.flush()  # the header and earlier rows are in the file before anyone writes after them
        first = self.rows
        self.rows += n
        self.file.seek(self.row_offset(self.rows))
        return first

    def row_offset(self, row: int) -> int:
        return self.data_offset + row * self.row_bytes

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
        if exc[0] is None and self.rows != self.shape[0]:
            raise AssertionError(f"{self.path}: {self.rows} rows written, {self.shape[0]} declared")


UNLABELED = -1
"""The label of a training image without one (a transfer-set image)."""


def check_splits(classes: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A classification task needs two classes, and every class in every split: otherwise accuracy
    is measured on a task other than the one trained (a bundle claiming 100% on one class)."""
    if len(classes) < 2:
        raise DataError(f"the dataset has {len(classes)} class{'es' if len(classes) != 1 else ''} "
                        f"({', '.join(classes) or 'none'}); a classifier needs at least 2 (one sub-folder per class)")
    for name in ("train", "val", "test"):
        counts = np.bincount(splits[name][1], minlength=len(classes))
        if (counts == 0).any():
            missing = [classes[i] for i in np.flatnonzero(counts == 0)]
            raise DataError(f"the {name} split has no example of class {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}; give every class more examples "
                            f"(or a larger data.{'val' if name == 'val' else 'test'}_fraction)")


def _hide_labels(y: np.ndarray, keep_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """y with every label but keep_per_class a class (a seeded choice) replaced by UNLABELED."""
    out = np.full_like(y, UNLABELED)
    for c in np.unique(y):
        keep = rng.permutation(np.flatnonzero(y == c))[:keep_per_class]
        out[keep] = c
    return out


class MapsByName:
    """The base of a modality's training batches (image.augment.Batches, text.TextBatches): pickled (for
    DataLoader workers started by spawn) with its memory-mapped arrays by file name, not as a copy of
    their data. The attributes in `mapped` are the arrays."""

    mapped: tuple[str, ...] = ()

    def clean_views(self, idx) -> tuple[Any, Any]:
        """(the model's input, the teacher's view or None) of these batch indices without augmentation."""
        return self.clean(idx), None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self.mapped:
            value = state[name]
            if isinstance(value, np.memmap) and value.filename:
                state[name] = ("memmap", value.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        for name in state.get("mapped", ()):
            if isinstance(state[name], tuple):
                state[name] = np.load(state[name][1], mmap_mode="r")
        self.__dict__.update(state)


def input_batches(x: Any, batch: int) -> Iterator[np.ndarray]:
    """Batches of model input from a Split or InputSet (converted per batch) or an array/tensor of inputs."""
    for i in range(0, len(x), batch):
        yield x.inputs(slice(i, i + batch)) if hasattr(x, "inputs") else x[i:i + batch]
