"""Passes over the data: tile sizes, the kernel and compute dtype, the E-step pass, statistics of given
responsibilities, predictions mapped over tiles, and what happens when memory runs out.

Owns everything that reads a :class:`~torchgmm.data.ScannedData` tile by tile: how many rows a compute tile
holds (:func:`chunk_rows`; the rows read per step are the source's ``batch_size``), which kernel a pass uses
and whether a float32 pass must run in float64 (:func:`choose_kernel`, :func:`working_dtype`), the flushes of
float32 partial sums into float64, the sums across processes, and the restart of a pass in smaller chunks when
an allocation fails (:func:`retry_with_fewer_rows`). Must not: decide anything about restarts, convergence or
repairs (:mod:`torchgmm.trainer`, :mod:`torchgmm.mstep`), nor hold state between passes: a pass is a pure
function of the parameters, so starting it over is always safe.

Running out of memory: every pass works on chunks whose temporaries scale with the chunk
(``O(rows * R * K * D)`` for full covariances), so when a chunk does not fit, the same pass over smaller
chunks will. What is not chunked, the parameters and the ``[R, K, D, D]`` float64 statistics of an M-step,
cannot shrink: running out of memory there, with chunks of one row, or in a distributed fit (where one rank
cannot start a pass over alone), raises :class:`torchgmm.OutOfMemoryError` with the sizes involved and what to
change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from torchgmm import distributed, fused
from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData
from torchgmm.em import ACCUMULATE_DTYPE, MixtureParameters, Statistics, estimate_log_prob_resp, sufficient_statistics
from torchgmm.exceptions import OutOfMemoryError, OutOfMemoryWarning
from torchgmm.kernels import FLUSH_ROWS, Kernel, kernel_for

__all__ = [
    "FOLDING_TOLERANCE",
    "chunk_rows",
    "working_dtype",
    "fold_rounding",
    "largest_distance",
    "choose_kernel",
    "e_step",
    "statistics_from_resp",
    "responsibility_overlaps",
    "map_chunks",
    "is_out_of_memory",
    "retry_with_fewer_rows",
    "out_of_memory_error",
]

T = TypeVar("T")

# Beyond this many nats of rounding in the folded densities (see working_dtype),
# a float32 pass runs in float64.
FOLDING_TOLERANCE = 1e-2

# What CPU allocators say when an allocation fails (torch raises a plain RuntimeError there).
_CPU_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory")


def chunk_rows(n_samples: int, elements_per_row: int, device: torch.device, rows: int | None = None) -> int:
    """Rows per compute tile so that per-tile temporaries stay within a fixed budget.

    ``elements_per_row`` is the size of the largest temporary per row (for a
    full covariance that is ``R * K * D``). The budget is 2**20 elements on
    CPU (4 MiB in float32: the temporaries stay in cache between the
    product that writes them and the ones that read them) and on CUDA 2**28
    (few, long kernels) or a sixteenth of the free device memory, whichever
    is smaller. ``rows``, when given (a tile that ran out of memory, halved), is used instead.

    Tiles are the engine's own: ``batch_size`` only sets how many rows a source reads per step
    (:attr:`torchgmm.data.DataSource.read_rows`), and each step is split into tiles of this size.
    """
    if rows is None:
        budget = 1 << 20
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = min(1 << 28, free // 64)  # a sixteenth of free memory, in float32 elements
        rows = max(16, budget // max(1, elements_per_row))
    return max(1, min(n_samples, rows))


def largest_distance(params: MixtureParameters, covariance: CovarianceType) -> float:
    """``max |mu|_P^2``: the largest squared Mahalanobis distance of a component's mean from the data mean.

    The data are centred on their mean, so this is how far the products of a pass reach from the origin in
    each component's own units. One host synchronisation.
    """
    means = params.means.to(torch.float64)
    origin = means.new_zeros(1, means.shape[-1])
    return float(covariance.mahalanobis(origin, means, params.precisions_cholesky.to(torch.float64)).max())


def fold_rounding(params: MixtureParameters, covariance: CovarianceType) -> float:
    """The rounding, in nats, of a density whose mean is folded into the products of its kernel.

    Full and tied (``[x, 1] @ [[P], [-mu P]]``): the whitened residual ``y = (x - mu) P`` is a difference of
    terms of size ``|mu|_P``, so it is off by about ``eps |mu|_P`` and its squared norm, about ``D`` near the
    component, by ``2 eps |mu|_P sqrt(D)``. Diag and spherical (``[x^2, x, 1] @ [-p/2, p mu, c]``): the terms
    themselves are of size ``|mu|_P^2``, so ``eps |mu|_P^2``. Zero in float64. One host synchronisation.
    """
    dtype = params.means.dtype
    if dtype == torch.float64:
        return 0.0
    squared = largest_distance(params, covariance)
    eps = torch.finfo(dtype).eps
    if covariance.triangular:
        return 2.0 * eps * math.sqrt(squared * params.means.shape[-1])
    return eps * squared


def working_dtype(params: MixtureParameters, covariance: CovarianceType) -> torch.dtype:
    """The dtype a pass over the data should compute in: that of ``params``, or float64.

    The E-step folds each mean into its matrix products, so a float32 density carries the rounding of
    :func:`fold_rounding`: harmless for full and tied covariances even for thin components far from the
    data mean (about 2e-3 nats for a mean 1000 of its own standard deviations away in 64 dimensions), and
    for diag and spherical for clusters within a few hundred standard deviations of each other; garbage for
    tight clusters far apart (or a float32 component squeezed by a repair). Past :data:`FOLDING_TOLERANCE`,
    float32 passes run in float64. One host synchronisation per pass.
    """
    dtype = params.means.dtype
    if dtype == torch.float64:
        return dtype
    return torch.float64 if fold_rounding(params, covariance) > FOLDING_TOLERANCE else dtype


def choose_kernel(
    params: MixtureParameters, covariance: CovarianceType, tempered: bool = False, weighted: bool = False
) -> tuple[Kernel, torch.dtype]:
    """The kernel of ``covariance``'s type and the dtype a pass with ``params`` computes in (one host sync).

    The one place a pass's formulation is decided, once per pass, before its tiles are sized: the fused
    Triton E-step (:mod:`torchgmm.fused`) for float32 passes on CUDA when Triton is installed, the torch
    kernels (:mod:`torchgmm.kernels`) otherwise. The environment variable ``TORCHGMM_KERNEL`` overrides the
    choice: ``torch`` always takes the torch kernels; ``triton`` also runs the fused one in Triton's CPU
    interpreter when ``TRITON_INTERPRET=1`` (for tests; it is slow). A ``tempered`` pass (annealing) and a
    ``weighted`` one (``sample_weight``) always take the torch kernels: the fused one has neither.
    """
    choice = fused.requested()
    work = working_dtype(params, covariance)
    device = params.means.device
    runs_here = device.type == "cuda" or (choice == "triton" and fused.interpreted() and device.type == "cpu")
    if choice != "torch" and not (tempered or weighted) and fused.available() and work == torch.float32 and runs_here:
        return fused.kernel_for(covariance), work
    return kernel_for(covariance), work


def e_step(
    data: ScannedData,
    params: MixtureParameters,
    covariance: CovarianceType,
    rows: int | None = None,
    chosen: tuple[Kernel, torch.dtype] | None = None,
    beta: Tensor | None = None,
) -> Statistics:
    """One pass over the data: log-likelihood and statistics about the current means, summed over ranks.

    Each tile is read once; its responsibilities are used and dropped. Tiles add into buffers of the compute
    dtype (the scatter through the matrix product's own accumulation), flushed into float64 every
    :data:`~torchgmm.kernels.FLUSH_ROWS` rows, so long passes keep float64-like accuracy. ``chosen`` is
    :func:`choose_kernel`'s answer when the caller already has it; ``rows`` sets the tile (a retry after
    running out of memory). ``beta [R]``, when annealing, tempers each restart's responsibilities (the
    statistics are those of responsibilities proportional to ``(w p(x))^beta``; the log-likelihood is not
    tempered).
    """
    R, K, D = params.means.shape
    weighted = data.weights is not None
    kernel, work = chosen or choose_kernel(params, covariance, tempered=beta is not None, weighted=weighted)
    rows = chunk_rows(data.n_samples, kernel.elements_per_row(R, K, D), data.device, rows)
    means, precisions_cholesky = params.means.to(work), params.precisions_cholesky.to(work)
    if beta is None:
        prepared = kernel.prepare(params.weights.to(work), means, precisions_cholesky)
    else:
        prepared = kernel.prepare(params.weights.to(work), means, precisions_cholesky, beta.to(work).view(R, 1, 1))
    zeros = Statistics.zeros(covariance, R, K, D, work, data.device)
    partial = Statistics(*(t.clone() for t in zeros))
    total, pending = zeros.to(ACCUMULATE_DTYPE), 0
    for start, x in data.chunks(rows):
        kernel.accumulate(x.to(work), prepared, partial, data.weights_of(start, x.shape[0]))
        pending += x.shape[0]
        if pending >= FLUSH_ROWS:
            total = total + partial.to(ACCUMULATE_DTYPE)
            partial, pending = Statistics(*(t.clone() for t in zeros)), 0
    total = total + partial.to(ACCUMULATE_DTYPE)
    distributed.all_reduce_(*total)
    return kernel.finish(total, params.means, params.precisions_cholesky)


def statistics_from_resp(
    data: ScannedData,
    resp_fn: Callable[[int, Tensor], Tensor],
    centre: Tensor,
    covariance: CovarianceType,
    rows: int | None = None,
) -> Statistics:
    """Statistics of given responsibilities, ``resp_fn(start, x) -> [R, n, K]``, about ``centre``, over ranks.

    Computed in float64: this one pass (the initialisation's) has centres that
    may sit far from the data mean, where the diag and spherical scatter
    ``sum r x^2 - 2 c sum r x + n_k c^2`` would cancel in float32.
    """
    R, K, D = centre.shape
    rows = chunk_rows(data.n_samples, R * K * D, data.device, rows)
    total = Statistics.zeros(covariance, R, K, D, ACCUMULATE_DTYPE, data.device)
    centre64 = centre.to(ACCUMULATE_DTYPE)
    for start, x in data.chunks(rows):
        resp = resp_fn(start, x).to(ACCUMULATE_DTYPE)
        if data.weights is not None:
            resp = resp * data.weights_of(start, x.shape[0]).view(1, -1, 1)
        stats = sufficient_statistics(x.to(ACCUMULATE_DTYPE), resp, centre64, covariance)
        total = total + Statistics(torch.zeros(R, dtype=ACCUMULATE_DTYPE, device=x.device), *stats)
    distributed.all_reduce_(*total)
    return total


def responsibility_overlaps(
    data: ScannedData, params: MixtureParameters, covariance: CovarianceType, rows: int | None = None
) -> tuple[Tensor, Tensor]:
    """What split-and-merge moves are scored by, in float64 and summed over ranks (one pass).

    Returns ``overlap [R, K, K]``, the inner products ``sum_n r_nk r_nl`` of the components' responsibility
    vectors (the diagonal: ``sum r^2``), and ``fit [R, K]``, ``sum_n r_nk log p(x_n)``: each component's
    responsibilities times the log-likelihood of the rows (its mean over the component is how well the mixture
    explains the rows the component holds).
    """
    R, K, D = params.means.shape
    rows = chunk_rows(data.n_samples, R * K * D, data.device, rows)
    params64 = params.map(lambda t: t.to(ACCUMULATE_DTYPE))
    overlap = torch.zeros(R, K, K, dtype=ACCUMULATE_DTYPE, device=data.device)
    fit = torch.zeros(R, K, dtype=ACCUMULATE_DTYPE, device=data.device)
    for start, x in data.chunks(rows):
        log_prob_norm, log_resp = estimate_log_prob_resp(x.to(ACCUMULATE_DTYPE), params64, covariance)
        resp = log_resp.exp_()  # [R, n, K]
        w = data.weights_of(start, x.shape[0])
        weighted_resp = resp if w is None else resp * w.view(1, -1, 1)  # (row weights count as copies)
        overlap += resp.mT @ weighted_resp
        fit += (weighted_resp * log_prob_norm.unsqueeze(-1)).sum(1)
    distributed.all_reduce_(overlap, fit)
    return overlap, fit


def map_chunks(
    data: ScannedData,
    params: MixtureParameters,
    covariance: CovarianceType,
    fn: Callable[[Tensor, Tensor], Tensor],
    rows: int | None = None,
    stacklevel: int = 1,
) -> Tensor:
    """``fn(log_prob_norm [n], log_resp [n, K])`` of every chunk of this rank's rows, concatenated.

    ``params`` is one restart. A pass that runs out of memory starts over in smaller chunks; ``stacklevel``
    (1: the caller's line) points its warning at the user's call.
    """
    K, D = params.means.shape[1:]
    work = working_dtype(params, covariance)
    params = params.map(lambda t: t.to(work))

    def run(rows: int) -> Tensor:
        parts = []
        for _, x in data.chunks(rows):
            log_prob_norm, log_resp = estimate_log_prob_resp(x.to(work), params, covariance)
            parts.append(fn(log_prob_norm.squeeze(0).to(data.dtype), log_resp.squeeze(0).to(data.dtype)))
        return torch.cat(parts)

    planned = chunk_rows(data.local_samples, kernel_for(covariance).elements_per_row(1, K, D), data.device, rows)
    return retry_with_fewer_rows(run, planned, "predicting", data.device, stacklevel + 1)[0]


# ------------------------------------------------------------------------------------------- out of memory


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a failed allocation: CUDA's ``OutOfMemoryError`` or the CPU allocator's ``RuntimeError``."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _CPU_MESSAGES)


def retry_with_fewer_rows(
    run: Callable[[int], T], rows: int, what: str, device: torch.device, stacklevel: int = 1
) -> tuple[T, int]:
    """``run(rows)``, halving ``rows`` (the compute tile) and starting over while it runs out of memory.

    Parameters
    ----------
    run : callable
        One whole pass over the data in compute tiles of the given number of rows.
    rows : int
        Rows per tile of the first attempt.
    what : str
        The pass, for messages (``'the E-step'``).
    device : torch.device
        Where the pass runs; its cache is emptied between attempts.
    stacklevel : int
        Of the warning, as in :func:`warnings.warn`, counted from the caller (1: the caller's line).

    Returns
    -------
    result, rows
        What ``run`` returned, and the rows per tile that worked (less than
        the given ``rows`` after a retry, which is then also announced by an
        :class:`~torchgmm.OutOfMemoryWarning`).

    Raises
    ------
    OutOfMemoryError
        If tiles of one row do not fit either (the steps of ``batch_size`` rows read from the source may
        then be what does not fit), or under ``torch.distributed``.
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
                raise out_of_memory_error(device, what, "even with compute tiles of one row") from exc
            if distributed.is_distributed():  # the other ranks would wait in a collective this rank re-runs
                raise OutOfMemoryError(
                    f"torchgmm ran out of memory on {device} in {what} with compute tiles of {rows} rows. A "
                    "distributed fit cannot start a pass over on one rank: free memory on that device (tiles are "
                    "sized from the free memory when a pass starts), or use fewer restarts (n_init) or components."
                ) from exc
        # outside the except block, so the failed attempt's tensors (held by the traceback) are freed
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows = max(1, rows // 2)
    if rows < first:
        warnings.warn(
            f"Ran out of memory on {device} in {what} with compute tiles of {first} rows; it went on with tiles "
            f"of {rows} rows.",
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
        "covariance_type, float32 data, or another device; a smaller batch_size helps only where the rows read "
        "per step do not fit."
    )
