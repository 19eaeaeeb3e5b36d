"""prepare: list the dataset, split it (stratified, seeded), and write each split to disk at the larger
of the two models' input sizes: uint8 images (decoded by worker processes, written as they come) and labels, read back
memory-mapped by every later stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import data
from ..config import DataConfig, Strict, stored_size
from ..runner import Context, Stage


class PrepareConfig(Strict):
    data: DataConfig
    """The pipeline's data section, with image_size set to the size the images are stored at."""
    seed: int


def run(cfg: PrepareConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    workers = cfg.data.workers or data.default_workers()
    classes, labels = data.prepare(cfg.data, cfg.seed, out, workers=workers, progress=ctx.progress)
    (out / "classes.json").write_text(json.dumps(classes, indent=2))
    source_channels = np.load(out / "train_x.npy", mmap_mode="r").shape[-1]
    (out / "preprocess.json").write_text(json.dumps(data.preprocess_spec(cfg.data, source_channels), indent=2))
    counts = {s: int(len(y)) for s, y in labels.items()}
    unlabeled = int((labels["train"] == data.UNLABELED).sum())
    ctx.log(f"{len(classes)} classes; train {counts['train']} ({unlabeled} unlabeled), val {counts['val']}, "
            f"test {counts['test']} images")
    return {"classes": len(classes), "samples": counts, "unlabeled_train": unlabeled}


STAGE = Stage(
    name="prepare", version=4, inputs=(), output="dataset",
    configure=lambda p: PrepareConfig(data=p.data.model_copy(update={"image_size": stored_size(p)}), seed=p.seed),
    run=run,
    sources=lambda cfg: data.sources(cfg.data),
    # a limit and a degree of parallelism: they fail a run or not, or make it faster, never change a result
    key_exclude={"data": {"max_image_pixels", "workers"}},
    headline=lambda m: "train/val/test " + "/".join(str(m["samples"][s]) for s in ("train", "val", "test")),
)
