"""Running out of memory: chunked passes retry with fewer rows; anything else gets a clear error.

Every pass over the data works on chunks of rows whose temporaries scale with
the chunk (``O(rows * R * K * D)`` for full covariances), so when a chunk does
not fit, the same pass over smaller chunks will. :func:`retry_with_fewer_rows`
reruns a pass from its start with half the rows until it fits (a pass is a
pure function of the parameters, so nothing half-done survives), then warns
once with the chunk size that worked. What is not chunked, the parameters and
the ``[R, K, D, D]`` float64 statistics of an M-step, cannot shrink: running
out of memory there, with chunks of one row, or in a distributed fit (where
one rank cannot start a pass over alone), raises
:class:`torchgmm.OutOfMemoryError` with the sizes involved and what to change.
An estimator sets its fitted attributes only once everything is computed, so
none of this leaves it half updated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from torchgmm import distributed
from torchgmm.exceptions import OutOfMemoryError, OutOfMemoryWarning

__all__ = ["is_out_of_memory", "retry_with_fewer_rows", "out_of_memory_error"]

T = TypeVar("T")

# What CPU allocators say when an allocation fails (torch raises a plain RuntimeError there).
_CPU_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a failed allocation: CUDA's ``OutOfMemoryError`` or the CPU allocator's ``RuntimeError``."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _CPU_MESSAGES)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def retry_with_fewer_rows(
    run: Callable[[int], T], rows: int, what: str, device: torch.device, stacklevel: int = 1
) -> tuple[T, int]:
    """``run(rows)``, halving ``rows`` and starting over while it runs out of memory.

    Parameters
    ----------
    run : callable
        One whole pass over the data in chunks of the given number of rows.
    rows : int
        Rows per chunk of the first attempt.
    what : str
        The pass, for messages (``'the E-step'``).
    device : torch.device
        Where the pass runs; its cache is emptied between attempts.
    stacklevel : int
        Of the warning, as in :func:`warnings.warn`, counted from the caller (1: the caller's line).

    Returns
    -------
    result, rows
        What ``run`` returned, and the rows per chunk that worked (less than
        the given ``rows`` after a retry, which is then also announced by an
        :class:`~torchgmm.OutOfMemoryWarning`).

    Raises
    ------
    OutOfMemoryError
        If chunks of one row do not fit either.
    """
    first = rows
    while True:
        try:
            result = run(rows)
            break
        except Exception as exc:  # anything but an allocation failure is re-raised
            if not is_out_of_memory(exc):
                raise
            if rows <= 1:
                raise out_of_memory_error(device, what, "even with chunks of one row") from exc
            if distributed.is_distributed():  # the other ranks would wait in a collective this rank re-runs
                raise OutOfMemoryError(
                    f"torchgmm ran out of memory on {device} in {what} with chunks of {rows} rows. A distributed "
                    f"fit cannot start a pass over on one rank: pass batch_size={max(1, rows // 2)} (or less) on "
                    "every rank."
                ) from exc
        # outside the except block, so the failed attempt's tensors (held by the traceback) are freed
        _free(device)
        rows = max(1, rows // 2)
    if rows < first:
        warnings.warn(
            f"Ran out of memory on {device} in {what} with chunks of {first} rows; it went on with {rows} rows. "
            f"Pass batch_size={rows} to start there.",
            OutOfMemoryWarning,
            stacklevel=stacklevel + 1,
        )
    return result, rows


def out_of_memory_error(device: torch.device | str, what: str, detail: str = "") -> OutOfMemoryError:
    """The error for an allocation that smaller chunks cannot avoid, with what to change."""
    where = f"in {what} " + (f"{detail} " if detail else "")
    return OutOfMemoryError(
        f"torchgmm ran out of memory on {device} {where}(the parameters, and the M-step's statistics of every "
        "restart and component, are not chunked). Use fewer restarts (n_init) or components, a diagonal "
        "covariance_type, float32 data, or another device; a smaller batch_size helps only the passes over the data."
    )
