"""The EM maths as small functions over batched tensors: densities, responsibilities, statistics, M-step.

Owns the values that flow through the engine (:class:`MixtureParameters` of ``R`` restarts, and
:class:`Statistics`, sums over rows that add across chunks and processes) and the pure functions between them:
log-densities and responsibilities of a block of rows, sufficient statistics from responsibilities, and the
M-step solved from statistics (with the checks that say which covariances failed). Must not: read data, size or
loop over chunks, synchronise with the host, talk to other processes, or repair anything (see
:mod:`torchgmm.passes` and :mod:`torchgmm.mstep`).

Shapes: rows ``X [N, D]`` (one block), restarts ``R``, components ``K``: ``weights [R, K]``,
``means [R, K, D]``, covariances and their precision Cholesky factors as in :mod:`torchgmm.covariance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm._math import logsumexp
from torchgmm.covariance import CovarianceType

__all__ = [
    "MixtureParameters",
    "Statistics",
    "estimate_log_gaussian_prob",
    "estimate_log_prob_resp",
    "sufficient_statistics",
    "solve_m_step",
    "ACCUMULATE_DTYPE",
    "MIN_RELATIVE_VARIANCE",
]

# Statistics are accumulated, and M-steps solved, in float64: a few [R, K, D, D]
# tensors cost nothing next to a pass over the data, and float32 sums over
# millions of rows would lose digits.
ACCUMULATE_DTYPE = torch.float64

# A variance below this fraction of the data's second moment in its feature (a
# standard deviation below 1e-6 of the data's) counts as degenerate: with the
# means folded into the products, a density costs about eps |mu|^2 / var nats
# of rounding, too much even in float64.
MIN_RELATIVE_VARIANCE = 1e-12


@dataclass
class MixtureParameters:
    """Parameters of ``R`` mixtures at once (one per restart).

    Attributes
    ----------
    weights : Tensor of shape (R, K)
    means : Tensor of shape (R, K, D)
    covariances : Tensor
        ``[R, K, D, D]`` full, ``[R, 1, D, D]`` tied, ``[R, K, D]`` diag, ``[R, K]`` spherical.
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

    def to(self, dtype: torch.dtype) -> Statistics:
        """Every tensor in ``dtype``."""
        return Statistics(*(t.to(dtype) for t in self))

    @classmethod
    def zeros(
        cls, covariance: CovarianceType, R: int, K: int, D: int, dtype: torch.dtype, device: torch.device
    ) -> Statistics:
        """Zero statistics: ``log_likelihood`` in float64 (bounds must resolve changes far below float32's
        rounding of a sum over many rows), the others in ``dtype``."""
        shapes = ((R,), (R, K), (R, K, D), (R, *covariance.scatter_shape(K, D)))
        dtypes = (ACCUMULATE_DTYPE, dtype, dtype, dtype)
        return cls(*(torch.zeros(shape, dtype=t, device=device) for shape, t in zip(shapes, dtypes, strict=True)))


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


def solve_m_step(
    stats: Statistics,
    centre: Tensor,
    covariance: CovarianceType,
    reg_covar: float | Tensor,
    dtype: torch.dtype,
) -> tuple[MixtureParameters, Tensor]:
    """New parameters (float64) from statistics taken about ``centre [R, K, D]``, and which covariances failed.

    Follows scikit-learn: ``nk`` gets ``10 * eps`` so empty components stay
    finite, ``reg_covar`` is added to the covariance diagonals, and the weights
    are ``nk / sum(nk)``.

    Parameters
    ----------
    reg_covar : float or Tensor of shape (R, K)
        One value, or one per covariance (``(R, 1)`` when tied).
    dtype : torch.dtype
        The compute dtype: a covariance singular to its precision counts as failed.

    Returns
    -------
    params : MixtureParameters
        In float64.
    ok : Tensor of shape (R, K), bool
        ``(R, 1)`` when tied. False for covariances that could not be factorised
        (see :meth:`CovarianceType.factorise`), with a variance below
        :data:`MIN_RELATIVE_VARIANCE` of the data's second moment in its
        feature, or with means that are not finite; their parameters are finite
        placeholders (see :mod:`torchgmm.mstep`).
    """
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
