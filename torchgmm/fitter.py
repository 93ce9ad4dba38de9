"""Fitting: from scanned data and checked settings to a :class:`~torchgmm.model.FittedMixture`.

Owns what a fit does between its input checks and its result: the seed every rank uses, the checkpoint to
resume or write, the initial parameters of every restart (from ``init_params``, given ``*_init`` values or a
warm start), the EM loop with its observers (progress, the user's callback, checkpoints), the choice of the
kept restart, the warnings about dropped restarts, repairs and convergence, and the stepwise-EM update of
``partial_fit``. Must not: validate user input or convert outputs (:mod:`torchgmm.estimator` does, before and
after), nor read files other than its checkpoint.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from torchgmm import distributed
from torchgmm._validation import fixed_parameter_names
from torchgmm.checkpoint import Checkpoint, CheckpointWriter, describe_seed, fit_checkpoint, restore
from torchgmm.covariance import CovarianceType
from torchgmm.data import ScannedData
from torchgmm.em import MixtureParameters
from torchgmm.exceptions import ConvergenceWarning, DegenerateComponentWarning, FailedRestartWarning, compatible
from torchgmm.init import initialize
from torchgmm.kernels import kernel_for
from torchgmm.model import FittedMixture, mixture_parameters
from torchgmm.mstep import Fixed, RepairState, repaired_restarts, summary
from torchgmm.online import online_em_step, step_size
from torchgmm.passes import chunk_rows, retry_with_fewer_rows
from torchgmm.smem import SplitMerge, grown_parameters, split_and_merge
from torchgmm.trainer import Anneal, Callback, EMConfig, EMState, Observer, Observers, Progress, Race, run_em

__all__ = [
    "FitConfig",
    "BETA_SPREAD",
    "restart_count",
    "check_growth",
    "beta_starts",
    "WarmStart",
    "Fit",
    "fit_mixture",
    "online_update",
    "initial_parameters",
    "ill_defined",
    "seeded",
]


@dataclass(frozen=True)
class FitConfig:
    """The checked settings of a fit (the estimator's parameters that decide it)."""

    n_components: int
    covariance: CovarianceType
    tol: float
    reg_covar: float
    max_iter: int
    n_init: int
    init_params: str
    random_state: object
    warm_start: bool
    batch_size: int | None
    verbose: int
    verbose_interval: int
    checkpoint_path: str | os.PathLike | None
    checkpoint_interval: int
    learning_decay: float
    learning_offset: float
    strategy: str = "restarts"
    race_survivors: int | None = None
    race_first_cut: int = 2
    init_whiten: bool = False
    anneal_beta_start: object = None
    anneal_steps: int = 4
    anneal_iter: int = 10
    split_merge_candidates: int = 8
    split_merge_rounds: int = 10
    fixed_params: object = ()

    @property
    def fixed_names(self) -> tuple[str, ...]:
        """The held parameters' names (``fixed_params``, checked)."""
        return fixed_parameter_names(self.fixed_params)

    def split_merge(self) -> SplitMerge | None:
        """The moves of ``strategy='split-merge'``, else None."""
        if self.strategy not in ("split-merge", "auto"):
            return None
        return SplitMerge(self.split_merge_candidates, self.split_merge_rounds)

    @property
    def n_restarts(self) -> int:
        """Restarts the fit runs: ``n_init``, or a third of it, rounded up, with ``strategy='auto'`` (whose
        annealing and moves spend about as much again, so the whole costs about ``n_init`` plain restarts)."""
        return restart_count(self.strategy, self.n_init)

    def anneal(self) -> Anneal | None:
        """The annealing schedule of ``strategy='anneal'`` or ``'auto'`` (one start per restart), else None."""
        if self.strategy not in ("anneal", "auto"):
            return None
        return Anneal(beta_starts(self.anneal_beta_start, self.n_restarts), self.anneal_steps, self.anneal_iter)

    def race(self) -> Race | None:
        """The race of ``strategy='race'`` (``survivors`` defaulting to an eighth of the restarts), else None."""
        if self.strategy != "race":
            return None
        survivors = self.race_survivors if self.race_survivors is not None else math.ceil(self.n_restarts / 8)
        return Race(self.race_first_cut, max(1, min(survivors, self.n_restarts)))


# The inverse temperatures annealed restarts start from, when not given: spread geometrically over the
# restarts, so that one batch tries both strong annealing (which helps most on data with many features) and
# mild annealing (which keeps components apart where strong annealing would merge them); see bench/NOTES.md.
BETA_SPREAD = (0.05, 0.5)


def check_growth(smaller: int, smaller_type: str, n_components: int, covariance_type: str) -> None:
    """Raise unless a fit of ``n_components`` can grow from a fit of ``smaller`` components (one fewer, the same
    covariance type)."""
    if (smaller + 1, smaller_type) != (n_components, covariance_type):
        raise ValueError(
            f"Growing a {covariance_type} mixture of {n_components} components needs a fitted {covariance_type} "
            f"mixture of {n_components - 1}, got {smaller_type} with {smaller}."
        )


def restart_count(strategy: str, n_init: int) -> int:
    """The restarts a fit with ``strategy`` and ``n_init`` runs (see :attr:`FitConfig.n_restarts`)."""
    return math.ceil(n_init / 3) if strategy == "auto" else n_init


def beta_starts(value: object, n_restarts: int) -> tuple[float, ...]:
    """Each restart's starting inverse temperature: ``value`` (one number, or one per restart), or spread
    geometrically over :data:`BETA_SPREAD` (None; one restart: their geometric mean)."""
    if value is None:
        low, high = BETA_SPREAD
        if n_restarts == 1:
            return (math.sqrt(low * high),)
        return tuple(float(b) for b in np.geomspace(low, high, n_restarts))
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(b) for b in value)
    return (float(value),) * n_restarts


class WarmStart(NamedTuple):
    """A previous fit's parameters (scikit-learn's shapes) and last lower bound, to start from.

    ``grow``: the previous fit has one component fewer; each restart starts from it with one of its
    worst-explained components split in two (:func:`torchgmm.smem.grown_parameters`), instead of from it as it is.
    """

    weights: object
    means: object
    covariances: object
    precisions_cholesky: object
    lower_bound: float
    grow: bool = False


class Fit(NamedTuple):
    """A fit's result, and the data as it was used (centred on a resumed checkpoint's mean, if any)."""

    model: FittedMixture
    data: ScannedData


def float32_advice(dtype: torch.dtype) -> str:
    """The sentence errors about non-finite statistics end with for float32 data."""
    if dtype == torch.float32:
        return " The numerical accuracy can also be improved by passing float64 data instead of float32."
    return ""


def ill_defined(dtype: torch.dtype) -> ValueError:
    """The error of a fit whose every restart failed."""
    return ValueError(
        "Fitting the mixture model failed: every restart produced non-finite statistics or a covariance "
        "that cannot be represented or factorised even after raising its reg_covar (for instance data so "
        "large that their squares overflow). Scale the input data." + float32_advice(dtype)
    )


def seeded(generator: torch.Generator) -> torch.Generator:
    """``generator``, reseeded under ``torch.distributed`` with rank 0's seed, so every rank draws alike."""
    if distributed.is_distributed():
        generator.manual_seed(distributed.broadcast_int(generator.initial_seed()))
    return generator


def fit_mixture(
    data: ScannedData,
    config: FitConfig,
    inits: dict[str, Tensor],
    generator: torch.Generator,
    warm: WarmStart | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    stacklevel: int = 1,
) -> Fit:
    """Fit ``config.n_restarts`` restarts (one when warm-starting) at once and keep the best.

    Parameters
    ----------
    data : ScannedData
    config : FitConfig
    inits : dict of str to Tensor
        Checked ``weights_init``, ``means_init``, ``precisions_init`` (float64, CPU), those given.
    generator : torch.Generator
        Seeded from ``random_state``; under ``torch.distributed`` rank 0's seed replaces it.
    warm : WarmStart, optional
    callback : callable, optional
        ``callback(iteration, n_running, best_lower_bound)`` after every iteration.
    stacklevel : int
        Warnings point this many frames above the caller (1: the caller's line).

    Raises
    ------
    ValueError
        If every restart failed, or the checkpoint belongs to another fit or is damaged.
    """
    covariance, device, dtype = config.covariance, data.device, data.dtype
    inits = _held_inits(config, inits)
    generator = seeded(generator)
    # the checkpoint describes the fit by rank 0's random_state, the seed every rank used
    seed = distributed.broadcast(describe_seed(config.random_state))
    with distributed.together():
        checkpoint = _checkpoint(data, config, inits, warm is not None, seed)
        resumed = checkpoint.load() if checkpoint is not None else None
    distributed.check_same(resumed_from_checkpoint=resumed is not None)
    if resumed is not None:
        content, shift = resumed
        data = data.with_shift(shift)  # the state's parameters are centred on the saved mean
        one = warm is not None and not warm.grow
        shape = (1 if one else config.n_restarts, config.n_components, data.n_features)
        with distributed.together():
            state = restore(checkpoint, content, device, dtype, shape)
        if config.verbose:
            print(f"Resuming from {checkpoint.path} after iteration {state.iteration}")
    elif warm is not None and warm.grow:
        smaller, _ = mixture_parameters(*warm[:4], covariance, device, dtype, data.shift)
        params, ok, repairs = grown_parameters(data, smaller, config.n_restarts, covariance, config.reg_covar)
        state = EMState.start(params, repairs, ok)
    elif warm is not None:
        params, _ = mixture_parameters(*warm[:4], covariance, device, dtype, data.shift)
        repairs = RepairState.start(1, config.n_components, covariance, config.reg_covar, device)
        state = EMState.start(params, repairs, lower_bound=float(warm.lower_bound))
    else:
        repairs = RepairState.start(config.n_restarts, config.n_components, covariance, config.reg_covar, device)
        params, ok = initial_parameters(data, config, inits, generator, repairs, stacklevel + 1)
        state = EMState.start(params, repairs, ok)
    observers: list[Observer] = []
    if callback is not None:
        observers.append(Callback(callback))
    if config.verbose:
        observers.append(Progress(config.verbose, config.verbose_interval))
    saving = checkpoint is not None and distributed.rank() == 0
    if saving:
        writer = CheckpointWriter(checkpoint, config.checkpoint_interval)
        observers.append(writer)
        if resumed is None:
            writer.save(state)  # the initialisation is not redone on resume
    # a warm start runs one restart from a fitted model (no race), and a grown one restarts near it: no annealing
    race = config.race() if warm is None or warm.grow else None
    anneal = config.anneal() if warm is None else None
    fixed = Fixed.of(state.params, config.fixed_names)  # the held values are every restart's initial ones
    em_config = EMConfig(covariance, config.tol, config.max_iter, race=race, anneal=anneal, fixed=fixed)
    state = run_em(data, state, em_config, Observers(observers))
    best = state.best()
    if best is None:
        if saving:
            checkpoint.remove()  # the failure is deterministic: resuming would fail again
        raise ill_defined(dtype)
    _warn(state, best, config, stacklevel + 1)
    model = _held(_model(state, best, covariance, data.shift), config, inits)
    moves = config.split_merge() if warm is None or warm.grow else None
    if moves is not None:
        model = _moved(data, state, best, model, em_config, moves, config.reg_covar)
    if saving:
        checkpoint.remove()
    return Fit(model, data)


def _checkpoint(
    data: ScannedData, config: FitConfig, inits: dict[str, Tensor], warm: bool, seed: int | None
) -> Checkpoint | None:
    """The checkpoint of this fit, or None without a ``checkpoint_path``."""
    if config.checkpoint_path is None:
        return None
    settings = {
        "n_components": config.n_components,
        "covariance_type": config.covariance.name,
        "tol": config.tol,
        "reg_covar": config.reg_covar,
        "n_init": config.n_init,
        "init_params": config.init_params,
        "strategy": config.strategy,
        "init_whiten": config.init_whiten,
        "race": None if (race := config.race()) is None else [race.first_cut, race.survivors],
        "anneal": None if (a := config.anneal()) is None else [*a.beta_start, a.steps, a.level_iter],
        "split_merge": None if (m := config.split_merge()) is None else [m.candidates, m.rounds],
        "fixed_params": list(config.fixed_names),
        "sample_weight": _weight_identity(data),
    }
    return fit_checkpoint(config.checkpoint_path, settings, data, inits, warm, seed)


def _weight_identity(data: ScannedData) -> list[float] | None:
    """What identifies a fit's row weights in its checkpoint: their total and a checksum that depends on which
    row has which weight (summed over ranks); None without weights."""
    if data.weights is None:
        return None
    index = torch.arange(data.offset, data.offset + data.local_samples, device=data.device, dtype=torch.float64)
    checksum = (data.weights * (index.remainder(1_000_003) + 1.0)).sum().reshape(1)
    distributed.all_reduce_(checksum)
    return [data.total_weight, float(checksum)]


def initial_parameters(
    data: ScannedData,
    config: FitConfig,
    inits: dict[str, Tensor],
    generator: torch.Generator,
    repairs: RepairState,
    stacklevel: int = 1,
    n_restarts: int | None = None,
) -> tuple[MixtureParameters, list[bool] | None]:
    """Initial parameters of ``R`` restarts from ``init_params``, each given ``*_init`` replacing its part.

    Out of memory, the initialisation starts over in smaller chunks, with the same draws and no repairs. The
    repairs of the one that worked are written into ``repairs``. Returns ``(params, ok)``; ``ok`` is None when
    every part was given.
    """
    covariance, device, dtype = config.covariance, data.device, data.dtype
    R, K = n_restarts or config.n_restarts, config.n_components
    ok = None
    if len(inits) < 3:
        seed_state = generator.get_state()
        pristine = repairs.copy()
        # halving starts from the E-step's tiles; the first try leaves each pass its own
        elements = kernel_for(covariance).elements_per_row(R, K, data.n_features)
        planned = chunk_rows(data.n_samples, elements, device)

        def run(rows: int) -> tuple[tuple[MixtureParameters, list[bool]], RepairState]:
            generator.set_state(seed_state)
            state = pristine.copy()
            chunks = None if rows == planned else rows
            covariances_used = "precisions_init" not in inits
            out = initialize(
                config.init_params,
                data,
                K,
                R,
                covariance,
                generator,
                state,
                chunks,
                covariances_used,
                config.init_whiten,
            )
            return out, state

        ((params, ok), state), _ = retry_with_fewer_rows(run, planned, "the initialisation", device, stacklevel + 1)
        repairs.reg_covar, repairs.reseeds, repairs.events = state.reg_covar, state.reseeds, state.events
        if "precisions_init" in inits:
            ok = [True] * R

    def batch(t: Tensor) -> Tensor:
        return t.to(device, dtype).unsqueeze(0).expand(R, *t.shape).contiguous()

    weights = inits.get("weights_init")
    means = inits.get("means_init")
    precisions = inits.get("precisions_init")
    weights = batch(weights) if weights is not None else params.weights
    means = batch(means - data.shift.to("cpu", torch.float64)) if means is not None else params.means
    if precisions is not None:
        P = covariance.from_sklearn(covariance.precisions_cholesky_from_precisions(precisions))
        cov = covariance.covariances_from_precisions_cholesky(P)
        P, cov = batch(P), batch(cov)
    else:
        P, cov = params.precisions_cholesky, params.covariances
    return MixtureParameters(weights, means, cov, P), ok


def _model(state: EMState, best: int, covariance: CovarianceType, shift: Tensor) -> FittedMixture:
    """The fitted mixture of restart ``best`` (scikit-learn's shapes, means back in data coordinates)."""
    kept = state.params.select(torch.tensor([best], device=state.params.weights.device)).map(lambda t: t.squeeze(0))
    events = state.repairs.events
    return FittedMixture(
        covariance_type=covariance.name,
        weights=kept.weights,
        means=(kept.means.to(torch.float64) + shift).to(kept.means.dtype),
        covariances=covariance.to_sklearn(kept.covariances),
        precisions=covariance.precisions(covariance.to_sklearn(kept.precisions_cholesky)),
        precisions_cholesky=covariance.to_sklearn(kept.precisions_cholesky),
        converged=bool(state.converged[best]),
        n_iter=int(state.n_iter[best]),
        lower_bound=float(state.lower_bound[best]),
        lower_bounds=list(state.lower_bounds[best]),
        init_lower_bounds=[float(b) for b in state.lower_bound],
        init_converged=[bool(c) for c in state.converged],
        init_lower_bounds_history=[list(h) for h in state.lower_bounds],
        repairs=list(events[best]),
        init_repairs=[list(restart) for restart in events],
        init_stopped_early=[bool(v) for v in state.stopped],
    )


def _moved(
    data: ScannedData,
    state: EMState,
    best: int,
    model: FittedMixture,
    em_config: EMConfig,
    moves: SplitMerge,
    reg_covar: float,
) -> FittedMixture:
    """``model`` (restart ``best`` of ``state``) after split-and-merge rounds: the last kept move's mixture, its
    iterations and bounds after the restart's, and every round in ``split_merge_rounds``."""
    current = state.params.select(torch.tensor([best], device=data.device))
    plain_em = EMConfig(em_config.covariance, em_config.tol, em_config.max_iter)
    moved = split_and_merge(data, current, state.lower_bound[best], moves, plain_em, reg_covar)
    if moved.state is None:
        return model.replace(split_merge_rounds=moved.rounds)
    last = _model(moved.state, moved.kept, em_config.covariance, data.shift)
    return model.replace(
        weights=last.weights,
        means=last.means,
        covariances=last.covariances,
        precisions=last.precisions,
        precisions_cholesky=last.precisions_cholesky,
        converged=last.converged,
        n_iter=model.n_iter + moved.n_iter,
        lower_bound=last.lower_bound,
        lower_bounds=model.lower_bounds + moved.lower_bounds,
        repairs=model.repairs + last.repairs,
        split_merge_rounds=moved.rounds,
    )


def _held_inits(config: FitConfig, inits: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """``inits`` with uniform weights added when the weights are held without ``weights_init``."""
    inits = dict(inits or {})
    if "weights" in config.fixed_names and "weights_init" not in inits:
        inits["weights_init"] = torch.full((config.n_components,), 1.0 / config.n_components, dtype=torch.float64)
    return inits


def _held(model: FittedMixture, config: FitConfig, inits: dict[str, Tensor]) -> FittedMixture:
    """``model`` with its held parameters set to the given initial values exactly (not recomputed from the
    centred engine values, which round)."""
    names, dtype = config.fixed_names, model.means.dtype
    changes = {}
    if "weights" in names and "weights_init" in inits:
        changes["weights"] = inits["weights_init"].to(dtype)
    if "means" in names and "means_init" in inits:
        changes["means"] = inits["means_init"].to(dtype)
    if "covariances" in names and "precisions_init" in inits:
        changes["precisions"] = inits["precisions_init"].to(dtype)
    return model.replace(**changes)


def _warn(state: EMState, best: int, config: FitConfig, stacklevel: int) -> None:
    """Dropped restarts, repairs and non-convergence, each as one warning pointing at the user's call."""
    if any(state.failed):
        failed = [r for r, f in enumerate(state.failed) if f]
        warnings.warn(
            f"{len(failed)} of {len(state.failed)} restarts were dropped because their statistics were "
            f"not finite or a covariance could not be repaired (restarts {failed}); the best of the others "
            "is kept. Scale the input data to keep them.",
            FailedRestartWarning,
            stacklevel=stacklevel + 1,
        )
    events = state.repairs.events
    if repaired_restarts(events):
        kept = f"{len(events[best])} in the kept one" + (f", the first: {events[best][0]}" if events[best] else "")
        warnings.warn(
            f"Degenerate components were repaired in {repaired_restarts(events)} of {len(events)} restarts "
            f"({kept}); see repairs_. A larger reg_covar, fewer components or float64 data avoid them.",
            DegenerateComponentWarning,
            stacklevel=stacklevel + 1,
        )
    if not state.converged[best] and config.max_iter > 0:
        warnings.warn(
            "Best performing initialization did not converge. Try different init parameters, "
            "or increase max_iter, tol, or check for degenerate data.",
            compatible(ConvergenceWarning),
            stacklevel=stacklevel + 1,
        )


def online_update(
    data: ScannedData,
    config: FitConfig,
    previous: FittedMixture | None,
    inits: dict[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
    stacklevel: int = 1,
) -> FittedMixture:
    """One stepwise-EM update from the batch ``data``; the first (``previous`` None) initialises from it.

    Raises
    ------
    ValueError
        If the initialisation or the update fails (every restart of it: there is one).
    """
    covariance, device, dtype, shift = config.covariance, data.device, data.dtype, data.shift
    inits = _held_inits(config, inits)
    if previous is not None:
        params, _ = previous.parameters(device, dtype, shift)
        step, history, earlier = previous.n_iter, list(previous.lower_bounds), list(previous.repairs)
    else:
        init_repairs = RepairState.start(1, config.n_components, covariance, config.reg_covar, device)
        params, ok = initial_parameters(
            data, config, inits, seeded(generator), init_repairs, stacklevel + 1, n_restarts=1
        )
        if ok is not None and not all(ok):
            raise ill_defined(dtype)
        step, history, earlier = 0, [], init_repairs.events[0]
    eta = step_size(step, config.learning_decay, config.learning_offset)
    fixed = Fixed.of(params, config.fixed_names)
    new, ok, log_likelihood, repairs = online_em_step(
        data, params, covariance, config.reg_covar, eta, None, step=step, fixed=fixed
    )
    if not all(ok):
        raise ValueError(
            "The online EM update gave non-finite statistics or a covariance that could not be repaired; "
            "the model is unchanged. Scale the input data." + float32_advice(dtype)
        )
    new_repairs = ([] if previous is not None else earlier) + repairs[0]
    if new_repairs:
        warnings.warn(
            f"Degenerate components were repaired in this update ({summary(new_repairs)}); see repairs_. "
            "A larger reg_covar, fewer components or float64 data avoid them.",
            DegenerateComponentWarning,
            stacklevel=stacklevel + 1,
        )
    state = EMState.start(new, RepairState.start(1, config.n_components, covariance, config.reg_covar, device))
    bounds = history + [float(log_likelihood[0])]
    model = _model(state, 0, covariance, shift)
    if previous is not None:  # the held values exactly as the previous update left them
        held = {"weights": previous.weights, "means": previous.means, "precisions": previous.precisions}
        inits = {f"{name}_init": value for name, value in held.items()}
    model = _held(model, config, inits)
    return model.replace(
        converged=False,
        n_iter=step + 1,
        lower_bound=bounds[-1],
        lower_bounds=bounds,
        init_lower_bounds=[bounds[-1]],
        init_converged=[False],
        init_lower_bounds_history=[list(bounds)],
        repairs=earlier + repairs[0],
        init_repairs=[earlier + repairs[0]],
        init_stopped_early=[False],
    )
