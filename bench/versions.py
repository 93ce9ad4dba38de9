"""The speed of two versions of torchgmm side by side, in one run: before and after a change of the code.

Usage::

    git worktree add /tmp/before <commit>                      # the version to compare with
    python -m bench.versions /tmp/before . [--repeats 5] [--cases A,B]

Each case fits the same data from the same start (``tol=0``, fixed ``means_init`` and ``precisions_init``)
with each version in its own process (``PYTHONPATH`` set to that checkout), alternating between the versions
repeat by repeat so that a slow moment of the machine hits both alike. The time per EM iteration is
``(t(I + 1 iterations) - t(1 iteration)) / I``, so set-up and the initial M-step drop out; the table gives the
median per version and the ratio after / before (below 1: faster), and the ratio of the fastest runs, which
is steadier on a machine whose other load comes and goes. Cases cover every covariance type in
float32 and float64, chunked and in memory, on anisotropic overlapping clusters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {
    "full-f32": dict(n=100_000, d=16, k=16, covariance_type="full", dtype="float32"),
    "full-f64": dict(n=50_000, d=16, k=16, covariance_type="full", dtype="float64"),
    "tied-f32": dict(n=100_000, d=16, k=16, covariance_type="tied", dtype="float32"),
    "diag-f32": dict(n=200_000, d=32, k=32, covariance_type="diag", dtype="float32"),
    "spherical-f32": dict(n=200_000, d=32, k=32, covariance_type="spherical", dtype="float32"),
    "full-f32-restarts": dict(n=50_000, d=8, k=8, covariance_type="full", dtype="float32", n_init=4),
    # the README's cases B and A-R8 (issue 16: the quadratic kernel for full and tied in float32)
    "full-f32-B": dict(n=20_000, d=64, k=32, covariance_type="full", dtype="float32"),
    "full-f32-A-R8": dict(n=100_000, d=16, k=16, covariance_type="full", dtype="float32", n_init=8),
    "tied-f32-B": dict(n=20_000, d=64, k=32, covariance_type="tied", dtype="float32"),
    "diag-f32-chunked": dict(n=200_000, d=16, k=16, covariance_type="diag", dtype="float32", batch_size=4096),
    # tiny: the per-iteration Python overhead of the loop, M-step and repairs bookkeeping dominates
    "overhead-full": dict(n=2_000, d=2, k=3, covariance_type="full", dtype="float64"),
}

# Runs in the version's own process: prints the seconds of a fit with I + 1 and with 1 iterations.
_TIMER = r"""
import json, sys, time, warnings
import numpy as np, torch
from torchgmm import GaussianMixture
case, iterations = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
rng = np.random.default_rng(0)
n, d, k = case["n"], case["d"], case["k"]
centres = rng.normal(0.0, 2.0, (k, d))
shapes = rng.normal(size=(k, d, d)) / np.sqrt(d) + 0.3 * np.eye(d)
labels = rng.choice(k, n, p=rng.dirichlet(np.ones(k)))
X = (centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), shapes[labels])).astype(case["dtype"])
types = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)), "spherical": np.ones(k)}
start = dict(weights_init=np.full(k, 1.0 / k), means_init=X[rng.choice(n, k, replace=False)].astype(np.float64),
             precisions_init=types[case["covariance_type"]])
params = dict(covariance_type=case["covariance_type"], tol=0.0, n_init=case.get("n_init", 1),
              batch_size=case.get("batch_size"), random_state=0)
if params["n_init"] > 1:
    start = {}  # several restarts: k-means++ starts (the same draws in both versions)
    params["init_params"] = "k-means++"
warnings.simplefilter("ignore")
def seconds(max_iter):
    gm = GaussianMixture(k, max_iter=max_iter, **params, **start)
    t = time.perf_counter(); gm.fit(X); return time.perf_counter() - t
seconds(2)  # warm-up
print(json.dumps([seconds(iterations + 1), seconds(1)]))
"""


def _time(checkout: str, case: dict, iterations: int, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    out = subprocess.run(
        [sys.executable, "-c", _TIMER, json.dumps(case), str(iterations), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    whole, one = json.loads(out.strip().splitlines()[-1])
    return (whole - one) / iterations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="checkout of the version to compare with")
    parser.add_argument("after", help="checkout of the new version")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit (1: least noise)")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    names = args.cases.split(",") if args.cases else list(CASES)
    print(
        f"{'case':20s} {'before s/iter':>14s} {'after s/iter':>14s} {'after/before':>13s}  (medians of {args.repeats})"
    )
    results = []
    for name in names:
        samples: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):  # interleaved
            for version in ("before", "after"):
                samples[version].append(_time(getattr(args, version), CASES[name], args.iterations, args.threads))
        before, after = statistics.median(samples["before"]), statistics.median(samples["after"])
        results.append(dict(case=name, **CASES[name], before=samples["before"], after=samples["after"]))
        fastest = min(samples["after"]) / min(samples["before"])
        print(f"{name:20s} {before:14.4f} {after:14.4f} {after / before:13.3f} {fastest:10.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
