"""Bit-identity of a fixed set of fits across a change of the code: record before, compare after.

Usage::

    python -m bench.identity record before.npz     # on the code before the change
    python -m bench.identity compare before.npz    # on the code after it: exit 1 on any difference

The fits cover what a refactoring of the engine must leave alone: every covariance type in float32 and float64
(several restarts, k-means and random starts), chunked sources, restarts with repaired components
(``reg_covar=0`` on duplicated rows), a fit stopped mid-way and resumed from its checkpoint, online EM
(``partial_fit``), and the predictions of each model. Every fitted attribute and the predictions are stored
and compared exactly (``np.array_equal``, NaN equal to NaN); a difference is reported with its largest
absolute and relative size, so that one caused by a reordered sum (a few ulps) can be told from a real one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "lower_bounds_",
    "init_lower_bounds_",
    "init_converged_",
)


class Stop(Exception):
    """Stops a fit from its callback, as an interrupt would."""


def _blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    shapes = rng.normal(size=(k, d, d)) / np.sqrt(d) + 0.5 * np.eye(d)
    labels = rng.integers(0, k, n)
    return centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), shapes[labels]) + 7.0


def _record(gm, X) -> dict[str, np.ndarray]:
    out = {name: np.asarray(getattr(gm, name)) for name in ATTRIBUTES}
    out["init_lower_bounds_history_"] = np.asarray(
        [h + [np.nan] * (gm.max_iter - len(h)) for h in gm.init_lower_bounds_history_], dtype=np.float64
    )
    out["repairs_"] = np.asarray([str(r) for r in gm.repairs_] or [""])
    out["init_repairs_"] = np.asarray(["; ".join(str(r) for r in restart) for restart in gm.init_repairs_])
    out["predict_proba"] = np.asarray(gm.predict_proba(X))
    out["score_samples"] = np.asarray(gm.score_samples(X))
    return out


def fits() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(name, arrays)`` of every fit of the fixed set."""
    from torchgmm import GaussianMixture

    X = _blobs(600, 4, 4, seed=0)
    for covariance_type in COVARIANCE_TYPES:
        for dtype in ("float32", "float64"):
            for init in ("kmeans", "random"):
                gm = GaussianMixture(
                    4, covariance_type=covariance_type, n_init=3, init_params=init, tol=1e-6, max_iter=40,
                    random_state=1, dtype=dtype,
                )  # fmt: skip
                yield f"{covariance_type}-{dtype}-{init}", _record(gm.fit(X), X)
        chunks = [X[i : i + 97] for i in range(0, len(X), 97)]
        gm = GaussianMixture(4, covariance_type=covariance_type, n_init=2, max_iter=40, random_state=2, batch_size=50)
        yield f"{covariance_type}-chunked", _record(gm.fit(chunks), X)
        # duplicated rows and an outlier: components collapse and are repaired
        hostile = np.concatenate([X[:200], np.repeat(X[:1], 40, 0), np.full((3, 4), 60.0)])
        gm = GaussianMixture(
            6, covariance_type=covariance_type, n_init=3, reg_covar=0.0, max_iter=40, random_state=3,
            init_params="random_from_data",
        )  # fmt: skip
        yield f"{covariance_type}-repairs", _record(gm.fit(hostile), hostile)
        with tempfile.TemporaryDirectory() as folder:
            params = dict(
                covariance_type=covariance_type, n_init=2, tol=1e-8, max_iter=40, random_state=4,
                checkpoint_path=os.path.join(folder, "fit.ckpt"), checkpoint_interval=2,
            )  # fmt: skip

            def stop(iteration, running, best):
                if iteration == 5:
                    raise Stop

            try:
                GaussianMixture(4, **params).fit(X, callback=stop)
            except Stop:
                pass
            yield f"{covariance_type}-resumed", _record(GaussianMixture(4, **params).fit(X), X)
        gm = GaussianMixture(4, covariance_type=covariance_type, random_state=5)
        for batch in np.array_split(X, 6):
            gm.partial_fit(batch)
        yield f"{covariance_type}-online", _record(gm, X)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    got = {f"{name}/{key}": value for name, arrays in fits() for key, value in arrays.items()}
    if args.action == "record":
        np.savez_compressed(args.file, **got)
        print(f"recorded {len(got)} arrays of {len({k.split('/')[0] for k in got})} fits in {args.file}")
        return 0
    expected = dict(np.load(args.file))
    differences = 0
    for key in sorted(set(expected) | set(got)):
        a, b = got.get(key), expected.get(key)
        if a is None or b is None:
            print(f"{key}: {'missing now' if a is None else 'new'}")
            differences += 1
            continue
        same = a.shape == b.shape and (
            np.array_equal(a, b, equal_nan=True) if a.dtype.kind in "fc" else np.array_equal(a, b)
        )
        if not same:
            differences += 1
            if a.shape == b.shape and a.dtype.kind in "fc":
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                rel = diff / np.maximum(np.abs(b.astype(np.float64)), np.finfo(np.float64).tiny)
                print(f"{key}: differs, largest {np.nanmax(diff):.3g} absolute, {np.nanmax(rel):.3g} relative")
            else:
                print(f"{key}: differs ({a.shape} {a.dtype} now, {b.shape} {b.dtype} before)")
    print(f"identity: {len(got) - differences} of {len(got)} arrays identical, {differences} differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
