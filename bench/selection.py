"""Model selection by BIC on synthetic mixtures with known K and covariance type: how often each way finds them.

Usage::

    python -m bench.selection [--mixtures 12] [--out bench/results/selection.json]

Each mixture has K in 2..5 full-covariance clusters of random shapes in 4 features (some thin, some
overlapping), 250 rows per cluster, and every feature rescaled by a factor between 0.01 and 100 (units a user's
data might have). Candidates: K = 1..8 and the four covariance types, one restart each, BIC. Compared:
scikit-learn's ``GaussianMixture`` looped over the candidates, torchgmm's ``GaussianMixtureSelection`` with its
default (scikit-learn's) seeding, with ``init_whiten=True``, with ``grow=True`` (each K from the K-1 fit, split),
with ``strategy='auto'``, and the same torchgmm fits looped by hand (the time ``GaussianMixtureSelection`` must
not exceed). All in float64 on the CPU, in this one process (so
scikit-learn runs with this machine's OpenBLAS settings: its times are indicative only).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from torchgmm import GaussianMixture, GaussianMixtureSelection

TYPES = ("full", "tied", "diag", "spherical")
KS = range(1, 9)


def mixture(seed: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    K, D = 2 + seed % 4, 4
    centres = rng.normal(0, 3.0, (K, D))
    parts = []
    for k in range(K):
        shape = rng.normal(size=(D, D)) / np.sqrt(D) + 0.3 * np.eye(D)
        parts.append(centres[k] + rng.normal(size=(250, D)) @ shape)
    X = np.concatenate(parts) * 10.0 ** rng.uniform(-2, 2, D)
    return X, K


def _sklearn_loop(X: np.ndarray, seed: int) -> tuple[int, str]:
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    best = None
    for covariance_type in TYPES:
        for k in KS:
            try:
                bic = SkGaussianMixture(k, covariance_type=covariance_type, random_state=seed).fit(X).bic(X)
            except ValueError:  # ill-defined covariance: that candidate is out
                continue
            if best is None or bic < best[0]:
                best = (bic, k, covariance_type)
    return best[1], best[2]


def _torchgmm_loop(X: np.ndarray, seed: int) -> tuple[int, str]:
    best = None
    for covariance_type in TYPES:
        for k in KS:
            bic = GaussianMixture(k, covariance_type=covariance_type, random_state=seed).fit(X).bic(X)
            if best is None or bic < best[0]:
                best = (bic, k, covariance_type)
    return best[1], best[2]


def _selection(X: np.ndarray, seed: int, **params) -> tuple[int, str]:
    chosen = GaussianMixtureSelection(KS, TYPES, random_state=seed, **params).fit(X).best_params_
    return chosen["n_components"], chosen["covariance_type"]


METHODS = {
    "scikit-learn loop": _sklearn_loop,
    "torchgmm loop": _torchgmm_loop,
    "GaussianMixtureSelection": _selection,
    "GaussianMixtureSelection, init_whiten": lambda X, seed: _selection(X, seed, init_whiten=True),
    "GaussianMixtureSelection, grow": lambda X, seed: _selection(X, seed, grow=True),
    "GaussianMixtureSelection, grow, init_whiten": lambda X, seed: _selection(X, seed, grow=True, init_whiten=True),
    "GaussianMixtureSelection, strategy=auto": lambda X, seed: _selection(X, seed, strategy="auto"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixtures", type=int, default=12)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    found = {name: {"exact": 0, "k": 0, "seconds": 0.0, "chosen": []} for name in METHODS}
    for seed in range(args.mixtures):
        X, K = mixture(seed)
        for name, method in METHODS.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                k, covariance_type = method(X, seed)
            record = found[name]
            record["seconds"] += time.perf_counter() - start
            record["exact"] += int(k == K and covariance_type == "full")
            record["k"] += int(k == K)
            record["chosen"].append([K, k, covariance_type])
    print(f"{args.mixtures} mixtures (true covariance: full, K in 2..5); candidates K=1..8 x 4 types, BIC")
    print(f"{'method':40} {'K and type':>10} {'K':>4} {'seconds':>8}")
    for name, record in found.items():
        print(f"{name:40} {record['exact']:10d} {record['k']:4d} {record['seconds']:8.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"mixtures": args.mixtures, "results": found}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
