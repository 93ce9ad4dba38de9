"""Sums across processes when ``torch.distributed`` is initialised; no-ops otherwise.

Every rank holds its own shard of the rows. The EM passes produce sums over
rows (sufficient statistics, counts, the data mean, k-means sums), so making
every rank see the global sums is all that fitting on sharded data needs: the
M-steps then run on identical inputs and every rank ends with the same model.
NCCL reduces CUDA tensors, gloo CPU tensors; tensors are moved to the
backend's device and back as needed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "world_size", "rank", "all_reduce_", "all_gather_tensors", "check_same", "broadcast_int"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _backend_device(t: Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(*tensors: Tensor) -> None:
    """Sum each tensor over all ranks, in place (no-op without distribution)."""
    if not is_distributed():
        return
    for t in tensors:
        device = _backend_device(t)
        if t.device == device:
            dist.all_reduce(t)
        else:
            moved = t.to(device)
            dist.all_reduce(moved)
            t.copy_(moved)


def all_gather_tensors(t: Tensor) -> list[Tensor]:
    """Every rank's ``t`` (same shape on every rank), in rank order."""
    if not is_distributed():
        return [t]
    device = _backend_device(t)
    moved = t.to(device)
    out = [torch.empty_like(moved) for _ in range(world_size())]
    dist.all_gather(out, moved)
    return [o.to(t.device) for o in out]


def check_same(**values: Any) -> None:
    """Raise the same ``ValueError`` on every rank unless all ranks passed equal values."""
    if not is_distributed():
        return
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, values)
    for name in values:
        seen = [g[name] for g in gathered]
        if any(v != seen[0] for v in seen):
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(seen))
            raise ValueError(f"Distributed fit: ranks disagree on {name} ({per_rank}); every rank must use the same.")


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (so that random draws agree)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])
