"""A fitted mixture as one value: parameters, bounds, convergence and repairs, and the conversions it needs.

Owns :class:`FittedMixture`, the result of every fit and online update, and the one schema of fitted
attributes (:data:`FITTED_ATTRIBUTES`, scikit-learn's names): the attribute values an estimator exposes
(outputs following the input's kind and device), the plain dict a model file stores, the engine's batch of
one restart for predictions, and the torch module. Must not: fit, read data or files, or validate user input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchgmm._validation import as_tensor, output_like
from torchgmm.covariance import CovarianceType, get_covariance_type
from torchgmm.em import MixtureParameters
from torchgmm.module import GaussianMixtureModule
from torchgmm.mstep import Repair
from torchgmm.persistence import plain
from torchgmm.smem import Round

__all__ = ["FITTED_ATTRIBUTES", "FittedMixture", "mixture_parameters", "to_module"]

# Every attribute a fit sets, in scikit-learn's names; a failed fit sets none of them.
FITTED_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "lower_bounds_",
    "init_lower_bounds_",
    "init_converged_",
    "init_lower_bounds_history_",
    "init_stopped_early_",
    "split_merge_rounds_",
    "repairs_",
    "init_repairs_",
    "n_features_in_",
)


@dataclass(frozen=True)
class FittedMixture:
    """One fitted mixture (the kept restart) and how the fit went.

    Attributes
    ----------
    covariance_type : str
    weights : Tensor of shape (K,)
    means : Tensor of shape (K, D)
    covariances, precisions, precisions_cholesky : Tensor
        In scikit-learn's shapes: ``(K, D, D)`` full, ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)`` spherical.
    converged : bool
    n_iter : int
    lower_bound : float
    lower_bounds : list of float
        The kept restart's bound after each iteration.
    init_lower_bounds : list of float
        Every restart's final bound (``-inf`` where it failed).
    init_converged : list of bool
    init_lower_bounds_history : list of list of float
    repairs : list of Repair
        The kept restart's repairs.
    init_repairs : list of list of Repair
        Every restart's.
    init_stopped_early : list of bool
        Restarts a race stopped before they converged (``strategy='race'``).
    split_merge_rounds : list of Round
        Each round of split-and-merge moves after EM (``strategy='split-merge'``), kept or not.
    """

    covariance_type: str
    weights: Tensor
    means: Tensor
    covariances: Tensor
    precisions: Tensor
    precisions_cholesky: Tensor
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list[float]
    init_lower_bounds: list[float]
    init_converged: list[bool]
    init_lower_bounds_history: list[list[float]]
    repairs: list[Repair]
    init_repairs: list[list[Repair]]
    init_stopped_early: list[bool] = dataclasses.field(default_factory=list)
    split_merge_rounds: list[Round] = dataclasses.field(default_factory=list)

    @property
    def covariance(self) -> CovarianceType:
        return get_covariance_type(self.covariance_type)

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    def replace(self, **changes: Any) -> FittedMixture:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------------- attributes
    def attributes(self, like: Any) -> dict[str, Any]:
        """Every fitted attribute's value (:data:`FITTED_ATTRIBUTES`, in order), arrays in the kind of ``like``
        (NumPy, or tensors on its device)."""
        values = {
            "weights_": output_like(self.weights, like),
            "means_": output_like(self.means, like),
            "covariances_": output_like(self.covariances, like),
            "precisions_cholesky_": output_like(self.precisions_cholesky, like),
            "precisions_": output_like(self.precisions, like),
            "converged_": bool(self.converged),
            "n_iter_": int(self.n_iter),
            "lower_bound_": float(self.lower_bound),
            "lower_bounds_": list(self.lower_bounds),
            "init_lower_bounds_": np.asarray(self.init_lower_bounds, dtype=np.float64),
            "init_converged_": np.asarray(self.init_converged, dtype=bool),
            "init_lower_bounds_history_": [list(h) for h in self.init_lower_bounds_history],
            "init_stopped_early_": np.asarray(
                self.init_stopped_early or [False] * len(self.init_lower_bounds), dtype=bool
            ),
            "split_merge_rounds_": list(self.split_merge_rounds),
            "repairs_": list(self.repairs),
            "init_repairs_": [list(restart) for restart in self.init_repairs],
            "n_features_in_": self.n_features,
        }
        return {name: values[name] for name in FITTED_ATTRIBUTES}

    @classmethod
    def from_attributes(cls, owner: Any, covariance_type: str) -> FittedMixture:
        """The value whose :meth:`attributes` ``owner`` holds (an estimator, fitted or loaded)."""

        def tensor(name: str) -> Tensor:
            return as_tensor(getattr(owner, name))

        return cls(
            covariance_type=covariance_type,
            weights=tensor("weights_"),
            means=tensor("means_"),
            covariances=tensor("covariances_"),
            precisions=tensor("precisions_"),
            precisions_cholesky=tensor("precisions_cholesky_"),
            converged=bool(owner.converged_),
            n_iter=int(owner.n_iter_),
            lower_bound=float(owner.lower_bound_),
            lower_bounds=list(owner.lower_bounds_),
            init_lower_bounds=[float(v) for v in np.asarray(owner.init_lower_bounds_)],
            init_converged=[bool(v) for v in np.asarray(owner.init_converged_)],
            init_lower_bounds_history=[list(h) for h in getattr(owner, "init_lower_bounds_history_", [])],
            repairs=list(getattr(owner, "repairs_", [])),
            init_repairs=[list(r) for r in getattr(owner, "init_repairs_", [])],
            init_stopped_early=[bool(v) for v in np.asarray(getattr(owner, "init_stopped_early_", []))],
            split_merge_rounds=list(getattr(owner, "split_merge_rounds_", [])),
        )

    # -------------------------------------------------------------------------------------- model files
    def to_plain(self) -> dict[str, Any]:
        """The fitted attributes as plain values (a model file's ``fitted`` entry): arrays as CPU tensors."""
        values = self.attributes(np.empty(0))
        return {name: plain(values[name]) for name in FITTED_ATTRIBUTES}

    @classmethod
    def from_plain(cls, content: dict[str, Any], covariance_type: str) -> FittedMixture:
        """The inverse of :meth:`to_plain` (also reads files written before repairs were recorded)."""
        return cls(
            covariance_type=covariance_type,
            weights=content["weights_"],
            means=content["means_"],
            covariances=content["covariances_"],
            precisions=content["precisions_"],
            precisions_cholesky=content["precisions_cholesky_"],
            converged=content["converged_"],
            n_iter=content["n_iter_"],
            lower_bound=content["lower_bound_"],
            lower_bounds=content["lower_bounds_"],
            init_lower_bounds=content["init_lower_bounds_"].tolist(),
            init_converged=content["init_converged_"].tolist(),
            init_lower_bounds_history=content["init_lower_bounds_history_"],
            repairs=[Repair(*r) for r in content.get("repairs_", [])],
            init_repairs=[[Repair(*r) for r in events] for events in content.get("init_repairs_", [])],
            # files written before races were added have none
            init_stopped_early=[bool(v) for v in content.get("init_stopped_early_", torch.zeros(0)).tolist()],
            # and files written before split-and-merge none of these
            split_merge_rounds=[
                Round((int(i), int(j)), int(k), float(b), float(a), bool(kept), int(cost))
                for (i, j), k, b, a, kept, cost in content.get("split_merge_rounds_", [])
            ],
        )

    # ------------------------------------------------------------------------------------------ uses
    def parameters(
        self, device: torch.device, dtype: torch.dtype, shift: Tensor | None = None
    ) -> tuple[MixtureParameters, Tensor]:
        """The engine's batch of one restart; see :func:`mixture_parameters`."""
        return mixture_parameters(
            self.weights, self.means, self.covariances, self.precisions_cholesky, self.covariance, device, dtype, shift
        )

    def sample(
        self, n_samples: int, device: torch.device, dtype: torch.dtype, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``n_samples`` draws ``[n, D]`` on ``device`` in ``dtype``, grouped by component in component order,
        and their labels ``[n]``."""
        covariance = self.covariance
        params, shift = self.parameters(device, dtype)
        params = params.map(lambda t: t.squeeze(0))
        K, D = params.means.shape
        labels = torch.multinomial(params.weights, n_samples, replacement=True, generator=generator)
        counts = torch.bincount(labels, minlength=K).tolist()
        parts = []
        for k, count in enumerate(counts):
            if count:
                z = torch.randn(count, D, generator=generator, device=device, dtype=dtype)
                offset = (params.means[k].to(torch.float64) + shift).to(dtype)
                parts.append(offset + covariance.colour(z, params.precisions_cholesky, k))
        y = torch.repeat_interleave(torch.arange(K, device=device), torch.tensor(counts, device=device))
        return torch.cat(parts), y

    def to_module(self, device: torch.device, **kwargs: Any) -> GaussianMixtureModule:
        """The mixture as a torch module on ``device``; see :func:`to_module`."""
        return to_module(self.weights, self.means, self.precisions_cholesky, self.covariance_type, device, **kwargs)


def to_module(
    weights: Any, means: Any, precisions_cholesky: Any, covariance_type: str, device: torch.device, **kwargs: Any
) -> GaussianMixtureModule:
    """Fitted attributes as a :class:`~torchgmm.module.GaussianMixtureModule` on ``device``, in the means' dtype
    (keyword arguments are the module's)."""
    means = as_tensor(means).to(device)
    return GaussianMixtureModule(
        as_tensor(weights).to(device),
        means,
        as_tensor(precisions_cholesky).to(device, means.dtype),
        covariance_type,
        **kwargs,
    )


def mixture_parameters(
    weights: Any,
    means: Any,
    covariances: Any,
    precisions_cholesky: Any,
    covariance: CovarianceType,
    device: torch.device,
    dtype: torch.dtype,
    shift: Tensor | None = None,
) -> tuple[MixtureParameters, Tensor]:
    """Fitted attributes (scikit-learn's shapes) as the engine's batch of one restart, means centred on ``shift``.

    ``shift`` (float64, ``[D]``) defaults to the mixture mean, a stand-in for the data mean that the model
    alone gives. Returns ``(params, shift)``.
    """

    def get(value: Any, to_dtype: torch.dtype = dtype) -> Tensor:
        return as_tensor(value).to(device, to_dtype).unsqueeze(0)

    weights64, means64 = get(weights, torch.float64), get(means, torch.float64)
    if shift is None:
        shift = (weights64.unsqueeze(-1) * means64).sum(1).squeeze(0)
    params = MixtureParameters(
        weights64.to(dtype),
        (means64 - shift).to(dtype),
        covariance.from_sklearn(get(covariances)),
        covariance.from_sklearn(get(precisions_cholesky)),
    )
    return params, shift
