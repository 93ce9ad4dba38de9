"""The EM maths as small functions over batched tensors.

Shapes: rows ``X [N, D]`` (one chunk), restarts ``R``, components ``K``:
``weights [R, K]``, ``means [R, K, D]``, covariances and their precision
Cholesky factors as in :mod:`torchgmm.covariance`. ``log_resp [R, N, K]``
only ever exists for one chunk.

An E-step returns :class:`Statistics`, sums over rows that add across chunks
(and across processes); one M-step turns them into new parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm import distributed
from torchgmm._math import logsumexp
from torchgmm.covariance import CovarianceType
from torchgmm.data import DataSource

__all__ = [
    "MixtureParameters",
    "Statistics",
    "estimate_log_gaussian_prob",
    "estimate_log_prob_resp",
    "sufficient_statistics",
    "e_step",
    "statistics_from_resp",
    "m_step",
    "solve_m_step",
    "chunk_rows",
    "working_dtype",
]

# Statistics are accumulated, and M-steps solved, in float64: a few [R, K, D, D]
# tensors cost nothing next to a pass over the data, and float32 sums over
# millions of rows would lose digits.
ACCUMULATE_DTYPE = torch.float64
_FLUSH_ROWS = 1 << 16

# A variance below this fraction of the data's second moment in its feature (a
# standard deviation below 1e-6 of the data's) counts as degenerate: with the
# means folded into the products, a density costs about eps |mu|^2 / var nats
# of rounding, too much even in float64.
MIN_RELATIVE_VARIANCE = 1e-12

# Beyond this many nats of rounding in the folded densities (see working_dtype),
# a float32 pass runs in float64.
FOLDING_TOLERANCE = 1e-2


@dataclass
class MixtureParameters:
    """Parameters of ``R`` mixtures at once (one per restart).

    Attributes
    ----------
    weights : Tensor of shape (R, K)
    means : Tensor of shape (R, K, D)
    covariances : Tensor
        ``[R, K, D, D]`` full, ``[R, D, D]`` tied, ``[R, K, D]`` diag, ``[R, K]`` spherical.
    precisions_cholesky : Tensor
        Same shape as ``covariances``.
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    precisions_cholesky: Tensor

    @property
    def n_restarts(self) -> int:
        return self.weights.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> MixtureParameters:
        """Apply ``fn`` to every tensor."""
        return MixtureParameters(*(fn(getattr(self, f.name)) for f in fields(self)))

    def select(self, index: Tensor) -> MixtureParameters:
        """The restarts at ``index`` (a 1-D index tensor)."""
        return self.map(lambda t: t.index_select(0, index))

    def replace(self, index: Tensor, new: MixtureParameters) -> MixtureParameters:
        """A copy with restarts ``index`` replaced by the restarts of ``new``."""
        return MixtureParameters(
            *(getattr(self, f.name).index_copy(0, index, getattr(new, f.name)) for f in fields(self))
        )


class Statistics(NamedTuple):
    """Sufficient statistics of a set of rows, centred on given means.

    Attributes
    ----------
    log_likelihood : Tensor of shape (R,)
        Sum over rows of ``log p(x)`` (zeros when computed from given responsibilities).
    nk : Tensor of shape (R, K)
        Sum of responsibilities.
    s1 : Tensor of shape (R, K, D)
        ``sum r (x - centre)``.
    s2 : Tensor
        The scatter about the centre, see :meth:`CovarianceType.scatter`.
    """

    log_likelihood: Tensor
    nk: Tensor
    s1: Tensor
    s2: Tensor

    def __add__(self, other: Statistics) -> Statistics:  # type: ignore[override]
        return Statistics(*(a + b for a, b in zip(self, other, strict=True)))


def chunk_rows(n_samples: int, elements_per_row: int, device: torch.device, rows: int | None = None) -> int:
    """Rows per chunk so that per-chunk temporaries stay within a fixed budget.

    ``elements_per_row`` is the size of the largest temporary per row (for a
    full covariance that is ``R * K * D``). The budget is 2**20 elements on
    CPU (4 MiB in float32: the temporaries stay in cache between the
    product that writes them and the ones that read them) and on CUDA 2**28
    (few, long kernels) or a sixteenth of the free device memory, whichever
    is smaller.
    """
    if rows is None:
        budget = 1 << 20
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = min(1 << 28, free // 64)  # a sixteenth of free memory, in float32 elements
        rows = max(16, budget // max(1, elements_per_row))
    return max(1, min(n_samples, rows))


def estimate_log_gaussian_prob(
    X: Tensor, means: Tensor, precisions_cholesky: Tensor, covariance: CovarianceType
) -> Tensor:
    """Log-density of every row under every component.

    Parameters
    ----------
    X : Tensor of shape (N, D)
    means : Tensor of shape (R, K, D)
    precisions_cholesky : Tensor
        See :class:`MixtureParameters`.
    covariance : CovarianceType

    Returns
    -------
    Tensor of shape (R, N, K)
        ``log N(x | mu_k, Sigma_k) = -D/2 log 2pi + log det P_k - |(x - mu_k) P_k|^2 / 2``.
    """
    return covariance.log_prob(X, means, precisions_cholesky)


def estimate_log_prob_resp(X: Tensor, params: MixtureParameters, covariance: CovarianceType) -> tuple[Tensor, Tensor]:
    """Per-row log-likelihood ``[R, N]`` and log-responsibilities ``[R, N, K]``.

    Both come out of one ``logsumexp`` over components, in log space throughout.
    """
    weighted = estimate_log_gaussian_prob(X, params.means, params.precisions_cholesky, covariance)
    weighted = weighted + torch.log(params.weights).unsqueeze(-2)
    log_prob_norm = logsumexp(weighted, dim=-1)
    return log_prob_norm, weighted - log_prob_norm.unsqueeze(-1)


def sufficient_statistics(
    X: Tensor, resp: Tensor, centre: Tensor, covariance: CovarianceType
) -> tuple[Tensor, Tensor, Tensor]:
    """``(nk [R, K], s1 [R, K, D], s2)`` of rows ``X [N, D]`` with ``resp [R, N, K]``.

    ``s1`` and ``s2`` are taken about ``centre [R, K, D]`` (the current means),
    in the dtype of ``X``.
    """
    return covariance.statistics(X, resp, centre)


def working_dtype(params: MixtureParameters, covariance: CovarianceType) -> torch.dtype:
    """The dtype a pass over the data should compute in: that of ``params``, or float64.

    The E-step folds each mean into its matrix products (``[x, 1] @ [[P], [-mu P]]``
    for full and tied, ``[x^2, x, 1] @ [-p/2, p mu, c]`` for diag and spherical), so a
    density carries a rounding error of about ``eps * |mu|_P^2`` nats, the squared
    Mahalanobis distance of the component's mean from the data mean. That is
    harmless for clusters within a few hundred standard deviations of each other
    and garbage for tight clusters far apart (or a float32 component squeezed
    by a repair): past :data:`FOLDING_TOLERANCE`, float32 passes run in float64.
    One host synchronisation per pass.
    """
    dtype = params.means.dtype
    if dtype == torch.float64:
        return dtype
    means = params.means.to(torch.float64)
    origin = means.new_zeros(1, means.shape[-1])
    distance = covariance.mahalanobis(origin, means, params.precisions_cholesky.to(torch.float64))
    if float(distance.max()) * torch.finfo(dtype).eps > FOLDING_TOLERANCE:
        return torch.float64
    return dtype


def _accumulate(total: Statistics | None, *parts: Tensor) -> Statistics:
    part = Statistics(*(p.to(ACCUMULATE_DTYPE) for p in parts))
    return part if total is None else total + part


def e_step(
    data: DataSource, params: MixtureParameters, covariance: CovarianceType, rows: int | None = None
) -> Statistics:
    """One pass over the data: log-likelihood and statistics about the current means.

    Each chunk is read once; its responsibilities are used and dropped.
    """
    R, K, D = params.means.shape
    rows = chunk_rows(data.n_samples, covariance.elements_per_row(R, K, D), data.device, rows)
    work = working_dtype(params, covariance)
    means, precisions_cholesky = params.means.to(work), params.precisions_cholesky.to(work)
    prepared = covariance.prepare(params.weights.to(work), means, precisions_cholesky)
    # Chunks add into buffers of the compute dtype (the scatter through the
    # matrix product's own accumulation), flushed into float64 every
    # _FLUSH_ROWS rows, so long passes keep float64-like accuracy.
    zeros = _zero_statistics(covariance, R, K, D, work, data.device)
    partial = [t.clone() for t in zeros]
    total, pending = _accumulate(None, *zeros), 0
    for _, x in data.chunks(rows):
        covariance.accumulate(x.to(work), prepared, partial)
        pending += x.shape[0]
        if pending >= _FLUSH_ROWS:
            total = _accumulate(total, *partial)
            partial, pending = [t.clone() for t in zeros], 0
    total = _accumulate(total, *partial)
    distributed.all_reduce_(*total)
    s1, s2 = covariance.finish_statistics(total.nk, total.s1, total.s2, params.means, params.precisions_cholesky)
    return total._replace(s1=s1, s2=s2)


def _zero_statistics(covariance: CovarianceType, R: int, K: int, D: int, dtype, device) -> list[Tensor]:
    """Zero ``[log p(x) sum, nk, s1, s2]``: the first in float64, the others in ``dtype``."""
    shapes = ((R,), (R, K), (R, K, D), (R, *covariance.scatter_shape(K, D)))
    dtypes = (ACCUMULATE_DTYPE, dtype, dtype, dtype)
    return [torch.zeros(shape, dtype=t, device=device) for shape, t in zip(shapes, dtypes, strict=True)]


def statistics_from_resp(
    data: DataSource,
    resp_fn: Callable[[int, Tensor], Tensor],
    centre: Tensor,
    covariance: CovarianceType,
    rows: int | None = None,
) -> Statistics:
    """Statistics of given responsibilities, ``resp_fn(start, x) -> [R, n, K]``, about ``centre``.

    Computed in float64: this one pass (the initialisation's) has centres that
    may sit far from the data mean, where the diag and spherical scatter
    ``sum r x^2 - 2 c sum r x + n_k c^2`` would cancel in float32.
    """
    R, K, D = centre.shape
    rows = chunk_rows(data.n_samples, R * K * D, data.device, rows)
    total = _accumulate(None, *_zero_statistics(covariance, R, K, D, ACCUMULATE_DTYPE, data.device))
    centre64 = centre.to(ACCUMULATE_DTYPE)
    for start, x in data.chunks(rows):
        resp = resp_fn(start, x).to(ACCUMULATE_DTYPE)
        stats = sufficient_statistics(x.to(ACCUMULATE_DTYPE), resp, centre64, covariance)
        total = _accumulate(total, torch.zeros(R, dtype=ACCUMULATE_DTYPE, device=x.device), *stats)
    distributed.all_reduce_(*total)
    return total


def m_step(
    stats: Statistics,
    centre: Tensor,
    covariance: CovarianceType,
    reg_covar: float | Tensor,
    dtype: torch.dtype,
) -> tuple[MixtureParameters, Tensor]:
    """New parameters from statistics taken about ``centre [R, K, D]``.

    Follows scikit-learn: ``nk`` gets ``10 * eps`` so empty components stay
    finite, ``reg_covar`` is added to the covariance diagonals, and the weights
    are ``nk / sum(nk)``.

    Parameters
    ----------
    reg_covar : float or Tensor of shape (R, K)
        One value, or one per covariance (``(R, 1)`` when tied).
    dtype : torch.dtype
        The compute dtype: the parameters are returned in it, and a covariance
        singular to its precision counts as failed.

    Returns
    -------
    params : MixtureParameters
        In ``dtype``.
    ok : Tensor of shape (R, K), bool
        ``(R, 1)`` when tied. False for covariances that could not be factorised
        (see :meth:`CovarianceType.factorise`), with a variance below
        :data:`MIN_RELATIVE_VARIANCE` of the data's second moment in its
        feature, or with means that are not finite; their parameters are finite
        placeholders (see :mod:`torchgmm.repair`).
    """
    params, ok = solve_m_step(stats, centre, covariance, reg_covar, dtype)
    return params.map(lambda t: t.to(dtype)), ok


def solve_m_step(
    stats: Statistics,
    centre: Tensor,
    covariance: CovarianceType,
    reg_covar: float | Tensor,
    dtype: torch.dtype,
) -> tuple[MixtureParameters, Tensor]:
    """:func:`m_step` with the parameters left in float64."""
    nk = stats.nk + 10 * torch.finfo(dtype).eps
    shift = stats.s1 / nk.unsqueeze(-1)
    means = centre.to(ACCUMULATE_DTYPE) + shift
    covariances = covariance.covariances(nk, shift, stats.s2, reg_covar)
    precisions_cholesky, ok = covariance.factorise(covariances, dtype)
    finite_means = torch.isfinite(means.to(dtype)).all(-1)
    ok = ok & (finite_means if covariance.per_component else finite_means.all(-1, keepdim=True))
    weights = nk / nk.sum(-1, keepdim=True)
    variances = covariance.variances(covariances, means.shape[-1])  # [R, K, D] ([R, 1, D] tied)
    ok = ok & torch.isfinite(variances.to(dtype)).all(-1)  # representable in the compute dtype
    # The data are centred, so the mixture's second moment per feature is the data's.
    second_moment = (weights.unsqueeze(-1) * (variances + means.square())).sum(1, keepdim=True)
    ok = ok & (variances >= MIN_RELATIVE_VARIANCE * second_moment).all(-1)
    return MixtureParameters(weights, means, covariances, precisions_cholesky), ok
