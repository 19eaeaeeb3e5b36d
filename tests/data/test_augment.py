"""Augmentation presets, MixUp/CutMix with unlabeled images, and their reproducibility."""
import numpy as np
import torch

from edgedistill.data.image.augment import Batches
from edgedistill.data.image.spec import to_model_input
from edgedistill.training.config import TrainConfig

SPEC = {"height": 16, "width": 16, "channels": 3, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225]}


def _images(n=12, size=16, channels=1):
    g = np.random.default_rng(0)
    return g.integers(0, 256, (n, size, size, channels), dtype=np.uint8), np.arange(n, dtype=np.int64) % 3


def test_no_augmentation_gives_exactly_the_preprocessed_images():
    x, y = _images()
    b = Batches(x, y, SPEC, TrainConfig(), False, 3)
    xb, yb, _ = b(torch.tensor([3, 0, 5]))
    assert not b.random
    assert np.array_equal(xb.numpy(), to_model_input(x[[3, 0, 5]], SPEC)) and yb.tolist() == [0, 0, 2]


def test_batches_read_only_their_rows_of_a_memory_mapped_split(tmp_path):
    x, y = _images()
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.array([7, 2, 9, 4])
    b = Batches(mapped, y, SPEC, TrainConfig(), False, 3, rows=rows)
    xb, yb, _ = b(torch.tensor([2, 0]))
    assert len(b) == 4 and yb.tolist() == [y[9], y[7]]
    assert np.array_equal(xb.numpy(), to_model_input(x[[9, 7]], SPEC))


def test_presets_change_images_and_replay_from_the_seed():
    x, y = _images()
    idx = torch.arange(12)
    for preset in ("light", "strong"):
        b = Batches(x, y, SPEC, TrainConfig(augment=preset), True, 3)
        torch.manual_seed(1)
        first, labels, _ = b(idx)
        torch.manual_seed(1)
        again, _, _ = b(idx)
        assert b.random and first.shape == (12, 3, 16, 16) and torch.equal(labels, torch.as_tensor(y))
        assert torch.equal(first, again)  # a resumed epoch augments the same way
        assert not torch.equal(first, b.clean(idx))


def test_light_preset_mirrors_only_when_the_data_allows():
    from edgedistill.data.image.augment import image_transform

    names = lambda t: [type(s).__name__ for s in t.transforms]
    assert names(image_transform("light", 32, False)) == ["RandomCrop"]
    assert names(image_transform("light", 32, True)) == ["RandomCrop", "RandomHorizontalFlip"]
    assert names(image_transform("strong", 224, True)) == ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide"]
    assert image_transform("none", 32, True) is None


def test_mixup_targets_are_mixed_one_hot_rows_and_unlabeled_rows_carry_no_label():
    x, _ = _images(8)
    y = np.array([0, 1, 2, -1, 0, 1, -1, 2])
    b = Batches(x, y, SPEC, TrainConfig(mixup_alpha=0.4), False, 3)
    torch.manual_seed(0)
    xb, targets, _ = b(torch.arange(8))
    assert targets.shape == (8, 3)
    mass = targets.sum(1)
    # v2.MixUp mixes each image with its neighbour (roll by 1): mass = lam * has_label[i] + (1-lam) * has_label[i-1]
    has = torch.tensor(y >= 0, dtype=torch.float32)
    lam = float(mass[4])  # row 4 labeled, row 3 unlabeled: mass = lam
    assert torch.allclose(mass, lam * has + (1 - lam) * has.roll(1), atol=1e-6)
    assert not torch.equal(xb, b.clean(np.arange(8)))


def test_the_teacher_sees_its_own_view_of_the_same_augmented_image():
    """Distillation with two sizes: the student's batch (8 px) is the teacher's view (16 px) of the same
    augmented, and mixed, images, resized; another epoch's draws give other images."""
    from edgedistill.data.image.augment import resize_float

    x, y = _images(size=16, channels=3)
    spec = SPEC | {"resize": {"rule": "stretch", "size": [16, 16], "text": "stretch"}}
    idx = torch.arange(8)
    b = Batches(x, y, spec, TrainConfig(augment="light"), True, 3, size=8, teacher_size=16)
    small, _, big = b(idx, epoch=0)
    assert small.shape == (8, 3, 8, 8) and big.shape == (8, 3, 16, 16)
    # the student's view is resized from uint8 pixels like evaluation: equal up to that rounding
    assert (resize_float(big, 8) - small).abs().max() < 0.02
    other, _, _ = b(idx, epoch=1)
    assert (resize_float(big, 8) - other).abs().max() > 0.5
    mixed = Batches(x, y, spec, TrainConfig(augment="light", mixup_alpha=0.4), True, 3, size=8, teacher_size=16)
    small, targets, big = mixed(idx, epoch=0)
    assert torch.equal(small, resize_float(big, 8)) and targets.shape == (8, 3)
    assert Batches(x, y, spec, TrainConfig(), False, 3, size=8)(idx)[2] is None
