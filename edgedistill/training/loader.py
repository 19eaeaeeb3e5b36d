"""The torch DataLoader over a modality's training batches: each batch is built in a worker from its
index and seeded by (seed, epoch, row), so the number of workers changes nothing but the speed."""
from __future__ import annotations

import torch
import torch.utils.data

from edgedistill.data.splits import MapsByName


class EpochBatches(torch.utils.data.Dataset):
    """Batches as a DataLoader serves them: item (epoch, step, indices) -> (inputs, targets, indices,
    teacher's view or None)."""

    def __init__(self, batches: MapsByName, rank: int = 0):
        self.batches, self.rank = batches, rank

    def __getitem__(self, key: tuple[int, int, torch.Tensor]):
        epoch, step, idx = key
        x, y, teacher_x = self.batches(idx, epoch, step, self.rank)
        return x, y, idx, teacher_x


class EpochPlan(torch.utils.data.Sampler):
    """Yields this epoch's (epoch, step, indices), set by the training loop before each epoch; the
    loader's workers, persistent across epochs, only ever see the keys."""

    def __init__(self):
        self.items: list[tuple[int, int, torch.Tensor]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # the workers share the cores with the training process


def loader(batches: MapsByName, workers: int, pin_memory: bool, rank: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over whole batches (batch_size=None: our batches are made, augmented and mixed as
    one), `workers` persistent worker processes (0: in the training process), pinned memory on CUDA."""
    return torch.utils.data.DataLoader(
        EpochBatches(batches, rank), sampler=EpochPlan(), batch_size=None, num_workers=workers,
        pin_memory=pin_memory, persistent_workers=workers > 0, worker_init_fn=_one_thread if workers else None,
        prefetch_factor=2 if workers else None,
        # its own generator: without one, every epoch's iter() draws a seed from torch's global generator,
        # which would shift the training loop's dropout draws (and change results against earlier runs)
        generator=torch.Generator().manual_seed(0))
