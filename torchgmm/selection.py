"""Model selection in one call: a grid of component counts and covariance types, ranked by a criterion.

Owns :class:`GaussianMixtureSelection`: checks of the grid and the criterion, the held-out split, one
:class:`~torchgmm.GaussianMixture` fit per candidate (a failed candidate is recorded, not fatal), the results
table and the best estimator, to which prediction and scoring delegate. Must not: contain EM or read files
(candidates are ordinary estimators), or print (the command line shows the table).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from torchgmm._params import Parameters
from torchgmm._validation import check_sample_weight, check_scalar
from torchgmm.covariance import COVARIANCE_TYPES
from torchgmm.data import check_weights_kind, is_chunked
from torchgmm.estimator import GaussianMixture
from torchgmm.exceptions import NotFittedError, compatible

__all__ = ["GaussianMixtureSelection", "CRITERIA"]

CRITERIA = ("bic", "aic", "held-out")


class GaussianMixtureSelection(Parameters):
    """Fit Gaussian mixtures over a grid of ``n_components`` and covariance types and keep the best.

    Each candidate is a :class:`~torchgmm.GaussianMixture` with the shared parameters below, fitted on ``X``
    (or, for ``criterion='held-out'``, on the rows left after setting ``validation_fraction`` of them aside).
    A candidate whose fit fails (every restart degenerate, say) is recorded with its error and skipped.

    Parameters
    ----------
    n_components : int or iterable of int, default=range(1, 17)
        The numbers of components to try.
    covariance_types : str or iterable of str, default=("full", "tied", "diag", "spherical")
    criterion : {'bic', 'aic', 'held-out'}, default='bic'
        ``'bic'`` and ``'aic'`` (lower is better) are computed on the rows each candidate was fitted on;
        ``'held-out'`` is the mean log-likelihood of the rows set aside (higher is better), after which the
        best candidate is fitted again on all rows.
    validation_fraction : float, default=0.2
        Share of the rows set aside, at random (``random_state``), for ``criterion='held-out'``; unused
        otherwise. Held-out selection needs ``X`` in memory (an array or tensor).
    grow : bool, default=False
        Start each candidate whose ``n_components`` is one more than the previous candidate's (of the same
        covariance type, fitted) from that fit, instead of a fresh initialisation: its restarts each split one
        of the previous mixture's worst-explained components in two along its principal axis (restart ``r`` the
        ``r``-th worst) and run EM from there. No k-means per candidate, and EM starts near a good optimum, so a
        grid of consecutive counts costs less; the winner of ``criterion='held-out'`` is fitted again on all rows
        from a fresh initialisation.
    tol, reg_covar, max_iter, n_init, init_params, random_state, verbose, verbose_interval, device, dtype, \
batch_size, matmul_precision, strategy, race_survivors, race_first_cut, init_whiten, anneal_beta_start, \
anneal_steps, anneal_iter, split_merge_candidates, split_merge_rounds
        As in :class:`~torchgmm.GaussianMixture`, for every candidate (a grown candidate is not annealed).

    Attributes
    ----------
    results_ : dict of str to ndarray
        One entry per candidate, in the order fitted (covariance types outer, ``n_components`` inner), all of
        equal length: ``n_components`` (int), ``covariance_type`` (str), ``criterion`` (the selected
        criterion's value; NaN for a failed candidate), ``rank`` (1 for the best; failed candidates last),
        ``bic``, ``aic``, ``lower_bound``, ``n_iter`` and ``converged`` (of the kept restart),
        ``n_converged`` (restarts that converged), ``fit_time`` (seconds) and ``error`` (empty, or why the
        candidate failed).
    best_index_ : int
        Its row in ``results_``.
    best_params_ : dict
        ``{'n_components': K, 'covariance_type': name}`` of the best candidate.
    best_score_ : float
        Its criterion value.
    best_estimator_ : GaussianMixture
        The best candidate, fitted (on all rows).
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components: Any = range(1, 17),
        covariance_types: Any = ("full", "tied", "diag", "spherical"),
        criterion: str = "bic",
        validation_fraction: float = 0.2,
        grow: bool = False,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        random_state: Any = None,
        verbose: int = 0,
        verbose_interval: int = 10,
        device: Any = None,
        dtype: Any = None,
        batch_size: int | None = None,
        matmul_precision: str | None = None,
        strategy: str = "restarts",
        race_survivors: int | None = None,
        race_first_cut: int = 2,
        init_whiten: bool = False,
        anneal_beta_start: Any = None,
        anneal_steps: int = 4,
        anneal_iter: int = 10,
        split_merge_candidates: int = 8,
        split_merge_rounds: int = 10,
    ) -> None:
        self.n_components = n_components
        self.covariance_types = covariance_types
        self.criterion = criterion
        self.validation_fraction = validation_fraction
        self.grow = grow
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.matmul_precision = matmul_precision
        self.strategy = strategy
        self.race_survivors = race_survivors
        self.race_first_cut = race_first_cut
        self.init_whiten = init_whiten
        self.anneal_beta_start = anneal_beta_start
        self.anneal_steps = anneal_steps
        self.anneal_iter = anneal_iter
        self.split_merge_candidates = split_merge_candidates
        self.split_merge_rounds = split_merge_rounds

    def __sklearn_tags__(self):  # only called by scikit-learn, so the import is safe
        return GaussianMixture().__sklearn_tags__()

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "best_estimator_")

    # ------------------------------------------------------------------ checks

    def _grid(self) -> tuple[list[int], list[str]]:
        """The checked ``n_components`` and ``covariance_types``."""
        ks = self.n_components
        if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
            ks = [ks]
        if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
            raise TypeError(
                f"'n_components' must be an int or an iterable of ints (range(1, 17), say), got {type(ks).__name__}."
            )
        ks = list(ks)
        if not ks:
            raise ValueError("'n_components' is an empty range: give at least one number of components.")
        for k in ks:
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
                raise TypeError(
                    "'n_components' must be an int or an iterable of ints (range(1, 17), say), "
                    f"got {k!r} of type {type(k).__name__} in it."
                )
            check_scalar(k, "n_components", int, low=1)
        types = self.covariance_types
        types = [types] if isinstance(types, str) else list(types) if isinstance(types, Iterable) else [types]
        for name in types or [self.covariance_types]:  # none at all is refused like an unknown name
            if not isinstance(name, str) or name not in COVARIANCE_TYPES:
                raise ValueError(
                    f"Invalid value for 'covariance_types': {name!r}. Each must be one of {list(COVARIANCE_TYPES)}."
                )
        if self.criterion not in CRITERIA:
            raise ValueError(f"Invalid value for 'criterion': {self.criterion!r}. It must be one of {list(CRITERIA)}.")
        check_scalar(self.grow, "grow", bool)
        if self.criterion == "held-out":
            check_scalar(self.validation_fraction, "validation_fraction", float)
            if not 0 < self.validation_fraction < 1:
                raise ValueError(f"'validation_fraction' must be > 0 and < 1, got {self.validation_fraction!r}.")
        return list(dict.fromkeys(int(k) for k in ks)), list(dict.fromkeys(types))

    def _candidate(self, n_components: int, covariance_type: str) -> GaussianMixture:
        # every parameter of this class that GaussianMixture also has (not per-K initial values or checkpoints,
        # which it does not take), but n_components, which is the grid
        own = GaussianMixture._param_names()
        shared = {name: getattr(self, name) for name in self._param_names() if name in own and name != "n_components"}
        return GaussianMixture(n_components, covariance_type=covariance_type, **shared)

    def _split(self, X: Any, sample_weight: Any) -> tuple[Any, Any, Any, Any]:
        """Training and held-out rows of an in-memory ``X``, and their weights (None without)."""
        if check_weights_kind(sample_weight):
            raise ValueError(
                f"criterion='held-out' splits the rows of an in-memory X, so sample_weight={sample_weight!r} "
                "cannot be used with it: pass the weights as an array with one weight per row."
            )
        if not isinstance(X, (np.ndarray, torch.Tensor)):
            X = np.asarray(X)
        n = X.shape[0] if X.ndim == 2 else 0
        held = int(round(self.validation_fraction * n))
        if n < 2 or held < 1 or held >= n:
            raise ValueError(
                f"criterion='held-out' with validation_fraction={self.validation_fraction} leaves no rows to fit "
                f"or none to score among {n}: give more rows or another validation_fraction."
            )
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else None
        order = np.random.default_rng(seed).permutation(n)
        if sample_weight is not None:
            check_sample_weight(sample_weight, n)
        fit_index, held_index = order[held:], order[:held]
        return (
            _take(X, fit_index),
            _take(X, held_index),
            _take(sample_weight, fit_index),
            _take(sample_weight, held_index),
        )

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        callback: Callable[[int, str, GaussianMixture], Any] | None = None,
    ) -> GaussianMixtureSelection:
        """Fit every candidate and keep the best.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), tensor, or chunked data
            Anything :meth:`GaussianMixture.fit` takes (in memory for ``criterion='held-out'``).
        y : ignored
        sample_weight : array-like of shape (n_samples,), or 'chunks', optional
            Row weights, as :meth:`GaussianMixture.fit` takes them: every candidate is fitted with them, and its
            ``bic`` and ``aic`` are the weighted ones. With ``criterion='held-out'`` (an array only), the rows
            set aside keep their weights and are scored by the weighted mean log-likelihood.
        callback : callable, optional
            ``callback(n_components, covariance_type, estimator)`` before each candidate's fit. It returns None,
            a per-iteration callback for that fit (as :meth:`GaussianMixture.fit` takes), or a context manager
            that the fit runs inside and whose ``__enter__`` gives that per-iteration callback (its ``__exit__``
            sees the fit's exception, if any).

        Returns
        -------
        self
        """
        ks, types = self._grid()
        for covariance_type in types:  # the shared parameters, refused as GaussianMixture refuses them
            self._candidate(ks[0], covariance_type)._check_parameters()
        if self.criterion == "held-out":
            fit_rows, held_out, fit_weights, held_weights = self._split(X, sample_weight)
        else:
            fit_rows, held_out, fit_weights, held_weights = X, None, sample_weight, None
        rows = _rows_of(fit_rows)
        if rows is not None and fit_weights is not None and not check_weights_kind(fit_weights):
            check_sample_weight(fit_weights, rows, positive=True)  # (chunked data: each candidate's fit checks them)
        if rows is not None and max(ks) > rows:
            raise ValueError(
                f"'n_components' goes up to {max(ks)}, more than the {rows} rows "
                + ("left to fit after the held-out split" if held_out is not None else "of X")
                + "; give a range whose largest value is at most the number of rows."
            )
        results: dict[str, list] = {key: [] for key in _COLUMNS}
        fitted: dict[int, GaussianMixture] = {}
        for covariance_type in types:
            smaller = None  # the last fitted candidate of this type, which the next may grow from
            for k in ks:
                gm = self._candidate(k, covariance_type)
                hook = callback(k, covariance_type, gm) if callback is not None else None
                scope = hook if hasattr(hook, "__enter__") else contextlib.nullcontext(hook)
                start = time.perf_counter()
                error = ""
                try:
                    with scope as progress:
                        if self.grow and smaller is not None and smaller.n_components == k - 1:
                            gm._fit_grown(fit_rows, smaller, callback=progress, sample_weight=fit_weights)
                        else:
                            gm.fit(fit_rows, sample_weight=fit_weights, callback=progress)
                    smaller = gm
                except ValueError as exc:  # a candidate that cannot be fitted is recorded, not fatal
                    smaller = None
                    error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                elapsed = time.perf_counter() - start
                row = len(results["n_components"])
                results["n_components"].append(k)
                results["covariance_type"].append(covariance_type)
                results["fit_time"].append(elapsed)
                results["error"].append(error)
                if error:
                    for key in ("criterion", "bic", "aic", "lower_bound"):
                        results[key].append(math.nan)
                    results["n_iter"].append(0)
                    results["converged"].append(False)
                    results["n_converged"].append(0)
                    continue
                bic, aic = gm.bic(fit_rows, sample_weight=fit_weights), gm.aic(fit_rows, sample_weight=fit_weights)
                value = {"bic": bic, "aic": aic}.get(self.criterion)
                if value is None:
                    value = gm.score(held_out, sample_weight=held_weights)
                results["criterion"].append(value)
                results["bic"].append(bic)
                results["aic"].append(aic)
                results["lower_bound"].append(float(gm.lower_bound_))
                results["n_iter"].append(int(gm.n_iter_))
                results["converged"].append(bool(gm.converged_))
                results["n_converged"].append(int(np.asarray(gm.init_converged_).sum()))
                fitted[row] = gm
        if not fitted:
            first = f"K={results['n_components'][0]}, {results['covariance_type'][0]}: {results['error'][0]}"
            raise ValueError(f"No candidate could be fitted; the first failure: {first}")
        table = _table(results, higher_is_better=self.criterion == "held-out")
        best = int(np.flatnonzero(table["rank"] == 1)[0])
        best_estimator = fitted[best]
        if held_out is not None:  # refit the winner on every row
            best_estimator = self._candidate(int(table["n_components"][best]), str(table["covariance_type"][best]))
            best_estimator.fit(X, sample_weight=sample_weight)
        self.results_ = table
        self.best_index_ = best
        self.best_params_ = {
            "n_components": int(table["n_components"][best]),
            "covariance_type": str(table["covariance_type"][best]),
        }
        self.best_score_ = float(table["criterion"][best])
        self.best_estimator_ = best_estimator
        self.n_features_in_ = best_estimator.n_features_in_
        return self

    # ------------------------------------------------------------------ the best estimator

    def _best(self) -> GaussianMixture:
        if not hasattr(self, "best_estimator_"):
            raise compatible(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )
        return self.best_estimator_

    def predict(self, X: Any) -> Any:
        """Labels from the best estimator (:meth:`GaussianMixture.predict`)."""
        return self._best().predict(X)

    def predict_proba(self, X: Any) -> Any:
        """Responsibilities from the best estimator (:meth:`GaussianMixture.predict_proba`)."""
        return self._best().predict_proba(X)

    def score_samples(self, X: Any) -> Any:
        """Per-row log-likelihoods under the best estimator."""
        return self._best().score_samples(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean log-likelihood under the best estimator (weighted as :meth:`GaussianMixture.score`)."""
        return self._best().score(X, sample_weight=sample_weight)

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """The best estimator's BIC on ``X`` (weighted as :meth:`GaussianMixture.bic`)."""
        return self._best().bic(X, sample_weight=sample_weight)

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """The best estimator's AIC on ``X`` (weighted as :meth:`GaussianMixture.aic`)."""
        return self._best().aic(X, sample_weight=sample_weight)

    def sample(self, n_samples: int = 1) -> tuple[Any, Any]:
        """Draws from the best estimator (:meth:`GaussianMixture.sample`)."""
        return self._best().sample(n_samples)


_COLUMNS = (
    "n_components",
    "covariance_type",
    "criterion",
    "bic",
    "aic",
    "lower_bound",
    "n_iter",
    "converged",
    "n_converged",
    "fit_time",
    "error",
)


def _take(values: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of an array or tensor (on its device); None stays None."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        return values[torch.as_tensor(index, device=values.device)]
    return np.asarray(values)[index]


def _rows_of(X: Any) -> int | None:
    """Rows of an in-memory ``X`` (None for chunked sources, which the candidates' fits check themselves)."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0])
    if isinstance(X, (list, tuple)) and X and not is_chunked(X):
        return len(X)  # a list of rows
    return None


def _table(results: dict[str, list], higher_is_better: bool) -> dict[str, np.ndarray]:
    """The results as arrays, with ``rank`` (1: best; failed candidates after every fitted one)."""
    table = {
        "n_components": np.asarray(results["n_components"], dtype=np.int64),
        "covariance_type": np.asarray(results["covariance_type"], dtype=object),
        "criterion": np.asarray(results["criterion"], dtype=np.float64),
        "bic": np.asarray(results["bic"], dtype=np.float64),
        "aic": np.asarray(results["aic"], dtype=np.float64),
        "lower_bound": np.asarray(results["lower_bound"], dtype=np.float64),
        "n_iter": np.asarray(results["n_iter"], dtype=np.int64),
        "converged": np.asarray(results["converged"], dtype=bool),
        "n_converged": np.asarray(results["n_converged"], dtype=np.int64),
        "fit_time": np.asarray(results["fit_time"], dtype=np.float64),
        "error": np.asarray(results["error"], dtype=object),
    }
    key = -table["criterion"] if higher_is_better else table["criterion"].copy()
    key[np.isnan(key)] = np.inf
    order = np.argsort(key, kind="stable")  # ties: the earlier candidate (fewer components) first
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    table["rank"] = rank
    return table
