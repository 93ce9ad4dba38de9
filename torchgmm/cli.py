"""Command line: ``torchgmm fit [DATA]``.

With no data file, ``fit`` clusters Fisher's iris measurements shipped with
the package and reports how the clusters match the three species.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from torchgmm import __version__
from torchgmm.estimator import GaussianMixture


def _load(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    with open(path) as f:
        first = f.readline()
    delimiter = "\t" if path.endswith(".tsv") else ","
    try:
        [float(v) for v in first.strip().split(delimiter)]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    return np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2)


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


def _fit(args: argparse.Namespace) -> int:
    species = None
    if args.data is None:
        from torchgmm.datasets import load_iris

        X, species, _ = load_iris()
        source = "iris (150 flowers x 4 measurements, shipped with torchgmm)"
        n_components = args.n_components or 3
    else:
        try:
            X = _load(args.data)
        except (OSError, ValueError) as exc:
            print(f"torchgmm: cannot read {args.data}: {exc}", file=sys.stderr)
            return 2
        source = f"{args.data} ({X.shape[0]} rows x {X.shape[1]} columns)"
        n_components = args.n_components or 2
    device = None if args.device == "auto" else args.device
    if device is None and torch.cuda.is_available():
        device = "cuda"
    gm = GaussianMixture(
        n_components,
        covariance_type=args.covariance_type,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        random_state=args.seed,
        device=device,
        dtype=args.dtype,
    )
    start = time.perf_counter()
    try:
        labels = gm.fit_predict(np.asarray(X))
    except ValueError as exc:
        print(f"torchgmm: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    converged = int(gm.init_converged_.sum())
    print(f"data         {source}")
    print(f"model        K={n_components}, covariance_type={args.covariance_type}, {args.n_init} restarts")
    print(f"device       {device or 'cpu'} ({gm.means_.dtype})")
    print(f"converged    {converged}/{args.n_init} restarts; kept one ran {gm.n_iter_} iterations")
    print(f"lower bound  {gm.lower_bound_:.6f} (mean log-likelihood per row)")
    print(f"BIC          {gm.bic(np.asarray(X)):.3f}")
    print(f"time         {elapsed:.3f} s")
    sizes = np.bincount(labels, minlength=n_components)
    print("components   weight   size   mean")
    with np.printoptions(precision=3, suppress=True):
        for k in np.argsort(-gm.weights_):
            print(f"  {k:<10d} {gm.weights_[k]:.3f}  {sizes[k]:5d}   {gm.means_[k]}")
    if species is not None:
        ari = adjusted_rand_index(labels, species)
        print(f"agreement with the three iris species: adjusted Rand index {ari:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchgmm", description="Fit Gaussian mixture models with PyTorch.")
    parser.add_argument("--version", action="version", version=f"torchgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a mixture and print what was found")
    fit.add_argument("data", nargs="?", help=".npy, .csv or .tsv file of rows (default: the shipped iris data)")
    fit.add_argument("-k", "--n-components", type=int, default=None, help="components (default 3 on iris, else 2)")
    fit.add_argument(
        "--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"], help="(default full)"
    )
    fit.add_argument("--n-init", type=int, default=4, help="restarts run at once (default 4)")
    fit.add_argument("--max-iter", type=int, default=100, help="(default 100)")
    fit.add_argument("--tol", type=float, default=1e-3, help="(default 1e-3)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    fit.add_argument("--dtype", default=None, choices=["float32", "float64"], help="(default: the data's)")
    fit.set_defaults(func=_fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
