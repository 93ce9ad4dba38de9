"""The EM loop over a batch of restarts, and its state.

Owns the iteration: every iteration advances all restarts still running with one E-step pass over the data
(:func:`torchgmm.passes.e_step`) and one M-step with its repairs (:func:`torchgmm.mstep.maximise`), then
decides which restarts have converged, failed or go on. The only host synchronisation per iteration is the
M-step's, which brings the new lower bounds along. Converged restarts keep their parameters; a restart whose
statistics are not finite is dropped without affecting the others. Must not: read files, initialise, validate
user input, warn, or know about estimators; what happens around an iteration (progress, a user callback,
checkpoints) is an :class:`Observer`'s.

The loop's whole state is an :class:`EMState`, updated only between iterations: handed to the observers after
every iteration (and when the loop stops on an exception), and given back to :func:`run_em`, it continues the
fit exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData
from torchgmm.em import MixtureParameters
from torchgmm.mstep import EMPTY_MASS, Fixed, RepairState, maximise, repaired_restarts
from torchgmm.passes import choose_kernel, chunk_rows, e_step, retry_with_fewer_rows

__all__ = ["EMState", "EMConfig", "Race", "Anneal", "Observer", "Observers", "Callback", "Progress", "run_em"]


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
        initialisation included; see :mod:`torchgmm.mstep`).
    active : list of int
        Restarts still running.
    just_repaired : list of int
        Restarts repaired in the last iteration (their next change does not count for convergence).
    iteration : int
        Iterations completed (0: initialised).
    rows : int or None
        Rows per chunk, once memory ran out with more (None: as the config asks).
    stopped : list of bool
        Restarts a race dropped before they converged (see :class:`Race`).
    level : list of int
        Each restart's level of an annealing schedule (see :class:`Anneal`; 0: its first).
    level_since : list of int
        The iteration that ended with each restart's level raised (0: none yet).
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
    stopped: list[bool] = field(default_factory=list)
    level: list[int] = field(default_factory=list)
    level_since: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # none stopped, none annealed yet (and checkpoints written before races or annealing had no entry)
        if not self.stopped:
            self.stopped = [False] * len(self.failed)
        if not self.level:
            self.level = [0] * len(self.failed)
        if not self.level_since:
            self.level_since = [0] * len(self.failed)

    @classmethod
    def start(
        cls,
        params: MixtureParameters,
        repairs: RepairState,
        ok: Sequence[bool] | None = None,
        lower_bound: float = -math.inf,
    ) -> EMState:
        """The state before the first iteration.

        Parameters
        ----------
        params : MixtureParameters
            Initial parameters of ``R`` restarts, in the data's coordinates and compute dtype.
        repairs : RepairState
            Per-covariance ``reg_covar`` and the initialisation's repairs.
        ok : sequence of bool, optional
            False for restarts whose initialisation already failed.
        lower_bound : float
            The bound the first change is measured from (a warm start's last bound).
        """
        R = params.means.shape[0]
        failed = [False] * R if ok is None else [not bool(v) for v in ok]
        return cls(
            params=params,
            lower_bound=[-math.inf if f else lower_bound for f in failed],
            lower_bounds=[[] for _ in range(R)],
            n_iter=[0] * R,
            converged=[False] * R,
            failed=failed,
            repairs=repairs,
            active=[r for r in range(R) if not failed[r]],
        )

    def best(self) -> int | None:
        """Index of the restart with the highest lower bound (first on ties), or None if all failed."""
        candidates = [r for r in range(len(self.failed)) if not self.failed[r]]
        if not candidates:
            return None
        return max(candidates, key=lambda r: (self.lower_bound[r], -r))

    def best_live_bound(self) -> float:
        """The highest lower bound of the restarts that did not fail (``-inf`` if none)."""
        live = [b for b, f in zip(self.lower_bound, self.failed, strict=True) if not f]
        return max(live) if live else -math.inf


@dataclass(frozen=True)
class Race:
    """Successive halving of the restarts: at iterations ``first_cut``, ``2 first_cut``, ``4 first_cut``, ...
    the restarts still in the race keep their better half by lower bound (never fewer than ``survivors``),
    until ``survivors`` are left; the others stop there.

    Restarts in the race are those that neither failed nor were stopped; a converged restart stays in it (with
    its final bound) but is never stopped. EM bounds only rise, so a stopped restart could not have ended above
    the restarts that beat it at the cut, except through a repair.
    """

    first_cut: int
    survivors: int

    def cuts_at(self, iteration: int) -> bool:
        """Whether ``iteration`` ends with a cut (``first_cut`` times a power of two)."""
        ratio, rest = divmod(iteration, self.first_cut)
        return rest == 0 and ratio > 0 and ratio & (ratio - 1) == 0


# An annealing level has settled when its bound changes by less than this many times the EM tolerance: the
# levels below beta = 1 only need to place the components roughly.
LEVEL_TOL = 10.0


@dataclass(frozen=True)
class Anneal:
    """Deterministic annealing (Ueda and Nakano 1998): responsibilities proportional to ``(w_k p(x|k))^beta``.

    Restart ``r`` starts at ``beta = beta_start[r]`` and climbs ``steps`` levels, geometrically spaced, to
    ``beta = 1`` (plain EM, run to convergence as usual): level ``l`` has ``beta_start[r] ** (1 - l / steps)``.
    A restart moves up a level when its bound changes by less than :data:`LEVEL_TOL` times the EM tolerance
    within the level, or after ``level_iter`` iterations at it. A small ``beta`` flattens the posterior, so the
    components first settle where the data's coarse structure is and only then compete for the details, which
    keeps EM out of many poor local optima that it would otherwise fall into in its first iterations.

    The lower bound reported throughout is the untempered mean log-likelihood: it need not rise while
    ``beta < 1``. A restart converges only at ``beta = 1``, and not on the iteration right after a level change
    (its change still measures the previous level).
    """

    beta_start: tuple[float, ...]
    steps: int
    level_iter: int

    def beta(self, restart: int, level: int) -> float:
        """The inverse temperature of ``restart`` at ``level`` (1 from level ``steps`` on)."""
        if level >= self.steps:
            return 1.0
        return self.beta_start[restart] ** (1.0 - level / self.steps)


@dataclass(frozen=True)
class EMConfig:
    """What the EM loop needs besides the data and its state.

    Attributes
    ----------
    covariance : CovarianceType
    tol : float
        A restart has converged when its lower bound (mean log-likelihood per row) changes by less than ``tol``
        in one iteration.
    max_iter : int
        Most iterations per restart (0 keeps the initial parameters).
    rows : int, optional
        Rows per compute tile; chosen from the shapes when None (the source's ``read_rows`` set how it is
        read). A pass that runs out of memory is run again with tiles of half as many rows (see
        :func:`torchgmm.passes.retry_with_fewer_rows`).
    race : Race, optional
        Stop the restarts that lag (``strategy='race'``); None runs every restart to the end.
    anneal : Anneal, optional
        Temper the responsibilities of the first iterations (``strategy='anneal'``); None: plain EM.
    fixed : Fixed, optional
        Parameters held at their values (``fixed_params``); None: every parameter follows the M-step.
    """

    covariance: CovarianceType
    tol: float
    max_iter: int
    rows: int | None = None
    race: Race | None = None
    anneal: Anneal | None = None
    fixed: Fixed | None = None


class Observer:
    """What happens around the iterations; every hook does nothing unless overridden.

    ``started`` before the first iteration, ``iteration`` after each one (with the largest change of a bound),
    ``stopped`` when the loop ends (``error`` is the exception it stops with, or None).
    """

    def started(self, state: EMState, data: ScannedData) -> None:
        """Before the first iteration of this call."""

    def iteration(self, state: EMState, largest_change: float) -> None:
        """After every iteration, with the state updated."""

    def stopped(self, state: EMState, error: BaseException | None) -> None:
        """When the loop ends, with the state of the last completed iteration."""


class Observers(Observer):
    """Several observers, called in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)

    def started(self, state, data):
        for o in self.observers:
            o.started(state, data)

    def iteration(self, state, largest_change):
        for o in self.observers:
            o.iteration(state, largest_change)

    def stopped(self, state, error):
        for o in self.observers:
            o.stopped(state, error)


class Callback(Observer):
    """Calls ``fn(iteration, n_running, best_lower_bound)`` after every iteration, with values on the host."""

    def __init__(self, fn: Callable[[int, int, float], None]) -> None:
        self.fn = fn

    def iteration(self, state, largest_change):
        self.fn(state.iteration, len(state.active), state.best_live_bound())


class Progress(Observer):
    """Prints progress (``verbose > 1``: with timings) every ``interval`` iterations, and a summary at the end."""

    def __init__(self, verbose: int, interval: int) -> None:
        self.verbose, self.interval = verbose, interval
        self.start = time.perf_counter()

    def started(self, state, data):
        self.start = time.perf_counter()
        params = state.params
        R = params.means.shape[0]
        resumed = f", resumed after iteration {state.iteration}" if state.iteration else ""
        device, dtype = params.weights.device, params.weights.dtype
        print(f"EM on {len(state.active)} of {R} restarts, {data.n_samples} rows, device {device}, {dtype}{resumed}")

    def iteration(self, state, largest_change):
        if state.iteration % self.interval == 0:
            print(
                f"  Iteration {state.iteration}\t running {len(state.active)}\t best lower bound "
                f"{state.best_live_bound():.6f}\t largest change {largest_change:.3e}"
                + (f"\t time {time.perf_counter() - self.start:.3f}s" if self.verbose > 1 else "")
            )

    def stopped(self, state, error):
        if error is not None:
            return
        R = len(state.failed)
        converged, failed, raced = sum(state.converged), sum(state.failed), sum(state.stopped)
        print(
            f"EM done: {converged} converged, {failed} failed, {repaired_restarts(state.repairs.events)} repaired, "
            + (f"{raced} stopped early by the race, " if raced else "")
            + f"{R - converged - failed - raced} stopped at max_iter, time {time.perf_counter() - self.start:.3f}s"
        )


def run_em(data: ScannedData, state: EMState, config: EMConfig, observer: Observer | None = None) -> EMState:
    """Run EM on the restarts of ``state`` until each converges, fails or reaches ``config.max_iter``.

    ``state`` (from :meth:`EMState.start`, or one an observer was given: the loop goes on from it) is updated
    between iterations and returned. If the loop stops with an exception (an interrupt, running out of
    memory), the observers see the state of the last completed iteration before it propagates.
    """
    observer = observer or Observer()
    observer.started(state, data)
    try:
        for iteration in range(state.iteration + 1, config.max_iter + 1):
            if not state.active:
                break
            largest_change = _iterate(data, state, config, iteration)
            if config.race is not None and config.race.cuts_at(iteration):
                _cut(state, config.race)
            observer.iteration(state, largest_change)
    except BaseException as exc:
        observer.stopped(state, exc)
        raise
    observer.stopped(state, None)
    return state


def _cut(state: EMState, race: Race) -> None:
    """One cut of a race: the running restarts outside the better half (by lower bound) of those in it stop."""
    stopped = state.stopped
    racing = [r for r in range(len(stopped)) if not state.failed[r] and not stopped[r]]
    if len(racing) <= race.survivors:
        return
    keep = max(race.survivors, math.ceil(len(racing) / 2))
    ranked = sorted(racing, key=lambda r: (-state.lower_bound[r], r))
    losers = {r for r in ranked[keep:] if r in state.active}
    state.stopped = [flag or r in losers for r, flag in enumerate(stopped)]
    state.active = [r for r in state.active if r not in losers]


def _iterate(data: ScannedData, state: EMState, config: EMConfig, iteration: int) -> float:
    """One iteration of every active restart; updates ``state`` at its end and returns the largest change."""
    covariance, tol, rows = config.covariance, config.tol, config.rows
    R, K, D = state.params.means.shape
    device, dtype = state.params.weights.device, state.params.weights.dtype
    active = state.active
    index = torch.tensor(active, device=device)
    current = state.params if len(active) == R else state.params.select(index)
    # the rows asked for, or fewer once memory ran out with them
    cap = rows if state.rows is None else state.rows if rows is None else min(rows, state.rows)
    anneal = config.anneal
    betas = [1.0] * len(active) if anneal is None else [anneal.beta(r, state.level[r]) for r in active]
    beta = torch.tensor(betas, dtype=torch.float64, device=device) if min(betas) < 1.0 else None
    weighted = data.weights is not None
    chosen = choose_kernel(current, covariance, beta is not None, weighted)  # the kernel sizes the tiles
    planned = chunk_rows(data.n_samples, chosen[0].elements_per_row(len(active), K, D), device, cap)
    stats, used = retry_with_fewer_rows(
        lambda n: e_step(data, current, covariance, n, chosen, beta), planned, "the E-step", device, 7
    )
    # The bound is the mean log-likelihood of the parameters before this M-step (per unit of weight).
    new_bound = stats.log_likelihood / data.total_weight
    # Repairs write into a copy of the state's, committed with the rest at the end of the iteration.
    repairs = state.repairs.copy()
    # empty: less than half a row's worth of mass (a row of mean weight, with weights)
    empty_mass = EMPTY_MASS * data.mean_weight
    step = maximise(
        stats,
        current.means,
        covariance,
        repairs,
        index,
        dtype,
        iteration,
        empty_mass=empty_mass,
        fetch=new_bound,
        fixed=config.fixed,
    )
    host_bound = step.fetched
    host_ok = [ok and math.isfinite(b) for ok, b in zip(step.ok, host_bound, strict=True)]
    just_repaired = [r for j, r in enumerate(active) if step.repaired[j]]

    params = state.params
    good = [j for j, flag in enumerate(host_ok) if flag]
    if good:
        keep = torch.tensor(good, device=device)
        params = params.replace(index.index_select(0, keep), step.params.select(keep))
    bound, failed, converged = list(state.lower_bound), list(state.failed), list(state.converged)
    history, n_iter = list(state.lower_bounds), list(state.n_iter)
    level, level_since = list(state.level), list(state.level_since)
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
        # a change measured across a repair or a change of temperature says nothing about convergence
        settled = r not in state.just_repaired and r not in just_repaired
        settled = settled and (level_since[r] == 0 or iteration - level_since[r] >= 2)
        if betas[j] < 1.0:  # annealing: up a level once this one has settled, or after its iterations
            if (abs(change) < LEVEL_TOL * tol and settled) or iteration - level_since[r] >= anneal.level_iter:
                level[r], level_since[r] = level[r] + 1, iteration
            still_active.append(r)
        elif abs(change) < tol and settled:
            converged[r] = True
        else:
            still_active.append(r)
    state.level, state.level_since = level, level_since
    state.params, state.repairs, state.active, state.just_repaired = params, repairs, still_active, just_repaired
    state.lower_bound, state.failed, state.converged = bound, failed, converged
    state.lower_bounds, state.n_iter, state.iteration = history, n_iter, iteration
    if used < planned:
        state.rows = used
    return largest_change
