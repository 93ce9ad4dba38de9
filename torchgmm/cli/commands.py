"""The commands: ``fit``, ``predict``, ``score``, ``select`` and ``plot``, each ``(args) -> exit status``.

Owns: what each command does in which order (checks of its outputs before any work, reading, fitting or
loading, writing) and what it prints: nothing on stdout until every check and the computation are done (so a
refused input prints only its error), then the summary; on stderr, the repairs that ``-v`` lists after a
warning. Must not: parse the command line, map exceptions to exit statuses (:func:`torchgmm.cli.main` does),
read file formats or draw (:mod:`~torchgmm.cli.readers`, :mod:`~torchgmm.cli.writers` and
:mod:`~torchgmm.cli.plotting` do).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm.cli import plotting
from torchgmm.cli.errors import UsageError
from torchgmm.cli.metrics import adjusted_rand_index
from torchgmm.cli.options import CRITERIA, FIT_DEFAULTS, SELECT_DEFAULTS, device, estimator, merge_options, parse_range
from torchgmm.cli.progress import Progress, end_line
from torchgmm.cli.readers import load_data
from torchgmm.cli.writers import check_output, write_array
from torchgmm.covariance import COVARIANCE_TYPES
from torchgmm.estimator import GaussianMixture
from torchgmm.exceptions import DegenerateComponentWarning
from torchgmm.selection import GaussianMixtureSelection

__all__ = ["COMMANDS", "fit", "plot", "predict", "score", "select"]


def _numpy(values: Any) -> np.ndarray:
    return values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


class _FitWarnings:
    """The warnings of one fit, printed as they come by the command line's printer (installed by ``main``).

    ``context`` (``select``: the candidate) opens each message. With ``verbose``, a DegenerateComponentWarning
    is followed by the repairs of the kept restart, one per line; the estimator has them (``repairs_``) only
    once the fit has returned, so :meth:`done` prints them, and warnings issued after that one wait for them.
    """

    def __init__(self, verbose: bool, context: str = "") -> None:
        self.verbose, self.context = verbose, context
        self.degenerate = False
        self.held: list[tuple[Any, ...]] = []

    def __enter__(self) -> _FitWarnings:
        self.show = warnings.showwarning
        warnings.showwarning = self._hook
        return self

    def _hook(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self.context:
            message = f"{self.context}: {message}"
        if self.degenerate:
            self.held.append((message, category, filename, lineno, file, line))
            return
        self.show(message, category, filename, lineno, file, line)
        self.degenerate = self.verbose and issubclass(category, DegenerateComponentWarning)

    def done(self, gm: GaussianMixture) -> None:
        """The fit of ``gm`` returned: its repairs, if a DegenerateComponentWarning asked for them, then the rest."""
        if self.degenerate:
            end_line()
            context = f"{self.context}: " if self.context else ""
            for repair in gm.repairs_:
                print(f"torchgmm: {context}repair in the kept restart: {repair}", file=sys.stderr)
        self._release()

    def _release(self) -> None:
        self.degenerate = False
        held, self.held = self.held, []
        for warning in held:
            self.show(*warning)

    def __exit__(self, *exc: object) -> None:
        warnings.showwarning = self.show
        self._release()


def _first_call_says(callback: Callable[..., None], message: str) -> Callable[..., None]:
    """``callback``, printing ``message`` on stderr at its first call (once EM runs, so after every check)."""
    said = False

    def call(*values: Any) -> None:
        nonlocal said
        if not said:
            said = True
            end_line()
            print(message, file=sys.stderr)
        callback(*values)

    return call


def _load_model(path: str, device_name: str | None) -> GaussianMixture:
    if not Path(path).exists():
        raise UsageError(f"cannot read model {path}: no such file.")
    if device_name not in (None, "auto"):
        device(device_name)
    try:
        return GaussianMixture.load(path, map_location=None if device_name in (None, "auto") else device_name)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def fit(args: argparse.Namespace) -> int:
    options = merge_options(args, FIT_DEFAULTS)
    check_output(args.model, None)
    for path in (args.labels, args.responsibilities):
        if path:
            check_output(path)
    X, source, species, weights = load_data(args.data, args.sample_weight, args.weight_column)
    n_components = options["n_components"]
    gm = estimator(options, n_components, options["covariance_type"])
    args.checkpoint = options["checkpoint"]  # where main looks for the EM state on Ctrl-C
    progress = Progress(options["max_iter"], options["n_init"], args.quiet)
    callback = progress
    if args.checkpoint and Path(args.checkpoint).is_file() and not args.quiet:
        callback = _first_call_says(progress, f"resuming from checkpoint {args.checkpoint}")
    start = time.perf_counter()
    with _FitWarnings(args.verbose) as fit_warnings:
        try:
            labels = gm.fit_predict(X, sample_weight=weights, callback=callback)
        finally:
            progress.close()
        fit_warnings.done(gm)
    elapsed = time.perf_counter() - start
    labels = _numpy(labels)
    bic = None if args.quiet else gm.bic(X, sample_weight=weights)
    gm.save(args.model)
    if args.labels:
        write_array(args.labels, labels)
    if args.responsibilities:
        write_array(args.responsibilities, gm.predict_proba(X))
    if args.quiet:
        return 0
    weights, means = _numpy(gm.weights_), _numpy(gm.means_)
    where = gm.means_.device if isinstance(gm.means_, torch.Tensor) else "cpu"
    k = f"K={n_components}"
    if "n_components" in options.defaulted and args.data:  # (on iris, 3 is the number of species)
        k += f" (default: pass -k, or compare K with 'torchgmm select {shlex.quote(args.data)} -k 1-10')"
    print(f"data         {source}")
    print(f"model        {k}, covariance_type={options['covariance_type']}, {options['n_init']} restarts")
    print(f"device       {where} ({gm.means_.dtype})")
    converged = int(gm.init_converged_.sum())
    print(f"converged    {converged}/{options['n_init']} restarts; kept one ran {gm.n_iter_} iterations")
    print(
        f"lower bound  {gm.lower_bound_:.6f} (mean log-likelihood per {'row' if weights is None else 'unit of weight'})"
    )
    print(f"BIC          {bic:.3f}")
    print(f"time         {elapsed:.3f} s")
    sizes = np.bincount(labels, minlength=n_components)
    print("components   weight   size   mean")
    with np.printoptions(precision=3, suppress=True, threshold=8, edgeitems=3):
        for component in np.argsort(-weights):
            print(f"  {component:<10d} {weights[component]:.3f}  {sizes[component]:5d}   {means[component]}")
    if species is not None:
        print(f"agreement with the three iris species: adjusted Rand index {adjusted_rand_index(labels, species):.3f}")
    written = [args.model] + [p for p in (args.labels, args.responsibilities) if p]
    print(f"wrote        {', '.join(written)}")
    return 0


def predict(args: argparse.Namespace) -> int:
    if args.output:
        check_output(args.output)
    gm = _load_model(args.model, args.device)
    X, *_ = load_data(args.data, weight_column=args.weight_column)  # (the weights do not change a prediction)
    values = gm.predict_proba(X) if args.proba else gm.predict(X)
    if args.output:
        write_array(args.output, values)
        if not args.quiet:
            print(f"wrote {args.output} ({len(values)} rows)")
        return 0
    values = values.cpu().numpy() if isinstance(values, torch.Tensor) else values
    fmt = "%.6g" if args.proba else "%d"
    np.savetxt(sys.stdout, np.atleast_2d(values.T).T, fmt=fmt, delimiter=",")
    return 0


def score(args: argparse.Namespace) -> int:
    if args.per_sample:
        check_output(args.per_sample)
    gm = _load_model(args.model, args.device)
    X, _, _, weights = load_data(args.data, args.sample_weight, args.weight_column)
    per_sample = gm.score_samples(X) if args.per_sample else None
    mean, bic, aic = gm.score(X, sample_weight=weights), gm.bic(X, weights), gm.aic(X, weights)
    if args.per_sample:
        write_array(args.per_sample, per_sample)
    if args.quiet:
        return 0
    print(
        f"rows         {X.shape[0]}"
        + (f" (weights summing to {float(weights.sum()):.6g})" if weights is not None else "")
    )
    print(f"mean log-likelihood  {mean:.6f}")
    print(f"BIC          {bic:.3f}")
    print(f"AIC          {aic:.3f}")
    if args.per_sample:
        print(f"wrote {args.per_sample} ({X.shape[0]} rows)")
    return 0


class _Candidate:
    """One candidate of ``select`` as it is fitted: its progress line and its warnings, and its failure kept."""

    def __init__(self, k: int, covariance_type: str, gm: GaussianMixture, progress: Progress, verbose: bool) -> None:
        self.context = f"K={k}, {covariance_type}"
        self.gm, self.progress = gm, progress
        self.warnings = _FitWarnings(verbose, context=self.context)
        self.failure: str | None = None

    def __enter__(self) -> Progress:
        self.warnings.__enter__()
        return self.progress

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is None:
            self.warnings.done(self.gm)
        elif isinstance(error, ValueError):
            self.failure = f"{self.context}: {str(error).splitlines()[0] if str(error) else kind.__name__}"
        self.warnings.__exit__(kind, error, traceback)


def select(args: argparse.Namespace) -> int:
    options = merge_options(args, SELECT_DEFAULTS)
    if args.model:
        check_output(args.model, None)
    X, source, _, weights = load_data(args.data, args.sample_weight, args.weight_column)
    ks = parse_range(options["n_components"])
    types = options["covariance_types"]
    types = types if isinstance(types, list) else [t.strip() for t in str(types).split(",")]
    for t in types:
        if t not in COVARIANCE_TYPES:
            raise UsageError(f"unknown covariance type {t!r}; choose from {', '.join(COVARIANCE_TYPES)}.")
    criterion = options["criterion"]
    if criterion not in CRITERIA:
        raise UsageError(f"--criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    if max(ks) > X.shape[0]:
        raise UsageError(
            f"-k goes up to {max(ks)}, more than the {X.shape[0]} rows of {source}; give a range whose largest value "
            f"is at most {X.shape[0]}."
        )
    template = estimator(options, 1, types[0])
    selection = GaussianMixtureSelection(
        ks,
        types,
        criterion=criterion,
        grow=bool(options["grow"]),
        **{
            name: getattr(template, name)
            for name in GaussianMixtureSelection._param_names()
            if hasattr(template, name) and name not in ("n_components", "covariance_types", "criterion", "grow")
        },
    )
    progress = Progress(options["max_iter"], options["n_init"], args.quiet)
    candidates: list[_Candidate] = []
    total = len(ks) * len(types)

    def candidate(k: int, covariance_type: str, gm: GaussianMixture) -> _Candidate:
        progress.label = f"K={k} {covariance_type} ({len(candidates) + 1}/{total}) "
        progress.start = time.perf_counter()
        candidates.append(_Candidate(k, covariance_type, gm, progress, args.verbose))
        return candidates[-1]

    try:
        selection.fit(X, sample_weight=weights, callback=candidate)
    except ValueError:
        failures = [c.failure for c in candidates if c.failure]
        if len(failures) == len(candidates) == total:  # every candidate failed: say the first one's reason
            print(f"torchgmm: no model could be fitted; the first failure: {failures[0]}", file=sys.stderr)
            return 1
        raise
    finally:
        progress.close()
    best = selection.best_estimator_
    if args.model:
        best.save(args.model)
    if args.quiet:
        return 0
    results = selection.results_
    print(f"data  {source}")
    print(f"{'K':>4}  {'covariance':<10} {'BIC':>14} {'AIC':>14} {'lower bound':>12} {'converged':>10}")
    for row in range(len(results["n_components"])):
        k, covariance_type = results["n_components"][row], results["covariance_type"][row]
        if results["error"][row]:
            print(f"{k:>4}  {covariance_type:<10} failed: {results['error'][row]}")
            continue
        converged = f"{results['n_converged'][row]}/{options['n_init']}"
        print(
            f"{k:>4}  {covariance_type:<10} {results['bic'][row]:>14.3f} {results['aic'][row]:>14.3f} "
            f"{results['lower_bound'][row]:>12.6f} {converged:>10}"
        )
    name = {"held-out": "held-out log-likelihood"}.get(criterion, criterion.upper())
    params = selection.best_params_
    print(
        f"best by {name}: K={params['n_components']}, covariance_type={params['covariance_type']} "
        f"({name} {selection.best_score_:.3f})"
    )
    if args.model:
        print(f"wrote {args.model}")
    return 0


def plot(args: argparse.Namespace) -> int:
    plotting.require_matplotlib()
    if args.dpi < 1:
        raise UsageError(f"--dpi must be a positive number of dots per inch, got {args.dpi}.")
    check_output(args.output, None)
    gm = _load_model(args.model, "cpu")
    X, source, *_ = load_data(args.data)
    X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
    if X.shape[1] != gm.n_features_in_:
        raise UsageError(f"{source} has {X.shape[1]} columns; the model expects {gm.n_features_in_}.")
    plotting.write_plot(args.output, gm, X, source, args.dpi)
    if not args.quiet:
        print(f"wrote {args.output}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": fit,
    "predict": predict,
    "score": score,
    "select": select,
    "plot": plot,
}
