"""Stepwise (online) EM: one update of the parameters from one mini-batch.

Owns: the step sizes and the blend of a batch's statistics into the running ones, followed by the M-step with
its repairs. Must not: keep state between calls (the running statistics are the parameters), validate input,
or set attributes (the estimator and the module call it).

Stepwise EM (Cappé and Moulines 2009; Liang and Klein 2009) keeps running
averages of the normalised sufficient statistics,
``s <- (1 - eta_t) s + eta_t s_hat(batch)``, and sets the parameters from them
after every batch. With step sizes ``eta_t = (t + offset) ** -decay`` and
``decay`` in (0.5, 1] it converges to a stationary point of the likelihood.

The running statistics need no storage of their own: with the weights summing
to one, they are the current parameters, ``(pi_k, 0, pi_k (Sigma_k - reg))``
about the current means. Each batch's statistics are taken about those means
too (the E-step of :mod:`torchgmm.em`), so the blend and the M-step are exactly
centred, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torchgmm._validation import check_scalar
from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData
from torchgmm.em import MixtureParameters, Statistics
from torchgmm.mstep import EMPTY_MASS, Fixed, Repair, RepairState, maximise
from torchgmm.passes import e_step

__all__ = ["step_size", "check_step_sizes", "online_em_step"]


def check_step_sizes(decay: float, offset: float) -> None:
    """Raise unless ``decay`` is in (0.5, 1] and ``offset >= 1`` (so every step size is in (0, 1])."""
    check_scalar(decay, "learning_decay", float, high=1.0)
    check_scalar(offset, "learning_offset", float, low=1.0)
    if decay <= 0.5:
        raise ValueError(
            f"'learning_decay' must be in (0.5, 1], got {decay!r}: stepwise EM converges only for such decays."
        )


def step_size(step: int, decay: float, offset: float) -> float:
    """``(step + offset) ** -decay``: the weight of batch number ``step`` (from 0)."""
    return float((step + offset) ** -decay)


def online_em_step(
    data: ScannedData,
    params: MixtureParameters,
    covariance: CovarianceType,
    reg_covar: float,
    eta: float,
    rows: int | None = None,
    step: int = 0,
    fixed: Fixed | None = None,
) -> tuple[MixtureParameters, Tensor, Tensor, list[list[Repair]]]:
    """One stepwise-EM update from the rows of ``data`` (a scanned source).

    Parameters
    ----------
    data : ScannedData
        The mini-batch; ``params`` are in its centred coordinates.
    params : MixtureParameters
        Current parameters, ``[R, ...]``.
    covariance : CovarianceType
    reg_covar : float
    eta : float
        Weight of this batch in (0, 1]; 1 is a full EM step on the batch alone.
    rows : int, optional
        Rows per chunk.
    step : int
        The step's number, recorded in its repairs.
    fixed : Fixed, optional
        Parameters held at their values (``fixed_params``).

    Returns
    -------
    params : MixtureParameters
        Updated parameters, in the dtype of ``params``.
    ok : list of bool
        Per restart: False where the statistics were not finite or a covariance could not be
        repaired (degenerate components are repaired as in EM,
        :mod:`torchgmm.mstep`, with ``reg_covar`` raised for this step only).
    log_likelihood : Tensor of shape (R,)
        Mean log-likelihood of the batch under the parameters before the update.
    repairs : list of list of Repair
        The repairs of this step, per restart.
    """
    stats = e_step(data, params, covariance, rows)  # about params.means, summed over ranks
    n = stats.nk.sum(-1)  # the batch's rows (over all ranks)
    D = params.means.shape[-1]
    weights = params.weights.to(stats.nk.dtype)
    previous = covariance.scatter_from_covariances(weights, params.covariances.to(stats.nk.dtype), reg_covar, D)
    per_row = n.view(-1, *([1] * (stats.s2.dim() - 1)))
    blended = Statistics(
        stats.log_likelihood,
        (1.0 - eta) * weights + eta * stats.nk / n.unsqueeze(-1),
        eta * stats.s1 / n[:, None, None],
        (1.0 - eta) * previous + eta * stats.s2 / per_row,
    )
    dtype = params.means.dtype
    R, K = params.means.shape[:2]
    state = RepairState.start(R, K, covariance, reg_covar, params.means.device)
    restarts = torch.arange(R, device=params.means.device)
    # the blended masses are fractions of a row: empty is half a row of this batch
    # (with row weights: half a row of mean weight, as a fraction of the batch's total weight)
    empty_mass = EMPTY_MASS / n.min() if data.weights is None else EMPTY_MASS / data.n_samples
    result = maximise(
        blended, params.means, covariance, state, restarts, dtype, step, empty_mass=empty_mass, fixed=fixed
    )
    return result.params, result.ok, stats.log_likelihood / n, state.events
