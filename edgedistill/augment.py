"""Training batches: gathered by index, augmented per image with torchvision transforms v2, normalized
as preprocess.json says, and mixed (MixUp / CutMix) when configured.

Every random draw comes from torch's global generator, which the training loop seeds per epoch, so a
resumed run augments exactly as an uninterrupted one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import UNLABELED, to_model_input

if TYPE_CHECKING:
    from torchvision.transforms import v2

# torchvision is imported where it is used: importing it costs ~1 s, which a fully cached `run` would pay


def image_transform(preset: str, size: int, horizontal_flip: bool) -> v2.Transform | None:
    """The per-image transform of an augmentation preset, on uint8 CHW tensors (None for 'none')."""
    if preset == "none":
        return None
    from torchvision.transforms import v2

    # small images (digits, CIFAR-like): the classic pad-and-crop; larger ones: random resized crops
    crop = (v2.RandomCrop(size, padding=max(1, size // 8)) if size < 64
            else v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True))
    steps: list[v2.Transform] = [crop]
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if preset == "strong":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


class Batches:
    """Training batches of a split: batch(idx) -> (model input, targets).

    Targets are class indices (UNLABELED where an image has none), or, with MixUp/CutMix, mixed
    one-hot rows (all zeros for an unlabeled image, so only the distillation term sees it).
    images may be memory-mapped: only the rows of a batch are read and converted to float.
    rows: which images of the split take part (default all); batch indices refer to them.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, spec: dict, cfg: TrainConfig,
                 horizontal_flip: bool, num_classes: int, rows: np.ndarray | None = None):
        self.spec, self.num_classes = spec, num_classes
        self.images = images
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        self.labels = torch.as_tensor(labels[self.rows])
        self.transform = image_transform(cfg.augment, spec["height"], horizontal_flip)
        from torchvision.transforms import v2

        mixers = ([v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)] if cfg.mixup_alpha > 0 else []) + \
                 ([v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes)] if cfg.cutmix_alpha > 0 else [])
        self.mix = v2.RandomChoice(mixers) if mixers else None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def random(self) -> bool:
        """Whether the same image gives different inputs from epoch to epoch."""
        return self.transform is not None or self.mix is not None

    def pixels(self, idx: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) of these batch indices, read from the (memory-mapped) split."""
        return np.asarray(self.images[self.rows[np.asarray(idx)]])

    def clean(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The model's input for these batch indices without augmentation, by data.to_model_input."""
        return torch.from_numpy(to_model_input(self.pixels(idx), self.spec))

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.labels[idx]
        if self.transform is None:
            x = self.clean(idx)
        else:
            chw = torch.from_numpy(self.pixels(idx)).permute(0, 3, 1, 2)
            x = torch.stack([self.transform(image) for image in chw])
            x = torch.from_numpy(to_model_input(x.permute(0, 2, 3, 1).numpy(), self.spec))
        if self.mix is not None:
            onehot = F.one_hot(y.clamp_min(0), self.num_classes).float() * (y != UNLABELED).unsqueeze(1)
            x, y = self.mix(x, onehot)
        return x, y
