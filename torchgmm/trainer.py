"""The EM loop over a batch of restarts.

Every iteration advances all restarts still running with one E-step pass over
the data and one M-step. The only host synchronisation per iteration is the
copy of the new lower bounds and factorisation flags needed to decide which
restarts have converged, failed, or go on. Converged restarts keep their
parameters. A component whose covariance cannot be factorised is repaired
within its restart (:mod:`torchgmm.repair`); a restart whose statistics are
not finite is dropped without affecting the others.

The loop's whole state is an :class:`EMState`: handed to a ``checkpoint``
callback every few iterations (and when the loop is interrupted), and given
back through ``resume``, it continues the fit exactly where it stopped.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from torchgmm.covariance import CovarianceType
from torchgmm.data import DataSource
from torchgmm.em import MixtureParameters, chunk_rows, e_step, m_step
from torchgmm.memory import retry_with_fewer_rows
from torchgmm.repair import Repair, RepairState, repair

__all__ = ["EMState", "run_em"]


@dataclass
class EMState:
    """Everything the EM loop carries from one iteration to the next, for ``R`` restarts; also its result.

    Attributes
    ----------
    params : MixtureParameters
        Current (at the end: final) parameters of every restart; placeholders for failed ones.
    lower_bound : list of float
        Latest lower bound per restart (``-inf`` for failed restarts).
    lower_bounds : list of list of float
        Lower bound after each iteration, per restart.
    n_iter : list of int
        Iterations run per restart.
    converged : list of bool
    failed : list of bool
        True where the statistics were not finite or a covariance could not be repaired.
    repairs : RepairState
        Per-covariance ``reg_covar`` and every repair so far (``repairs.events``, per restart,
        initialisation included; see :mod:`torchgmm.repair`).
    active : list of int
        Restarts still running.
    just_repaired : list of int
        Restarts repaired in the last iteration (their next change does not count for convergence).
    iteration : int
        Iterations completed (0: initialised).
    rows : int or None
        Rows per chunk, once memory ran out with more (None: as :func:`run_em` is asked).
    """

    params: MixtureParameters
    lower_bound: list[float]
    lower_bounds: list[list[float]]
    n_iter: list[int]
    converged: list[bool]
    failed: list[bool]
    repairs: RepairState
    active: list[int]
    just_repaired: list[int] = field(default_factory=list)
    iteration: int = 0
    rows: int | None = None

    @classmethod
    def start(
        cls,
        params: MixtureParameters,
        covariance: CovarianceType,
        reg_covar: float,
        ok: Tensor | None = None,
        lower_bound: float = -math.inf,
        repairs: RepairState | None = None,
    ) -> EMState:
        """The state before the first iteration (see :func:`run_em` for the arguments)."""
        R, K = params.means.shape[:2]
        failed = [False] * R if ok is None else [not bool(v) for v in ok.tolist()]
        return cls(
            params=params,
            lower_bound=[-math.inf if f else lower_bound for f in failed],
            lower_bounds=[[] for _ in range(R)],
            n_iter=[0] * R,
            converged=[False] * R,
            failed=failed,
            repairs=repairs or RepairState.start(R, K, covariance, reg_covar, params.weights.device),
            active=[r for r in range(R) if not failed[r]],
        )

    def best(self) -> int | None:
        """Index of the restart with the highest lower bound (first on ties), or None if all failed."""
        candidates = [r for r in range(len(self.failed)) if not self.failed[r]]
        if not candidates:
            return None
        return max(candidates, key=lambda r: (self.lower_bound[r], -r))

    def to_plain(self) -> dict[str, Any]:
        """Plain tensors (on the CPU) and values, for a checkpoint that ``torch.load(weights_only=True)`` reads."""
        plain: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        plain["params"] = {f.name: getattr(self.params, f.name).detach().cpu() for f in fields(self.params)}
        plain["repairs"] = {
            "reg_covar": self.repairs.reg_covar.cpu(),
            "reseeds": self.repairs.reseeds.cpu(),
            "events": [[list(event) for event in events] for events in self.repairs.events],
        }
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, Any], device: torch.device, dtype: torch.dtype) -> EMState:
        """The inverse of :meth:`to_plain`, with the tensors on ``device`` (parameters in ``dtype``)."""
        params = MixtureParameters(**{name: t.to(device, dtype) for name, t in plain["params"].items()})
        events = [[Repair(*event) for event in events] for events in plain["repairs"]["events"]]
        repairs = RepairState(plain["repairs"]["reg_covar"].to(device), plain["repairs"]["reseeds"].to(device), events)
        values = {name: plain[name] for name in plain if name not in ("params", "repairs")}
        return cls(params=params, repairs=repairs, **values)


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
    resume: EMState | None = None,
    checkpoint: Callable[[EMState], None] | None = None,
    checkpoint_interval: int = 10,
) -> EMState:
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
        Rows per chunk; chosen from the shapes when None. A pass that runs out
        of memory is run again with half as many (see :mod:`torchgmm.memory`).
    verbose, verbose_interval : int
        Print progress every ``verbose_interval`` iterations when ``verbose > 0``.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, n_running,
        best_lower_bound)``, with values already on the host.
    repairs : RepairState, optional
        Per-covariance ``reg_covar`` and repairs so far (from the
        initialisation); a fresh one at ``reg_covar`` when None. Updated in place.
    resume : EMState, optional
        A state given to ``checkpoint`` earlier: the loop goes on from it, and
        ``params``, ``ok``, ``lower_bound`` and ``repairs`` are not used.
    checkpoint : callable, optional
        Called with the state after every ``checkpoint_interval`` iterations, and,
        if the loop stops with an exception (an interrupt, running out of memory),
        with the state of the last completed iteration before it propagates.
    """
    state = resume or EMState.start(params, covariance, reg_covar, ok, lower_bound, repairs)
    try:
        _loop(
            data,
            state,
            covariance,
            tol,
            max_iter,
            rows,
            verbose,
            verbose_interval,
            callback,
            checkpoint,
            checkpoint_interval,
        )
    except BaseException:
        if checkpoint is not None:
            try:
                checkpoint(state)
            except Exception as exc:  # the original error matters more
                warnings.warn(f"Could not write the checkpoint: {exc}", RuntimeWarning, stacklevel=2)
        raise
    return state


def _loop(
    data: DataSource,
    state: EMState,
    covariance: CovarianceType,
    tol: float,
    max_iter: int,
    rows: int | None,
    verbose: int,
    verbose_interval: int,
    callback: Callable[[int, int, float], None] | None,
    checkpoint: Callable[[EMState], None] | None,
    checkpoint_interval: int,
) -> None:
    """Iterate ``state`` in place; it is only ever updated between iterations, so it is always consistent."""
    R, K, D = state.params.means.shape
    n_samples = data.n_samples
    device = state.params.weights.device
    dtype = state.params.weights.dtype
    bound, failed, converged = state.lower_bound, state.failed, state.converged
    start_time = time.perf_counter()
    if verbose:
        resumed = f", resumed after iteration {state.iteration}" if state.iteration else ""
        print(f"EM on {len(state.active)} of {R} restarts, {n_samples} rows, device {device}, {dtype}{resumed}")

    for iteration in range(state.iteration + 1, max_iter + 1):
        active = state.active
        if not active:
            break
        index = torch.tensor(active, device=device)
        current = state.params if len(active) == R else state.params.select(index)
        # the rows asked for, or fewer once memory ran out with them
        cap = rows if state.rows is None else state.rows if rows is None else min(rows, state.rows)
        planned = chunk_rows(n_samples, covariance.elements_per_row(len(active), K, D), device, cap)
        stats, used = retry_with_fewer_rows(
            lambda n, current=current: e_step(data, current, covariance, n), planned, "the E-step", device, 6
        )
        reg = state.repairs.reg_covar.index_select(0, index)
        new, new_ok = m_step(stats, current.means, covariance, reg, dtype)
        # The bound is the mean log-likelihood of the parameters before this M-step.
        new_bound = stats.log_likelihood / n_samples
        host_bound, host_ok = torch.stack([new_bound, new_ok.all(-1).to(new_bound.dtype)]).tolist()
        # Repairs write into a copy of the state's, committed with the rest at the end of the iteration.
        repairs, just_repaired = state.repairs, []
        if not all(host_ok):
            repairs = state.repairs.copy()
            new, fixed = repair(stats, current.means, covariance, new, new_ok, repairs, index, dtype, iteration)
            host_ok = fixed.tolist()
            just_repaired = [r for r in active if len(repairs.events[r]) > len(state.repairs.events[r])]
        host_ok = [ok and math.isfinite(b) for ok, b in zip(host_ok, host_bound, strict=True)]

        params = state.params
        good = [j for j, flag in enumerate(host_ok) if flag]
        if good:
            keep = torch.tensor(good, device=device)
            params = params.replace(index.index_select(0, keep), new.select(keep))
        bound, failed, converged = list(bound), list(failed), list(converged)
        history, n_iter = list(state.lower_bounds), list(state.n_iter)
        still_active = []
        largest_change = 0.0
        for j, r in enumerate(active):
            if not host_ok[j]:
                failed[r] = True
                bound[r] = -math.inf
                continue
            change = host_bound[j] - bound[r]
            bound[r] = host_bound[j]
            history[r] = [*history[r], host_bound[j]]
            n_iter[r] = iteration
            largest_change = max(largest_change, abs(change))
            # a change measured across a repair says nothing about convergence
            if abs(change) < tol and r not in state.just_repaired and r not in just_repaired:
                converged[r] = True
            else:
                still_active.append(r)
        state.params, state.repairs, state.active, state.just_repaired = params, repairs, still_active, just_repaired
        state.lower_bound, state.failed, state.converged = bound, failed, converged
        state.lower_bounds, state.n_iter, state.iteration = history, n_iter, iteration
        if used < planned:
            state.rows = used

        if callback is not None:
            live = [bound[r] for r in range(R) if not failed[r]]
            callback(iteration, len(state.active), max(live) if live else -math.inf)
        if verbose and iteration % verbose_interval == 0:
            live = [bound[r] for r in range(R) if not failed[r]]
            best = max(live) if live else -math.inf
            print(
                f"  Iteration {iteration}\t running {len(state.active)}\t best lower bound {best:.6f}"
                f"\t largest change {largest_change:.3e}"
                + (f"\t time {time.perf_counter() - start_time:.3f}s" if verbose > 1 else "")
            )
        if checkpoint is not None and iteration % checkpoint_interval == 0 and state.active:
            checkpoint(state)

    if verbose:
        n_repaired = sum(1 for events in state.repairs.events if events)
        print(
            f"EM done: {sum(converged)} converged, {sum(failed)} failed, {n_repaired} repaired, "
            f"{R - sum(converged) - sum(failed)} stopped at max_iter, "
            f"time {time.perf_counter() - start_time:.3f}s"
        )
