"""What ``sample_weight`` costs: seconds per EM iteration of the same fit with and without row weights.

Usage::

    python -m bench.weights [--rows 100000] [--features 16] [--components 16] [--repeats 5] [--out FILE]
                            [--source memory|pairs]

For each covariance type, on the bench's isotropic and anisotropic data (float32, CPU), the same fit (same start,
``tol=0``) without weights and with random positive weights, measured alternately as the median over
``--repeats`` of ``(t(I + 1 iterations) - t(1 iteration)) / I``: the initialisation and the first pass are
left out, so the ratio is the cost of weights in the EM loop itself. The target of issue 19 is under 5 %.

``--source pairs`` fits chunked data instead: a list of 16,384-row chunks against the same chunks as
``(rows, weights)`` pairs with ``sample_weight='chunks'`` (the weights collected by the first pass, the pairs
unpacked on every later one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch

from bench.run import make_data
from torchgmm import GaussianMixture

TYPES = ("full", "tied", "diag", "spherical")


CHUNK_ROWS = 16_384


def _seconds(X, start: dict, covariance_type: str, iterations: int, weights) -> float:
    gm = GaussianMixture(
        start["weights_init"].shape[0],
        covariance_type=covariance_type,
        tol=0.0,
        max_iter=iterations,
        **start,
    )
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(weights, list):  # the same chunks, carrying their weights
            gm.fit(weights, sample_weight="chunks")
        else:
            gm.fit(X, sample_weight=weights)
    return time.perf_counter() - began


def per_iteration(X, start, covariance_type, weights, iterations: int, repeats: int) -> tuple[float, float]:
    """Median seconds per EM iteration without and with ``weights``, the first iteration (and the
    initialisation) left out; the two are measured alternately, so drifts of the machine hit both alike."""
    plain, weighted = [], []
    for _ in range(repeats):
        for w, out in ((None, plain), (weights, weighted)):
            one = _seconds(X, start, covariance_type, 1, w)
            many = _seconds(X, start, covariance_type, iterations + 1, w)
            out.append((many - one) / iterations)
    return statistics.median(plain), statistics.median(weighted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the results as JSON")
    parser.add_argument("--source", choices=("memory", "pairs"), default="memory", help="in-memory X or chunks")
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.rows}, D={args.features}, "
        f"K={args.components}, float32, CPU, {args.source}"
    )
    print(f"{'data':12} {'covariance':10} {'unweighted s/it':>16} {'weighted s/it':>14} {'ratio':>6}")
    rows = []
    for data in ("isotropic", "anisotropic"):
        for covariance_type in TYPES:
            case = dict(
                n_samples=args.rows,
                n_features=args.features,
                n_components=args.components,
                dtype="float32",
                device="cpu",
                data=data,
                covariance_type=covariance_type,
            )
            X, start = make_data(case)
            X = np.asarray(X)
            weights = np.random.default_rng(0).gamma(2.0, 0.5, len(X))
            if args.source == "pairs":
                starts = range(0, len(X), CHUNK_ROWS)
                X = [X[i : i + CHUNK_ROWS] for i in starts]
                weights = [(x, weights[i : i + CHUNK_ROWS]) for x, i in zip(X, starts, strict=True)]
            plain, weighted = per_iteration(X, start, covariance_type, weights, args.iterations, args.repeats)
            rows.append(
                dict(
                    data=data,
                    covariance_type=covariance_type,
                    unweighted=plain,
                    weighted=weighted,
                    ratio=weighted / plain,
                )
            )
            print(f"{data:12} {covariance_type:10} {plain:16.4f} {weighted:14.4f} {weighted / plain:6.3f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
