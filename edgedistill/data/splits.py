"""Datasets by registry name, the seeded stratified split, and the one preprocessing function.

A prepared dataset is stored on disk, one pair of .npy files a split: uint8 images already resized to
the larger of the two models' input sizes (N, H, W, C with C = 1 or 3), which is what a device has
after decoding and resizing a camera frame, and int64 labels; a model that takes fewer pixels gets
each batch resized to its size (``image_spec.view_spec``). The images are written incrementally and read back
memory-mapped, so memory follows the batch, never the data set. ``image_spec.to_model_input`` turns a batch of
such images into the float tensor the model takes; the same rule is written to the bundle's
preprocess.json so it can be reimplemented on the device.

The split and the dataset registry serve every modality; text (token ids instead of pixels) lives
in edgedistill.data.text and text_files, which register their own dataset kinds here; image files in
edgedistill.data.image_files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.core.registry import Registry
from edgedistill.data.config import DataConfig

if TYPE_CHECKING:
    from edgedistill.data.image import Split
    from edgedistill.data.text import TextSplit


def draw_seed(*key: int) -> int:
    """A seed for torch's generator from a tuple of integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1)[0])


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


def prepare(cfg: DataConfig, seed: int, out: Path, workers: int = 1, progress: bool = False,
            log: Callable[[str], None] = lambda m: None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Load, cap, split (stratified, seeded), then have the data's modality write each split into out
    (images: <split>_x.npy uint8 at the model's size, decoded by `workers` processes and written as
    they come, never a whole split in memory; text: token ids) and <split>_y.npy, and its
    preprocess.json. What the listing left out (files that are not images, blank rows) goes to log.
    Returns class names and labels."""
    from edgedistill.data.modality import for_kind

    modality = for_kind(cfg.kind)
    raw = DATASETS.get(cfg.kind)(cfg)
    classes, segments, labels = split(raw, cfg, seed)
    if cfg.unlabeled_dir is not None:
        extra = modality.list_unlabeled(Path(cfg.unlabeled_dir), raw.notes)
        segments["train"].append(extra)
        labels["train"] = np.concatenate([labels["train"], np.full(len(extra), UNLABELED, np.int64)])
    for note in raw.notes:
        log(note)
    modality.write_splits(cfg, segments, labels, out, workers=workers, progress=progress)
    return classes, labels


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


def read_preprocess(path: Path) -> dict:
    """A preprocess.json (every bundle has one), checked by its modality to hold what its splits read."""
    import json

    from edgedistill.data.modality import for_spec

    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"preprocess file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"preprocess file '{path}' is not JSON ({type(e).__name__})") from None
    if not isinstance(spec, dict):
        raise DataError(f"'{path}' is not a preprocess.json as bundles hold it (a JSON object)")
    return for_spec(spec).check_spec(spec, path)


class MapsByName:
    """Pickled (for DataLoader workers started by spawn) with its memory-mapped arrays by file name,
    not as a copy of their data. The attributes in `mapped` are the arrays."""

    mapped: tuple[str, ...] = ()

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


@dataclass
class Dataset:
    """A prepared dataset artifact: splits memory-mapped from disk, read through its modality
    (edgedistill.data.modality: images, text)."""

    classes: list[str]
    spec: dict
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    """name -> (items: uint8 images (N, H, W, C) or int64 token ids (N, L), memory-mapped; int64 labels)."""

    @property
    def modality(self):
        from edgedistill.data.modality import for_spec

        return for_spec(self.spec)

    @property
    def channels(self) -> int:
        """Input channels a model is built for (1 for text)."""
        return self.spec.get("channels", 1)

    @property
    def size(self) -> int | None:
        """The stored input size in pixels (None for text)."""
        return self.spec.get("height")

    def split(self, name: str, size: int | None = None) -> "Split | TextSplit":
        """A split as a model of this input size sees it (None: the stored size)."""
        return self.modality.view(*self.splits[name], self.spec, size)

    def inputs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A whole split as float (memory grows with the split): for small data in tests and
        benchmarks only; the pipeline converts per batch (split(name))."""
        view = self.split(split)
        return view.inputs(slice(None)), view.labels

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        import json

        splits = {s: (np.load(path / f"{s}_x.npy", mmap_mode="r"), np.load(path / f"{s}_y.npy")) for s in SPLITS}
        return cls(json.loads((path / "classes.json").read_text()), json.loads((path / "preprocess.json").read_text()), splits)
