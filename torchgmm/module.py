"""A Gaussian mixture as a ``torch.nn.Module``: densities, posteriors and samples for deep-learning code.

Owns :class:`GaussianMixtureModule` (parameters as buffers or learnable parametrised tensors, in
scikit-learn's shapes) and its checks of inputs and parameters. Must not: fit by batch EM (its
``partial_fit`` calls :func:`torchgmm.online.online_em_step`), nor branch on the covariance type's name.

:class:`GaussianMixtureModule` holds one mixture (weights ``[K]``, means
``[K, D]`` and precision Cholesky factors) as buffers, or as learnable
parameters through :mod:`torch.nn.utils.parametrize`: the weights as a softmax
of free logits, and each precision factor as an upper-triangular matrix (or a
vector) whose diagonal is ``softplus(free) + floor``, so no optimiser step can
make a covariance indefinite. Every method is differentiable with respect to
the input and, when learnable, to the parameters; it follows the module's
device and dtype (``.to(...)``), and :meth:`partial_fit` runs stepwise EM on
mini-batches.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from torchgmm._validation import check_sample_weight, check_scalar, fixed_parameter_names
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import MixtureParameters
from torchgmm.exceptions import DegenerateComponentWarning
from torchgmm.mstep import Fixed, summary
from torchgmm.online import check_step_sizes, online_em_step, step_size

__all__ = ["GaussianMixtureModule"]


def _floor(dtype: torch.dtype) -> float:
    # The smallest allowed diagonal of a precision factor: a variance up to about 1e38
    # (float32), far beyond any data, yet never zero.
    return math.sqrt(torch.finfo(dtype).tiny)


def _inverse_softplus(y: Tensor) -> Tensor:
    # softplus(x) = log(1 + e^x)  =>  x = y + log(1 - e^-y), stable for small and large y
    return y + torch.log(-torch.expm1(-y))


class _Simplex(nn.Module):
    """Weights as the softmax of free logits."""

    def forward(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=-1)

    def right_inverse(self, weights: Tensor) -> Tensor:
        return torch.log(weights)


class _Positive(nn.Module):
    """Diagonal or spherical precision factors: ``softplus(free) + floor``."""

    def forward(self, free: Tensor) -> Tensor:
        return nn.functional.softplus(free) + _floor(free.dtype)

    def right_inverse(self, value: Tensor) -> Tensor:
        return _inverse_softplus((value - _floor(value.dtype)).clamp_min(torch.finfo(value.dtype).tiny))


class _PositiveUpperTriangular(nn.Module):
    """Full or tied precision factors: upper triangular with a ``softplus(free) + floor`` diagonal."""

    def forward(self, free: Tensor) -> Tensor:
        diagonal = nn.functional.softplus(torch.diagonal(free, dim1=-2, dim2=-1)) + _floor(free.dtype)
        return torch.triu(free, diagonal=1) + torch.diag_embed(diagonal)

    def right_inverse(self, value: Tensor) -> Tensor:
        diagonal = torch.diagonal(value, dim1=-2, dim2=-1) - _floor(value.dtype)
        free = _inverse_softplus(diagonal.clamp_min(torch.finfo(value.dtype).tiny))
        return torch.triu(value, diagonal=1) + torch.diag_embed(free)


class GaussianMixtureModule(nn.Module):
    """A fitted (or hand-made) Gaussian mixture as a differentiable torch module.

    Parameters
    ----------
    weights : Tensor of shape (K,)
        Mixture weights, positive, summing to one.
    means : Tensor of shape (K, D)
    precisions_cholesky : Tensor
        Upper Cholesky factors ``P`` of the precisions (``precision = P P^T``),
        as scikit-learn's ``precisions_cholesky_``: ``(K, D, D)`` full,
        ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)`` spherical.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    learnable : bool, default=False
        Register the parameters as ``nn.Parameter`` under a valid
        parametrisation (softmax logits, positive-diagonal triangular factors),
        so an optimiser can train them; otherwise they are buffers.
    reg_covar : float, default=1e-6
        Added to covariance diagonals by :meth:`partial_fit`.
    learning_decay, learning_offset : float, default=0.7 and 2.0
        Step sizes of :meth:`partial_fit`: batch ``t`` (from 0) gets weight
        ``(t + learning_offset) ** -learning_decay``.
    check_finite : bool, default=True
        Raise on NaN or infinite input. Costs one device-to-host sync per call;
        skipped while compiling with ``torch.compile``.
    fixed_params : sequence of str or str, default=()
        Parameters :meth:`partial_fit` holds at their current values (``'weights'``, ``'means'``,
        ``'covariances'``, or their letters ``'wmc'``); the others follow the constrained M-step, as in
        :class:`~torchgmm.GaussianMixture`.

    Examples
    --------
    >>> import torch
    >>> from torchgmm import GaussianMixtureModule
    >>> gmm = GaussianMixtureModule.from_covariances(
    ...     torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.eye(2).expand(2, 2, 2)
    ... )
    >>> gmm.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    >>> gmm.posterior(torch.tensor([[-2.0, 0.0]])).argmax(-1)
    tensor([0])
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        precisions_cholesky: Tensor,
        covariance_type: str = "full",
        *,
        learnable: bool = False,
        reg_covar: float = 1e-6,
        learning_decay: float = 0.7,
        learning_offset: float = 2.0,
        check_finite: bool = True,
        fixed_params: Any = (),
    ) -> None:
        super().__init__()
        self.covariance_type = covariance_type
        self._covariance = get_covariance_type(covariance_type)
        weights, means, precisions_cholesky = _check_parameters(self._covariance, weights, means, precisions_cholesky)
        check_step_sizes(learning_decay, learning_offset)
        check_scalar(reg_covar, "reg_covar", float, low=0)
        self.learnable = bool(learnable)
        self.reg_covar = float(reg_covar)
        self.learning_decay = float(learning_decay)
        self.learning_offset = float(learning_offset)
        self.check_finite = bool(check_finite)
        self.fixed_params = fixed_parameter_names(fixed_params)
        for name, value in (("weights", weights), ("means", means), ("precisions_cholesky", precisions_cholesky)):
            if self.learnable:
                setattr(self, name, nn.Parameter(value.clone()))
            else:
                self.register_buffer(name, value.clone())
        if self.learnable:
            parametrize.register_parametrization(self, "weights", _Simplex())
            factor = _PositiveUpperTriangular() if self._covariance.triangular else _Positive()
            parametrize.register_parametrization(self, "precisions_cholesky", factor)
        self.register_buffer("n_steps", torch.zeros((), dtype=torch.long, device=means.device))

    @classmethod
    def from_covariances(
        cls, weights: Tensor, means: Tensor, covariances: Tensor, covariance_type: str = "full", **kwargs: Any
    ) -> GaussianMixtureModule:
        """Build the module from covariances (shapes as ``precisions_cholesky``) instead of precision factors.

        Raises
        ------
        ValueError
            If a covariance is not symmetric positive definite.
        """
        covariance = get_covariance_type(covariance_type)
        covariances, means_t = _float_tensor("covariances", covariances), _float_tensor("means", means)
        if means_t.dim() == 2:  # (otherwise the constructor names the problem)
            K, D = means_t.shape
            expected = covariance.shape(K, D)
            if tuple(covariances.shape) != expected:
                raise ValueError(
                    f"covariances must have shape {expected} for {covariance.name} covariances with {K} components "
                    f"and {D} features, got {tuple(covariances.shape)}."
                )
        P, ok = covariance.factorise(covariance.from_sklearn(covariances).unsqueeze(0))
        if not bool(ok.all()):
            raise ValueError(f"The {covariance_type} covariances must be symmetric positive definite.")
        return cls(weights, means, covariance.to_sklearn(P.squeeze(0)), covariance_type, **kwargs)

    # ------------------------------------------------------------------ shapes

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def extra_repr(self) -> str:
        return (
            f"n_components={self.n_components}, n_features={self.n_features}, "
            f"covariance_type={self.covariance_type!r}, learnable={self.learnable}"
        )

    # ------------------------------------------------------------------ densities

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected a torch.Tensor of shape (..., {self.n_features}), got {type(x).__name__}.")
        if not x.is_floating_point():
            raise TypeError(
                f"Expected a real floating-point tensor, got dtype {x.dtype}; convert it with x.float() or x.double()."
            )
        if x.dim() == 0 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"Expected input of shape (..., {self.n_features}) for a mixture of {self.n_features} features, "
                f"got shape {tuple(x.shape)}."
            )
        if x.device != self.means.device:
            raise ValueError(
                f"Input is on {x.device} but the mixture is on {self.means.device}; move one with .to(device)."
            )
        if self.check_finite and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
            bad = (~torch.isfinite(x)).nonzero()[0].tolist()
            raise ValueError(f"Input of shape {tuple(x.shape)} contains NaN or infinity (first at index {tuple(bad)}).")
        return x.to(self.means.dtype)

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x | mu_k, Sigma_k)`` for every component: ``[..., K]`` for ``x [..., D]``."""
        x = self._check_input(x)
        batch = x.shape[:-1]
        weights, means = self.weights, self.means
        # Centre on the mixture mean (no gradient: the densities do not depend on it), so
        # products like x P - mu P do not cancel when the data sit far from the origin.
        centre = (weights.detach().unsqueeze(-1) * means.detach()).sum(0)
        log_prob = self._covariance.log_prob(
            x.reshape(-1, self.n_features) - centre,
            (means - centre).unsqueeze(0),
            self._covariance.from_sklearn(self.precisions_cholesky).unsqueeze(0),
        )[0]
        return (log_prob + torch.log(weights)).reshape(*batch, self.n_components)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the mixture at each row: ``[...]`` for ``x [..., D]``."""
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def posterior(self, x: Tensor) -> Tensor:
        """Responsibilities ``p(k | x)``: ``[..., K]``, rows summing to one."""
        return torch.softmax(self.component_log_prob(x), dim=-1)

    def predict(self, x: Tensor) -> Tensor:
        """Most likely component of each row: ``[...]``, int64."""
        return self.component_log_prob(x).argmax(-1)

    # ------------------------------------------------------------------ distributions and samples

    def scale_tril(self) -> Tensor:
        """Lower Cholesky factors ``L`` of the covariances (``Sigma = L L^T``), ``[K, D, D]``."""
        K, D = self.n_components, self.n_features
        P = self._covariance.from_sklearn(self.precisions_cholesky)
        return self._covariance.scale_tril(P, D).expand(K, D, D)

    def to_distribution(self) -> torch.distributions.MixtureSameFamily:
        """The mixture as ``MixtureSameFamily(Categorical, MultivariateNormal(scale_tril=...))``."""
        D = torch.distributions
        components = D.MultivariateNormal(self.means, scale_tril=self.scale_tril())
        return D.MixtureSameFamily(D.Categorical(probs=self.weights), components)

    def sample(self, n_samples: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n_samples`` rows: returns ``(x [n, D], labels [n])``, rows in random order.

        Differentiable with respect to the means and covariances (reparametrised);
        the labels are drawn from the weights.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
        n_samples = int(n_samples)
        weights, means = self.weights, self.means
        labels = torch.multinomial(weights.detach(), n_samples, replacement=True, generator=generator)
        z = torch.randn(n_samples, self.n_features, generator=generator, dtype=means.dtype, device=means.device)
        L = self.scale_tril()
        return means[labels] + (L[labels] @ z.unsqueeze(-1)).squeeze(-1), labels

    # ------------------------------------------------------------------ online EM

    @torch.no_grad()
    def partial_fit(self, x: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """One stepwise-EM update from the mini-batch ``x [n, D]``; returns its mean log-likelihood.

        ``sample_weight [n]`` (non-negative): each row counts as that many copies of it; the returned mean is
        then per unit of weight.

        The log-likelihood is under the parameters before the update. Under
        ``torch.distributed`` the batch statistics are summed over ranks, so
        every rank must call it together.

        Raises
        ------
        ValueError
            If the update makes a covariance impossible to factorise (the
            parameters are then left unchanged): raise ``reg_covar``.
        """
        x = self._check_input(x)
        if x.dim() != 2:
            raise ValueError(f"partial_fit expects a batch of shape (n, {self.n_features}), got {tuple(x.shape)}.")
        if x.shape[0] == 0:
            raise ValueError(f"partial_fit needs at least one row, got a batch of shape {tuple(x.shape)}.")
        data = scanned(x.detach())
        if sample_weight is not None:
            data = data.with_weights(check_sample_weight(sample_weight, x.shape[0], positive=True), collective=False)
        shift = data.shift.to(self.means.dtype)
        covariance = self._covariance
        P = covariance.from_sklearn(self.precisions_cholesky.detach()).unsqueeze(0)
        params = MixtureParameters(
            self.weights.detach().unsqueeze(0),
            (self.means.detach() - shift).unsqueeze(0),
            covariance.covariances_from_precisions_cholesky(P),
            P,
        )
        eta = step_size(int(self.n_steps), self.learning_decay, self.learning_offset)
        fixed = Fixed.of(params, self.fixed_params)
        new, ok, log_likelihood, repairs = online_em_step(
            data, params, covariance, self.reg_covar, eta, step=int(self.n_steps), fixed=fixed
        )
        if not all(ok):
            raise ValueError(
                "The online EM step gave non-finite statistics or a covariance that could not be repaired; "
                f"the module is unchanged. Scale the input data or increase reg_covar (now {self.reg_covar})."
            )
        if repairs[0]:
            warnings.warn(
                f"Degenerate components were repaired in this step ({summary(repairs[0])}). "
                "A larger reg_covar avoids them.",
                DegenerateComponentWarning,
                stacklevel=2,
            )
        # held parameters keep their tensors' values exactly (not recomputed through the centred coordinates)
        if "weights" not in self.fixed_params:
            self._assign("weights", new.weights[0])
        if "means" not in self.fixed_params:
            self._assign("means", new.means[0] + shift)
        if "covariances" not in self.fixed_params:
            self._assign("precisions_cholesky", covariance.to_sklearn(new.precisions_cholesky[0]))
        self.n_steps += 1
        return log_likelihood[0].to(self.means.dtype)

    def _assign(self, name: str, value: Tensor) -> None:
        if parametrize.is_parametrized(self, name):
            setattr(self, name, value)  # through the parametrisation's right_inverse
        else:
            getattr(self, name).copy_(value)


def _float_tensor(name: str, value: Any) -> Tensor:
    """``value`` as a detached floating-point tensor; ``TypeError`` naming ``name`` otherwise."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [""])[0]
        kind = type(value).__name__
        raise TypeError(
            f"{name} must be a floating-point tensor, got a {kind} that torch cannot convert ({reason})."
        ) from None
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}.")
    return tensor.detach()


def _check_parameters(covariance, weights: Any, means: Any, precisions_cholesky: Any) -> tuple[Tensor, Tensor, Tensor]:
    weights, means, P = (
        _float_tensor(name, value)
        for name, value in (("weights", weights), ("means", means), ("precisions_cholesky", precisions_cholesky))
    )
    if means.dim() != 2:
        raise ValueError(f"means must have shape (n_components, n_features), got {tuple(means.shape)}.")
    K, D = means.shape
    if weights.shape != (K,):
        raise ValueError(f"weights must have shape ({K},) for {K} components, got {tuple(weights.shape)}.")
    expected = covariance.shape(K, D)
    if tuple(P.shape) != expected:
        raise ValueError(
            f"precisions_cholesky must have shape {expected} for {covariance.name} covariances with {K} components "
            f"and {D} features, got {tuple(P.shape)}."
        )
    dtype = means.dtype
    weights, P = weights.to(means.device, dtype), P.to(means.device, dtype)
    if not bool(torch.isfinite(weights).all() & torch.isfinite(means).all() & torch.isfinite(P).all()):
        raise ValueError("weights, means and precisions_cholesky must be finite.")
    if bool((weights <= 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-5:
        raise ValueError(f"weights must be positive and sum to 1, got sum {float(weights.sum()):.6g}.")
    diagonal = torch.diagonal(P, dim1=-2, dim2=-1) if covariance.triangular else P
    if bool((diagonal <= 0).any()):
        raise ValueError("precisions_cholesky must have a positive diagonal.")
    if covariance.triangular and not torch.allclose(P, torch.triu(P)):
        raise ValueError("precisions_cholesky must be upper triangular (scikit-learn's precisions_cholesky_).")
    return weights, means, P
