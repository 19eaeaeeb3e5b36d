"""prepare: list the dataset, split it (stratified, seeded), and have its modality write each split to
disk: images as uint8 at the larger of the two models' input sizes (decoded by worker processes,
written as they come), text as token ids of the teacher's tokenizer; labels beside them; read back
memory-mapped by every later stage."""
from __future__ import annotations

import json
from pathlib import Path

from edgedistill.core.config import Strict
from edgedistill.core.stage import Context, Stage
from edgedistill.data import dataset, splits
from edgedistill.data.config import DataConfig
from edgedistill.data.dataset import for_kind
from edgedistill.stages.sizes import stored_size


class PrepareConfig(Strict):
    data: DataConfig
    """The pipeline's data section as the modality resolves it: for images, image_size set to the size
    they are stored at; for text, the tokenizer set to the teacher's."""
    seed: int


def run(cfg: PrepareConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    workers = cfg.data.workers or splits.default_workers()
    classes, labels = dataset.prepare(cfg.data, cfg.seed, out, workers=workers, progress=ctx.progress, log=ctx.log)
    (out / "classes.json").write_text(json.dumps(classes, indent=2))
    counts = {s: int(len(y)) for s, y in labels.items()}
    unlabeled = int((labels["train"] == splits.UNLABELED).sum())
    ctx.log(f"{len(classes)} classes; train {counts['train']} ({unlabeled} unlabeled), val {counts['val']}, "
            f"test {counts['test']} examples")
    return {"classes": len(classes), "samples": counts, "unlabeled_train": unlabeled}


STAGE = Stage(
    name="prepare", version=5, inputs=(), output="dataset",
    configure=lambda p: PrepareConfig(data=for_kind(p.data.kind).data_config(p.data, stored_size=stored_size(p),
                                                                              teacher_preset=p.teacher.preset),
                                      seed=p.seed),
    run=run,
    sources=lambda cfg: for_kind(cfg.data.kind).sources(cfg.data),
    # a limit and a degree of parallelism: they fail a run or not, or make it faster, never change a result
    key_exclude={"data": {"max_image_pixels", "workers"}},
    headline=lambda m: "train/val/test " + "/".join(str(m["samples"][s]) for s in ("train", "val", "test")),
)
