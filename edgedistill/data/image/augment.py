"""Training batches: gathered by index from the (memory-mapped) split, augmented per image with
torchvision transforms v2, normalized as preprocess.json says, and mixed (MixUp / CutMix) when
configured; served by a torch DataLoader whose worker processes do this work.

Randomness is keyed by identity, not by order of arrival: an image's augmentation draws come from a
seed made of (seed, epoch, image index), a batch's mixing from (seed, epoch, step, rank). The same
batches come out with 0, 2 or 8 workers, and a resumed run augments exactly as an uninterrupted one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.data.image.spec import to_model_input, view_spec
from edgedistill.data.splits import UNLABELED, MapsByName

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from edgedistill.data.modality import AugmentSettings


def draw_seed(*key: int) -> int:
    """A seed for torch's generator from a tuple of integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1)[0])


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


class Batches(MapsByName):
    """Training batches of a split: batch(idx) -> (model input, targets, teacher's view or None).

    Targets are class indices (UNLABELED where an image has none), or, with MixUp/CutMix, mixed
    one-hot rows (all zeros for an unlabeled image, so only the distillation term sees it).
    images may be memory-mapped: only the rows of a batch are read and converted to float.
    rows: which images of the split take part (default all); batch indices refer to them.
    spec: the stored images' preprocess.json; size: the model's input size (None: the stored size);
    teacher_size: also make the teacher's view of the same augmented (and mixed) images at its size
    (None: the teacher, if any, takes the model's input).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, spec: dict, cfg: "AugmentSettings",
                 horizontal_flip: bool, num_classes: int, rows: np.ndarray | None = None, seed: int = 0,
                 size: int | None = None, teacher_size: int | None = None):
        self.mapped = ("images",)
        self.num_classes, self.seed = num_classes, seed
        self.stored_spec, self.spec = spec, view_spec(spec, size)
        self.teacher_spec = view_spec(spec, teacher_size) if teacher_size not in (None, self.spec["height"]) else None
        self.images = images
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        self.labels = torch.as_tensor(labels[self.rows])
        # augmentation works on the stored pixels; each model's view is resized from the same result
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

    def clean_views(self, idx: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's input and the teacher's view (None without teacher_size) of these batch indices,
        without augmentation: both resized from the same uint8 pixels, as evaluation does."""
        pixels = self.pixels(idx)
        return (torch.from_numpy(to_model_input(pixels, self.spec)),
                None if self.teacher_spec is None else torch.from_numpy(to_model_input(pixels, self.teacher_spec)))

    def __call__(self, idx: torch.Tensor, epoch: int = 0, step: int = 0,
                 rank: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch of these indices in this epoch: its random draws depend on (seed, epoch, index)
        and (seed, epoch, step, rank) only. Returns the model's input, the targets, and the teacher's
        view of the same images (None without teacher_size)."""
        y = self.labels[idx]
        pixels = self.pixels(idx)
        if self.transform is not None:
            views = []
            for i, image in zip(np.asarray(idx).tolist(), torch.from_numpy(pixels).permute(0, 3, 1, 2)):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(draw_seed(self.seed, epoch, int(self.rows[i])))
                    views.append(self.transform(image))
            pixels = torch.stack(views).permute(0, 2, 3, 1).numpy()
        specs = [self.spec] if self.teacher_spec is None else [self.spec, self.teacher_spec]
        if self.mix is None:  # each view resized from the uint8 pixels, exactly as evaluation does
            xs = [torch.from_numpy(to_model_input(pixels, s)) for s in specs]
        else:  # mixed once, at the stored size, so that both views show the same mixture
            onehot = F.one_hot(y.clamp_min(0), self.num_classes).float() * (y != UNLABELED).unsqueeze(1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(draw_seed(self.seed, epoch, -1 - step, rank))
                x, y = self.mix(torch.from_numpy(to_model_input(pixels, self.stored_spec)), onehot)
            xs = [resize_float(x, s["height"]) for s in specs]
        return xs[0], y, (xs[1] if len(xs) > 1 else None)


def resize_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """Model inputs (N, C, H, W) resized to size x size, bilinear and antialiased (as resize_uint8)."""
    if size is None or (x.shape[-1] == size and x.shape[-2] == size):  # None: no size (text)
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
