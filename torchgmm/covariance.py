"""Everything that depends on the covariance type, in one place.

Each covariance type is one object that knows, for its own parametrisation:
the shapes, the squared Mahalanobis distances evaluated through the Cholesky
factors of the precisions, the scatter statistic of the M-step, the covariance
estimate from statistics, the Cholesky factorisation (reporting failures per
restart instead of raising), log-determinants and the number of free
parameters. The rest of the package asks these objects and never branches on
the type name.

Shapes use ``R`` restarts, ``K`` components, ``D`` features and ``N`` rows:

============  ======================  ==========================
type          covariances             precisions_cholesky
============  ======================  ==========================
full          ``[R, K, D, D]``        ``[R, K, D, D]`` (upper)
tied          ``[R, D, D]``           ``[R, D, D]`` (upper)
diag          ``[R, K, D]``           ``[R, K, D]``
spherical     ``[R, K]``              ``[R, K]``
============  ======================  ==========================

As in scikit-learn, a precision Cholesky factor ``P`` is upper triangular with
``P @ P.T`` equal to the precision matrix, so that the whitened residual of a
row vector ``x`` is ``(x - mu) @ P``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchgmm._math import normalise_

__all__ = ["CovarianceType", "get_covariance_type", "COVARIANCE_TYPES"]

# A squared Cholesky pivot below this fraction of its diagonal entry (a feature whose variance given the others is
# that small a part of its own) is singular to the working precision: rounding in the statistics, about eps times
# the diagonal, perturbs that conditional variance by eps / fraction relative, and its log and inverse carry the
# perturbation into the densities, which then jitter from one pass to the next (by about a nat at 10 eps, 2e-4
# nats at 1e-12 in float64). max(100 eps, 1e-10) keeps the jitter near 1e-6 nats per such direction.
PIVOT_EPS = 100.0
MIN_PIVOT = 1e-10


def pivot_rtol(dtype: torch.dtype) -> float:
    """Smallest squared Cholesky pivot, relative to its diagonal entry, of a usable covariance in ``dtype``."""
    return max(PIVOT_EPS * torch.finfo(dtype).eps, MIN_PIVOT)


def _eye_like(matrix: Tensor) -> Tensor:
    return torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)


def _flip(matrix: Tensor) -> Tensor:
    return matrix.flip(-2, -1)


def _cholesky_precision(covariances: Tensor, rtol: float = 0.0) -> tuple[Tensor, Tensor]:
    """Upper-triangular ``P`` with ``P P^T = covariances^-1``, per matrix.

    Returns the factors and a boolean mask (over the batch) of the matrices
    that factorised with every pivot at least ``rtol`` times its diagonal
    entry (below that the matrix is singular to the working precision, and
    its whitened residuals would be rounding noise). The factors of the others
    are replaced by identities so that no NaN leaks into later arithmetic.
    """
    lower, info = torch.linalg.cholesky_ex(covariances)
    pivots = torch.diagonal(lower, dim1=-2, dim2=-1).square()
    ok = (info == 0) & torch.isfinite(lower).all(dim=(-2, -1))
    ok = ok & (pivots >= rtol * torch.diagonal(covariances, dim1=-2, dim2=-1)).all(-1)
    lower = torch.where(ok[..., None, None], lower, _eye_like(covariances))
    precisions_cholesky = torch.linalg.solve_triangular(lower, _eye_like(covariances).expand_as(lower), upper=False).mT
    return precisions_cholesky, ok


def _per_feature(reg_covar: float | Tensor) -> float | Tensor:
    """A per-covariance ``reg_covar [R, K]`` as a column that broadcasts over features."""
    return reg_covar.unsqueeze(-1) if isinstance(reg_covar, Tensor) else reg_covar


def _pad_ones(X: Tensor) -> Tensor:
    """``[X, 1]``: rows with a trailing one, to fold a bias into a matrix product."""
    return torch.nn.functional.pad(X, (0, 1), value=1.0)


class CovarianceType:
    """Base of the four covariance parametrisations.

    Subclasses implement every method; the base only documents the contract.
    """

    name: str = ""
    #: One covariance per component; False when all components share one (tied).
    per_component: bool = True

    def n_covariances(self, n_components: int) -> int:
        """Number of covariance matrices (or vectors) per restart: ``K``, or 1 when tied."""
        return n_components if self.per_component else 1

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of one restart's covariances (scikit-learn's ``covariances_``)."""
        raise NotImplementedError

    def scatter_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of one restart's scatter statistic ``s2``."""
        return self.shape(n_components, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of the covariances alone."""
        raise NotImplementedError

    def mahalanobis(self, X: Tensor, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """Squared Mahalanobis distances ``[R, N, K]`` of rows ``X [N, D]``."""
        raise NotImplementedError

    def elements_per_row(self, n_restarts: int, n_components: int, n_features: int) -> int:
        """Size of the largest per-row temporary of an E-step, to size chunks."""
        return 3 * n_restarts * n_components + n_features

    def log_prob(self, X: Tensor, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """``log N(x | mu_k, Sigma_k)`` for rows ``X [N, D]``: ``[R, N, K]``."""
        maha = self.mahalanobis(X, means, precisions_cholesky)
        return self._log_density(maha, precisions_cholesky, X.shape[-1])

    def _log_density(self, maha: Tensor, precisions_cholesky: Tensor, n_features: int) -> Tensor:
        log_det = self.log_det(precisions_cholesky, n_features).unsqueeze(-2)
        return -0.5 * (n_features * LOG_2PI + maha) + log_det

    def statistics(self, X: Tensor, resp: Tensor, centre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(nk [R, K], s1 [R, K, D], s2)`` of rows ``X [N, D]`` with ``resp [R, N, K]``, about ``centre``."""
        nk = resp.sum(1)
        s1 = resp.mT @ X - nk.unsqueeze(-1) * centre
        return nk, s1, self.scatter(X, resp, centre)

    def prepare(self, weights: Tensor, means: Tensor, precisions_cholesky: Tensor) -> dict[str, Tensor]:
        """Per-iteration constants of :meth:`accumulate`, computed once per pass."""
        return {"log_weights": torch.log(weights), "means": means, "precisions_cholesky": precisions_cholesky}

    def accumulate(self, X: Tensor, prepared: dict[str, Tensor], acc: list[Tensor]) -> None:
        """E-step on one chunk, added in place into ``acc = [log p(x) sum [R], nk, s1, s2]``.

        ``acc[0]`` is float64 (the lower bound must resolve changes far below
        float32's rounding of a sum over many rows); the others are in the
        compute dtype.

        ``prepared`` comes from :meth:`prepare`. ``s1`` and ``s2`` are about the
        means, ``s2`` possibly in a type-specific coordinate system that
        :meth:`finish_statistics` maps back once the chunks have been summed.
        """
        means = prepared["means"]
        log_prob = self.log_prob(X, means, prepared["precisions_cholesky"])
        log_prob_norm, resp = normalise_(log_prob.add_(prepared["log_weights"].unsqueeze(-2)))
        for total, part in zip(
            acc, (log_prob_norm.sum(-1, dtype=acc[0].dtype), *self.statistics(X, resp, means)), strict=True
        ):
            total.add_(part)

    def finish_statistics(
        self, nk: Tensor, s1: Tensor, s2: Tensor, means: Tensor, precisions_cholesky: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Summed chunk statistics ``(s1, s2)`` about the ``means`` of the pass, in data coordinates.

        Identity by default; types whose :meth:`accumulate` sums something else
        (whitened or raw moments) map it back here, once per pass, in float64.
        """
        return s1, s2

    def log_det(self, precisions_cholesky: Tensor, n_features: int) -> Tensor:
        """``log det P`` per component, ``[R, K]`` (``[R, 1]`` when tied)."""
        raise NotImplementedError

    def scatter(self, X: Tensor, resp: Tensor, centre: Tensor) -> Tensor:
        """Weighted scatter of ``X [N, D]`` about ``centre [R, K, D]``.

        ``resp`` is ``[R, N, K]``. Full: ``sum_n r (x - c)(x - c)^T`` ``[R, K, D, D]``;
        tied: the same summed over components ``[R, D, D]``; diag and spherical:
        the diagonal ``[R, K, D]``.
        """
        raise NotImplementedError

    def covariances(self, nk: Tensor, shift: Tensor, scatter: Tensor, reg_covar: float | Tensor) -> Tensor:
        """M-step covariances from statistics centred on the previous means.

        ``nk [R, K]`` are the (regularised) component masses, ``shift = s1 / nk``
        ``[R, K, D]`` the move of each mean away from the centre, and
        ``scatter`` the output of :meth:`scatter`. ``reg_covar`` is added to the
        diagonals: one number, or one per covariance, ``[R, K]`` (``[R, 1]`` tied). Centring on the previous
        means keeps ``scatter / nk - shift shift^T`` free of the catastrophic
        cancellation of ``E[x x^T] - mu mu^T`` in float32.
        """
        raise NotImplementedError

    def scatter_from_covariances(self, nk: Tensor, covariances: Tensor, reg_covar: float, n_features: int) -> Tensor:
        """The scatter about the means that :meth:`covariances` turns into ``covariances`` (its inverse)."""
        raise NotImplementedError

    def factorise(self, covariances: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Factor the covariances; returns ``(precisions_cholesky, ok [R, K])`` (``[R, 1]`` tied).

        ``ok`` is False for a covariance that is not positive definite, not
        finite, singular to the precision of ``dtype`` (the compute dtype; by
        default that of ``covariances``), or whose factor does not fit in
        ``dtype``. Its factor is a finite placeholder.
        """
        raise NotImplementedError

    def precisions_cholesky(self, covariances: Tensor) -> tuple[Tensor, Tensor]:
        """Factor the covariances; returns ``(precisions_cholesky, ok [R])``, one flag per restart."""
        precisions_cholesky, ok = self.factorise(covariances)
        return precisions_cholesky, ok.all(-1)

    def variances(self, covariances: Tensor, n_features: int) -> Tensor:
        """Each covariance's diagonal, ``[R, K, D]`` (``[R, 1, D]`` when tied)."""
        raise NotImplementedError

    def principal_axis(self, covariance: Tensor, n_features: int) -> Tensor:
        """Direction of largest variance of one covariance (no batch axes), one standard deviation long: ``[D]``."""
        raise NotImplementedError

    def precisions(self, precisions_cholesky: Tensor) -> Tensor:
        """Precision matrices (or vectors) from their Cholesky factors."""
        raise NotImplementedError

    def precisions_cholesky_from_precisions(self, precisions: Tensor) -> Tensor:
        """Upper Cholesky factors of given (validated) precisions."""
        raise NotImplementedError

    def covariances_from_precisions_cholesky(self, precisions_cholesky: Tensor) -> Tensor:
        """Covariances from precision Cholesky factors."""
        raise NotImplementedError

    def colour(self, z: Tensor, precisions_cholesky: Tensor, component: int) -> Tensor:
        """Turn standard normal draws ``z [n, D]`` into draws with one component's covariance.

        ``precisions_cholesky`` is one restart's factors (no ``R`` axis).
        """
        raise NotImplementedError

    def check_precisions(self, precisions: Tensor) -> None:
        """Raise ``ValueError`` unless the given precisions are valid."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"CovarianceType({self.name!r})"


class _Full(CovarianceType):
    name = "full"

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def mahalanobis(self, X, means, precisions_cholesky):
        Y = _pad_ones(X) @ self._whitening(means, precisions_cholesky)
        return torch.linalg.vector_norm(Y, dim=-1).square().mT  # out of place: differentiable

    def _whitening(self, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """``[[P], [-mu P]]``, ``[R, K, D + 1, D]``: ``[x, 1]`` times it is ``(x - mu) P``."""
        P = precisions_cholesky.expand(*means.shape, means.shape[-1])
        return torch.cat([P, -(means.unsqueeze(-2) @ P)], dim=-2)

    def elements_per_row(self, n_restarts, n_components, n_features):
        # whitened residuals and weighted centred rows, [R, K, n, D] each
        return n_restarts * n_components * n_features

    def log_det(self, precisions_cholesky, n_features):
        return torch.log(torch.diagonal(precisions_cholesky, dim1=-2, dim2=-1)).sum(-1)

    def prepare(self, weights, means, precisions_cholesky):
        D = means.shape[-1]
        whiten = self._whitening(means, precisions_cholesky)  # the means folded in as a bias row
        log_det = torch.log(torch.diagonal(whiten[..., :D, :], dim1=-2, dim2=-1)).sum(-1)  # [R, K], also tied
        constant = (-0.5 * D * LOG_2PI + log_det + torch.log(weights)).unsqueeze(-2)  # [R, 1, K]
        return {"whiten": whiten, "constant": constant, "means": means}

    def accumulate(self, X, prepared, acc):
        # One batched product writes the whitened residuals y = (x - mu) P, [R, K, n, D],
        # contiguous per component. They give the densities and then, scaled by sqrt(r)
        # in place, the scatter in whitened coordinates: exactly centred on the current
        # means and well scaled, so float32 loses nothing to cancellation.
        means = prepared["means"]
        R, K, D = means.shape
        Y = _pad_ones(X) @ prepared["whiten"]
        log_prob = torch.add(prepared["constant"], torch.linalg.vector_norm(Y, dim=-1).square_().mT, alpha=-0.5)
        log_prob_norm, resp = normalise_(log_prob)  # [R, n, K]
        acc[0].add_(log_prob_norm.sum(-1, dtype=acc[0].dtype))
        nk = resp.sum(1)
        acc[1].add_(nk)
        acc[2].add_(resp.mT @ X).sub_(nk.unsqueeze(-1) * means)
        Y.mul_(resp.sqrt_().mT.unsqueeze(-1))
        self._add_scatter(Y, acc[3])

    def _add_scatter(self, Y: Tensor, out: Tensor) -> None:
        """``out += Y^T Y`` per component, accumulated by the matrix product itself."""
        R, K, n, D = Y.shape
        torch.baddbmm(out.view(R * K, D, D), Y.view(R * K, n, D).mT, Y.view(R * K, n, D), out=out.view(R * K, D, D))

    def scatter(self, X, resp, centre):
        # sqrt(r) (x - c) for every (restart, component): [R, K, N, D]; X^T diag(r) X
        # per component as one batched product, exactly centred.
        W = (X - centre.unsqueeze(-2)) * resp.mT.sqrt().unsqueeze(-1)
        return W.mT @ W

    def finish_statistics(self, nk, s1, s2, means, precisions_cholesky):
        # x - mu = y P^-1, so the whitened scatter maps back as P^-T s2 P^-1.
        P = precisions_cholesky.to(s2.dtype)
        P_inv = torch.linalg.solve_triangular(P, _eye_like(P).expand_as(P), upper=True)
        return s1, P_inv.mT @ s2 @ P_inv

    def covariances(self, nk, shift, scatter, reg_covar):
        cov = scatter / nk[..., None, None] - shift.unsqueeze(-1) * shift.unsqueeze(-2)
        cov.diagonal(dim1=-2, dim2=-1).add_(_per_feature(reg_covar))
        return cov

    def scatter_from_covariances(self, nk, covariances, reg_covar, n_features):
        scatter = covariances.clone()
        scatter.diagonal(dim1=-2, dim2=-1).sub_(reg_covar)
        return scatter * self._mass(nk)

    def _mass(self, nk: Tensor) -> Tensor:
        return nk[..., None, None]

    def factorise(self, covariances, dtype=None):
        dtype = dtype or covariances.dtype
        P, ok = _cholesky_precision(covariances, pivot_rtol(dtype))
        ok = ok & torch.isfinite(P.to(dtype)).all(dim=(-2, -1))
        return P, ok.view(*ok.shape[:1], -1)

    def variances(self, covariances, n_features):
        variances = torch.diagonal(covariances, dim1=-2, dim2=-1)
        return variances.view(variances.shape[0], -1, n_features)

    def principal_axis(self, covariance, n_features):
        values, vectors = torch.linalg.eigh(covariance)
        return vectors[:, -1] * values[-1].clamp_min(0.0).sqrt()

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.mT

    def precisions_cholesky_from_precisions(self, precisions):
        # The upper factor of A is the flip of the lower factor of flip(A).
        return _flip(torch.linalg.cholesky(_flip(precisions)))

    def covariances_from_precisions_cholesky(self, precisions_cholesky):
        # cov = (P P^T)^-1 = P^-T P^-1
        inv = torch.linalg.solve_triangular(
            precisions_cholesky, _eye_like(precisions_cholesky).expand_as(precisions_cholesky), upper=True
        )
        return inv.mT @ inv

    def colour(self, z, precisions_cholesky, component):
        # x P = z  =>  x = z P^-1, whose covariance is P^-T P^-1.
        return torch.linalg.solve_triangular(precisions_cholesky[component], z, upper=True, left=False)

    def check_precisions(self, precisions):
        for k in range(precisions.shape[0]):
            _check_spd(precisions[k], self.name)


class _Tied(_Full):
    name = "tied"
    per_component = False

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def _whitening(self, means, precisions_cholesky):
        return super()._whitening(means, precisions_cholesky.unsqueeze(1))

    def log_det(self, precisions_cholesky, n_features):
        return super().log_det(precisions_cholesky, n_features).unsqueeze(-1)

    def _add_scatter(self, Y, out):
        R, K, n, D = Y.shape
        Y = Y.view(R, K * n, D)
        torch.baddbmm(out, Y.mT, Y, out=out)

    def scatter(self, X, resp, centre):
        W = (X - centre.unsqueeze(-2)) * resp.mT.sqrt().unsqueeze(-1)
        W = W.flatten(1, 2)
        return W.mT @ W

    def _mass(self, nk):
        return nk.sum(-1)[..., None, None]

    def covariances(self, nk, shift, scatter, reg_covar):
        between = (nk[..., None, None] * shift.unsqueeze(-1) * shift.unsqueeze(-2)).sum(1)
        cov = (scatter - between) / nk.sum(-1)[:, None, None]
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)  # one number, or [R, 1]
        return cov

    def colour(self, z, precisions_cholesky, component):
        return torch.linalg.solve_triangular(precisions_cholesky, z, upper=True, left=False)

    def check_precisions(self, precisions):
        _check_spd(precisions, self.name)


class _Diag(CovarianceType):
    name = "diag"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def _squares(self, X: Tensor) -> Tensor:
        """The quadratic features whose precision-weighted sum is ``x^T diag(p) x``: ``x^2``."""
        return X * X

    def _features(self, X: Tensor) -> Tensor:
        """``[q(x), x, 1]``, ``[N, F]``: one product with it gives densities, another all moments."""
        return torch.cat([self._squares(X), X, torch.ones_like(X[:, :1])], dim=-1)

    def _density_weights(self, means: Tensor, precisions_cholesky: Tensor, log_weights: Tensor) -> Tensor:
        """``[[-p/2], [p mu], [c]]``, ``[R, F, K]``: ``_features(x)`` times it is the weighted log-density.

        ``-|x - mu|^2_p / 2 = -x^T p x / 2 + x^T p mu - mu^T p mu / 2``, the expansion
        scikit-learn uses for these types; ``c`` gathers every constant.
        """
        D = means.shape[-1]
        precisions = precisions_cholesky**2  # [R, K, D] or [R, K]
        linear = means * (precisions if precisions.shape == means.shape else precisions.unsqueeze(-1))
        squares = precisions if precisions.shape == means.shape else precisions.unsqueeze(-1)
        constant = (
            -0.5 * (linear * means).sum(-1) - 0.5 * D * LOG_2PI + self.log_det(precisions_cholesky, D) + log_weights
        )
        return torch.cat([-0.5 * squares, linear, constant.unsqueeze(-1)], dim=-1).mT

    def mahalanobis(self, X, means, precisions_cholesky):
        D = means.shape[-1]
        constant = -0.5 * D * LOG_2PI + self.log_det(precisions_cholesky, D)
        log_prob = self.log_prob(X, means, precisions_cholesky)
        return (-2.0 * (log_prob - constant.unsqueeze(-2))).clamp_min_(0.0)

    def log_prob(self, X, means, precisions_cholesky):
        weights = self._density_weights(means, precisions_cholesky, torch.zeros_like(means[..., 0]))
        return self._features(X) @ weights

    def elements_per_row(self, n_restarts, n_components, n_features):
        # densities, responsibilities and their scratch, [R, n, K] each, and the features
        return 3 * n_restarts * n_components + 2 * n_features + 1

    def prepare(self, weights, means, precisions_cholesky):
        return {"density": self._density_weights(means, precisions_cholesky, torch.log(weights))}

    def accumulate(self, X, prepared, acc):
        # One product for the weighted log-densities and one for every moment:
        # resp^T [q(x), x, 1] = [sum r q(x), sum r x, n_k]. The raw moments are centred
        # on the means once per pass, in float64 (finish_statistics).
        features = self._features(X)
        log_prob_norm, resp = normalise_(features @ prepared["density"])  # [R, n, K]
        moments = resp.mT @ features  # [R, K, F]
        D = X.shape[-1]
        acc[0].add_(log_prob_norm.sum(-1, dtype=acc[0].dtype))
        acc[1].add_(moments[..., -1])
        acc[2].add_(moments[..., -1 - D : -1])
        acc[3].add_(moments[..., : -1 - D])

    def finish_statistics(self, nk, s1, s2, means, precisions_cholesky):
        # sum r (x - mu)^2 = sum r q(x) - 2 mu sum r x + n_k mu^2, per feature (diag) or summed (spherical)
        means = means.to(s1.dtype)
        centred_s2 = s2 - 2.0 * self._squares_pair(means, s1) + nk.unsqueeze(-1) * self._squares(means)
        return s1 - nk.unsqueeze(-1) * means, centred_s2

    def _squares_pair(self, means: Tensor, s1: Tensor) -> Tensor:
        """``mu * s1`` summed as :meth:`_squares` sums (per feature for diag)."""
        return means * s1

    def log_det(self, precisions_cholesky, n_features):
        return torch.log(precisions_cholesky).sum(-1)

    def scatter(self, X, resp, centre):
        rT = resp.mT  # [R, K, N]
        nk = resp.sum(1).unsqueeze(-1)
        rx = rT @ X
        return rT @ (X * X) - 2.0 * centre * rx + nk * centre * centre

    def covariances(self, nk, shift, scatter, reg_covar):
        # Rounding in the moments can put a (nearly) empty component's variance a
        # hair below zero; the true value never is.
        return (scatter / nk.unsqueeze(-1) - shift * shift).clamp_min_(0.0) + _per_feature(reg_covar)

    def scatter_from_covariances(self, nk, covariances, reg_covar, n_features):
        return (covariances - reg_covar) * nk.unsqueeze(-1)

    def factorise(self, covariances, dtype=None):
        dtype = dtype or covariances.dtype
        # a positive variance is its own pivot; it must also have a finite precision in dtype
        ok = (covariances > 0) & torch.isfinite(covariances) & torch.isfinite(torch.rsqrt(covariances).to(dtype))
        ok = self._per_covariance(ok)
        safe = torch.where(ok.view(*ok.shape, *([1] * (covariances.dim() - ok.dim()))), covariances, 1.0)
        return torch.rsqrt(safe), ok

    def _per_covariance(self, elementwise: Tensor) -> Tensor:
        return elementwise.all(-1)

    def variances(self, covariances, n_features):
        return covariances

    def principal_axis(self, covariance, n_features):
        axis = torch.zeros_like(covariance)
        largest = covariance.argmax()
        axis[largest] = covariance[largest].clamp_min(0.0).sqrt()
        return axis

    def precisions(self, precisions_cholesky):
        return precisions_cholesky**2

    def precisions_cholesky_from_precisions(self, precisions):
        return torch.sqrt(precisions)

    def covariances_from_precisions_cholesky(self, precisions_cholesky):
        return 1.0 / precisions_cholesky**2

    def colour(self, z, precisions_cholesky, component):
        return z / precisions_cholesky[component]

    def check_precisions(self, precisions):
        if bool((precisions <= 0).any()):
            raise ValueError(f"'{self.name} precision' should be positive")


class _Spherical(_Diag):
    name = "spherical"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def scatter_shape(self, n_components, n_features):
        return (n_components, 1)  # sum r |x - c|^2, averaged over features in the M-step

    def _squares(self, X):
        return (X * X).sum(-1, keepdim=True)

    def _squares_pair(self, means, s1):
        return (means * s1).sum(-1, keepdim=True)

    def log_det(self, precisions_cholesky, n_features):
        return n_features * torch.log(precisions_cholesky)

    def scatter(self, X, resp, centre):
        return super().scatter(X, resp, centre).sum(-1, keepdim=True)

    def covariances(self, nk, shift, scatter, reg_covar):
        D = shift.shape[-1]
        variance = (scatter / nk.unsqueeze(-1) - (shift * shift).sum(-1, keepdim=True)).squeeze(-1) / D
        return variance.clamp_min_(0.0) + reg_covar

    def scatter_from_covariances(self, nk, covariances, reg_covar, n_features):
        return ((covariances - reg_covar) * nk * n_features).unsqueeze(-1)

    def _per_covariance(self, elementwise):
        return elementwise

    def variances(self, covariances, n_features):
        return covariances.unsqueeze(-1).expand(*covariances.shape, n_features)

    def principal_axis(self, covariance, n_features):
        # every direction has the same variance: take the diagonal one
        return (
            torch.full((n_features,), 1.0 / math.sqrt(n_features), dtype=covariance.dtype, device=covariance.device)
            * covariance.clamp_min(0.0).sqrt()
        )


def _check_spd(precision: Tensor, name: str) -> None:
    symmetric = torch.allclose(precision, precision.mT, rtol=1e-5, atol=1e-8)
    if not symmetric or not bool((torch.linalg.eigvalsh(precision) > 0).all()):
        raise ValueError(f"'{name} precision' should be symmetric, positive-definite")


COVARIANCE_TYPES: dict[str, CovarianceType] = {c.name: c for c in (_Full(), _Tied(), _Diag(), _Spherical())}


def get_covariance_type(name: str) -> CovarianceType:
    """The :class:`CovarianceType` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``'full'``, ``'tied'``, ``'diag'``, ``'spherical'``.
    """
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid value for 'covariance_type': {name!r}. It must be one of {sorted(COVARIANCE_TYPES)}."
        ) from None


LOG_2PI = math.log(2.0 * math.pi)
