"""prepare: load the dataset, split it (stratified, seeded) and store it at the model's input size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import data
from ..config import DataConfig, Strict
from ..runner import Context, Stage


class PrepareConfig(Strict):
    data: DataConfig
    seed: int


def run(cfg: PrepareConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    classes, splits = data.prepare(cfg.data, cfg.seed)
    np.savez_compressed(out / "dataset.npz", **{f"{k}_{s}": a for s, (x, y) in splits.items() for k, a in (("x", x), ("y", y))})
    (out / "classes.json").write_text(json.dumps(classes, indent=2))
    source_channels = splits["train"][0].shape[-1]
    (out / "preprocess.json").write_text(json.dumps(data.preprocess_spec(cfg.data, source_channels), indent=2))
    counts = {s: int(len(y)) for s, (_, y) in splits.items()}
    unlabeled = int((splits["train"][1] == data.UNLABELED).sum())
    ctx.log(f"{len(classes)} classes; train {counts['train']} ({unlabeled} unlabeled), val {counts['val']}, "
            f"test {counts['test']} images")
    return {"classes": len(classes), "samples": counts, "unlabeled_train": unlabeled}


STAGE = Stage(
    name="prepare", version=2, inputs=(), output="dataset",
    configure=lambda p: PrepareConfig(data=p.data, seed=p.seed),
    run=run,
    sources=lambda cfg: data.sources(cfg.data),
    key_exclude={"data": {"max_image_pixels"}},  # a limit: it fails a run or not, never changes a result
    headline=lambda m: "train/val/test " + "/".join(str(m["samples"][s]) for s in ("train", "val", "test")),
)
