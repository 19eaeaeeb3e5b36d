"""Prepared datasets, read through their modality: the modalities by data.kind or by preprocess.json,
prepare (load, split, have the modality write each split), and Dataset (the splits memory-mapped)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.data import image, text
from edgedistill.data.config import DataConfig
from edgedistill.data.modality import MODALITIES, Modality
from edgedistill.data.splits import DATASETS, SPLITS, UNLABELED, split

MODALITY_MODULES = (image, text)
"""Importing a modality's module registers it in MODALITIES: add a new modality's module here."""


def for_kind(kind: str) -> Modality:
    """The modality of a data.kind."""
    for name in MODALITIES:
        if kind in MODALITIES.get(name).kinds:
            return MODALITIES.get(name)
    raise AssertionError(f"data.kind '{kind}' belongs to no modality")  # data.config.DataConfig lists the kinds


def for_spec(spec: dict) -> Modality:
    """The modality of a prepared dataset or model, from its preprocess.json."""
    return MODALITIES.get(spec.get("modality", "image"))


def read_preprocess(path: Path) -> dict:
    """A preprocess.json (every bundle has one), checked by its modality to hold what its splits read."""
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"preprocess file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"preprocess file '{path}' is not JSON ({type(e).__name__})") from None
    if not isinstance(spec, dict):
        raise DataError(f"'{path}' is not a preprocess.json as bundles hold it (a JSON object)")
    return for_spec(spec).check_spec(spec, path)


def prepare(cfg: DataConfig, seed: int, out: Path, workers: int = 1, progress: bool = False,
            log: Callable[[str], None] = lambda m: None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Load, cap, split (stratified, seeded), then have the data's modality write each split into out
    (images: <split>_x.npy uint8 at the model's size, decoded by `workers` processes and written as
    they come, never a whole split in memory; text: token ids) and <split>_y.npy, and its
    preprocess.json. What the listing left out (files that are not images, blank rows) goes to log.
    Returns class names and labels."""
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
        return for_spec(self.spec)

    @property
    def channels(self) -> int:
        """Input channels a model is built for (1 for text)."""
        return self.spec.get("channels", 1)

    @property
    def size(self) -> int | None:
        """The stored input size in pixels (None for text)."""
        return self.spec.get("height")

    def split(self, name: str, size: int | None = None) -> "image.Split | text.TextSplit":
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
