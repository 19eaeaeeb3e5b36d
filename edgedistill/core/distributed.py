"""The runner under torchrun: this process's rank and the world size, rank 0's decision on a stage (or
any result of rank 0's) broadcast to the others, and the barrier at which they wait for rank 0's result."""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

from edgedistill.core.errors import StageError

T = TypeVar("T")

# ---- torchrun: the few collective calls the runner makes ------------------------------------------


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) unless torch.distributed is initialized (torch imported only then)."""
    if "torch.distributed" not in sys.modules:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(stage: str, key: str, reuse: bool) -> bool:
    """Rank 0's decision for a stage, checked against this process's own cache key."""
    import torch.distributed as dist

    decision = [(key, reuse)]
    dist.broadcast_object_list(decision, src=0)
    if decision[0][0] != key:
        raise StageError(f"stage '{stage}': this process computed cache key {key}, rank 0 {decision[0][0]}; "
                         f"every process needs the same pipeline, code and data")
    return decision[0][1]


def from_rank0(compute: Callable[[], T]) -> T:
    """compute() on rank 0, its result sent to every process (torch.distributed.broadcast_object_list:
    picklable); alone, compute(). Where rank 0 fails, the others raise StageError instead of waiting."""
    rank, size = world()
    if size == 1:
        return compute()
    import torch.distributed as dist

    box: list = [None]
    if rank == 0:
        try:
            box = [("ok", compute())]
        except Exception as e:
            dist.broadcast_object_list([("error", f"{type(e).__name__}: {e}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise StageError(f"rank 0 failed: {str(box[0][1]).splitlines()[0][:200]}")
    return box[0][1]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
