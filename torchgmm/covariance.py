"""The four covariance parametrisations: the maths of one component's covariance, per type.

Owns, for each type: its shapes, log-densities evaluated through the Cholesky factors of the precisions,
log-determinants, the M-step covariance from sufficient statistics, the factorisation (which reports failures
per covariance instead of raising), conversions between covariances, precisions and their factors, and the
number of free parameters. Must not: read data, loop over chunks, accumulate across chunks (that is
:mod:`torchgmm.kernels` and :mod:`torchgmm.passes`), repair anything, or know about restarts beyond a leading
batch axis. Code elsewhere asks these objects and never branches on the type's name.

Inside the engine every type keeps one axis order, ``R`` restarts then components: a tied covariance has a
component axis of one that broadcasts against ``K``, so it needs no special case.

============  ======================  ============================  ==========================
type          covariances (engine)    precisions_cholesky (engine)  scikit-learn's attributes
============  ======================  ============================  ==========================
full          ``[R, K, D, D]``        ``[R, K, D, D]`` (upper)      ``(K, D, D)``
tied          ``[R, 1, D, D]``        ``[R, 1, D, D]`` (upper)      ``(D, D)``
diag          ``[R, K, D]``           ``[R, K, D]``                 ``(K, D)``
spherical     ``[R, K]``              ``[R, K]``                    ``(K,)``
============  ======================  ============================  ==========================

As in scikit-learn, a precision Cholesky factor ``P`` is upper triangular with ``P @ P.T`` equal to the
precision matrix, so that the whitened residual of a row vector ``x`` is ``(x - mu) @ P``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CovarianceType", "get_covariance_type", "COVARIANCE_TYPES", "LOG_2PI", "pivot_rtol", "pad_ones"]

LOG_2PI = math.log(2.0 * math.pi)

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


def pad_ones(X: Tensor) -> Tensor:
    """``[X, 1]``: rows with a trailing one, to fold a bias into a matrix product."""
    return torch.nn.functional.pad(X, (0, 1), value=1.0)


class CovarianceType:
    """One covariance parametrisation (see the module docstring for shapes and conventions).

    Attributes
    ----------
    name : str
        ``'full'``, ``'tied'``, ``'diag'`` or ``'spherical'``.
    per_component : bool
        One covariance per component; False when all components share one (tied).
    triangular : bool
        The precision factor of a component is an upper-triangular matrix (full, tied); otherwise a vector
        or a number of positive entries (diag, spherical).
    centred_products : bool
        The densities' matrix products act on whitened residuals (full, tied), which reduced-precision
        products (TF32) round harmlessly; the diag and spherical densities expand ``x^2 p - 2 x mu p + mu^2 p``,
        whose cancellation TF32 would turn into noise.
    """

    name: str = ""
    per_component: bool = True
    triangular: bool = False
    centred_products: bool = False

    # ------------------------------------------------------------------------------------------ shapes
    def n_covariances(self, n_components: int) -> int:
        """Covariances per restart in the engine: ``K``, or 1 when tied (the component axis broadcasts)."""
        return n_components if self.per_component else 1

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of one restart's covariances as scikit-learn's ``covariances_``."""
        raise NotImplementedError

    def engine_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of one restart's covariances inside the engine (a component axis of one when tied)."""
        return self.shape(n_components, n_features)

    def to_sklearn(self, tensor: Tensor) -> Tensor:
        """Covariances or factors of one restart (engine shape) in scikit-learn's shape."""
        return tensor

    def from_sklearn(self, tensor: Tensor) -> Tensor:
        """The inverse of :meth:`to_sklearn`."""
        return tensor

    def scatter_shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of one restart's scatter statistic ``s2``."""
        return self.engine_shape(n_components, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free parameters of the covariances alone."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- densities
    def mahalanobis(self, X: Tensor, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """Squared Mahalanobis distances ``[R, N, K]`` of rows ``X [N, D]``."""
        raise NotImplementedError

    def log_det(self, precisions_cholesky: Tensor, n_features: int) -> Tensor:
        """``log det P`` per covariance, ``[R, K]`` (``[R, 1]`` when tied)."""
        raise NotImplementedError

    def log_prob(self, X: Tensor, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """``log N(x | mu_k, Sigma_k)`` for rows ``X [N, D]``: ``[R, N, K]``."""
        maha = self.mahalanobis(X, means, precisions_cholesky)
        log_det = self.log_det(precisions_cholesky, X.shape[-1]).unsqueeze(-2)
        return -0.5 * (X.shape[-1] * LOG_2PI + maha) + log_det

    # ------------------------------------------------------------------------------------------ M-step
    def statistics(self, X: Tensor, resp: Tensor, centre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(nk [R, K], s1 [R, K, D], s2)`` of rows ``X [N, D]`` with ``resp [R, N, K]``, about ``centre``."""
        nk = resp.sum(1)
        s1 = resp.mT @ X - nk.unsqueeze(-1) * centre
        return nk, s1, self.scatter(X, resp, centre)

    def scatter(self, X: Tensor, resp: Tensor, centre: Tensor) -> Tensor:
        """Weighted scatter of ``X [N, D]`` about ``centre [R, K, D]`` (``resp [R, N, K]``): :meth:`scatter_shape`.

        Full: ``sum_n r (x - c)(x - c)^T`` per component; tied: the same summed over components; diag: its
        diagonal; spherical: its trace.
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

    def variances(self, covariances: Tensor, n_features: int) -> Tensor:
        """Each covariance's diagonal, ``[R, K, D]`` (``[R, 1, D]`` when tied)."""
        raise NotImplementedError

    def principal_axis(self, covariance: Tensor, n_features: int) -> Tensor:
        """Direction of largest variance of one covariance (no batch axes), one standard deviation long: ``[D]``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- conversions
    def precisions(self, precisions_cholesky: Tensor) -> Tensor:
        """Precision matrices (or vectors) from their Cholesky factors."""
        raise NotImplementedError

    def precisions_cholesky_from_precisions(self, precisions: Tensor) -> Tensor:
        """Upper Cholesky factors of given (validated) precisions."""
        raise NotImplementedError

    def covariances_from_precisions_cholesky(self, precisions_cholesky: Tensor) -> Tensor:
        """Covariances from precision Cholesky factors."""
        raise NotImplementedError

    def scale_tril(self, precisions_cholesky: Tensor, n_features: int) -> Tensor:
        """Lower Cholesky factors ``L`` of the covariances (``Sigma = L L^T``): ``[..., D, D]``, one per covariance."""
        raise NotImplementedError

    def colour(self, z: Tensor, precisions_cholesky: Tensor, component: int) -> Tensor:
        """Turn standard normal draws ``z [n, D]`` into draws with one component's covariance.

        ``precisions_cholesky`` is one restart's factors (engine shape, no ``R`` axis).
        """
        raise NotImplementedError

    def check_precisions(self, precisions: Tensor, name: str = "precisions_init") -> None:
        """Raise ``ValueError`` unless the given precisions (scikit-learn's shape) are valid.

        The message starts in scikit-learn's words (``'full precision' should be ...``) and then names
        ``name`` and the component at fault.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"CovarianceType({self.name!r})"


class _Full(CovarianceType):
    name = "full"
    triangular = True
    centred_products = True

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def whitening(self, means: Tensor, precisions_cholesky: Tensor) -> Tensor:
        """``[[P], [-mu P]]``, ``[R, K, D + 1, D]``: ``[x, 1]`` times it is ``(x - mu) P``."""
        P = precisions_cholesky.expand(*means.shape, means.shape[-1])
        return torch.cat([P, -(means.unsqueeze(-2) @ P)], dim=-2)

    def mahalanobis(self, X, means, precisions_cholesky):
        Y = pad_ones(X) @ self.whitening(means, precisions_cholesky)
        return torch.linalg.vector_norm(Y, dim=-1).square().mT  # out of place: differentiable

    def log_det(self, precisions_cholesky, n_features):
        return torch.log(torch.diagonal(precisions_cholesky, dim1=-2, dim2=-1)).sum(-1)

    def scatter(self, X, resp, centre):
        # sqrt(r) (x - c) for every (restart, component): [R, K, N, D]; X^T diag(r) X
        # per component as one batched product, exactly centred.
        W = (X - centre.unsqueeze(-2)) * resp.mT.sqrt().unsqueeze(-1)
        return W.mT @ W

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
        return P, ok

    def variances(self, covariances, n_features):
        return torch.diagonal(covariances, dim1=-2, dim2=-1)

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

    def scale_tril(self, precisions_cholesky, n_features):
        # Sigma = (P P^T)^-1 = P^-T P^-1, so L = P^-T (lower, positive diagonal).
        P = precisions_cholesky
        return torch.linalg.solve_triangular(P, _eye_like(P).expand_as(P), upper=True).mT

    def colour(self, z, precisions_cholesky, component):
        # x P = z  =>  x = z P^-1, whose covariance is P^-T P^-1; a tied factor serves every component.
        factor = precisions_cholesky[component if self.per_component else 0]
        return torch.linalg.solve_triangular(factor, z, upper=True, left=False)

    def check_precisions(self, precisions, name="precisions_init"):
        for k in range(precisions.shape[0]):
            _check_spd(precisions[k], self.name, f"{name}[{k}]")


class _Tied(_Full):
    name = "tied"
    per_component = False

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def engine_shape(self, n_components, n_features):
        return (1, n_features, n_features)

    def to_sklearn(self, tensor):
        return tensor.squeeze(-3)

    def from_sklearn(self, tensor):
        return tensor.unsqueeze(-3)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def scatter(self, X, resp, centre):
        W = (X - centre.unsqueeze(-2)) * resp.mT.sqrt().unsqueeze(-1)
        W = W.flatten(1, 2)
        return (W.mT @ W).unsqueeze(1)

    def _mass(self, nk):
        return nk.sum(-1)[..., None, None, None]

    def covariances(self, nk, shift, scatter, reg_covar):
        between = (nk[..., None, None] * shift.unsqueeze(-1) * shift.unsqueeze(-2)).sum(1, keepdim=True)
        cov = (scatter - between) / nk.sum(-1)[:, None, None, None]
        cov.diagonal(dim1=-2, dim2=-1).add_(_per_feature(reg_covar))  # one number, or [R, 1]
        return cov

    def check_precisions(self, precisions, name="precisions_init"):
        _check_spd(precisions, self.name, name)


class _Diag(CovarianceType):
    name = "diag"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def squares(self, X: Tensor) -> Tensor:
        """The quadratic features whose precision-weighted sum is ``x^T diag(p) x``: ``x^2``."""
        return X * X

    def squares_pair(self, means: Tensor, s1: Tensor) -> Tensor:
        """``mu * s1`` summed as :meth:`squares` sums (per feature for diag)."""
        return means * s1

    def features(self, X: Tensor) -> Tensor:
        """``[q(x), x, 1]``, ``[N, F]``: one product with it gives densities, another all moments."""
        return torch.cat([self.squares(X), X, torch.ones_like(X[:, :1])], dim=-1)

    def density_weights(self, means: Tensor, precisions_cholesky: Tensor, log_weights: Tensor) -> Tensor:
        """``[[-p/2], [p mu], [c]]``, ``[R, F, K]``: ``features(x)`` times it is the weighted log-density.

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
        weights = self.density_weights(means, precisions_cholesky, torch.zeros_like(means[..., 0]))
        return self.features(X) @ weights

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

    def scale_tril(self, precisions_cholesky, n_features):
        return torch.diag_embed(1.0 / precisions_cholesky)

    def colour(self, z, precisions_cholesky, component):
        return z / precisions_cholesky[component]

    def check_precisions(self, precisions, name="precisions_init"):
        if bool((precisions <= 0).any()):
            index = tuple((precisions <= 0).nonzero()[0].tolist())
            at = f"{name}[{', '.join(map(str, index))}]"
            raise ValueError(f"'{self.name} precision' should be positive ({at} is {float(precisions[index]):g})")


class _Spherical(_Diag):
    name = "spherical"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def scatter_shape(self, n_components, n_features):
        return (n_components, 1)  # sum r |x - c|^2, averaged over features in the M-step

    def squares(self, X):
        return (X * X).sum(-1, keepdim=True)

    def squares_pair(self, means, s1):
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

    def scale_tril(self, precisions_cholesky, n_features):
        scale = (1.0 / precisions_cholesky).unsqueeze(-1)
        return torch.diag_embed(scale.expand(*precisions_cholesky.shape, n_features))


def _check_spd(precision: Tensor, covariance_type: str, where: str) -> None:
    symmetric = torch.allclose(precision, precision.mT, rtol=1e-5, atol=1e-8)
    if not symmetric or not bool((torch.linalg.eigvalsh(precision) > 0).all()):
        why = "not symmetric" if not symmetric else "not positive definite"
        raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite ({where} is {why})")


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
