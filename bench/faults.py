"""What hardening costs, and what it buys: checkpoint overhead, and hostile data next to scikit-learn.

Usage::

    python -m bench.faults [--rows 100000] [--features 16] [--components 16] [--repeats 5] [--quick]

1. **Checkpoints.** Seconds per EM iteration of the same fit (same data, same
   start, ``tol=0``) without a checkpoint and with ``checkpoint_interval`` 10
   and 1, measured side by side as the median over ``--repeats`` of
   ``(t(I + 1 iterations) - t(1 iteration)) / I``; the ratio is the overhead.
2. **Hostile data.** Each case of ``tests/test_repair.py``'s kinds (scales,
   offsets, duplicated rows, a constant feature, N = K, ...) fitted by torchgmm
   and by scikit-learn with the same parameters (``reg_covar`` 0 and 1e-6, 2
   restarts, k-means init, float64): whether each finishes with finite
   parameters, its lower bound, and for torchgmm how many components were repaired.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from torchgmm import GaussianMixture


def _mixture(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _seconds(X: np.ndarray, k: int, iterations: int, **params) -> float:
    gm = GaussianMixture(k, tol=0.0, max_iter=iterations, init_params="random_from_data", random_state=0, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    return time.perf_counter() - start


def checkpoint_overhead(rows: int, features: int, components: int, repeats: int, iterations: int) -> list[dict]:
    X = _mixture(rows, features, components)
    with tempfile.TemporaryDirectory() as folder:
        variants = {
            "no checkpoint": {},
            "checkpoint_interval=10": {"checkpoint_path": Path(folder) / "a.ckpt", "checkpoint_interval": 10},
            "checkpoint_interval=1": {"checkpoint_path": Path(folder) / "b.ckpt", "checkpoint_interval": 1},
        }
        _seconds(X, components, 2)  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):  # interleaved, so that a slow moment hits every variant alike
            for name, params in variants.items():
                whole = _seconds(X, components, iterations + 1, **params)
                first = _seconds(X, components, 1, **params)
                samples[name].append((whole - first) / iterations)
    base = statistics.median(samples["no checkpoint"])
    return [
        {"variant": name, "seconds": statistics.median(values), "ratio": statistics.median(values) / base}
        for name, values in samples.items()
    ]


def hostile_cases() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 1.0, (60, 3)) for c in (-6.0, 0.0, 6.0)])
    return {
        "scale 1e-6": (blobs * 1e-6, 4),
        "scale 1e6": (blobs * 1e6, 4),
        "offset 1e4": (blobs + 1e4, 4),
        "mixed scales": (blobs * np.array([1e-4, 1.0, 1e5]), 4),
        "duplicated rows": (np.repeat(blobs[:6], 20, axis=0), 8),
        "constant feature": (np.c_[blobs, np.full(len(blobs), 7.0)], 4),
        "duplicated feature": (np.c_[blobs, blobs[:, :1]], 4),
        "one-point cluster": (np.concatenate([blobs, [[60.0, 60.0, 60.0]]]), 4),
        "N = K": (rng.normal(size=(6, 3)), 6),
        "K >> clusters": (blobs, 40),
    }


def _outcome(fit) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = fit()
    except Exception as exc:  # the table reports it
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:48]}…"}
    finite = all(np.isfinite(np.asarray(getattr(gm, name))).all() for name in ("weights_", "means_", "covariances_"))
    return {
        "ok": finite,
        "lower_bound": float(gm.lower_bound_),
        "repairs": sum(map(len, getattr(gm, "init_repairs_", []))),
    }


def hostile_table() -> list[dict]:
    try:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
    except ImportError:
        SkGaussianMixture = None
    rows = []
    for name, (X, k) in hostile_cases().items():
        for reg_covar in (0.0, 1e-6):
            params = dict(n_components=k, reg_covar=reg_covar, n_init=2, max_iter=100, random_state=0)
            row = {"case": name, "reg_covar": reg_covar}
            row["torchgmm"] = _outcome(lambda X=X, params=params: GaussianMixture(**params).fit(X))
            if SkGaussianMixture is not None:
                row["scikit-learn"] = _outcome(lambda X=X, params=params: SkGaussianMixture(**params).fit(X))
            rows.append(row)
    return rows


def _cell(outcome: dict | None) -> str:
    if outcome is None:
        return "not installed"
    if not outcome["ok"]:
        return outcome.get("error", "non-finite parameters")
    repairs = f", {outcome['repairs']} repairs" if outcome.get("repairs") else ""
    return f"ok, bound {outcome['lower_bound']:.4g}{repairs}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.features, args.components, args.repeats, args.iterations = 2000, 4, 3, 1, 3

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"\nCheckpoint overhead: N={args.rows}, D={args.features}, K={args.components}, full, float32, CPU")
    print(f"{'variant':<26}{'s/iter':>10}{'x no checkpoint':>18}")
    for row in checkpoint_overhead(args.rows, args.features, args.components, args.repeats, args.iterations):
        print(f"{row['variant']:<26}{row['seconds']:>10.4f}{row['ratio']:>18.3f}")

    print("\nHostile data (float64, 2 restarts, k-means init): outcome and final lower bound")
    print(f"| {'case':<20} | reg_covar | {'torchgmm':<34} | scikit-learn |")
    print(f"|{'-' * 22}|-----------|{'-' * 36}|--------------|")
    for row in hostile_table():
        print(
            f"| {row['case']:<20} | {row['reg_covar']:<9g} | {_cell(row['torchgmm']):<34} | "
            f"{_cell(row.get('scikit-learn'))} |"
        )


if __name__ == "__main__":
    main()
