"""Sums across processes when ``torch.distributed`` is initialised; no-ops otherwise.

Owns: every collective torchgmm uses (sums, gathers, broadcasts, the agreement checks and errors raised on
every rank). Must not: import anything else from torchgmm, or call a collective that not every rank reaches
at the same point.

Every rank holds its own shard of the rows. The EM passes produce sums over
rows (sufficient statistics, counts, the data mean, k-means sums), so making
every rank see the global sums is all that fitting on sharded data needs: the
M-steps then run on identical inputs and every rank ends with the same model.
NCCL reduces CUDA tensors, gloo CPU tensors; tensors are moved to the
backend's device and back as needed.

An error raised on one rank only (its shard is empty or holds a NaN, its
parameters are invalid, it cannot read the checkpoint) would leave the other
ranks waiting in the next collective. The checks that can fail this way run
inside :func:`together`, which every rank enters and leaves at the same point:
leaving it, the ranks exchange whether they failed, and every rank raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "all_reduce_",
    "all_gather_tensors",
    "check_same",
    "broadcast",
    "broadcast_int",
    "raise_together",
    "together",
    "NOTE_PREFIX",
]

_T = TypeVar("_T")

# Starts the note that raise_together adds to the exception a failing rank re-raises.
NOTE_PREFIX = "torchgmm.distributed: "


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


def broadcast(value: _T) -> _T:
    """Rank 0's ``value`` (any picklable object) on every rank; ``value`` itself without distribution."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (so that random draws agree)."""
    return int(broadcast(value))


def raise_together(error: BaseException | None) -> None:
    """Raise on every rank if ``error`` is not None on some rank; every rank must call it at the same point.

    One ``all_gather_object`` of each rank's message. A rank that failed raises
    its own ``error`` again (with a note naming what the others raise); every
    other rank raises a ``ValueError`` naming the rank(s) that failed and their
    messages, so that no rank goes on into a collective the failed ones never
    reach. Without distribution, ``error`` is raised as it is.

    Parameters
    ----------
    error : BaseException or None
        What this rank raised, or None if it succeeded.

    Raises
    ------
    BaseException
        ``error`` on a rank that failed.
    ValueError
        ``Distributed fit: rank R failed: MESSAGE`` on the others, one such
        clause per failed rank, separated by semicolons.
    """
    if not is_distributed():
        if error is not None:
            raise error
        return
    message = None if error is None else (str(error).strip() or type(error).__name__)
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, message)
    failed = [(r, m) for r, m in enumerate(gathered) if m is not None]
    if not failed:
        return
    text = "Distributed fit: " + "; ".join(f"rank {r} failed: {m}" for r, m in failed)
    if error is None:
        raise ValueError(text)
    note = f"{NOTE_PREFIX}raised on every rank; a rank without an error of its own raises ValueError: {text}"
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10: kept where 3.11 keeps notes, for code that looks for them
        error.__notes__ = [*getattr(error, "__notes__", []), note]
    raise error


@contextlib.contextmanager
def together(collective: bool = True) -> Iterator[None]:
    """Run a block whose errors every rank raises: :func:`raise_together` on leaving it.

    Every rank must enter the block, and leave it (normally or by an
    ``Exception``), at the same point of the program. ``collective=False``
    (or no distribution) runs the block as it is, with no collective.
    Interrupts (``KeyboardInterrupt``, ``SystemExit``) pass through unexchanged.

    Examples
    --------
    >>> from torchgmm import distributed
    >>> with distributed.together():  # without torch.distributed: the block as it is
    ...     n = int("3")
    >>> n
    3
    """
    if not (collective and is_distributed()):
        yield
        return
    try:
        yield
    except Exception as exc:
        raise_together(exc)
        raise  # (raise_together always raises when given an error)
    raise_together(None)
