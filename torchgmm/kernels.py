"""Fused E-step kernels: one chunk of rows in, its log-likelihood and sufficient statistics added into sums.

Owns, per covariance type, the fastest exact way to turn a chunk into statistics: what to precompute once per
pass from the parameters (a typed ``Prepared`` value), the per-chunk work (densities, responsibilities and
moments, with no ``[n, K]`` or ``[R, K, n, D]`` tensor kept beyond the chunk), how the sums map back to
statistics about the current means once the chunks are summed, and the size of its largest temporary per row
(to size chunks). Must not: choose chunk sizes, loop over chunks, flush or all-reduce sums (that is
:mod:`torchgmm.passes`), or solve M-steps.

A kernel's contract: ``prepare(weights, means, precisions_cholesky, beta=None)`` once per pass, in the compute
dtype (``beta [R, 1, 1]``: responsibilities proportional to ``(w p(x))^beta``, the deterministic annealing of
:mod:`torchgmm.trainer`, while the log-likelihood stays the untempered one);
``accumulate(X, prepared, into, weights=None)`` per chunk (``weights [n]``: row weights, each row counting as
that many copies), adding into ``into`` (a :class:`~torchgmm.em.Statistics` of buffers: ``log_likelihood [R]``
float64, the others in the compute dtype, ``s2`` in the kernel's own coordinates);
``finish(total, means, precisions_cholesky)`` once, in float64, giving ``s1`` and ``s2`` about the means.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm._math import normalise_, sqrt_, tempered_
from torchgmm.covariance import LOG_2PI, CovarianceType, pad_ones
from torchgmm.em import Statistics

__all__ = [
    "FLUSH_ROWS",
    "Kernel",
    "WhitenedKernel",
    "ExpandedKernel",
    "PreparedWhitened",
    "PreparedExpanded",
    "kernel_for",
]

# Rows a kernel's float32 sums cover at most before they are added into float64 (by the pass, or by the
# fused kernel's segments), so that long passes keep float64-like accuracy.
FLUSH_ROWS = 1 << 16


class PreparedWhitened(NamedTuple):
    """Per-pass constants of :class:`WhitenedKernel`.

    Attributes
    ----------
    whiten : Tensor of shape (R, K, D + 1, D)
        ``[[P], [-mu P]]``: ``[x, 1]`` times it is the whitened residual ``(x - mu) P``.
    constant : Tensor of shape (R, 1, K)
        ``log w + log det P - D/2 log 2 pi``.
    means : Tensor of shape (R, K, D)
    beta : Tensor of shape (R, 1, 1), optional
        Inverse temperature of each restart's responsibilities (annealing); None: 1, plain EM.
    """

    whiten: Tensor
    constant: Tensor
    means: Tensor
    beta: Tensor | None = None


class PreparedExpanded(NamedTuple):
    """Per-pass constants of :class:`ExpandedKernel`.

    Attributes
    ----------
    density : Tensor of shape (R, F, K)
        ``features(x) @ density`` is the weighted log-density (see ``_Diag.density_weights``).
    beta : Tensor of shape (R, 1, 1), optional
        Inverse temperature of each restart's responsibilities (annealing); None: 1, plain EM.
    """

    density: Tensor
    beta: Tensor | None = None


class Kernel:
    """The E-step of one chunk for one covariance type (see the module docstring for the contract)."""

    def __init__(self, covariance: CovarianceType) -> None:
        self.covariance = covariance

    def elements_per_row(self, n_restarts: int, n_components: int, n_features: int) -> int:
        """Size of the largest per-row temporary of :meth:`accumulate`, to size chunks."""
        raise NotImplementedError

    def prepare(
        self, weights: Tensor, means: Tensor, precisions_cholesky: Tensor, beta: Tensor | None = None
    ) -> NamedTuple:
        raise NotImplementedError

    def accumulate(self, X: Tensor, prepared: NamedTuple, into: Statistics, weights: Tensor | None = None) -> None:
        raise NotImplementedError

    def finish(self, total: Statistics, means: Tensor, precisions_cholesky: Tensor) -> Statistics:
        raise NotImplementedError


class WhitenedKernel(Kernel):
    """Full and tied covariances: the whitened residuals of a chunk, used for densities and then the scatter.

    One batched product writes ``Y = (x - mu) P``, ``[R, K, n, D]``, contiguous per component. Its squared
    norms give the densities; scaled by ``sqrt(r)`` in place it gives the scatter in whitened coordinates,
    accumulated by the matrix product itself: exactly centred on the current means and well scaled, so float32
    loses nothing to cancellation. A tied scatter sums over components (its buffer has one).
    """

    def elements_per_row(self, n_restarts, n_components, n_features):
        # whitened residuals and weighted centred rows, [R, K, n, D] each
        return n_restarts * n_components * n_features

    def prepare(self, weights, means, precisions_cholesky, beta=None) -> PreparedWhitened:
        D = means.shape[-1]
        whiten = self.covariance.whitening(means, precisions_cholesky)  # the means folded in as a bias row
        log_det = torch.log(torch.diagonal(whiten[..., :D, :], dim1=-2, dim2=-1)).sum(-1)  # [R, K], also tied
        constant = (-0.5 * D * LOG_2PI + log_det + torch.log(weights)).unsqueeze(-2)  # [R, 1, K]
        return PreparedWhitened(whiten, constant, means, beta)

    def accumulate(self, X, prepared: PreparedWhitened, into, weights=None):
        means = prepared.means
        whiten = prepared.whiten
        R, K, F, D = whiten.shape
        # bmm of the rows broadcast over R * K (stride 0), not matmul, which copies them R * K times first
        Y = torch.bmm(pad_ones(X).expand(R * K, -1, -1), whiten.reshape(R * K, F, D)).view(R, K, -1, D)
        log_prob = torch.add(prepared.constant, torch.linalg.vector_norm(Y, dim=-1).square_().mT, alpha=-0.5)
        log_prob_norm, resp = _responsibilities(log_prob, prepared.beta, weights)  # [R, n, K]
        into.log_likelihood.add_(log_prob_norm.sum(-1, dtype=into.log_likelihood.dtype))
        nk = resp.sum(1)
        into.nk.add_(nk)
        into.s1.add_(resp.mT @ X).sub_(nk.unsqueeze(-1) * means)
        Y.mul_(sqrt_(resp).mT.unsqueeze(-1))
        # out += Y^T Y per covariance (summed over components when tied), accumulated by the product itself
        out = into.s2
        groups = R * out.shape[1]
        rows = Y.view(groups, -1, D)
        torch.baddbmm(out.view(groups, D, D), rows.mT, rows, out=out.view(groups, D, D))

    def finish(self, total, means, precisions_cholesky):
        # x - mu = y P^-1, so the whitened scatter maps back as P^-T s2 P^-1.
        P = precisions_cholesky.to(total.s2.dtype)
        eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
        P_inv = torch.linalg.solve_triangular(P, eye.expand_as(P), upper=True)
        return total._replace(s2=P_inv.mT @ total.s2 @ P_inv)


class ExpandedKernel(Kernel):
    """Diag and spherical covariances: one product for the densities and one for every moment.

    ``features(x) = [q(x), x, 1]`` times the folded density weights gives the weighted log-densities;
    ``resp^T features(x) = [sum r q(x), sum r x, n_k]`` gives every moment at once. The raw moments are centred
    on the means once per pass, in float64 (:meth:`finish`).
    """

    def elements_per_row(self, n_restarts, n_components, n_features):
        # densities, responsibilities and their scratch, [R, n, K] each, and the features
        return 3 * n_restarts * n_components + 2 * n_features + 1

    def prepare(self, weights, means, precisions_cholesky, beta=None) -> PreparedExpanded:
        return PreparedExpanded(self.covariance.density_weights(means, precisions_cholesky, torch.log(weights)), beta)

    def accumulate(self, X, prepared: PreparedExpanded, into, weights=None):
        features = self.covariance.features(X)
        log_prob_norm, resp = _responsibilities(features @ prepared.density, prepared.beta, weights)  # [R, n, K]
        moments = resp.mT @ features  # [R, K, F]
        D = X.shape[-1]
        into.log_likelihood.add_(log_prob_norm.sum(-1, dtype=into.log_likelihood.dtype))
        into.nk.add_(moments[..., -1])
        into.s1.add_(moments[..., -1 - D : -1])
        into.s2.add_(moments[..., : -1 - D])

    def finish(self, total, means, precisions_cholesky):
        # sum r (x - mu)^2 = sum r q(x) - 2 mu sum r x + n_k mu^2, per feature (diag) or summed (spherical)
        covariance = self.covariance
        nk, s1, s2 = total.nk, total.s1, total.s2
        means = means.to(s1.dtype)
        centred_s2 = s2 - 2.0 * covariance.squares_pair(means, s1) + nk.unsqueeze(-1) * covariance.squares(means)
        return total._replace(s1=s1 - nk.unsqueeze(-1) * means, s2=centred_s2)


def _responsibilities(log_prob: Tensor, beta: Tensor | None, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """The log-likelihood of each row and its responsibilities, tempered by ``beta`` when annealing; both times
    the row weights ``[n]`` when given (a row of weight ``w`` counts as ``w`` copies of it)."""
    log_prob_norm, resp = normalise_(log_prob) if beta is None else tempered_(log_prob, beta)
    if weights is not None:
        w = weights.to(resp.dtype)
        log_prob_norm, resp = log_prob_norm * w, resp.mul_(w.view(1, -1, 1))
    return log_prob_norm, resp


_KERNELS: dict[str, Kernel] = {}


def kernel_for(covariance: CovarianceType) -> Kernel:
    """The fused kernel of ``covariance``'s type."""
    if covariance.name not in _KERNELS:
        cls = WhitenedKernel if covariance.triangular else ExpandedKernel
        _KERNELS[covariance.name] = cls(covariance)
    return _KERNELS[covariance.name]
