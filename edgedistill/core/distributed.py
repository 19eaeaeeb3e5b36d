"""The runner under torchrun: this process's rank and the world size, rank 0's decision on a stage
broadcast to the others, and the barrier at which they wait for rank 0's result."""
from __future__ import annotations

import sys

from edgedistill.core.errors import StageError

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


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()
