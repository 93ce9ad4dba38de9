"""Command line: ``torchgmm fit | predict | score | select | plot``.

``fit`` reads data (``.npy`` memory-mapped, ``.csv``/``.tsv``/``.txt`` with or
without a header, ``.pt`` tensor, ``.parquet`` with pyarrow), fits, prints a
summary and writes a model file (and, on request, labels and
responsibilities). Every fit option can come from a YAML file
(``--config configs/NAME.yaml``) and be overridden on the command line. With no
data file, ``fit``, ``select`` and ``plot`` use Fisher's iris measurements
shipped with the package. Errors are one line on stderr and a non-zero exit
status: 2 for unusable input (files, options), 1 when fitting fails, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm._version import __version__
from torchgmm.estimator import GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
DATA_SUFFIXES = (".npy", ".csv", ".tsv", ".txt", ".pt", ".parquet")

# Options of fit and select, with their defaults: also the keys a --config file may hold.
FIT_DEFAULTS: dict[str, Any] = {
    "n_components": None,  # 3 on the shipped iris data, else 2
    "covariance_type": "full",
    "n_init": 4,
    "max_iter": 100,
    "tol": 1e-3,
    "reg_covar": 1e-6,
    "init_params": "kmeans",
    "seed": 0,
    "device": "auto",
    "dtype": None,
    "batch_size": None,
    "matmul_precision": None,
    "checkpoint": None,
    "checkpoint_interval": 10,
}
SELECT_DEFAULTS: dict[str, Any] = {
    **FIT_DEFAULTS,
    "n_components": "1-8",
    "covariance_types": "full,diag",
    "criterion": "bic",
}
for _name in ("covariance_type", "checkpoint", "checkpoint_interval"):  # one fit's options
    del SELECT_DEFAULTS[_name]


class UsageError(Exception):
    """Unusable input: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------ data


def adjusted_rand_index(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (1 = identical partitions, ~0 = chance)."""
    _, a = np.unique(labels_a, return_inverse=True)
    _, b = np.unique(labels_b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)

    def pairs(n):
        return (n * (n - 1) // 2).sum()

    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / pairs(np.array([len(a)]))
    top = (rows + cols) / 2
    return 1.0 if top == expected else float((index - expected) / (top - expected))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> np.ndarray:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path) as f:
        lines = [line.rstrip("\r\n") for line in f]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise UsageError(f"{path} is empty.")
    if path.suffix == ".txt" and delimiter not in lines[first]:
        delimiter = None  # whitespace-separated
    cells = lines[first].split(delimiter)
    skip = first + 1 if not any(_is_number(c) for c in cells) else first  # a header line
    if not any(line.strip() for line in lines[skip:]):
        raise UsageError(f"{path} has a header but no rows.")
    try:
        X = np.loadtxt(lines[skip:], delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError:
        X = None
    if X is None or X.size == 0:
        width = None
        for number, line in enumerate(lines[skip:], start=skip + 1):
            if not line.strip():
                continue
            row = line.split(delimiter)
            width = width or len(row)
            if len(row) != width:
                raise UsageError(f"{path}, line {number}: {len(row)} columns where earlier lines have {width}.")
            for column, cell in enumerate(row, start=1):
                if not _is_number(cell):
                    raise UsageError(f"{path}, line {number}, column {column}: {cell.strip()!r} is not a number.")
        if X is None:
            raise UsageError(f"{path} could not be read as numbers.")
        raise UsageError(f"{path} has a header but no rows.")
    return X


def _read_parquet(path: Path) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"reading {path.name} needs pyarrow: pip install pyarrow") from None
    table = pq.read_table(path)
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = column.to_numpy()
        if not np.issubdtype(values.dtype, np.number):
            raise UsageError(f"{path}: column {name!r} is not numeric ({column.type}).")
        columns.append(values.astype(np.float64, copy=False))
    if not columns or not len(columns[0]):
        raise UsageError(f"{path} is empty.")
    return np.stack(columns, axis=1)


def read_data(path: str) -> np.ndarray | torch.Tensor:
    """Rows of a data file (see the module docstring); raises :class:`UsageError` with one clear line."""
    file = Path(path)
    if not file.exists():
        raise UsageError(f"cannot read {path}: no such file.")
    if file.is_dir():
        raise UsageError(f"cannot read {path}: it is a folder, not a data file.")
    suffix = file.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UsageError(
            f"cannot read {path}: unknown file type {suffix or '(none)'}; use one of {', '.join(DATA_SUFFIXES)}."
        )
    if file.stat().st_size == 0:
        raise UsageError(f"{path} is empty.")
    try:
        if suffix == ".npy":
            X = np.load(file, mmap_mode="r")
        elif suffix == ".pt":
            X = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(X, torch.Tensor):
                raise UsageError(f"{path} holds a {type(X).__name__}, not a tensor of rows.")
        elif suffix == ".parquet":
            X = _read_parquet(file)
        else:
            X = _read_text(file)
    except UsageError:
        raise
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refuses anything but plain tensors and values
        raise UsageError(f"cannot read {path}: not a tensor saved with torch.save (or it holds code).") from None
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        raise UsageError(f"cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    if X.ndim != 2:
        raise UsageError(f"{path} holds an array of shape {tuple(X.shape)}; expected rows x columns (2-D).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path} is empty (shape {tuple(X.shape)}).")
    return X


def _load_data(path: str | None) -> tuple[Any, str, np.ndarray | None]:
    """``(X, description, species)``: the file's rows, or the shipped iris data when ``path`` is None."""
    if path is None:
        from torchgmm.datasets import load_iris

        X, species, _ = load_iris()
        return X, "iris (150 flowers x 4 measurements, shipped with torchgmm)", species
    X = read_data(path)
    return X, f"{path} ({X.shape[0]} rows x {X.shape[1]} columns)", None


def _write_atomic(path: str, write) -> None:
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


ARRAY_SUFFIXES = (".npy", ".csv", ".txt", ".tsv")


def _check_output(path: str, suffixes: tuple[str, ...] | None = ARRAY_SUFFIXES) -> None:
    """Fail before any work when ``path`` cannot be written (a file type we do not write, no such folder)."""
    if suffixes is not None and Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {path}: use a .npy, .csv or .tsv file name.")
    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: no such folder.")
    if Path(path).is_dir():
        raise UsageError(f"cannot write {path}: it is a folder.")


def _write_array(path: str, values: Any) -> None:
    values = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":

        def write(name):
            with open(name, "wb") as f:
                np.save(f, values)
    elif suffix in (".csv", ".txt", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        fmt = "%d" if values.dtype.kind in "iub" else "%.9g"

        def write(name):
            np.savetxt(name, values, delimiter=delimiter, fmt=fmt)
    else:
        raise UsageError(f"cannot write {path}: use a .npy, .csv or .tsv file name.")
    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: no such folder.")
    _write_atomic(path, write)


# ------------------------------------------------------------------------------------ options


def _read_config(path: str, valid: dict[str, Any]) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise UsageError("--config needs PyYAML: pip install pyyaml") from None
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError(f"config {path} must be a mapping of option: value, got a {type(config).__name__}.")
    allowed = set(valid) | {"data"}
    for key in config:
        if key not in allowed:
            raise UsageError(f"unknown key {key!r} in config {path}; valid keys: {', '.join(sorted(allowed))}.")
    if "data" in config and not isinstance(config["data"], str):
        raise UsageError(f"config {path}: data must be a file name, got {config['data']!r}.")
    return config


def _options(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the config file, then options given on the command line."""
    options = dict(defaults)
    if args.config:
        config = _read_config(args.config, defaults)
        if args.data is None and "data" in config:
            args.data = config["data"]
        options.update({k: v for k, v in config.items() if k != "data"})
    options.update({k: v for k, v in vars(args).items() if k in defaults and v is not None})
    return options


def _device(name: str | None) -> str | None:
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else None
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"invalid device {name!r}: use auto, cpu, cuda or cuda:N.") from None
    return name


def _number(options: dict[str, Any], name: str) -> float:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{name} must be a number, got {value!r}.")
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {value!r}.") from None


def _estimator(options: dict[str, Any], n_components: int, covariance_type: str) -> GaussianMixture:
    return GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        n_init=options["n_init"],
        max_iter=options["max_iter"],
        tol=_number(options, "tol"),
        reg_covar=_number(options, "reg_covar"),
        init_params=options["init_params"],
        random_state=options["seed"],
        device=_device(options["device"]),
        dtype=options["dtype"],
        batch_size=options["batch_size"],
        matmul_precision=options["matmul_precision"],
        checkpoint_path=options.get("checkpoint"),
        checkpoint_interval=options.get("checkpoint_interval", 10),
    )


class Progress:
    """One self-rewriting line on stderr while EM runs; silent when quiet or stderr is not a terminal."""

    def __init__(self, max_iter: int, n_init: int, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.max_iter, self.n_init = max_iter, n_init
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, iteration: int, running: int, best: float) -> None:
        if not self.enabled:
            return
        done = iteration / max(self.max_iter, 1)
        bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
        sys.stderr.write(
            f"\r[{bar}] iteration {iteration}/{self.max_iter}  running {running}/{self.n_init} restarts  "
            f"best lower bound {best:.6f}  {time.perf_counter() - self.start:.1f} s "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------------------------ commands


def _fit(args: argparse.Namespace) -> int:
    options = _options(args, FIT_DEFAULTS)
    _check_output(args.model, None)
    for path in (args.labels, args.responsibilities):
        if path:
            _check_output(path)
    X, source, species = _load_data(args.data)
    n_components = options["n_components"]
    if n_components is None:
        n_components = 3 if species is not None else 2
    gm = _estimator(options, n_components, options["covariance_type"])
    args.checkpoint = options["checkpoint"]
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
        _write_array(args.labels, labels)
    if args.responsibilities:
        _write_array(args.responsibilities, gm.predict_proba(X))
    if args.quiet:
        return 0
    weights = np.asarray(gm.weights_.cpu() if isinstance(gm.weights_, torch.Tensor) else gm.weights_)
    means = np.asarray(gm.means_.cpu() if isinstance(gm.means_, torch.Tensor) else gm.means_)
    device = gm.means_.device if isinstance(gm.means_, torch.Tensor) else "cpu"
    print(f"data         {source}")
    print(f"model        K={n_components}, covariance_type={options['covariance_type']}, {options['n_init']} restarts")
    print(f"device       {device} ({gm.means_.dtype})")
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


def _load_model(path: str, device: str | None) -> GaussianMixture:
    if not Path(path).exists():
        raise UsageError(f"cannot read model {path}: no such file.")
    if device not in (None, "auto"):
        _device(device)
    try:
        return GaussianMixture.load(path, map_location=None if device in (None, "auto") else device)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _predict(args: argparse.Namespace) -> int:
    if args.output:
        _check_output(args.output)
    gm = _load_model(args.model, args.device)
    X = read_data(args.data)
    values = gm.predict_proba(X) if args.proba else gm.predict(X)
    if args.output:
        _write_array(args.output, values)
        if not args.quiet:
            print(f"wrote {args.output} ({len(values)} rows)")
        return 0
    values = values.cpu().numpy() if isinstance(values, torch.Tensor) else values
    fmt = "%.6g" if args.proba else "%d"
    np.savetxt(sys.stdout, np.atleast_2d(values.T).T, fmt=fmt, delimiter=",")
    return 0


def _score(args: argparse.Namespace) -> int:
    if args.per_sample:
        _check_output(args.per_sample)
    gm = _load_model(args.model, args.device)
    X = read_data(args.data)
    if args.per_sample:
        _write_array(args.per_sample, gm.score_samples(X))
    print(f"rows         {X.shape[0]}")
    print(f"mean log-likelihood  {gm.score(X):.6f}")
    print(f"BIC          {gm.bic(X):.3f}")
    print(f"AIC          {gm.aic(X):.3f}")
    return 0


def _parse_range(text: Any) -> list[int]:
    if isinstance(text, int) and not isinstance(text, bool):
        return [text]
    if isinstance(text, list):
        values = text
    else:
        values = []
        for part in str(text).split(","):
            if "-" in part:
                low, _, high = part.partition("-")
                if not (low.strip().isdigit() and high.strip().isdigit()):
                    raise UsageError(f"invalid range {part!r} for -k: use e.g. 1-8 or 2,4,8.")
                values.extend(range(int(low), int(high) + 1))
            elif part.strip().isdigit():
                values.append(int(part))
            else:
                raise UsageError(f"invalid value {part!r} for -k: use e.g. 1-8 or 2,4,8.")
    if not values or any(not isinstance(v, int) or v < 1 for v in values):
        raise UsageError(f"-k needs positive component counts, got {text!r}.")
    return sorted(set(values))


def _select(args: argparse.Namespace) -> int:
    options = _options(args, SELECT_DEFAULTS)
    if args.model:
        _check_output(args.model, None)
    X, source, _ = _load_data(args.data)
    ks = _parse_range(options["n_components"])
    types = options["covariance_types"]
    types = types if isinstance(types, list) else [t.strip() for t in str(types).split(",")]
    for t in types:
        if t not in COVARIANCE_TYPES:
            raise UsageError(f"unknown covariance type {t!r}; choose from {', '.join(COVARIANCE_TYPES)}.")
    criterion = options["criterion"]
    if criterion not in ("bic", "aic"):
        raise UsageError(f"--criterion must be bic or aic, got {criterion!r}.")
    print(f"data  {source}")
    print(f"{'K':>4}  {'covariance':<10} {'BIC':>14} {'AIC':>14} {'lower bound':>12} {'converged':>10}")
    best, rows = None, []
    for covariance_type in types:
        for k in ks:
            if k > X.shape[0]:
                print(f"{k:>4}  {covariance_type:<10} {'skipped: more components than rows':>40}")
                continue
            gm = _estimator(options, k, covariance_type)
            try:
                gm.fit(X)
            except ValueError as exc:
                print(f"{k:>4}  {covariance_type:<10} failed: {exc}")
                continue
            bic, aic = gm.bic(X), gm.aic(X)
            score = bic if criterion == "bic" else aic
            converged = f"{int(gm.init_converged_.sum())}/{options['n_init']}"
            print(f"{k:>4}  {covariance_type:<10} {bic:>14.3f} {aic:>14.3f} {gm.lower_bound_:>12.6f} {converged:>10}")
            rows.append((score, k, covariance_type))
            if best is None or score < best[0]:
                best = (score, k, covariance_type, gm)
    if best is None:
        print("torchgmm: no model could be fitted.", file=sys.stderr)
        return 1
    print(f"best by {criterion.upper()}: K={best[1]}, covariance_type={best[2]} ({criterion.upper()} {best[0]:.3f})")
    if args.model:
        best[3].save(args.model)
        print(f"wrote {args.model}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Ellipse
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install matplotlib") from None
    if args.dpi < 1:
        raise UsageError(f"--dpi must be a positive number of dots per inch, got {args.dpi}.")
    _check_output(args.output, None)
    gm = _load_model(args.model, "cpu")
    X, source, _ = _load_data(args.data)
    X = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
    if X.shape[1] != gm.n_features_in_:
        raise UsageError(f"{source} has {X.shape[1]} columns; the model expects {gm.n_features_in_}.")
    labels = np.asarray(gm.predict(X))
    means = np.asarray(gm.means_, dtype=np.float64)
    K, D = means.shape
    scale_tril = gm.to_module().scale_tril().to(torch.float64)
    covs = (scale_tril @ scale_tril.mT).numpy()  # every type as dense (K, D, D)
    if D > 2:  # the first two principal components of the data
        centre = X.mean(0)
        _, _, vt = np.linalg.svd(X[:: max(1, len(X) // 100_000)] - centre, full_matrices=False)
        W = vt[:2].T
        points, means2, covs2 = (X - centre) @ W, (means - centre) @ W, W.T @ covs @ W
        axes_names = ("principal component 1", "principal component 2")
    elif D == 2:
        points, means2, covs2, axes_names = X, means, covs, ("feature 1", "feature 2")
    else:
        points = np.column_stack([X[:, 0], np.zeros(len(X))])
        means2 = np.column_stack([means[:, 0], np.zeros(K)])
        covs2 = np.zeros((K, 2, 2))
        covs2[:, 0, 0] = covs[:, 0, 0]
        covs2[:, 1, 1] = 1e-12
        axes_names = ("feature 1", "")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    shown = np.random.default_rng(0).permutation(len(points))[:50_000]
    # vmin/vmax pin label k to the k-th tab10 colour, the colour of its ellipses
    left.scatter(points[shown, 0], points[shown, 1], c=labels[shown] % 10, s=4, cmap="tab10", vmin=-0.5, vmax=9.5)
    colours = plt.get_cmap("tab10")
    for k in range(K):
        values, vectors = np.linalg.eigh(covs2[k])
        angle = math.degrees(math.atan2(vectors[1, -1], vectors[0, -1]))
        for scale in (1.0, 2.0):
            width, height = 2 * scale * np.sqrt(np.maximum(values[::-1], 0))
            left.add_patch(
                Ellipse(means2[k], width, height, angle=angle, fill=False, color=colours(k % 10), lw=1.5 / scale)
            )
    left.scatter(means2[:, 0], means2[:, 1], marker="x", c="black", s=40)
    left.set(title=f"{source}: K={K}, {gm.covariance_type}", xlabel=axes_names[0], ylabel=axes_names[1])
    histories = getattr(gm, "init_lower_bounds_history_", [gm.lower_bounds_])
    best = int(np.argmax(gm.init_lower_bounds_)) if len(gm.init_lower_bounds_) == len(histories) else 0
    for r, history in enumerate(histories):
        if history:
            right.plot(range(1, len(history) + 1), history, lw=2.5 if r == best else 1, label=f"restart {r}")
    right.set(title="lower bound per iteration", xlabel="iteration", ylabel="mean log-likelihood per row")
    right.legend(fontsize="small")
    fig.tight_layout()
    _write_atomic(args.output, lambda name: fig.savefig(name, format="png", dpi=args.dpi))
    plt.close(fig)
    if not args.quiet:
        print(f"wrote {args.output}")
    return 0


# ------------------------------------------------------------------------------------ parser


def _fit_options(parser: argparse.ArgumentParser, select: bool = False) -> None:
    parser.add_argument(
        "data", nargs="?", help=f"data file ({', '.join(DATA_SUFFIXES)}); default: the shipped iris data"
    )
    parser.add_argument("--config", help="YAML file of options (keys as the long options, with _); flags override it")
    if select:
        parser.add_argument("-k", "--n-components", help="component counts to try, e.g. 1-8 or 2,4,8 (default 1-8)")
        parser.add_argument("--covariance-types", help="comma-separated types to try (default full,diag)")
        parser.add_argument("--criterion", choices=["bic", "aic"], help="choose by BIC or AIC (default bic)")
    else:
        parser.add_argument("-k", "--n-components", type=int, help="components (default 3 on iris, else 2)")
        parser.add_argument("--covariance-type", choices=COVARIANCE_TYPES, help="(default full)")
    parser.add_argument("--n-init", type=int, help="restarts, all run at once (default 4)")
    parser.add_argument("--max-iter", type=int, help="most EM iterations (default 100)")
    parser.add_argument("--tol", type=float, help="convergence threshold on the lower bound (default 1e-3)")
    parser.add_argument("--reg-covar", type=float, help="added to covariance diagonals (default 1e-6)")
    parser.add_argument(
        "--init-params", choices=["kmeans", "k-means++", "random", "random_from_data"], help="(default kmeans)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="(default: the data's)")
    parser.add_argument("--batch-size", type=int, help="rows per chunk (default: chosen from the shapes)")
    parser.add_argument(
        "--matmul-precision", choices=["highest", "high", "medium"], help="float32 products; high = TF32 on CUDA"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchgmm",
        description="Fit Gaussian mixture models with PyTorch, on CPU or CUDA.",
        epilog="Run 'torchgmm COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"torchgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit a mixture, print a summary, write a model file")
    _fit_options(fit)
    fit.add_argument(
        "-o", "--model", default="torchgmm-model.pt", help="model file to write (default torchgmm-model.pt)"
    )
    fit.add_argument(
        "--checkpoint",
        help="save the EM state to this file as it runs and on Ctrl-C; if it exists, resume from it "
        "(deleted once the fit finishes)",
    )
    fit.add_argument("--checkpoint-interval", type=int, help="EM iterations between checkpoints (default 10)")
    fit.add_argument("--labels", help="also write each row's component (.npy, .csv or .tsv)")
    fit.add_argument("--responsibilities", help="also write each row's responsibilities (.npy, .csv or .tsv)")
    fit.set_defaults(func=_fit)

    predict = sub.add_parser("predict", help="components (or responsibilities) of new rows under a saved model")
    predict.add_argument("model", help="model file written by 'torchgmm fit'")
    predict.add_argument("data", help=f"data file ({', '.join(DATA_SUFFIXES)})")
    predict.add_argument("-o", "--output", help="write to this .npy/.csv/.tsv file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="responsibilities instead of labels")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: where it was fitted)")
    predict.add_argument("-q", "--quiet", action="store_true")
    predict.set_defaults(func=_predict)

    score = sub.add_parser("score", help="log-likelihood, BIC and AIC of new rows under a saved model")
    score.add_argument("model", help="model file written by 'torchgmm fit'")
    score.add_argument("data", help=f"data file ({', '.join(DATA_SUFFIXES)})")
    score.add_argument("--per-sample", help="also write each row's log-likelihood (.npy, .csv or .tsv)")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: where it was fitted)")
    score.set_defaults(func=_score)

    select = sub.add_parser("select", help="fit a range of K and covariance types, compare BIC/AIC")
    _fit_options(select, select=True)
    select.add_argument("-o", "--model", help="write the best model to this file")
    select.set_defaults(func=_select)

    plot = sub.add_parser("plot", help="draw a saved model on 2-D data (or two principal components) to a PNG")
    plot.add_argument("model", help="model file written by 'torchgmm fit'")
    plot.add_argument("data", nargs="?", help="data file (default: the shipped iris data)")
    plot.add_argument("-o", "--output", default="torchgmm-plot.png", help="PNG to write (default torchgmm-plot.png)")
    plot.add_argument("--dpi", type=int, default=100, help="(default 100)")
    plot.add_argument("-q", "--quiet", action="store_true")
    plot.set_defaults(func=_plot)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line Python shows by default."""
    print(f"torchgmm: warning ({category.__name__}): {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except UsageError as exc:
        print(f"torchgmm: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"torchgmm: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"torchgmm: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        checkpoint = getattr(args, "checkpoint", None) or ""
        saved = (
            f" The EM state is in {checkpoint}: run the same command to resume." if Path(checkpoint).is_file() else ""
        )
        print(f"torchgmm: interrupted; no model file was written.{saved}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
