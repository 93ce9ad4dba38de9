"""The EM loop over a batch of restarts.

Every iteration advances all restarts still running with one E-step pass over
the data and one M-step. The only host synchronisation per iteration is the
copy of the new lower bounds and factorisation flags needed to decide which
restarts have converged, failed, or go on. Converged restarts keep their
parameters. A component whose covariance cannot be factorised is repaired
within its restart (:mod:`torchgmm.repair`); a restart whose statistics are
not finite is dropped without affecting the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from torchgmm.covariance import CovarianceType
from torchgmm.data import DataSource
from torchgmm.em import MixtureParameters, e_step, m_step
from torchgmm.repair import Repair, RepairState, repair

__all__ = ["EMResult", "run_em"]


@dataclass
class EMResult:
    """What :func:`run_em` found, for every restart.

    Attributes
    ----------
    params : MixtureParameters
        Final parameters of all ``R`` restarts (placeholders for failed ones).
    lower_bound : list of float
        Final lower bound per restart (``-inf`` for failed restarts).
    lower_bounds : list of list of float
        Lower bound after each iteration, per restart.
    n_iter : list of int
        Iterations run per restart.
    converged : list of bool
    failed : list of bool
        True where the statistics were not finite or a covariance could not be repaired.
    repairs : list of list of Repair
        Every repair of every restart (see :mod:`torchgmm.repair`), initialisation included.
    """

    params: MixtureParameters
    lower_bound: list[float]
    lower_bounds: list[list[float]]
    n_iter: list[int]
    converged: list[bool]
    failed: list[bool]
    repairs: list[list[Repair]]

    def best(self) -> int | None:
        """Index of the restart with the highest lower bound (first on ties), or None if all failed."""
        candidates = [r for r in range(len(self.failed)) if not self.failed[r]]
        if not candidates:
            return None
        return max(candidates, key=lambda r: (self.lower_bound[r], -r))


def run_em(
    data: DataSource,
    params: MixtureParameters,
    covariance: CovarianceType,
    *,
    tol: float,
    reg_covar: float,
    max_iter: int,
    ok: Tensor | None = None,
    lower_bound: float = -math.inf,
    rows: int | None = None,
    verbose: int = 0,
    verbose_interval: int = 10,
    callback: Callable[[int, int, float], None] | None = None,
    repairs: RepairState | None = None,
) -> EMResult:
    """Run EM on ``R`` restarts at once until each converges, fails or hits ``max_iter``.

    Parameters
    ----------
    data : DataSource
        Centred data source (see :class:`~torchgmm.data.DataSource`).
    params : MixtureParameters
        Initial parameters of ``R`` restarts, in the data's coordinates and dtype.
    covariance : CovarianceType
    tol : float
        A restart has converged when its lower bound (mean log-likelihood per
        row) changes by less than ``tol`` in one iteration.
    reg_covar : float
        Added to the covariance diagonals in every M-step.
    max_iter : int
        Most iterations per restart (0 keeps the initial parameters).
    ok : Tensor of shape (R,), bool, optional
        Restarts whose initialisation already failed.
    lower_bound : float
        Lower bound the first change is measured from (a warm start's last bound).
    rows : int, optional
        Rows per chunk; chosen from the shapes when None.
    verbose, verbose_interval : int
        Print progress every ``verbose_interval`` iterations when ``verbose > 0``.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, n_running,
        best_lower_bound)``, with values already on the host.
    repairs : RepairState, optional
        Per-covariance ``reg_covar`` and repairs so far (from the
        initialisation); a fresh one at ``reg_covar`` when None. Updated in place.
    """
    R, K = params.means.shape[:2]
    n_samples = data.n_samples
    device = params.weights.device
    failed = [False] * R if ok is None else [not bool(v) for v in ok.tolist()]
    bound = [-math.inf if f else lower_bound for f in failed]
    history: list[list[float]] = [[] for _ in range(R)]
    n_iter = [0] * R
    converged = [False] * R
    active = [r for r in range(R) if not failed[r]]
    state = repairs or RepairState.start(R, K, covariance, reg_covar, device)
    dtype = params.weights.dtype
    just_repaired: set[int] = set()
    start_time = time.perf_counter()
    if verbose:
        print(f"EM on {len(active)} of {R} restarts, {n_samples} rows, device {device}, {params.weights.dtype}")

    for iteration in range(1, max_iter + 1):
        if not active:
            break
        index = torch.tensor(active, device=device)
        current = params if len(active) == R else params.select(index)
        stats = e_step(data, current, covariance, rows)
        new, new_ok = m_step(stats, current.means, covariance, state.reg_covar.index_select(0, index), dtype)
        # The bound is the mean log-likelihood of the parameters before this M-step.
        new_bound = stats.log_likelihood / n_samples
        host_bound, host_ok = torch.stack([new_bound, new_ok.all(-1).to(new_bound.dtype)]).tolist()
        repaired_before = [len(state.events[r]) for r in active]
        if not all(host_ok):
            new, fixed = repair(stats, current.means, covariance, new, new_ok, state, index, dtype, iteration)
            host_ok = fixed.tolist()
        host_ok = [ok and math.isfinite(b) for ok, b in zip(host_ok, host_bound, strict=True)]
        previously_repaired, just_repaired = (
            just_repaired,
            {r for j, r in enumerate(active) if len(state.events[r]) > repaired_before[j]},
        )

        good = [j for j, flag in enumerate(host_ok) if flag]
        if good:
            keep = torch.tensor(good, device=device)
            params = params.replace(index.index_select(0, keep), new.select(keep))
        still_active = []
        largest_change = 0.0
        for j, r in enumerate(active):
            if not host_ok[j]:
                failed[r] = True
                bound[r] = -math.inf
                continue
            change = host_bound[j] - bound[r]
            bound[r] = host_bound[j]
            history[r].append(host_bound[j])
            n_iter[r] = iteration
            largest_change = max(largest_change, abs(change))
            # a change measured across a repair says nothing about convergence
            if abs(change) < tol and r not in previously_repaired and r not in just_repaired:
                converged[r] = True
            else:
                still_active.append(r)
        active = still_active
        if callback is not None:
            live = [bound[r] for r in range(R) if not failed[r]]
            callback(iteration, len(active), max(live) if live else -math.inf)
        if verbose and iteration % verbose_interval == 0:
            live = [bound[r] for r in range(R) if not failed[r]]
            best = max(live) if live else -math.inf
            print(
                f"  Iteration {iteration}\t running {len(active)}\t best lower bound {best:.6f}"
                f"\t largest change {largest_change:.3e}"
                + (f"\t time {time.perf_counter() - start_time:.3f}s" if verbose > 1 else "")
            )

    if verbose:
        n_repaired = sum(1 for events in state.events if events)
        print(
            f"EM done: {sum(converged)} converged, {sum(failed)} failed, {n_repaired} repaired, "
            f"{R - sum(converged) - sum(failed)} stopped at max_iter, "
            f"time {time.perf_counter() - start_time:.3f}s"
        )
    return EMResult(params, bound, history, n_iter, converged, failed, state.events)
