"""The M-step with its repairs: statistics in, parameters of every restart out, degenerate components fixed.

Owns the one M-step entry of the engine (:func:`maximise`), which the EM loop, the initialisation and online
EM all call: it solves the M-step (:func:`torchgmm.em.solve_m_step`), finds the covariances that failed, and
repairs them within their restart, so that callers see only whether each restart is usable. Also owns what
repairs leave behind (:class:`RepairState`) and their record (:class:`Repair`). Must not: read data, decide
convergence, or touch restarts other than the one being repaired.

An M-step can produce a covariance that does not factorise: a component on
one point or on duplicated rows, a constant feature, collinear features, or a
covariance that is singular to the precision of the compute dtype (see
:meth:`~torchgmm.covariance.CovarianceType.factorise`). scikit-learn then
aborts the whole fit. Here only that component is touched, and its restart
goes on; the other restarts never see it:

* An **empty** component (less than half a row's worth of responsibility)
  takes half of the heaviest healthy component of its restart: both get half
  its weight and its covariance, and their means move half a standard
  deviation apart along its principal axis. A component is re-seeded at most
  :data:`MAX_RESEEDS` times; after that it is regularised like the others.
* Any other failing covariance gets its own ``reg_covar`` raised, first to
  ``max(10 reg_covar, sqrt(eps) * its mean variance, 1e-11 * the restart's
  mean second moment)`` (``eps`` of the compute dtype), then tenfold until it
  factorises. The raised value stays for the rest of the fit.

Each action is recorded as a :class:`Repair`. A restart fails only when its
statistics are not finite (say, data whose squares overflow) or no
regularisation within :data:`MAX_ATTEMPTS` tenfold steps makes it factorise.

Repairs change the parameters outside EM, so the lower bound of the
iteration after one may be lower than the one before; the trainer does not
let a restart converge on that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from torchgmm.covariance import CovarianceType
from torchgmm.em import MIN_RELATIVE_VARIANCE, MixtureParameters, Statistics, solve_m_step

__all__ = [
    "Fixed",
    "Repair",
    "RepairState",
    "MStep",
    "maximise",
    "summary",
    "repaired_restarts",
    "MAX_RESEEDS",
    "MAX_ATTEMPTS",
    "EMPTY_MASS",
]

MAX_RESEEDS = 2
MAX_ATTEMPTS = 30
EMPTY_MASS = 0.5


class Repair(NamedTuple):
    """One repair of one component.

    Attributes
    ----------
    iteration : int
        The EM iteration whose M-step was repaired (0: the initialisation).
    component : int or None
        The component (None: the shared covariance of ``'tied'``).
    action : str
        ``'regularised'`` (its ``reg_covar`` was raised) or ``'reseeded'``
        (it took half of another component).
    reg_covar : float
        The component's ``reg_covar`` after the repair.
    """

    iteration: int
    component: int | None
    action: str
    reg_covar: float

    def __str__(self) -> str:
        what = "the tied covariance" if self.component is None else f"component {self.component}"
        if self.action == "reseeded":
            return f"{what} reseeded at iteration {self.iteration}"
        return f"{what} regularised (reg_covar {self.reg_covar:.3g}) at iteration {self.iteration}"


@dataclass
class RepairState:
    """What repairs leave behind for later iterations, for ``R`` restarts.

    Attributes
    ----------
    reg_covar : Tensor of shape (R, K), float64
        Each covariance's ``reg_covar`` (``(R, 1)`` when tied).
    reseeds : Tensor of shape (R, K), int64
        Times each component was re-seeded.
    events : list of list of Repair
        Every repair so far, per restart.
    """

    reg_covar: Tensor
    reseeds: Tensor
    events: list[list[Repair]] = field(default_factory=list)

    @classmethod
    def start(
        cls, n_restarts: int, n_components: int, covariance: CovarianceType, reg_covar: float, device: torch.device
    ) -> RepairState:
        """Nothing repaired yet: every covariance at ``reg_covar``."""
        n_cov = covariance.n_covariances(n_components)
        return cls(
            torch.full((n_restarts, n_cov), float(reg_covar), dtype=torch.float64, device=device),
            torch.zeros(n_restarts, n_components, dtype=torch.long, device=device),
            [[] for _ in range(n_restarts)],
        )

    def copy(self) -> RepairState:
        """An independent copy (repairs update a state in place)."""
        return RepairState(self.reg_covar.clone(), self.reseeds.clone(), [list(e) for e in self.events])


@dataclass
class MStep:
    """What :func:`maximise` gives back.

    Attributes
    ----------
    params : MixtureParameters
        New parameters of the ``R'`` restarts, in the compute dtype (finite placeholders where a restart failed).
    ok : list of bool
        Per restart: False where its statistics were not finite or a covariance could not be repaired.
    repaired : list of bool
        Per restart: whether this M-step repaired one of its components.
    fetched : list of float
        ``fetch`` on the host (empty without it), brought by the same synchronisation.
    """

    params: MixtureParameters
    ok: list[bool]
    repaired: list[bool]
    fetched: list[float]


class Fixed(NamedTuple):
    """Parameters held at given values through every M-step (``fixed_params``); None where a parameter is free.

    Engine shapes with a restart axis of one (broadcast over the restarts), float64, means in the data's centred
    coordinates. Held means make the M-step take the statistics about them (they are the current means: the
    scatter about them is the constrained optimum of the covariances); held weights and covariances replace the
    M-step's. Empty components are then never re-seeded (that moves means and weights); a free covariance is
    still regularised when it fails.
    """

    weights: Tensor | None = None
    means: Tensor | None = None
    covariances: Tensor | None = None
    precisions_cholesky: Tensor | None = None

    @classmethod
    def of(cls, params: MixtureParameters, names: tuple[str, ...]) -> Fixed | None:
        """The ``names`` (``'weights'``, ``'means'``, ``'covariances'``) of ``params``' first restart, held."""
        if not names:
            return None

        def first(t: Tensor) -> Tensor:
            return t[:1].to(torch.float64)

        return cls(
            first(params.weights) if "weights" in names else None,
            first(params.means) if "means" in names else None,
            first(params.covariances) if "covariances" in names else None,
            first(params.precisions_cholesky) if "covariances" in names else None,
        )

    def hold(self, params: MixtureParameters, ok: Tensor) -> tuple[MixtureParameters, Tensor]:
        """``params`` (float64) with the held values put back, and ``ok`` True for held covariances."""
        weights, means = params.weights, params.means
        covariances, factors = params.covariances, params.precisions_cholesky
        if self.weights is not None:
            weights = self.weights.to(weights.device).expand_as(weights)
        if self.means is not None:
            means = self.means.to(means.device).expand_as(means)
        if self.covariances is not None:
            covariances = self.covariances.to(covariances.device).expand_as(covariances)
            factors = self.precisions_cholesky.to(factors.device).expand_as(factors)
            ok = torch.ones_like(ok)
        return MixtureParameters(weights, means, covariances, factors), ok


def maximise(
    stats: Statistics,
    centre: Tensor,
    covariance: CovarianceType,
    state: RepairState,
    restarts: Tensor,
    dtype: torch.dtype,
    iteration: int,
    *,
    repair: bool = True,
    empty_mass: float | Tensor = EMPTY_MASS,
    fetch: Tensor | None = None,
    fixed: Fixed | None = None,
) -> MStep:
    """The M-step of ``R'`` restarts from their statistics, with every failed component repaired.

    Parameters
    ----------
    stats : Statistics
        Of the ``R'`` restarts, about ``centre [R', K, D]``.
    covariance : CovarianceType
    state : RepairState
        Of all ``R`` restarts: each covariance's ``reg_covar`` is taken from it, and repairs update it in place.
    restarts : Tensor of shape (R',), int64
        Which of the ``R`` restarts the statistics belong to.
    dtype : torch.dtype
        The compute dtype.
    iteration : int
        Recorded in the repairs (0: the initialisation).
    repair : bool
        False: report failed restarts without repairing (initial covariances the caller replaces).
    empty_mass : float or Tensor
        Components with less mass (``stats.nk``) are empty.
    fetch : Tensor of shape (R',), optional
        Values the caller needs on the host (the lower bounds), brought by the M-step's one synchronisation.
    fixed : Fixed, optional
        Parameters held at their values (``centre`` must then be the held means, if they are held).
    """
    reg = state.reg_covar.index_select(0, restarts)
    if fixed is not None and fixed.means is not None:
        stats = stats._replace(s1=torch.zeros_like(stats.s1))  # about the held means, which do not move
    new, ok = solve_m_step(stats, centre, covariance, reg, dtype)
    if fixed is not None:
        new, ok = fixed.hold(new, ok)
    everything_ok = ok.all(-1)
    host = torch.stack([everything_ok.to(torch.float64)] + ([fetch.to(torch.float64)] if fetch is not None else []))
    host = host.tolist()
    fetched = host[1] if fetch is not None else []
    if all(host[0]) or not repair:
        R = len(host[0])
        return MStep(new.map(lambda t: t.to(dtype)), [bool(v) for v in host[0]], [False] * R, fetched)
    before = [len(state.events[r]) for r in restarts.tolist()]
    moves = fixed is None or (fixed.weights is None and fixed.means is None)  # may empty components be re-seeded
    args = (stats, covariance, new, ok, reg, state, restarts, dtype, iteration, empty_mass, moves)
    params, ok_restart = _repair(*args)
    after = [len(state.events[r]) for r in restarts.tolist()]
    return MStep(params, ok_restart.tolist(), [b != a for b, a in zip(before, after, strict=True)], fetched)


def _repair(
    stats: Statistics,
    covariance: CovarianceType,
    new: MixtureParameters,
    ok: Tensor,
    reg: Tensor,
    state: RepairState,
    restarts: Tensor,
    dtype: torch.dtype,
    iteration: int,
    empty_mass: float | Tensor,
    moves: bool = True,
) -> tuple[MixtureParameters, Tensor]:
    """Repair the failed covariances (``ok [R', K]`` False) of the float64 M-step ``new``; ``(params, ok [R'])``.

    ``moves``: empty components may be re-seeded (False when weights or means are held).
    """
    finite = torch.isfinite(stats.log_likelihood)
    for t in stats[1:]:
        finite &= torch.isfinite(t).flatten(1).all(-1)
    empty = stats.nk < empty_mass
    reseeds = state.reseeds.index_select(0, restarts)
    reseed = _reseed_plan(covariance, new, ok, empty, reseeds, finite) if moves else []

    # Raise reg_covar of the failing covariances that are not re-seeded, tenfold at a time.
    todo = ~ok & finite.unsqueeze(-1)
    if reseed:
        rows, cols = zip(*((r, k) for r, k, _ in reseed), strict=True)
        todo[list(rows), list(cols)] = False
    raised = torch.zeros_like(todo)
    start = _first_step(covariance, new, dtype)
    nk = stats.nk + 10 * torch.finfo(dtype).eps
    shift = stats.s1 / nk.unsqueeze(-1)
    for _ in range(MAX_ATTEMPTS):
        if not bool(todo.any()):
            break
        reg = torch.where(todo, torch.maximum(10.0 * reg, start), reg)
        raised |= todo
        covariances = covariance.covariances(nk, shift, stats.s2, reg)
        factors, fixed = covariance.factorise(covariances, dtype)
        new = _merge(new, todo, covariances, factors)
        todo = todo & ~fixed
        ok = ok | fixed & raised

    new, ok = _apply_reseeds(covariance, new, ok, reseed)
    ok_restart = ok.all(-1) & finite

    host_restarts = restarts.tolist()
    for r, k in raised.nonzero().tolist():
        component = k if covariance.per_component else None
        event = Repair(iteration, component, "regularised", float(reg[r, k]))
        state.events[host_restarts[r]].append(event)
    for r, k, _ in reseed:
        state.events[host_restarts[r]].append(Repair(iteration, k, "reseeded", float(reg[r, k])))
        state.reseeds[host_restarts[r], k] += 1
    state.reg_covar.index_copy_(0, restarts, reg)
    return new.map(lambda t: t.to(dtype)), ok_restart


def _first_step(covariance: CovarianceType, params: MixtureParameters, dtype: torch.dtype) -> Tensor:
    """The first raise of each covariance's ``reg_covar``, ``[R', K]``.

    ``sqrt(eps)`` of its mean variance, so that it factorises with pivots well
    above rounding, and at least ten times the degeneracy floor
    (:data:`~torchgmm.em.MIN_RELATIVE_VARIANCE`) of its restart's mean second
    moment, for a component with no variance of its own.
    """
    D = params.means.shape[-1]
    variances = covariance.variances(params.covariances, D)
    variances = torch.where(torch.isfinite(variances), variances, 0.0).clamp_min(0.0)
    own = variances.mean(-1)
    means = torch.where(torch.isfinite(params.means), params.means, 0.0)
    moment = (params.weights.unsqueeze(-1) * (variances + means.square())).sum(1).mean(-1, keepdim=True)
    moment = torch.where(torch.isfinite(moment) & (moment > 0), moment, 1.0)
    return torch.maximum(math.sqrt(torch.finfo(dtype).eps) * own, 10.0 * MIN_RELATIVE_VARIANCE * moment)


def _merge(params: MixtureParameters, where: Tensor, covariances: Tensor, factors: Tensor) -> MixtureParameters:
    """``params`` with the covariances (and factors) at ``where [R', K]`` taken from the given ones."""

    def pick(new: Tensor, old: Tensor) -> Tensor:
        return torch.where(where.view(*where.shape, *([1] * (old.dim() - where.dim()))), new, old)

    return MixtureParameters(
        params.weights,
        params.means,
        pick(covariances, params.covariances),
        pick(factors, params.precisions_cholesky),
    )


def _reseed_plan(
    covariance: CovarianceType,
    params: MixtureParameters,
    ok: Tensor,
    empty: Tensor,
    reseeds: Tensor,
    finite: Tensor,
) -> list[tuple[int, int, int]]:
    """``(restart, empty component, donor)`` for each failed empty component that can be re-seeded.

    Donors are the heaviest healthy components, each used once.
    """
    if not covariance.per_component:
        return []
    candidates = ~ok & empty & (reseeds < MAX_RESEEDS) & finite.unsqueeze(-1)
    if not bool(candidates.any()):
        return []
    plan = []
    healthy = (ok & ~empty).tolist()
    order = params.weights.argsort(-1, descending=True).tolist()
    for r, k in candidates.nonzero().tolist():
        donor = next((j for j in order[r] if healthy[r][j]), None)
        if donor is None:
            continue
        healthy[r][donor] = False
        plan.append((r, k, donor))
    return plan


def _apply_reseeds(
    covariance: CovarianceType, params: MixtureParameters, ok: Tensor, plan: list[tuple[int, int, int]]
) -> tuple[MixtureParameters, Tensor]:
    """Split each donor in two: half its weight each, its covariance, means half a standard deviation apart."""
    if not plan:
        return params, ok
    weights, means = params.weights.clone(), params.means.clone()
    covariances, factors = params.covariances.clone(), params.precisions_cholesky.clone()
    ok = ok.clone()
    D = means.shape[-1]
    for r, k, donor in plan:
        offset = 0.5 * covariance.principal_axis(covariances[r, donor], D)
        weights[r, k] = weights[r, donor] = 0.5 * weights[r, donor]
        means[r, k] = means[r, donor] + offset
        means[r, donor] = means[r, donor] - offset
        covariances[r, k] = covariances[r, donor]
        factors[r, k] = factors[r, donor]
        ok[r, k] = True
    # the re-seeded components' old weights (about 1e-15) go back to everyone
    weights = weights / weights.sum(-1, keepdim=True)
    return MixtureParameters(weights, means, covariances, factors), ok


def summary(repairs: list[Repair]) -> str:
    """One restart's repairs in a few words: their number and the first (``'2 repairs, the first: ...'``)."""
    count = f"{len(repairs)} repair" + ("s" if len(repairs) != 1 else "")
    return f"{count}, the first: {repairs[0]}" if repairs else count


def repaired_restarts(events: list[list[Repair]]) -> int:
    """Number of restarts with at least one repair."""
    return sum(1 for repairs in events if repairs)
