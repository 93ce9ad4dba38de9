"""The commands: ``fit``, ``predict``, ``score``, ``select`` and ``plot``, each ``(args) -> exit status``.

Owns: what each command does in which order (checks of its outputs before any work, reading, fitting or
loading, writing) and what it prints on stdout. Must not: parse the command line, map exceptions to exit
statuses (:func:`torchgmm.cli.main` does), read file formats or draw (:mod:`~torchgmm.cli.readers`,
:mod:`~torchgmm.cli.writers` and :mod:`~torchgmm.cli.plotting` do).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from torchgmm.cli import plotting
from torchgmm.cli.errors import UsageError
from torchgmm.cli.metrics import adjusted_rand_index
from torchgmm.cli.options import CRITERIA, FIT_DEFAULTS, SELECT_DEFAULTS, device, estimator, merge_options, parse_range
from torchgmm.cli.progress import Progress
from torchgmm.cli.readers import load_data, read_data
from torchgmm.cli.writers import check_output, write_array
from torchgmm.covariance import COVARIANCE_TYPES
from torchgmm.estimator import GaussianMixture

__all__ = ["COMMANDS", "fit", "plot", "predict", "score", "select"]


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
    X, source, species = load_data(args.data)
    n_components = options["n_components"]
    if n_components is None:
        n_components = 3 if species is not None else 2
    gm = estimator(options, n_components, options["covariance_type"])
    args.checkpoint = options["checkpoint"]  # where main looks for the EM state on Ctrl-C
    if args.checkpoint and Path(args.checkpoint).is_file() and not args.quiet:
        print(f"resuming from checkpoint {args.checkpoint}", file=sys.stderr)
    progress = Progress(options["max_iter"], options["n_init"], args.quiet)
    start = time.perf_counter()
    try:
        labels = gm.fit_predict(X, callback=progress)
    finally:
        progress.close()
    elapsed = time.perf_counter() - start
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    gm.save(args.model)
    if args.labels:
        write_array(args.labels, labels)
    if args.responsibilities:
        write_array(args.responsibilities, gm.predict_proba(X))
    if args.quiet:
        return 0
    weights = np.asarray(gm.weights_.cpu() if isinstance(gm.weights_, torch.Tensor) else gm.weights_)
    means = np.asarray(gm.means_.cpu() if isinstance(gm.means_, torch.Tensor) else gm.means_)
    where = gm.means_.device if isinstance(gm.means_, torch.Tensor) else "cpu"
    print(f"data         {source}")
    print(f"model        K={n_components}, covariance_type={options['covariance_type']}, {options['n_init']} restarts")
    print(f"device       {where} ({gm.means_.dtype})")
    converged = int(gm.init_converged_.sum())
    print(f"converged    {converged}/{options['n_init']} restarts; kept one ran {gm.n_iter_} iterations")
    print(f"lower bound  {gm.lower_bound_:.6f} (mean log-likelihood per row)")
    print(f"BIC          {gm.bic(X):.3f}")
    print(f"time         {elapsed:.3f} s")
    sizes = np.bincount(labels, minlength=n_components)
    print("components   weight   size   mean")
    with np.printoptions(precision=3, suppress=True, threshold=8, edgeitems=3):
        for k in np.argsort(-weights):
            print(f"  {k:<10d} {weights[k]:.3f}  {sizes[k]:5d}   {means[k]}")
    if species is not None:
        print(f"agreement with the three iris species: adjusted Rand index {adjusted_rand_index(labels, species):.3f}")
    written = [args.model] + [p for p in (args.labels, args.responsibilities) if p]
    print(f"wrote        {', '.join(written)}")
    return 0


def predict(args: argparse.Namespace) -> int:
    if args.output:
        check_output(args.output)
    gm = _load_model(args.model, args.device)
    X = read_data(args.data)
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
    X = read_data(args.data)
    if args.per_sample:
        write_array(args.per_sample, gm.score_samples(X))
    print(f"rows         {X.shape[0]}")
    print(f"mean log-likelihood  {gm.score(X):.6f}")
    print(f"BIC          {gm.bic(X):.3f}")
    print(f"AIC          {gm.aic(X):.3f}")
    return 0


def select(args: argparse.Namespace) -> int:
    options = merge_options(args, SELECT_DEFAULTS)
    if args.model:
        check_output(args.model, None)
    X, source, _ = load_data(args.data)
    ks = parse_range(options["n_components"])
    types = options["covariance_types"]
    types = types if isinstance(types, list) else [t.strip() for t in str(types).split(",")]
    for t in types:
        if t not in COVARIANCE_TYPES:
            raise UsageError(f"unknown covariance type {t!r}; choose from {', '.join(COVARIANCE_TYPES)}.")
    criterion = options["criterion"]
    if criterion not in CRITERIA:
        raise UsageError(f"--criterion must be {' or '.join(CRITERIA)}, got {criterion!r}.")
    print(f"data  {source}")
    print(f"{'K':>4}  {'covariance':<10} {'BIC':>14} {'AIC':>14} {'lower bound':>12} {'converged':>10}")
    best = None
    for covariance_type in types:
        for k in ks:
            if k > X.shape[0]:
                print(f"{k:>4}  {covariance_type:<10} {'skipped: more components than rows':>40}")
                continue
            gm = estimator(options, k, covariance_type)
            try:
                gm.fit(X)
            except ValueError as exc:
                print(f"{k:>4}  {covariance_type:<10} failed: {exc}")
                continue
            bic, aic = gm.bic(X), gm.aic(X)
            value = bic if criterion == "bic" else aic
            converged = f"{int(gm.init_converged_.sum())}/{options['n_init']}"
            print(f"{k:>4}  {covariance_type:<10} {bic:>14.3f} {aic:>14.3f} {gm.lower_bound_:>12.6f} {converged:>10}")
            if best is None or value < best[0]:
                best = (value, k, covariance_type, gm)
    if best is None:
        print("torchgmm: no model could be fitted.", file=sys.stderr)
        return 1
    print(f"best by {criterion.upper()}: K={best[1]}, covariance_type={best[2]} ({criterion.upper()} {best[0]:.3f})")
    if args.model:
        best[3].save(args.model)
        print(f"wrote {args.model}")
    return 0


def plot(args: argparse.Namespace) -> int:
    plotting.require_matplotlib()
    if args.dpi < 1:
        raise UsageError(f"--dpi must be a positive number of dots per inch, got {args.dpi}.")
    check_output(args.output, None)
    gm = _load_model(args.model, "cpu")
    X, source, _ = load_data(args.data)
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
